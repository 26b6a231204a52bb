//! What a proposal or a Raft-level request answers when it fails: [`ProposeError`], and the
//! state machine's refusals in a form that crosses the Raft boundary ([`Refusal`]).

use waggle_core::{Applied, ApplyError};

/// The state machine's answer to one log entry, as handed back to the proposer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum CommandResult {
    /// The command was applied.
    Applied(Applied),
    /// The command was refused; state is unchanged.
    Refused(Refusal),
}

/// Why the state machine refused a command, in a form that crosses the Raft boundary.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Refusal {
    /// The kind of refusal, which selects the gRPC status.
    pub kind: RefusalKind,
    /// A human-readable message naming the field or object.
    pub message: String,
}

/// Kinds of refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RefusalKind {
    /// A session or instance does not exist.
    NotFound,
    /// A field breaks a model rule.
    Invalid,
    /// The object already exists.
    Conflict,
    /// The cluster is not in a state that allows it (removing the last voter, say).
    Precondition,
    /// The token may not do it (or no longer exists).
    PermissionDenied,
}

impl From<ApplyError> for Refusal {
    fn from(e: ApplyError) -> Self {
        let kind = match e {
            ApplyError::Invalid(_) => RefusalKind::Invalid,
            ApplyError::Fenced { .. } => RefusalKind::Precondition,
            ApplyError::SessionIdTaken(_) | ApplyError::HistoryNamed | ApplyError::CheckIdTaken(_) => {
                RefusalKind::Conflict
            }
            ApplyError::SessionNotFound(_)
            | ApplyError::InstanceNotFound { .. }
            | ApplyError::CheckNotFound(_)
            | ApplyError::AclNotFound(_) => RefusalKind::NotFound,
            ApplyError::PermissionDenied(_) | ApplyError::TokenNotFound | ApplyError::AclBootstrapped => {
                RefusalKind::PermissionDenied
            }
            ApplyError::AclConflict(_) => RefusalKind::Conflict,
            _ => RefusalKind::Invalid,
        };
        Refusal { kind, message: e.to_string() }
    }
}

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
