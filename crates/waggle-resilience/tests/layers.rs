//! Every layer through its public interface, on paused time with scripted services.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tokio::time::Instant;
use tower::{BoxError, Service, ServiceExt, service_fn};
use waggle_resilience::breaker::{BreakerConfig, BreakerLayer, BreakerOpen, BreakerState, Window};
use waggle_resilience::classify::{AllIdempotent, HttpIdempotency, HttpStatus};
use waggle_resilience::deadline::{Deadline, DeadlineExceeded, Propagation, TimeoutLayer};
use waggle_resilience::hedge::{Hedge, HedgeBudget, HedgePolicy};
use waggle_resilience::limit::{AdaptiveLimit, AimdConfig, Bulkhead, Overloaded};
use waggle_resilience::replay::{CloneAll, CloneHttp, ReplayBody};
use waggle_resilience::retry::{Backoff, Retry, RetryBudget, RetryPolicy};
use waggle_resilience::{Idempotency, Outcome};

type Req = Request<ReplayBody>;
type Res = Response<&'static str>;

/// A service answering call `n` (0-based) with `script(n)`: a delay and a status.
fn scripted(
    script: impl Fn(u32) -> (Duration, StatusCode) + Send + Sync + 'static,
) -> (impl Service<Req, Response = Res, Error = BoxError, Future: Send> + Clone + Send + 'static, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let script = Arc::new(script);
    let service = service_fn(move |_request: Req| {
        let n = counter.fetch_add(1, SeqCst);
        let (delay, status) = script(n);
        async move {
            tokio::time::sleep(delay).await;
            Ok::<_, BoxError>(Response::builder().status(status).body("answer").unwrap())
        }
    });
    (service, calls)
}

fn get() -> Req {
    Request::get("/").body(ReplayBody::empty()).unwrap()
}

fn retry_policy() -> RetryPolicy<Req, Res> {
    RetryPolicy::new(HttpStatus, HttpIdempotency, CloneHttp)
        .backoff(Backoff::new(Duration::from_millis(10), Duration::from_millis(100)))
        .deadline(Deadline::of)
        .seed(1)
}

#[tokio::test(start_paused = true)]
async fn retries_retryable_failures_of_idempotent_requests() {
    let (service, calls) =
        scripted(|n| (Duration::ZERO, if n < 2 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK }));
    let mut retry = Retry::new(service, retry_policy());
    let response = retry.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!((response.status(), calls.load(SeqCst)), (StatusCode::OK, 3));

    // Out of attempts: the last 503 comes back as it is.
    let (service, calls) = scripted(|_| (Duration::ZERO, StatusCode::SERVICE_UNAVAILABLE));
    let mut retry = Retry::new(service, retry_policy().max_attempts(4));
    let response = retry.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!((response.status(), calls.load(SeqCst)), (StatusCode::SERVICE_UNAVAILABLE, 4));
}

#[tokio::test(start_paused = true)]
async fn never_retries_what_is_not_idempotent_or_not_retryable() {
    let (service, calls) = scripted(|_| (Duration::ZERO, StatusCode::SERVICE_UNAVAILABLE));
    let mut retry = Retry::new(service, retry_policy());
    let post = Request::post("/").body(ReplayBody::empty()).unwrap();
    retry.ready().await.unwrap().call(post).await.unwrap();
    assert_eq!(calls.load(SeqCst), 1, "POST is not idempotent");
    let mut marked = Request::post("/").body(ReplayBody::empty()).unwrap();
    marked.extensions_mut().insert(Idempotency::Idempotent);
    retry.ready().await.unwrap().call(marked).await.unwrap();
    assert_eq!(calls.load(SeqCst), 4, "a marked POST is retried");

    let (service, calls) = scripted(|_| (Duration::ZERO, StatusCode::INTERNAL_SERVER_ERROR));
    let mut retry = Retry::new(service, retry_policy());
    retry.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(calls.load(SeqCst), 1, "500 is not retryable");
}

#[tokio::test(start_paused = true)]
async fn the_budget_caps_retries_across_requests() {
    // 20 % and no floor: 100 failing requests may add at most 20 retries.
    let (service, calls) = scripted(|_| (Duration::ZERO, StatusCode::SERVICE_UNAVAILABLE));
    let budget = RetryBudget::new(0.2, 0.0, Duration::from_secs(10));
    let mut retry = Retry::new(service, retry_policy().budget(budget.clone()));
    for _ in 0..100 {
        retry.ready().await.unwrap().call(get()).await.unwrap();
    }
    let total = calls.load(SeqCst);
    assert!((100..=120).contains(&total), "{total} calls");
    assert_eq!(budget.counts(), (100, u64::from(total - 100)));
}

#[tokio::test(start_paused = true)]
async fn retries_and_back_off_respect_the_deadline() {
    // Each attempt takes 40 ms; the deadline is 100 ms: after two attempts (80 ms) a third
    // cannot fit the back-off plus call, and the timeout ends the call at 100 ms at the latest.
    let (service, calls) = scripted(|_| (Duration::from_millis(40), StatusCode::SERVICE_UNAVAILABLE));
    let retry = Retry::new(service, retry_policy().max_attempts(10));
    let mut stack = tower::ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_millis(100), Propagation::Grpc))
        .service(retry);
    let started = Instant::now();
    let result = stack.ready().await.unwrap().call(get()).await;
    assert!(started.elapsed() <= Duration::from_millis(100));
    match result {
        Err(error) => assert!(error.is::<DeadlineExceeded>(), "{error}"),
        Ok(response) => assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE),
    }
    assert!(calls.load(SeqCst) <= 3, "{} calls", calls.load(SeqCst));
}

#[tokio::test(start_paused = true)]
async fn timeouts_propagate_the_deadline_and_fail_late_calls() {
    let seen = Arc::new(std::sync::Mutex::new(None));
    let sink = seen.clone();
    let slow = service_fn(move |request: Req| {
        *sink.lock().unwrap() = Some((request.headers().get("grpc-timeout").cloned(), Deadline::of(&request)));
        async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, BoxError>(Response::new("late"))
        }
    });
    let mut stack = tower::ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_millis(250), Propagation::Grpc))
        .service(slow);
    let error = stack.ready().await.unwrap().call(get()).await.unwrap_err();
    assert!(error.is::<DeadlineExceeded>());
    let (header, deadline) = seen.lock().unwrap().clone().unwrap();
    assert_eq!(header.unwrap(), "250m");
    assert!(deadline.is_some());
    // A caller's earlier deadline wins over the layer's timeout.
    let mut request = get();
    request.extensions_mut().insert(Deadline::after(Duration::from_millis(50)));
    let started = Instant::now();
    stack.ready().await.unwrap().call(request).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_millis(50));
    let headers = http::HeaderMap::from_iter([(
        http::HeaderName::from_static("x-waggle-timeout-ms"),
        http::HeaderValue::from_static("1500"),
    )]);
    assert_eq!(Deadline::from_headers(&headers).unwrap().remaining(), Duration::from_millis(1500));
}

fn hedge_policy(budget: HedgeBudget) -> HedgePolicy<Req, Res> {
    HedgePolicy::new(budget, HttpStatus, AllIdempotent, CloneHttp).min_samples(50)
}

#[tokio::test(start_paused = true)]
async fn hedges_after_the_p95() {
    // 100 calls of 10 ms teach the histogram; call 100 hangs for 10 s, its backup answers in
    // 10 ms.
    let (service, calls) = scripted(|n| (Duration::from_millis(if n == 100 { 10_000 } else { 10 }), StatusCode::OK));
    let mut hedge = Hedge::new(service, hedge_policy(HedgeBudget::Own(RetryBudget::default())));
    for _ in 0..100 {
        hedge.ready().await.unwrap().call(get()).await.unwrap();
    }
    assert_eq!(calls.load(SeqCst), 100, "fast calls are never hedged");
    let started = Instant::now();
    hedge.ready().await.unwrap().call(get()).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(calls.load(SeqCst), 102, "one backup");
    // The p95 bucket edge (≥ 10 ms, ≤ 12.5 ms) plus the backup's 10 ms.
    assert!(elapsed >= Duration::from_millis(20) && elapsed <= Duration::from_millis(23), "{elapsed:?}");
}

#[tokio::test(start_paused = true)]
async fn hedges_only_within_budget_and_only_idempotent_requests() {
    let (service, calls) = scripted(|n| (Duration::from_millis(if n >= 100 { 1_000 } else { 10 }), StatusCode::OK));
    let empty = RetryBudget::new(0.0, 0.0, Duration::from_secs(10));
    let mut hedge = Hedge::new(service, hedge_policy(HedgeBudget::Own(empty)));
    for _ in 0..101 {
        hedge.ready().await.unwrap().call(get()).await.unwrap();
    }
    assert_eq!(calls.load(SeqCst), 101, "no budget, no backup");

    let (service, calls) = scripted(|n| (Duration::from_millis(if n >= 100 { 1_000 } else { 10 }), StatusCode::OK));
    let policy = HedgePolicy::new(HedgeBudget::Own(RetryBudget::default()), HttpStatus, HttpIdempotency, CloneHttp);
    let mut hedge = Hedge::new(service, policy.min_samples(50));
    for _ in 0..100 {
        hedge.ready().await.unwrap().call(get()).await.unwrap();
    }
    let post = Request::post("/").body(ReplayBody::empty()).unwrap();
    hedge.ready().await.unwrap().call(post).await.unwrap();
    assert_eq!(calls.load(SeqCst), 101, "a POST is never hedged");
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_rejects_probes_and_closes() {
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = failing.clone();
    let (service, calls) = scripted(move |_| {
        let status = if flag.load(SeqCst) { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
        (Duration::ZERO, status)
    });
    let config = BreakerConfig::default()
        .window(Window::Count(10))
        .minimum_calls(10)
        .open_for(Duration::from_secs(5))
        .half_open_calls(2);
    let layer = BreakerLayer::new("orders", config, HttpStatus);
    let handle = layer.handle();
    let mut events = handle.subscribe();
    let mut breaker = tower::Layer::layer(&layer, service);
    for _ in 0..10 {
        breaker.ready().await.unwrap().call(get()).await.unwrap();
    }
    assert_eq!(handle.state(), BreakerState::Open);
    assert!(events.has_changed().unwrap());
    assert_eq!(*events.borrow_and_update(), BreakerState::Open);
    let error = breaker.ready().await.unwrap().call(get()).await.unwrap_err();
    assert!(error.is::<BreakerOpen>());
    assert_eq!(calls.load(SeqCst), 10, "rejected calls never reach the service");

    failing.store(false, SeqCst);
    tokio::time::sleep(Duration::from_secs(5)).await;
    for _ in 0..2 {
        breaker.ready().await.unwrap().call(get()).await.unwrap();
    }
    assert_eq!(handle.state(), BreakerState::Closed);
    handle.force_open();
    assert!(breaker.ready().await.unwrap().call(get()).await.unwrap_err().is::<BreakerOpen>());
    handle.release();
    assert!(breaker.ready().await.unwrap().call(get()).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_bulkhead_sheds_beyond_its_limit() {
    let (service, _) = scripted(|_| (Duration::from_secs(1), StatusCode::OK));
    let bulkhead = Bulkhead::new(service, 2);
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let mut bulkhead = bulkhead.clone();
            tokio::spawn(async move { bulkhead.ready().await.unwrap().call(get()).await })
        })
        .collect();
    tokio::task::yield_now().await;
    let mut third = bulkhead.clone();
    let error = third.ready().await.unwrap().call(get()).await.unwrap_err();
    assert_eq!(error.downcast_ref::<Overloaded>(), Some(&Overloaded { limit: 2 }));
    for call in slow {
        call.await.unwrap().unwrap();
    }
    assert!(third.ready().await.unwrap().call(get()).await.is_ok(), "room again");
}

#[tokio::test(start_paused = true)]
async fn the_adaptive_limit_grows_on_success_shrinks_on_timeouts_and_publishes() {
    let stats = Arc::new(waggle_balance::EndpointStats::new());
    let slow = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = slow.clone();
    let (service, _) = scripted(move |_| {
        (Duration::ZERO, if flag.load(SeqCst) { StatusCode::GATEWAY_TIMEOUT } else { StatusCode::OK })
    });
    let config = AimdConfig::default().limits(10, 2, 100);
    let mut limit = AdaptiveLimit::new(service, config, HttpStatus, Some(stats.clone()));
    assert_eq!(stats.capacity(), Some(10));
    for _ in 0..100 {
        limit.ready().await.unwrap().call(get()).await.unwrap();
    }
    let grown = limit.limit();
    assert!(grown > 10 && grown < 30, "additive increase: {grown}");
    slow.store(true, SeqCst);
    for _ in 0..10 {
        limit.ready().await.unwrap().call(get()).await.unwrap();
    }
    let shrunk = limit.limit();
    // 10 timeouts: × 0.9^10 ≈ 0.35.
    assert!((grown * 3 / 10..=grown * 4 / 10 + 1).contains(&shrunk), "multiplicative decrease: {grown} → {shrunk}");
    assert_eq!(stats.capacity(), Some(shrunk));
}

#[test]
fn outcomes_drive_retries() {
    assert!(Outcome::Timeout.is_retryable() && Outcome::RetryableFailure.is_retryable());
    assert!(!Outcome::NonRetryableFailure.is_retryable() && Outcome::NonRetryableFailure.is_failure());
    let _ = (AtomicUsize::new(0), CloneAll);
}

#[tokio::test(start_paused = true)]
async fn the_losing_request_is_cancelled() {
    struct SetOnDrop(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, SeqCst);
        }
    }
    let cancelled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = cancelled.clone();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let service = service_fn(move |_request: Req| {
        let n = counter.fetch_add(1, SeqCst);
        let flag = flag.clone();
        async move {
            if n == 50 {
                let guard = SetOnDrop(flag);
                tokio::time::sleep(Duration::from_secs(10)).await;
                std::mem::forget(guard);
            } else {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok::<_, BoxError>(Response::new("answer"))
        }
    });
    let mut hedge = Hedge::new(service, hedge_policy(HedgeBudget::Own(RetryBudget::default())));
    for _ in 0..51 {
        hedge.ready().await.unwrap().call(get()).await.unwrap();
    }
    assert_eq!(calls.load(SeqCst), 52);
    assert!(cancelled.load(SeqCst), "the slow primary was dropped when its backup won");
}

#[tokio::test(start_paused = true)]
async fn retries_go_to_endpoints_not_tried_yet() {
    use waggle_balance::balance::Attempts;
    use waggle_balance::policy::LeastRequest;
    use waggle_resilience::retry::track_http_attempts;
    // Two of three endpoints always answer 503; a retry that avoided nothing would often
    // land on a broken one again (least request even prefers them: they answer fastest).
    let make = |status: StatusCode| scripted(move |_| (Duration::ZERO, status)).0;
    let endpoints = [
        (
            "bad1",
            waggle_balance::Endpoint::new(tower::util::BoxCloneSyncService::new(make(StatusCode::SERVICE_UNAVAILABLE))),
        ),
        (
            "bad2",
            waggle_balance::Endpoint::new(tower::util::BoxCloneSyncService::new(make(StatusCode::SERVICE_UNAVAILABLE))),
        ),
        ("good", waggle_balance::Endpoint::new(tower::util::BoxCloneSyncService::new(make(StatusCode::OK)))),
    ];
    let balance: waggle_balance::Balance<&'static str, _, Req> = waggle_balance::Builder::new(LeastRequest::new())
        .seed(9)
        .ejection(waggle_balance::balance::Ejection::default().consecutive_failures(1_000))
        .track_attempts(Attempts::of)
        .build_static(endpoints);
    let policy =
        retry_policy().prepare(track_http_attempts).budget(RetryBudget::new(1.0, 100.0, Duration::from_secs(10)));
    let mut retry = Retry::new(balance, policy);
    for _ in 0..200 {
        let response = retry.ready().await.unwrap().call(get()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "three attempts, three different endpoints");
    }
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_frees_its_place_in_the_adaptive_limit() {
    let (service, _) = scripted(|_| (Duration::from_secs(60), StatusCode::OK));
    let mut limit = AdaptiveLimit::new(service, AimdConfig::default().limits(2, 2, 2), HttpStatus, None);
    for _ in 0..2 {
        // A caller's timeout drops the call long before the endpoint answers.
        let call = limit.ready().await.unwrap().call(get());
        assert!(tokio::time::timeout(Duration::from_millis(10), call).await.is_err());
    }
    let call = limit.ready().await.unwrap().call(get());
    let outcome = tokio::time::timeout(Duration::from_millis(10), call).await;
    assert!(outcome.is_err(), "admitted (and still running), not shed: {outcome:?}");
    assert_eq!(limit.limit(), 2, "drops do not move the limit");
}

#[tokio::test(start_paused = true)]
async fn retries_send_the_time_actually_left() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let service = service_fn(move |request: Req| {
        sink.lock().unwrap().push(request.headers()["grpc-timeout"].to_str().unwrap().to_owned());
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, BoxError>(Response::builder().status(StatusCode::SERVICE_UNAVAILABLE).body("busy").unwrap())
        }
    });
    let policy = retry_policy()
        .backoff(Backoff::new(Duration::ZERO, Duration::ZERO))
        .refresh(waggle_resilience::deadline::refresh_header);
    let mut stack = tower::ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(1), Propagation::Grpc))
        .service(Retry::new(service, policy));
    stack.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), ["1000m", "900m", "800m"]);
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_at_its_timeout_shrinks_the_limit() {
    let (service, _) = scripted(|_| (Duration::from_secs(60), StatusCode::OK));
    let config = AimdConfig::default().limits(10, 2, 100).dropped_as_timeout_after(Duration::from_millis(100));
    let mut limit = AdaptiveLimit::new(service, config, HttpStatus, None);
    // Dropped early (a hedge's loser): the limit stays.
    let call = limit.ready().await.unwrap().call(get());
    assert!(tokio::time::timeout(Duration::from_millis(10), call).await.is_err());
    assert_eq!(limit.limit(), 10);
    // Dropped at the timeout an outer layer enforces: counted as a timeout.
    let call = limit.ready().await.unwrap().call(get());
    assert!(tokio::time::timeout(Duration::from_millis(150), call).await.is_err());
    assert_eq!(limit.limit(), 9);
}
