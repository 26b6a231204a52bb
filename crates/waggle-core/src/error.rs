//! Errors of the model: validation failures and commands the state machine refuses.

use crate::{InstanceId, ServiceName, SessionId};

/// An input that breaks one of the model's rules. Names the field and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {rule}")]
pub struct ValidationError {
    /// The field that was rejected, e.g. `service` or `meta`.
    pub field: &'static str,
    /// The rule it broke, as a human-readable sentence fragment.
    pub rule: String,
}

impl ValidationError {
    /// Builds an error for `field` breaking `rule`.
    pub fn new(field: &'static str, rule: impl Into<String>) -> Self {
        ValidationError { field, rule: rule.into() }
    }
}

/// A command the state machine refused. The state is unchanged and no revision is consumed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The session does not exist (never created, revoked or expired).
    #[error("session {0} not found (expired or revoked)")]
    SessionNotFound(SessionId),
    /// A session with this id already exists (or the id is 0).
    #[error("session id {0} is unavailable")]
    SessionIdTaken(SessionId),
    /// No instance with this id is registered in this service.
    #[error("instance {id} of service {service} not found")]
    InstanceNotFound {
        /// The service looked in.
        service: ServiceName,
        /// The instance id looked for.
        id: InstanceId,
    },
    /// A guarded write whose fencing token does not hold the lock (any more).
    #[error("fencing token {token} does not hold lock {lock:?}")]
    Fenced {
        /// The lock.
        lock: String,
        /// The token given.
        token: u64,
    },
    /// Another instance already has a check with this id.
    #[error("check id {0:?} is already used by another service instance")]
    CheckIdTaken(String),
    /// The instance has no check with this id.
    #[error("check {0:?} not found")]
    CheckNotFound(String),
    /// The history is already named (or the id was 0).
    #[error("the registry's history is already named")]
    HistoryNamed,
    /// The token may not do this (the message is Consul's).
    #[error(transparent)]
    PermissionDenied(#[from] crate::acl::Denied),
    /// The token a command was proposed for does not exist (any more): deleted, expired, or
    /// never created. Consul's words.
    #[error("ACL not found")]
    TokenNotFound,
    /// The token, policy or role named does not exist.
    #[error("ACL not found: {0}")]
    AclNotFound(String),
    /// The ACL system was bootstrapped already.
    #[error("ACL bootstrap no longer allowed")]
    AclBootstrapped,
    /// Another token, policy or role already has this secret, accessor or name.
    #[error("{0}")]
    AclConflict(String),
    /// The command carried a value that breaks a model rule.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}
