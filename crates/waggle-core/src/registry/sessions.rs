//! Sessions: opening, revoking, expiring and ending them (with everything bound to them),
//! and the lock-delays an ended session leaves on its keys and lock slots.

use std::{collections::BTreeMap, sync::Arc};

use super::Registry;
use crate::{Applied, ApplyError, Effect, KvEntry, Session, SessionId, Ttl};

impl Registry {
    /// Live sessions by id.
    pub fn sessions(&self) -> &BTreeMap<SessionId, Session> {
        &self.sessions
    }

    /// Lock-delays in force: keys and lock slots, each with its delay in ms.
    pub fn lock_delays(&self) -> Vec<(crate::DelayTarget, u64)> {
        let keys =
            self.key_delays().map(|(key, since, ms)| (crate::DelayTarget::Key { key: key.to_owned(), since }, ms));
        let slots = self.locks.iter().flat_map(|(name, state)| {
            state
                .delayed
                .iter()
                .map(|(token, ms)| (crate::DelayTarget::Lock { lock: name.clone(), token: *token }, *ms))
        });
        keys.chain(slots).collect()
    }

    /// Keys under a lock-delay: the key, the revision the delay began at, its length in ms.
    pub fn key_delays(&self) -> impl Iterator<Item = (&str, u64, u64)> {
        self.key_delays.iter().map(|(key, (since, ms))| (key.as_str(), *since, *ms))
    }
}

// The apply arms and their helpers, called from `Registry::apply`.
impl Registry {
    pub(super) fn create_session(
        &mut self,
        id: SessionId,
        ttl: Ttl,
        options: &crate::SessionOptions,
        effects: &mut Vec<Effect>,
    ) -> Result<Applied, ApplyError> {
        options.validate()?;
        if id.get() == 0 || id == SessionId::AGENT || self.sessions.contains_key(&id) {
            return Err(ApplyError::SessionIdTaken(id));
        }
        for check in &options.checks {
            let status = self
                .check_owners
                .get(check)
                .and_then(|(service, instance)| self.services.get(service)?.get(instance))
                .and_then(|i| i.checks.iter().find(|c| c.spec.id == *check))
                .map(|c| c.status);
            match status {
                None => return Err(crate::ValidationError::new("checks", format!("no check {check:?}")).into()),
                Some(crate::HealthStatus::Critical) => {
                    let rule = format!("check {check:?} is critical");
                    return Err(crate::ValidationError::new("checks", rule).into());
                }
                Some(_) => {}
            }
        }
        for check in &options.checks {
            self.check_sessions.entry(check.clone()).or_default().insert(id);
        }
        self.revision = self.revision.next();
        self.sessions.insert(
            id,
            Session {
                id,
                ttl,
                create_revision: self.revision,
                instances: Default::default(),
                keys: Default::default(),
                locks: Default::default(),
                options: options.clone(),
            },
        );
        effects.push(Effect::SessionOpened { session: id, ttl, options: options.clone(), revision: self.revision });
        Ok(Applied::SessionCreated { revision: self.revision, session: id })
    }

    pub(super) fn revoke_session(&mut self, id: SessionId, effects: &mut Vec<Effect>) -> Result<Applied, ApplyError> {
        if id == SessionId::AGENT || !self.sessions.contains_key(&id) {
            return Err(ApplyError::SessionNotFound(id));
        }
        self.revision = self.revision.next();
        self.end_session(id, effects);
        Ok(self.applied())
    }

    pub(super) fn expire_sessions(&mut self, ids: &[SessionId], effects: &mut Vec<Effect>) -> Applied {
        // The agent session has no deadline: nothing expires it.
        let live: Vec<SessionId> =
            ids.iter().copied().filter(|id| *id != SessionId::AGENT && self.sessions.contains_key(id)).collect();
        if !live.is_empty() {
            self.revision = self.revision.next();
            for id in live {
                self.end_session(id, effects);
            }
        }
        self.applied()
    }

    /// Removes a session and all its instances at the current revision.
    pub(super) fn end_session(&mut self, id: SessionId, effects: &mut Vec<Effect>) {
        let Some(session) = self.sessions.remove(&id) else {
            return;
        };
        for (service, instance_id) in &session.instances {
            if let Some(instance) = self.remove_instance(service, instance_id) {
                effects.push(Effect::InstanceRemoved { instance, revision: self.revision });
            }
        }
        for check in &session.options.checks {
            if let Some(dependents) = self.check_sessions.get_mut(check) {
                dependents.remove(&id);
                if dependents.is_empty() {
                    self.check_sessions.remove(check);
                }
            }
        }
        let delay = session.options.lock_delay_ms;
        for lock in &session.locks {
            self.leave_lock(lock, id, self.revision, delay, effects);
        }
        for key in &session.keys {
            let Some(entry) = self.kv.get(key).filter(|e| e.session == Some(id)) else { continue };
            let entry = match session.options.behavior {
                crate::KeyBehavior::Delete => None,
                crate::KeyBehavior::Release => Some(Arc::new(KvEntry {
                    session: None,
                    modify_revision: self.revision,
                    version: entry.version + 1,
                    ..KvEntry::clone(entry)
                })),
            };
            match &entry {
                Some(entry) => self.kv.insert(key.clone(), entry.clone()),
                None => self.kv.remove(key),
            };
            effects.push(Effect::KvChanged { key: key.clone(), entry, revision: self.revision });
            if delay > 0 {
                let since = self.revision.get();
                self.key_delays.insert(key.clone(), (since, delay));
                let target = crate::DelayTarget::Key { key: key.clone(), since };
                effects.push(Effect::LockDelayStarted { target, ms: delay });
            }
        }
        effects.push(Effect::SessionClosed { session: id });
    }

    pub(super) fn lift_lock_delays(&mut self, delays: &[crate::DelayTarget], effects: &mut Vec<Effect>) -> Applied {
        let next = self.revision.next();
        let mut changed = false;
        for target in delays {
            let lifted = match target {
                crate::DelayTarget::Key { key, since } => {
                    let current = self.key_delays.get(key).is_some_and(|(s, _)| s == since);
                    if current {
                        self.key_delays.remove(key);
                    }
                    current
                }
                crate::DelayTarget::Lock { lock, token } => {
                    match self.locks.get(lock).filter(|s| s.delayed.iter().any(|(t, _)| t == token)) {
                        Some(current) => {
                            let mut state = crate::LockState::clone(current);
                            state.delayed.retain(|(t, _)| t != token);
                            self.settle_lock(lock, state, next, effects);
                            true
                        }
                        None => false,
                    }
                }
            };
            if lifted {
                changed = true;
                effects.push(Effect::LockDelayLifted { target: target.clone() });
            }
        }
        if changed {
            self.revision = next;
        }
        self.applied()
    }
}
