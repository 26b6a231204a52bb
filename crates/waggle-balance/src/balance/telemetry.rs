//! What the balancer reports through the `metrics` facade (with the `metrics` feature; without
//! it these functions compile to nothing). State changes are also logged through `tracing`.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `waggle_balance_ejections_total` | counter | `policy` |
//! | `waggle_balance_readmissions_total` | counter | `policy` |
//! | `waggle_balance_endpoints` | gauge | `policy`, `state` (connecting, ready, ejected, probation) |

use super::state::EndpointState;

#[cfg(feature = "metrics")]
pub(crate) fn ejected(policy: &'static str) {
    metrics::counter!("waggle_balance_ejections_total", "policy" => policy).increment(1);
}

#[cfg(feature = "metrics")]
pub(crate) fn readmitted(policy: &'static str) {
    metrics::counter!("waggle_balance_readmissions_total", "policy" => policy).increment(1);
}

#[cfg(feature = "metrics")]
pub(crate) fn endpoints(policy: &'static str, states: impl Iterator<Item = EndpointState>) {
    let mut counts = [0u32; 4];
    for state in states {
        counts[state as usize] += 1;
    }
    let names = ["connecting", "ready", "ejected", "probation"];
    for (name, count) in names.into_iter().zip(counts) {
        metrics::gauge!("waggle_balance_endpoints", "policy" => policy, "state" => name).set(f64::from(count));
    }
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn ejected(_policy: &'static str) {}

#[cfg(not(feature = "metrics"))]
pub(crate) fn readmitted(_policy: &'static str) {}

#[cfg(not(feature = "metrics"))]
pub(crate) fn endpoints(_policy: &'static str, _states: impl Iterator<Item = EndpointState>) {}
