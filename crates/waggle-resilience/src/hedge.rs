//! Hedging (Finagle's backup requests): when a call has taken longer than a high percentile
//! of recent latencies, send a copy and take whichever answer succeeds first; the loser is
//! dropped, which cancels it.
//!
//! Latency is tracked in a decaying histogram: log-spaced buckets (10 µs to ~10 min, 25 %
//! apart) counted over two rotating windows, so the percentile follows the last 10–20 s.
//! A backup is sent only for idempotent requests that can be copied, once the histogram has
//! enough samples, and only if the shared [`RetryBudget`] grants it, so hedging can never
//! more than slightly raise the load.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{Either, select};
use tokio::time::Instant;
use tower::{BoxError, Layer, Service, ServiceExt};

use crate::BoxFuture;
use crate::classify::{Classify, IdempotencyPolicy};
use crate::replay::{CloneRequest, Repeat};
use crate::retry::RetryBudget;

const BUCKETS: usize = 80;
const FIRST_BUCKET_NANOS: f64 = 10_000.0;
const GROWTH: f64 = 1.25;

/// Recent latencies, as log-spaced bucket counts over two rotating windows.
#[derive(Debug)]
pub struct LatencyHistogram {
    inner: Mutex<Windows>,
    window: Duration,
}

#[derive(Debug)]
struct Windows {
    current: [u32; BUCKETS],
    previous: [u32; BUCKETS],
    rotated_at: Instant,
}

impl LatencyHistogram {
    /// A histogram whose windows last `window` each (so it remembers one to two windows).
    pub fn new(window: Duration) -> Self {
        let windows = Windows { current: [0; BUCKETS], previous: [0; BUCKETS], rotated_at: Instant::now() };
        LatencyHistogram { inner: Mutex::new(windows), window: window.max(Duration::from_millis(1)) }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Windows) -> T) -> T {
        // Plain counters: still usable after a panic elsewhere.
        let mut windows = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(windows.rotated_at);
        if elapsed >= self.window {
            windows.previous = if elapsed >= self.window * 2 { [0; BUCKETS] } else { windows.current };
            windows.current = [0; BUCKETS];
            windows.rotated_at = now;
        }
        f(&mut windows)
    }

    /// Records one latency.
    pub fn record(&self, latency: Duration) {
        let nanos = latency.as_nanos() as f64;
        let bucket = if nanos <= FIRST_BUCKET_NANOS {
            0
        } else {
            ((nanos / FIRST_BUCKET_NANOS).ln() / GROWTH.ln()).ceil().min((BUCKETS - 1) as f64) as usize
        };
        self.with(|w| w.current[bucket] = w.current[bucket].saturating_add(1));
    }

    /// The `quantile` (in `[0, 1]`) of the remembered latencies — the upper edge of its bucket,
    /// so at most 25 % high — or `None` below `min_samples` samples.
    pub fn quantile(&self, quantile: f64, min_samples: u32) -> Option<Duration> {
        self.with(|w| {
            let count = |i: usize| u64::from(w.current[i]) + u64::from(w.previous[i]);
            let total: u64 = (0..BUCKETS).map(count).sum();
            if total < u64::from(min_samples.max(1)) {
                return None;
            }
            let rank = (quantile.clamp(0.0, 1.0) * total as f64).ceil().max(1.0) as u64;
            let mut seen = 0;
            let bucket = (0..BUCKETS).find(|i| {
                seen += count(*i);
                seen >= rank
            })?;
            Some(Duration::from_nanos((FIRST_BUCKET_NANOS * GROWTH.powi(bucket as i32)) as u64))
        })
    }
}

/// Whether a hedge layer deposits requests in its budget.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum HedgeBudget {
    /// Its own budget: it records every request and takes backups from it.
    Own(RetryBudget),
    /// A budget a [`Retry`](crate::retry::Retry) outside it already records requests in; backups
    /// come out of the same allowance as retries.
    SharedWithRetry(RetryBudget),
}

/// How a [`Hedge`] behaves. Cheap to clone; clones share the histogram.
pub struct HedgePolicy<Req, Res> {
    quantile: f64,
    min_samples: u32,
    min_delay: Duration,
    budget: HedgeBudget,
    histogram: Arc<LatencyHistogram>,
    repeat: Repeat<Req, Res>,
}

impl<Req, Res> Clone for HedgePolicy<Req, Res> {
    fn clone(&self) -> Self {
        HedgePolicy {
            quantile: self.quantile,
            min_samples: self.min_samples,
            min_delay: self.min_delay,
            budget: self.budget.clone(),
            histogram: self.histogram.clone(),
            repeat: self.repeat.clone(),
        }
    }
}

impl<Req, Res> std::fmt::Debug for HedgePolicy<Req, Res> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HedgePolicy")
            .field("quantile", &self.quantile)
            .field("min_samples", &self.min_samples)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl<Req, Res> HedgePolicy<Req, Res> {
    /// Hedges after the p95 latency, once 100 samples are in, never sooner than 1 ms, with
    /// `budget`; `classify` decides which answer counts as a success.
    pub fn new(
        budget: HedgeBudget,
        classify: impl Classify<Res>,
        idempotency: impl IdempotencyPolicy<Req>,
        copy: impl CloneRequest<Req>,
    ) -> Self {
        HedgePolicy {
            quantile: 0.95,
            min_samples: 100,
            min_delay: Duration::from_millis(1),
            budget,
            histogram: Arc::new(LatencyHistogram::new(Duration::from_secs(10))),
            repeat: Repeat::new(classify, idempotency, copy),
        }
    }

    /// Hedges after this latency quantile (in `[0.5, 1]`).
    pub fn quantile(mut self, quantile: f64) -> Self {
        self.quantile = if quantile.is_finite() { quantile.clamp(0.5, 1.0) } else { 0.95 };
        self
    }

    /// Hedges only once this many latencies were recorded.
    pub fn min_samples(mut self, samples: u32) -> Self {
        self.min_samples = samples;
        self
    }

    /// Never hedges sooner than this.
    pub fn min_delay(mut self, delay: Duration) -> Self {
        self.min_delay = delay;
        self
    }

    /// The latency histogram.
    pub fn histogram(&self) -> &LatencyHistogram {
        &self.histogram
    }
}

/// Sends a backup request for slow calls (see the [module docs](self)).
#[derive(Debug)]
pub struct Hedge<S, Req, Res> {
    inner: S,
    policy: HedgePolicy<Req, Res>,
}

impl<S: Clone, Req, Res> Clone for Hedge<S, Req, Res> {
    fn clone(&self) -> Self {
        Hedge { inner: self.inner.clone(), policy: self.policy.clone() }
    }
}

impl<S, Req, Res> Hedge<S, Req, Res> {
    /// Wraps `inner`.
    pub fn new(inner: S, policy: HedgePolicy<Req, Res>) -> Self {
        Hedge { inner, policy }
    }
}

/// Builds [`Hedge`]s sharing one policy.
#[derive(Debug)]
pub struct HedgeLayer<Req, Res> {
    policy: HedgePolicy<Req, Res>,
}

impl<Req, Res> Clone for HedgeLayer<Req, Res> {
    fn clone(&self) -> Self {
        HedgeLayer { policy: self.policy.clone() }
    }
}

impl<Req, Res> HedgeLayer<Req, Res> {
    /// A layer hedging with `policy`.
    pub fn new(policy: HedgePolicy<Req, Res>) -> Self {
        HedgeLayer { policy }
    }
}

impl<S, Req, Res> Layer<S> for HedgeLayer<Req, Res> {
    type Service = Hedge<S, Req, Res>;

    fn layer(&self, inner: S) -> Self::Service {
        Hedge::new(inner, self.policy.clone())
    }
}

impl<S, Req, Res> Service<Req> for Hedge<S, Req, Res>
where
    S: Service<Req, Response = Res> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    Req: Send + 'static,
    Res: Send + 'static,
{
    type Response = Res;
    type Error = BoxError;
    type Future = BoxFuture<Result<Res, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let backup_service = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, backup_service.clone());
        let policy = self.policy.clone();
        let budget = match &policy.budget {
            HedgeBudget::Own(budget) => {
                budget.deposit();
                budget.clone()
            }
            HedgeBudget::SharedWithRetry(budget) => budget.clone(),
        };
        let delay = policy
            .repeat
            .idempotency
            .is_idempotent(&request)
            .then(|| policy.histogram.quantile(policy.quantile, policy.min_samples))
            .flatten()
            .map(|delay| delay.max(policy.min_delay));
        let copy = delay.and_then(|_| policy.repeat.copy.clone_request(&request));
        let started = Instant::now();
        let primary = inner.call(request);
        Box::pin(async move {
            let primary = async move { primary.await.map_err(Into::into) };
            // Only the primary's own successful latencies are recorded: failures (an open
            // breaker answers in microseconds) and hedged results would drag the quantile down
            // and make every request hedge.
            let record = |result: &Result<Res, BoxError>| {
                if !policy.repeat.classify.classify(result.as_ref()).is_failure() {
                    policy.histogram.record(started.elapsed());
                }
            };
            let (Some(delay), Some(copy)) = (delay, copy) else {
                let result = primary.await;
                record(&result);
                return result;
            };
            let mut primary: BoxFuture<Result<Res, BoxError>> = Box::pin(primary);
            let timer = Box::pin(tokio::time::sleep(delay));
            let primary = match select(primary.as_mut(), timer).await {
                Either::Left((result, _)) => {
                    record(&result);
                    return result;
                }
                Either::Right(((), _)) => primary,
            };
            if !budget.try_withdraw() {
                crate::telemetry::budget_exhausted();
                let result = primary.await;
                record(&result);
                return result;
            }
            tracing::debug!(?delay, "sending a backup request");
            crate::telemetry::hedge();
            let mut backup_service = backup_service;
            let backup: BoxFuture<Result<Res, BoxError>> = Box::pin(async move {
                let ready = backup_service.ready().await.map_err(Into::into);
                match ready {
                    Ok(ready) => ready.call(copy).await.map_err(Into::into),
                    Err(error) => Err(error),
                }
            });
            // The first success wins; a failure waits for the other one (dropping the loser
            // cancels it).
            match select(primary, backup).await {
                Either::Left((result, other)) => {
                    record(&result);
                    if policy.repeat.classify.classify(result.as_ref()).is_failure() { other.await } else { result }
                }
                Either::Right((result, other)) => {
                    if policy.repeat.classify.classify(result.as_ref()).is_failure() {
                        other.await
                    } else {
                        result
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn quantiles_follow_recent_latency() {
        let histogram = LatencyHistogram::new(Duration::from_secs(10));
        assert_eq!(histogram.quantile(0.95, 10), None, "no samples yet");
        for ms in 1..=100 {
            histogram.record(Duration::from_millis(ms));
        }
        let p95 = histogram.quantile(0.95, 10).unwrap();
        assert!(p95 >= Duration::from_millis(95) && p95 <= Duration::from_millis(95 * 5 / 4), "{p95:?}");
        let p50 = histogram.quantile(0.5, 10).unwrap();
        assert!(p50 >= Duration::from_millis(50) && p50 <= Duration::from_millis(63), "{p50:?}");
        // Two windows later the old samples are gone.
        tokio::time::sleep(Duration::from_secs(21)).await;
        assert_eq!(histogram.quantile(0.95, 10), None);
    }
}
