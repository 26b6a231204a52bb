//! Health checks: how an instance registered through the agent API is checked, and the
//! replicated state of each check. The leader runs the checks; only a status transition is
//! written to the log (with the output that caused it), so a healthy fleet costs no writes.

use crate::{HealthStatus, InstanceId, ServiceName, ValidationError};

/// Limits on check definitions (documented in docs/compatibility.md).
pub mod check_limits {
    /// Most checks per instance.
    pub const MAX_CHECKS: usize = 32;
    /// Longest check id, name, URL or target, in bytes.
    pub const MAX_ID: usize = 256;
    /// Longest notes / output kept, in bytes (Consul keeps 4 KiB of output too).
    pub const MAX_OUTPUT: usize = 4 * 1024;
    /// Longest HTTP check body, in bytes.
    pub const MAX_BODY: usize = 64 * 1024;
    /// Most HTTP check headers.
    pub const MAX_HEADERS: usize = 64;
    /// Shortest interval or TTL (Waggle allows faster checks than Consul's 1 s).
    pub const MIN_INTERVAL_MS: u64 = 100;
    /// Longest interval, TTL, timeout or deregistration delay (24 h).
    pub const MAX_DURATION_MS: u64 = 24 * 60 * 60 * 1_000;
    /// Default timeout of active checks (Consul's).
    pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
}

use check_limits::*;

/// What runs a check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "type")]
pub enum CheckKind {
    /// The client reports its status (`check/pass|warn|fail|update`); the check turns critical
    /// when no report arrives within `ttl_ms`.
    Ttl {
        /// How long a report is good for.
        ttl_ms: u64,
    },
    /// An HTTP request every interval: 2xx is passing, 429 warning, anything else critical.
    Http {
        /// `http://` or `https://` URL.
        url: String,
        /// Request method (default GET).
        method: String,
        /// Request headers, in order (a name may repeat).
        headers: Vec<(String, String)>,
        /// Request body.
        body: String,
        /// Accept any certificate (https only).
        tls_skip_verify: bool,
    },
    /// A TCP connection every interval: passing when it connects.
    Tcp {
        /// `host:port`.
        address: String,
    },
    /// The standard `grpc.health.v1.Health/Check` every interval: passing when SERVING.
    Grpc {
        /// `host:port`.
        address: String,
        /// The service asked about (empty: the server as a whole).
        service: String,
        /// Connect with TLS.
        tls: bool,
    },
    /// Maintenance mode: critical while present, its notes hold the reason.
    Maintenance,
    /// A check nothing runs: its status is set by writes only (catalog registrations).
    Static,
}

impl CheckKind {
    /// True for the kinds the leader probes every interval.
    pub fn is_active(&self) -> bool {
        matches!(self, CheckKind::Http { .. } | CheckKind::Tcp { .. } | CheckKind::Grpc { .. })
    }

    /// Consul's name for the kind (`Type` in check JSON).
    pub fn type_name(&self) -> &'static str {
        match self {
            CheckKind::Ttl { .. } => "ttl",
            CheckKind::Http { .. } => "http",
            CheckKind::Tcp { .. } => "tcp",
            CheckKind::Grpc { .. } => "grpc",
            CheckKind::Maintenance => "maintenance",
            CheckKind::Static => "",
        }
    }
}

/// A check definition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckSpec {
    /// Unique among the checks of the node (Consul's `CheckID`).
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Free text (for maintenance: the reason).
    pub notes: String,
    /// What runs it.
    pub kind: CheckKind,
    /// Time between runs of an active check.
    pub interval_ms: u64,
    /// How long one run may take (active checks).
    pub timeout_ms: u64,
    /// Consecutive successes needed to turn passing (0 and 1: the first).
    pub success_before_passing: u32,
    /// Consecutive failures needed to turn critical (0 and 1: the first).
    pub failures_before_critical: u32,
    /// Remove the instance once this check has been critical this long (0: never).
    pub deregister_after_ms: u64,
    /// The status before the first result (Consul's default is critical).
    pub initial: HealthStatus,
}

impl CheckSpec {
    /// A check of `kind` with Consul's defaults: critical until it first passes, a 10 s
    /// timeout, no thresholds, never deregisters.
    pub fn new(id: impl Into<String>, name: impl Into<String>, kind: CheckKind) -> Self {
        CheckSpec {
            id: id.into(),
            name: name.into(),
            notes: String::new(),
            kind,
            interval_ms: 0,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            success_before_passing: 0,
            failures_before_critical: 0,
            deregister_after_ms: 0,
            initial: HealthStatus::Critical,
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_text("check.id", &self.id, MAX_ID, false)?;
        check_text("check.name", &self.name, MAX_ID, true)?;
        check_text("check.notes", &self.notes, MAX_OUTPUT, true)?;
        let duration = |field: &'static str, ms: u64, min: u64| {
            if ms < min || ms > MAX_DURATION_MS {
                Err(ValidationError::new(field, format!("must be between {min} ms and 24h (got {ms} ms)")))
            } else {
                Ok(())
            }
        };
        if self.deregister_after_ms != 0 {
            duration("check.deregister_critical_service_after", self.deregister_after_ms, 1_000)?;
        }
        match &self.kind {
            CheckKind::Ttl { ttl_ms } => duration("check.ttl", *ttl_ms, MIN_INTERVAL_MS)?,
            CheckKind::Maintenance | CheckKind::Static => {}
            active => {
                duration("check.interval", self.interval_ms, MIN_INTERVAL_MS)?;
                duration("check.timeout", self.timeout_ms, 1)?;
                match active {
                    CheckKind::Http { url, method, headers, body, .. } => {
                        check_url(url)?;
                        if method.is_empty() || method.len() > 32 || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                            return Err(ValidationError::new(
                                "check.method",
                                format!("must be an uppercase HTTP method (got {method:?})"),
                            ));
                        }
                        if headers.len() > MAX_HEADERS {
                            return Err(ValidationError::new("check.header", format!("at most {MAX_HEADERS} headers")));
                        }
                        for (name, value) in headers {
                            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                                return Err(ValidationError::new("check.header", format!("bad header name {name:?}")));
                            }
                            check_text("check.header", value, MAX_OUTPUT, true)?;
                        }
                        if body.len() > MAX_BODY {
                            return Err(ValidationError::new("check.body", format!("at most {MAX_BODY} bytes")));
                        }
                    }
                    CheckKind::Tcp { address } => check_host_port("check.tcp", address)?,
                    CheckKind::Grpc { address, service, .. } => {
                        check_host_port("check.grpc", address)?;
                        check_text("check.grpc", service, MAX_ID, true)?;
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// Checks a check id (the rule `CheckSpec::validate` applies), naming `field`.
pub(crate) fn check_check_id(field: &'static str, id: &str) -> Result<(), ValidationError> {
    check_text(field, id, MAX_ID, false)
}

fn check_text(field: &'static str, s: &str, max: usize, empty_ok: bool) -> Result<(), ValidationError> {
    if (!empty_ok && s.is_empty()) || s.len() > max {
        let need = if empty_ok { "at most" } else { "1 to" };
        return Err(ValidationError::new(field, format!("must be {need} {max} bytes (got {})", s.len())));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(ValidationError::new(field, "must not contain control characters"));
    }
    Ok(())
}

fn check_url(url: &str) -> Result<(), ValidationError> {
    let err = |why: &str| ValidationError::new("check.http", format!("{why} (got {url:?})"));
    check_text("check.http", url, MAX_ID, false)?;
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| err("must be an http:// or https:// URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
        return Err(err("must name a host"));
    }
    if url.contains(char::is_whitespace) {
        return Err(err("must not contain spaces"));
    }
    Ok(())
}

/// `host:port` (IPv6 bracketed), port 1–65535.
pub(crate) fn check_host_port(field: &'static str, s: &str) -> Result<(), ValidationError> {
    let err = || ValidationError::new(field, format!("must be host:port (got {s:?})"));
    let (host, port) = s.rsplit_once(':').ok_or_else(err)?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(err()),
    }
    crate::validate::check_address(host).map_err(|_| err())
}

/// A check with its replicated state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Check {
    /// The definition.
    pub spec: CheckSpec,
    /// The current status.
    pub status: HealthStatus,
    /// The output of the run that set the status.
    pub output: String,
}

impl Check {
    /// A new check in its initial status.
    pub fn new(spec: CheckSpec) -> Self {
        let status = match spec.kind {
            CheckKind::Maintenance => HealthStatus::Critical,
            _ => spec.initial,
        };
        Check { spec, status, output: String::new() }
    }
}

/// A status transition of one check, decided by the leader (or reported through a TTL check).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckUpdate {
    /// The instance's service.
    pub service: ServiceName,
    /// The instance.
    pub instance: InstanceId,
    /// The check's id.
    pub check: String,
    /// The new status.
    pub status: HealthStatus,
    /// The output explaining it (cut to 4 KiB).
    pub output: String,
}

/// Cuts `output` to [`check_limits::MAX_OUTPUT`] bytes on a character boundary.
pub fn truncate_output(mut output: String) -> String {
    if output.len() > MAX_OUTPUT {
        let mut end = MAX_OUTPUT;
        while !output.is_char_boundary(end) {
            end -= 1;
        }
        output.truncate(end);
    }
    output
}

/// An instance's status from its checks: as bad as the worst one.
pub fn aggregate<'a>(checks: impl IntoIterator<Item = &'a Check>) -> HealthStatus {
    checks.into_iter().map(|c| c.status).max().unwrap_or(HealthStatus::Passing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(url: &str) -> CheckSpec {
        let kind = CheckKind::Http {
            url: url.into(),
            method: "GET".into(),
            headers: vec![],
            body: String::new(),
            tls_skip_verify: false,
        };
        CheckSpec { interval_ms: 1_000, ..CheckSpec::new("c", "", kind) }
    }

    #[test]
    fn definitions_are_validated() {
        assert!(http("http://127.0.0.1:8080/health").validate().is_ok());
        assert_eq!(http("ftp://x/").validate().expect_err("scheme").field, "check.http");
        assert_eq!(http("http:///x").validate().expect_err("host").field, "check.http");
        assert_eq!(
            CheckSpec { interval_ms: 0, ..http("http://a/") }.validate().expect_err("interval").field,
            "check.interval"
        );
        let tcp =
            |a: &str| CheckSpec { interval_ms: 1_000, ..CheckSpec::new("t", "", CheckKind::Tcp { address: a.into() }) };
        assert!(tcp("127.0.0.1:80").validate().is_ok());
        assert!(tcp("[::1]:80").validate().is_ok());
        assert!(tcp("db.local:5432").validate().is_ok());
        for bad in ["127.0.0.1", "127.0.0.1:0", "a b:1", ":80"] {
            assert_eq!(tcp(bad).validate().expect_err(bad).field, "check.tcp", "{bad}");
        }
        let ttl = |ms| CheckSpec::new("t", "", CheckKind::Ttl { ttl_ms: ms });
        assert!(ttl(1_000).validate().is_ok());
        assert_eq!(ttl(0).validate().expect_err("ttl").field, "check.ttl");
        assert_eq!(CheckSpec::new("", "", CheckKind::Static).validate().expect_err("id").field, "check.id");
    }

    #[test]
    fn status_is_the_worst_check() {
        let mut a = Check::new(CheckSpec::new("a", "", CheckKind::Static));
        let mut b = a.clone();
        assert_eq!(aggregate([]), HealthStatus::Passing);
        a.status = HealthStatus::Passing;
        b.status = HealthStatus::Warning;
        assert_eq!(aggregate([&a, &b]), HealthStatus::Warning);
        assert_eq!(Check::new(CheckSpec::new("m", "", CheckKind::Maintenance)).status, HealthStatus::Critical);
        assert_eq!(truncate_output("é".repeat(3_000)).len(), 4_096);
    }
}
