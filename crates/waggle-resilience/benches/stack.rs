//! Overhead of the SDK's default fault-tolerance stack (timeout + retry + breaker + balance
//! with outlier ejection) over a no-op endpoint, at 10 to 1,000 endpoints.
//!
//! `cargo bench -p waggle-resilience --bench stack`

#![allow(clippy::unwrap_used)]

use std::future::{Ready, ready};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tower::{BoxError, Layer, Service, ServiceExt};
use waggle_balance::balance::{Attempts, Ejection};
use waggle_balance::policy::LeastRequest;
use waggle_balance::{Balance, Builder, Endpoint};
use waggle_resilience::Outcome;
use waggle_resilience::breaker::{BreakerConfig, BreakerLayer};
use waggle_resilience::classify::{Classify, GrpcStatus, HttpIdempotency};
use waggle_resilience::deadline::{Deadline, Propagation, TimeoutLayer};
use waggle_resilience::replay::{CloneHttp, ReplayBody};
use waggle_resilience::retry::{RetryLayer, RetryPolicy, track_http_attempts};

type Req = http::Request<ReplayBody>;
type Res = http::Response<()>;

#[derive(Clone)]
struct Noop;

impl Service<Req> for Noop {
    type Response = Res;
    type Error = BoxError;
    type Future = Ready<Result<Res, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Req) -> Self::Future {
        ready(Ok(http::Response::new(())))
    }
}

fn classify(result: Result<&Res, &BoxError>) -> Outcome {
    GrpcStatus.classify(result)
}

fn balance<S>(n: usize, endpoint: S) -> Balance<usize, S, Req>
where
    S: Service<Req, Response = Res, Error = BoxError> + Clone + Send + Sync + 'static,
{
    builder().build_static((0..n).map(move |i| (i, Endpoint::new(endpoint.clone()))))
}

fn builder() -> Builder<usize, Req> {
    Builder::new(LeastRequest::new())
        .seed(1)
        .ejection(Ejection::outlier_detection())
        .failure_classifier(|r: Result<&Res, &BoxError>| classify(r).is_failure())
        .track_attempts(Attempts::of)
}

/// The fault-tolerance layers above a balancer.
fn layers<S>(balance: S) -> impl Service<Req, Response = Res, Error = BoxError>
where
    S: Service<Req, Response = Res> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let breaker = BreakerLayer::new("bench", BreakerConfig::default(), classify).layer(balance);
    let retry =
        RetryPolicy::new(classify, HttpIdempotency, CloneHttp).deadline(Deadline::of).prepare(track_http_attempts);
    tower::ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(10), Propagation::Grpc))
        .layer(RetryLayer::new(retry))
        .service(breaker)
}

fn request() -> Req {
    http::Request::post("/greeter.v1.Greeter/SayHello").body(ReplayBody::from_bytes("hello")).unwrap()
}

/// Runs `iters` requests one after another inside one runtime entry.
async fn run<S>(service: &mut S, iters: u64) -> Duration
where
    S: Service<Req, Response = Res>,
    S::Error: std::fmt::Debug,
{
    let started = Instant::now();
    for _ in 0..iters {
        std::hint::black_box(service.ready().await.unwrap().call(request()).await.unwrap());
    }
    started.elapsed()
}

async fn ready_balance<S>(balance: Balance<usize, S, Req>, n: usize) -> Balance<usize, S, Req> {
    while balance.len() < n {
        tokio::task::yield_now().await;
    }
    balance
}

fn stack(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _entered = runtime.enter();
    let mut group = c.benchmark_group("stack");
    let mut noop = Noop;
    group.bench_function("noop", |b| b.iter_custom(|iters| runtime.block_on(run(&mut noop, iters))));
    for n in [10, 1_000] {
        let mut bare = runtime.block_on(ready_balance(balance(n, Noop), n));
        group.bench_with_input(BenchmarkId::new("balance_only", n), &n, |b, _| {
            b.iter_custom(|iters| runtime.block_on(run(&mut bare, iters)))
        });
        let mut full = layers(runtime.block_on(ready_balance(balance(n, Noop), n)));
        group.bench_with_input(BenchmarkId::new("timeout_retry_breaker_balance", n), &n, |b, _| {
            b.iter_custom(|iters| runtime.block_on(run(&mut full, iters)))
        });
        // What the SDK's service client runs: the same, plus the balancer's timeout per
        // attempt.
        let timed = builder().call_timeout(Duration::from_millis(3_333));
        let timed = timed.build_static((0..n).map(|i| (i, Endpoint::new(Noop))));
        let mut sdk = layers(runtime.block_on(ready_balance(timed, n)));
        group.bench_with_input(BenchmarkId::new("with_attempt_timeout", n), &n, |b, _| {
            b.iter_custom(|iters| runtime.block_on(run(&mut sdk, iters)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    targets = stack
}
criterion_main!(benches);
