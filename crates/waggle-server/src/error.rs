//! Server errors and their mapping to gRPC status codes.

use crate::consensus::{Refusal, RefusalKind};

/// Why a proposal did not apply.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub(crate) enum ProposeError {
    /// The state machine refused it (bad input or unknown object).
    #[error("{}", .0.message)]
    Refused(Refusal),
    /// This node does not lead the cluster.
    #[error("this node is not the leader")]
    NotLeader,
    /// The leader could not be reached at all (connection refused): the write was not
    /// proposed anywhere, so it is safe to try again once a leader settles.
    #[error("the leader is unreachable")]
    LeaderUnreachable,
    /// Too many writes are already waiting; the client should back off and retry.
    #[error("too many writes in flight; retry later")]
    Overloaded,
    /// Raft could not commit it (shutting down, storage failure).
    #[error("registry unavailable: {0}")]
    Unavailable(String),
}

impl From<ProposeError> for tonic::Status {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::Refused(r) => match r.kind {
                RefusalKind::NotFound => tonic::Status::not_found(r.message),
                RefusalKind::Invalid => tonic::Status::invalid_argument(r.message),
                RefusalKind::Conflict => tonic::Status::already_exists(r.message),
                RefusalKind::Precondition => tonic::Status::failed_precondition(r.message),
            },
            ProposeError::NotLeader => tonic::Status::unavailable("this node is not the leader"),
            ProposeError::LeaderUnreachable => tonic::Status::unavailable("the leader is unreachable"),
            ProposeError::Overloaded => tonic::Status::resource_exhausted("too many writes in flight; retry later"),
            ProposeError::Unavailable(m) => tonic::Status::unavailable(m),
        }
    }
}

/// A server that could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Storage or consensus failed to start.
    #[error("{0:#}")]
    Startup(#[from] anyhow::Error),
}
