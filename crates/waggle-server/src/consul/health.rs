//! Consul's `/v1/health` (service health entries, checks by service, node and state) — the
//! Consul API's name for checks as readers see them, not the leader's check runner.

use axum::{
    extract::{Path, RawQuery, State},
    response::Response,
};
use serde_json::Value;

use super::request::Auth;
use super::{
    render::{HEALTH_MAPS, all_instances, health_entry, instance_checks, instances, serf_check, service_query},
    request::{
        ConsulError, ConsulState, answer, bad_request, blocking, node_name, params, plain_query, service_name,
        unfiltered,
    },
};
use crate::node::Caller;

pub(super) async fn health_service(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    service_query(&state, &caller, &name, raw, health_entry, HEALTH_MAPS, true).await
}

/// `GET /v1/health/checks/:service`: its instances' checks.
pub(super) async fn health_checks(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    let p = unfiltered(params(raw)?)?;
    let name = service_name(&name)?;
    let index = blocking(&state, &caller, &p).await?;
    let checks: Vec<Value> =
        instances(&state, &caller, &name, &p.tags).iter().flat_map(|i| instance_checks(&state, i)).collect();
    Ok(answer(&state, index, Value::Array(checks)))
}

/// Every check: the node's, then each instance's.
pub(super) fn all_checks(state: &ConsulState, caller: &Caller) -> Vec<Value> {
    std::iter::once(serf_check(state))
        .chain(all_instances(state, caller).iter().flat_map(|i| instance_checks(state, i)))
        .collect()
}

/// `GET /v1/health/node/:node`.
pub(super) async fn health_node(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(node): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    let index = plain_query(&state, &caller, raw).await?;
    let checks = if node == node_name(&state) { all_checks(&state, &caller) } else { Vec::new() };
    Ok(answer(&state, index, Value::Array(checks)))
}

/// `GET /v1/health/state/:state` (`any`, `passing`, `warning`, `critical`).
pub(super) async fn health_state(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(wanted): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    if !["any", "passing", "warning", "critical"].contains(&wanted.as_str()) {
        return Err(bad_request(format!("Invalid check state {wanted:?}: any, passing, warning or critical")));
    }
    let index = plain_query(&state, &caller, raw).await?;
    let checks: Vec<Value> =
        all_checks(&state, &caller).into_iter().filter(|c| wanted == "any" || c["Status"] == wanted.as_str()).collect();
    Ok(answer(&state, index, Value::Array(checks)))
}
