//! The registry state machine: the [`Registry`] state, its revision and history, and
//! [`Registry::apply`], which dispatches each [`Command`] to its aggregate's arm (sessions,
//! instances, checks, KV, locks: one file each), pure and deterministic.

mod acl;

pub use acl::authorize;
mod checks;
mod instances;
mod kv;
mod locks;
mod sessions;

use std::{collections::BTreeMap, sync::Arc};

use crate::{
    Applied, ApplyError, Command, Instance, InstanceId, KvEntry, Outcome, Revision, ServiceName, Session, SessionId,
    Ttl,
};

/// The instances of one service, by id: a persistent (structurally shared) ordered map, so
/// readers (the server's read model, snapshot builders) keep an old version for the price of a
/// pointer and a write copies only the O(log n) path it changes.
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
    /// Tokens, policies and roles.
    acl: crate::acl::AclState,
    /// Authorizers resolved since the last ACL change (derived, never compared).
    authorizers: acl::AuthorizerCache,
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

    /// Applies one command. Refused commands change nothing and consume no revision; every
    /// command that changes state consumes exactly one revision.
    pub fn apply(&mut self, command: &Command) -> Outcome {
        let mut effects = Vec::new();
        let response = self.apply_inner(command, &mut effects);
        self.end_sessions_of_failed_checks(&mut effects);
        Outcome { response, effects }
    }

    /// Applies one command (an authorized one after its check).
    fn apply_inner(&mut self, command: &Command, effects: &mut Vec<crate::Effect>) -> Result<Applied, ApplyError> {
        match command {
            Command::CreateSession { session, ttl, options } => self.create_session(*session, *ttl, options, effects),
            Command::LiftLockDelays { delays } => Ok(self.lift_lock_delays(delays, effects)),
            Command::RevokeSession { session } => self.revoke_session(*session, effects),
            Command::ExpireSessions { sessions } => Ok(self.expire_sessions(sessions, effects)),
            Command::Register { session, spec } => self.register(*session, spec, None, effects),
            Command::AgentRegister { spec, checks } => self.register(SessionId::AGENT, spec, Some(checks), effects),
            Command::PutCheck { service, id, check } => self.put_check(service, id, check, effects),
            Command::RemoveCheck { service, id, check } => self.remove_check(service, id, check, effects),
            Command::UpdateChecks { updates } => Ok(self.update_checks(updates, effects)),
            Command::KvTxn { txn } => self.kv_txn(txn, effects),
            Command::LockAcquire { lock, session, limit, wait, value } => {
                self.lock_acquire(lock, *session, *limit, *wait, value, effects)
            }
            Command::LockProclaim { lock, session, token, value } => {
                self.lock_proclaim(lock, *session, *token, value, effects)
            }
            Command::LockRelease { lock, session, waiting_only } => {
                self.lock_release(lock, *session, *waiting_only, effects)
            }
            Command::Deregister { service, id } => self.deregister(service, id, effects),
            Command::NameHistory { id } => self.name_history(*id),
            Command::Authorized { accessor, default, command } => self.authorized(accessor, *default, command, effects),
            Command::AclBootstrap { token } => self.acl_bootstrap(token, effects),
            Command::AclSetToken { token } => self.acl_set_token(token, effects),
            Command::AclDeleteToken { accessor } => self.acl_delete_token(accessor, effects),
            Command::AclSetPolicy { policy } => self.acl_set_policy(policy, effects),
            Command::AclDeletePolicy { id } => self.acl_delete_policy(id, effects),
            Command::AclSetRole { role } => self.acl_set_role(role, effects),
            Command::AclDeleteRole { id } => self.acl_delete_role(id, effects),
            Command::AclExpireTokens { accessors } => Ok(self.acl_expire_tokens(accessors, effects)),
            Command::AclSetAuthMethod { method } => self.acl_set_auth_method(method, effects),
            Command::AclDeleteAuthMethod { name } => self.acl_delete_auth_method(name, effects),
            Command::AclSetBindingRule { rule } => self.acl_set_binding_rule(rule, effects),
            Command::AclDeleteBindingRule { id } => self.acl_delete_binding_rule(id, effects),
        }
    }

    fn name_history(&mut self, id: u64) -> Result<Applied, ApplyError> {
        if id == 0 || self.history != 0 {
            return Err(ApplyError::HistoryNamed);
        }
        self.history = id;
        Ok(self.applied())
    }

    fn applied(&self) -> Applied {
        Applied::Done { revision: self.revision }
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
            acl: Default::default(),
            authorizers: Default::default(),
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
