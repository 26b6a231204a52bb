//! Exponential back-off with full jitter (AWS's "full jitter": a uniform draw below the
//! exponential ceiling), drawn from a seeded generator.

use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;

/// Back-off between attempts: attempt `n` (1-based) waits a uniform random time in
/// `[0, min(max, base × 2^(n-1))]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Default for Backoff {
    /// 25 ms doubling up to 1 s.
    fn default() -> Self {
        Backoff { base: Duration::from_millis(25), max: Duration::from_secs(1) }
    }
}

impl Backoff {
    /// Back-off from `base` doubling up to `max` (at least `base`).
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff { base, max: max.max(base) }
    }

    /// The ceiling of attempt `n`'s wait.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(20);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// Attempt `n`'s wait.
    pub fn delay(&self, attempt: u32, rng: &mut SmallRng) -> Duration {
        let ceiling = self.ceiling(attempt);
        if ceiling.is_zero() {
            return ceiling;
        }
        Duration::from_nanos(rng.random_range(0..=ceiling.as_nanos().min(u128::from(u64::MAX)) as u64))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::SeedableRng;

    use super::*;

    proptest! {
        #[test]
        fn delays_stay_within_the_ceiling(
            base_ms in 0u64..10_000,
            max_ms in 0u64..100_000,
            attempt in 1u32..64,
            seed: u64,
        ) {
            let backoff = Backoff::new(Duration::from_millis(base_ms), Duration::from_millis(max_ms));
            let mut rng = SmallRng::seed_from_u64(seed);
            let delay = backoff.delay(attempt, &mut rng);
            prop_assert!(delay <= backoff.ceiling(attempt));
            prop_assert!(backoff.ceiling(attempt) <= Duration::from_millis(max_ms.max(base_ms)));
            prop_assert!(backoff.ceiling(attempt) >= backoff.ceiling(attempt.saturating_sub(1).max(1)));
        }
    }

    #[test]
    fn ceilings_double_to_the_cap() {
        let backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
        let ceilings: Vec<u64> = (1..=6).map(|n| backoff.ceiling(n).as_millis() as u64).collect();
        assert_eq!(ceilings, [10, 20, 40, 80, 100, 100]);
    }
}
