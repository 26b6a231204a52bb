//! Distributed locks and semaphores, owned by sessions, with fencing tokens.
//!
//! A lock admits `limit` holders at once (1: a mutex; more: a semaphore). Each grant carries
//! a fencing token: the revision that granted it (one more than the previous token when
//! several grants share a revision), so a lock's tokens are unique and only grow. Waiters are served in
//! FIFO order. A holder's session ending releases its grant at once (and drops its waits).
//! A KV write can carry a [`Guard`] (lock, token) and is refused unless that token is held
//! now: a paused ex-holder cannot write after its lock moved on.

use std::{collections::VecDeque, sync::Arc};

use crate::{SessionId, ValidationError};

/// Most holders of one lock (a semaphore's limit).
pub const MAX_LOCK_LIMIT: u32 = 1024;
/// Most sessions waiting for one lock.
pub const MAX_LOCK_WAITERS: usize = 4096;
/// Largest value a holder may attach (an election's proclaimed value).
pub const MAX_LOCK_VALUE: usize = 64 * 1024;

/// A current grant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LockHolder {
    /// The holding session.
    pub session: SessionId,
    /// The fencing token: the revision of the grant.
    pub token: u64,
    /// What the holder attached (an election leader's value).
    pub value: Arc<[u8]>,
}

/// A session waiting for a grant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LockWaiter {
    /// The waiting session.
    pub session: SessionId,
    /// Its value, attached once granted.
    pub value: Arc<[u8]>,
}

/// One lock's state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LockState {
    /// How many may hold it at once.
    pub limit: u32,
    /// The holders, oldest grant first.
    pub holders: Vec<LockHolder>,
    /// The waiters, first come first served.
    pub waiters: VecDeque<LockWaiter>,
    /// The last fencing token granted (0: none yet).
    pub last_token: u64,
    /// Slots kept from holders whose session ended under a lock-delay: (the ended grant's
    /// token, the delay in ms). They count against `limit` until lifted.
    pub delayed: Vec<(u64, u64)>,
}

impl LockState {
    /// The grant `session` holds, if any.
    pub fn held_by(&self, session: SessionId) -> Option<&LockHolder> {
        self.holders.iter().find(|h| h.session == session)
    }

    /// Whether `token` is a current grant.
    pub fn token_held(&self, token: u64) -> bool {
        self.holders.iter().any(|h| h.token == token)
    }

    /// The fencing token of a grant made at `revision`: the revision, unless several grants
    /// share it (a semaphore whose holders left in one command), then one more than the last.
    /// Tokens of a lock are unique and only grow.
    pub fn next_token(&mut self, revision: u64) -> u64 {
        self.last_token = revision.max(self.last_token + 1);
        self.last_token
    }
}

/// Something a lock-delay keeps from being taken.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum DelayTarget {
    /// A KV key (Consul's `?acquire`), with the revision its delay began at (so a lift meant
    /// for an earlier delay of the same key leaves a later one alone).
    Key {
        /// The key.
        key: String,
        /// The revision the delay began at.
        since: u64,
    },
    /// A lock's slot, named by the token of the grant that ended.
    Lock {
        /// The lock.
        lock: String,
        /// The ended grant's token.
        token: u64,
    },
}

/// What an acquire did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LockOutcome {
    /// The session holds the lock with this fencing token.
    Held {
        /// The fencing token.
        token: u64,
    },
    /// The session waits in line (position 0 is next).
    Waiting {
        /// Its place in the queue.
        position: usize,
    },
    /// Taken, and the acquire did not wait.
    Busy,
    /// Released, or a wait given up.
    Released,
}

/// A KV write's fencing check: refused unless `token` holds `lock` now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Guard {
    /// The lock.
    pub lock: String,
    /// The token its holder was granted.
    pub token: u64,
}

/// Checks a lock name (the KV key rules) and a limit.
pub fn check_lock(name: &str, limit: u32, value: &[u8]) -> Result<(), ValidationError> {
    crate::check_key(name).map_err(|e| ValidationError::new("lock", e.rule))?;
    if limit == 0 || limit > MAX_LOCK_LIMIT {
        return Err(ValidationError::new("limit", format!("must be 1 to {MAX_LOCK_LIMIT} (got {limit})")));
    }
    if value.len() > MAX_LOCK_VALUE {
        return Err(ValidationError::new("value", format!("at most {MAX_LOCK_VALUE} bytes (got {})", value.len())));
    }
    Ok(())
}
