//! The HTTP listener: mounts the Consul-compatible API (`consul/`) beside the node's own
//! operational endpoints, which live here: `/health` (this node's liveness: is there a leader;
//! not Consul's `/v1/health` nor the check runner), Prometheus metrics (`/metrics`,
//! `/v1/agent/metrics?format=prometheus`) and Prometheus HTTP service discovery
//! (`/v1/prometheus/sd`). Unknown paths get the Consul API's 404.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::get,
};

use waggle_core::acl::{Access, Resource};

use crate::{consul, metrics::RequestCounts, node::Node};

/// What the operational endpoints read.
#[derive(Clone)]
struct OpsState {
    node: Arc<Node>,
    requests: Arc<RequestCounts>,
}

/// Every route of the HTTP listener bound at `http_addr` (the Consul node address).
pub(crate) fn router(node: Arc<Node>, requests: Arc<RequestCounts>, http_addr: std::net::SocketAddr) -> Router {
    let consul = consul::router(node.clone(), http_addr);
    Router::new()
        .route("/health", get(liveness))
        .route("/metrics", get(prometheus))
        .route("/v1/agent/metrics", get(agent_metrics))
        .route("/v1/prometheus/sd", get(service_discovery))
        .with_state(OpsState { node, requests })
        .merge(consul)
        .fallback(consul::not_found)
}

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The metrics, for a caller with `agent:read` (or anyone, with `--metrics-public`).
async fn prometheus(State(state): State<OpsState>, headers: HeaderMap, uri: Uri) -> Response {
    if !state.node.metrics_public() {
        let allowed = state
            .node
            .caller(consul::request_token(&headers, &uri).as_deref())
            .and_then(|c| c.check(Resource::Agent, "", Access::Read));
        if let Err(e) = allowed {
            return consul::ConsulError::from(e).into_response();
        }
    }
    let node = &state.node;
    let (revision, services) = node.read_model().services();
    let reading = crate::metrics::Reading {
        status: node.status(),
        is_leader: node.is_leader(),
        members: node.members().2.len(),
        revision: revision.get(),
        sessions: node.tracked_sessions(),
        checks: node.checks().len(),
        services: crate::metrics::by_status(&services),
    };
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], crate::metrics::render(&reading, &state.requests)).into_response()
}

#[derive(serde::Deserialize)]
struct MetricsQuery {
    format: Option<String>,
}

/// Consul's metrics endpoint: Prometheus text with `?format=prometheus`; the JSON form is not
/// served (400 says so).
async fn agent_metrics(
    State(state): State<OpsState>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<MetricsQuery>,
) -> Response {
    match q.format.as_deref() {
        Some("prometheus") => prometheus(State(state), headers, uri).await,
        _ => (StatusCode::BAD_REQUEST, "only ?format=prometheus is supported\n").into_response(),
    }
}

#[derive(serde::Deserialize)]
struct SdQuery {
    service: Option<String>,
}

/// Prometheus `http_sd_configs`: a target group per passing instance (optionally of one
/// `?service=`), with `__meta_waggle_*` labels.
async fn service_discovery(
    State(state): State<OpsState>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<SdQuery>,
) -> Response {
    if let Some(service) = &q.service
        && let Err(e) = waggle_core::ServiceName::new(service)
    {
        return (StatusCode::BAD_REQUEST, format!("invalid service: {e}\n")).into_response();
    }
    let caller = match state.node.caller(consul::request_token(&headers, &uri).as_deref()) {
        Ok(caller) => caller,
        Err(e) => return consul::ConsulError::from(e).into_response(),
    };
    let (_, mut services) = state.node.read_model().services();
    // Only the services the token may read.
    services.retain(|(name, _)| caller.may(Resource::Service, name.as_str(), Access::Read));
    Json(crate::metrics::targets(&services, q.service.as_deref())).into_response()
}

/// This node's liveness: 200 with `{"status":"ok",...}` when the node knows a leader; 503
/// otherwise.
async fn liveness(State(state): State<OpsState>) -> (StatusCode, Json<serde_json::Value>) {
    let node = &state.node;
    let status = node.status();
    let running = node.running();
    let leader = status.leader.filter(|_| running);
    let body = serde_json::json!({
        "status": if !running { "stopped" } else if leader.is_some() { "ok" } else { "no-leader" },
        "is_leader": node.is_leader(),
        "revision": node.read_model().revision().get(),
        "raft": status,
    });
    let code = if leader.is_some() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body))
}
