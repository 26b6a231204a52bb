//! With the `metrics` feature (on in the SDK, so in every workspace build), the balancer counts
//! ejections and re-admissions through the `metrics` facade.

#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use support::{Backend, settle};
use tower::{Service, ServiceExt};
use waggle_balance::policy::RoundRobin;
use waggle_balance::{Balance, Builder, Endpoint};

type Counts = Arc<Mutex<HashMap<String, u64>>>;

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
        Counter::from_arc(Arc::new(Cell(key.name().to_owned(), self.0.clone())))
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn ejections_and_readmissions_are_counted() {
    let counts: Counts = Arc::default();
    let recorder = Counting(counts.clone());
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        runtime.block_on(async {
            let endpoints = ["a", "b"].map(|n| (n, Endpoint::new(Backend::new(n))));
            let mut balance: Balance<&'static str, Backend, u64> = Builder::new(RoundRobin).build_static(endpoints);
            balance.ready().await.unwrap().call(1).await.unwrap();
            balance.handle().eject("a", Some(Duration::from_secs(1))).unwrap();
            settle().await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            settle().await;
            for i in 0..4 {
                balance.ready().await.unwrap().call(i).await.unwrap();
            }
            settle().await;
        });
    });
    let counts = counts.lock().unwrap();
    assert_eq!(counts.get("waggle_balance_ejections_total"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("waggle_balance_readmissions_total"), Some(&1), "{counts:?}");
}
