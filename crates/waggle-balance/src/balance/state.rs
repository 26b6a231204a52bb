//! The endpoint state machine: connecting → ready → ejected (with back-off) → probation →
//! ready. Pure: every transition takes the time as an argument.

use std::time::Duration;

use tokio::time::Instant;

use super::config::Ejection;

/// Where an endpoint is in its life cycle.
///
/// ```text
///   insert ──► Connecting ──ready──► Ready ◄──────success──────┐
///                  │                  │                         │
///                  │fail              │fail (N in a row,        │
///                  ▼                  ▼  not ready, or eject)   │
///               Ejected ◄──────────────────────── fail ── Probation
///                  │                                            ▲
///                  └────────── back-off elapsed ────────────────┘
/// ```
///
/// Ready and probation endpoints take traffic; connecting and ejected ones do not, unless the
/// balancer is in panic mode. Each ejection in a row doubles the back-off, up to its cap; a
/// success on probation resets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndpointState {
    /// Inserted; its service has not reported ready yet.
    Connecting,
    /// Taking traffic.
    Ready,
    /// Skipped until its back-off elapses.
    Ejected,
    /// Back from ejection: taking traffic, and the first response decides between ready and
    /// a longer ejection.
    Probation,
}

impl EndpointState {
    /// Whether the endpoint takes traffic outside panic mode.
    pub fn is_healthy(self) -> bool {
        matches!(self, EndpointState::Ready | EndpointState::Probation)
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Lifecycle {
    pub(crate) state: EndpointState,
    /// Ejections since the endpoint was last confirmed healthy; drives the back-off.
    pub(crate) consecutive_ejections: u32,
    pub(crate) total_ejections: u64,
    /// When the endpoint last became ready (the start of its slow-start window).
    pub(crate) ready_since: Option<Instant>,
    /// While ejected: when probation starts.
    pub(crate) retry_at: Option<Instant>,
    pub(crate) last_error: Option<String>,
}

impl Lifecycle {
    pub(crate) fn new() -> Self {
        Lifecycle {
            state: EndpointState::Connecting,
            consecutive_ejections: 0,
            total_ejections: 0,
            ready_since: None,
            retry_at: None,
            last_error: None,
        }
    }

    /// A new endpoint's service reported ready. Only moves a connecting endpoint: one that
    /// was ejected meanwhile waits for its back-off and probation like any other. Returns
    /// whether the state changed.
    pub(crate) fn on_connected(&mut self, now: Instant) -> bool {
        if self.state != EndpointState::Connecting {
            return false;
        }
        self.state = EndpointState::Ready;
        self.ready_since = Some(now);
        true
    }

    /// A probe succeeded: from probation to ready, back-off forgotten. The slow-start ramp
    /// that began with probation continues. Returns whether the state changed.
    pub(crate) fn on_probe_succeeded(&mut self, now: Instant) -> bool {
        if self.state != EndpointState::Probation {
            return false;
        }
        self.state = EndpointState::Ready;
        self.consecutive_ejections = 0;
        self.ready_since = self.ready_since.or(Some(now));
        self.retry_at = None;
        true
    }

    /// Ejects the endpoint for its back-off (or for `duration`, when an operator or an outlier
    /// detector decides). Returns when probation will start, or `None` if it was already
    /// ejected (a late report must not extend the back-off).
    pub(crate) fn eject(
        &mut self,
        now: Instant,
        policy: &Ejection,
        duration: Option<Duration>,
        reason: String,
    ) -> Option<Instant> {
        if self.state == EndpointState::Ejected {
            return None;
        }
        self.consecutive_ejections = self.consecutive_ejections.saturating_add(1);
        self.total_ejections += 1;
        let backoff = duration.unwrap_or_else(|| policy.backoff(self.consecutive_ejections));
        let retry_at = later(now, backoff);
        self.state = EndpointState::Ejected;
        self.retry_at = Some(retry_at);
        self.ready_since = None;
        self.last_error = Some(reason);
        Some(retry_at)
    }

    /// The back-off has elapsed: admit traffic on probation. Returns whether the state changed.
    pub(crate) fn on_backoff_elapsed(&mut self, now: Instant) -> bool {
        match (self.state, self.retry_at) {
            (EndpointState::Ejected, Some(at)) if at <= now => {
                self.state = EndpointState::Probation;
                self.retry_at = None;
                // Slow start ramps from here: probation traffic starts at the minimum weight.
                self.ready_since = Some(now);
                true
            }
            _ => false,
        }
    }

    /// An operator restored the endpoint: ready at once, back-off forgotten.
    pub(crate) fn restore(&mut self, now: Instant) -> bool {
        if self.state == EndpointState::Ready {
            return false;
        }
        self.state = EndpointState::Ready;
        self.consecutive_ejections = 0;
        self.ready_since = Some(now);
        self.retry_at = None;
        true
    }
}

/// `now + duration`, saturating about 30 years out instead of panicking (an operator may
/// eject "for `Duration::MAX`").
pub(crate) fn later(now: Instant, duration: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    now.checked_add(duration.min(FAR)).or_else(|| now.checked_add(Duration::from_secs(24 * 3600))).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Ejection {
        Ejection::default().base(Duration::from_secs(5)).max(Duration::from_secs(30))
    }

    #[test]
    fn full_cycle_with_doubling_backoff() {
        let t0 = Instant::now();
        let mut life = Lifecycle::new();
        assert_eq!(life.state, EndpointState::Connecting);
        assert!(life.on_connected(t0));
        assert!(!life.on_connected(t0), "only from connecting");
        assert_eq!((life.state, life.ready_since), (EndpointState::Ready, Some(t0)));

        let first = life.eject(t0, &policy(), None, "boom".into());
        assert_eq!(first, Some(t0 + Duration::from_secs(5)));
        assert_eq!(life.eject(t0, &policy(), None, "again".into()), None, "already ejected");
        assert!(!life.on_backoff_elapsed(t0 + Duration::from_secs(4)), "too early");
        assert!(life.on_backoff_elapsed(t0 + Duration::from_secs(5)));
        assert_eq!(life.state, EndpointState::Probation);

        // Failing on probation doubles the back-off: 10 s, then 20 s, then the 30 s cap.
        let t1 = t0 + Duration::from_secs(6);
        assert_eq!(life.eject(t1, &policy(), None, "probe failed".into()), Some(t1 + Duration::from_secs(10)));
        life.on_backoff_elapsed(t1 + Duration::from_secs(10));
        assert_eq!(life.eject(t1, &policy(), None, "x".into()), Some(t1 + Duration::from_secs(20)));
        life.on_backoff_elapsed(t1 + Duration::from_secs(20));
        assert_eq!(life.eject(t1, &policy(), None, "x".into()), Some(t1 + Duration::from_secs(30)));
        life.on_backoff_elapsed(t1 + Duration::from_secs(30));

        // A success on probation makes it ready and forgets the back-off.
        let t2 = t1 + Duration::from_secs(31);
        assert!(life.on_probe_succeeded(t2));
        assert_eq!(life.ready_since, Some(t1 + Duration::from_secs(30)), "the ramp began with probation");
        assert_eq!((life.state, life.consecutive_ejections, life.total_ejections), (EndpointState::Ready, 0, 4));
        assert_eq!(life.eject(t2, &policy(), None, "x".into()), Some(t2 + Duration::from_secs(5)));
    }

    #[test]
    fn connecting_failure_ejects_and_restore_readmits() {
        let t0 = Instant::now();
        let mut life = Lifecycle::new();
        assert!(life.eject(t0, &policy(), Some(Duration::from_secs(1)), "refused".into()).is_some());
        assert_eq!(life.state, EndpointState::Ejected);
        assert!(!life.on_connected(t0), "an ejected endpoint waits for its back-off");
        assert!(!life.on_probe_succeeded(t0));
        assert!(life.restore(t0));
        assert_eq!(life.state, EndpointState::Ready);
    }

    #[test]
    fn ejecting_forever_does_not_overflow() {
        let t0 = Instant::now();
        let mut life = Lifecycle::new();
        let retry_at = life.eject(t0, &policy(), Some(Duration::MAX), "forever".into()).unwrap();
        assert!(retry_at > t0 + Duration::from_secs(365 * 24 * 3600));
    }
}
