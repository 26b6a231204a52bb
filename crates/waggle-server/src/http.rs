//! The HTTP front-end. For now it serves `/health`; the Consul-compatible API and `/metrics`
//! mount here later.

use std::sync::Arc;

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};

use crate::{consensus::Consensus, watch::WatchHub};

#[derive(Clone)]
struct AppState {
    consensus: Arc<Consensus>,
    hub: Arc<WatchHub>,
}

pub(crate) fn router(consensus: Arc<Consensus>, hub: Arc<WatchHub>) -> Router {
    Router::new().route("/health", get(health)).with_state(AppState { consensus, hub })
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
