//! Prints latency and traffic shares per policy for two scenarios in virtual time (see
//! `sim.rs`): one of ten endpoints 10× slower, and weights 99 / 0.5 / 0.5 that match
//! capacity. Run with `cargo bench -p waggle-balance --bench simulate`.

mod sim;

use sim::{Outcome, Scenario};
use waggle_balance::policy::{LeastRequest, PeakEwma, Policy, Random, RoundRobin, WeightedRandom};

const REQUESTS: usize = 200_000;

fn main() {
    let slow: [(&str, &dyn Policy); 5] = [
        ("round robin", &RoundRobin),
        ("random", &Random),
        ("P2C, unweighted (tower's rule)", &LeastRequest::new().unweighted()),
        ("least request (weighted P2C)", &LeastRequest::new()),
        ("peak EWMA P2C", &PeakEwma::new()),
    ];
    println!("## One of ten endpoints 10x slower (1 ms vs 10 ms), 800 req/s, {REQUESTS} requests, median of 3 seeds");
    println!();
    println!("| policy | p50 | p99 | slow endpoint's share |");
    println!("|---|---|---|---|");
    for (name, policy) in slow {
        let o = median_run(&Scenario::one_slow(), policy);
        println!("| {name} | {:.2} ms | {:.2} ms | {:.1} % |", ms(o.p50), ms(o.p99), o.shares[0] * 100.0);
    }

    let weighted: [(&str, &dyn Policy); 4] = [
        ("P2C, unweighted (tower's rule)", &LeastRequest::new().unweighted()),
        ("weighted random", &WeightedRandom),
        ("least request (weighted P2C)", &LeastRequest::new()),
        ("peak EWMA P2C (weighted)", &PeakEwma::new()),
    ];
    println!();
    println!("## Weights 99 / 0.5 / 0.5 matching capacity (0.1 ms vs 20 ms), 5,000 req/s, {REQUESTS} requests");
    println!();
    println!("| policy | traffic shares | p50 | p99 |");
    println!("|---|---|---|---|");
    for (name, policy) in weighted {
        let o = median_run(&Scenario::weighted_capacity(), policy);
        let shares: Vec<String> = o.shares.iter().map(|s| format!("{:.1} %", s * 100.0)).collect();
        println!("| {name} | {} | {:.2} ms | {:.2} ms |", shares.join(" / "), ms(o.p50), ms(o.p99));
    }
}

/// The run with the median p99 of three seeds.
fn median_run(scenario: &Scenario, policy: &dyn Policy) -> Outcome {
    let mut outcomes: Vec<Outcome> = (1..=3).map(|seed| sim::simulate(scenario, policy, REQUESTS, seed)).collect();
    outcomes.sort_by_key(|o| o.p99);
    outcomes.swap_remove(1)
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
