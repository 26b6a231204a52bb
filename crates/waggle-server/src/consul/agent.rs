//! Consul's `/v1/agent`: the agent's services (register, deregister, list, read), its checks
//! and members, the local health endpoints, and `self`.

use axum::{
    extract::{Path, RawQuery, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use waggle_core::{HealthStatus, Instance};

use super::request::Auth;
use super::{
    fields::parse_bool,
    registration::{Registration, register_agent_instance},
    render::{agent_instances, agent_service_json, instance_checks, readable},
    request::{
        ConsulError, ConsulState, DATACENTER, answer, bad_request, node_address, node_name, params, service_name,
        unfiltered,
    },
};

/// `PUT /v1/agent/service/register`: the instance belongs to the agent session (it stays until
/// deregistered); `ID` defaults to `Name`, `Address` to this node's.
pub(super) async fn agent_register(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    RawQuery(raw): RawQuery,
    body: axum::body::Bytes,
) -> Result<Response, ConsulError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| bad_request(format!("malformed query string: {e}")))?;
    let replace = match pairs.iter().find(|(k, _)| k == "replace-existing-checks") {
        None => false,
        Some((_, v)) if v.is_empty() => true,
        Some((_, v)) => parse_bool(v).ok_or_else(|| bad_request(format!("invalid replace-existing-checks {v:?}")))?,
    };
    let mut reg = Registration::parse(&body).map_err(|e| bad_request(format!("Request decode failed: {e}")))?;
    reg.replace_checks = replace;
    register_agent_instance(&state, &caller, reg, false).await?;
    Ok(StatusCode::OK.into_response())
}

/// `PUT /v1/agent/service/deregister/:id`.
pub(super) async fn agent_deregister(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response, ConsulError> {
    let Some(instance) = agent_instances(&state).into_iter().find(|i| i.spec.id.as_str() == id) else {
        return Err(ConsulError(
            StatusCode::NOT_FOUND,
            format!("Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."),
        ));
    };
    state.node.deregister(&caller, instance.spec.service.clone(), instance.spec.id.clone()).await?;
    Ok(StatusCode::OK.into_response())
}

/// `GET /v1/agent/services`: the agent's instances by id.
pub(super) async fn agent_services(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    unfiltered(params(raw)?)?;
    let mut out = serde_json::Map::new();
    let readable = |i: &std::sync::Arc<waggle_core::Instance>| {
        caller.may(waggle_core::acl::Resource::Service, i.spec.service.as_str(), waggle_core::acl::Access::Read)
    };
    for i in agent_instances(&state).into_iter().filter(readable) {
        out.insert(i.spec.id.to_string(), agent_service_json(&i));
    }
    Ok(answer(&state, state.node.read_model().revision(), Value::Object(out)))
}

/// `GET /v1/agent/service/:id`.
pub(super) async fn agent_service(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response, ConsulError> {
    match agent_instances(&state).into_iter().find(|i| i.spec.id.as_str() == id && readable(&caller, &i.spec.service)) {
        Some(i) => Ok(answer(&state, state.node.read_model().revision(), agent_service_json(&i))),
        None => Err(ConsulError(StatusCode::NOT_FOUND, format!("unknown service ID: {id}"))),
    }
}

/// `GET /v1/agent/checks`: the checks of the agent's instances, by check id.
pub(super) async fn agent_checks(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    unfiltered(params(raw)?)?;
    let checks: serde_json::Map<String, Value> = agent_instances(&state)
        .iter()
        .filter(|i| readable(&caller, &i.spec.service))
        .flat_map(|i| instance_checks(&state, i))
        .map(|c| (c["CheckID"].as_str().unwrap_or_default().to_owned(), c))
        .collect();
    Ok(answer(&state, state.node.read_model().revision(), Value::Object(checks)))
}

/// `GET /v1/agent/members`: the cluster's members, as Consul lists its servers.
pub(super) async fn agent_members(State(state): State<ConsulState>) -> Response {
    let (_, _, members) = state.node.members();
    let list: Vec<Value> = members
        .iter()
        .map(|m| {
            let (addr, port) = m.peer_address.rsplit_once(':').unwrap_or((m.peer_address.as_str(), "0"));
            json!({
                "Name": format!("waggle-{}", m.id), "Addr": addr.trim_matches(|c| c == '[' || c == ']'),
                "Port": port.parse::<u16>().unwrap_or(0), "Status": 1,
                "Tags": { "role": "consul", "dc": DATACENTER, "id": m.id.to_string(), "raft_role": m.role },
            })
        })
        .collect();
    answer(&state, state.node.read_model().revision(), Value::Array(list))
}

/// The aggregated status of instances (the worst), and its HTTP code as Consul's agent health
/// endpoints answer: 200 passing, 429 warning, 503 critical.
pub(super) fn aggregate(statuses: impl Iterator<Item = HealthStatus>) -> (&'static str, StatusCode) {
    let worst = statuses.max_by_key(|s| match s {
        HealthStatus::Passing => 0,
        HealthStatus::Warning => 1,
        _ => 2,
    });
    match worst {
        None | Some(HealthStatus::Passing) => ("passing", StatusCode::OK),
        Some(HealthStatus::Warning) => ("warning", StatusCode::TOO_MANY_REQUESTS),
        Some(_) => ("critical", StatusCode::SERVICE_UNAVAILABLE),
    }
}

pub(super) fn agent_health_json(state: &ConsulState, i: &Instance) -> Value {
    let (status, _) = aggregate(std::iter::once(i.spec.status));
    json!({ "AggregatedStatus": status, "Service": agent_service_json(i), "Checks": instance_checks(state, i) })
}

/// `GET /v1/agent/health/service/name/:name`.
pub(super) async fn agent_health_by_name(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
) -> Result<Response, ConsulError> {
    let name = service_name(&name)?;
    let mine: Vec<_> = agent_instances(&state)
        .into_iter()
        .filter(|i| i.spec.service == name && readable(&caller, &i.spec.service))
        .collect();
    if mine.is_empty() {
        return Err(ConsulError(StatusCode::NOT_FOUND, format!("ServiceName {name} Not Found")));
    }
    let (_, code) = aggregate(mine.iter().map(|i| i.spec.status));
    let body: Vec<Value> = mine.iter().map(|i| agent_health_json(&state, i)).collect();
    Ok((code, [(header::CONTENT_TYPE, "application/json")], Value::Array(body).to_string()).into_response())
}

/// `GET /v1/agent/health/service/id/:id`.
pub(super) async fn agent_health_by_id(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response, ConsulError> {
    let Some(i) =
        agent_instances(&state).into_iter().find(|i| i.spec.id.as_str() == id && readable(&caller, &i.spec.service))
    else {
        return Err(ConsulError(StatusCode::NOT_FOUND, format!("ServiceId {id} Not Found")));
    };
    let (_, code) = aggregate(std::iter::once(i.spec.status));
    Ok((code, [(header::CONTENT_TYPE, "application/json")], agent_health_json(&state, &i).to_string()).into_response())
}

pub(super) async fn agent_self(State(state): State<ConsulState>) -> Response {
    let node = node_name(&state);
    let body = json!({
        "Config": {
            "Datacenter": DATACENTER,
            "PrimaryDatacenter": DATACENTER,
            "NodeName": node,
            "NodeID": "",
            "Server": true,
            "Version": concat!(env!("CARGO_PKG_VERSION"), "-waggle"),
        },
        "Member": { "Name": node, "Addr": node_address(&state), "Port": state.http_addr.port(), "Status": 1 },
        "Meta": {},
    });
    answer(&state, state.node.read_model().revision(), body)
}
