//! What every gRPC service shares: the one conversion of a [`NodeError`] to a `tonic::Status`,
//! field errors as `INVALID_ARGUMENT`, and the boxed stream type of streaming answers.

use std::{pin::Pin, sync::Arc};

use futures_util::Stream;
use tonic::Status;
use waggle_core::ValidationError;

use crate::node::{Caller, Node, NodeError};

pub(super) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// A field that failed its rule, named in the message.
pub(super) fn invalid(e: ValidationError) -> Status {
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
            NodeError::PermissionDenied(m) => Status::permission_denied(m),
            NodeError::TooLarge(m) => Status::resource_exhausted(m),
            NodeError::NotLeader | NodeError::LeaderUnreachable => Status::unavailable(e.to_string()),
            NodeError::Overloaded => Status::resource_exhausted(e.to_string()),
            NodeError::Unavailable(m) => Status::unavailable(m),
        }
    }
}

/// The token a call carries: metadata `x-consul-token`, or `authorization: Bearer <secret>`.
fn token<T>(request: &tonic::Request<T>) -> Option<&str> {
    let metadata = request.metadata();
    if let Some(token) = metadata.get("x-consul-token").and_then(|v| v.to_str().ok()) {
        return Some(token);
    }
    metadata.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim)
}

/// The token a call carries, owned (so no borrow of the request is held while it resolves).
pub(super) fn token_of<T>(request: &tonic::Request<T>) -> Option<String> {
    token(request).map(str::to_owned)
}

/// Who makes a call, resolved from its token (see [`Node::resolve`]).
pub(super) async fn caller(node: &Node, token: Option<String>) -> Result<Caller, Status> {
    Ok(node.resolve(token.as_deref()).await?)
}

/// Ends a stream with `PERMISSION_DENIED` "ACL not found" as soon as its caller's token is
/// deleted or expires (checked whenever the ACL state changes), rather than at its next event.
pub(super) fn while_authorized<T: Send + 'static>(
    stream: BoxStream<T>,
    node: Arc<Node>,
    caller: Caller,
) -> BoxStream<T> {
    let signal = node.read_model().acl_signal();
    let state = (stream, Some(signal), false, node, caller);
    Box::pin(futures_util::stream::unfold(state, |(mut stream, mut signal, ended, node, caller)| async move {
        use futures_util::StreamExt;
        if ended {
            return None;
        }
        loop {
            let changed = async {
                match signal.as_mut() {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                item = stream.next() => return item.map(|item| (item, (stream, signal, false, node, caller))),
                alive = changed => {
                    if !alive {
                        signal = None;
                    } else if node.revalidate(&caller).is_err() {
                        let denied = Err(Status::permission_denied("ACL not found"));
                        return Some((denied, (stream, signal, true, node, caller)));
                    }
                }
            }
        }
    }))
}
