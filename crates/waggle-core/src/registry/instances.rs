//! Instances: registration (SDK sessions and the agent) and deregistration.

use std::{collections::BTreeMap, sync::Arc};

use super::{Registry, ServiceInstances};
use crate::{
    Applied, ApplyError, CheckSpec, Effect, Instance, InstanceId, InstanceSpec, ServiceName, Session, SessionId,
};

impl Registry {
    /// Services that have at least one instance.
    pub fn services(&self) -> &BTreeMap<ServiceName, Arc<ServiceInstances>> {
        &self.services
    }

    /// The instances of one service (`None` if it has none).
    pub fn service(&self, name: &str) -> Option<&Arc<ServiceInstances>> {
        self.services.get(name)
    }
}

// The apply arms and their helpers, called from `Registry::apply`.
impl Registry {
    pub(super) fn register(
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

    pub(super) fn deregister(
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

    pub(super) fn remove_instance(&mut self, service: &ServiceName, id: &InstanceId) -> Option<Arc<Instance>> {
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

    pub(super) fn instance(&self, service: &ServiceName, id: &InstanceId) -> Result<Arc<Instance>, ApplyError> {
        self.service(service.as_str())
            .and_then(|s| s.get(id))
            .cloned()
            .ok_or_else(|| ApplyError::InstanceNotFound { service: service.clone(), id: id.clone() })
    }
}
