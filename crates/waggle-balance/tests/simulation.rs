//! The latency simulation as a test: load-aware policies must steer around a slow endpoint.
//! Virtual time and fixed seeds, so the numbers are exact and the test is deterministic.

#[path = "../benches/sim.rs"]
mod sim;

use waggle_balance::policy::{LeastRequest, PeakEwma, RoundRobin};

#[test]
fn peak_ewma_cuts_p99_at_least_five_fold_against_round_robin() {
    let round_robin = sim::simulate(&RoundRobin, 50_000, 1);
    let peak_ewma = sim::simulate(&PeakEwma::new(), 50_000, 1);
    let least_request = sim::simulate(&LeastRequest::new(), 50_000, 1);
    assert!((round_robin.slow_share - 0.1).abs() < 0.001, "round robin is blind: {round_robin:?}");
    assert!(peak_ewma.p99 * 5 <= round_robin.p99, "round robin {round_robin:?}, peak EWMA {peak_ewma:?}");
    assert!(least_request.p99 < round_robin.p99, "least request {least_request:?}");
    assert!(peak_ewma.slow_share < 0.05, "{peak_ewma:?}");
    assert!(peak_ewma.p50 <= round_robin.p50, "avoiding the slow endpoint costs the median nothing");
}
