//! Consul request bodies as Consul's decoder reads them: keys matched case-insensitively (and in
//! snake_case), unknown fields refused as Consul's strict decoding does, and check definitions
//! (`Check`, `Checks`, `check/register`) parsed into Waggle's checks.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use waggle_core::{CheckKind, CheckSpec, HealthStatus};

use super::request::{ConsulError, bad_request, canonical, go_duration};

/// A JSON object with its keys matched as Consul's decoder matches them.
pub(crate) type Fields = BTreeMap<String, Value>;

/// The fields Consul (1.7+, strict decoding) takes in each body, canonical (lowercase, no
/// underscores); any other answers 400 `unknown field`, as Consul does. Fields Waggle does
/// not model are accepted and ignored.
pub(crate) const SERVICE_FIELDS: &[&str] = &[
    "kind",
    "id",
    "name",
    "tags",
    "address",
    "taggedaddresses",
    "meta",
    "port",
    "socketpath",
    "check",
    "checks",
    "weights",
    "token",
    "enabletagoverride",
    "proxy",
    "connect",
    "namespace",
    "partition",
    "locality",
];

/// A catalog registration's `Service` (Consul's `AgentService`).
pub(crate) const CATALOG_SERVICE_FIELDS: &[&str] = &[
    "kind",
    "id",
    "service",
    "tags",
    "address",
    "taggedaddresses",
    "meta",
    "port",
    "socketpath",
    "weights",
    "enabletagoverride",
    "proxy",
    "connect",
    "namespace",
    "partition",
    "locality",
    "peername",
    "datacenter",
    "createindex",
    "modifyindex",
    "contenthash",
];

/// A catalog registration.
pub(crate) const CATALOG_FIELDS: &[&str] = &[
    "id",
    "node",
    "address",
    "taggedaddresses",
    "nodemeta",
    "datacenter",
    "service",
    "check",
    "checks",
    "skipnodeupdate",
    "partition",
    "locality",
    "token",
];

/// A check definition (Consul's `CheckType` / `CheckDefinition` / `HealthCheck`).
pub(crate) const CHECK_FIELDS: &[&str] = &[
    "id",
    "checkid",
    "name",
    "notes",
    "serviceid",
    "servicename",
    "servicetags",
    "token",
    "status",
    "output",
    "node",
    "type",
    "scriptargs",
    "args",
    "http",
    "header",
    "method",
    "body",
    "disableredirects",
    "tcp",
    "tcpusetls",
    "udp",
    "interval",
    "timeout",
    "ttl",
    "grpc",
    "grpcusetls",
    "tlsservername",
    "tlsskipverify",
    "aliasnode",
    "aliasservice",
    "dockercontainerid",
    "shell",
    "h2ping",
    "h2pingusetls",
    "osservice",
    "successbeforepassing",
    "failuresbeforewarning",
    "failuresbeforecritical",
    "deregistercriticalserviceafter",
    "outputmaxsize",
    "namespace",
    "partition",
    "definition",
    "exposedport",
    "interval",
    "createindex",
    "modifyindex",
];

/// Refuses a field outside `known`, in Consul's words.
pub(crate) fn strict(fields: &Fields, raw: &Value, known: &[&str]) -> Result<(), String> {
    match fields.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(unknown) => {
            // Name it as the client spelled it.
            let spelled = raw
                .as_object()
                .and_then(|o| o.keys().find(|k| canonical(k) == *unknown))
                .map_or(unknown.as_str(), String::as_str);
            Err(format!("json: unknown field {spelled:?}"))
        }
    }
}

pub(crate) fn fields_of(value: &Value, what: &str) -> Result<Fields, String> {
    match value {
        Value::Object(map) => Ok(map.iter().map(|(k, v)| (canonical(k), v.clone())).collect()),
        other => Err(format!("{what}: expected an object, got {other}")),
    }
}

/// Consul's spelling of a (canonical) field name, for error messages.
pub(super) fn field_name(key: &str) -> &str {
    const NAMES: &[&str] = &[
        "CheckID",
        "ID",
        "Name",
        "Notes",
        "Status",
        "TTL",
        "HTTP",
        "Method",
        "Header",
        "Body",
        "TLSSkipVerify",
        "TCP",
        "GRPC",
        "GRPCUseTLS",
        "Interval",
        "Timeout",
        "SuccessBeforePassing",
        "FailuresBeforeCritical",
        "DeregisterCriticalServiceAfter",
        "ServiceID",
        "Output",
    ];
    NAMES.iter().find(|n| n.to_lowercase() == key).copied().unwrap_or(key)
}

pub(super) fn string(fields: &Fields, key: &str) -> Result<String, String> {
    let shown = field_name(key);
    match fields.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("{shown}: expected a string, got {other}")),
    }
}

/// A duration field: a Go duration string (`"10s"`) or a number of nanoseconds; 0 if absent.
pub(super) fn duration_ms(fields: &Fields, key: &str) -> Result<u64, String> {
    let shown = field_name(key);
    match fields.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::String(s)) if s.is_empty() => Ok(0),
        Some(Value::String(s)) => go_duration(s)
            .map(|d| d.as_millis() as u64)
            .ok_or_else(|| format!("{shown}: invalid duration {s:?} (use Go syntax, like \"10s\")")),
        Some(Value::Number(n)) => {
            n.as_u64().map(|ns| ns / 1_000_000).ok_or_else(|| format!("{shown}: invalid duration {n}"))
        }
        Some(other) => Err(format!("{shown}: invalid duration {other}")),
    }
}

pub(super) fn count(fields: &Fields, key: &str) -> Result<u32, String> {
    let shown = field_name(key);
    match fields.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => {
            v.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| format!("{shown}: expected a count, got {v}"))
        }
    }
}

pub(super) fn flag(fields: &Fields, key: &str) -> Result<bool, String> {
    let shown = field_name(key);
    match fields.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(format!("{shown}: expected true or false, got {other}")),
    }
}

/// Go's `strconv.ParseBool`, which Consul uses for query flags.
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

pub(crate) fn parse_status(text: &str) -> Result<HealthStatus, String> {
    match text {
        "passing" => Ok(HealthStatus::Passing),
        "warning" => Ok(HealthStatus::Warning),
        "critical" => Ok(HealthStatus::Critical),
        other => Err(format!("Invalid check status: {other:?} (passing, warning or critical)")),
    }
}

/// A check definition (Consul's `AgentServiceCheck` / `CheckDefinition`). `default_id` and
/// `default_name` apply when `CheckID` / `Name` are absent. With `is_static` (catalog
/// registrations) the check only carries a status.
pub(crate) fn parse_check(
    fields: &Fields,
    default_id: &str,
    default_name: &str,
    is_static: bool,
) -> Result<CheckSpec, String> {
    for unsupported in
        ["args", "scriptargs", "dockercontainerid", "h2ping", "udp", "osservice", "aliasservice", "aliasnode"]
    {
        if fields.get(unsupported).is_some_and(|v| !v.is_null() && v != &json!([]) && v != &json!("")) {
            return Err(format!("{unsupported}: this kind of check is not supported (docs/compatibility.md)"));
        }
    }
    let mut id = string(fields, "checkid")?;
    if id.is_empty() {
        id = string(fields, "id")?;
    }
    let mut name = string(fields, "name")?;
    if name.is_empty() {
        name = default_name.to_owned();
    }
    if id.is_empty() {
        id = if default_id.is_empty() { name.clone() } else { default_id.to_owned() };
    }
    let interval_ms = duration_ms(fields, "interval")?;
    let ttl_ms = duration_ms(fields, "ttl")?;
    let (http_url, tcp, grpc) = (string(fields, "http")?, string(fields, "tcp")?, string(fields, "grpc")?);
    let kinds = [ttl_ms > 0, !http_url.is_empty(), !tcp.is_empty(), !grpc.is_empty()];
    let kind = match (is_static, kinds.iter().filter(|k| **k).count()) {
        (true, _) => CheckKind::Static,
        (false, 0) => return Err("a check needs one of TTL, HTTP, TCP or GRPC".into()),
        (false, 1) if ttl_ms > 0 => CheckKind::Ttl { ttl_ms },
        (false, 1) if !http_url.is_empty() => {
            let mut headers = Vec::new();
            match fields.get("header") {
                None | Some(Value::Null) => {}
                Some(Value::Object(map)) => {
                    for (name, values) in map {
                        match values {
                            Value::Array(list) => {
                                for v in list {
                                    let v = v.as_str().ok_or_else(|| format!("Header.{name}: expected strings"))?;
                                    headers.push((name.clone(), v.to_owned()));
                                }
                            }
                            Value::String(v) => headers.push((name.clone(), v.clone())),
                            other => return Err(format!("Header.{name}: expected a list of strings, got {other}")),
                        }
                    }
                }
                Some(other) => return Err(format!("Header: expected an object, got {other}")),
            }
            let method = string(fields, "method")?;
            CheckKind::Http {
                url: http_url,
                method: if method.is_empty() { "GET".into() } else { method },
                headers,
                body: string(fields, "body")?,
                tls_skip_verify: flag(fields, "tlsskipverify")?,
            }
        }
        (false, 1) if !tcp.is_empty() => CheckKind::Tcp { address: tcp },
        (false, 1) => {
            if flag(fields, "grpcusetls")? {
                return Err("GRPCUseTLS: TLS gRPC checks are not supported yet (docs/compatibility.md)".into());
            }
            let (address, service) = grpc.split_once('/').unwrap_or((grpc.as_str(), ""));
            CheckKind::Grpc { address: address.to_owned(), service: service.to_owned(), tls: false }
        }
        (false, _) => return Err("a check takes only one of TTL, HTTP, TCP or GRPC".into()),
    };
    let status = string(fields, "status")?;
    let timeout_ms = duration_ms(fields, "timeout")?;
    Ok(CheckSpec {
        id,
        name,
        notes: string(fields, "notes")?,
        kind,
        interval_ms,
        timeout_ms: if timeout_ms == 0 { waggle_core::check_limits::DEFAULT_TIMEOUT_MS } else { timeout_ms },
        success_before_passing: count(fields, "successbeforepassing")?,
        failures_before_critical: count(fields, "failuresbeforecritical")?,
        deregister_after_ms: duration_ms(fields, "deregistercriticalserviceafter")?,
        initial: if status.is_empty() { HealthStatus::Critical } else { parse_status(&status)? },
    })
}

/// The checks of a service registration, `Check` then `Checks`. Without a `CheckID` they are
/// named as Consul names them: `service:ID`, or `service:ID:1`, `:2`, ... when there are
/// several.
pub(crate) fn registration_checks(
    check: Option<&Value>,
    checks: Option<&Value>,
    service_id: &str,
    service_name: &str,
    is_static: bool,
) -> Result<Vec<CheckSpec>, String> {
    let mut definitions = Vec::new();
    let mut add = |check: &Value, what: &str| -> Result<(), String> {
        let fields = fields_of(check, what)?;
        strict(&fields, check, CHECK_FIELDS)?;
        definitions.push(fields);
        Ok(())
    };
    if let Some(check) = check.filter(|c| !c.is_null()) {
        add(check, "Check")?;
    }
    match checks {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for check in list {
                add(check, "Checks")?;
            }
        }
        Some(other) => return Err(format!("Checks: expected a list, got {other}")),
    }
    let name = format!("Service '{service_name}' check");
    let several = definitions.len() > 1;
    definitions
        .iter()
        .enumerate()
        .map(|(n, fields)| {
            let id = if several { format!("service:{service_id}:{}", n + 1) } else { format!("service:{service_id}") };
            parse_check(fields, &id, &name, is_static)
        })
        .collect()
}

/// A duration as Consul writes it (`10s`, `1500ms`; empty for 0).
pub(crate) fn duration_text(ms: u64) -> String {
    if ms == 0 {
        String::new()
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

/// A JSON object body.
pub(super) fn body_fields(body: &[u8]) -> Result<Fields, ConsulError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Fields::new());
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad_request(format!("Failed to decode request body: {e}")))?;
    fields_of(&value, "body").map_err(|e| bad_request(format!("Failed to decode request body: {e}")))
}

pub(super) fn text(fields: &Fields, key: &str) -> Result<Option<String>, ConsulError> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(bad_request(format!("{key}: expected a string, got {other}"))),
    }
}

pub(super) fn list<'a>(fields: &'a Fields, key: &str) -> Result<&'a [Value], ConsulError> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(bad_request(format!("{key}: expected a list, got {other}"))),
    }
}

/// The strings of a list field (anything else left out).
pub(super) fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: Value) -> Result<CheckSpec, String> {
        parse_check(&fields_of(&value, "check")?, "service:web", "Service 'web' check", false)
    }

    #[test]
    fn check_definitions_parse_like_consuls() {
        let c = parse(json!({"HTTP": "http://127.0.0.1:1/h", "Interval": "10s", "Timeout": "1s",
            "Header": {"X-A": ["1", "2"]}, "method": "POST", "SuccessBeforePassing": 2,
            "DeregisterCriticalServiceAfter": "90m"}))
        .expect("http");
        assert_eq!(c.id, "service:web");
        assert_eq!(
            (c.interval_ms, c.timeout_ms, c.success_before_passing, c.deregister_after_ms),
            (10_000, 1_000, 2, 5_400_000)
        );
        assert!(matches!(&c.kind, CheckKind::Http { method, headers, .. } if method == "POST" && headers.len() == 2));
        let ttl = parse(json!({"ttl": "15s", "check_id": "mine", "status": "passing"})).expect("ttl");
        assert_eq!((ttl.id.as_str(), ttl.initial), ("mine", HealthStatus::Passing));
        assert_eq!(ttl.kind, CheckKind::Ttl { ttl_ms: 15_000 });
        let grpc = parse(json!({"GRPC": "127.0.0.1:9/my.Svc", "Interval": 1_000_000_000u64})).expect("grpc");
        assert_eq!(grpc.kind, CheckKind::Grpc { address: "127.0.0.1:9".into(), service: "my.Svc".into(), tls: false });
        assert_eq!(grpc.interval_ms, 1_000);
        for (bad, why) in [
            (json!({"Interval": "10s"}), "one of"),
            (json!({"TTL": "10s", "TCP": "a:1"}), "only one"),
            (json!({"TTL": "soon"}), "invalid duration"),
            (json!({"Args": ["/bin/true"], "Interval": "1s"}), "not supported"),
            (json!({"TTL": "1s", "Status": "fine"}), "Invalid check status"),
            (json!({"TCP": 5}), "expected a string"),
        ] {
            let e = parse(bad.clone()).expect_err("refused");
            assert!(e.contains(why), "{bad}: {e}");
        }
        let numbered = registration_checks(
            None,
            Some(&json!([{"TTL": "5s"}, {"TCP": "a:1", "Interval": "1s"}])),
            "w1",
            "web",
            false,
        )
        .expect("checks");
        assert_eq!(numbered.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["service:w1:1", "service:w1:2"]);
        let one = registration_checks(None, Some(&json!([{"TTL": "5s"}])), "w1", "web", false).expect("one");
        assert_eq!(one[0].id, "service:w1", "numbered only when there are several");
    }
}
