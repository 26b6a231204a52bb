//! With the `metrics` feature (on in the SDK, so in every workspace build), the layers count
//! what they do through the `metrics` facade.

#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use metrics::{Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tower::{BoxError, Service, ServiceExt, service_fn};
use waggle_resilience::breaker::{BreakerConfig, BreakerLayer, Window};
use waggle_resilience::classify::{HttpIdempotency, HttpStatus};
use waggle_resilience::replay::{CloneHttp, ReplayBody};
use waggle_resilience::retry::{Backoff, Retry, RetryPolicy};

type Counts = Arc<Mutex<HashMap<String, u64>>>;

/// Counts every counter increment by name and labels.
struct Counting(Counts);

struct Cell(String, Counts);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        *self.1.lock().unwrap().entry(self.0.clone()).or_default() += value;
    }

    fn absolute(&self, value: u64) {
        self.1.lock().unwrap().insert(self.0.clone(), value);
    }
}

impl Recorder for Counting {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        let name =
            if labels.is_empty() { key.name().to_owned() } else { format!("{}{{{}}}", key.name(), labels.join(",")) };
        Counter::from_arc(Arc::new(Cell(name, self.0.clone())))
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn retries_and_breaker_transitions_are_counted() {
    let counts: Counts = Arc::default();
    let recorder = Counting(counts.clone());
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        runtime.block_on(async {
            let failing = service_fn(|_: Request<ReplayBody>| async {
                Ok::<_, BoxError>(Response::builder().status(StatusCode::SERVICE_UNAVAILABLE).body(()).unwrap())
            });
            let breaker = BreakerLayer::new(
                "orders",
                BreakerConfig::default().window(Window::Count(4)).minimum_calls(4).open_for(Duration::from_secs(60)),
                HttpStatus,
            );
            let policy = RetryPolicy::new(HttpStatus, HttpIdempotency, CloneHttp)
                .backoff(Backoff::new(Duration::from_millis(1), Duration::from_millis(1)));
            let mut service = Retry::new(tower::Layer::layer(&breaker, failing), policy);
            for _ in 0..3 {
                let request = Request::get("/").body(ReplayBody::empty()).unwrap();
                let _ = service.ready().await.unwrap().call(request).await;
            }
        });
    });
    let counts = counts.lock().unwrap();
    assert!(counts.get("waggle_retries_total").is_some_and(|n| *n >= 2), "{counts:?}");
    assert_eq!(counts.get("waggle_breaker_transitions_total{breaker=orders,state=Open}"), Some(&1), "{counts:?}");
    assert!(counts.get("waggle_breaker_rejections_total{breaker=orders}").is_some_and(|n| *n >= 1), "{counts:?}");
}
