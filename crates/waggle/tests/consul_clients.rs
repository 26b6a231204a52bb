//! Real Consul clients against a real server, through the Consul-compatible HTTP API:
//! VictoriaMetrics' `vmagent` (Debian `victoria-metrics`, installed by `.ci/run`) with
//! `consul_sd_configs` discovers registered instances and follows changes through blocking
//! queries. Every address is on 127.0.0.1; discovered targets are local ports nothing listens
//! on, and vmagent's remote write goes to a closed local port. And py-consul (PyPI) through
//! `python3`. Interop tier: run by `cargo test --workspace -- --include-ignored`, where a
//! missing `vmagent`, `python3` or py-consul fails them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{KillOnDrop, PATIENCE, Proc, Server, free_port, http_get, poll};
use tempfile::TempDir;

/// The `instance` labels of vmagent's active targets for job `job` (None while it is not up).
fn targets(web: std::net::SocketAddr, job: &str) -> Option<Vec<(String, Value)>> {
    // Not listening yet: the helper panics on a refused connection.
    let (code, body) = std::panic::catch_unwind(|| http_get(web, "/api/v1/targets")).ok()?;
    let answer: Value = serde_json::from_str(&body).ok().filter(|_| code == 200)?;
    let mut found: Vec<(String, Value)> = answer["data"]["activeTargets"]
        .as_array()?
        .iter()
        .filter(|t| t["labels"]["job"] == job)
        .map(|t| (t["labels"]["instance"].as_str().unwrap_or_default().to_owned(), t.clone()))
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Some(found)
}

/// Starts vmagent with the scrape configuration `config` (state under `dir`): the process and
/// its web address. Remote writes go to a closed local port.
fn spawn_vmagent(config: &std::path::Path, dir: &std::path::Path) -> (KillOnDrop, std::net::SocketAddr) {
    let web: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new("vmagent")
        .arg(format!("-promscrape.config={}", config.display()))
        .arg(format!("-httpListenAddr={web}"))
        .arg(format!("-remoteWrite.url=http://127.0.0.1:{}/api/v1/write", free_port()))
        .arg(format!("-remoteWrite.tmpDataPath={}", dir.join("vmagent").display()))
        .arg("-promscrape.consulSDCheckInterval=1s")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("Debian's victoria-metrics (vmagent) is installed (.ci/run installs it)");
    (KillOnDrop(child), web)
}

#[test]
#[ignore = "interop: needs vmagent (victoria-metrics)"]
fn vmagent_discovers_instances_through_consul_sd_and_follows_changes() {
    support::require_tool("vmagent", "apt install victoria-metrics");
    let dir = TempDir::new().unwrap();
    let server = Server::start(&dir.path().join("data"), "127.0.0.1:0");
    let http = server.ready.http;
    let first = format!("127.0.0.1:{}", free_port());
    let second = format!("127.0.0.1:{}", free_port());
    let mut register = Proc::spawn(
        "register",
        &["--server", &server.url(), "register", "api", &first, "--tag", "prod", "--meta", "team=core", "--ttl", "60s"],
    );
    register.expect_line("registered", PATIENCE, |l| l.starts_with("registered "));

    let config = dir.path().join("scrape.yml");
    std::fs::write(
        &config,
        format!(
            "scrape_configs:\n\
             \x20 - job_name: consul\n    scrape_interval: 1s\n    consul_sd_configs:\n      - server: '{http}'\n\
             \x20   relabel_configs:\n      - source_labels: [__meta_consul_service]\n        target_label: service\n\
             \x20     - source_labels: [__meta_consul_tags]\n        target_label: tags\n\
             \x20     - source_labels: [__meta_consul_service_metadata_team]\n        target_label: team\n"
        ),
    )
    .unwrap();
    let (_vmagent, web) = spawn_vmagent(&config, dir.path());

    let one = poll(PATIENCE, Duration::from_millis(250), || {
        targets(web, "consul").filter(|t| t.len() == 1 && t[0].0 == first)
    })
    .expect("vmagent discovers the registered instance");
    let labels = &one[0].1["labels"];
    assert_eq!(labels["service"], "api", "{labels}");
    assert_eq!(labels["tags"], ",prod,", "{labels}");
    assert_eq!(labels["team"], "core", "{labels}");

    // A second instance appears, then the first one goes: vmagent follows both changes.
    let mut register2 =
        Proc::spawn("register2", &["--server", &server.url(), "register", "api", &second, "--ttl", "60s"]);
    register2.expect_line("registered", PATIENCE, |l| l.starts_with("registered "));
    let both = poll(PATIENCE, Duration::from_millis(250), || targets(web, "consul").filter(|t| t.len() == 2));
    assert!(both.is_some(), "vmagent sees the second instance");
    register.sigterm();
    register.wait_exit(PATIENCE);
    let left = poll(PATIENCE, Duration::from_millis(250), || {
        targets(web, "consul").filter(|t| t.len() == 1 && t[0].0 == second)
    });
    assert!(left.is_some(), "vmagent drops the deregistered instance");
}

#[test]
#[ignore = "interop: needs python3 and py-consul"]
fn py_consul_registers_reads_blocks_and_deregisters() {
    support::require_python_module("consul", "python3 -m pip install py-consul");
    let dir = TempDir::new().unwrap();
    let server = Server::start(&dir.path().join("data"), "127.0.0.1:0");
    let http = server.ready.http;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/py_consul.py");
    let out = Command::new("python3")
        .args([script, &http.ip().to_string(), &http.port().to_string()])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim() == "ok",
        "py-consul (pip install py-consul; .ci/run does it): {stdout}\n{stderr}"
    );
}

#[test]
#[ignore = "interop: needs python3 and py-consul"]
fn py_consul_manages_acls_and_its_tokens_are_enforced() {
    support::require_python_module("consul", "python3 -m pip install py-consul");
    const ROOT: &str = "11111111-2222-4333-8444-555555555555";
    let dir = TempDir::new().unwrap();
    let server = Server::start_with_acl(dir.path(), ROOT);
    let http = server.ready.http;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/py_consul_acl.py");
    let out = Command::new("python3")
        .args([script, &http.ip().to_string(), &http.port().to_string(), ROOT])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.trim() == "ok", "py-consul ACL API: {stdout}\n{stderr}");
}

#[test]
#[ignore = "interop: needs vmagent (victoria-metrics)"]
fn vmagent_with_a_token_discovers_only_the_services_it_may_read() {
    support::require_tool("vmagent", "apt install victoria-metrics");
    const ROOT: &str = "11111111-2222-4333-8444-555555555555";
    let dir = TempDir::new().unwrap();
    let server = Server::start_with_acl(dir.path(), ROOT);
    let http = server.ready.http;
    let (seen, hidden) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let register = |name: &str, addr: &str| {
        let (host, port) = addr.split_once(':').unwrap();
        let body = format!(r#"{{"Name":"{name}","Address":"{host}","Port":{port}}}"#);
        let path = format!("/v1/agent/service/register?token={ROOT}");
        poll(PATIENCE, Duration::from_millis(50), || {
            (support::http_request(http, "PUT", &path, &body).0 == 200).then_some(())
        })
        .expect("registered with the management token");
    };
    register("api", &seen);
    register("billing", &hidden);
    // A token that may read api only (and the node).
    let policy =
        r#"{"Name":"sd","Rules":"service \"api\" { policy = \"read\" }\nnode_prefix \"\" { policy = \"read\" }"}"#;
    assert_eq!(support::http_request(http, "PUT", &format!("/v1/acl/policy?token={ROOT}"), policy).0, 200);
    let (code, token) =
        support::http_request(http, "PUT", &format!("/v1/acl/token?token={ROOT}"), r#"{"Policies":[{"Name":"sd"}]}"#);
    assert_eq!(code, 200, "{token}");
    let secret = serde_json::from_str::<Value>(&token).unwrap()["SecretID"].as_str().unwrap().to_owned();
    let config = dir.path().join("scrape.yml");
    std::fs::write(
        &config,
        format!(
            "scrape_configs:\n\
             \x20 - job_name: consul\n    scrape_interval: 1s\n    consul_sd_configs:\n      - server: '{http}'\n\
             \x20       token: '{secret}'\n"
        ),
    )
    .unwrap();
    let (_vmagent, web) = spawn_vmagent(&config, dir.path());
    let found = poll(PATIENCE, Duration::from_millis(250), || {
        targets(web, "consul").filter(|t| t.len() == 1 && t[0].0 == seen)
    });
    assert!(found.is_some(), "vmagent discovers api with the token");
    std::thread::sleep(Duration::from_secs(2));
    let targets = targets(web, "consul").unwrap_or_default();
    assert!(targets.iter().all(|(instance, _)| *instance != hidden), "billing stays hidden: {targets:?}");
}
