//! One run of an active health check: HTTP, TCP connect or gRPC health. Each answers a status
//! and an output in Consul's words; the caller bounds the run with the check's timeout.

use std::time::Duration;

use http_body_util::BodyExt;
use waggle_core::{CheckKind, HealthStatus, check_limits::MAX_OUTPUT};

/// Runs the check once.
pub(crate) async fn run(kind: &CheckKind, timeout: Duration) -> (HealthStatus, String) {
    match kind {
        CheckKind::Http { url, method, headers, body, .. } => http(url, method, headers, body).await,
        CheckKind::Tcp { address } => match tokio::net::TcpStream::connect(address.as_str()).await {
            Ok(_) => (HealthStatus::Passing, format!("TCP connect {address}: Success")),
            Err(e) => (HealthStatus::Critical, format!("dial tcp {address}: {e}")),
        },
        CheckKind::Grpc { address, service, .. } => grpc(address, service, timeout).await,
        // Not probed: their status is written directly.
        CheckKind::Ttl { .. } | CheckKind::Maintenance | CheckKind::Static => {
            (HealthStatus::Critical, "not an active check".into())
        }
    }
}

/// Consul's HTTP check: 2xx passing, 429 warning, anything else critical; the output carries
/// the status line and the start of the body.
async fn http(url: &str, method: &str, headers: &[(String, String)], body: &str) -> (HealthStatus, String) {
    let line = |rest: String| format!("HTTP {method} {url}: {rest}");
    match http_request(url, method, headers, body).await {
        Ok((status, text)) => {
            let health = if status.is_success() {
                HealthStatus::Passing
            } else if status == http::StatusCode::TOO_MANY_REQUESTS {
                HealthStatus::Warning
            } else {
                HealthStatus::Critical
            };
            let reason = status.canonical_reason().unwrap_or("");
            (health, line(format!("{} {reason} Output: {text}", status.as_u16())))
        }
        Err(e) => (HealthStatus::Critical, line(e)),
    }
}

async fn http_request(
    url: &str,
    method: &str,
    headers: &[(String, String)],
    body: &str,
) -> Result<(http::StatusCode, String), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// checks are supported (docs/compatibility.md)".into());
    }
    let authority = uri.authority().ok_or("the URL has no host")?.clone();
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port)).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    let connection = tokio::spawn(connection);
    let method = http::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = http::Request::builder().method(method).uri(path);
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !has("host") {
        request = request.header(http::header::HOST, authority.as_str());
    }
    if !has("user-agent") {
        request = request.header(http::header::USER_AGENT, "Waggle Health Check");
    }
    if !has("accept") {
        request = request.header(http::header::ACCEPT, "text/plain, text/*, */*");
    }
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(body.as_bytes())))
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    // Keep the first 4 KiB of the body as output; the rest is read and dropped.
    let mut body = response.into_body();
    let mut text = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(data) = frame.data_ref() {
            let room = MAX_OUTPUT.saturating_sub(text.len());
            text.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    connection.abort();
    Ok((status, String::from_utf8_lossy(&text).into_owned()))
}

/// The standard `grpc.health.v1.Health/Check`: passing when SERVING.
async fn grpc(address: &str, service: &str, timeout: Duration) -> (HealthStatus, String) {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let target = if service.is_empty() { address.to_owned() } else { format!("{address}/{service}") };
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{address}")) {
        Ok(e) => e.connect_timeout(timeout).timeout(timeout),
        Err(e) => return (HealthStatus::Critical, format!("gRPC {target}: {e}")),
    };
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => return (HealthStatus::Critical, format!("gRPC {target}: {e}")),
    };
    match HealthClient::new(channel).check(HealthCheckRequest { service: service.to_owned() }).await {
        Ok(answer) => match answer.into_inner().status() {
            ServingStatus::Serving => (HealthStatus::Passing, format!("gRPC check {target}: success")),
            other => (HealthStatus::Critical, format!("gRPC check {target}: {}", other.as_str_name())),
        },
        Err(status) => (HealthStatus::Critical, format!("gRPC check {target}: {} {}", status.code(), status.message())),
    }
}
