//! The registry state machine: `apply(command) -> outcome`, pure and deterministic.

use std::{collections::BTreeMap, sync::Arc};

use crate::{
    Applied, ApplyError, Command, Effect, Instance, InstanceId, InstanceSpec, Outcome, Revision, ServiceName, Session,
    SessionId, Ttl,
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
            Command::CreateSession { session, ttl } => self.create_session(*session, *ttl, &mut effects),
            Command::RevokeSession { session } => self.revoke_session(*session, &mut effects),
            Command::ExpireSessions { sessions } => Ok(self.expire_sessions(sessions, &mut effects)),
            Command::Register { session, spec } => self.register(*session, spec, &mut effects),
            Command::Deregister { service, id } => self.deregister(service, id, &mut effects),
            Command::NameHistory { id } => self.name_history(*id),
        };
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
        Applied { revision: self.revision, session: None }
    }

    fn create_session(&mut self, id: SessionId, ttl: Ttl, effects: &mut Vec<Effect>) -> Result<Applied, ApplyError> {
        if id.get() == 0 || id == SessionId::AGENT || self.sessions.contains_key(&id) {
            return Err(ApplyError::SessionIdTaken(id));
        }
        self.revision = self.revision.next();
        self.sessions.insert(id, Session { id, ttl, create_revision: self.revision, instances: Default::default() });
        effects.push(Effect::SessionOpened { session: id, ttl });
        Ok(Applied { revision: self.revision, session: Some(id) })
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
        effects.push(Effect::SessionClosed { session: id });
    }

    fn register(
        &mut self,
        session_id: SessionId,
        spec: &InstanceSpec,
        effects: &mut Vec<Effect>,
    ) -> Result<Applied, ApplyError> {
        spec.validate()?;
        if session_id == SessionId::AGENT && !self.sessions.contains_key(&session_id) {
            // Created with the first registration that needs it (no effect: nothing tracks
            // its deadline, it has none).
            let session = Session {
                id: session_id,
                ttl: crate::Ttl::MAX,
                create_revision: self.revision.next(),
                instances: Default::default(),
            };
            self.sessions.insert(session_id, session);
        }
        if !self.sessions.contains_key(&session_id) {
            return Err(ApplyError::SessionNotFound(session_id));
        }
        let previous = self.services.get(&spec.service).and_then(|s| s.get(&spec.id)).cloned();
        if let Some(prev) = &previous
            && prev.session == session_id
            && prev.spec == *spec
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
        let mut stored = spec.clone();
        stored.service = service;
        let instance = Arc::new(Instance {
            spec: stored,
            session: session_id,
            create_revision: previous.as_ref().map_or(self.revision, |p| p.create_revision),
            modify_revision: self.revision,
        });
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
        removed
    }

    /// Rebuilds a registry from its parts (used by the snapshot codec). Session instance sets
    /// are derived from the instances, so they cannot disagree.
    pub(crate) fn from_parts(
        revision: Revision,
        history: u64,
        sessions: Vec<(SessionId, Ttl, Revision)>,
        instances: Vec<Instance>,
    ) -> Self {
        let mut registry = Registry {
            revision,
            history,
            sessions: sessions
                .into_iter()
                .map(|(id, ttl, create_revision)| {
                    (id, Session { id, ttl, create_revision, instances: Default::default() })
                })
                .collect(),
            services: BTreeMap::new(),
        };
        for mut instance in instances {
            if let Some((name, _)) = registry.services.get_key_value(&instance.spec.service) {
                instance.spec.service = name.clone();
            }
            if let Some(session) = registry.sessions.get_mut(&instance.session) {
                session.instances.insert((instance.spec.service.clone(), instance.spec.id.clone()));
            }
            Arc::make_mut(registry.services.entry(instance.spec.service.clone()).or_default())
                .insert(instance.spec.id.clone(), Arc::new(instance));
        }
        registry
    }
}
