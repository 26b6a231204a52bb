//! Random ids drawn outside the state machine (session ids, the history's id), so they are never
//! reused, even across a wiped or restored data dir; seeded in tests for reproducibility.

/// Draws random, non-zero ids.
pub(crate) struct RandomIds(std::sync::Mutex<rand::rngs::SmallRng>);

impl RandomIds {
    /// Seeded for reproducible tests, or from the OS.
    pub(crate) fn new(seed: Option<u64>) -> Self {
        use rand::SeedableRng;
        let rng = match seed {
            Some(s) => rand::rngs::SmallRng::seed_from_u64(s),
            None => rand::rngs::SmallRng::from_os_rng(),
        };
        RandomIds(std::sync::Mutex::new(rng))
    }

    /// A random id, never 0.
    pub(crate) fn next_id(&self) -> u64 {
        use rand::Rng;
        let mut rng = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        rng.random_range(1..=u64::MAX)
    }
}
