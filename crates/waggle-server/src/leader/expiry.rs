//! The session expiry loop: while this member leads, it proposes `ExpireSessions` for overdue
//! sessions and `LiftLockDelays` for lock-delays that have run out, only after confirming
//! leadership with a quorum (blueprint decision 2). The deadlines themselves are the
//! [`SessionClock`]'s, fed by the state machine. ACL tokens past their expiration time are
//! deleted the same way (`AclExpireTokens`).

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use waggle_core::Command;

use crate::{
    consensus::Consensus,
    state::{ReadModel, SessionClock},
};

/// Expires sessions while this node leads. Every `tick` it collects overdue sessions, confirms
/// leadership with a quorum, checks again which are still overdue (a keepalive may have
/// arrived meanwhile), and only then proposes their expiry. On becoming leader it first grants
/// every session a full TTL, so a failover never mass-expires healthy clients. If the loop
/// itself was stalled (process paused, machine overloaded) it grants grace instead of
/// expiring: a stalled node cannot tell whether clients kept sending keepalives.
pub(crate) async fn run_expiry(
    clock: Arc<SessionClock>,
    consensus: Arc<Consensus>,
    read_model: Arc<ReadModel>,
    tick: Duration,
    shutdown: CancellationToken,
) {
    let mut leadership = consensus.leadership();
    let mut leading = *leadership.borrow_and_update();
    let mut interval = tokio::time::interval_at(Instant::now() + tick, tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stall = (tick * 10).max(Duration::from_secs(1));
    let mut last_tick = Instant::now();
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = leadership.changed() => {
                if changed.is_err() {
                    return;
                }
                let now_leading = *leadership.borrow_and_update();
                if now_leading && !leading {
                    clock.grant_grace();
                    tracing::info!(sessions = clock.len(), "became leader: every session granted a full TTL");
                }
                leading = now_leading;
                continue;
            }
            _ = interval.tick() => {}
        }
        let now = Instant::now();
        let gap = now.duration_since(last_tick);
        last_tick = now;
        ticks += 1;
        if ticks.is_multiple_of(100) {
            read_model.prune();
        }
        if !leading {
            continue;
        }
        if gap > stall {
            tracing::warn!(?gap, "session clock stalled; granting every session a full TTL instead of expiring");
            clock.grant_grace();
            continue;
        }
        let expired_tokens = expired_tokens(&read_model);
        if clock.expired(now).is_empty() && clock.due_delays(now).is_empty() && expired_tokens.is_empty() {
            continue;
        }
        if !consensus.confirm_leadership().await {
            tracing::warn!("could not confirm leadership with a quorum; not expiring sessions or lock-delays");
            continue;
        }
        let expired = clock.expired(Instant::now());
        if !expired.is_empty() {
            tracing::info!(sessions = ?expired, "expiring sessions");
            if let Err(e) = consensus.propose_here(Command::ExpireSessions { sessions: expired }).await {
                tracing::warn!("expiry proposal failed: {e}");
            }
        }
        let due = clock.due_delays(Instant::now());
        if !due.is_empty() {
            tracing::debug!(delays = ?due, "lifting lock-delays");
            if let Err(e) = consensus.propose_here(Command::LiftLockDelays { delays: due }).await {
                tracing::warn!("lock-delay proposal failed: {e}");
            }
        }
        if !expired_tokens.is_empty() {
            tracing::info!(tokens = ?expired_tokens, "deleting expired ACL tokens");
            if let Err(e) = consensus.propose_here(Command::AclExpireTokens { accessors: expired_tokens }).await {
                tracing::warn!("token expiry proposal failed: {e}");
            }
        }
    }
}

/// The accessors of ACL tokens whose expiration time has passed (by this member's wall clock:
/// expiration times are absolute). Requests refuse them already; this removes them.
fn expired_tokens(read_model: &ReadModel) -> Vec<String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    read_model
        .acl()
        .tokens()
        .values()
        .filter(|t| t.expiration_ms.is_some_and(|at| at <= now))
        .map(|t| t.accessor.clone())
        .collect()
}
