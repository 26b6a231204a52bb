//! The Consul agent's check API: `check/register`, `check/deregister`, TTL reports
//! (`check/pass|warn|fail|update`) and service maintenance. The checks run on the leader
//! (`leader/checks.rs`); this module only translates.

use axum::{
    extract::{Path, RawQuery, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::Value;
use waggle_core::{CheckKind, CheckSpec, HealthStatus};

use super::request::Auth;
use super::{
    fields::{CHECK_FIELDS, fields_of, parse_bool, parse_check, parse_status, strict, string},
    render::agent_instances,
    request::{ConsulError, ConsulState, bad_request},
};
use crate::node::{Caller, NodeError};

pub(super) fn unknown_check(id: &str) -> ConsulError {
    ConsulError(
        StatusCode::NOT_FOUND,
        format!("Unknown check ID {id:?}. Ensure that the check ID is passed, not the check name."),
    )
}

/// `PUT /v1/agent/check/register`: a check on one of the agent's service instances
/// (`ServiceID`); node-level checks are not modelled.
pub(crate) async fn check_register(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    body: axum::body::Bytes,
) -> Result<Response, ConsulError> {
    let value: Value = serde_json::from_slice(&body).map_err(|e| bad_request(format!("Request decode failed: {e}")))?;
    let fields = fields_of(&value, "body").map_err(|e| bad_request(format!("Request decode failed: {e}")))?;
    strict(&fields, &value, CHECK_FIELDS).map_err(|e| bad_request(format!("Request decode failed: {e}")))?;
    let service_id = string(&fields, "serviceid").map_err(|e| bad_request(format!("Request decode failed: {e}")))?;
    if service_id.is_empty() {
        return Err(bad_request("ServiceID is required: node-level checks are not supported (docs/compatibility.md)"));
    }
    let Some(instance) = agent_instances(&state).into_iter().find(|i| i.spec.id.as_str() == service_id) else {
        return Err(ConsulError(StatusCode::NOT_FOUND, format!("ServiceID {service_id:?} does not exist")));
    };
    let check = parse_check(&fields, "", "", false).map_err(|e| bad_request(format!("Invalid check: {e}")))?;
    if check.name.is_empty() {
        return Err(bad_request("Missing check name"));
    }
    state.node.put_check(&caller, instance.spec.service.clone(), instance.spec.id.clone(), check).await?;
    Ok(StatusCode::OK.into_response())
}

/// `PUT /v1/agent/check/deregister/:id`.
pub(crate) async fn check_deregister(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response, ConsulError> {
    let info = state.node.checks().get(&id).ok_or_else(|| unknown_check(&id))?;
    state.node.remove_check(&caller, info.service, info.instance, id).await?;
    Ok(StatusCode::OK.into_response())
}

/// `PUT /v1/agent/check/pass|warn|fail/:id?note=`: a TTL report with that status.
pub(crate) fn ttl_route(status: HealthStatus) -> axum::routing::MethodRouter<ConsulState> {
    axum::routing::put(move |state, auth, id, raw| ttl_report(state, auth, id, raw, status))
}

pub(super) async fn ttl_report(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    status: HealthStatus,
) -> Result<Response, ConsulError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| bad_request(format!("malformed query string: {e}")))?;
    let note = pairs.into_iter().find(|(k, _)| k == "note").map(|(_, v)| v).unwrap_or_default();
    report(&state, &caller, id, status, note).await
}

/// `PUT /v1/agent/check/update/:id` with `{"Status": ..., "Output": ...}`.
pub(crate) async fn check_update(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ConsulError> {
    let value: Value = serde_json::from_slice(&body).map_err(|e| bad_request(format!("Request decode failed: {e}")))?;
    let fields = fields_of(&value, "body").map_err(|e| bad_request(format!("Request decode failed: {e}")))?;
    strict(&fields, &value, &["status", "output"]).map_err(|e| bad_request(format!("Request decode failed: {e}")))?;
    let status = string(&fields, "status").map_err(bad_request)?;
    let status = parse_status(&status).map_err(bad_request)?;
    let output = string(&fields, "output").map_err(bad_request)?;
    report(&state, &caller, id, status, output).await
}

pub(super) async fn report(
    state: &ConsulState,
    caller: &Caller,
    check: String,
    status: HealthStatus,
    output: String,
) -> Result<Response, ConsulError> {
    if output.len() > waggle_core::check_limits::MAX_OUTPUT * 16 {
        return Err(bad_request("Output is too large"));
    }
    match state.node.report_check(caller, check.clone(), status, output).await {
        Ok(()) => Ok(StatusCode::OK.into_response()),
        Err(NodeError::NotFound(_)) => Err(unknown_check(&check)),
        Err(NodeError::Invalid(_)) => Err(bad_request(format!("CheckID {check:?} does not have associated TTL"))),
        Err(e) => Err(e.into()),
    }
}

/// `PUT /v1/agent/service/maintenance/:id?enable=true|false&reason=`: a critical
/// `_service_maintenance:ID` check while enabled.
pub(crate) async fn service_maintenance(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| bad_request(format!("malformed query string: {e}")))?;
    let get = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let enable = match get("enable").as_deref() {
        None | Some("") => return Err(bad_request("Missing value for enable")),
        Some(value) => parse_bool(value).ok_or_else(|| bad_request(format!("Invalid value for enable: {value:?}")))?,
    };
    let Some(instance) = agent_instances(&state).into_iter().find(|i| i.spec.id.as_str() == id) else {
        return Err(ConsulError(StatusCode::NOT_FOUND, format!("Unknown service ID {id:?}")));
    };
    let check_id = format!("_service_maintenance:{id}");
    let (service, id) = (instance.spec.service.clone(), instance.spec.id.clone());
    if enable {
        let reason = get("reason").filter(|r| !r.is_empty()).unwrap_or_else(|| {
            "Maintenance mode is enabled for this service, but no reason was provided. This is a default message."
                .into()
        });
        let check =
            CheckSpec { notes: reason, ..CheckSpec::new(check_id, "Service Maintenance Mode", CheckKind::Maintenance) };
        state.node.put_check(&caller, service, id, check).await?;
        Ok(StatusCode::OK.into_response())
    } else if instance.checks.iter().any(|c| c.spec.id == check_id) {
        state.node.remove_check(&caller, service, id, check_id).await?;
        Ok(StatusCode::OK.into_response())
    } else {
        Ok(StatusCode::OK.into_response())
    }
}
