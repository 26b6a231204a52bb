//! `Balance` through its public interface: discovery changes mid-traffic, the endpoint state
//! machine, panic mode, subsets, zones, slow start, pick records. All on paused time with
//! fixed seeds.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{Backend, discovery, settle};
use tower::{Service, ServiceExt};
use waggle_balance::balance::{Ejection, Fallback, NoEndpoints, Selector, SlowStart, Subset, WhenEmpty, ZoneAware};
use waggle_balance::policy::{LeastRequest, RingHash, RoundRobin, WeightedRandom};
use waggle_balance::{Balance, BalanceLayer, Builder, Endpoint, EndpointState, PickRecord};

type Lb = Balance<&'static str, Backend, u64>;

/// Sends `n` requests one after another and counts answers per endpoint (errors as "error").
async fn send(balance: &mut Lb, n: u64) -> HashMap<&'static str, usize> {
    let mut counts = HashMap::new();
    for i in 0..n {
        let answer = balance.ready().await.unwrap().call(i).await;
        *counts.entry(answer.unwrap_or("error")).or_default() += 1;
    }
    counts
}

/// Starts `n_clients` tasks that each send `n_requests` requests through clones of `balance`.
fn spawn_clients(balance: &Lb, n_clients: usize, n_requests: u64) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n_clients)
        .map(|_| {
            let mut balance = balance.clone();
            tokio::spawn(async move {
                for i in 0..n_requests {
                    balance.ready().await.unwrap().call(i).await.unwrap();
                }
            })
        })
        .collect()
}

async fn join(clients: Vec<tokio::task::JoinHandle<()>>) {
    for client in clients {
        client.await.unwrap();
    }
}

async fn state_of(balance: &Lb, key: &str) -> EndpointState {
    let endpoints = balance.handle().endpoints().await.unwrap();
    endpoints.iter().find(|e| e.key == key).map(|e| e.state).unwrap()
}

#[tokio::test(start_paused = true)]
async fn no_request_reaches_a_removed_endpoint_while_discovery_changes_mid_traffic() {
    let (feed, discover) = discovery();
    let backends: Vec<Backend> = ["a", "b", "c", "d", "e"]
        .into_iter()
        .map(|name| Backend::new(name).with_latency(Duration::from_millis(5)))
        .collect();
    for backend in &backends[..3] {
        feed.insert(Endpoint::new(backend.clone()));
    }
    let balance: Lb = Builder::new(LeastRequest::new()).seed(1).build(discover);

    // 16 concurrent clients keep traffic flowing while discovery changes underneath.
    let clients = spawn_clients(&balance, 16, 400);

    let handle = balance.handle();
    let mut frozen: Vec<(&Backend, usize)> = Vec::new();
    for (step, change) in ["+d", "-b", "+e", "-a", "-d"].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let name = &change[1..];
        let backend = backends.iter().find(|b| b.name == name).unwrap();
        if change.starts_with('+') {
            feed.insert(Endpoint::new(backend.clone()));
        } else {
            feed.remove(backend.name);
            // Once the balancer lists the endpoint as gone, its call count must never move.
            while handle.endpoints().await.unwrap().iter().any(|e| e.key == backend.name) {
                settle().await;
            }
            frozen.push((backend, backend.calls()));
        }
        for (backend, calls) in &frozen {
            assert_eq!(backend.calls(), *calls, "step {step}: {} got a request after removal", backend.name);
        }
    }
    join(clients).await;
    for (backend, calls) in &frozen {
        assert_eq!(backend.calls(), *calls, "{} got a request after removal", backend.name);
    }
    let total: usize = backends.iter().map(Backend::calls).sum();
    assert_eq!(total, 16 * 400, "every request was answered exactly once");
    assert!(backends[2].calls() > 0 && backends[4].calls() > 0, "c and e took traffic");
}

#[tokio::test(start_paused = true)]
async fn weighted_p2c_keeps_a_99_half_half_split_under_concurrent_load() {
    let (feed, discover) = discovery();
    let heavy = Backend::new("heavy").with_latency(Duration::from_millis(10));
    let light1 = Backend::new("light1").with_latency(Duration::from_millis(10));
    let light2 = Backend::new("light2").with_latency(Duration::from_millis(10));
    feed.insert(Endpoint::new(heavy.clone()).weight(198));
    feed.insert(Endpoint::new(light1.clone()).weight(1));
    feed.insert(Endpoint::new(light2.clone()).weight(1));
    let balance: Lb = Builder::new(LeastRequest::new()).seed(7).build(discover);
    let clients = spawn_clients(&balance, 20, 1_000);
    join(clients).await;
    let total = 20_000.0;
    let shares = [heavy.calls() as f64 / total, light1.calls() as f64 / total, light2.calls() as f64 / total];
    // Weights say 99 / 0.5 / 0.5; tower's unweighted P2C gives about 66 / 17 / 17 here.
    assert!(shares[0] > 0.97, "{shares:?}");
    assert!(shares[1] < 0.015 && shares[2] < 0.015, "{shares:?}");
}

#[tokio::test(start_paused = true)]
async fn failing_endpoint_is_ejected_probed_and_readmitted() {
    let (feed, discover) = discovery();
    let good = Backend::new("good");
    let flaky = Backend::new("flaky");
    feed.insert(Endpoint::new(good.clone()));
    feed.insert(Endpoint::new(flaky.clone()));
    let ejection = Ejection::default().consecutive_failures(3).base(Duration::from_secs(1));
    let mut balance: Lb = Builder::new(RoundRobin).ejection(ejection).seed(3).build(discover);

    flaky.set_failing(true);
    let counts = send(&mut balance, 6).await;
    assert_eq!(counts.get("error"), Some(&3), "three failures in a row on flaky");
    settle().await;
    assert_eq!(state_of(&balance, "flaky").await, EndpointState::Ejected);
    let before = flaky.calls();
    assert_eq!(send(&mut balance, 20).await.get("good"), Some(&20), "an ejected endpoint takes no traffic");
    assert_eq!(flaky.calls(), before);

    // After the 1 s back-off it is on probation; still failing, its probe fails and the next
    // back-off doubles.
    tokio::time::sleep(Duration::from_millis(1001)).await;
    settle().await;
    assert_eq!(state_of(&balance, "flaky").await, EndpointState::Probation);
    send(&mut balance, 4).await;
    settle().await;
    let snapshot = balance.handle().endpoints().await.unwrap();
    let flaky_now = snapshot.iter().find(|e| e.key == "flaky").unwrap();
    assert_eq!(flaky_now.state, EndpointState::Ejected);
    assert_eq!(flaky_now.retry_in, Some(Duration::from_secs(2)));
    assert_eq!(flaky_now.ejections, 2);

    // Healed: the next probe succeeds and it is ready again.
    flaky.set_failing(false);
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(state_of(&balance, "flaky").await, EndpointState::Probation);
    let counts = send(&mut balance, 10).await;
    assert_eq!(counts.get("error"), None);
    settle().await;
    assert_eq!(state_of(&balance, "flaky").await, EndpointState::Ready);
    assert!(send(&mut balance, 10).await.get("flaky").is_some_and(|n| *n >= 4));

    // Broken again right after a probe: failures that complete before the worker has even
    // seen the probe's success still eject it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    balance.handle().eject("flaky", Some(Duration::from_millis(1))).unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
    settle().await;
    assert_eq!(state_of(&balance, "flaky").await, EndpointState::Probation);
    let mut probe_answered = false;
    for i in 0..40 {
        if balance.ready().await.unwrap().call(i).await.ok() == Some("flaky") && !probe_answered {
            probe_answered = true;
            flaky.set_failing(true);
        }
    }
    assert!(probe_answered);
    settle().await;
    assert_eq!(state_of(&balance, "flaky").await, EndpointState::Ejected);
}

#[tokio::test(start_paused = true)]
async fn ejecting_for_ever_keeps_the_balancer_alive() {
    let mut balance: Lb =
        Builder::new(RoundRobin).build_static(["a", "b"].map(|n| (n, Endpoint::new(Backend::new(n)))));
    send(&mut balance, 2).await;
    balance.handle().eject("a", Some(Duration::MAX)).unwrap();
    settle().await;
    assert_eq!(state_of(&balance, "a").await, EndpointState::Ejected);
    assert_eq!(send(&mut balance, 4).await.get("b"), Some(&4));
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_that_cannot_become_ready_never_blocks_requests() {
    let (feed, discover) = discovery();
    let good = Backend::new("good");
    let broken = Backend::new("broken");
    broken.state.fail_ready.store(true, std::sync::atomic::Ordering::SeqCst);
    feed.insert(Endpoint::new(good.clone()));
    feed.insert(Endpoint::new(broken.clone()));
    let mut balance: Lb = Builder::new(RoundRobin).seed(5).build(discover);
    let counts = send(&mut balance, 10).await;
    assert_eq!(counts.get("good"), Some(&10));
    assert_eq!(broken.calls(), 0);
    let snapshot = balance.handle().endpoints().await.unwrap();
    let broken_now = snapshot.iter().find(|e| e.key == "broken").unwrap();
    assert_eq!(broken_now.state, EndpointState::Ejected);
    assert!(broken_now.last_error.as_deref().unwrap().contains("refused"), "{:?}", broken_now.last_error);

    // It breaks while on probation too: the request that found it not ready picks again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(state_of(&balance, "broken").await, EndpointState::Probation);
    let counts = send(&mut balance, 10).await;
    assert_eq!(counts.get("good"), Some(&10), "{counts:?}");
    settle().await;
    assert_eq!(state_of(&balance, "broken").await, EndpointState::Ejected);
}

#[tokio::test(start_paused = true)]
async fn a_wedged_endpoint_delays_a_request_by_at_most_the_readiness_timeout() {
    let (feed, discover) = discovery();
    let good = Backend::new("good");
    let wedged = Backend::new("wedged");
    feed.insert(Endpoint::new(good.clone()));
    feed.insert(Endpoint::new(wedged.clone()));
    let timeout = Duration::from_millis(500);
    let mut balance: Lb = Builder::new(RoundRobin).readiness_timeout(timeout).seed(5).build(discover);
    assert_eq!(send(&mut balance, 4).await.len(), 2, "both serve at first");

    wedged.state.hang_ready.store(true, std::sync::atomic::Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    let counts = send(&mut balance, 10).await;
    assert_eq!(counts.get("good"), Some(&10), "every request still answered: {counts:?}");
    // Only the request that picked the wedged endpoint waited, once, for the timeout.
    assert_eq!(started.elapsed(), timeout);
    settle().await;
    let snapshot = balance.handle().endpoints().await.unwrap();
    let wedged_now = snapshot.iter().find(|e| e.key == "wedged").unwrap();
    assert_eq!(wedged_now.state, EndpointState::Ejected);
    assert!(wedged_now.last_error.as_deref().unwrap().contains("not ready within"), "{:?}", wedged_now.last_error);
}

#[tokio::test(start_paused = true)]
async fn panic_mode_balances_over_all_endpoints_when_too_few_are_healthy() {
    let names = ["a", "b", "c", "d"];
    let records: Arc<Mutex<Vec<PickRecord<&'static str>>>> = Arc::default();
    let sink = records.clone();
    let mut balance: Lb = Builder::new(RoundRobin)
        .seed(9)
        .on_pick(move |record| sink.lock().unwrap().push(record.clone()))
        .build_static(names.map(|n| (n, Endpoint::new(Backend::new(n)))));
    send(&mut balance, 4).await;
    let handle = balance.handle();
    for name in ["b", "c"] {
        handle.eject(name, Some(Duration::from_secs(60))).unwrap();
    }
    settle().await;
    // Two of four healthy is exactly the 50 % threshold: not yet panic.
    let counts = send(&mut balance, 40).await;
    assert_eq!((counts.get("a"), counts.get("d")), (Some(&20), Some(&20)), "{counts:?}");
    assert!(!records.lock().unwrap().last().unwrap().panic);

    handle.eject("d", Some(Duration::from_secs(60))).unwrap();
    settle().await;
    let counts = send(&mut balance, 40).await;
    assert_eq!(counts.len(), 4, "panic: all four take traffic, {counts:?}");
    assert!(records.lock().unwrap().last().unwrap().panic);
    let snapshot = handle.endpoints().await.unwrap();
    assert!(snapshot.iter().all(|e| e.effective_weight == 1.0), "all in the table");

    // With the panic threshold off, only the healthy endpoint is used.
    let mut strict: Lb =
        Builder::new(RoundRobin).panic_threshold(0.0).build_static(names.map(|n| (n, Endpoint::new(Backend::new(n)))));
    send(&mut strict, 1).await;
    for name in ["b", "c", "d"] {
        strict.handle().eject(name, Some(Duration::from_secs(60))).unwrap();
    }
    settle().await;
    assert_eq!(send(&mut strict, 12).await.get("a"), Some(&12));
}

#[tokio::test(start_paused = true)]
async fn canary_subset_with_declared_fallbacks() {
    let (feed, discover) = discovery();
    feed.insert(Endpoint::new(Backend::new("v1-a")).metadata("version", "v1"));
    feed.insert(Endpoint::new(Backend::new("v1-b")).metadata("version", "v1"));
    feed.insert(Endpoint::new(Backend::new("v2-a")).metadata("version", "v2").tag("canary"));
    let canary = Subset::new(Selector::new().metadata("version", "v2"), Fallback::AnyEndpoint);
    let mut balance: Lb = Builder::new(RoundRobin).subset(canary).build(discover);
    assert_eq!(send(&mut balance, 10).await.get("v2-a"), Some(&10));
    feed.remove("v2-a");
    settle().await;
    let counts = send(&mut balance, 10).await;
    assert_eq!((counts.get("v1-a"), counts.get("v1-b")), (Some(&5), Some(&5)), "fell back to every endpoint");

    // A fallback to another subset, and to nothing.
    let static_set = || {
        [("v1", Endpoint::new(Backend::new("v1")).metadata("version", "v1")), ("x", Endpoint::new(Backend::new("x")))]
    };
    let to_v1 = Subset::new(Selector::new().tag("canary"), Fallback::Subset(Selector::new().metadata("version", "v1")));
    let mut balance: Lb = Builder::new(RoundRobin).subset(to_v1).build_static(static_set());
    assert_eq!(send(&mut balance, 6).await.get("v1"), Some(&6));
    let nothing = Subset::new(Selector::new().tag("canary"), Fallback::NoEndpoint);
    let mut balance: Lb =
        Builder::new(RoundRobin).subset(nothing).when_empty(WhenEmpty::Fail).build_static(static_set());
    settle().await;
    let error = balance.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(error.is::<NoEndpoints>(), "{error}");
}

#[tokio::test(start_paused = true)]
async fn zone_preference_spills_over_in_proportion_to_local_health() {
    let local = ["l1", "l2", "l3", "l4"];
    let remote = ["r1", "r2", "r3", "r4"];
    let endpoints = local
        .map(|n| (n, Endpoint::new(Backend::new(n)).zone("z1")))
        .into_iter()
        .chain(remote.map(|n| (n, Endpoint::new(Backend::new(n)).zone("z2"))));
    let mut balance: Lb =
        Builder::new(WeightedRandom).seed(11).zone_aware(ZoneAware::new("z1")).build_static(endpoints);
    let local_share = |counts: &HashMap<&str, usize>| {
        local.iter().map(|n| counts.get(n).copied().unwrap_or(0)).sum::<usize>() as f64 / 10_000.0
    };
    assert_eq!(local_share(&send(&mut balance, 10_000).await), 1.0, "all local while healthy");
    // The curve: local share = min(1, 1.4 × healthy local / local).
    let handle = balance.handle();
    for (ejected, expected) in [("l1", 1.0), ("l2", 0.7), ("l3", 0.35)] {
        handle.eject(ejected, Some(Duration::from_secs(600))).unwrap();
        settle().await;
        let share = local_share(&send(&mut balance, 10_000).await);
        assert!((share - expected).abs() < 0.02, "after ejecting {ejected}: local share {share}, expected {expected}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_dead_local_zone_sends_everything_away_and_panic_spreads_over_all() {
    let zoned = |local: &[&'static str], remote: &[&'static str]| {
        let endpoints = local
            .iter()
            .map(|n| (*n, Endpoint::new(Backend::new(n)).zone("z1")))
            .chain(remote.iter().map(|n| (*n, Endpoint::new(Backend::new(n)).zone("z2"))))
            .collect::<Vec<_>>();
        Builder::new(RoundRobin).zone_aware(ZoneAware::new("z1")).build_static(endpoints)
    };
    // Two local endpoints, both ejected; four healthy remote ones are two thirds of the fleet
    // (no panic), so the remote zone takes everything.
    let mut balance: Lb = zoned(&["l1", "l2"], &["r1", "r2", "r3", "r4"]);
    send(&mut balance, 1).await;
    for name in ["l1", "l2"] {
        balance.handle().eject(name, Some(Duration::from_secs(600))).unwrap();
    }
    settle().await;
    let counts = send(&mut balance, 400).await;
    assert_eq!(["r1", "r2", "r3", "r4"].map(|n| counts.get(n).copied()), [Some(100); 4], "{counts:?}");

    // Six local endpoints ejected and four remote healthy: 40 % healthy is below the panic
    // threshold, so traffic spreads over all ten instead of crushing the four.
    let local = ["l1", "l2", "l3", "l4", "l5", "l6"];
    let mut balance: Lb = zoned(&local, &["r1", "r2", "r3", "r4"]);
    send(&mut balance, 1).await;
    for name in local {
        balance.handle().eject(name, Some(Duration::from_secs(600))).unwrap();
    }
    settle().await;
    let counts = send(&mut balance, 10_000).await;
    assert_eq!(counts.len(), 10, "{counts:?}");
    let remote: usize = ["r1", "r2", "r3", "r4"].iter().map(|n| counts[n]).sum();
    assert!((remote as f64 / 10_000.0 - 0.4).abs() < 0.03, "remote share {remote}");
}

#[tokio::test(start_paused = true)]
async fn zone_preference_spills_over_when_the_local_zone_is_overloaded() {
    let local = Backend::new("local").with_latency(Duration::from_millis(100));
    let remote = Backend::new("remote").with_latency(Duration::from_millis(100));
    let endpoints =
        [("local", Endpoint::new(local.clone()).zone("z1")), ("remote", Endpoint::new(remote.clone()).zone("z2"))];
    let balance: Lb = Builder::new(LeastRequest::new()).zone_aware(ZoneAware::new("z1")).build_static(endpoints);
    // One client at a time: the local endpoint is never overloaded.
    let mut single = balance.clone();
    send(&mut single, 20).await;
    assert_eq!((local.calls(), remote.calls()), (20, 0));
    // 30 concurrent clients: the local zone holds at most about twice the remote's load.
    let clients = spawn_clients(&balance, 30, 20);
    join(clients).await;
    let spilled = remote.calls() as f64 / 600.0;
    assert!(spilled > 0.25 && spilled < 0.45, "spilled share {spilled}");
}

#[tokio::test(start_paused = true)]
async fn slow_start_ramps_a_new_endpoint_along_its_curve() {
    let (feed, discover) = discovery();
    let old = Backend::new("old");
    let new = Backend::new("new");
    feed.insert(Endpoint::new(old.clone()));
    let mut balance: Lb =
        Builder::new(WeightedRandom).seed(13).slow_start(SlowStart::new(Duration::from_secs(10))).build(discover);
    send(&mut balance, 1).await;
    // The first endpoint ramps up too; let it finish before the new one arrives.
    tokio::time::sleep(Duration::from_secs(11)).await;
    feed.insert(Endpoint::new(new.clone()));
    settle().await;
    let weight_of_new = |balance: &Lb| {
        let handle = balance.handle();
        async move { handle.endpoints().await.unwrap().into_iter().find(|e| e.key == "new").unwrap().effective_weight }
    };
    // Linear from 10 % over 10 s, recomputed every 0.5 s (20 steps per window).
    let t0 = tokio::time::Instant::now();
    assert!((weight_of_new(&balance).await - 0.1).abs() < 1e-9);
    for (at_secs, expected) in [(2.6, 0.25), (5.1, 0.5), (7.6, 0.75), (10.1, 1.0)] {
        tokio::time::sleep_until(t0 + Duration::from_secs_f64(at_secs)).await;
        settle().await;
        let weight = weight_of_new(&balance).await;
        assert!((weight - expected).abs() < 1e-6, "at {at_secs} s: weight {weight}, expected {expected}");
        // Traffic follows: the new endpoint's share is w / (1 + w).
        let (old_before, new_before) = (old.calls(), new.calls());
        send(&mut balance, 4_000).await;
        let share =
            (new.calls() - new_before) as f64 / ((old.calls() - old_before) + (new.calls() - new_before)) as f64;
        let expected_share = expected / (1.0 + expected);
        assert!((share - expected_share).abs() < 0.03, "at {at_secs} s: share {share}, expected {expected_share}");
    }
}

#[tokio::test(start_paused = true)]
async fn pick_records_explain_the_choice() {
    let records: Arc<Mutex<Vec<PickRecord<&'static str>>>> = Arc::default();
    let sink = records.clone();
    let busy = Backend::new("busy").with_latency(Duration::from_secs(5));
    let idle = Backend::new("idle");
    let balance: Lb = Builder::new(LeastRequest::new())
        .on_pick(move |record| sink.lock().unwrap().push(record.clone()))
        .build_static([("busy", Endpoint::new(busy.clone())), ("idle", Endpoint::new(idle.clone()))]);
    // Two slow requests occupy "busy" (P2C over two endpoints compares both every time, so
    // the first goes to either and the rest to the less loaded).
    let mut first = balance.clone();
    let pending: Vec<_> = (0..2)
        .map(|i| {
            let mut balance = balance.clone();
            tokio::spawn(async move { balance.ready().await.unwrap().call(i).await })
        })
        .collect();
    settle().await;
    first.ready().await.unwrap().call(9).await.unwrap();
    let record = records.lock().unwrap().last().unwrap().clone();
    assert_eq!(record.policy, "least_request");
    assert_eq!(record.compared.len(), 2, "{record:?}");
    let chosen_load = record.compared.iter().find(|c| c.key == record.chosen).unwrap().load;
    assert!(record.compared.iter().all(|c| c.load >= chosen_load), "{record:?}");
    assert!(!record.panic);
    drop(pending);
}

#[tokio::test(start_paused = true)]
async fn waits_for_a_first_endpoint_or_fails_fast() {
    let (feed, discover) = discovery();
    let mut balance: Lb = Builder::new(RoundRobin).build(discover);
    let waiter = tokio::spawn({
        let mut balance = balance.clone();
        async move { balance.ready().await.unwrap().call(1).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(!waiter.is_finished(), "waits while there is no endpoint");
    feed.insert(Endpoint::new(Backend::new("late")));
    assert_eq!(waiter.await.unwrap(), "late");
    assert_eq!(send(&mut balance, 2).await.get("late"), Some(&2));

    let (_feed, discover) = discovery();
    let mut failing: Lb = Builder::new(RoundRobin).when_empty(WhenEmpty::Fail).build(discover);
    let error = failing.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(error.is::<NoEndpoints>());
}

#[tokio::test(start_paused = true)]
async fn ring_hash_through_balance_keeps_keys_on_their_endpoint() {
    let endpoints = ["a", "b", "c", "d"].map(|n| (n, Endpoint::new(Backend::new(n))));
    let layer = BalanceLayer::new(
        Builder::new(RingHash::new()).request_hash(|request: &u64| Some(waggle_balance::stable_hash(&(request % 10)))),
    );
    let (feed, discover) = discovery();
    for (_, endpoint) in endpoints {
        feed.insert(endpoint);
    }
    let mut balance: Lb = tower::Layer::layer(&layer, discover);
    let mut owner: HashMap<u64, &str> = HashMap::new();
    for i in 0..200u64 {
        let answer = balance.ready().await.unwrap().call(i).await.unwrap();
        assert_eq!(*owner.entry(i % 10).or_insert(answer), answer, "key {} moved", i % 10);
    }
    assert!(owner.values().collect::<std::collections::HashSet<_>>().len() > 1, "keys spread");
}

#[tokio::test(start_paused = true)]
async fn default_balance_over_a_static_list() {
    let backends = ["a", "b"].map(Backend::new);
    let changes = backends
        .clone()
        .map(|b| Ok::<_, std::convert::Infallible>(tower::discover::Change::Insert(b.name, Endpoint::new(b))));
    let mut balance: Lb = Balance::new(futures_util::stream::iter(changes));
    let counts = send(&mut balance, 100).await;
    assert_eq!(counts.values().sum::<usize>(), 100);
    assert_eq!(balance.len(), 2);
    assert!(format!("{balance:?}").contains("least_request"));
}

#[tokio::test(start_paused = true)]
async fn a_failure_classifier_ejects_on_answers_that_are_ok_but_bad() {
    // "flaky" answers, but its answers count as failures: the classifier, not `Err`, decides.
    let ejection = Ejection::default().consecutive_failures(3);
    let mut balance: Lb = Builder::new(RoundRobin)
        .ejection(ejection)
        .failure_classifier(|result: Result<&&'static str, &tower::BoxError>| {
            result.map_or(true, |name| *name == "flaky")
        })
        .build_static(["good", "flaky"].map(|n| (n, Endpoint::new(Backend::new(n)))));
    send(&mut balance, 6).await;
    settle().await;
    assert_eq!(state_of(&balance, "flaky").await, EndpointState::Ejected);
    assert_eq!(state_of(&balance, "good").await, EndpointState::Ready);
}

#[tokio::test(start_paused = true)]
async fn failure_rate_ejection_within_the_maximum_share() {
    use waggle_balance::balance::FailureRate;
    // Ten endpoints; three fail every other response (never 5 in a row), so only the rate
    // rule can catch them, and at most 10 % (one) may be ejected at a time.
    let names = ["e0", "e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8", "e9"];
    let backends = names.map(Backend::new);
    let ejection = Ejection::outlier_detection().failure_rate(Some(FailureRate::new(0.4, 10, Duration::from_secs(10))));
    let alternate = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let classify = move |result: Result<&&'static str, &tower::BoxError>| match result {
        Ok(name) if ["e0", "e1", "e2"].contains(name) => {
            alternate.fetch_add(1, std::sync::atomic::Ordering::SeqCst).is_multiple_of(2)
        }
        Ok(_) => false,
        Err(_) => true,
    };
    let mut balance: Lb = Builder::new(RoundRobin)
        .ejection(ejection)
        .failure_classifier(classify)
        .build_static(backends.iter().map(|b| (b.name, Endpoint::new(b.clone()))));
    send(&mut balance, 400).await;
    settle().await;
    let snapshot = balance.handle().endpoints().await.unwrap();
    let ejected: Vec<_> = snapshot.iter().filter(|e| e.state == EndpointState::Ejected).map(|e| e.key).collect();
    assert_eq!(ejected.len(), 1, "the 10 % cap allows one: {ejected:?}");
    assert!(["e0", "e1", "e2"].contains(&ejected[0]));
    let first = snapshot.iter().find(|e| e.key == ejected[0]).unwrap();
    assert_eq!(first.retry_in, Some(Duration::from_secs(30)), "Envoy's base ejection time");
    assert!(first.last_error.as_deref().unwrap().contains("responses failed"), "{:?}", first.last_error);
}

#[tokio::test(start_paused = true)]
async fn call_excluding_goes_elsewhere() {
    let mut balance: Lb =
        Builder::new(LeastRequest::new()).build_static(["a", "b", "c"].map(|n| (n, Endpoint::new(Backend::new(n)))));
    send(&mut balance, 1).await;
    let mut listed: Vec<_> = balance.handle().endpoints().await.unwrap().into_iter().map(|e| e.key).collect();
    listed.sort_unstable();
    assert_eq!(listed, ["a", "b", "c"]);
    for i in 0..50 {
        balance.ready().await.unwrap();
        let future = balance.call_excluding(i, &["a", "b"]);
        assert_eq!(future.endpoint(), Some(&"c"));
        assert_eq!(future.await.unwrap(), "c");
    }
}

#[tokio::test(start_paused = true)]
async fn a_published_concurrency_limit_is_the_load_p2c_compares() {
    // "small" publishes a limit of 1 and has one request in flight: fully used. "big" has
    // 3 in flight but a limit of 100. Least request must prefer "big".
    let small_stats = Arc::new(waggle_balance::EndpointStats::new());
    small_stats.set_capacity(1);
    small_stats.start();
    let big_stats = Arc::new(waggle_balance::EndpointStats::new());
    big_stats.set_capacity(100);
    for _ in 0..3 {
        big_stats.start();
    }
    let endpoints = [
        ("small", Endpoint::new(Backend::new("small")).stats(small_stats)),
        ("big", Endpoint::new(Backend::new("big")).stats(big_stats)),
    ];
    let mut balance: Lb = Builder::new(LeastRequest::new()).build_static(endpoints);
    assert_eq!(send(&mut balance, 20).await.get("big"), Some(&20));
}

#[tokio::test(start_paused = true)]
async fn wait_in_call_is_ready_at_once_and_waits_inside_the_call() {
    let (feed, discover) = discovery();
    let mut balance: Lb = Builder::new(RoundRobin).when_empty(WhenEmpty::WaitInCall).build(discover);
    // Ready with no endpoint; the call itself waits, so a timeout around it bounds the wait.
    let call = balance.ready().await.unwrap().call(1);
    assert!(tokio::time::timeout(Duration::from_secs(5), call).await.is_err());
    let call = balance.ready().await.unwrap().call(2);
    let waiter = tokio::spawn(call);
    tokio::time::sleep(Duration::from_secs(1)).await;
    feed.insert(Endpoint::new(Backend::new("late")));
    assert_eq!(waiter.await.unwrap().unwrap(), "late");
}

#[tokio::test(start_paused = true)]
async fn a_call_timeout_fails_hung_calls_and_ejects_the_endpoint() {
    let hung = Backend::new("hung").with_latency(Duration::from_secs(3600));
    let mut balance: Lb = Builder::new(RoundRobin)
        .call_timeout(Duration::from_millis(100))
        .ejection(Ejection::default().consecutive_failures(2))
        .build_static([("hung", Endpoint::new(hung)), ("fine", Endpoint::new(Backend::new("fine")))]);
    let counts = send(&mut balance, 6).await;
    assert_eq!(counts.get("error"), Some(&2), "two hung calls time out, then it is ejected: {counts:?}");
    settle().await;
    assert_eq!(state_of(&balance, "hung").await, EndpointState::Ejected);
    let error = {
        let snapshot = balance.handle().endpoints().await.unwrap();
        snapshot.into_iter().find(|e| e.key == "hung").unwrap().last_error.unwrap()
    };
    assert!(error.contains("2 failures in a row"), "{error}");
}
