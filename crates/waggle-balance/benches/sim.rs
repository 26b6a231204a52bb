//! A discrete-event simulation of one client balancing over endpoints of unequal speed, in
//! virtual time: what latency each policy gives when endpoints differ in speed.
//!
//! Every endpoint is a single FIFO server with exponential service times; requests arrive as
//! a Poisson process. Each policy sees exactly what it would in production: requests in flight
//! and, for peak EWMA, the latency of every completed request. Shared by the `simulate` bench
//! and the crate's tests (deterministic: seeded, no clock).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use waggle_balance::EndpointStats;
use waggle_balance::policy::{Candidate, PickContext, Policy};

/// Latency percentiles and traffic shares of one simulated run.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub p50: Duration,
    pub p99: Duration,
    /// Share of requests each endpoint served.
    pub shares: Vec<f64>,
}

/// Endpoints (mean service time, weight) and the arrival rate.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub endpoints: Vec<(f64, f64)>,
    pub rate_per_sec: f64,
}

impl Scenario {
    /// Ten equal-weight endpoints with 1 ms mean service time, except endpoint 0 at 10 ms;
    /// 800 requests/s (the slow endpoint alone could take 100/s).
    pub fn one_slow() -> Self {
        let endpoints = (0..10).map(|i| (if i == 0 { 0.010 } else { 0.001 }, 1.0)).collect();
        Scenario { endpoints, rate_per_sec: 800.0 }
    }

    /// Weights 99 / 0.5 / 0.5 that match capacity: a big endpoint (0.1 ms) and two small ones
    /// (20 ms), 5,000 requests/s (half the big one's capacity; 50 times a small one's).
    pub fn weighted_capacity() -> Self {
        Scenario { endpoints: vec![(0.0001, 198.0), (0.020, 1.0), (0.020, 1.0)], rate_per_sec: 5_000.0 }
    }
}

const DECAY: Duration = Duration::from_secs(10);

fn exponential(rng: &mut SmallRng, mean: f64) -> f64 {
    let unit = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -mean * unit.ln()
}

/// Runs `requests` requests of `scenario` through `policy` and reports their latency.
pub fn simulate(scenario: &Scenario, policy: &dyn Policy, requests: usize, seed: u64) -> Outcome {
    let n = scenario.endpoints.len();
    let stats: Vec<Arc<EndpointStats>> = (0..n).map(|_| Arc::new(EndpointStats::new())).collect();
    let candidates: Vec<Candidate> = stats
        .iter()
        .zip(&scenario.endpoints)
        .enumerate()
        .map(|(i, (s, (_, weight)))| Candidate::new(*weight, waggle_balance::stable_hash(&i), s.clone()))
        .collect();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut work = SmallRng::seed_from_u64(seed ^ 0xabcdef);
    let picker = policy.build(&candidates, &mut rng);
    let nanos = |seconds: f64| (seconds * 1e9) as u64;

    let mut now = 0.0;
    let mut free_at = vec![0.0f64; n];
    // (completion time in ns, endpoint, latency in ns), earliest first.
    let mut completions: BinaryHeap<Reverse<(u64, usize, u64)>> = BinaryHeap::new();
    let mut latencies = Vec::with_capacity(requests);
    let mut served = vec![0usize; n];
    for _ in 0..requests {
        now += exponential(&mut work, 1.0 / scenario.rate_per_sec);
        while let Some(Reverse((done, idx, latency))) = completions.peek().copied() {
            if done > nanos(now) {
                break;
            }
            completions.pop();
            stats[idx].finish();
            stats[idx].observe_rtt(Duration::from_nanos(done), Duration::from_nanos(latency), DECAY);
        }
        let mut cx = PickContext::new(&candidates, &mut rng, Duration::from_nanos(nanos(now)));
        let idx = picker.pick(&mut cx);
        let start = now.max(free_at[idx]);
        let done = start + exponential(&mut work, scenario.endpoints[idx].0);
        free_at[idx] = done;
        stats[idx].start();
        completions.push(Reverse((nanos(done), idx, nanos(done - now))));
        latencies.push(nanos(done - now));
        served[idx] += 1;
    }
    latencies.sort_unstable();
    let at = |q: f64| Duration::from_nanos(latencies[((latencies.len() - 1) as f64 * q) as usize]);
    let shares = served.iter().map(|s| *s as f64 / requests as f64).collect();
    Outcome { p50: at(0.5), p99: at(0.99), shares }
}
