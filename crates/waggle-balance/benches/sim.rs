//! A discrete-event simulation of one client balancing over endpoints of unequal speed, in
//! virtual time: what latency each policy gives when one endpoint is 10× slower.
//!
//! Ten endpoints, each a single FIFO server with exponential service times (mean 1 ms; the
//! slow one 10 ms), Poisson arrivals at 800 requests/s (the slow endpoint alone could take
//! 100/s). Each policy sees exactly what it would in production: requests in flight and, for
//! peak EWMA, the latency of every completed request. Shared by the `simulate` bench and the
//! crate's tests (deterministic: seeded, no clock).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use waggle_balance::EndpointStats;
use waggle_balance::policy::{Candidate, PickContext, Policy};

/// Latency percentiles of one simulated run.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    pub p50: Duration,
    pub p99: Duration,
    /// Share of requests the slow endpoint served.
    pub slow_share: f64,
}

pub const ENDPOINTS: usize = 10;
pub const RATE_PER_SEC: f64 = 800.0;
const FAST_MEAN: f64 = 0.001;
const SLOW_MEAN: f64 = 0.010;
const DECAY: Duration = Duration::from_secs(10);

fn exponential(rng: &mut SmallRng, mean: f64) -> f64 {
    let unit = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -mean * unit.ln()
}

/// Runs `requests` requests through `policy` and reports their latency.
pub fn simulate(policy: &dyn Policy, requests: usize, seed: u64) -> Outcome {
    let stats: Vec<Arc<EndpointStats>> = (0..ENDPOINTS).map(|_| Arc::new(EndpointStats::new())).collect();
    let candidates: Vec<Candidate> = stats
        .iter()
        .enumerate()
        .map(|(i, s)| Candidate::new(1.0, waggle_balance::stable_hash(&i), s.clone()))
        .collect();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut work = SmallRng::seed_from_u64(seed ^ 0xabcdef);
    let picker = policy.build(&candidates, &mut rng);
    let nanos = |seconds: f64| (seconds * 1e9) as u64;

    let mut now = 0.0;
    let mut free_at = [0.0f64; ENDPOINTS];
    // (completion time in ns, endpoint, latency in ns), earliest first.
    let mut completions: BinaryHeap<Reverse<(u64, usize, u64)>> = BinaryHeap::new();
    let mut latencies = Vec::with_capacity(requests);
    let mut slow_served = 0;
    for _ in 0..requests {
        now += exponential(&mut work, 1.0 / RATE_PER_SEC);
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
        let mean = if idx == 0 { SLOW_MEAN } else { FAST_MEAN };
        let start = now.max(free_at[idx]);
        let done = start + exponential(&mut work, mean);
        free_at[idx] = done;
        stats[idx].start();
        completions.push(Reverse((nanos(done), idx, nanos(done - now))));
        latencies.push(nanos(done - now));
        slow_served += usize::from(idx == 0);
    }
    latencies.sort_unstable();
    let at = |q: f64| Duration::from_nanos(latencies[((latencies.len() - 1) as f64 * q) as usize]);
    Outcome { p50: at(0.5), p99: at(0.99), slow_share: slow_served as f64 / requests as f64 }
}
