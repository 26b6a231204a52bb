//! Lock use cases: acquire (try, or wait in FIFO order up to a deadline, following this
//! member's copy of the lock until granted), release and proclaim. Grants are decided in the
//! state machine; the fencing token is the revision of the grant.

use std::{sync::Arc, time::Duration};

use waggle_core::{Applied, Command, LockOutcome, Revision, SessionId};

use super::{Caller, Node, NodeError};
use crate::consensus::Consensus;

/// The longest an acquire waits in one call (clients call again to wait longer).
const MAX_WAIT: Duration = Duration::from_secs(600);

/// An acquire request.
pub(crate) struct Acquire {
    pub(crate) name: String,
    pub(crate) session: SessionId,
    /// Holders allowed at once (1: a lock; more: a semaphore).
    pub(crate) limit: u32,
    /// How long to wait in line (0: try once).
    pub(crate) wait: Duration,
    /// Keep the place in line when the wait ends (the client asks again).
    pub(crate) keep_waiting: bool,
    /// The holder's value (an election's proclamation).
    pub(crate) value: Vec<u8>,
}

/// An acquire's answer: the fencing token when granted, and the revision it was decided at.
pub(crate) struct Grant {
    pub(crate) token: Option<u64>,
    pub(crate) revision: Revision,
}

/// Gives up a wait if the acquire is dropped (the client went away): a grant that arrives
/// for a request nobody answers would otherwise be held by a session that does not know it.
struct AbandonGuard {
    consensus: Arc<Consensus>,
    lock: String,
    session: SessionId,
    armed: bool,
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if self.armed {
            let consensus = self.consensus.clone();
            let command = Command::LockRelease { lock: self.lock.clone(), session: self.session, waiting_only: false };
            tokio::spawn(async move {
                if let Err(e) = consensus.propose(command).await {
                    tracing::debug!("giving up an abandoned lock wait failed: {e}");
                }
            });
        }
    }
}

fn granted(token: u64, revision: Revision) -> Grant {
    Grant { token: Some(token), revision }
}

fn refused(revision: Revision) -> Grant {
    Grant { token: None, revision }
}

impl Node {
    /// Takes a lock (or a semaphore slot) for a session, waiting in line up to `wait`.
    pub(crate) async fn acquire(&self, caller: &Caller, request: Acquire) -> Result<Grant, NodeError> {
        let Acquire { name, session, limit, wait, keep_waiting, value } = request;
        let limit = limit.max(1);
        waggle_core::check_lock(&name, limit, &value)?;
        let wait = wait.min(MAX_WAIT);
        let command = Command::LockAcquire { lock: name.clone(), session, limit, wait: !wait.is_zero(), value };
        let applied = self.write(caller, command).await?;
        match applied {
            Applied::Lock { revision, outcome: LockOutcome::Held { token } } => return Ok(granted(token, revision)),
            Applied::Lock { outcome: LockOutcome::Waiting { .. }, .. } => {}
            _ => return Ok(refused(applied.revision())),
        }
        let mut guard = AbandonGuard { consensus: self.consensus.clone(), lock: name.clone(), session, armed: true };
        let deadline = tokio::time::Instant::now() + wait;
        let read_model = self.read_model();
        // Wait until this member has applied the queueing, then follow the lock; a member that
        // cannot catch up in time goes straight to the end (its view would be stale).
        let caught_up = tokio::time::timeout_at(deadline, read_model.applied(applied.revision())).await.is_ok();
        if caught_up {
            // Woken when this lock changes, not on every write.
            let mut signal = read_model.lock_signal(&name);
            loop {
                let (revision, state) = read_model.lock(&name);
                if let Some(held) = state.as_ref().and_then(|s| s.held_by(session)) {
                    guard.armed = false;
                    return Ok(granted(held.token, revision));
                }
                if !state.as_ref().is_some_and(|s| s.waiters.iter().any(|w| w.session == session)) {
                    // No longer in line: its session ended, or it was released meanwhile.
                    guard.armed = false;
                    return Ok(refused(revision));
                }
                if !matches!(tokio::time::timeout_at(deadline, signal.changed()).await, Ok(Ok(()))) {
                    break;
                }
            }
        }
        if keep_waiting {
            // The client asks again and keeps its place in line.
            guard.armed = false;
            let (revision, state) = read_model.lock(&name);
            return Ok(match state.as_ref().and_then(|s| s.held_by(session)) {
                Some(held) => granted(held.token, revision),
                None => refused(revision),
            });
        }
        // Out of time: leave the line, unless the grant came first. The guard stays armed
        // until the give-up is answered, so a failed or cancelled give-up is retried on drop.
        let give_up = Command::LockRelease { lock: name, session, waiting_only: true };
        let applied = self.write(caller, give_up).await?;
        guard.armed = false;
        Ok(match applied {
            Applied::Lock { revision, outcome: LockOutcome::Held { token } } => granted(token, revision),
            _ => refused(applied.revision()),
        })
    }

    /// Releases a session's hold on a lock (or its place in line).
    pub(crate) async fn release(
        &self,
        caller: &Caller,
        lock: String,
        session: SessionId,
    ) -> Result<Revision, NodeError> {
        waggle_core::check_key(&lock)?;
        Ok(self.write(caller, Command::LockRelease { lock, session, waiting_only: false }).await?.revision())
    }

    /// Replaces a holder's value (an election leader's proclamation), if `token` still holds.
    pub(crate) async fn proclaim(
        &self,
        caller: &Caller,
        lock: String,
        session: SessionId,
        token: u64,
        value: Vec<u8>,
    ) -> Result<Revision, NodeError> {
        waggle_core::check_lock(&lock, 1, &value)?;
        Ok(self.write(caller, Command::LockProclaim { lock, session, token, value }).await?.revision())
    }
}
