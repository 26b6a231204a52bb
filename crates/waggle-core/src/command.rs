//! Commands (the replicated log's payload), their responses and side effects.

use std::sync::Arc;

use crate::{
    ApplyError, CheckSpec, CheckUpdate, Instance, InstanceId, InstanceSpec, Revision, ServiceName, SessionId, Ttl,
};

/// A state change proposed through the log. Everything time-dependent has already been
/// decided by the proposer (for example which sessions expired), so applying a command is
/// deterministic.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Command {
    /// Opens a session with the given TTL under an id chosen by the proposer (at random, so
    /// that ids are not reused even across a wiped or restored data dir). Refused if the id is
    /// 0 or taken; the proposer then retries with another id.
    CreateSession {
        /// The new session's id.
        session: SessionId,
        /// Time to live.
        ttl: Ttl,
        /// Name, key behavior, lock-delay, expiry.
        options: crate::SessionOptions,
    },
    /// Ends a session at the client's request; its instances are removed in the same revision.
    RevokeSession {
        /// The session to end.
        session: SessionId,
    },
    /// Ends sessions whose deadline passed on the leader; unknown ids are ignored.
    ExpireSessions {
        /// The sessions to end.
        sessions: Vec<SessionId>,
    },
    /// Registers (or replaces) an instance under a session.
    Register {
        /// The owning session.
        session: SessionId,
        /// The instance.
        spec: InstanceSpec,
    },
    /// Removes one instance, whichever session owns it.
    Deregister {
        /// Its service.
        service: ServiceName,
        /// Its id.
        id: InstanceId,
    },
    /// Registers (or replaces) an instance under the agent session with its health checks,
    /// which replace any it had (a check whose definition is unchanged keeps its status).
    /// With checks, the instance's status is the worst of theirs.
    AgentRegister {
        /// The instance.
        spec: InstanceSpec,
        /// Its checks (ids unique on the node).
        checks: Vec<CheckSpec>,
    },
    /// Adds a check to an instance, or replaces the one with the same id.
    PutCheck {
        /// The instance's service.
        service: ServiceName,
        /// The instance.
        id: InstanceId,
        /// The check.
        check: CheckSpec,
    },
    /// Removes a check from an instance.
    RemoveCheck {
        /// The instance's service.
        service: ServiceName,
        /// The instance.
        id: InstanceId,
        /// The check's id.
        check: String,
    },
    /// Status transitions of checks, decided by the leader. Updates naming a check that no
    /// longer exists, or repeating its status and output, change nothing; if none changes
    /// anything no revision is consumed.
    UpdateChecks {
        /// The transitions.
        updates: Vec<CheckUpdate>,
    },
    /// A key/value transaction (every KV write is one).
    KvTxn {
        /// The transaction.
        txn: crate::Txn,
    },
    /// Acquires a lock (or a semaphore slot) for a session: granted if free, else queued
    /// (`wait`) or answered busy.
    LockAcquire {
        /// The lock's name.
        lock: String,
        /// The acquiring session.
        session: SessionId,
        /// Holders admitted at once (1: a mutex); every acquirer must agree.
        limit: u32,
        /// Queue up when taken.
        wait: bool,
        /// A value to attach to the grant (an election's proclamation).
        value: Vec<u8>,
    },
    /// Releases a session's grant of a lock, or gives up its wait; the next waiters are
    /// granted in the same revision.
    LockRelease {
        /// The lock's name.
        lock: String,
        /// The session.
        session: SessionId,
        /// Only give up a wait: a grant that came first is kept (answered `Held`).
        waiting_only: bool,
    },
    /// Replaces the value attached to a current grant (an election leader proclaiming);
    /// refused as fenced unless `token` is the session's grant.
    LockProclaim {
        /// The lock's name.
        lock: String,
        /// The holding session.
        session: SessionId,
        /// Its grant's fencing token.
        token: u64,
        /// The new value.
        value: Vec<u8>,
    },
    /// Ends lock-delays whose time is up (decided by the leader); unknown ones are ignored.
    /// A lock's delayed slot goes to its next waiter.
    LiftLockDelays {
        /// The delays to end.
        delays: Vec<crate::DelayTarget>,
    },
    /// Runs `command` if the token with `accessor` may, checked against the ACL state at this
    /// point of the log (so a token revoked or narrowed before the write commits is refused;
    /// every member decides alike). `default` is what applies where no rule does. Refused as
    /// `PermissionDenied`, or `TokenNotFound` for a token that does not exist (any more).
    Authorized {
        /// The token's accessor.
        accessor: String,
        /// The default policy the proposer runs with.
        default: crate::acl::DefaultPolicy,
        /// The command.
        command: Box<Command>,
    },
    /// Creates the first management token; refused once the ACL system is bootstrapped.
    AclBootstrap {
        /// The token (its accessor and secret chosen by the proposer).
        token: crate::acl::Token,
    },
    /// Creates or replaces a token (by accessor). Its policies and roles must exist; its
    /// secret must be unused by another token.
    AclSetToken {
        /// The token.
        token: crate::acl::Token,
    },
    /// Deletes a token.
    AclDeleteToken {
        /// Its accessor.
        accessor: String,
    },
    /// Creates or replaces a policy (by id); names are unique.
    AclSetPolicy {
        /// The policy, its rules parsed by the proposer.
        policy: crate::acl::Policy,
    },
    /// Deletes a policy (tokens and roles that link to it lose it).
    AclDeletePolicy {
        /// Its id.
        id: String,
    },
    /// Creates or replaces a role (by id); names are unique and its policies must exist.
    AclSetRole {
        /// The role.
        role: crate::acl::Role,
    },
    /// Deletes a role (tokens that link to it lose it).
    AclDeleteRole {
        /// Its id.
        id: String,
    },
    /// Creates or replaces an auth method (by name).
    AclSetAuthMethod {
        /// The method (its configuration checked by the proposer: keys parse, algorithms known).
        method: crate::acl::AuthMethod,
    },
    /// Deletes an auth method, its binding rules and the tokens it issued, as Consul does.
    AclDeleteAuthMethod {
        /// Its name.
        name: String,
    },
    /// Creates or replaces a binding rule (by id); its auth method must exist.
    AclSetBindingRule {
        /// The rule (its selector checked by the proposer).
        rule: crate::acl::BindingRule,
    },
    /// Deletes a binding rule.
    AclDeleteBindingRule {
        /// Its id.
        id: String,
    },
    /// Deletes tokens whose expiration time passed on the leader; unknown ones are ignored.
    AclExpireTokens {
        /// The tokens' accessors.
        accessors: Vec<String>,
    },
    /// Names this registry's history with a random id chosen by its first leader. Revisions
    /// are comparable only within one history: a watcher resumes from a revision on any member
    /// of the same history and starts over from a snapshot anywhere else (a wiped or restored
    /// data dir). Refused once a history is named (or for id 0); consumes no revision.
    NameHistory {
        /// The id (not 0).
        id: u64,
    },
}

/// What the state machine answers for a command.
pub type Response = Result<Applied, ApplyError>;

/// A successfully applied command: the revision it was applied at, and what the kind of
/// command answers besides.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Applied {
    /// A command whose only answer is the revision: every command but
    /// [`Command::CreateSession`], [`Command::KvTxn`] and the lock commands.
    Done {
        /// The registry's revision after the command (unchanged if it changed nothing).
        revision: Revision,
    },
    /// A [`Command::CreateSession`] opened its session.
    SessionCreated {
        /// The registry's revision after the command (the session's create revision).
        revision: Revision,
        /// The session created.
        session: SessionId,
    },
    /// What a [`Command::KvTxn`] did (a failed comparison or an aborted operation included).
    Txn {
        /// The registry's revision after the command (unchanged if it wrote nothing).
        revision: Revision,
        /// The transaction's result.
        result: crate::TxnResult,
    },
    /// What a lock command ([`Command::LockAcquire`], [`Command::LockProclaim`],
    /// [`Command::LockRelease`]) did.
    Lock {
        /// The registry's revision after the command (unchanged if it changed nothing).
        revision: Revision,
        /// The lock's answer.
        outcome: crate::LockOutcome,
    },
}

impl Applied {
    /// The registry's revision after the command (unchanged if it changed nothing).
    pub fn revision(&self) -> Revision {
        match self {
            Applied::Done { revision }
            | Applied::SessionCreated { revision, .. }
            | Applied::Txn { revision, .. }
            | Applied::Lock { revision, .. } => *revision,
        }
    }
}

/// A consequence of a command that the node runtime must act on (the read model publishes
/// instance changes; the session clock tracks sessions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// An instance was added (`created`) or replaced.
    InstanceUpserted {
        /// The instance as now stored.
        instance: Arc<Instance>,
        /// True when the id was not registered in the service before.
        created: bool,
    },
    /// An instance was removed at `revision`.
    InstanceRemoved {
        /// The instance as it was.
        instance: Arc<Instance>,
        /// The revision of the removal.
        revision: Revision,
    },
    /// A session was opened at `revision`.
    SessionOpened {
        /// Its id.
        session: SessionId,
        /// Its TTL.
        ttl: Ttl,
        /// Its options.
        options: crate::SessionOptions,
        /// The revision that opened it.
        revision: Revision,
    },
    /// Tokens, policies or roles changed at `revision`.
    AclChanged {
        /// The revision of the change.
        revision: Revision,
    },
    /// A lock-delay began: `target` cannot be taken for `ms` milliseconds, until the leader
    /// proposes [`Command::LiftLockDelays`].
    LockDelayStarted {
        /// The delayed key or lock slot.
        target: crate::DelayTarget,
        /// How long.
        ms: u64,
    },
    /// A lock-delay ended.
    LockDelayLifted {
        /// The key or lock slot.
        target: crate::DelayTarget,
    },
    /// A key was written (`entry`) or deleted (`None`) at `revision`.
    KvChanged {
        /// The key.
        key: String,
        /// Its new entry.
        entry: Option<Arc<crate::KvEntry>>,
        /// The revision of the change.
        revision: Revision,
    },
    /// A lock's holders or waiters changed (`None`: nobody holds or waits any more).
    LockChanged {
        /// The lock.
        lock: String,
        /// Its new state.
        state: Option<Arc<crate::LockState>>,
        /// The revision of the change.
        revision: Revision,
    },
    /// A session ended (revoked or expired).
    SessionClosed {
        /// Its id.
        session: SessionId,
    },
}

/// The result of applying one command: the response for the proposer and the effects for the
/// node runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The proposer's answer.
    pub response: Response,
    /// What changed, in order.
    pub effects: Vec<Effect>,
}
