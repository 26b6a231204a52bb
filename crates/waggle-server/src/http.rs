//! The HTTP front-end: `/health`, Prometheus metrics (`/metrics`,
//! `/v1/agent/metrics?format=prometheus`) and Prometheus HTTP service discovery
//! (`/v1/prometheus/sd`). The Consul-compatible API mounts here later.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::{consensus::Consensus, watch::WatchHub};

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) consensus: Arc<Consensus>,
    pub(crate) hub: Arc<WatchHub>,
    pub(crate) clock: Arc<crate::sessions::SessionClock>,
    pub(crate) health: Arc<crate::health::HealthChecks>,
    pub(crate) requests: Arc<crate::metrics::RequestCounts>,
    /// The HTTP listener's address (the Consul node address).
    pub(crate) http_addr: std::net::SocketAddr,
    /// Draws new session ids (shared with the gRPC front-end).
    pub(crate) session_ids: Arc<crate::grpc::SessionIds>,
}

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(prometheus))
        .route("/v1/agent/metrics", get(agent_metrics))
        .route("/v1/prometheus/sd", get(service_discovery))
        .merge(crate::consul::routes())
        .fallback(crate::consul::not_found)
        .with_state(state)
}

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn prometheus(State(state): State<AppState>) -> impl IntoResponse {
    let (revision, services) = state.hub.services();
    let reading = crate::metrics::Reading {
        status: state.consensus.status(),
        is_leader: state.consensus.is_leader(),
        members: state.consensus.members().2.len(),
        revision: revision.get(),
        sessions: state.clock.len(),
        checks: state.health.len(),
        services: crate::metrics::by_status(&services),
    };
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], crate::metrics::render(&reading, &state.requests))
}

#[derive(serde::Deserialize)]
struct MetricsQuery {
    format: Option<String>,
}

/// Consul's metrics endpoint: Prometheus text with `?format=prometheus`; the JSON form is not
/// served (400 says so).
async fn agent_metrics(State(state): State<AppState>, Query(q): Query<MetricsQuery>) -> Response {
    match q.format.as_deref() {
        Some("prometheus") => prometheus(State(state)).await.into_response(),
        _ => (StatusCode::BAD_REQUEST, "only ?format=prometheus is supported\n").into_response(),
    }
}

#[derive(serde::Deserialize)]
struct SdQuery {
    service: Option<String>,
}

/// Prometheus `http_sd_configs`: a target group per passing instance (optionally of one
/// `?service=`), with `__meta_waggle_*` labels.
async fn service_discovery(State(state): State<AppState>, Query(q): Query<SdQuery>) -> Response {
    if let Some(service) = &q.service
        && let Err(e) = waggle_core::ServiceName::new(service)
    {
        return (StatusCode::BAD_REQUEST, format!("invalid service: {e}\n")).into_response();
    }
    let (_, services) = state.hub.services();
    Json(crate::metrics::targets(&services, q.service.as_deref())).into_response()
}

/// 200 with `{"status":"ok",...}` when the node knows a leader; 503 otherwise.
async fn health(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let status = state.consensus.status();
    let running = state.consensus.running();
    let leader = status.leader.filter(|_| running);
    let body = serde_json::json!({
        "status": if !running { "stopped" } else if leader.is_some() { "ok" } else { "no-leader" },
        "is_leader": state.consensus.is_leader(),
        "revision": state.hub.revision().get(),
        "raft": status,
    });
    let code = if leader.is_some() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body))
}
