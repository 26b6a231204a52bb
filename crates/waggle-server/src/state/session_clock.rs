//! The session clock: the leader's in-memory session deadlines (keepalives never touch the
//! log) and lock-delay deadlines, and the expiry loop that proposes `ExpireSessions` and
//! `LiftLockDelays` only after confirming leadership with a quorum (blueprint decision 2).

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use tokio::time::Instant;
use waggle_core::{DelayTarget, SessionId, Ttl};

#[derive(Debug, Clone, Copy)]
struct Lease {
    ttl: Ttl,
    deadline: Instant,
}

/// Session deadlines, fed by the state machine (sessions opened / closed) and by keepalives,
/// and lock-delay deadlines (delays started / lifted).
#[derive(Debug, Default)]
pub(crate) struct SessionClock {
    leases: Mutex<HashMap<SessionId, Lease>>,
    delays: Mutex<HashMap<DelayTarget, (Duration, Instant)>>,
}

impl SessionClock {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Lease>> {
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts tracking a new session with a full TTL.
    pub(crate) fn track(&self, id: SessionId, ttl: Ttl) {
        if id == SessionId::AGENT {
            return; // no deadline
        }
        self.leases().insert(id, Lease { ttl, deadline: Instant::now() + ttl.as_duration() });
    }

    /// Stops tracking a session that ended.
    pub(crate) fn forget(&self, id: SessionId) {
        self.leases().remove(&id);
    }

    /// Replaces every tracked session, each with a full TTL from now (restart / snapshot grace).
    pub(crate) fn reset(&self, sessions: impl Iterator<Item = (SessionId, Ttl)>) {
        let now = Instant::now();
        let mut leases = self.leases();
        leases.clear();
        leases.extend(
            sessions
                .filter(|(id, _)| *id != SessionId::AGENT)
                .map(|(id, ttl)| (id, Lease { ttl, deadline: now + ttl.as_duration() })),
        );
    }

    /// Gives every session a full TTL and every lock-delay its full delay from now (after this
    /// node becomes leader, or after a stall).
    pub(crate) fn grant_grace(&self) {
        let now = Instant::now();
        for lease in self.leases().values_mut() {
            lease.deadline = now + lease.ttl.as_duration();
        }
        for (delay, end) in self.delays().values_mut() {
            *end = now + *delay;
        }
    }

    fn delays(&self) -> std::sync::MutexGuard<'_, HashMap<DelayTarget, (Duration, Instant)>> {
        self.delays.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts timing a lock-delay of `ms` from now.
    pub(crate) fn track_delay(&self, target: DelayTarget, ms: u64) {
        let delay = Duration::from_millis(ms);
        self.delays().insert(target, (delay, Instant::now() + delay));
    }

    /// Stops timing a lifted lock-delay.
    pub(crate) fn forget_delay(&self, target: &DelayTarget) {
        self.delays().remove(target);
    }

    /// Replaces every timed lock-delay, each with its full delay from now (restart, snapshot:
    /// when it started is not known here, and a longer delay is the safe side).
    pub(crate) fn reset_delays(&self, delays: impl Iterator<Item = (DelayTarget, u64)>) {
        let now = Instant::now();
        let mut timed = self.delays();
        timed.clear();
        timed.extend(delays.map(|(t, ms)| (t, (Duration::from_millis(ms), now + Duration::from_millis(ms)))));
    }

    /// Lock-delays whose time is up.
    pub(crate) fn due_delays(&self, now: Instant) -> Vec<DelayTarget> {
        let mut due: Vec<DelayTarget> =
            self.delays().iter().filter(|(_, (_, end))| *end <= now).map(|(t, _)| t.clone()).collect();
        due.sort_unstable();
        due
    }

    /// Renews a session; `None` if it is unknown (expired, revoked or never created).
    pub(crate) fn keepalive(&self, id: SessionId) -> Option<Ttl> {
        let mut leases = self.leases();
        let lease = leases.get_mut(&id)?;
        lease.deadline = Instant::now() + lease.ttl.as_duration();
        Some(lease.ttl)
    }

    /// Sessions whose deadline has passed.
    pub(crate) fn expired(&self, now: Instant) -> Vec<SessionId> {
        let mut ids: Vec<SessionId> =
            self.leases().iter().filter(|(_, l)| l.deadline <= now).map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids
    }

    /// How many sessions are tracked.
    pub(crate) fn len(&self) -> usize {
        self.leases().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_keepalives_and_grace() {
        let clock = SessionClock::new();
        let (a, b) = (SessionId::new(1), SessionId::new(2));
        clock.track(a, Ttl::from_millis(1_000).expect("ttl"));
        clock.track(b, Ttl::from_millis(5_000).expect("ttl"));
        tokio::time::advance(Duration::from_millis(900)).await;
        assert_eq!(clock.keepalive(a).map(Ttl::as_millis), Some(1_000));
        tokio::time::advance(Duration::from_millis(900)).await;
        assert!(clock.expired(Instant::now()).is_empty(), "keepalive pushed a's deadline");
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(clock.expired(Instant::now()), vec![a]);
        clock.grant_grace();
        assert!(clock.expired(Instant::now()).is_empty(), "grace renews every session");
        tokio::time::advance(Duration::from_millis(5_000)).await;
        assert_eq!(clock.expired(Instant::now()), vec![a, b]);
        clock.forget(a);
        assert_eq!(clock.keepalive(a), None);
        assert_eq!(clock.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn lock_delays_come_due_and_restart_with_grace() {
        let clock = SessionClock::new();
        let key = DelayTarget::Key { key: "k".into(), since: 3 };
        let slot = DelayTarget::Lock { lock: "l".into(), token: 7 };
        clock.track_delay(key.clone(), 1_000);
        clock.track_delay(slot.clone(), 3_000);
        tokio::time::advance(Duration::from_millis(1_000)).await;
        assert_eq!(clock.due_delays(Instant::now()), vec![key.clone()]);
        clock.grant_grace();
        assert!(clock.due_delays(Instant::now()).is_empty(), "grace restarts every delay");
        tokio::time::advance(Duration::from_millis(3_000)).await;
        assert_eq!(clock.due_delays(Instant::now()), vec![key.clone(), slot.clone()]);
        clock.forget_delay(&key);
        clock.reset_delays(std::iter::once((slot.clone(), 500)));
        assert!(clock.due_delays(Instant::now()).is_empty());
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(clock.due_delays(Instant::now()), vec![slot]);
    }
}
