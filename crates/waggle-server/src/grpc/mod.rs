//! The native gRPC front-end: `waggle.v1.Registry` (`registry.rs`, watches in `watch.rs`),
//! `waggle.v1.Kv` (`kv.rs`), `waggle.v1.Lock` (`lock.rs`) and the standard gRPC health service.
//! Each call is parsed here, handed to the [`Node`], and its answer or [`NodeError`] rendered
//! (the one conversion of `NodeError` to a `tonic::Status` is below).

mod kv;
mod lock;
mod registry;
mod watch;

use std::{pin::Pin, sync::Arc};

use futures_util::Stream;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use waggle_core::ValidationError;
use waggle_proto::v1;

use crate::{
    metrics::{CountLayer, RequestCounts},
    node::{Node, NodeError},
};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// A field that failed its rule, named in the message.
fn invalid(e: ValidationError) -> Status {
    Status::invalid_argument(e.to_string())
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::BadInput(_) => Status::invalid_argument(e.to_string()),
            NodeError::Invalid(m) => Status::invalid_argument(m),
            NodeError::NotFound(m) => Status::not_found(m),
            NodeError::Conflict(m) => Status::already_exists(m),
            NodeError::Precondition(m) => Status::failed_precondition(m),
            NodeError::TooLarge(m) => Status::resource_exhausted(m),
            NodeError::NotLeader | NodeError::LeaderUnreachable => Status::unavailable(e.to_string()),
            NodeError::Overloaded => Status::resource_exhausted(e.to_string()),
            NodeError::Unavailable(m) => Status::unavailable(m),
        }
    }
}

/// Serves the gRPC API on `listener` until `shutdown`, counting requests in `requests`.
pub(crate) async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    requests: Arc<RequestCounts>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    // Small request/response pairs: never wait for Nagle + delayed ACK (40 ms stalls).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    // The standard gRPC health service, for load balancers, Kubernetes probes and Waggle's
    // own gRPC checks: serving while the node runs.
    let (grpc_health, grpc_health_service) = tonic_health::server::health_reporter();
    grpc_health.set_serving::<v1::registry_server::RegistryServer<registry::RegistryService>>().await;
    let server = tonic::transport::Server::builder()
        .layer(CountLayer(requests))
        .add_service(grpc_health_service)
        .add_service(v1::kv_server::KvServer::new(kv::KvService { node: node.clone() }))
        .add_service(v1::lock_server::LockServer::new(lock::LockService { node: node.clone() }))
        .add_service(v1::registry_server::RegistryServer::new(registry::RegistryService { node }))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned());
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!("gRPC server failed: {e}");
        }
    })
}
