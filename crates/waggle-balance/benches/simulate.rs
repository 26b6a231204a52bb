//! Prints p50 / p99 latency per policy when one of ten endpoints is 10× slower (virtual time;
//! see `sim.rs`). Run with `cargo bench -p waggle-balance --bench simulate`.

mod sim;

use waggle_balance::policy::{LeastRequest, PeakEwma, Policy, Random, RoundRobin};

fn main() {
    let policies: [(&str, &dyn Policy); 5] = [
        ("round robin", &RoundRobin),
        ("random", &Random),
        ("P2C (tower-style, unweighted)", &LeastRequest::new().unweighted()),
        ("least request (weighted P2C)", &LeastRequest::new()),
        ("peak EWMA P2C", &PeakEwma::new()),
    ];
    println!(
        "{} endpoints, one 10x slower, {} req/s, 200,000 requests, 3 seeds (median of p99s)",
        sim::ENDPOINTS,
        sim::RATE_PER_SEC
    );
    println!("| policy | p50 | p99 | slow endpoint's share |");
    println!("|---|---|---|---|");
    for (name, policy) in policies {
        let mut outcomes: Vec<sim::Outcome> = (1..=3).map(|seed| sim::simulate(policy, 200_000, seed)).collect();
        outcomes.sort_by_key(|o| o.p99);
        let o = outcomes[1];
        println!("| {name} | {:.2} ms | {:.2} ms | {:.1} % |", ms(o.p50), ms(o.p99), o.slow_share * 100.0);
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
