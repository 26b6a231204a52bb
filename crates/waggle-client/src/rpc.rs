//! What every call to the server shares: the timeout around a unary call, and wire instances
//! from the server checked on the way in.

use std::{future::Future, time::Duration};

use waggle_core::Instance;
use waggle_proto::v1;

use crate::Error;

/// Runs a unary call, giving up after `timeout` (a `DEADLINE_EXCEEDED` error).
pub(crate) async fn with_timeout<T, F>(timeout: Duration, call: F) -> Result<T, Error>
where
    F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(resp)) => Ok(resp.into_inner()),
        Ok(Err(status)) => Err(Error::Rpc(status)),
        Err(_) => Err(Error::Rpc(tonic::Status::deadline_exceeded(format!("no answer within {timeout:?}")))),
    }
}

/// A wire instance the server sent, as the core type. One that breaks a model rule is a
/// protocol error: the server sent it, not the caller.
pub(crate) fn instance_from_wire(w: &v1::Instance) -> Result<Instance, Error> {
    waggle_proto::instance_from_wire(w).map_err(|e| Error::Protocol(e.to_string()))
}
