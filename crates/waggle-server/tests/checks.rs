//! Health checks through the Consul-compatible agent API on a real node: TTL reports, HTTP /
//! TCP / gRPC probes run by the leader, thresholds, maintenance, check registration, reaping
//! of instances critical for too long, and the errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU16, Ordering},
    },
    time::Duration,
};

use serde_json::Value;
use waggle_server::{Server, ServerConfig};

mod common;
use common::{consul_index, http_get, http_get_with_head, http_send};

async fn start(dir: &std::path::Path) -> Server {
    let mut config = ServerConfig::ephemeral(dir);
    config.seed = Some(11);
    Server::start(config).await.expect("server starts")
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

async fn put(http: SocketAddr, path: &str, body: &str) -> (u16, String) {
    http_send(http, "PUT", path, body.as_bytes()).await
}

/// The checks of `service` (as `/v1/health/checks/:service` lists them), by id: (status, output).
async fn checks(http: SocketAddr, service: &str) -> Vec<(String, String, String)> {
    let (code, body) = http_get(http, &format!("/v1/health/checks/{service}")).await;
    assert_eq!(code, 200, "{body}");
    json(&body)
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (s("CheckID"), s("Status"), s("Output"))
        })
        .collect()
}

async fn status_of(http: SocketAddr, service: &str, check: &str) -> Option<(String, String)> {
    checks(http, service).await.into_iter().find(|(id, _, _)| id == check).map(|(_, s, o)| (s, o))
}

/// Waits (up to 15 s) until `check` of `service` has `status` and an output; answers it.
async fn until_status(http: SocketAddr, service: &str, check: &str, status: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let now = status_of(http, service, check).await;
        if let Some((s, output)) = &now
            && s == status
            && !output.is_empty()
        {
            return output.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "{service}/{check} never became {status}: {now:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn passing_count(http: SocketAddr, service: &str) -> usize {
    json(&http_get(http, &format!("/v1/health/service/{service}?passing")).await.1).as_array().unwrap().len()
}

#[tokio::test]
async fn ttl_checks_maintenance_and_check_registration() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let http = server.http_addr();
    let registration =
        r#"{"Name":"web","ID":"web-1","Port":8080,"Address":"10.0.0.1","Check":{"TTL":"1s","Notes":"n"}}"#;
    assert_eq!(put(http, "/v1/agent/service/register", registration).await.0, 200);
    assert_eq!(status_of(http, "web", "service:web-1").await, Some(("critical".into(), String::new())));
    assert_eq!(passing_count(http, "web").await, 0, "a new check is critical until it passes");

    // A blocking query wakes when the check passes.
    let (_, head, _) = http_get_with_head(http, "/v1/health/service/web?passing").await;
    let index = consul_index(&head);
    let blocked = tokio::spawn(async move {
        http_get_with_head(http, &format!("/v1/health/service/web?passing&index={index}&wait=10s")).await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(put(http, "/v1/agent/check/pass/service:web-1?note=all%20good", "").await.0, 200);
    let (_, head, body) = blocked.await.unwrap();
    assert!(consul_index(&head) > index);
    assert_eq!(json(&body).as_array().unwrap().len(), 1);
    assert_eq!(status_of(http, "web", "service:web-1").await, Some(("passing".into(), "all good".into())));

    // Warning and critical through pass/warn/fail/update; the agent's health endpoints agree.
    assert_eq!(put(http, "/v1/agent/check/warn/service:web-1", "").await.0, 200);
    assert_eq!(http_get(http, "/v1/agent/health/service/id/web-1").await.0, 429);
    assert_eq!(passing_count(http, "web").await, 0);
    let (code, _) = put(http, "/v1/agent/check/update/service:web-1", r#"{"Status":"critical","Output":"down"}"#).await;
    assert_eq!(code, 200);
    assert_eq!(status_of(http, "web", "service:web-1").await, Some(("critical".into(), "down".into())));
    assert_eq!(http_get(http, "/v1/agent/health/service/name/web").await.0, 503);

    // Without reports the check expires: passing, then critical once the TTL runs out.
    assert_eq!(put(http, "/v1/agent/check/pass/service:web-1", "").await.0, 200);
    assert_eq!(until_status(http, "web", "service:web-1", "critical").await, "TTL expired");

    // Maintenance: a critical check while enabled, with its reason.
    put(http, "/v1/agent/check/pass/service:web-1", "").await;
    let (code, _) = put(http, "/v1/agent/service/maintenance/web-1?enable=true&reason=upgrade", "").await;
    assert_eq!(code, 200);
    let all = checks(http, "web").await;
    assert!(all.iter().any(|(id, s, _)| id == "_service_maintenance:web-1" && s == "critical"), "{all:?}");
    let (_, agent_checks) = http_get(http, "/v1/agent/checks").await;
    assert_eq!(json(&agent_checks)["_service_maintenance:web-1"]["Notes"], "upgrade");
    assert_eq!(passing_count(http, "web").await, 0);
    // Re-registering keeps checks it does not list (maintenance included), as Consul does...
    assert_eq!(put(http, "/v1/agent/service/register", registration).await.0, 200);
    assert_eq!(checks(http, "web").await.len(), 2, "maintenance survives a re-registration");
    assert_eq!(put(http, "/v1/agent/service/maintenance/web-1?enable=False", "").await.0, 200);
    put(http, "/v1/agent/check/pass/service:web-1", "").await;
    assert_eq!(passing_count(http, "web").await, 1, "passing again once maintenance ends");
    put(http, "/v1/agent/service/maintenance/web-1?enable=1", "").await;
    // ...unless ?replace-existing-checks.
    assert_eq!(put(http, "/v1/agent/service/register?replace-existing-checks=true", registration).await.0, 200);
    assert_eq!(checks(http, "web").await.len(), 1);

    // A check registered on its own, then deregistered.
    let check = r#"{"Name":"disk","CheckID":"disk-1","ServiceID":"web-1","TTL":"30s","Status":"warning"}"#;
    assert_eq!(put(http, "/v1/agent/check/register", check).await.0, 200);
    assert_eq!(status_of(http, "web", "disk-1").await, Some(("warning".into(), String::new())));
    assert_eq!(put(http, "/v1/agent/check/deregister/disk-1", "").await.0, 200);
    assert_eq!(status_of(http, "web", "disk-1").await, None);

    // The errors.
    for (path, body, code, text) in [
        ("/v1/agent/check/pass/nope", "", 404, "Unknown check ID"),
        ("/v1/agent/check/deregister/nope", "", 404, "Unknown check ID"),
        ("/v1/agent/check/update/service:web-1", r#"{"Status":"fine"}"#, 400, "Invalid check status"),
        ("/v1/agent/check/update/service:web-1", "{", 400, "Request decode failed"),
        ("/v1/agent/check/register", r#"{"Name":"x","TTL":"1s"}"#, 400, "ServiceID is required"),
        ("/v1/agent/check/register", r#"{"Name":"x","TTL":"1s","ServiceID":"nope"}"#, 404, "does not exist"),
        ("/v1/agent/check/register", r#"{"Name":"x","ServiceID":"web-1","Interval":"1s"}"#, 400, "one of TTL"),
        (
            "/v1/agent/check/register",
            r#"{"Name":"x","ServiceID":"web-1","TCP":"h:1","Interval":"0.01s"}"#,
            400,
            "interval",
        ),
        ("/v1/agent/service/maintenance/web-1", "", 400, "Missing value for enable"),
        ("/v1/agent/service/maintenance/nope?enable=true", "", 404, "Unknown service ID"),
    ] {
        let (got, answer) = put(http, path, body).await;
        assert_eq!(got, code, "{path} {body}: {answer}");
        assert!(answer.contains(text), "{path} {body}: {answer}");
    }
    // A check id belongs to one instance; a TTL report needs a TTL check.
    let other =
        r#"{"Name":"web","ID":"web-2","Port":1,"Address":"10.0.0.2","Check":{"CheckID":"service:web-1","TTL":"5s"}}"#;
    let (code, answer) = put(http, "/v1/agent/service/register", other).await;
    assert_eq!((code, answer.contains("already used")), (400, true), "{answer}");
    let tcp =
        r#"{"Name":"t","ID":"t-1","Port":1,"Address":"127.0.0.1","Check":{"TCP":"127.0.0.1:1","Interval":"10s"}}"#;
    assert_eq!(put(http, "/v1/agent/service/register", tcp).await.0, 200);
    let (code, answer) = put(http, "/v1/agent/check/pass/service:t-1", "").await;
    assert_eq!((code, answer.contains("does not have associated TTL")), (400, true), "{answer}");

    // Catalog registrations carry checks with a status that nothing runs.
    let catalog = r#"{"Node":"n1","Address":"10.0.0.3","Service":{"Service":"legacy","ID":"l-1","Port":1},
        "Checks":[{"CheckID":"l-ok","Status":"passing"},{"CheckID":"l-slow","Status":"warning","Notes":"slow disk"}]}"#;
    assert_eq!(put(http, "/v1/catalog/register", catalog).await, (200, "true".into()));
    assert_eq!(status_of(http, "legacy", "l-slow").await, Some(("warning".into(), String::new())));
    let (_, entries) = http_get(http, "/v1/health/service/legacy").await;
    assert_eq!(json(&entries)[0]["Checks"].as_array().unwrap().len(), 3, "serfHealth and the two given");
    assert_eq!(passing_count(http, "legacy").await, 0, "a warning check keeps it out of ?passing");
    let (code, answer) = put(http, "/v1/agent/check/pass/l-slow", "").await;
    assert_eq!((code, answer.contains("does not have associated TTL")), (400, true), "{answer}");

    // Checks and their states survive a restart.
    put(http, "/v1/agent/check/pass/service:web-1", "").await;
    let grpc = server.grpc_addr();
    server.shutdown().await;
    let mut config = ServerConfig::ephemeral(dir.path());
    config.grpc_addr = grpc;
    let server = Server::start(config).await.unwrap();
    let http = server.http_addr();
    let (_, all) = http_get(http, "/v1/agent/checks").await;
    assert!(json(&all).get("service:web-1").is_some(), "{all}");
    // ...and the restarted leader runs them: without reports the TTL check expires again.
    assert_eq!(until_status(http, "web", "service:web-1", "critical").await, "TTL expired");
    server.shutdown().await;
}

/// An HTTP endpoint answering whatever status `code` holds.
async fn target(code: Arc<AtomicU16>) -> SocketAddr {
    use axum::{http::StatusCode, routing::get};
    let app = axum::Router::new().route(
        "/health",
        get(move || {
            let code = code.load(Ordering::SeqCst);
            async move { (StatusCode::from_u16(code).unwrap(), format!("said {code}")) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    addr
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn active_checks_probe_http_tcp_and_grpc_and_reap_the_dead() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let http = server.http_addr();
    let code = Arc::new(AtomicU16::new(200));
    let web = target(code.clone()).await;
    let grpc = server.grpc_addr();
    let closed = closed_port();
    let body = format!(
        r#"{{"Name":"api","ID":"api-1","Port":{port},"Address":"127.0.0.1","Checks":[
            {{"HTTP":"http://{web}/health","Interval":"100ms","FailuresBeforeCritical":2,"Header":{{"X-Probe":["1"]}}}},
            {{"TCP":"{web}","Interval":"100ms"}},
            {{"GRPC":"{grpc}","Interval":"100ms"}},
            {{"GRPC":"{grpc}/no.such.Service","Interval":"100ms","CheckID":"grpc-missing"}}]}}"#,
        port = web.port()
    );
    let (code_got, answer) = put(http, "/v1/agent/service/register", &body).await;
    assert_eq!(code_got, 200, "{answer}");
    let output = until_status(http, "api", "service:api-1:1", "passing").await;
    assert!(output.starts_with(&format!("HTTP GET http://{web}/health: 200 OK Output: said 200")), "{output}");
    assert!(until_status(http, "api", "service:api-1:2", "passing").await.contains("Success"));
    until_status(http, "api", "service:api-1:3", "passing").await;
    let missing = until_status(http, "api", "grpc-missing", "critical").await;
    assert!(missing.contains("gRPC check"), "{missing}");
    assert_eq!(passing_count(http, "api").await, 0, "one critical check makes the instance critical");

    // 429 is a warning; errors turn critical only after two consecutive failures.
    code.store(429, Ordering::SeqCst);
    until_status(http, "api", "service:api-1:1", "warning").await;
    code.store(500, Ordering::SeqCst);
    let output = until_status(http, "api", "service:api-1:1", "critical").await;
    assert!(output.contains("500 Internal Server Error Output: said 500"), "{output}");
    code.store(200, Ordering::SeqCst);
    until_status(http, "api", "service:api-1:1", "passing").await;

    // An instance critical for longer than DeregisterCriticalServiceAfter is removed.
    let doomed = format!(
        r#"{{"Name":"doomed","Port":1,"Address":"127.0.0.1",
            "Check":{{"TCP":"127.0.0.1:{closed}","Interval":"100ms","Timeout":"1s","DeregisterCriticalServiceAfter":"1s"}}}}"#
    );
    assert_eq!(put(http, "/v1/agent/service/register", &doomed).await.0, 200);
    let output = until_status(http, "doomed", "service:doomed", "critical").await;
    assert!(output.starts_with(&format!("dial tcp 127.0.0.1:{closed}")), "{output}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while http_get(http, "/v1/catalog/service/doomed").await.1 != "[]" {
        assert!(tokio::time::Instant::now() < deadline, "the critical instance was never reaped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The healthy one stays.
    assert_eq!(json(&http_get(http, "/v1/catalog/service/api").await.1).as_array().unwrap().len(), 1);
    server.shutdown().await;
}

/// A TLS listener with a fresh self-signed certificate for 127.0.0.1, for axum.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else { continue };
            // A client that refuses the certificate fails its handshake: wait for the next.
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

async fn https_target() -> SocketAddr {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = TlsListener { tcp, acceptor: tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)) };
    let app = axum::Router::new().route("/health", axum::routing::get(|| async { "secure" }));
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    addr
}

#[tokio::test]
async fn https_checks_verify_the_certificate_unless_told_not_to() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let http = server.http_addr();
    let target = https_target().await;
    let body = format!(
        r#"{{"Name":"tls","ID":"tls-1","Port":1,"Address":"127.0.0.1","Checks":[
            {{"CheckID":"skip","HTTP":"https://{target}/health","Interval":"100ms","TLSSkipVerify":true}},
            {{"CheckID":"verify","HTTP":"https://{target}/health","Interval":"100ms"}}]}}"#
    );
    assert_eq!(put(http, "/v1/agent/service/register", &body).await.0, 200);
    let output = until_status(http, "tls", "skip", "passing").await;
    assert!(output.ends_with("200 OK Output: secure"), "{output}");
    // A self-signed certificate is refused when it is verified.
    let output = until_status(http, "tls", "verify", "critical").await;
    assert!(output.contains("TLS handshake failed") && output.contains("certificate"), "{output}");
    server.shutdown().await;
}
