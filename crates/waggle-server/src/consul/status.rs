//! Consul's `/v1/status` (leader, peers) and `/v1/catalog/datacenters`: the cluster as Consul
//! clients ask about it.

use axum::{extract::State, response::Response};
use serde_json::json;

use super::request::{ConsulState, DATACENTER, answer};

pub(super) async fn datacenters(State(state): State<ConsulState>) -> Response {
    answer(&state, state.node.read_model().revision(), json!([DATACENTER]))
}

/// The leader's peer address (`""` without a leader), as Consul answers its server address.
pub(super) async fn status_leader(State(state): State<ConsulState>) -> Response {
    let (leader, _, members) = state.node.members();
    let addr = leader.and_then(|l| members.iter().find(|m| m.id == l)).map(|m| m.peer_address.clone());
    answer(&state, state.node.read_model().revision(), json!(addr.unwrap_or_default()))
}

/// The voters' peer addresses.
pub(super) async fn status_peers(State(state): State<ConsulState>) -> Response {
    let (_, _, members) = state.node.members();
    let peers: Vec<String> = members.into_iter().filter(|m| m.role != "learner").map(|m| m.peer_address).collect();
    answer(&state, state.node.read_model().revision(), json!(peers))
}
