//! The leader's duties that are not Raft: the session expiry loop and lock-delay lifting
//! (`expiry.rs`), the health-check runner and its probes (`checks.rs`, `probe.rs`), naming the
//! registry's history (`history.rs`), and keepalives and TTL check reports, taken here when this
//! member leads and sent to the leader over the `LeaderPeer` peer service otherwise
//! (`peer.rs`).
//!
//! # Architecture invariant
//!
//! Above consensus, below the node's use cases: it proposes through [`Consensus`] and reads and
//! times the [`crate::state`] the state machine feeds, and it knows no front-end. Every loop
//! runs on every member and acts only while it leads; anything it decides to expire is
//! proposed only after a quorum confirmed its leadership.

mod checks;
mod expiry;
mod history;
mod peer;
mod probe;

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use waggle_core::{SessionId, Ttl};

pub(crate) use checks::{Report, ReportFailure};
pub(crate) use peer::routes as peer_routes;

use crate::{
    consensus::{Consensus, ProposeError},
    ids::RandomIds,
    state::{CheckTable, LocalState, ReadModel, SessionClock},
};

/// How long a keepalive or a check report follows leadership through an election before it
/// fails.
const SETTLE: Duration = Duration::from_secs(1);
const SETTLE_REPORT: Duration = Duration::from_secs(2);

/// This member's leader duties (acting only while it leads).
pub(crate) struct Leader {
    consensus: Arc<Consensus>,
    clock: Arc<SessionClock>,
    checks: Arc<CheckTable>,
    read_model: Arc<ReadModel>,
}

/// A place for the [`Leader`] that the peer service answers from once it is set.
pub(crate) type LeaderSlot = Arc<OnceLock<Arc<Leader>>>;

impl Leader {
    pub(crate) fn new(consensus: Arc<Consensus>, state: &LocalState) -> Self {
        Leader {
            consensus,
            clock: state.clock.clone(),
            checks: state.checks.clone(),
            read_model: state.read_model.clone(),
        }
    }

    /// Starts the loops: session expiry (every `session_tick`), the check runner and the naming
    /// of the history (ids drawn from `seed` in tests).
    pub(crate) fn spawn(
        &self,
        session_tick: Duration,
        seed: Option<u64>,
        shutdown: &CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        // Grace starts now, when clients can reach us, not when the data dir was opened.
        self.clock.grant_grace();
        vec![
            tokio::spawn(expiry::run_expiry(
                self.clock.clone(),
                self.consensus.clone(),
                self.read_model.clone(),
                session_tick,
                shutdown.clone(),
            )),
            tokio::spawn(checks::run_checks(self.checks.clone(), self.consensus.clone(), shutdown.clone())),
            tokio::spawn(history::name_history(
                self.consensus.clone(),
                self.read_model.clone(),
                RandomIds::new(seed.map(|s| s ^ 0x5eed)),
                shutdown.clone(),
            )),
        ]
    }

    /// Renews a session on this member, which leads: its TTL in ms, or `None` if unknown.
    fn renew_here(&self, session: u64) -> Option<u64> {
        self.clock.keepalive(SessionId::new(session)).map(Ttl::as_millis)
    }

    /// Renews a session where its deadline lives: here if this member leads, otherwise on the
    /// leader. During an election (a few hundred milliseconds) it follows leadership for up to a
    /// second rather than failing the client's keepalive stream.
    pub(crate) async fn renew(&self, session: u64) -> Result<Option<u64>, ProposeError> {
        let consensus = &self.consensus;
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let answer = if consensus.leads_with_quorum() {
                Ok(self.renew_here(session))
            } else if consensus.clustered() {
                peer::keep_alive(self, session).await
            } else {
                Err(ProposeError::NotLeader)
            };
            let settling = matches!(answer, Err(ProposeError::NotLeader | ProposeError::LeaderUnreachable));
            if !settling || !consensus.clustered() || tokio::time::Instant::now() >= deadline {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Takes a TTL check report on this member, which leads (see [`checks::take_report`]).
    async fn take_report(&self, report: Report) -> Result<Option<u64>, ReportFailure> {
        checks::take_report(&self.checks, report, |command| self.consensus.propose_here(command)).await
    }

    /// A TTL check report: taken here if this member leads (a renewed deadline, and the new
    /// status written if it changed), sent to the leader otherwise; answers once the write, if
    /// any, is applied here.
    pub(crate) async fn report_check(&self, report: Report) -> Result<(), ReportFailure> {
        let consensus = &self.consensus;
        let deadline = tokio::time::Instant::now() + SETTLE_REPORT;
        loop {
            let answer = if consensus.leads_with_quorum() {
                self.take_report(report.clone()).await
            } else if consensus.clustered() {
                peer::report_check(self, &report).await
            } else {
                Err(ReportFailure::Propose(ProposeError::NotLeader))
            };
            let settling = matches!(
                answer,
                Err(ReportFailure::Propose(ProposeError::NotLeader | ProposeError::LeaderUnreachable))
            );
            if settling && consensus.clustered() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            if let Some(revision) = answer? {
                let applied = self.read_model.applied(waggle_core::Revision::new(revision));
                let _ = tokio::time::timeout(Duration::from_secs(5), applied).await;
            }
            return Ok(());
        }
    }
}
