//! The registry state machine: `apply(command) -> outcome`, pure and deterministic.

use std::{collections::BTreeMap, sync::Arc};

use crate::{
    Applied, ApplyError, Check, CheckSpec, CheckUpdate, Command, Effect, Instance, InstanceId, InstanceSpec, KvEntry,
    KvOp, OpResult, Outcome, Revision, ServiceName, Session, SessionId, Ttl, Txn, TxnResult,
};

/// The instances of one service, by id: a persistent (structurally shared) ordered map, so
/// readers (the watch hub, snapshot builders) keep an old version for the price of a pointer
/// and a write copies only the O(log n) path it changes.
pub type ServiceInstances = imbl::OrdMap<InstanceId, Arc<Instance>>;

/// The whole replicated registry state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Registry {
    revision: Revision,
    history: u64,
    sessions: BTreeMap<SessionId, Session>,
    services: BTreeMap<ServiceName, Arc<ServiceInstances>>,
    /// Which instance each check id belongs to (derived from the instances' checks).
    check_owners: BTreeMap<String, (ServiceName, InstanceId)>,
    /// The key/value store (persistent, so readers keep a version for a pointer's price).
    kv: imbl::OrdMap<String, Arc<KvEntry>>,
    /// Locks with holders, waiters or delayed slots.
    locks: imbl::OrdMap<String, Arc<crate::LockState>>,
    /// Keys under a lock-delay (no acquire until lifted): the revision it began at and its
    /// length in ms.
    key_delays: BTreeMap<String, (u64, u64)>,
    /// Which sessions depend on each check (derived from the sessions' options).
    check_sessions: BTreeMap<String, std::collections::BTreeSet<SessionId>>,
    /// Checks that turned critical or went away during the command being applied: the
    /// sessions depending on them end with it. Empty between commands.
    failed_checks: Vec<String>,
}

impl Registry {
    /// An empty registry at [`Revision::INITIAL`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The current revision.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The id naming this registry's history (0 until its first leader names it); see
    /// [`Command::NameHistory`].
    pub fn history(&self) -> u64 {
        self.history
    }

    /// Forgets the history's name, for state restored from a backup: it continues as a new
    /// history, named again by its first leader.
    pub fn start_new_history(&mut self) {
        self.history = 0;
    }

    /// Moves the revision `by` ahead (nothing else changes), for state restored from a backup:
    /// the old cluster may have gone on after the backup was taken, and revisions (hence
    /// fencing tokens) issued by the restored one must not repeat any it issued.
    pub fn bump_revision(&mut self, by: u64) {
        self.revision = Revision::new(self.revision.get().saturating_add(by));
    }

    /// Live sessions by id.
    pub fn sessions(&self) -> &BTreeMap<SessionId, Session> {
        &self.sessions
    }

    /// Services that have at least one instance.
    pub fn services(&self) -> &BTreeMap<ServiceName, Arc<ServiceInstances>> {
        &self.services
    }

    /// The instances of one service (`None` if it has none).
    pub fn service(&self, name: &str) -> Option<&Arc<ServiceInstances>> {
        self.services.get(name)
    }

    /// Applies one command. Refused commands change nothing and consume no revision; every
    /// command that changes state consumes exactly one revision.
    pub fn apply(&mut self, command: &Command) -> Outcome {
        let mut effects = Vec::new();
        let response = match command {
            Command::CreateSession { session, ttl, options } => {
                self.create_session(*session, *ttl, options, &mut effects)
            }
            Command::LiftLockDelays { delays } => Ok(self.lift_lock_delays(delays, &mut effects)),
            Command::RevokeSession { session } => self.revoke_session(*session, &mut effects),
            Command::ExpireSessions { sessions } => Ok(self.expire_sessions(sessions, &mut effects)),
            Command::Register { session, spec } => self.register(*session, spec, None, &mut effects),
            Command::AgentRegister { spec, checks } => {
                self.register(SessionId::AGENT, spec, Some(checks), &mut effects)
            }
            Command::PutCheck { service, id, check } => self.put_check(service, id, check, &mut effects),
            Command::RemoveCheck { service, id, check } => self.remove_check(service, id, check, &mut effects),
            Command::UpdateChecks { updates } => Ok(self.update_checks(updates, &mut effects)),
            Command::KvTxn { txn } => self.kv_txn(txn, &mut effects),
            Command::LockAcquire { lock, session, limit, wait, value } => {
                self.lock_acquire(lock, *session, *limit, *wait, value, &mut effects)
            }
            Command::LockProclaim { lock, session, token, value } => {
                self.lock_proclaim(lock, *session, *token, value, &mut effects)
            }
            Command::LockRelease { lock, session, waiting_only } => {
                self.lock_release(lock, *session, *waiting_only, &mut effects)
            }
            Command::Deregister { service, id } => self.deregister(service, id, &mut effects),
            Command::NameHistory { id } => self.name_history(*id),
        };
        self.end_sessions_of_failed_checks(&mut effects);
        Outcome { response, effects }
    }

    fn name_history(&mut self, id: u64) -> Result<Applied, ApplyError> {
        if id == 0 || self.history != 0 {
            return Err(ApplyError::HistoryNamed);
        }
        self.history = id;
        Ok(self.applied())
    }

    fn applied(&self) -> Applied {
        Applied { revision: self.revision, session: None, txn: None, lock: None }
    }

    fn create_session(
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
        Ok(Applied { revision: self.revision, session: Some(id), txn: None, lock: None })
    }

    fn revoke_session(&mut self, id: SessionId, effects: &mut Vec<Effect>) -> Result<Applied, ApplyError> {
        if id == SessionId::AGENT || !self.sessions.contains_key(&id) {
            return Err(ApplyError::SessionNotFound(id));
        }
        self.revision = self.revision.next();
        self.end_session(id, effects);
        Ok(self.applied())
    }

    fn expire_sessions(&mut self, ids: &[SessionId], effects: &mut Vec<Effect>) -> Applied {
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
    fn end_session(&mut self, id: SessionId, effects: &mut Vec<Effect>) {
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

    fn lift_lock_delays(&mut self, delays: &[crate::DelayTarget], effects: &mut Vec<Effect>) -> Applied {
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

    /// The key/value store.
    pub fn kv(&self) -> &imbl::OrdMap<String, Arc<KvEntry>> {
        &self.kv
    }

    /// Locks with holders or waiters.
    pub fn locks(&self) -> &imbl::OrdMap<String, Arc<crate::LockState>> {
        &self.locks
    }

    fn lock_applied(&self, outcome: crate::LockOutcome) -> Applied {
        Applied { revision: self.revision, session: None, txn: None, lock: Some(outcome) }
    }

    fn lock_acquire(
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

    fn lock_release(
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

    fn lock_proclaim(
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
    fn leave_lock(
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
    fn settle_lock(&mut self, lock: &str, mut state: crate::LockState, revision: Revision, effects: &mut Vec<Effect>) {
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

    /// Keys under `prefix`, in order.
    fn keys_under(&self, prefix: &str) -> Vec<String> {
        self.kv.range(prefix.to_owned()..).take_while(|(k, _)| k.starts_with(prefix)).map(|(k, _)| k.clone()).collect()
    }

    /// Moves `key`'s session binding from `from` to `to`.
    fn rebind(&mut self, key: &str, from: Option<SessionId>, to: Option<SessionId>) {
        if from == to {
            return;
        }
        if let Some(old) = from.and_then(|s| self.sessions.get_mut(&s)) {
            old.keys.remove(key);
        }
        if let Some(new) = to.and_then(|s| self.sessions.get_mut(&s)) {
            new.keys.insert(key.to_owned());
        }
    }

    /// Runs a transaction: the compares against the current entries, then one branch. It
    /// consumes one revision if it wrote anything. An operation that aborts (a failed acquire,
    /// release or assert) undoes the branch: nothing changes and no revision is consumed.
    fn kv_txn(&mut self, txn: &Txn, effects: &mut Vec<Effect>) -> Result<Applied, ApplyError> {
        txn.validate()?;
        if let Some(guard) = txn.guard.as_ref().filter(|g| !crate::kv::guard_holds(Some(g), &self.locks)) {
            return Err(ApplyError::Fenced { lock: guard.lock.clone(), token: guard.token });
        }
        let succeeded = txn.compares.iter().all(|c| c.holds(self.kv.get(&c.key).map(|e| &**e)));
        let ops = if succeeded { &txn.success } else { &txn.failure };
        // Refuse before changing anything: a put or acquire for a session that does not exist.
        for op in ops {
            if let KvOp::Put { session: Some(s), .. } | KvOp::Acquire { session: s, .. } = op
                && (*s == SessionId::AGENT || !self.sessions.contains_key(s))
            {
                return Err(ApplyError::SessionNotFound(*s));
            }
        }
        let next = self.revision.next();
        // The store is persistent: keeping the old version to roll back to costs a pointer.
        let before = self.kv.clone();
        let effects_before = effects.len();
        // Session bindings change only once the branch has run to the end.
        let mut rebinds: Vec<(String, Option<SessionId>, Option<SessionId>)> = Vec::new();
        let mut write = |registry: &mut Self, key: &str, entry: Option<Arc<KvEntry>>, effects: &mut Vec<Effect>| {
            let previous = match &entry {
                Some(entry) => registry.kv.insert(key.to_owned(), entry.clone()),
                None => registry.kv.remove(key),
            };
            let (from, to) = (previous.as_ref().and_then(|p| p.session), entry.as_ref().and_then(|e| e.session));
            if from != to {
                rebinds.push((key.to_owned(), from, to));
            }
            effects.push(Effect::KvChanged { key: key.to_owned(), entry, revision: next });
        };
        let stored = |previous: Option<&Arc<KvEntry>>, value: &[u8], flags: u64, session: Option<SessionId>| KvEntry {
            value: Arc::from(value),
            flags,
            create_revision: previous.map_or(next, |p| p.create_revision),
            modify_revision: next,
            version: previous.map_or(1, |p| p.version + 1),
            session,
            lock_index: previous.map_or(0, |p| p.lock_index),
        };
        let mut wrote = false;
        let mut results = Vec::with_capacity(ops.len());
        for (index, op) in ops.iter().enumerate() {
            let result = match op {
                KvOp::Put { key, value, flags, session } => {
                    let previous = self.kv.get(key).cloned();
                    let entry = Arc::new(stored(previous.as_ref(), value, *flags, *session));
                    write(self, key, Some(entry), effects);
                    wrote = true;
                    Some(OpResult::Put { previous })
                }
                KvOp::Set { key, value, flags } => {
                    let previous = self.kv.get(key).cloned();
                    let session = previous.as_ref().and_then(|p| p.session);
                    let entry = Arc::new(stored(previous.as_ref(), value, *flags, session));
                    write(self, key, Some(entry.clone()), effects);
                    wrote = true;
                    Some(OpResult::Entry { entry: Some(entry) })
                }
                KvOp::Acquire { key, value, flags, session } => {
                    let previous = self.kv.get(key).cloned();
                    let holder = previous.as_ref().and_then(|p| p.session);
                    if self.key_delays.contains_key(key) || holder.is_some_and(|h| h != *session) {
                        None
                    } else {
                        let mut entry = stored(previous.as_ref(), value, *flags, Some(*session));
                        if holder.is_none() {
                            entry.lock_index += 1;
                        }
                        let entry = Arc::new(entry);
                        write(self, key, Some(entry.clone()), effects);
                        wrote = true;
                        Some(OpResult::Entry { entry: Some(entry) })
                    }
                }
                KvOp::Release { key, value, flags, session } => {
                    let previous = self.kv.get(key).cloned();
                    if previous.as_ref().and_then(|p| p.session) != Some(*session) {
                        None
                    } else {
                        let entry = Arc::new(stored(previous.as_ref(), value, *flags, None));
                        write(self, key, Some(entry.clone()), effects);
                        wrote = true;
                        Some(OpResult::Entry { entry: Some(entry) })
                    }
                }
                KvOp::Assert(compare) => crate::kv::assert_entry(&self.kv, compare),
                KvOp::Delete { key, prefix } => {
                    let keys = if *prefix { self.keys_under(key) } else { vec![key.clone()] };
                    let mut deleted = 0;
                    for key in keys {
                        if self.kv.contains_key(&key) {
                            write(self, &key, None, effects);
                            deleted += 1;
                        }
                    }
                    wrote |= deleted > 0;
                    Some(OpResult::Delete { deleted })
                }
                KvOp::Get { key, prefix } => {
                    Some(OpResult::Get { entries: crate::kv::get_entries(&self.kv, key, *prefix) })
                }
            };
            match result {
                Some(result) => results.push(result),
                None => {
                    self.kv = before;
                    effects.truncate(effects_before);
                    let txn = TxnResult { succeeded: false, results: Vec::new(), aborted: Some(index) };
                    return Ok(Applied { revision: self.revision, session: None, txn: Some(txn), lock: None });
                }
            }
        }
        for (key, from, to) in rebinds {
            self.rebind(&key, from, to);
        }
        if wrote {
            self.revision = next;
        }
        let txn = TxnResult { succeeded, results, aborted: None };
        Ok(Applied { revision: self.revision, session: None, txn: Some(txn), lock: None })
    }

    /// The instance that owns check `id`, if any.
    pub fn check_owner(&self, id: &str) -> Option<&(ServiceName, InstanceId)> {
        self.check_owners.get(id)
    }

    /// Checks a new set of checks for `service`/`id`: each valid, ids unique and not owned by
    /// another instance.
    fn check_checks(&self, service: &ServiceName, id: &InstanceId, checks: &[CheckSpec]) -> Result<(), ApplyError> {
        if checks.len() > crate::check_limits::MAX_CHECKS {
            let rule = format!("at most {} checks per instance", crate::check_limits::MAX_CHECKS);
            return Err(crate::ValidationError::new("checks", rule).into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for check in checks {
            check.validate()?;
            if !seen.insert(check.id.as_str()) {
                return Err(crate::ValidationError::new("check.id", format!("{:?} is given twice", check.id)).into());
            }
            if let Some((s, i)) = self.check_owners.get(&check.id)
                && (s != service || i != id)
            {
                return Err(ApplyError::CheckIdTaken(check.id.clone()));
            }
        }
        Ok(())
    }

    /// The checks an instance gets from new definitions: an unchanged definition keeps its
    /// state, anything else starts in its initial status.
    fn merged_checks(previous: Option<&Instance>, specs: &[CheckSpec]) -> Vec<Check> {
        specs
            .iter()
            .map(|spec| {
                previous
                    .and_then(|p| p.checks.iter().find(|c| c.spec == *spec))
                    .cloned()
                    .unwrap_or_else(|| Check::new(spec.clone()))
            })
            .collect()
    }

    fn index_checks(&mut self, instance: &Instance, previous: Option<&Instance>) {
        for check in previous.iter().flat_map(|p| &p.checks) {
            self.check_owners.remove(&check.spec.id);
            if !instance.checks.iter().any(|c| c.spec.id == check.spec.id) {
                self.check_failed(&check.spec.id);
            }
        }
        for check in &instance.checks {
            self.check_owners.insert(check.spec.id.clone(), (instance.spec.service.clone(), instance.spec.id.clone()));
            if check.status == crate::HealthStatus::Critical {
                self.check_failed(&check.spec.id);
            }
        }
    }

    /// Notes that a check turned critical or went away, if sessions depend on it.
    fn check_failed(&mut self, check: &str) {
        if self.check_sessions.contains_key(check) {
            self.failed_checks.push(check.to_owned());
        }
    }

    /// Ends the sessions that depend on checks that failed during this command, in the
    /// command's revision (ending them can remove more checks: repeated until none is left).
    fn end_sessions_of_failed_checks(&mut self, effects: &mut Vec<Effect>) {
        while !self.failed_checks.is_empty() {
            let failed = std::mem::take(&mut self.failed_checks);
            let doomed: std::collections::BTreeSet<SessionId> =
                failed.iter().filter_map(|c| self.check_sessions.get(c)).flatten().copied().collect();
            for session in doomed {
                self.end_session(session, effects);
            }
        }
    }

    fn register(
        &mut self,
        session_id: SessionId,
        spec: &InstanceSpec,
        checks: Option<&[CheckSpec]>,
        effects: &mut Vec<Effect>,
    ) -> Result<Applied, ApplyError> {
        spec.validate()?;
        if let Some(checks) = checks {
            self.check_checks(&spec.service, &spec.id, checks)?;
        }
        if session_id == SessionId::AGENT && !self.sessions.contains_key(&session_id) {
            // Created with the first registration that needs it (no effect: nothing tracks
            // its deadline, it has none).
            let session = Session {
                id: session_id,
                ttl: crate::Ttl::MAX,
                create_revision: self.revision.next(),
                instances: Default::default(),
                keys: Default::default(),
                locks: Default::default(),
                options: Default::default(),
            };
            self.sessions.insert(session_id, session);
        }
        if !self.sessions.contains_key(&session_id) {
            return Err(ApplyError::SessionNotFound(session_id));
        }
        let previous = self.services.get(&spec.service).and_then(|s| s.get(&spec.id)).cloned();
        let checks = checks.map(|c| Self::merged_checks(previous.as_deref(), c)).unwrap_or_default();
        let mut stored = spec.clone();
        if !checks.is_empty() {
            stored.status = crate::aggregate(&checks);
        }
        if let Some(prev) = &previous
            && prev.session == session_id
            && prev.spec == stored
            && prev.checks == checks
        {
            // Idempotent re-registration: nothing changes, no revision is consumed.
            return Ok(self.applied());
        }
        self.revision = self.revision.next();
        // Share one allocation of the service name among its instances and session keys.
        let service = match self.services.get_key_value(&spec.service) {
            Some((name, _)) => name.clone(),
            None => spec.service.clone(),
        };
        let key = (service.clone(), spec.id.clone());
        if let Some(prev) = &previous
            && prev.session != session_id
            && let Some(old_owner) = self.sessions.get_mut(&prev.session)
        {
            // The newest registration wins: a restarted process takes its id over from the
            // session of its previous incarnation, which may not have expired yet.
            old_owner.instances.remove(&key);
        }
        stored.service = service;
        let instance = Arc::new(Instance {
            spec: stored,
            session: session_id,
            create_revision: previous.as_ref().map_or(self.revision, |p| p.create_revision),
            modify_revision: self.revision,
            checks,
        });
        self.index_checks(&instance, previous.as_deref());
        if let Some(session) = self.sessions.get_mut(&session_id) {
            session.instances.insert(key);
        }
        Arc::make_mut(self.services.entry(spec.service.clone()).or_default()).insert(spec.id.clone(), instance.clone());
        effects.push(Effect::InstanceUpserted { instance, created: previous.is_none() });
        Ok(self.applied())
    }

    fn deregister(
        &mut self,
        service: &ServiceName,
        id: &InstanceId,
        effects: &mut Vec<Effect>,
    ) -> Result<Applied, ApplyError> {
        if self.service(service.as_str()).and_then(|s| s.get(id)).is_none() {
            return Err(ApplyError::InstanceNotFound { service: service.clone(), id: id.clone() });
        }
        self.revision = self.revision.next();
        if let Some(instance) = self.remove_instance(service, id) {
            if let Some(session) = self.sessions.get_mut(&instance.session) {
                session.instances.remove(&(service.clone(), id.clone()));
            }
            effects.push(Effect::InstanceRemoved { instance, revision: self.revision });
        }
        Ok(self.applied())
    }

    fn remove_instance(&mut self, service: &ServiceName, id: &InstanceId) -> Option<Arc<Instance>> {
        let instances = self.services.get_mut(service)?;
        let removed = Arc::make_mut(instances).remove(id);
        if instances.is_empty() {
            self.services.remove(service);
        }
        for check in removed.iter().flat_map(|i| &i.checks) {
            self.check_owners.remove(&check.spec.id);
            if self.check_sessions.contains_key(&check.spec.id) {
                self.failed_checks.push(check.spec.id.clone());
            }
        }
        removed
    }

    /// Replaces an instance's checks (and so its status) at a new revision. Only agent
    /// instances have checks, and one without checks is passing.
    fn set_checks(&mut self, previous: &Arc<Instance>, checks: Vec<Check>, effects: &mut Vec<Effect>) {
        let mut instance = Instance::clone(previous);
        instance.checks = checks;
        instance.spec.status = crate::aggregate(&instance.checks);
        instance.modify_revision = self.revision;
        let instance = Arc::new(instance);
        self.index_checks(&instance, Some(previous));
        if let Some(instances) = self.services.get_mut(&instance.spec.service) {
            Arc::make_mut(instances).insert(instance.spec.id.clone(), instance.clone());
        }
        effects.push(Effect::InstanceUpserted { instance, created: false });
    }

    fn instance(&self, service: &ServiceName, id: &InstanceId) -> Result<Arc<Instance>, ApplyError> {
        self.service(service.as_str())
            .and_then(|s| s.get(id))
            .cloned()
            .ok_or_else(|| ApplyError::InstanceNotFound { service: service.clone(), id: id.clone() })
    }

    fn put_check(
        &mut self,
        service: &ServiceName,
        id: &InstanceId,
        check: &CheckSpec,
        effects: &mut Vec<Effect>,
    ) -> Result<Applied, ApplyError> {
        let previous = self.instance(service, id)?;
        if previous.session != SessionId::AGENT {
            let rule = "only instances registered through the agent API have checks (an SDK instance's session is its liveness)";
            return Err(crate::ValidationError::new("check", rule).into());
        }
        self.check_checks(service, id, std::slice::from_ref(check))?;
        let mut specs: Vec<CheckSpec> = previous.checks.iter().map(|c| c.spec.clone()).collect();
        match specs.iter_mut().find(|c| c.id == check.id) {
            Some(existing) => *existing = check.clone(),
            None => specs.push(check.clone()),
        }
        self.check_checks(service, id, &specs)?;
        let checks = Self::merged_checks(Some(&previous), &specs);
        if checks == previous.checks {
            return Ok(self.applied());
        }
        self.revision = self.revision.next();
        self.set_checks(&previous, checks, effects);
        Ok(self.applied())
    }

    fn remove_check(
        &mut self,
        service: &ServiceName,
        id: &InstanceId,
        check: &str,
        effects: &mut Vec<Effect>,
    ) -> Result<Applied, ApplyError> {
        let previous = self.instance(service, id)?;
        if !previous.checks.iter().any(|c| c.spec.id == check) {
            return Err(ApplyError::CheckNotFound(check.to_owned()));
        }
        self.revision = self.revision.next();
        let checks = previous.checks.iter().filter(|c| c.spec.id != check).cloned().collect();
        self.set_checks(&previous, checks, effects);
        Ok(self.applied())
    }

    fn update_checks(&mut self, updates: &[CheckUpdate], effects: &mut Vec<Effect>) -> Applied {
        // Group by instance, so an instance changes once however many of its checks moved.
        let mut changed: BTreeMap<(ServiceName, InstanceId), Vec<Check>> = BTreeMap::new();
        for update in updates {
            let key = (update.service.clone(), update.instance.clone());
            let checks = match changed.get_mut(&key) {
                Some(checks) => checks,
                None => match self.service(update.service.as_str()).and_then(|s| s.get(&update.instance)) {
                    Some(instance) => changed.entry(key).or_insert_with(|| instance.checks.clone()),
                    None => continue,
                },
            };
            let output = crate::truncate_output(update.output.clone());
            if let Some(check) = checks.iter_mut().find(|c| c.spec.id == update.check) {
                check.status = update.status;
                check.output = output;
            }
        }
        let changed: Vec<_> = changed
            .into_iter()
            .filter_map(|((service, id), checks)| {
                let previous = self.service(service.as_str())?.get(&id)?.clone();
                (previous.checks != checks).then_some((previous, checks))
            })
            .collect();
        if changed.is_empty() {
            return self.applied();
        }
        self.revision = self.revision.next();
        for (previous, checks) in changed {
            self.set_checks(&previous, checks, effects);
        }
        self.applied()
    }

    /// Rebuilds a registry from its parts (used by the snapshot codec). Session instance sets
    /// are derived from the instances, so they cannot disagree.
    pub(crate) fn from_parts(
        revision: Revision,
        history: u64,
        sessions: Vec<(SessionId, Ttl, Revision, crate::SessionOptions)>,
        instances: Vec<Instance>,
        kv: Vec<(String, KvEntry)>,
        locks: Vec<(String, crate::LockState)>,
        key_delays: Vec<(String, u64, u64)>,
    ) -> Self {
        let mut registry = Registry {
            revision,
            history,
            sessions: sessions
                .into_iter()
                .map(|(id, ttl, create_revision, options)| {
                    (
                        id,
                        Session {
                            id,
                            ttl,
                            create_revision,
                            instances: Default::default(),
                            keys: Default::default(),
                            locks: Default::default(),
                            options,
                        },
                    )
                })
                .collect(),
            services: BTreeMap::new(),
            check_owners: BTreeMap::new(),
            kv: imbl::OrdMap::new(),
            locks: imbl::OrdMap::new(),
            key_delays: key_delays.into_iter().map(|(k, since, ms)| (k, (since, ms))).collect(),
            check_sessions: BTreeMap::new(),
            failed_checks: Vec::new(),
        };
        for session in registry.sessions.values() {
            for check in &session.options.checks {
                registry.check_sessions.entry(check.clone()).or_default().insert(session.id);
            }
        }
        for (name, state) in locks {
            let sessions = state.holders.iter().map(|h| h.session).chain(state.waiters.iter().map(|w| w.session));
            for session in sessions {
                if let Some(s) = registry.sessions.get_mut(&session) {
                    s.locks.insert(name.clone());
                }
            }
            registry.locks.insert(name, Arc::new(state));
        }
        for (key, entry) in kv {
            if let Some(session) = entry.session.and_then(|s| registry.sessions.get_mut(&s)) {
                session.keys.insert(key.clone());
            }
            registry.kv.insert(key, Arc::new(entry));
        }
        for mut instance in instances {
            if let Some((name, _)) = registry.services.get_key_value(&instance.spec.service) {
                instance.spec.service = name.clone();
            }
            if let Some(session) = registry.sessions.get_mut(&instance.session) {
                session.instances.insert((instance.spec.service.clone(), instance.spec.id.clone()));
            }
            registry.index_checks(&instance, None);
            Arc::make_mut(registry.services.entry(instance.spec.service.clone()).or_default())
                .insert(instance.spec.id.clone(), Arc::new(instance));
        }
        // Rebuilding indexes is not a change: nothing failed.
        registry.failed_checks.clear();
        registry
    }
}
