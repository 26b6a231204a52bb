//! The leader's check runner (blueprint: "health checker (leader)"): [`run_checks`] runs on
//! every member and acts only while it leads: one task per active (HTTP / TCP / gRPC) check
//! probes it every interval (`probe.rs` runs one probe), and a tick expires TTL checks and reaps
//! instances critical for longer than their `DeregisterCriticalServiceAfter`. Only a status
//! transition is proposed (`Command::UpdateChecks`), with the output that caused it: a healthy
//! fleet writes nothing. TTL reports are taken here on the leader ([`take_report`]); a follower
//! sends its reports over the `LeaderPeer` service (`peer.rs`).

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use waggle_core::{Command, HealthStatus};

use crate::{
    consensus::{Consensus, ProposeError},
    state::checks::{CheckTable, Probe, ReportError},
};

/// How often TTL deadlines and deregistration delays are looked at.
const TICK: Duration = Duration::from_millis(100);

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
    Propose(ProposeError),
}

/// Takes a report on the leader: renews the deadline and, if the status changes, writes it
/// with `propose`. Answers the revision of the write, if there was one.
pub(crate) async fn take_report<F, Fut>(
    health: &CheckTable,
    report: Report,
    propose: F,
) -> Result<Option<u64>, ReportFailure>
where
    F: FnOnce(Command) -> Fut,
    Fut: std::future::Future<Output = Result<waggle_core::Applied, ProposeError>>,
{
    match health.report(&report.check, report.status, report.output.clone()).map_err(ReportFailure::Check)? {
        None => Ok(None),
        Some(update) => match propose(Command::UpdateChecks { updates: vec![update] }).await {
            Ok(applied) => Ok(Some(applied.revision().get())),
            Err(e) => {
                health.proposal_failed(&report.check);
                Err(ReportFailure::Propose(e))
            }
        },
    }
}

/// Runs the checks while this member leads (see the module docs).
pub(crate) async fn run_checks(health: Arc<CheckTable>, consensus: Arc<Consensus>, shutdown: CancellationToken) {
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
async fn expire(health: &CheckTable, consensus: &Consensus) {
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

async fn run_probe(probe: Probe, health: Arc<CheckTable>, consensus: Arc<Consensus>, stop: CancellationToken) {
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
            result = tokio::time::timeout(timeout, super::probe::run(&probe.spec.kind, timeout)) => match result {
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
