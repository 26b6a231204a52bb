//! Dubbo's cluster strategies over a [`waggle_balance::Balance`]: what a call does when an
//! endpoint fails, and whether it goes to one endpoint, several or all.
//!
//! | strategy | does | use for |
//! |---|---|---|
//! | [`Strategy::Failover`] | on a retryable failure, retries on *another* endpoint, up to N times | idempotent reads |
//! | [`Strategy::Failfast`] | one attempt, the failure goes straight back | writes that must not repeat |
//! | [`Strategy::Failsafe`] | on failure, answers with a fallback | optional data (recommendations, audit logs) |
//! | [`Strategy::Failback`] | on failure, answers with a fallback and retries in the background later | notifications |
//! | [`Strategy::Forking`] | sends to N endpoints at once, the first success wins | latency-critical reads |
//! | [`Strategy::Broadcast`] | sends to every endpoint, fails if any fails | cache invalidation, config pushes |
//!
//! Failures are whatever the [`Classify`] says; a copy of the request for the extra
//! attempts comes from a [`CloneRequest`] (a request that cannot be copied gets one attempt).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tower::{BoxError, Service, ServiceExt};
use waggle_balance::Balance;
use waggle_balance::balance::{EndpointKey, EndpointService, NoEndpoints};

use crate::BoxFuture;
use crate::classify::Classify;
use crate::replay::CloneRequest;

/// A fallback answer for failsafe and failback.
pub type Fallback<Res> = Arc<dyn Fn() -> Res + Send + Sync>;

/// What a [`Cluster`] does with a call.
#[non_exhaustive]
pub enum Strategy<Res> {
    /// Retry a retryable failure on another endpoint, up to `retries` times (Dubbo: 2).
    Failover {
        /// Extra attempts.
        retries: u32,
    },
    /// One attempt.
    Failfast,
    /// One attempt; a failure is replaced by the fallback.
    Failsafe(Fallback<Res>),
    /// One attempt; a failure is replaced by the fallback and the request is retried in the
    /// background every `interval`, up to `retries` times. At most `queue` requests wait;
    /// beyond that new failures are not queued (and a warning is logged).
    Failback {
        /// The answer while the retry is pending.
        fallback: Fallback<Res>,
        /// Background attempts per request.
        retries: u32,
        /// Time between background attempts.
        interval: Duration,
        /// The most requests waiting for a background retry.
        queue: usize,
    },
    /// Send to `n` endpoints at once (fewer if fewer exist); the first success wins.
    Forking {
        /// How many endpoints.
        n: usize,
    },
    /// Send to every endpoint; any failure is the answer, else the last success.
    Broadcast,
}

impl<Res> Clone for Strategy<Res> {
    fn clone(&self) -> Self {
        match self {
            Strategy::Failover { retries } => Strategy::Failover { retries: *retries },
            Strategy::Failfast => Strategy::Failfast,
            Strategy::Failsafe(fallback) => Strategy::Failsafe(fallback.clone()),
            Strategy::Failback { fallback, retries, interval, queue } => {
                Strategy::Failback { fallback: fallback.clone(), retries: *retries, interval: *interval, queue: *queue }
            }
            Strategy::Forking { n } => Strategy::Forking { n: *n },
            Strategy::Broadcast => Strategy::Broadcast,
        }
    }
}

/// A balancer with a cluster strategy (see the [module docs](self)). Cheap to clone.
pub struct Cluster<K, S, Req, Res> {
    balance: Balance<K, S, Req>,
    strategy: Strategy<Res>,
    classify: Arc<dyn Classify<Res>>,
    copy: Arc<dyn CloneRequest<Req>>,
    failback: Option<mpsc::Sender<Req>>,
}

impl<K, S, Req, Res> Clone for Cluster<K, S, Req, Res> {
    fn clone(&self) -> Self {
        Cluster {
            balance: self.balance.clone(),
            strategy: self.strategy.clone(),
            classify: self.classify.clone(),
            copy: self.copy.clone(),
            failback: self.failback.clone(),
        }
    }
}

impl<K, S, Req> Cluster<K, S, Req, S::Response>
where
    K: EndpointKey,
    S: EndpointService<Req>,
    S::Future: Send,
    S::Response: Send,
    Req: Send + 'static,
{
    /// Runs `strategy` over `balance`. A failback strategy spawns its retry task on the
    /// current tokio runtime.
    pub fn new(
        balance: Balance<K, S, Req>,
        strategy: Strategy<S::Response>,
        classify: impl Classify<S::Response>,
        copy: impl CloneRequest<Req>,
    ) -> Self {
        let classify: Arc<dyn Classify<S::Response>> = Arc::new(classify);
        let copy: Arc<dyn CloneRequest<Req>> = Arc::new(copy);
        let failback = match &strategy {
            Strategy::Failback { retries, interval, queue, .. } => {
                let (tx, rx) = mpsc::channel(*queue.max(&1));
                let worker = failback_worker(balance.clone(), rx, *retries, *interval, classify.clone(), copy.clone());
                tokio::spawn(worker);
                Some(tx)
            }
            _ => None,
        };
        Cluster { balance, strategy, classify, copy, failback }
    }
}

/// Retries failed failback requests in the background until they succeed or run out.
async fn failback_worker<K, S, Req>(
    mut balance: Balance<K, S, Req>,
    mut queue: mpsc::Receiver<Req>,
    retries: u32,
    interval: Duration,
    classify: Arc<dyn Classify<S::Response>>,
    copy: Arc<dyn CloneRequest<Req>>,
) where
    K: EndpointKey,
    S: EndpointService<Req>,
    Req: Send + 'static,
{
    while let Some(request) = queue.recv().await {
        // One request at a time keeps the background load bounded.
        for attempt in 1..=retries {
            tokio::time::sleep(interval).await;
            let Some(current) = copy.clone_request(&request) else { break };
            let Ok(ready) = balance.ready().await else { return };
            let result = ready.call(current).await;
            if !classify.classify(result.as_ref()).is_failure() {
                tracing::debug!(attempt, "failback retry succeeded");
                break;
            }
            tracing::debug!(attempt, "failback retry failed");
        }
    }
}

impl<K, S, Req> Service<Req> for Cluster<K, S, Req, S::Response>
where
    K: EndpointKey,
    S: EndpointService<Req>,
    S::Future: Send,
    S::Response: Send,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.balance.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let mut balance = self.balance.clone();
        std::mem::swap(&mut balance, &mut self.balance);
        let (classify, copy, strategy) = (self.classify.clone(), self.copy.clone(), self.strategy.clone());
        let failback = self.failback.clone();
        Box::pin(async move {
            match strategy {
                Strategy::Failfast => balance.call(request).await,
                Strategy::Failover { retries } => failover(balance, request, retries, &*classify, &*copy).await,
                Strategy::Failsafe(fallback) => {
                    let result = balance.call(request).await;
                    if classify.classify(result.as_ref()).is_failure() { Ok(fallback()) } else { result }
                }
                Strategy::Failback { fallback, .. } => {
                    let spare = copy.clone_request(&request);
                    let result = balance.call(request).await;
                    if !classify.classify(result.as_ref()).is_failure() {
                        return result;
                    }
                    if let (Some(spare), Some(queue)) = (spare, failback)
                        && queue.try_send(spare).is_err()
                    {
                        tracing::warn!("failback queue full; dropping a request");
                    }
                    Ok(fallback())
                }
                Strategy::Forking { n } => {
                    fan_out(balance, n.max(1), request, &*copy, &*classify, FanOut::FirstSuccess).await
                }
                Strategy::Broadcast => {
                    let n = balance.len();
                    fan_out(balance, n, request, &*copy, &*classify, FanOut::All).await
                }
            }
        })
    }
}

async fn failover<K, S, Req>(
    mut balance: Balance<K, S, Req>,
    request: Req,
    retries: u32,
    classify: &dyn Classify<S::Response>,
    copy: &dyn CloneRequest<Req>,
) -> Result<S::Response, BoxError>
where
    K: EndpointKey,
    S: EndpointService<Req>,
    Req: Send + 'static,
{
    let spare = if retries > 0 { copy.clone_request(&request) } else { None };
    let mut tried = Vec::new();
    let first = balance.call_excluding(request, &tried);
    tried.extend(first.endpoint().cloned());
    let mut result = first.await;
    let Some(spare) = spare else { return result };
    for attempt in 1..=retries {
        if !classify.classify(result.as_ref()).is_retryable() {
            break;
        }
        let Some(request) = copy.clone_request(&spare) else { break };
        if balance.ready().await.is_err() {
            break;
        }
        let next = balance.call_excluding(request, &tried);
        tracing::debug!(attempt, "failing over to another endpoint");
        tried.extend(next.endpoint().cloned());
        result = next.await;
    }
    result
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FanOut {
    FirstSuccess,
    All,
}

/// Sends copies of `request` to up to `n` distinct endpoints, each picked by the balancer
/// (so its policy, load accounting and ejection apply) while excluding those already chosen.
async fn fan_out<K, S, Req>(
    mut balance: Balance<K, S, Req>,
    n: usize,
    request: Req,
    copy: &dyn CloneRequest<Req>,
    classify: &dyn Classify<S::Response>,
    mode: FanOut,
) -> Result<S::Response, BoxError>
where
    K: EndpointKey,
    S: EndpointService<Req>,
    Req: Send + 'static,
{
    let mut calls = FuturesUnordered::new();
    let mut chosen: Vec<K> = Vec::with_capacity(n);
    let mut original = Some(request);
    for i in 0..n {
        // The last send gets the original; the others get copies.
        let request = if i + 1 == n { original.take() } else { original.as_ref().and_then(|r| copy.clone_request(r)) };
        let Some(request) = request else { break };
        if balance.ready().await.is_err() {
            break;
        }
        let call = balance.call_excluding(request, &chosen);
        match call.endpoint() {
            // Fewer distinct endpoints than asked for: stop at the first repeat.
            Some(key) if !chosen.contains(key) => chosen.push(key.clone()),
            _ => break,
        }
        calls.push(call);
    }
    if calls.is_empty() {
        return Err(NoEndpoints.into());
    }
    let (mut last, mut first_failure) = (None, None);
    while let Some(result) = calls.next().await {
        let failed = classify.classify(result.as_ref()).is_failure();
        match (mode, failed) {
            (FanOut::FirstSuccess, false) => return result,
            // Broadcast delivers to everyone before answering: keep the first failure, let
            // the other sends finish.
            (FanOut::All, true) if first_failure.is_none() => first_failure = Some(result),
            _ => last = Some(result),
        }
    }
    first_failure.or(last).unwrap_or_else(|| Err(NoEndpoints.into()))
}
