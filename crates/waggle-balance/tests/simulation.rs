//! The latency simulations as tests: load-aware policies must steer around a slow endpoint,
//! and weighted P2C must keep traffic in proportion to weight. Virtual time and fixed seeds,
//! so the numbers are exact and the tests deterministic.

#[path = "../benches/sim.rs"]
mod sim;

use sim::Scenario;
use waggle_balance::policy::{LeastRequest, PeakEwma, RoundRobin};

#[test]
fn peak_ewma_cuts_p99_at_least_five_fold_against_round_robin() {
    let scenario = Scenario::one_slow();
    let round_robin = sim::simulate(&scenario, &RoundRobin, 50_000, 1);
    let peak_ewma = sim::simulate(&scenario, &PeakEwma::new(), 50_000, 1);
    let least_request = sim::simulate(&scenario, &LeastRequest::new(), 50_000, 1);
    assert!((round_robin.shares[0] - 0.1).abs() < 0.001, "round robin is blind: {round_robin:?}");
    assert!(peak_ewma.p99 * 5 <= round_robin.p99, "round robin {round_robin:?}, peak EWMA {peak_ewma:?}");
    assert!(least_request.p99 < round_robin.p99, "least request {least_request:?}");
    assert!(peak_ewma.shares[0] < 0.05, "{peak_ewma:?}");
    assert!(peak_ewma.p50 <= round_robin.p50, "avoiding the slow endpoint costs the median nothing");
}

#[test]
fn weighted_p2c_keeps_99_half_half_where_unweighted_p2c_overloads_the_small_endpoints() {
    let scenario = Scenario::weighted_capacity();
    let weighted = sim::simulate(&scenario, &LeastRequest::new(), 50_000, 1);
    let unweighted = sim::simulate(&scenario, &LeastRequest::new().unweighted(), 50_000, 1);
    assert!(weighted.shares[0] > 0.98, "{weighted:?}");
    assert!(weighted.shares[1] < 0.01 && weighted.shares[2] < 0.01, "{weighted:?}");
    assert!(unweighted.shares[1] > 0.02, "tower's rule sends the small endpoints more: {unweighted:?}");
    assert!(weighted.p99 * 5 <= unweighted.p99, "weighted {weighted:?}, unweighted {unweighted:?}");
}
