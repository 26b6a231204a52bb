//! Smooth weighted round robin, nginx's algorithm.

use std::sync::Mutex;

use rand::rngs::SmallRng;

use super::{Candidate, PickContext, Picker, Policy};

/// nginx's smooth weighted round robin: every pick adds each candidate's weight to its
/// running score, takes the highest score and subtracts the total weight from it. Weights
/// 5 / 1 / 1 give `a a b a c a a` — exact shares over every window of `sum(weights)` picks,
/// with the heavy endpoint's turns spread out rather than bunched.
///
/// O(n) per pick under a lock; prefer [`WeightedRandom`](super::WeightedRandom) beyond a few
/// hundred endpoints.
#[derive(Clone, Copy, Debug, Default)]
pub struct SmoothWeightedRoundRobin;

impl Policy for SmoothWeightedRoundRobin {
    fn name(&self) -> &'static str {
        "smooth_weighted_round_robin"
    }

    fn build(&self, candidates: &[Candidate], _rng: &mut SmallRng) -> Box<dyn Picker> {
        let weights: Vec<f64> = candidates.iter().map(Candidate::weight).collect();
        let total = weights.iter().sum();
        Box::new(SwrrPicker { current: Mutex::new(vec![0.0; weights.len()]), weights, total })
    }
}

#[derive(Debug)]
struct SwrrPicker {
    weights: Vec<f64>,
    total: f64,
    current: Mutex<Vec<f64>>,
}

impl Picker for SwrrPicker {
    fn pick(&self, _cx: &mut PickContext<'_>) -> usize {
        // A poisoned lock only means another pick panicked mid-update; the scores are still
        // usable numbers, so keep balancing.
        let mut current = self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut best = 0;
        for (score, weight) in current.iter_mut().zip(&self.weights) {
            *score += weight;
        }
        for i in 1..current.len() {
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= self.total;
        best
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use rand::SeedableRng;
    use std::time::Duration;

    #[test]
    fn nginx_sequence_for_5_1_1() {
        let candidates = candidates(&[5.0, 1.0, 1.0]);
        let mut rng = SmallRng::seed_from_u64(1);
        let picker = SmoothWeightedRoundRobin.build(&candidates, &mut rng);
        let sequence: Vec<usize> =
            (0..14).map(|_| picker.pick(&mut PickContext::new(&candidates, &mut rng, Duration::ZERO))).collect();
        assert_eq!(sequence, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn exact_shares_over_a_period() {
        let weights = [3.0, 2.0, 7.0, 1.0];
        let counts = histogram(&SmoothWeightedRoundRobin, &candidates(&weights), 13 * 1000);
        assert_eq!(counts, vec![3000, 2000, 7000, 1000]);
    }
}
