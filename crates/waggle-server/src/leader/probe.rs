//! One run of an active health check: HTTP, TCP connect or gRPC health. Each answers a status
//! and an output in Consul's words; the caller bounds the run with the check's timeout.

use std::time::Duration;

use http_body_util::BodyExt;
use waggle_core::{CheckKind, HealthStatus, check_limits::MAX_OUTPUT};

/// Runs the check once.
pub(crate) async fn run(kind: &CheckKind, timeout: Duration) -> (HealthStatus, String) {
    match kind {
        CheckKind::Http { url, method, headers, body, tls_skip_verify } => {
            http(url, method, headers, body, *tls_skip_verify).await
        }
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
async fn http(
    url: &str,
    method: &str,
    headers: &[(String, String)],
    body: &str,
    skip_verify: bool,
) -> (HealthStatus, String) {
    let line = |rest: String| format!("HTTP {method} {url}: {rest}");
    match http_request(url, method, headers, body, skip_verify).await {
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
    skip_verify: bool,
) -> Result<(http::StatusCode, String), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err("only http:// and https:// checks are supported".into()),
    };
    let authority = uri.authority().ok_or("the URL has no host")?.clone();
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let stream = tokio::net::TcpStream::connect((host, port)).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    if tls {
        let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
        let config = if skip_verify { &*tls::INSECURE } else { &*tls::VERIFIED };
        let config = config.as_ref().map_err(Clone::clone)?;
        let stream = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        send(stream, &uri, &authority, method, headers, body).await
    } else {
        send(stream, &uri, &authority, method, headers, body).await
    }
}

/// One HTTP/1.1 request over `io`: the status and the first 4 KiB of the body.
async fn send<IO>(
    io: IO,
    uri: &http::Uri,
    authority: &http::uri::Authority,
    method: &str,
    headers: &[(String, String)],
    body: &str,
) -> Result<(http::StatusCode, String), String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await.map_err(|e| e.to_string())?;
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

/// TLS for HTTPS checks (rustls with ring): certificates verified against the Mozilla roots,
/// or, with `TLSSkipVerify`, not at all (handshake signatures are still checked).
mod tls {
    use std::sync::{Arc, LazyLock};

    use rustls::{
        DigitallySignedStruct, SignatureScheme,
        client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        crypto::CryptoProvider,
        pki_types::{CertificateDer, ServerName, UnixTime},
    };

    type Config = Result<Arc<rustls::ClientConfig>, String>;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn finish(mut config: rustls::ClientConfig) -> Arc<rustls::ClientConfig> {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    pub(super) static VERIFIED: LazyLock<Config> = LazyLock::new(|| {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        Ok(finish(builder.with_root_certificates(roots).with_no_client_auth()))
    });

    pub(super) static INSECURE: LazyLock<Config> = LazyLock::new(|| {
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let verifier = Arc::new(AnyCertificate(provider));
        Ok(finish(builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth()))
    });

    /// Accepts any certificate chain (`TLSSkipVerify`), still checking handshake signatures.
    #[derive(Debug)]
    struct AnyCertificate(Arc<CryptoProvider>);

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}
