//! Prometheus integration: the server's metrics in the text exposition format (`/metrics`,
//! `/v1/agent/metrics?format=prometheus`), and an HTTP service-discovery endpoint for
//! Prometheus' `http_sd_configs` (`/v1/prometheus/sd`).
//!
//! Gauges are read from the node's state at scrape time; the only counters are gRPC requests
//! by method and outcome, counted by a tower layer in front of the gRPC server. Nothing is
//! global, so several servers in one process (tests) keep separate numbers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use waggle_core::HealthStatus;

/// gRPC requests by (method, gRPC status code), counted as answers leave.
#[derive(Default)]
pub(crate) struct RequestCounts(Mutex<BTreeMap<(&'static str, u32), u64>>);

impl RequestCounts {
    fn add(&self, method: &'static str, code: u32) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner).entry((method, code)).or_insert(0) += 1;
    }

    fn snapshot(&self) -> BTreeMap<(&'static str, u32), u64> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// The last segment of a gRPC path (`/waggle.v1.Registry/Register` → `Register`,
/// `/waggle.v1.Kv/Put` → `Kv.Put`); anything else is `other`, so the label set stays bounded
/// whatever clients send.
fn method_of(path: &str) -> &'static str {
    const KV_METHODS: &[&str] = &["Kv.Put", "Kv.Get", "Kv.Delete", "Kv.Txn"];
    const LOCK_METHODS: &[&str] = &["Lock.Acquire", "Lock.Release", "Lock.Inspect", "Lock.Observe", "Lock.Proclaim"];
    if let Some(method) = path.strip_prefix("/waggle.v1.Kv/") {
        return KV_METHODS.iter().find(|m| m[3..] == *method).copied().unwrap_or("other");
    }
    if let Some(method) = path.strip_prefix("/waggle.v1.Lock/") {
        return LOCK_METHODS.iter().find(|m| m[5..] == *method).copied().unwrap_or("other");
    }
    const METHODS: &[&str] = &[
        "CreateSession",
        "KeepAlive",
        "RevokeSession",
        "Register",
        "Deregister",
        "ListServices",
        "GetService",
        "Watch",
        "ListMembers",
        "AddMember",
        "RemoveMember",
        "SaveSnapshot",
    ];
    let method = path.strip_prefix("/waggle.v1.Registry/").unwrap_or("");
    METHODS.iter().find(|m| **m == method).copied().unwrap_or("other")
}

/// A tower layer counting gRPC requests into [`RequestCounts`].
#[derive(Clone)]
pub(crate) struct CountLayer(pub(crate) Arc<RequestCounts>);

impl<S> tower::Layer<S> for CountLayer {
    type Service = Count<S>;
    fn layer(&self, inner: S) -> Count<S> {
        Count { inner, counts: self.0.clone() }
    }
}

/// See [`CountLayer`].
#[derive(Clone)]
pub(crate) struct Count<S> {
    inner: S,
    counts: Arc<RequestCounts>,
}

impl<S, B, R> tower::Service<axum::http::Request<B>> for Count<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let method = method_of(request.uri().path());
        let counts = self.counts.clone();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            if let Ok(response) = &answer {
                // An error travels in the headers (trailers-only); a streamed or successful
                // answer carries its status in trailers, counted as OK (0) here.
                let code = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                counts.add(method, code);
            }
            answer
        })
    }
}

/// What a scrape reads from the node.
pub(crate) struct Reading {
    pub(crate) status: crate::consensus::NodeStatus,
    pub(crate) is_leader: bool,
    pub(crate) members: usize,
    pub(crate) revision: u64,
    pub(crate) sessions: usize,
    pub(crate) checks: usize,
    /// (service, instances by status)
    pub(crate) services: Vec<(String, [usize; 3])>,
}

fn status_index(status: HealthStatus) -> usize {
    match status {
        HealthStatus::Passing => 0,
        HealthStatus::Warning => 1,
        _ => 2,
    }
}

/// Counts instances by status for each service.
pub(crate) fn by_status(
    services: &[(waggle_core::ServiceName, Arc<waggle_core::ServiceInstances>)],
) -> Vec<(String, [usize; 3])> {
    services
        .iter()
        .map(|(name, instances)| {
            let mut counts = [0; 3];
            for instance in instances.values() {
                counts[status_index(instance.spec.status)] += 1;
            }
            (name.to_string(), counts)
        })
        .collect()
}

/// Prometheus label values escape `\`, `"` and newlines.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Renders everything in the Prometheus text exposition format (version 0.0.4).
pub(crate) fn render(reading: &Reading, counts: &RequestCounts) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    };
    let s = &reading.status;
    gauge("waggle_raft_term", "The current Raft term.", s.term);
    gauge("waggle_raft_is_leader", "1 if this node leads the cluster.", u64::from(reading.is_leader));
    gauge("waggle_raft_leader_known", "1 if this node knows a leader.", u64::from(s.leader.is_some()));
    gauge("waggle_raft_members", "Members (voters and learners) in this node's membership.", reading.members as u64);
    gauge("waggle_raft_last_log_index", "Index of the last entry in this node's log.", s.last_log_index);
    gauge("waggle_raft_last_applied_index", "Index of the last entry applied here.", s.last_applied);
    gauge(
        "waggle_raft_snapshot_index",
        "Index covered by the latest snapshot (0: none).",
        s.snapshot_index.unwrap_or(0),
    );
    gauge("waggle_raft_log_entries", "Entries in the log on disk.", s.log_entries());
    gauge("waggle_registry_revision", "The registry's revision as applied here.", reading.revision);
    gauge("waggle_registry_sessions", "Live sessions.", reading.sessions as u64);
    gauge("waggle_health_checks", "Health checks defined (run by the leader).", reading.checks as u64);
    gauge("waggle_registry_services", "Services with at least one instance.", reading.services.len() as u64);
    let _ = writeln!(
        out,
        "# HELP waggle_registry_instances Instances by service and health status.\n# TYPE waggle_registry_instances gauge"
    );
    for (service, counts) in &reading.services {
        for (status, n) in ["passing", "warning", "critical"].iter().zip(counts) {
            let _ =
                writeln!(out, "waggle_registry_instances{{service=\"{}\",status=\"{status}\"}} {n}", label(service));
        }
    }
    let _ = writeln!(
        out,
        "# HELP waggle_grpc_requests_total gRPC requests answered, by method and gRPC status code.\n# TYPE waggle_grpc_requests_total counter"
    );
    for ((method, code), n) in counts.snapshot() {
        let _ = writeln!(out, "waggle_grpc_requests_total{{method=\"{method}\",code=\"{code}\"}} {n}");
    }
    out
}

/// Prometheus `http_sd_configs` target groups: one per instance with a passing status and a
/// port (a port-less one has nothing to scrape), with
/// `__meta_waggle_*` labels (service, instance id, tags as `,a,b,`, zone, weight, and one label
/// per metadata key, its name sanitised to `[a-zA-Z0-9_]`).
pub(crate) fn targets(
    services: &[(waggle_core::ServiceName, Arc<waggle_core::ServiceInstances>)],
    only: Option<&str>,
) -> serde_json::Value {
    let mut groups = Vec::new();
    for (name, instances) in services {
        if only.is_some_and(|only| only != name.as_str()) {
            continue;
        }
        for instance in instances.values().filter(|i| i.spec.status == HealthStatus::Passing && i.spec.port != 0) {
            let spec = &instance.spec;
            let host = if spec.address.contains(':') { format!("[{}]", spec.address) } else { spec.address.clone() };
            let mut labels = serde_json::Map::new();
            labels.insert("__meta_waggle_service".into(), name.to_string().into());
            labels.insert("__meta_waggle_instance_id".into(), spec.id.to_string().into());
            let tags: String = spec.tags.iter().map(|t| format!("{t},")).collect();
            labels.insert("__meta_waggle_tags".into(), format!(",{tags}").into());
            labels.insert(
                "__meta_waggle_zone".into(),
                spec.zone.as_ref().map(|z| z.to_string()).unwrap_or_default().into(),
            );
            labels.insert("__meta_waggle_weight".into(), spec.weight.to_string().into());
            for (key, value) in spec.meta.iter() {
                let key: String =
                    key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
                labels.insert(format!("__meta_waggle_meta_{key}"), value.to_string().into());
            }
            groups.push(serde_json::json!({ "targets": [format!("{host}:{}", spec.port)], "labels": labels }));
        }
    }
    serde_json::Value::Array(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_stay_bounded() {
        assert_eq!(method_of("/waggle.v1.Registry/Register"), "Register");
        assert_eq!(method_of("/waggle.v1.Registry/"), "other");
        assert_eq!(method_of("/evil/../x"), "other");
        assert_eq!(method_of("/waggle.v1.Registry/a\"b"), "other");
        assert_eq!(method_of("/waggle.v1.Registry/Nope"), "other", "only the service's methods get a label");
        assert_eq!(method_of("/waggle.v1.Kv/Txn"), "Kv.Txn");
        assert_eq!(method_of("/waggle.v1.Kv/Nope"), "other");
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
