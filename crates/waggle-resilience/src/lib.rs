//! Fault tolerance for tower services, usable with or without the Waggle registry.
//!
//! Every layer judges responses with one [`Classify`] implementation, so retries, hedges, the
//! circuit breaker and endpoint ejection (in `waggle-balance`) agree on what a failure is and
//! never fight each other.
//!
//! | module | what |
//! |---|---|
//! | [`classify`] | `Success / RetryableFailure / NonRetryableFailure / Timeout` for HTTP, gRPC and errors; idempotency |
//! | [`deadline`] | per-call timeouts and deadlines carried in the request and propagated (`grpc-timeout`, `x-waggle-timeout-ms`) |
//! | [`retry`] | exponential back-off with full jitter, attempt limits and a Finagle-style [`RetryBudget`] |
//! | [`hedge`] | a backup request after the observed p95, within the same budget; the loser is cancelled |
//! | [`breaker`] | a per-service circuit breaker: count or time windows, failure and slow-call rates, half-open probes |
//! | [`limit`] | a bulkhead (max in flight, shed the rest) and an AIMD adaptive concurrency limit |
//! | [`cluster`] | Dubbo's cluster strategies over a `waggle_balance::Balance`: failover, failfast, failsafe, failback, forking, broadcast |
//! | [`replay`] | cloning requests for another attempt, buffering HTTP bodies up to a cap |
//!
//! With the `metrics` feature every layer counts what it does through the `metrics` facade
//! (`waggle_retries_total`, `waggle_breaker_transitions_total`, …); state changes are always
//! logged through `tracing`.
//!
//! Architecture invariant: no registry or gRPC-library types. Time is tokio's (so tests run on
//! paused time) and every random draw comes from a seedable generator.

#![warn(missing_docs)]

pub mod breaker;
pub mod classify;
pub mod cluster;
pub mod deadline;
mod error;
pub mod hedge;
pub mod limit;
pub mod replay;
pub mod retry;
mod telemetry;

pub use classify::{Classify, Idempotency, IdempotencyPolicy, Outcome};
pub use deadline::Deadline;
pub use retry::RetryBudget;

/// The boxed future every layer here returns.
pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

/// Draws a fresh seed from a shared counter (SplitMix64), so clones of a layer get distinct,
/// reproducible random streams.
pub(crate) fn seed(counter: &std::sync::atomic::AtomicU64) -> u64 {
    let mut x = counter.fetch_add(0x9e37_79b9_7f4a_7c15, std::sync::atomic::Ordering::Relaxed);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
