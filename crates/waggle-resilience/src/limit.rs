//! Concurrency limits: a fixed bulkhead, and an AIMD limit that adapts to what the service
//! can take. Both shed excess load at once with [`Overloaded`] rather than queue it.
//!
//! The adaptive limit grows by one for every limit's worth of successes (additive increase)
//! and shrinks by 10 % on every timeout (multiplicative decrease). Placed in
//! front of each endpoint, it can publish its limit to the endpoint's
//! [`waggle_balance::EndpointStats`], so least-request balancing compares utilisation
//! (in flight / limit) rather than raw requests in flight.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{BoxError, Layer, Service};
use waggle_balance::EndpointStats;

use crate::BoxFuture;
use crate::classify::{Classify, Outcome};

/// The call was shed: too many calls in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overloaded {
    /// The limit at the time.
    pub limit: u32,
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "overloaded: {} calls already in flight", self.limit)
    }
}

impl std::error::Error for Overloaded {}

/// At most `max` calls in flight; the rest fail at once with [`Overloaded`]. Clones share
/// the limit.
#[derive(Clone, Debug)]
pub struct Bulkhead<S> {
    inner: S,
    permits: Arc<Semaphore>,
    max: u32,
}

impl<S> Bulkhead<S> {
    /// Wraps `inner` with room for `max` (at least 1) calls in flight.
    pub fn new(inner: S, max: u32) -> Self {
        let max = max.max(1);
        Bulkhead { inner, permits: Arc::new(Semaphore::new(max as usize)), max }
    }
}

/// Builds [`Bulkhead`]s sharing one limit.
#[derive(Clone, Debug)]
pub struct BulkheadLayer {
    permits: Arc<Semaphore>,
    max: u32,
}

impl BulkheadLayer {
    /// Room for `max` (at least 1) calls in flight across every service built.
    pub fn new(max: u32) -> Self {
        let max = max.max(1);
        BulkheadLayer { permits: Arc::new(Semaphore::new(max as usize)), max }
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = Bulkhead<S>;

    fn layer(&self, inner: S) -> Bulkhead<S> {
        Bulkhead { inner, permits: self.permits.clone(), max: self.max }
    }
}

impl<S, Req> Service<Req> for Bulkhead<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            crate::telemetry::shed("bulkhead");
            return Box::pin(std::future::ready(Err(Overloaded { limit: self.max }.into())));
        };
        let call = self.inner.call(request);
        Box::pin(async move {
            let result = call.await.map_err(Into::into);
            drop::<OwnedSemaphorePermit>(permit);
            result
        })
    }
}

/// AIMD settings.
#[derive(Clone, Copy, Debug)]
pub struct AimdConfig {
    initial: f64,
    min: f64,
    max: f64,
    decrease: f64,
    dropped_as_timeout_after: Option<Duration>,
}

impl Default for AimdConfig {
    /// Start at 20, stay within 1–1,000, shrink by 10 % on a timeout.
    fn default() -> Self {
        AimdConfig { initial: 20.0, min: 1.0, max: 1_000.0, decrease: 0.9, dropped_as_timeout_after: None }
    }
}

impl AimdConfig {
    /// Sets the starting, lowest and highest limits (each at least 1).
    pub fn limits(mut self, initial: u32, min: u32, max: u32) -> Self {
        self.min = f64::from(min.max(1));
        self.max = f64::from(max.max(min).max(1));
        self.initial = f64::from(initial).clamp(self.min, self.max);
        self
    }

    /// Counts a call dropped unfinished after running at least `elapsed` as a timeout — for a
    /// limiter below a layer that enforces a timeout by dropping the call (the balancer's
    /// call timeout). Calls dropped sooner (a hedge's loser) only free their place.
    pub fn dropped_as_timeout_after(mut self, elapsed: Duration) -> Self {
        self.dropped_as_timeout_after = Some(elapsed);
        self
    }

    /// Multiplies the limit by `factor` (in `[0.5, 0.99]`) on a timeout.
    pub fn decrease(mut self, factor: f64) -> Self {
        self.decrease = if factor.is_finite() { factor.clamp(0.5, 0.99) } else { 0.9 };
        self
    }
}

#[derive(Debug)]
struct AimdState {
    limit: f64,
    in_flight: u32,
}

struct AimdShared<Res> {
    state: Mutex<AimdState>,
    config: AimdConfig,
    classify: Arc<dyn Classify<Res>>,
    publish: Option<Arc<EndpointStats>>,
}

impl<Res> AimdShared<Res> {
    fn with<T>(&self, f: impl FnOnce(&mut AimdState) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut state)
    }

    fn settle(&self, outcome: Outcome) {
        let limit = self.with(|state| {
            state.in_flight = state.in_flight.saturating_sub(1);
            match outcome {
                Outcome::Success => state.limit = (state.limit + 1.0 / state.limit).min(self.config.max),
                Outcome::Timeout => state.limit = (state.limit * self.config.decrease).max(self.config.min),
                Outcome::RetryableFailure | Outcome::NonRetryableFailure => {}
            }
            state.limit
        });
        if let Some(stats) = &self.publish {
            stats.set_capacity(limit as u32);
        }
    }
}

/// A call counted in flight; a call dropped unfinished (a caller's timeout, a hedge's loser)
/// frees its place without moving the limit.
struct InFlight<Res> {
    shared: Arc<AimdShared<Res>>,
    started: tokio::time::Instant,
    settled: bool,
}

impl<Res> Drop for InFlight<Res> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let timed_out =
            self.shared.config.dropped_as_timeout_after.is_some_and(|after| self.started.elapsed() >= after);
        if timed_out {
            self.shared.settle(Outcome::Timeout);
        } else {
            self.shared.with(|state| state.in_flight = state.in_flight.saturating_sub(1));
        }
    }
}

/// An adaptive concurrency limit (see the [module docs](self)). Clones share the limit.
pub struct AdaptiveLimit<S, Res> {
    inner: S,
    shared: Arc<AimdShared<Res>>,
}

impl<S: Clone, Res> Clone for AdaptiveLimit<S, Res> {
    fn clone(&self) -> Self {
        AdaptiveLimit { inner: self.inner.clone(), shared: self.shared.clone() }
    }
}

impl<S, Res> AdaptiveLimit<S, Res> {
    /// Wraps `inner`; `classify` tells timeouts (which shrink the limit) from successes
    /// (which grow it). With `publish`, the limit is published to an endpoint's stats.
    pub fn new(
        inner: S,
        config: AimdConfig,
        classify: impl Classify<Res>,
        publish: Option<Arc<EndpointStats>>,
    ) -> Self {
        let state = Mutex::new(AimdState { limit: config.initial, in_flight: 0 });
        if let Some(stats) = &publish {
            stats.set_capacity(config.initial as u32);
        }
        let shared = Arc::new(AimdShared { state, config, classify: Arc::new(classify), publish });
        AdaptiveLimit { inner, shared }
    }

    /// The current limit.
    pub fn limit(&self) -> u32 {
        self.shared.with(|state| state.limit as u32)
    }
}

impl<S, Req, Res> Service<Req> for AdaptiveLimit<S, Res>
where
    S: Service<Req, Response = Res>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    Res: Send + 'static,
{
    type Response = Res;
    type Error = BoxError;
    type Future = BoxFuture<Result<Res, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let admitted = self.shared.with(|state| {
            if f64::from(state.in_flight) < state.limit.floor() {
                state.in_flight += 1;
                Ok(())
            } else {
                Err(Overloaded { limit: state.limit as u32 })
            }
        });
        if let Err(overloaded) = admitted {
            // A local shed says nothing about the endpoint (it never saw the call), so it does
            // not move the limit: only the endpoint's answers do.
            crate::telemetry::shed("adaptive");
            return Box::pin(std::future::ready(Err(overloaded.into())));
        }
        let call = self.inner.call(request);
        let mut slot = InFlight { shared: self.shared.clone(), started: tokio::time::Instant::now(), settled: false };
        Box::pin(async move {
            let result = call.await.map_err(Into::into);
            slot.settled = true;
            slot.shared.settle(slot.shared.classify.classify(result.as_ref()));
            result
        })
    }
}
