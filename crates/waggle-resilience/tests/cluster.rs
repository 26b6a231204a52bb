//! Dubbo's cluster strategies over a real `waggle_balance::Balance`, on paused time.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower::{BoxError, Service, ServiceExt, service_fn};
use waggle_balance::policy::RoundRobin;
use waggle_balance::{Balance, Builder, Endpoint};
use waggle_resilience::Outcome;
use waggle_resilience::cluster::{Cluster, Strategy};
use waggle_resilience::replay::CloneAll;

type Answer = Result<&'static str, BoxError>;
type Svc = tower::util::BoxCloneSyncService<u64, &'static str, BoxError>;

/// Endpoints that answer with their name, or "fail" while they are broken; every call is
/// logged as (endpoint, request).
struct Fleet {
    broken: Arc<Mutex<Vec<&'static str>>>,
    log: Arc<Mutex<Vec<(&'static str, u64)>>>,
}

impl Fleet {
    fn new() -> Self {
        Fleet { broken: Arc::default(), log: Arc::default() }
    }

    fn endpoint(&self, name: &'static str) -> (&'static str, Endpoint<Svc>) {
        let (broken, log) = (self.broken.clone(), self.log.clone());
        let service = service_fn(move |request: u64| {
            log.lock().unwrap().push((name, request));
            let failing = broken.lock().unwrap().contains(&name);
            async move {
                tokio::time::sleep(Duration::from_millis(if name == "slow" { 100 } else { 1 })).await;
                Ok::<_, BoxError>(if failing { "fail" } else { name })
            }
        });
        (name, Endpoint::new(tower::util::BoxCloneSyncService::new(service)))
    }

    fn balance(&self, names: &[&'static str]) -> Balance<&'static str, Svc, u64> {
        Builder::new(RoundRobin).seed(3).build_static(names.iter().map(|n| self.endpoint(n)))
    }

    fn calls(&self) -> HashMap<&'static str, usize> {
        let mut counts = HashMap::new();
        for (name, _) in self.log.lock().unwrap().iter() {
            *counts.entry(*name).or_default() += 1;
        }
        counts
    }
}

fn classify(result: Result<&&'static str, &BoxError>) -> Outcome {
    match result {
        Ok(&"fail") | Err(_) => Outcome::RetryableFailure,
        Ok(_) => Outcome::Success,
    }
}

async fn call(cluster: &mut Cluster<&'static str, Svc, u64, &'static str>, request: u64) -> Answer {
    cluster.ready().await.unwrap().call(request).await
}

#[tokio::test(start_paused = true)]
async fn failover_retries_on_other_endpoints() {
    let fleet = Fleet::new();
    fleet.broken.lock().unwrap().extend(["a", "b"]);
    let mut cluster =
        Cluster::new(fleet.balance(&["a", "b", "c"]), Strategy::Failover { retries: 2 }, classify, CloneAll);
    for request in 0..20 {
        assert_eq!(call(&mut cluster, request).await.unwrap(), "c");
        // Never the same endpoint twice for one request.
        let log = fleet.log.lock().unwrap();
        let attempts: Vec<_> = log.iter().filter(|(_, r)| *r == request).map(|(n, _)| *n).collect();
        let mut distinct = attempts.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), attempts.len(), "request {request}: {attempts:?}");
    }
    // With every endpoint broken the last failure comes back after 1 + 2 attempts.
    fleet.broken.lock().unwrap().push("c");
    let before = fleet.log.lock().unwrap().len();
    assert_eq!(call(&mut cluster, 99).await.unwrap(), "fail");
    assert_eq!(fleet.log.lock().unwrap().len() - before, 3);
}

#[tokio::test(start_paused = true)]
async fn failfast_makes_one_attempt_and_failsafe_falls_back() {
    let fleet = Fleet::new();
    fleet.broken.lock().unwrap().push("a");
    let mut failfast = Cluster::new(fleet.balance(&["a"]), Strategy::Failfast, classify, CloneAll);
    assert_eq!(call(&mut failfast, 1).await.unwrap(), "fail");
    assert_eq!(fleet.calls()["a"], 1);

    let fallback: waggle_resilience::cluster::Fallback<&'static str> = Arc::new(|| "fallback");
    let mut failsafe = Cluster::new(fleet.balance(&["a"]), Strategy::Failsafe(fallback), classify, CloneAll);
    assert_eq!(call(&mut failsafe, 2).await.unwrap(), "fallback");
}

#[tokio::test(start_paused = true)]
async fn failback_answers_now_and_retries_in_the_background() {
    let fleet = Fleet::new();
    fleet.broken.lock().unwrap().push("a");
    let strategy =
        Strategy::Failback { fallback: Arc::new(|| "queued"), retries: 5, interval: Duration::from_secs(1), queue: 16 };
    let mut cluster = Cluster::new(fleet.balance(&["a"]), strategy, classify, CloneAll);
    assert_eq!(call(&mut cluster, 7).await.unwrap(), "queued");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(fleet.calls()["a"], 3, "the call and two background retries so far");
    fleet.broken.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let log = fleet.log.lock().unwrap();
    assert_eq!(log.len(), 4, "retried until it succeeded, then stopped: {log:?}");
    assert!(log.iter().all(|(_, request)| *request == 7));
}

#[tokio::test(start_paused = true)]
async fn forking_takes_the_first_success() {
    let fleet = Fleet::new();
    fleet.broken.lock().unwrap().push("a");
    let mut cluster = Cluster::new(fleet.balance(&["a", "slow", "c"]), Strategy::Forking { n: 3 }, classify, CloneAll);
    let started = tokio::time::Instant::now();
    assert_eq!(call(&mut cluster, 1).await.unwrap(), "c", "not the failure, not the slow one");
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(fleet.calls().len(), 3, "all three were asked");
}

#[tokio::test(start_paused = true)]
async fn broadcast_reaches_everyone_and_fails_if_anyone_fails() {
    let fleet = Fleet::new();
    let balance = fleet.balance(&["a", "b", "c"]);
    let handle = balance.handle();
    let mut cluster = Cluster::new(balance, Strategy::Broadcast, classify, CloneAll);
    assert_ne!(call(&mut cluster, 1).await.unwrap(), "fail");
    assert_eq!(fleet.calls(), HashMap::from([("a", 1), ("b", 1), ("c", 1)]));
    // Every send went through the balancer, which counted it.
    let snapshot = handle.endpoints().await.unwrap();
    assert!(snapshot.iter().all(|e| e.successes == 1), "{snapshot:?}");
    fleet.broken.lock().unwrap().push("b");
    assert_eq!(call(&mut cluster, 2).await.unwrap(), "fail");
    assert_eq!(fleet.calls(), HashMap::from([("a", 2), ("b", 2), ("c", 2)]));
}
