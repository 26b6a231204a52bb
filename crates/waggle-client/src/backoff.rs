//! Exponential back-off with full jitter for reconnects.

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::SmallRng};

/// Exponential back-off with full jitter: the n-th wait is uniform in
/// `[0, min(max, base * 2^n)]`, at least 1 ms. `reset` after a success.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    rng: SmallRng,
}

impl Backoff {
    /// A back-off with the given bounds and RNG seed (`None` seeds from the OS).
    pub fn new(base: Duration, max: Duration, seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(s) => SmallRng::seed_from_u64(s),
            None => SmallRng::from_os_rng(),
        };
        Backoff { base, max, attempt: 0, rng }
    }

    /// The next wait.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(20));
        let cap = exp.min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX).max(1);
        Duration::from_millis(self.rng.random_range(1..=ms))
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_within_bounds() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2), Some(7));
        for attempt in 0..12u32 {
            let cap = Duration::from_millis(100 * (1u64 << attempt)).min(Duration::from_secs(2));
            let d = b.next_delay();
            assert!(d >= Duration::from_millis(1) && d <= cap, "attempt {attempt}: {d:?} > {cap:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
