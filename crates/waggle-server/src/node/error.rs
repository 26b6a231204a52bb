//! [`NodeError`]: why a use case of the node failed, the one error every front-end renders
//! (`impl From<NodeError> for tonic::Status` in `grpc/`, for `ConsulError` in `consul/`).

use waggle_core::ValidationError;

use crate::consensus::{ProposeError, RefusalKind};

/// Why a node operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum NodeError {
    /// The request breaks a field rule or a limit, found before anything was proposed.
    #[error("invalid request: {0}")]
    BadInput(#[from] ValidationError),
    /// The state machine refused it: it breaks a model rule.
    #[error("{0}")]
    Invalid(String),
    /// A session, instance, check or other object it names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The object already exists.
    #[error("{0}")]
    Conflict(String),
    /// The state does not allow it (a fenced write, removing the last voter).
    #[error("{0}")]
    Precondition(String),
    /// The caller's token may not do this, or is not a token (Consul's wording in the message).
    #[error("{0}")]
    PermissionDenied(String),
    /// Too large: the KV store is at its quota, or an answer would be over its cap.
    #[error("{0}")]
    TooLarge(String),
    /// This node does not lead the cluster (and could not reach one that does).
    #[error("this node is not the leader")]
    NotLeader,
    /// The leader could not be reached at all: nothing was proposed, so retrying is safe.
    #[error("the leader is unreachable")]
    LeaderUnreachable,
    /// Too many writes are already waiting; the client should back off and retry.
    #[error("too many writes in flight; retry later")]
    Overloaded,
    /// The registry could not answer (shutting down, storage failure, outcome unknown).
    #[error("registry unavailable: {0}")]
    Unavailable(String),
}

impl From<ProposeError> for NodeError {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::Refused(r) => match r.kind {
                RefusalKind::NotFound => NodeError::NotFound(r.message),
                RefusalKind::Invalid => NodeError::Invalid(r.message),
                RefusalKind::Conflict => NodeError::Conflict(r.message),
                RefusalKind::Precondition => NodeError::Precondition(r.message),
                RefusalKind::PermissionDenied => NodeError::PermissionDenied(r.message),
            },
            ProposeError::NotLeader => NodeError::NotLeader,
            ProposeError::LeaderUnreachable => NodeError::LeaderUnreachable,
            ProposeError::Overloaded => NodeError::Overloaded,
            ProposeError::Unavailable(m) => NodeError::Unavailable(m),
        }
    }
}

impl From<waggle_core::ApplyError> for NodeError {
    fn from(e: waggle_core::ApplyError) -> Self {
        ProposeError::Refused(e.into()).into()
    }
}
