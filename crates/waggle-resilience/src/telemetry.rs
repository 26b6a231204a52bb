//! What the layers report: counters and a latency histogram through the `metrics` facade
//! (with the `metrics` feature), state changes through `tracing`. Without the feature every
//! function here compiles to nothing.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `waggle_requests_total` | counter | `outcome` (success, retryable_failure, non_retryable_failure, timeout) |
//! | `waggle_request_duration_seconds` | histogram | — |
//! | `waggle_retries_total` | counter | — |
//! | `waggle_retry_budget_exhausted_total` | counter | — |
//! | `waggle_hedges_total` | counter | — |
//! | `waggle_breaker_rejections_total` | counter | `breaker` |
//! | `waggle_breaker_transitions_total` | counter | `breaker`, `state` |
//! | `waggle_shed_total` | counter | `limiter` (bulkhead, adaptive) |

#[cfg(feature = "metrics")]
use crate::Outcome;

/// A finished call as the timeout layer saw it.
#[cfg(feature = "metrics")]
pub(crate) fn request(outcome: Outcome, duration: std::time::Duration) {
    let outcome = match outcome {
        Outcome::Success => "success",
        Outcome::RetryableFailure => "retryable_failure",
        Outcome::NonRetryableFailure => "non_retryable_failure",
        Outcome::Timeout => "timeout",
    };
    metrics::counter!("waggle_requests_total", "outcome" => outcome).increment(1);
    metrics::histogram!("waggle_request_duration_seconds").record(duration.as_secs_f64());
}

#[cfg(feature = "metrics")]
pub(crate) fn retry() {
    metrics::counter!("waggle_retries_total").increment(1);
}

#[cfg(feature = "metrics")]
pub(crate) fn budget_exhausted() {
    metrics::counter!("waggle_retry_budget_exhausted_total").increment(1);
}

#[cfg(feature = "metrics")]
pub(crate) fn hedge() {
    metrics::counter!("waggle_hedges_total").increment(1);
}

#[cfg(feature = "metrics")]
pub(crate) fn breaker_rejected(breaker: &str) {
    metrics::counter!("waggle_breaker_rejections_total", "breaker" => breaker.to_owned()).increment(1);
}

#[cfg(feature = "metrics")]
pub(crate) fn breaker_transition(breaker: &str, state: impl std::fmt::Debug) {
    let labels = [("breaker", breaker.to_owned()), ("state", format!("{state:?}"))];
    metrics::counter!("waggle_breaker_transitions_total", &labels).increment(1);
}

#[cfg(feature = "metrics")]
pub(crate) fn shed(limiter: &'static str) {
    metrics::counter!("waggle_shed_total", "limiter" => limiter).increment(1);
}

#[cfg(not(feature = "metrics"))]
mod off {
    //! The same functions, doing nothing.
    #![allow(clippy::missing_const_for_fn)]
    use crate::Outcome;

    pub(crate) fn request(_outcome: Outcome, _duration: std::time::Duration) {}
    pub(crate) fn retry() {}
    pub(crate) fn budget_exhausted() {}
    pub(crate) fn hedge() {}
    pub(crate) fn breaker_rejected(_breaker: &str) {}
    pub(crate) fn breaker_transition(_breaker: &str, _state: impl std::fmt::Debug) {}
    pub(crate) fn shed(_limiter: &'static str) {}
}

#[cfg(not(feature = "metrics"))]
pub(crate) use off::*;
