//! A real Prometheus (Debian's `prometheus`, installed by `.ci/run`) against a real server:
//! it scrapes `/metrics` (so the exposition format parses), and discovers registered
//! instances through `http_sd_configs` pointed at `/v1/prometheus/sd`. Every address is on
//! 127.0.0.1; the discovered targets are local ports nothing listens on. Interop tier: run by
//! `cargo test --workspace -- --include-ignored`, where a missing `prometheus` fails it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{KillOnDrop, PATIENCE, Proc, Server, free_port, http_get, poll};
use tempfile::TempDir;

#[test]
#[ignore = "interop: needs prometheus"]
fn prometheus_scrapes_metrics_and_discovers_instances_over_http_sd() {
    support::require_tool("prometheus", "apt install prometheus");
    let dir = TempDir::new().unwrap();
    let server = Server::start(&dir.path().join("data"), "127.0.0.1:0");
    let http = server.ready.http;
    let target = format!("127.0.0.1:{}", free_port());
    let mut register = Proc::spawn(
        "register",
        &["--server", &server.url(), "register", "api", &target, "--tag", "v1", "--ttl", "60s"],
    );
    register.expect_line("registered", PATIENCE, |l| l.starts_with("registered "));

    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n\
             \x20 - job_name: waggle\n    static_configs:\n      - targets: ['{http}']\n\
             \x20 - job_name: services\n    http_sd_configs:\n      - url: http://{http}/v1/prometheus/sd\n        refresh_interval: 1s\n\
             \x20   relabel_configs:\n      - source_labels: [__meta_waggle_service]\n        target_label: service\n"
        ),
    )
    .unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("Debian's prometheus is installed (apt-get install prometheus; .ci/run does it)");
    let _prometheus = KillOnDrop(child);
    let web: std::net::SocketAddr = web.parse().unwrap();

    // The registered instance is discovered, with the service label relabelled from ours.
    let discovered = poll(PATIENCE, Duration::from_millis(250), || {
        // Not listening yet: the helper panics on a refused connection.
        let (code, body) = std::panic::catch_unwind(|| http_get(web, "/api/v1/targets")).ok()?;
        let targets: Value = serde_json::from_str(&body).ok().filter(|_| code == 200)?;
        let active = targets["data"]["activeTargets"].as_array()?.clone();
        let ours = active.iter().find(|t| t["labels"]["job"] == "services")?.clone();
        let waggle = active.iter().find(|t| t["labels"]["job"] == "waggle" && t["health"] == "up")?.clone();
        Some((ours, waggle))
    });
    let (ours, _self_scrape) = discovered.expect("prometheus discovers the instance and scrapes waggle's /metrics");
    assert_eq!(ours["labels"]["instance"], target.as_str(), "{ours}");
    assert_eq!(ours["labels"]["service"], "api", "{ours}");
    assert_eq!(ours["discoveredLabels"]["__meta_waggle_tags"], ",v1,", "{ours}");

    // Waggle's own metrics are queryable: the exposition format parsed.
    let leader = poll(PATIENCE, Duration::from_millis(250), || {
        let (_, body) = http_get(web, "/api/v1/query?query=waggle_raft_is_leader");
        let answer: Value = serde_json::from_str(&body).ok()?;
        answer["data"]["result"][0]["value"][1].as_str().map(str::to_owned)
    });
    assert_eq!(leader.as_deref(), Some("1"));
}
