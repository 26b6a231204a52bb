//! Health checks, run by the leader (blueprint: "health checker (leader)").
//!
//! [`HealthChecks`] mirrors every check in the registry (fed by the state machine's effects,
//! like the session clock) together with what only the leader keeps in memory: TTL deadlines,
//! consecutive success / failure counters and how long a check has been critical.
//! [`run_checks`] runs on every member and acts only while it leads: one task per active
//! (HTTP / TCP / gRPC) check probes it every interval, and a tick expires TTL checks and reaps
//! instances critical for longer than their `DeregisterCriticalServiceAfter`. Only a status
//! transition is proposed (`Command::UpdateChecks`), with the output that caused it: a healthy
//! fleet writes nothing. Thresholds (`SuccessBeforePassing`, `FailuresBeforeCritical`) count
//! consecutive results, as Consul's do; a new leader starts counting afresh and gives every TTL
//! check a full TTL, as it gives sessions.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use waggle_core::{
    CheckKind, CheckSpec, CheckUpdate, Command, Effect, HealthStatus, InstanceId, Registry, ServiceName,
};

use crate::consensus::Consensus;

/// How often TTL deadlines and deregistration delays are looked at.
const TICK: Duration = Duration::from_millis(100);
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

/// A TTL check report (`check/pass|warn|fail|update`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Report {
    pub(crate) check: String,
    pub(crate) status: HealthStatus,
    pub(crate) output: String,
}

/// Why a TTL report failed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub(crate) enum ReportFailure {
    /// Refused by the checks.
    #[error("{}", match .0 { ReportError::Unknown => "unknown check ID", ReportError::NotTtl => "the check is not a TTL check" })]
    Check(ReportError),
    /// Taken, but its write failed (or this node could not reach the leader).
    #[error(transparent)]
    Propose(crate::error::ProposeError),
}

/// Takes a report on the leader: renews the deadline and, if the status changes, writes it
/// with `propose`. Answers the revision of the write, if there was one.
pub(crate) async fn take_report<F, Fut>(
    health: &HealthChecks,
    report: Report,
    propose: F,
) -> Result<Option<u64>, ReportFailure>
where
    F: FnOnce(Command) -> Fut,
    Fut: std::future::Future<Output = Result<waggle_core::Applied, crate::error::ProposeError>>,
{
    match health.report(&report.check, report.status, report.output.clone()).map_err(ReportFailure::Check)? {
        None => Ok(None),
        Some(update) => match propose(Command::UpdateChecks { updates: vec![update] }).await {
            Ok(applied) => Ok(Some(applied.revision.get())),
            Err(e) => {
                health.proposal_failed(&report.check);
                Err(ReportFailure::Propose(e))
            }
        },
    }
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
pub(crate) struct HealthChecks {
    inner: Mutex<Inner>,
    /// Signalled when the set of checks changes (probe tasks to start or stop).
    changed: tokio::sync::Notify,
}

impl HealthChecks {
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

    /// [`HealthChecks::due`]; with `propose` the expiries are marked pending (they are about
    /// to be written), so a report arriving meanwhile is judged against them.
    fn collect_due(&self, now: Instant, propose: bool) -> (Vec<CheckUpdate>, Vec<(ServiceName, InstanceId)>) {
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

/// Runs the checks while this member leads (see the module docs).
pub(crate) async fn run_checks(health: Arc<HealthChecks>, consensus: Arc<Consensus>, shutdown: CancellationToken) {
    let mut leadership = consensus.leadership();
    let mut leading = false;
    let mut probes: HashMap<String, (u64, CancellationToken)> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now_leading = *leadership.borrow_and_update();
        if now_leading && !leading {
            health.grant_grace();
        }
        leading = now_leading;
        if leading {
            // Start probes for new or changed checks, stop those of removed ones.
            let wanted = health.probes();
            let generations: HashMap<&str, u64> = wanted.iter().map(|p| (p.id.as_str(), p.generation)).collect();
            probes.retain(|id, (generation, stop)| {
                let keep = generations.get(id.as_str()) == Some(generation);
                if !keep {
                    stop.cancel();
                }
                keep
            });
            for probe in wanted {
                if probes.contains_key(&probe.id) {
                    continue;
                }
                let stop = shutdown.child_token();
                probes.insert(probe.id.clone(), (probe.generation, stop.clone()));
                tokio::spawn(run_probe(probe, health.clone(), consensus.clone(), stop));
            }
        } else {
            for (_, (_, stop)) in probes.drain() {
                stop.cancel();
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = leadership.changed() => if changed.is_err() { return },
            _ = health.changed.notified() => {}
            _ = tick.tick() => {
                if leading {
                    expire(&health, &consensus).await;
                }
            }
        }
    }
}

/// Writes TTL expiries and reaps instances critical for too long, after confirming leadership
/// with a quorum (a deposed leader must not expire anything).
async fn expire(health: &HealthChecks, consensus: &Consensus) {
    let (expired, reap) = health.due(Instant::now());
    if expired.is_empty() && reap.is_empty() {
        return;
    }
    if !consensus.confirm_leadership().await {
        return;
    }
    // Look again: a report may have renewed a deadline while leadership was confirmed.
    let (expired, reap) = health.collect_due(Instant::now(), true);
    if !expired.is_empty() {
        tracing::info!(checks = ?expired.iter().map(|u| &u.check).collect::<Vec<_>>(), "TTL checks expired");
        let checks: Vec<String> = expired.iter().map(|u| u.check.clone()).collect();
        if let Err(e) = consensus.propose_here(Command::UpdateChecks { updates: expired }).await {
            tracing::warn!("writing TTL expiries failed: {e}");
            for check in &checks {
                health.proposal_failed(check);
            }
        }
    }
    for (service, id) in reap {
        tracing::info!(%service, %id, "deregistering an instance critical for longer than its check allows");
        if let Err(e) = consensus.propose_here(Command::Deregister { service, id }).await {
            tracing::warn!("reaping a critical instance failed: {e}");
        }
    }
}

async fn run_probe(probe: Probe, health: Arc<HealthChecks>, consensus: Arc<Consensus>, stop: CancellationToken) {
    let interval = Duration::from_millis(probe.spec.interval_ms);
    // Spread the first runs (Consul staggers within the interval; we cap it at 1 s so a new
    // check reports soon).
    let stagger = {
        use rand::{Rng, SeedableRng};
        let cap = interval.min(Duration::from_secs(1)).as_millis().max(1) as u64;
        rand::rngs::SmallRng::from_os_rng().random_range(0..cap)
    };
    let mut next = Instant::now() + Duration::from_millis(stagger);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        next = Instant::now() + interval;
        let timeout = Duration::from_millis(probe.spec.timeout_ms);
        let (status, output) = tokio::select! {
            _ = stop.cancelled() => return,
            result = tokio::time::timeout(timeout, crate::probe::run(&probe.spec.kind, timeout)) => match result {
                Ok(result) => result,
                Err(_) => (HealthStatus::Critical, format!("Timed out ({timeout:?}) running check")),
            },
        };
        if let Some(update) = health.record(&probe, status, output) {
            tracing::info!(check = %update.check, status = %update.status, "check result written");
            if let Err(e) = consensus.propose_here(Command::UpdateChecks { updates: vec![update] }).await {
                tracing::debug!("writing a check result failed: {e}");
                health.proposal_failed(&probe.id);
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

    fn upsert(health: &HealthChecks, checks: Vec<Check>) {
        health.observe(&[Effect::InstanceUpserted { instance: instance(checks), created: false }]);
    }

    #[tokio::test(start_paused = true)]
    async fn thresholds_count_consecutive_results() {
        let health = HealthChecks::new();
        let tcp = CheckKind::Tcp { address: "127.0.0.1:1".into() };
        upsert(&health, vec![check("c", tcp.clone(), HealthStatus::Critical)]);
        let probe = health.probes().pop().expect("an active check");
        let ok = |h: &HealthChecks| h.record(&probe, HealthStatus::Passing, "ok".into());
        let fail = |h: &HealthChecks| h.record(&probe, HealthStatus::Critical, "down".into());
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
        let health = HealthChecks::new();
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
