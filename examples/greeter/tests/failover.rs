//! End to end: three real replica processes behind a real Waggle server, called through the
//! SDK's service client. Killing a replica mid-traffic, or one answering UNAVAILABLE for a
//! while, must cost the caller nothing; retries stay within the budget.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use tonic::Request;
use waggle_balance::EndpointState;
use waggle_balance::balance::Ejection;
use waggle_client::Client;
use waggle_greeter::pb::HelloRequest;
use waggle_greeter::pb::greeter_client::GreeterClient;
use waggle_resilience::Idempotency;
use waggle_resilience::retry::RetryBudget;
use waggle_server::{Server, ServerConfig};

/// A replica process and its address, killed (SIGKILL) when dropped.
struct ReplicaProcess(Child, String);

impl Drop for ReplicaProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_replica(registry: &str, name: &str, extra: &[&str]) -> ReplicaProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_waggle-greeter"))
        .args(["--registry", registry, "replica", "--name", name, "--ttl-ms", "2000"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("replica starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("ready"), "replica {name}: {line}");
    let addr = line.trim().rsplit(' ').next().unwrap().to_owned();
    ReplicaProcess(child, addr)
}

async fn start_registry(dir: &std::path::Path) -> (Server, String) {
    let server = Server::start(ServerConfig::ephemeral(dir)).await.unwrap();
    let url = format!("http://{}", server.grpc_addr());
    (server, url)
}

/// Waits (at most 10 s) until `n` endpoints are ready in the service client's balancer.
async fn wait_until_ready(endpoints: &waggle_balance::Handle<waggle_client::InstanceId>, n: usize) {
    let ready = async {
        while endpoints.endpoints().await.unwrap().iter().filter(|e| e.state == EndpointState::Ready).count() < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), ready).await.expect("replicas discovered");
}

/// Calls the greeter from `clients` concurrent loops until `stop`; returns (ok, failed).
fn call_loops(
    greeter: &GreeterClient<waggle_client::ServiceClient>,
    clients: usize,
    stop: &Arc<AtomicBool>,
) -> (Arc<AtomicU64>, Arc<AtomicU64>, Vec<tokio::task::JoinHandle<()>>) {
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let tasks = (0..clients)
        .map(|_| {
            let (mut greeter, ok, failed, stop) = (greeter.clone(), ok.clone(), failed.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(SeqCst) {
                    let mut request = Request::new(HelloRequest { name: "e2e".into() });
                    request.extensions_mut().insert(Idempotency::Idempotent);
                    match greeter.say_hello(request).await {
                        Ok(_) => ok.fetch_add(1, SeqCst),
                        Err(status) => {
                            eprintln!("caller saw: {status}");
                            failed.fetch_add(1, SeqCst)
                        }
                    };
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();
    (ok, failed, tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_replica_mid_traffic_costs_the_caller_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, registry) = start_registry(dir.path()).await;
    let mut replicas: Vec<_> = ["r0", "r1", "r2"].iter().map(|n| Some(spawn_replica(&registry, n, &[]))).collect();

    let client = Client::connect(&registry).await.unwrap();
    let budget = RetryBudget::default();
    let service = client.service("greeter").budget(budget.clone()).build().unwrap();
    let endpoints = service.endpoints().clone();
    wait_until_ready(&endpoints, 3).await;
    let greeter = GreeterClient::new(service.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, tasks) = call_loops(&greeter, 4, &stop);

    tokio::time::sleep(Duration::from_millis(1000)).await;
    let before_kill = ok.load(SeqCst);
    replicas[0] = None; // SIGKILL, mid-traffic
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop.store(true, SeqCst);
    for task in tasks {
        task.await.unwrap();
    }

    let (ok, failed) = (ok.load(SeqCst), failed.load(SeqCst));
    assert!(before_kill > 100 && ok > before_kill + 100, "traffic flowed before and after: {before_kill}, {ok}");
    assert_eq!(failed, 0, "no failure reached the caller ({ok} calls)");
    let (requests, retries) = budget.counts();
    assert!(retries as f64 <= 0.2 * requests as f64 + 100.0, "{retries} retries for {requests} requests");
    println!("kill: {ok} calls, 0 failures, {retries} retries ({requests} requests)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_replica_is_ejected_then_readmitted() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, registry) = start_registry(dir.path()).await;
    let _r0 = spawn_replica(&registry, "r0", &[]);
    let _r1 = spawn_replica(&registry, "r1", &[]);
    // r2 answers UNAVAILABLE from 1 s to 3 s after it starts.
    let _r2 = spawn_replica(&registry, "r2", &["--unavailable-from-ms", "1000", "--unavailable-until-ms", "3000"]);

    let client = Client::connect(&registry).await.unwrap();
    // Envoy's outlier rules with a 500 ms base ejection, so the test sees re-admission soon.
    let ejection = Ejection::outlier_detection().base(Duration::from_millis(500));
    let service = client.service("greeter").ejection(ejection).build().unwrap();
    let endpoints = service.endpoints().clone();
    wait_until_ready(&endpoints, 3).await;
    let greeter = GreeterClient::new(service.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, tasks) = call_loops(&greeter, 4, &stop);

    let mut was_ejected = false;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        let snapshot = endpoints.endpoints().await.unwrap();
        was_ejected |= snapshot.iter().any(|e| e.state == EndpointState::Ejected);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failures_of_r2 = endpoints.endpoints().await.unwrap().iter().map(|e| e.failures).max().unwrap();
    let successes_before = endpoints.endpoints().await.unwrap().iter().map(|e| e.successes).min().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    let snapshot = endpoints.endpoints().await.unwrap();
    assert!(was_ejected, "the unavailable replica was ejected");
    assert!(failures_of_r2 > 0);
    assert!(snapshot.iter().all(|e| e.state == EndpointState::Ready), "re-admitted: {snapshot:?}");
    assert!(snapshot.iter().map(|e| e.successes).min().unwrap() > successes_before, "all three serve again");
    assert_eq!(failed.load(SeqCst), 0, "UNAVAILABLE answers were retried elsewhere ({} calls)", ok.load(SeqCst));
    let ejections: u64 = snapshot.iter().map(|e| e.ejections).sum();
    println!(
        "unavailable: {} calls, 0 failures, {failures_of_r2} failed answers absorbed, {ejections} ejections",
        ok.load(SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_replica_costs_one_attempt_and_is_ejected() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, registry) = start_registry(dir.path()).await;
    let _r0 = spawn_replica(&registry, "r0", &[]);
    let _r1 = spawn_replica(&registry, "r1", &[]);
    let frozen = spawn_replica(&registry, "r2", &[]);

    let client = Client::connect(&registry).await.unwrap();
    let service = client.service("greeter").attempt_timeout(Duration::from_millis(300)).build().unwrap();
    let endpoints = service.endpoints().clone();
    wait_until_ready(&endpoints, 3).await;
    // SIGSTOP: the process keeps its sockets open but never answers (a hung JVM, a partition
    // without resets) — the case only an attempt timeout can catch.
    let pid = frozen.0.id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());

    let greeter = GreeterClient::new(service.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, tasks) = call_loops(&greeter, 4, &stop);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    let snapshot = endpoints.endpoints().await.unwrap();
    assert_eq!(failed.load(SeqCst), 0, "hung attempts were retried elsewhere ({} calls)", ok.load(SeqCst));
    assert!(ok.load(SeqCst) > 500, "traffic kept flowing: {}", ok.load(SeqCst));
    // Ejected after its attempts timed out, or already gone: its session expired, since a
    // frozen process sends no keepalives either.
    let frozen_now = snapshot.iter().find(|e| e.key.as_str() == frozen.1);
    assert!(frozen_now.is_none_or(|e| e.ejections > 0), "the frozen replica is out: {snapshot:?}");
}
