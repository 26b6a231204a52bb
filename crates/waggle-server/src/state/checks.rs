//! The check table: every check in the registry (fed by the state machine's effects, like the
//! session clock) together with what only the leader keeps in memory: TTL deadlines,
//! consecutive success / failure counters and how long a check has been critical. The leader's
//! check runner (`leader::checks`) reads and updates it; nothing here runs a probe or proposes.
//! Thresholds (`SuccessBeforePassing`, `FailuresBeforeCritical`) count consecutive results, as
//! Consul's do; a new leader starts counting afresh and gives every TTL check a full TTL, as it
//! gives sessions.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::time::Instant;
use waggle_core::{CheckKind, CheckSpec, CheckUpdate, Effect, HealthStatus, InstanceId, Registry, ServiceName};

/// A new output with an unchanged status is written at most this often per check (Consul's
/// `check_update_interval`); a status transition is always written at once.
const OUTPUT_INTERVAL: Duration = Duration::from_secs(300);
/// How long a proposed transition counts as the check's status before it is applied.
const PENDING_FOR: Duration = Duration::from_secs(5);

/// One check as the leader tracks it.
#[derive(Debug, Clone)]
struct Tracked {
    service: ServiceName,
    instance: InstanceId,
    spec: Arc<CheckSpec>,
    /// The replicated status and output.
    status: HealthStatus,
    output: String,
    /// Bumped whenever the definition changes, so a probe of the old one stops reporting.
    generation: u64,
    ttl_deadline: Instant,
    critical_since: Option<Instant>,
    successes: u32,
    failures: u32,
    /// A transition proposed but not applied yet: later results compare against it, so two
    /// quick reports cannot both be judged against the old status.
    pending: Option<(HealthStatus, Instant)>,
    /// When this leader last wrote the check (output-only writes are rate-limited).
    last_write: Option<Instant>,
}

impl Tracked {
    /// The status results are compared with: a recent pending transition, else the applied one.
    fn current(&self, now: Instant) -> HealthStatus {
        match self.pending {
            Some((status, since)) if now.duration_since(since) < PENDING_FOR => status,
            _ => self.status,
        }
    }

    /// The write a result calls for, if any: a transition, or a new output once per
    /// `OUTPUT_INTERVAL` (and the first output a check gets).
    fn write_for(&mut self, status: HealthStatus, output: String, now: Instant) -> Option<CheckUpdate> {
        let transition = status != self.current(now);
        let output_due =
            output != self.output && self.last_write.is_none_or(|at| now.duration_since(at) >= OUTPUT_INTERVAL);
        if !transition && !output_due {
            return None;
        }
        self.pending = Some((status, now));
        self.last_write = Some(now);
        Some(self.update(status, output))
    }

    fn update(&self, status: HealthStatus, output: String) -> CheckUpdate {
        CheckUpdate {
            service: self.service.clone(),
            instance: self.instance.clone(),
            check: self.spec.id.clone(),
            status,
            output: waggle_core::truncate_output(output),
        }
    }
}

/// What the HTTP API needs to know about a check.
#[derive(Debug, Clone)]
pub(crate) struct CheckInfo {
    pub(crate) service: ServiceName,
    pub(crate) instance: InstanceId,
}

/// Why a TTL report was not taken.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum ReportError {
    /// No check has this id.
    Unknown,
    /// The check is not a TTL check.
    NotTtl,
}

/// An active check a probe task should run.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    pub(crate) id: String,
    pub(crate) generation: u64,
    pub(crate) spec: Arc<CheckSpec>,
}

#[derive(Debug, Default)]
struct Inner {
    checks: HashMap<String, Tracked>,
    /// The check ids of each instance that has checks.
    by_instance: HashMap<(ServiceName, InstanceId), Vec<String>>,
    next_generation: u64,
}

/// Every check of the registry plus the leader's timing state; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct CheckTable {
    inner: Mutex<Inner>,
    /// Signalled when the set of checks changes (probe tasks to start or stop).
    pub(crate) changed: tokio::sync::Notify,
}

impl CheckTable {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Follows the state machine's instance changes. Wakes the runner only when checks were
    /// added, removed or redefined (not on status changes).
    pub(crate) fn observe(&self, effects: &[Effect]) {
        let mut changed = false;
        let mut inner = self.inner();
        for effect in effects {
            let (instance, removed) = match effect {
                Effect::InstanceUpserted { instance, .. } => (instance, false),
                Effect::InstanceRemoved { instance, .. } => (instance, true),
                _ => continue,
            };
            let key = (instance.spec.service.clone(), instance.spec.id.clone());
            let old = inner.by_instance.remove(&key).unwrap_or_default();
            let now: &[waggle_core::Check] = if removed { &[] } else { &instance.checks };
            for gone in old.iter().filter(|id| !now.iter().any(|c| &c.spec.id == *id)) {
                if inner.checks.get(gone).is_some_and(|t| t.service == key.0 && t.instance == key.1) {
                    inner.checks.remove(gone);
                    changed = true;
                }
            }
            for check in now {
                changed |= inner.upsert(&key.0, &key.1, check);
            }
            if !now.is_empty() {
                inner.by_instance.insert(key, now.iter().map(|c| c.spec.id.clone()).collect());
            }
        }
        drop(inner);
        if changed {
            self.changed.notify_one();
        }
    }

    /// Forgets a transition whose proposal failed, so the next result proposes it again.
    pub(crate) fn proposal_failed(&self, check: &str) {
        if let Some(t) = self.inner().checks.get_mut(check) {
            t.pending = None;
        }
    }

    /// Replaces every tracked check with the registry's (start, snapshot install).
    pub(crate) fn reset(&self, registry: &Registry) {
        let mut inner = self.inner();
        inner.checks.clear();
        inner.by_instance.clear();
        for instances in registry.services().values() {
            for instance in instances.values().filter(|i| !i.checks.is_empty()) {
                for check in &instance.checks {
                    inner.upsert(&instance.spec.service, &instance.spec.id, check);
                }
                let ids = instance.checks.iter().map(|c| c.spec.id.clone()).collect();
                inner.by_instance.insert((instance.spec.service.clone(), instance.spec.id.clone()), ids);
            }
        }
        drop(inner);
        self.changed.notify_one();
    }

    /// The check with this id.
    pub(crate) fn get(&self, id: &str) -> Option<CheckInfo> {
        let inner = self.inner();
        let t = inner.checks.get(id)?;
        Some(CheckInfo { service: t.service.clone(), instance: t.instance.clone() })
    }

    /// How many checks exist.
    pub(crate) fn len(&self) -> usize {
        self.inner().checks.len()
    }

    /// A TTL report (`check/pass|warn|fail|update`) on the leader: renews the deadline and
    /// answers the transition to write, if the status changes.
    pub(crate) fn report(
        &self,
        id: &str,
        status: HealthStatus,
        output: String,
    ) -> Result<Option<CheckUpdate>, ReportError> {
        let mut inner = self.inner();
        let t = inner.checks.get_mut(id).ok_or(ReportError::Unknown)?;
        let CheckKind::Ttl { ttl_ms } = t.spec.kind else { return Err(ReportError::NotTtl) };
        let now = Instant::now();
        t.ttl_deadline = now + Duration::from_millis(ttl_ms);
        Ok(t.write_for(status, output, now))
    }

    /// Gives every TTL check a full TTL and every threshold a fresh count (on becoming leader).
    pub(crate) fn grant_grace(&self) {
        let now = Instant::now();
        for t in self.inner().checks.values_mut() {
            t.reset_timing(now);
        }
    }

    /// The active checks to probe.
    pub(crate) fn probes(&self) -> Vec<Probe> {
        self.inner()
            .checks
            .iter()
            .filter(|(_, t)| t.spec.kind.is_active())
            .map(|(id, t)| Probe { id: id.clone(), generation: t.generation, spec: t.spec.clone() })
            .collect()
    }

    /// Counts one probe result against the check's thresholds: the transition to write, if
    /// any (and the first output of a check). Results of a replaced definition are ignored.
    pub(crate) fn record(&self, probe: &Probe, status: HealthStatus, output: String) -> Option<CheckUpdate> {
        let mut inner = self.inner();
        let t = inner.checks.get_mut(&probe.id).filter(|t| t.generation == probe.generation)?;
        let target = match status {
            HealthStatus::Critical => {
                t.successes = 0;
                t.failures = t.failures.saturating_add(1);
                (t.failures >= t.spec.failures_before_critical).then_some(HealthStatus::Critical)
            }
            ok => {
                t.failures = 0;
                t.successes = t.successes.saturating_add(1);
                (t.successes >= t.spec.success_before_passing).then_some(ok)
            }
        }?;
        // A transition is written; so is a new output now and then, and the first result of a
        // check, so a check critical from the start says why.
        t.write_for(target, output, Instant::now())
    }

    /// TTL checks past their deadline (as transitions to critical) and instances critical for
    /// longer than their deregistration delay.
    pub(crate) fn due(&self, now: Instant) -> (Vec<CheckUpdate>, Vec<(ServiceName, InstanceId)>) {
        self.collect_due(now, false)
    }

    /// [`CheckTable::due`]; with `propose` the expiries are marked pending (they are about
    /// to be written), so a report arriving meanwhile is judged against them.
    pub(crate) fn collect_due(
        &self,
        now: Instant,
        propose: bool,
    ) -> (Vec<CheckUpdate>, Vec<(ServiceName, InstanceId)>) {
        let mut inner = self.inner();
        let mut expired = Vec::new();
        let mut reap: Vec<(ServiceName, InstanceId)> = Vec::new();
        for t in inner.checks.values_mut() {
            if let CheckKind::Ttl { .. } = t.spec.kind
                && t.ttl_deadline <= now
                && t.current(now) != HealthStatus::Critical
            {
                expired.push(t.update(HealthStatus::Critical, "TTL expired".into()));
                if propose {
                    t.pending = Some((HealthStatus::Critical, now));
                    t.last_write = Some(now);
                }
            }
            if t.spec.deregister_after_ms > 0
                && let Some(since) = t.critical_since
                && now.duration_since(since) >= Duration::from_millis(t.spec.deregister_after_ms)
                && !reap.iter().any(|(s, i)| s == &t.service && i == &t.instance)
            {
                reap.push((t.service.clone(), t.instance.clone()));
            }
        }
        (expired, reap)
    }
}

impl Tracked {
    fn reset_timing(&mut self, now: Instant) {
        if let CheckKind::Ttl { ttl_ms } = self.spec.kind {
            self.ttl_deadline = now + Duration::from_millis(ttl_ms);
        }
        self.successes = 0;
        self.failures = 0;
        self.pending = None;
        self.critical_since = (self.status == HealthStatus::Critical).then_some(now);
    }
}

impl Inner {
    /// Tracks a check's applied state; true if it is new or redefined.
    fn upsert(&mut self, service: &ServiceName, instance: &InstanceId, check: &waggle_core::Check) -> bool {
        let now = Instant::now();
        match self.checks.get_mut(&check.spec.id) {
            Some(t) if *t.spec == check.spec && &t.service == service && &t.instance == instance => {
                if check.status != HealthStatus::Critical {
                    t.critical_since = None;
                } else if t.critical_since.is_none() {
                    t.critical_since = Some(now);
                }
                if t.status != check.status || t.output != check.output {
                    // A write of ours (or of an earlier leader) is applied.
                    t.pending = None;
                }
                t.status = check.status;
                t.output.clone_from(&check.output);
                false
            }
            _ => {
                self.next_generation += 1;
                let mut t = Tracked {
                    service: service.clone(),
                    instance: instance.clone(),
                    spec: Arc::new(check.spec.clone()),
                    status: check.status,
                    output: check.output.clone(),
                    generation: self.next_generation,
                    ttl_deadline: now,
                    critical_since: None,
                    successes: 0,
                    failures: 0,
                    pending: None,
                    last_write: None,
                };
                t.reset_timing(now);
                self.checks.insert(check.spec.id.clone(), t);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use waggle_core::{Check, Instance, InstanceSpec, Revision, SessionId};

    use super::*;

    fn instance(checks: Vec<Check>) -> Arc<Instance> {
        Arc::new(Instance {
            spec: InstanceSpec::new("web", "10.0.0.1", 80).expect("spec").with_id("w1").expect("id"),
            session: SessionId::AGENT,
            create_revision: Revision::new(1),
            modify_revision: Revision::new(1),
            checks,
        })
    }

    fn check(id: &str, kind: CheckKind, status: HealthStatus) -> Check {
        let spec = CheckSpec {
            interval_ms: 1_000,
            success_before_passing: 2,
            failures_before_critical: 3,
            deregister_after_ms: 60_000,
            ..CheckSpec::new(id, "", kind)
        };
        Check { status, ..Check::new(spec) }
    }

    fn upsert(health: &CheckTable, checks: Vec<Check>) {
        health.observe(&[Effect::InstanceUpserted { instance: instance(checks), created: false }]);
    }

    #[tokio::test(start_paused = true)]
    async fn thresholds_count_consecutive_results() {
        let health = CheckTable::new();
        let tcp = CheckKind::Tcp { address: "127.0.0.1:1".into() };
        upsert(&health, vec![check("c", tcp.clone(), HealthStatus::Critical)]);
        let probe = health.probes().pop().expect("an active check");
        let ok = |h: &CheckTable| h.record(&probe, HealthStatus::Passing, "ok".into());
        let fail = |h: &CheckTable| h.record(&probe, HealthStatus::Critical, "down".into());
        assert_eq!(ok(&health), None, "one success of two");
        assert_eq!(fail(&health), None, "already critical");
        assert_eq!(ok(&health), None, "the count started over");
        let update = ok(&health).expect("second consecutive success");
        assert_eq!((update.status, update.output.as_str()), (HealthStatus::Passing, "ok"));
        // The state machine applies it.
        upsert(&health, vec![check("c", tcp.clone(), HealthStatus::Passing)]);
        assert_eq!(fail(&health), None);
        assert_eq!(fail(&health), None);
        assert_eq!(ok(&health), None, "a success resets the failures");
        assert_eq!(fail(&health), None);
        assert_eq!(fail(&health), None);
        assert_eq!(fail(&health).map(|u| u.status), Some(HealthStatus::Critical), "third consecutive failure");
        // A warning counts as a success that lands on warning.
        assert_eq!(health.record(&probe, HealthStatus::Warning, "429".into()).map(|u| u.status), None, "one of two");
        assert_eq!(
            health.record(&probe, HealthStatus::Warning, "429".into()).map(|u| u.status),
            Some(HealthStatus::Warning)
        );

        // A changed definition makes the old probe's results stale.
        let other = CheckKind::Tcp { address: "127.0.0.1:2".into() };
        upsert(&health, vec![check("c", other, HealthStatus::Passing)]);
        assert_eq!(fail(&health), None);
        assert_ne!(health.probes()[0].generation, probe.generation);

        // The first result of a check is written even without a transition, so a check
        // critical from the start says why; then only transitions are.
        let plain = Check::new(CheckSpec { interval_ms: 1_000, ..CheckSpec::new("c", "", tcp) });
        upsert(&health, vec![plain.clone()]);
        let probe = health.probes().pop().expect("an active check");
        let first = health.record(&probe, HealthStatus::Critical, "refused".into());
        assert_eq!(first.map(|u| (u.status, u.output)), Some((HealthStatus::Critical, "refused".into())));
        upsert(&health, vec![Check { output: "refused".into(), ..plain }]);
        assert_eq!(health.record(&probe, HealthStatus::Critical, "refused again".into()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_checks_expire_and_critical_instances_are_reaped() {
        let health = CheckTable::new();
        let ttl = CheckKind::Ttl { ttl_ms: 5_000 };
        upsert(&health, vec![check("t", ttl.clone(), HealthStatus::Passing)]);
        assert!(health.probes().is_empty(), "nothing probes a TTL check");
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(health.report("t", HealthStatus::Passing, String::new()), Ok(None), "no transition, no write");
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(health.due(Instant::now()).0.is_empty(), "the report renewed the deadline");
        tokio::time::advance(Duration::from_secs(2)).await;
        let (expired, reap) = health.due(Instant::now());
        assert_eq!(expired.len(), 1);
        assert_eq!((expired[0].status, expired[0].output.as_str()), (HealthStatus::Critical, "TTL expired"));
        assert!(reap.is_empty());
        upsert(&health, vec![check("t", ttl.clone(), HealthStatus::Critical)]);
        assert_eq!(
            health.report("t", HealthStatus::Warning, "hi".into()).map(|u| u.map(|u| u.status)),
            Ok(Some(HealthStatus::Warning))
        );
        assert_eq!(health.report("nope", HealthStatus::Passing, String::new()), Err(ReportError::Unknown));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(health.due(Instant::now()).1.is_empty());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(health.due(Instant::now()).1.len(), 1, "critical for 60 s");
        // A new leader counts afresh.
        health.grant_grace();
        assert!(health.due(Instant::now()).1.is_empty());
        // Two quick reports: the second is judged against the first (pending), not the applied
        // status, so a pass right after a fail is written too.
        upsert(&health, vec![check("t", ttl.clone(), HealthStatus::Passing)]);
        assert_eq!(
            health.report("t", HealthStatus::Critical, "x".into()).map(|u| u.map(|u| u.status)),
            Ok(Some(HealthStatus::Critical))
        );
        assert_eq!(
            health.report("t", HealthStatus::Passing, "y".into()).map(|u| u.map(|u| u.status)),
            Ok(Some(HealthStatus::Passing))
        );
        // A failed proposal is forgotten: the next report proposes again.
        health.proposal_failed("t");
        assert_eq!(
            health.report("t", HealthStatus::Passing, "y".into()).map(|u| u.is_some()),
            Ok(false),
            "same as applied"
        );
        // A new output alone is written at most every 5 minutes.
        assert_eq!(health.report("t", HealthStatus::Passing, "z".into()), Ok(None));
        tokio::time::advance(OUTPUT_INTERVAL).await;
        assert_eq!(
            health.report("t", HealthStatus::Passing, "z".into()).map(|u| u.map(|u| u.output)),
            Ok(Some("z".into()))
        );
        // Removal forgets.
        health.observe(&[Effect::InstanceRemoved {
            instance: instance(vec![check("t", ttl, HealthStatus::Critical)]),
            revision: Revision::new(9),
        }]);
        assert_eq!(health.len(), 0);
    }
}
