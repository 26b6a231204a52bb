//! Retries: exponential back-off with full jitter, a cap on attempts, a shared
//! [`RetryBudget`], and respect for the request's deadline.
//!
//! A failed attempt is retried only when all of these hold: the [`Classify`] outcome is
//! retryable (a retryable failure or a timeout), the request is idempotent, a copy of it can
//! be made, attempts remain, the budget grants an extra request, and the back-off still fits
//! before the deadline. Otherwise the last result (a 503 response, say) is returned as is.

mod backoff;
mod budget;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use tower::{BoxError, Layer, Service, ServiceExt};

pub use backoff::Backoff;
pub use budget::RetryBudget;

use crate::BoxFuture;
use crate::classify::{Classify, IdempotencyPolicy};
use crate::deadline::Deadline;
use crate::replay::{CloneRequest, Repeat};

/// Puts a fresh `Attempts` log into an HTTP request, for [`RetryPolicy::prepare`].
pub fn track_http_attempts<B>(request: &mut http::Request<B>) {
    request.extensions_mut().insert(waggle_balance::balance::Attempts::new());
}

/// How a [`Retry`] behaves. Cheap to clone.
pub struct RetryPolicy<Req, Res> {
    max_attempts: u32,
    backoff: Backoff,
    budget: RetryBudget,
    repeat: Repeat<Req, Res>,
    deadline_of: fn(&Req) -> Option<Deadline>,
    prepare: fn(&mut Req),
    refresh: fn(&mut Req),
    seeds: Arc<AtomicU64>,
}

impl<Req, Res> Clone for RetryPolicy<Req, Res> {
    fn clone(&self) -> Self {
        RetryPolicy {
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            budget: self.budget.clone(),
            repeat: self.repeat.clone(),
            deadline_of: self.deadline_of,
            prepare: self.prepare,
            refresh: self.refresh,
            seeds: self.seeds.clone(),
        }
    }
}

impl<Req, Res> std::fmt::Debug for RetryPolicy<Req, Res> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl<Req, Res> RetryPolicy<Req, Res> {
    /// Retries what `classify` calls retryable, for requests `idempotency` allows, copying
    /// them with `copy`. Defaults: 3 attempts in all, [`Backoff::default`] (25 ms doubling to
    /// 1 s), a fresh [`RetryBudget::default`] (20 % + 10/s over 10 s), no deadline.
    pub fn new(
        classify: impl Classify<Res>,
        idempotency: impl IdempotencyPolicy<Req>,
        copy: impl CloneRequest<Req>,
    ) -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::default(),
            budget: RetryBudget::default(),
            repeat: Repeat::new(classify, idempotency, copy),
            deadline_of: |_| None,
            prepare: |_| {},
            refresh: |_| {},
            seeds: Arc::new(AtomicU64::new(0x5eed)),
        }
    }

    /// At most `attempts` attempts in all (at least 1; 1 disables retries).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The back-off between attempts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The budget, usually shared with a [`Hedge`](crate::hedge::Hedge).
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Where requests keep their deadline ([`Deadline::of`] for HTTP requests).
    pub fn deadline(mut self, deadline_of: fn(&Req) -> Option<Deadline>) -> Self {
        self.deadline_of = deadline_of;
        self
    }

    /// Runs on every request that may be repeated, before its first attempt, so its copies
    /// share what it adds —
    /// typically a `waggle_balance::balance::Attempts` log, so that each retry goes to an
    /// endpoint not tried yet (see [`track_http_attempts`]).
    pub fn prepare(mut self, prepare: fn(&mut Req)) -> Self {
        self.prepare = prepare;
        self
    }

    /// Runs on every copy just before it is sent as a retry — typically
    /// [`refresh_header`](crate::deadline::refresh_header), so the server hears the time that
    /// is actually left.
    pub fn refresh(mut self, refresh: fn(&mut Req)) -> Self {
        self.refresh = refresh;
        self
    }

    /// Seeds the jitter.
    pub fn seed(self, seed: u64) -> Self {
        self.seeds.store(seed, Relaxed);
        self
    }

    /// The budget.
    pub fn get_budget(&self) -> &RetryBudget {
        &self.budget
    }
}

/// Retries failed calls (see the [module docs](self)).
#[derive(Debug)]
pub struct Retry<S, Req, Res> {
    inner: S,
    // One shared allocation: a call clones one `Arc`, not each of the policy's parts.
    policy: Arc<RetryPolicy<Req, Res>>,
}

impl<S: Clone, Req, Res> Clone for Retry<S, Req, Res> {
    fn clone(&self) -> Self {
        Retry { inner: self.inner.clone(), policy: self.policy.clone() }
    }
}

impl<S, Req, Res> Retry<S, Req, Res> {
    /// Wraps `inner`.
    pub fn new(inner: S, policy: RetryPolicy<Req, Res>) -> Self {
        Retry { inner, policy: Arc::new(policy) }
    }
}

/// Builds [`Retry`]s sharing one policy (and so one budget).
#[derive(Debug)]
pub struct RetryLayer<Req, Res> {
    policy: Arc<RetryPolicy<Req, Res>>,
}

impl<Req, Res> Clone for RetryLayer<Req, Res> {
    fn clone(&self) -> Self {
        RetryLayer { policy: self.policy.clone() }
    }
}

impl<Req, Res> RetryLayer<Req, Res> {
    /// A layer retrying with `policy`.
    pub fn new(policy: RetryPolicy<Req, Res>) -> Self {
        RetryLayer { policy: Arc::new(policy) }
    }
}

impl<S, Req, Res> Layer<S> for RetryLayer<Req, Res> {
    type Service = Retry<S, Req, Res>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry { inner, policy: self.policy.clone() }
    }
}

impl<S, Req, Res> Service<Req> for Retry<S, Req, Res>
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

    fn call(&mut self, mut request: Req) -> Self::Future {
        // Only a request that may be sent again needs what `prepare` adds (an attempts log).
        let repeatable = self.policy.max_attempts > 1 && self.policy.repeat.idempotency.is_idempotent(&request);
        if repeatable {
            (self.policy.prepare)(&mut request);
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let policy = self.policy.clone();
        Box::pin(async move {
            policy.budget.deposit();
            let deadline = (policy.deadline_of)(&request);
            // Keep a pristine copy for later attempts, only if a retry could ever happen.
            let original = if repeatable { policy.repeat.copy.clone_request(&request) } else { None };
            let mut result = inner.call(request).await.map_err(Into::into);
            let Some(original) = original else { return result };
            let mut rng = SmallRng::seed_from_u64(crate::seed(&policy.seeds));
            for attempt in 1..policy.max_attempts {
                let outcome = policy.repeat.classify.classify(result.as_ref());
                if !outcome.is_retryable() {
                    break;
                }
                let delay = policy.backoff.delay(attempt, &mut rng);
                if deadline.is_some_and(|d| d.cannot_fit(delay)) {
                    tracing::debug!(attempt, ?delay, "no retry: the deadline is too close");
                    break;
                }
                let Some(copy) = policy.repeat.copy.clone_request(&original) else { break };
                if !policy.budget.has_room() {
                    tracing::debug!(attempt, "no retry: the retry budget is spent");
                    crate::telemetry::budget_exhausted();
                    break;
                }
                tracing::debug!(attempt, ?outcome, ?delay, "retrying");
                tokio::time::sleep(delay).await;
                // Taken only now: a call cancelled during the back-off costs the budget nothing.
                if !policy.budget.try_withdraw() {
                    crate::telemetry::budget_exhausted();
                    break;
                }
                crate::telemetry::retry();
                let mut copy = copy;
                (policy.refresh)(&mut copy);
                let ready = inner.ready().await.map_err(Into::into);
                result = match ready {
                    Ok(ready) => ready.call(copy).await.map_err(Into::into),
                    // A service that failed readiness is done for (tower's contract).
                    Err(error) => return Err(error),
                };
            }
            result
        })
    }
}
