//! Round robin: each candidate in turn, weights ignored.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use rand::rngs::SmallRng;

use super::{Candidate, PickContext, Picker, Policy};

/// Each candidate in turn. Every balancer starts at a random position so that many clients
/// started together do not hit the same endpoint in lockstep. Ignores weights; use
/// [`SmoothWeightedRoundRobin`](super::SmoothWeightedRoundRobin) or
/// [`WeightedRandom`](super::WeightedRandom) when weights matter.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoundRobin;

impl Policy for RoundRobin {
    fn name(&self) -> &'static str {
        "round_robin"
    }

    fn build(&self, candidates: &[Candidate], rng: &mut SmallRng) -> Box<dyn Picker> {
        let start = crate::rng::below(rng, candidates.len());
        Box::new(RoundRobinPicker { next: AtomicUsize::new(start), n: candidates.len() })
    }
}

#[derive(Debug)]
struct RoundRobinPicker {
    next: AtomicUsize,
    n: usize,
}

impl Picker for RoundRobinPicker {
    fn pick(&self, _cx: &mut PickContext<'_>) -> usize {
        self.next.fetch_add(1, Relaxed) % self.n
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn visits_every_candidate_in_turn() {
        let candidates = candidates(&[1.0, 5.0, 1.0]);
        assert_eq!(histogram(&RoundRobin, &candidates, 3000), vec![1000, 1000, 1000]);
    }
}
