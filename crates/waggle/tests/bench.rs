//! `waggle bench` against a real server: every Waggle workload runs to its bound, answers
//! valid JSON, and loses nothing. (Benchmarks are not tests: nothing here looks at speed.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use support::{Server, client};
use tempfile::TempDir;

fn bench(server: &Server, args: &[&str]) -> Value {
    let mut full = vec!["bench"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--json", "--quiet"]);
    let out = client(&server.url(), &full);
    assert_eq!(out.code, Some(0), "waggle {full:?} failed: {out:?}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"))
}

#[test]
fn every_workload_runs_and_reports() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(dir.path(), "127.0.0.1:0");
    let small = ["--clients", "2", "--in-flight", "2"];

    for (workload, total) in [
        ("register", "40"),
        ("keepalive", "40"),
        ("discover", "40"),
        ("churn", "40"),
        ("lock", "40"),
        ("lock-contended", "40"),
    ] {
        let mut args = vec![workload, "--total", total, "--instances", "10", "--watchers", "3"];
        args.extend_from_slice(&small);
        let r = bench(&server, &args);
        assert_eq!(r["workload"], workload);
        assert_eq!(r["target"], "waggle");
        assert_eq!((r["ops"].as_u64(), r["errors"].as_u64()), (Some(40), Some(0)), "{r}");
        let latency = &r["latency"];
        for key in ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"] {
            assert!(latency[key].as_f64().is_some_and(|v| v >= 0.0), "{workload}: {key} in {r}");
        }
        assert!(latency["p50_ms"].as_f64() <= latency["max_ms"].as_f64(), "{r}");
        if workload == "churn" {
            // 40 changes, each seen by 3 watchers.
            assert_eq!(r["delivery"]["samples"].as_u64(), Some(120), "{r}");
        }
    }

    // Fan-out: 3 changes to 5 watchers = 15 deliveries, none missing.
    let r = bench(&server, &["watch", "--watchers", "5", "--total", "3", "--clients", "2"]);
    assert_eq!((r["latency"]["samples"].as_u64(), r["errors"].as_u64()), (Some(15), Some(0)), "{r}");

    // Populate leaves its instances behind, spread over services and sessions.
    let r =
        bench(&server, &["populate", "--instances", "50", "--sessions", "5", "--watchers", "2", "--duration", "100ms"]);
    assert_eq!(r["ops"].as_u64(), Some(50), "{r}");
    let out = client(&server.url(), &["services", "--json"]);
    let services: Value = serde_json::from_str(&out.stdout).unwrap();
    let populated: u64 = services
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"].as_str().is_some_and(|n| n.starts_with("svc-")))
        .map(|s| s["instances"].as_u64().unwrap())
        .sum();
    assert_eq!(populated, 50);
}

#[test]
fn bad_bench_arguments_are_usage_errors() {
    for args in [
        vec!["bench", "register", "--total", "0"],
        vec!["bench", "register", "--clients", "0"],
        vec!["bench", "nonsense"],
        vec!["bench", "register", "--endpoint", "http://127.0.0.1:1"],
    ] {
        let out = support::run(&args);
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
    }
    let out = support::run(&["bench", "keepalive", "--target", "zookeeper", "--endpoint", "127.0.0.1:1", "--quiet"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("register"), "{out:?}");
}
