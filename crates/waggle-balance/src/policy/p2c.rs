//! Power-of-d-choices policies: least request (weighted P2C) and peak EWMA.
//!
//! Both sample `d` candidates with probability proportional to weight and take the one with
//! the lowest `load / weight`. Sampling by weight is what makes the split follow the weights
//! when endpoints are idle (tower samples uniformly, so 99 / 0.5 / 0.5 weights give about
//! 66 / 17 / 17); dividing by weight keeps it when they are busy, because the balancer then
//! drives every endpoint towards the same load per unit of weight. Ties keep the earlier
//! sample, so the idle case is exactly weighted random.
//!
//! Weighted samples are drawn with replacement, so a dominant endpoint is often compared with
//! itself (at 99 / 0.5 / 0.5, in about 98 % of picks) and then taken regardless of load.
//! Drawing a distinct second sample would pit it against a small endpoint on nearly every
//! pick and hand the small ones far more than their weight: tower's failure again. Weight
//! wins over load by design; use equal weights where load-awareness matters most.

use std::time::Duration;

use rand::rngs::SmallRng;

use super::sampler::Sampler;
use super::{Candidate, PickContext, Picker, Policy};

/// Least request with the power of `d` choices; with the default `d = 2` this is weighted
/// P2C. The load of a candidate is its requests in flight (as a share of its concurrency
/// limit, when its own limiter publishes one with
/// [`EndpointStats::set_capacity`](crate::EndpointStats::set_capacity)) raised to `active_request_bias`
/// (Envoy's knob: 1.0 by default; 0 ignores load and degenerates to weighted random; above 1
/// avoids busy endpoints more aggressively).
#[derive(Clone, Copy, Debug)]
pub struct LeastRequest {
    choices: usize,
    active_request_bias: f64,
    weighting: Weighting,
}

/// Whether a P2C policy honours weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Weighting {
    Weighted,
    /// tower's behaviour, kept only to compare against.
    Ignored,
}

impl Default for LeastRequest {
    fn default() -> Self {
        LeastRequest { choices: 2, active_request_bias: 1.0, weighting: Weighting::Weighted }
    }
}

impl LeastRequest {
    /// Weighted P2C over requests in flight: `d = 2`, bias 1.0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Samples `choices` candidates per pick (at least 1; 2 is the classic P2C, more choices
    /// approach "least loaded of all" at a higher cost).
    pub fn choices(mut self, choices: usize) -> Self {
        self.choices = choices.max(1);
        self
    }

    /// Sets the exponent on requests in flight (negative or NaN values are treated as 0).
    pub fn active_request_bias(mut self, bias: f64) -> Self {
        self.active_request_bias = if bias.is_finite() && bias > 0.0 { bias } else { 0.0 };
        self
    }

    /// Samples uniformly and compares raw in-flight counts, ignoring weights — what tower's
    /// P2C does. Only useful as a baseline in benchmarks and tests.
    pub fn unweighted(mut self) -> Self {
        self.weighting = Weighting::Ignored;
        self
    }
}

impl Policy for LeastRequest {
    fn name(&self) -> &'static str {
        "least_request"
    }

    fn build(&self, candidates: &[Candidate], _rng: &mut SmallRng) -> Box<dyn Picker> {
        let load = match self.active_request_bias {
            // 0^0 would be 1 and let weight alone decide every comparison; no load is what a
            // bias of 0 means, and ties keep the first sample: weighted random.
            0.0 => Load::Constant,
            1.0 => Load::InFlight,
            bias => Load::InFlightPow(bias),
        };
        Box::new(P2cPicker::new(candidates, self.choices, self.weighting, load))
    }
}

/// Peak-EWMA P2C (Finagle, linkerd): the load of a candidate is its decayed peak latency
/// times (requests in flight + 1), so a slow endpoint is avoided as soon as one slow
/// response arrives and retried as its estimate decays. An endpoint without a sample costs
/// nothing while idle (it gets probed) and a large penalty while it has requests in flight.
#[derive(Clone, Copy, Debug)]
pub struct PeakEwma {
    decay: Duration,
    choices: usize,
}

impl Default for PeakEwma {
    fn default() -> Self {
        PeakEwma { decay: Duration::from_secs(10), choices: 2 }
    }
}

impl PeakEwma {
    /// Decay window 10 s, `d = 2`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the decay window: how long a latency peak takes to fade to 1/e (at least 1 ms).
    pub fn decay(mut self, decay: Duration) -> Self {
        self.decay = decay.max(Duration::from_millis(1));
        self
    }

    /// Samples `choices` candidates per pick (at least 1).
    pub fn choices(mut self, choices: usize) -> Self {
        self.choices = choices.max(1);
        self
    }

    /// The decay window, which [`Balance`](crate::Balance) also uses to fold in latencies.
    pub fn decay_window(&self) -> Duration {
        self.decay
    }
}

impl Policy for PeakEwma {
    fn name(&self) -> &'static str {
        "peak_ewma"
    }

    fn load_decay(&self) -> Option<Duration> {
        Some(self.decay)
    }

    fn build(&self, candidates: &[Candidate], _rng: &mut SmallRng) -> Box<dyn Picker> {
        Box::new(P2cPicker::new(candidates, self.choices, Weighting::Weighted, Load::PeakEwma(self.decay)))
    }
}

#[derive(Clone, Copy, Debug)]
enum Load {
    Constant,
    InFlight,
    InFlightPow(f64),
    PeakEwma(Duration),
}

#[derive(Debug)]
struct P2cPicker {
    sampler: Sampler,
    /// `1 / weight` per candidate, or all 1 when weights are ignored.
    inverse_weights: Box<[f64]>,
    choices: usize,
    load: Load,
}

impl P2cPicker {
    fn new(candidates: &[Candidate], choices: usize, weighting: Weighting, load: Load) -> Self {
        let (sampler, inverse_weights) = match weighting {
            Weighting::Weighted => (Sampler::new(candidates), candidates.iter().map(|c| 1.0 / c.weight()).collect()),
            Weighting::Ignored => (Sampler::Uniform(candidates.len()), vec![1.0; candidates.len()].into()),
        };
        P2cPicker { sampler, inverse_weights, choices, load }
    }

    #[inline]
    fn score(&self, cx: &PickContext<'_>, idx: usize) -> f64 {
        let stats = cx.candidates()[idx].stats();
        let load = match self.load {
            Load::Constant => 0.0,
            Load::InFlight => stats.utilisation(),
            Load::InFlightPow(bias) => stats.utilisation().powf(bias),
            Load::PeakEwma(decay) => stats.peak_ewma_load(cx.now(), decay),
        };
        load * self.inverse_weights[idx]
    }

    /// Two distinct uniform indices, as tower draws them (only for uniform sampling).
    #[inline]
    fn distinct_pair(cx: &mut PickContext<'_>, n: usize) -> (usize, usize) {
        let a = cx.below(n);
        let b = cx.below(n - 1);
        (a, if b >= a { b + 1 } else { b })
    }
}

impl Picker for P2cPicker {
    fn pick(&self, cx: &mut PickContext<'_>) -> usize {
        let n = cx.candidates().len();
        if n == 1 {
            return 0;
        }
        if self.choices == 2 && self.sampler.is_uniform() {
            let (a, b) = Self::distinct_pair(cx, n);
            let (score_a, score_b) = (self.score(cx, a), self.score(cx, b));
            cx.note(a, score_a);
            cx.note(b, score_b);
            return if score_b < score_a { b } else { a };
        }
        let mut best = self.sampler.sample(cx.rng());
        let mut best_score = self.score(cx, best);
        cx.note(best, best_score);
        for _ in 1..self.choices {
            let other = self.sampler.sample(cx.rng());
            let other_score = self.score(cx, other);
            cx.note(other, other_score);
            if other_score < best_score {
                (best, best_score) = (other, other_score);
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn idle_weighted_p2c_follows_weights_exactly() {
        // 2 degrees of freedom, 99th percentile.
        let weights = [99.0, 0.5, 0.5];
        let counts = histogram(&LeastRequest::new(), &candidates(&weights), 200_000);
        assert!(chi_square(&counts, &weights) < 9.21, "{counts:?}");
        let unweighted = histogram(&LeastRequest::new().unweighted(), &candidates(&weights), 30_000);
        assert!(unweighted.iter().all(|c| *c > 9_000), "tower-style P2C ignores weights: {unweighted:?}");
    }

    #[test]
    fn idle_peak_ewma_and_d_choices_follow_weights() {
        // Idle endpoints without latency samples cost nothing, so the first sample wins and
        // the split is the sampling distribution: proportional to weight. 3 degrees of
        // freedom, 99th percentile 11.34.
        let weights = [1.0, 2.0, 3.0, 14.0];
        let counts = histogram(&PeakEwma::new(), &candidates(&weights), 100_000);
        assert!(chi_square(&counts, &weights) < 11.34, "{counts:?}");
        let counts = histogram(&LeastRequest::new().choices(3), &candidates(&weights), 100_000);
        assert!(chi_square(&counts, &weights) < 11.34, "{counts:?}");
    }

    #[test]
    fn least_request_prefers_the_less_loaded() {
        let candidates = candidates(&[1.0, 1.0]);
        for _ in 0..5 {
            candidates[0].stats().start();
        }
        let counts = histogram(&LeastRequest::new(), &candidates, 1000);
        assert_eq!(counts, vec![0, 1000], "with two candidates P2C always compares both");
    }

    #[test]
    fn load_is_compared_per_unit_of_weight() {
        // Endpoint 0 has 4× the weight and 3 requests in flight; endpoint 1 has 1. Per unit of
        // weight 0 is less loaded (0.75 < 1), so every comparison of the two chooses 0.
        let candidates = candidates(&[4.0, 1.0]);
        for _ in 0..3 {
            candidates[0].stats().start();
        }
        candidates[1].stats().start();
        let mut rng = SmallRng::seed_from_u64(3);
        let picker = LeastRequest::new().build(&candidates, &mut rng);
        let mut compared = Vec::new();
        for _ in 0..200 {
            compared.clear();
            let mut cx = PickContext::new(&candidates, &mut rng, Duration::ZERO).with_record(&mut compared);
            let chosen = picker.pick(&mut cx);
            if compared.iter().any(|(i, _)| *i == 0) && compared.iter().any(|(i, _)| *i == 1) {
                assert_eq!(chosen, 0);
            }
        }
    }

    #[test]
    fn zero_bias_is_weighted_random() {
        let weights = [99.0, 0.5, 0.5];
        let candidates = candidates(&weights);
        candidates[0].stats().start();
        let counts = histogram(&LeastRequest::new().active_request_bias(0.0), &candidates, 200_000);
        assert!(chi_square(&counts, &weights) < 9.21, "{counts:?}");
    }

    #[test]
    fn d_choices_sample_that_many() {
        let candidates = candidates(&[1.0; 8]);
        let mut rng = SmallRng::seed_from_u64(3);
        let picker = LeastRequest::new().choices(4).build(&candidates, &mut rng);
        let mut compared = Vec::new();
        let mut cx = PickContext::new(&candidates, &mut rng, Duration::ZERO).with_record(&mut compared);
        picker.pick(&mut cx);
        assert_eq!(compared.len(), 4);
    }

    #[test]
    fn peak_ewma_avoids_the_slow_endpoint() {
        let decay = Duration::from_secs(10);
        let candidates = candidates(&[1.0, 1.0, 1.0]);
        let now = Duration::from_secs(100);
        candidates[0].stats().observe_rtt(now, Duration::from_millis(100), decay);
        candidates[1].stats().observe_rtt(now, Duration::from_millis(10), decay);
        candidates[2].stats().observe_rtt(now, Duration::from_millis(10), decay);
        let mut rng = SmallRng::seed_from_u64(5);
        let picker = PeakEwma::new().build(&candidates, &mut rng);
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[picker.pick(&mut PickContext::new(&candidates, &mut rng, now))] += 1;
        }
        // Distinct pairs always contain a fast endpoint, so the slow one never wins.
        assert_eq!(counts[0], 0, "{counts:?}");
        // Long after its peak the slow endpoint's estimate has decayed and it is tried again.
        let much_later = now + decay * 10;
        candidates[1].stats().observe_rtt(much_later, Duration::from_millis(10), decay);
        candidates[2].stats().observe_rtt(much_later, Duration::from_millis(10), decay);
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[picker.pick(&mut PickContext::new(&candidates, &mut rng, much_later))] += 1;
        }
        assert!(counts[0] > 500, "{counts:?}");
    }
}
