//! Health checks: adding, removing and updating an instance's checks, their index, and the
//! sessions that end when a check they depend on fails.

use std::{collections::BTreeMap, sync::Arc};

use super::Registry;
use crate::{Applied, ApplyError, Check, CheckSpec, CheckUpdate, Effect, Instance, InstanceId, ServiceName, SessionId};

impl Registry {
    /// The instance that owns check `id`, if any.
    pub fn check_owner(&self, id: &str) -> Option<&(ServiceName, InstanceId)> {
        self.check_owners.get(id)
    }
}

// The apply arms and their helpers, called from `Registry::apply`.
impl Registry {
    /// Checks a new set of checks for `service`/`id`: each valid, ids unique and not owned by
    /// another instance.
    pub(super) fn check_checks(
        &self,
        service: &ServiceName,
        id: &InstanceId,
        checks: &[CheckSpec],
    ) -> Result<(), ApplyError> {
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
    pub(super) fn merged_checks(previous: Option<&Instance>, specs: &[CheckSpec]) -> Vec<Check> {
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

    pub(super) fn index_checks(&mut self, instance: &Instance, previous: Option<&Instance>) {
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
    pub(super) fn end_sessions_of_failed_checks(&mut self, effects: &mut Vec<Effect>) {
        while !self.failed_checks.is_empty() {
            let failed = std::mem::take(&mut self.failed_checks);
            let doomed: std::collections::BTreeSet<SessionId> =
                failed.iter().filter_map(|c| self.check_sessions.get(c)).flatten().copied().collect();
            for session in doomed {
                self.end_session(session, effects);
            }
        }
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

    pub(super) fn put_check(
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

    pub(super) fn remove_check(
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

    pub(super) fn update_checks(&mut self, updates: &[CheckUpdate], effects: &mut Vec<Effect>) -> Applied {
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
}
