//! Locks and semaphores: acquire, release, proclaim, and handing a slot to the next waiter.

use std::sync::Arc;

use super::Registry;
use crate::{Applied, ApplyError, Effect, Revision, SessionId};

impl Registry {
    /// Locks with holders or waiters.
    pub fn locks(&self) -> &imbl::OrdMap<String, Arc<crate::LockState>> {
        &self.locks
    }
}

// The apply arms and their helpers, called from `Registry::apply`.
impl Registry {
    fn lock_applied(&self, outcome: crate::LockOutcome) -> Applied {
        Applied::Lock { revision: self.revision, outcome }
    }

    pub(super) fn lock_acquire(
        &mut self,
        lock: &str,
        session: SessionId,
        limit: u32,
        wait: bool,
        value: &[u8],
        effects: &mut Vec<Effect>,
    ) -> Result<Applied, ApplyError> {
        use crate::{LockHolder, LockOutcome, LockState, LockWaiter};
        crate::check_lock(lock, limit, value)?;
        if session == SessionId::AGENT || !self.sessions.contains_key(&session) {
            return Err(ApplyError::SessionNotFound(session));
        }
        let mut state = match self.locks.get(lock) {
            Some(state) => {
                if state.limit != limit {
                    let rule = format!("lock {lock:?} admits {} holders, not {limit}", state.limit);
                    return Err(crate::ValidationError::new("limit", rule).into());
                }
                if let Some(held) = state.held_by(session) {
                    return Ok(self.lock_applied(LockOutcome::Held { token: held.token }));
                }
                if let Some(position) = state.waiters.iter().position(|w| w.session == session) {
                    return Ok(self.lock_applied(LockOutcome::Waiting { position }));
                }
                LockState::clone(state)
            }
            None => LockState {
                limit,
                holders: Vec::new(),
                waiters: Default::default(),
                last_token: 0,
                delayed: Vec::new(),
            },
        };
        let next = self.revision.next();
        let value: Arc<[u8]> = Arc::from(value);
        let outcome = if state.holders.len() + state.delayed.len() < limit as usize && state.waiters.is_empty() {
            let token = state.next_token(next.get());
            state.holders.push(LockHolder { session, token, value });
            LockOutcome::Held { token }
        } else if wait {
            if state.waiters.len() >= crate::MAX_LOCK_WAITERS {
                let rule = format!("at most {} sessions wait for one lock", crate::MAX_LOCK_WAITERS);
                return Err(crate::ValidationError::new("lock", rule).into());
            }
            state.waiters.push_back(LockWaiter { session, value });
            LockOutcome::Waiting { position: state.waiters.len() - 1 }
        } else {
            return Ok(self.lock_applied(LockOutcome::Busy));
        };
        self.revision = next;
        if let Some(s) = self.sessions.get_mut(&session) {
            s.locks.insert(lock.to_owned());
        }
        let state = Arc::new(state);
        self.locks.insert(lock.to_owned(), state.clone());
        effects.push(Effect::LockChanged { lock: lock.to_owned(), state: Some(state), revision: next });
        Ok(self.lock_applied(outcome))
    }

    pub(super) fn lock_release(
        &mut self,
        lock: &str,
        session: SessionId,
        waiting_only: bool,
        effects: &mut Vec<Effect>,
    ) -> Result<Applied, ApplyError> {
        crate::check_key(lock).map_err(|e| crate::ValidationError::new("lock", e.rule))?;
        if waiting_only && let Some(held) = self.locks.get(lock).and_then(|s| s.held_by(session)) {
            return Ok(self.lock_applied(crate::LockOutcome::Held { token: held.token }));
        }
        let involved = self
            .locks
            .get(lock)
            .is_some_and(|s| s.held_by(session).is_some() || s.waiters.iter().any(|w| w.session == session));
        if involved {
            self.revision = self.revision.next();
            self.leave_lock(lock, session, self.revision, 0, effects);
            if let Some(s) = self.sessions.get_mut(&session) {
                s.locks.remove(lock);
            }
        }
        Ok(self.lock_applied(crate::LockOutcome::Released))
    }

    pub(super) fn lock_proclaim(
        &mut self,
        lock: &str,
        session: SessionId,
        token: u64,
        value: &[u8],
        effects: &mut Vec<Effect>,
    ) -> Result<Applied, ApplyError> {
        let fenced = || ApplyError::Fenced { lock: lock.to_owned(), token };
        let current = self.locks.get(lock).ok_or_else(fenced)?;
        crate::check_lock(lock, current.limit, value)?;
        let mut state = crate::LockState::clone(current);
        let holder = state.holders.iter_mut().find(|h| h.session == session && h.token == token).ok_or_else(fenced)?;
        if *holder.value == *value {
            return Ok(self.lock_applied(crate::LockOutcome::Held { token }));
        }
        holder.value = Arc::from(value);
        self.revision = self.revision.next();
        let state = Arc::new(state);
        self.locks.insert(lock.to_owned(), state.clone());
        effects.push(Effect::LockChanged { lock: lock.to_owned(), state: Some(state), revision: self.revision });
        Ok(self.lock_applied(crate::LockOutcome::Held { token }))
    }

    /// Takes `session` out of `lock` (grant or wait) at `revision`, granting the next waiters
    /// (their fencing token is `revision`). With a lock-delay (`delay_ms` > 0) a grant's slot
    /// stays taken until the delay is lifted.
    pub(super) fn leave_lock(
        &mut self,
        lock: &str,
        session: SessionId,
        revision: Revision,
        delay_ms: u64,
        effects: &mut Vec<Effect>,
    ) {
        let Some(current) = self.locks.get(lock) else { return };
        let mut state = crate::LockState::clone(current);
        if delay_ms > 0
            && let Some(held) = state.held_by(session)
        {
            let token = held.token;
            state.delayed.push((token, delay_ms));
            let target = crate::DelayTarget::Lock { lock: lock.to_owned(), token };
            effects.push(Effect::LockDelayStarted { target, ms: delay_ms });
        }
        state.holders.retain(|h| h.session != session);
        state.waiters.retain(|w| w.session != session);
        self.settle_lock(lock, state, revision, effects);
    }

    /// Grants free slots to the next waiters at `revision` and stores the lock (or drops it
    /// once nobody holds, waits or is delayed).
    pub(super) fn settle_lock(
        &mut self,
        lock: &str,
        mut state: crate::LockState,
        revision: Revision,
        effects: &mut Vec<Effect>,
    ) {
        while state.holders.len() + state.delayed.len() < state.limit as usize {
            let Some(next) = state.waiters.pop_front() else { break };
            let token = state.next_token(revision.get());
            state.holders.push(crate::LockHolder { session: next.session, token, value: next.value });
        }
        if state.holders.is_empty() && state.waiters.is_empty() && state.delayed.is_empty() {
            self.locks.remove(lock);
            effects.push(Effect::LockChanged { lock: lock.to_owned(), state: None, revision });
        } else {
            let state = Arc::new(state);
            self.locks.insert(lock.to_owned(), state.clone());
            effects.push(Effect::LockChanged { lock: lock.to_owned(), state: Some(state), revision });
        }
    }
}
