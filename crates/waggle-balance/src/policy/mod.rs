//! Pick algorithms, each behind the [`Policy`] trait.
//!
//! A [`Policy`] is configuration; [`Policy::build`] turns it into a [`Picker`] for one set of
//! candidates (precomputing alias tables, rings or Maglev tables), and the picker answers
//! "which candidate?" for every request. Pickers are pure functions of the candidates, their
//! live load, the RNG and the time in the [`PickContext`]; nothing reads a clock or a global
//! RNG, so a seeded test or a benchmark reproduces every pick.
//!
//! | policy | weights | load-aware | pick cost | use when |
//! |---|---|---|---|---|
//! | [`RoundRobin`] | ignored | no | O(1) | identical endpoints, uniform requests |
//! | [`Random`] | ignored | no | O(1) | many clients, no coordination needed |
//! | [`WeightedRandom`] | yes (alias method) | no | O(1) | capacities differ, requests uniform |
//! | [`SmoothWeightedRoundRobin`] | yes (nginx) | no | O(n) | small sets that need an exact weighted sequence |
//! | [`LeastRequest`] | yes (weighted P2C) | in-flight requests | O(d) | the default: unequal request costs |
//! | [`PeakEwma`] | yes | latency × in-flight | O(d) | endpoints with different or varying latency |
//! | [`RingHash`] | yes (virtual nodes) | no | O(log n) | affinity (caches) with weights and ~1/n remapping |
//! | [`Maglev`] | yes | no | O(1) | affinity at high request rates, even spread |

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;

use crate::stats::EndpointStats;

mod maglev;
mod p2c;
mod random;
mod ring_hash;
mod round_robin;
mod sampler;
mod swrr;

pub use maglev::Maglev;
pub use p2c::{LeastRequest, PeakEwma};
pub use random::{Random, WeightedRandom};
pub use ring_hash::RingHash;
pub use round_robin::RoundRobin;
pub use swrr::SmoothWeightedRoundRobin;

/// A load-balancing algorithm: configuration that builds a [`Picker`] for a set of candidates.
pub trait Policy: Debug + Send + Sync + 'static {
    /// A short stable name (`"least_request"`), used in pick records and metrics.
    fn name(&self) -> &'static str;

    /// Whether the policy maps request keys to endpoints consistently. Such policies keep the
    /// endpoints' configured weights during slow start, because ramping weights would remap
    /// keys and defeat the affinity they exist for.
    fn is_consistent_hash(&self) -> bool {
        false
    }

    /// The decay window of the latency estimate this policy reads, if it reads one;
    /// [`Balance`](crate::Balance) folds response times in with it.
    fn load_decay(&self) -> Option<Duration> {
        None
    }

    /// Precomputes a picker for `candidates` (never empty). `rng` seeds any per-picker state,
    /// such as a round robin's starting point.
    fn build(&self, candidates: &[Candidate], rng: &mut SmallRng) -> Box<dyn Picker>;
}

/// A shared policy is a policy, so one configured policy (an `Arc<dyn Policy>`) can build
/// several balancers.
impl<P: Policy + ?Sized> Policy for Arc<P> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn is_consistent_hash(&self) -> bool {
        (**self).is_consistent_hash()
    }

    fn load_decay(&self) -> Option<Duration> {
        (**self).load_decay()
    }

    fn build(&self, candidates: &[Candidate], rng: &mut SmallRng) -> Box<dyn Picker> {
        (**self).build(candidates, rng)
    }
}

/// Chooses one candidate per request.
pub trait Picker: Debug + Send + Sync {
    /// Returns the index of the chosen candidate in `cx.candidates()`, which is the slice the
    /// picker was built from.
    fn pick(&self, cx: &mut PickContext<'_>) -> usize;
}

/// One endpoint as a picker sees it.
#[derive(Clone, Debug)]
pub struct Candidate {
    weight: f64,
    hash_id: u64,
    stats: Arc<EndpointStats>,
}

impl Candidate {
    /// A candidate with `weight` (> 0; slow start makes it fractional), a stable `hash_id`
    /// (its position on hash rings) and its live `stats`.
    pub fn new(weight: f64, hash_id: u64, stats: Arc<EndpointStats>) -> Self {
        Candidate { weight: if weight > 0.0 { weight } else { f64::MIN_POSITIVE }, hash_id, stats }
    }

    /// The effective weight.
    pub fn weight(&self) -> f64 {
        self.weight
    }

    /// The stable identity hashed onto rings and Maglev tables.
    pub fn hash_id(&self) -> u64 {
        self.hash_id
    }

    /// The live load counters.
    pub fn stats(&self) -> &EndpointStats {
        &self.stats
    }
}

/// Everything a pick may depend on: the candidates, a seeded RNG, the time and the request's
/// hash key. When recording is on, pickers note each candidate they compared.
pub struct PickContext<'a> {
    candidates: &'a [Candidate],
    rng: &'a mut SmallRng,
    now: Duration,
    request_hash: Option<u64>,
    compared: Option<&'a mut Vec<(usize, f64)>>,
}

impl<'a> PickContext<'a> {
    /// A context over `candidates` at time `now` (any fixed origin; only differences matter).
    pub fn new(candidates: &'a [Candidate], rng: &'a mut SmallRng, now: Duration) -> Self {
        PickContext { candidates, rng, now, request_hash: None, compared: None }
    }

    /// Sets the request's hash key (see [`RequestHash`](crate::RequestHash)).
    pub fn with_request_hash(mut self, hash: Option<u64>) -> Self {
        self.request_hash = hash;
        self
    }

    /// Records `(candidate index, load)` for every candidate the picker compares.
    pub fn with_record(mut self, compared: &'a mut Vec<(usize, f64)>) -> Self {
        self.compared = Some(compared);
        self
    }

    /// The candidates.
    pub fn candidates(&self) -> &'a [Candidate] {
        self.candidates
    }

    /// The time of the pick. [`Balance`](crate::Balance) reads the clock only for policies
    /// that declare a [`Policy::load_decay`]; others see zero.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// The request's hash key, if the balancer has a [`RequestHash`](crate::RequestHash) and
    /// the request has a key.
    pub fn request_hash(&self) -> Option<u64> {
        self.request_hash
    }

    /// A uniform index below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        crate::rng::below(self.rng, n)
    }

    /// A uniform float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        crate::rng::unit(self.rng)
    }

    pub(crate) fn rng(&mut self) -> &mut SmallRng {
        self.rng
    }

    /// Notes that candidate `idx` was compared with load `load` (a no-op unless recording).
    pub fn note(&mut self, idx: usize, load: f64) {
        if let Some(compared) = self.compared.as_deref_mut() {
            compared.push((idx, load));
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for the policies' unit tests.
    use super::*;
    use rand::SeedableRng;

    pub(crate) fn candidates(weights: &[f64]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Candidate::new(*w, crate::stable_hash(&i), Arc::new(EndpointStats::new())))
            .collect()
    }

    /// Picks `n` times with a fixed seed and counts picks per candidate.
    pub(crate) fn histogram(policy: &dyn Policy, candidates: &[Candidate], n: usize) -> Vec<usize> {
        let mut rng = SmallRng::seed_from_u64(7);
        let picker = policy.build(candidates, &mut rng);
        let mut counts = vec![0; candidates.len()];
        for _ in 0..n {
            let mut cx = PickContext::new(candidates, &mut rng, Duration::ZERO);
            counts[picker.pick(&mut cx)] += 1;
        }
        counts
    }

    /// Pearson's chi-square statistic of `counts` against shares proportional to `weights`.
    pub(crate) fn chi_square(counts: &[usize], weights: &[f64]) -> f64 {
        let total: usize = counts.iter().sum();
        let weight_sum: f64 = weights.iter().sum();
        counts
            .iter()
            .zip(weights)
            .map(|(c, w)| {
                let expected = total as f64 * w / weight_sum;
                (*c as f64 - expected).powi(2) / expected
            })
            .sum()
    }
}
