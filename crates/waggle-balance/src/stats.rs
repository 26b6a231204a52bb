//! Live per-endpoint load: requests in flight and a peak-sensitive latency average.
//!
//! Updated on every request by whichever task finishes it, read on every pick, so all fields
//! are relaxed atomics. A pick may see a value a few nanoseconds stale; balancing is a
//! heuristic and tolerates that, while a lock here would serialise every request.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Load counters of one endpoint, shared by the balancer and every in-flight request.
#[derive(Debug, Default)]
pub struct EndpointStats {
    in_flight: AtomicU32,
    /// Peak-EWMA latency estimate in nanoseconds, as `f64` bits; 0 until the first response.
    ewma_bits: AtomicU64,
    /// When `ewma_bits` was last updated, in nanoseconds since the balancer's origin.
    ewma_stamp: AtomicU64,
    consecutive_failures: AtomicU32,
    successes: AtomicU64,
    failures: AtomicU64,
    /// A concurrency limit published by the endpoint's own limiter; 0 when there is none.
    capacity: AtomicU32,
    /// The failure-rate window: its start (ns since the balancer's origin) and counts.
    window_start: AtomicU64,
    window_calls: AtomicU32,
    window_failures: AtomicU32,
}

/// Load Finagle gives an endpoint that has requests in flight but no latency sample yet, so
/// P2C does not pile a burst onto a brand-new endpoint before it has answered once.
const PENALTY_NANOS: f64 = 1e12;

impl EndpointStats {
    /// Fresh counters: nothing in flight, no latency sample.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests currently in flight.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// Records the start of a request.
    pub fn start(&self) {
        self.in_flight.fetch_add(1, Relaxed);
    }

    /// Records the end of a request started with [`start`](Self::start).
    pub fn finish(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
    }

    /// Feeds one round-trip time into the peak EWMA: a sample slower than the current
    /// (decayed) estimate replaces it at once (peak); a faster one is blended in with weight
    /// `1 - e^(-elapsed / decay)`, so the estimate never rises on a faster sample.
    pub fn observe_rtt(&self, now: Duration, rtt: Duration, decay: Duration) {
        let now_nanos = now.as_nanos() as u64;
        let rtt = rtt.as_nanos() as f64;
        let current = self.decayed_ewma(now_nanos, decay);
        let next = if rtt > current {
            rtt
        } else {
            let elapsed = now_nanos.saturating_sub(self.ewma_stamp.load(Relaxed)) as f64;
            let w = (-elapsed / decay.as_nanos().max(1) as f64).exp();
            current * w + rtt * (1.0 - w)
        };
        self.ewma_bits.store(next.to_bits(), Relaxed);
        self.ewma_stamp.store(now_nanos, Relaxed);
    }

    /// The current latency estimate, in nanoseconds (0 without samples). It decays towards 0
    /// while no response arrives, so an endpoint that was slow once is retried eventually.
    pub fn peak_ewma(&self, now: Duration, decay: Duration) -> f64 {
        self.decayed_ewma(now.as_nanos() as u64, decay)
    }

    fn decayed_ewma(&self, now_nanos: u64, decay: Duration) -> f64 {
        let cost = f64::from_bits(self.ewma_bits.load(Relaxed));
        if cost == 0.0 {
            return 0.0;
        }
        let elapsed = now_nanos.saturating_sub(self.ewma_stamp.load(Relaxed)) as f64;
        cost * (-elapsed / decay.as_nanos().max(1) as f64).exp()
    }

    /// Peak-EWMA load: latency estimate × (requests in flight + 1), or a large penalty for an
    /// endpoint that has requests in flight and no sample yet (Finagle's rule).
    pub fn peak_ewma_load(&self, now: Duration, decay: Duration) -> f64 {
        let pending = f64::from(self.in_flight());
        let cost = self.peak_ewma(now, decay);
        if cost == 0.0 && pending > 0.0 { PENALTY_NANOS + pending } else { cost * (pending + 1.0) }
    }

    /// Records a response's outcome; returns the number of consecutive failures so far.
    pub(crate) fn record_outcome(&self, success: bool) -> u32 {
        if success {
            self.successes.fetch_add(1, Relaxed);
            self.consecutive_failures.store(0, Relaxed);
            0
        } else {
            self.failures.fetch_add(1, Relaxed);
            self.consecutive_failures.fetch_add(1, Relaxed) + 1
        }
    }

    pub(crate) fn reset_failures(&self) {
        self.consecutive_failures.store(0, Relaxed);
        self.window_calls.store(0, Relaxed);
        self.window_failures.store(0, Relaxed);
    }

    /// Counts an outcome into the failure-rate window starting at `now` (nanoseconds since
    /// the balancer's origin) and lasting `window`; returns (calls, failures) so far. A window
    /// that has passed starts over (racing updates may lose a count, which a rate tolerates).
    pub(crate) fn record_in_window(&self, success: bool, now: u64, window: u64) -> (u32, u32) {
        let start = self.window_start.load(Relaxed);
        if now.saturating_sub(start) >= window
            && self.window_start.compare_exchange(start, now, Relaxed, Relaxed).is_ok()
        {
            self.window_calls.store(0, Relaxed);
            self.window_failures.store(0, Relaxed);
        }
        let calls = self.window_calls.fetch_add(1, Relaxed) + 1;
        let failures = self.window_failures.fetch_add(u32::from(!success), Relaxed) + u32::from(!success);
        (calls, failures)
    }

    /// Publishes the endpoint's concurrency limit (an adaptive limiter's current value), or 0
    /// for none. With a limit, least-request compares utilisation (in flight / limit)
    /// instead of raw requests in flight.
    pub fn set_capacity(&self, limit: u32) {
        self.capacity.store(limit, Relaxed);
    }

    /// The published concurrency limit.
    pub fn capacity(&self) -> Option<u32> {
        Some(self.capacity.load(Relaxed)).filter(|c| *c > 0)
    }

    /// Requests in flight, as a share of the published limit when there is one.
    pub fn utilisation(&self) -> f64 {
        let in_flight = f64::from(self.in_flight());
        match self.capacity.load(Relaxed) {
            0 => in_flight,
            limit => in_flight / f64::from(limit),
        }
    }

    /// Responses that succeeded.
    pub fn successes(&self) -> u64 {
        self.successes.load(Relaxed)
    }

    /// Responses that failed.
    pub fn failures(&self) -> u64 {
        self.failures.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECAY: Duration = Duration::from_secs(10);

    #[test]
    fn peak_ewma_jumps_to_peaks_and_decays() {
        let stats = EndpointStats::new();
        let t0 = Duration::from_secs(1);
        assert_eq!(stats.peak_ewma_load(t0, DECAY), 0.0, "an idle endpoint without data costs nothing");
        stats.start();
        assert!(stats.peak_ewma_load(t0, DECAY) >= PENALTY_NANOS, "in flight without data is penalised");
        stats.finish();
        stats.observe_rtt(t0, Duration::from_millis(10), DECAY);
        assert_eq!(stats.peak_ewma(t0, DECAY), 10e6);
        stats.observe_rtt(t0, Duration::from_millis(100), DECAY);
        assert_eq!(stats.peak_ewma(t0, DECAY), 100e6, "a slower sample is taken at once");
        // One decay window later the estimate has fallen to 1/e.
        let later = stats.peak_ewma(t0 + DECAY, DECAY);
        assert!((later - 100e6 / std::f64::consts::E).abs() < 1.0, "{later}");
        // A fast sample half a window later is blended in, not taken, and never raises the
        // estimate above where decay had already brought it.
        let decayed = stats.peak_ewma(t0 + DECAY / 2, DECAY);
        stats.observe_rtt(t0 + DECAY / 2, Duration::from_millis(1), DECAY);
        let blended = stats.peak_ewma(t0 + DECAY / 2, DECAY);
        assert!(blended > 1e6 && blended < decayed, "{blended} vs {decayed}");
        // A sample slower than the decayed estimate is a new peak.
        stats.observe_rtt(t0 + DECAY / 2, Duration::from_millis(50), DECAY);
        assert_eq!(stats.peak_ewma(t0 + DECAY / 2, DECAY), 50e6);
    }

    #[test]
    fn outcomes_count_consecutive_failures() {
        let stats = EndpointStats::new();
        assert_eq!(stats.record_outcome(false), 1);
        assert_eq!(stats.record_outcome(false), 2);
        assert_eq!(stats.record_outcome(true), 0);
        assert_eq!(stats.record_outcome(false), 1);
        assert_eq!((stats.successes(), stats.failures()), (1, 3));
    }
}
