//! Consul's `/v1/session` on Waggle's sessions: create (TTL 10 s – 24 h or none, `Behavior`
//! release | delete, `LockDelay`, default 15 s as in Consul, health checks it depends on),
//! destroy, renew, info, list and node, with blocking reads. A Consul session is a Waggle
//! session with options: it can hold keys through `?acquire` (see `kv.rs`) and ends like any
//! other (expiry, destroy).
//!
//! Session ids are Waggle's 64-bit ids written as UUIDs (the id in the first 16 hex digits,
//! the rest zero); the plain hex form Waggle's CLI prints is accepted too.

use std::time::Duration;

use axum::{
    extract::{Path, RawQuery, State},
    http::StatusCode,
    response::Response,
};
use serde_json::{Value, json};
use waggle_core::{KeyBehavior, SessionId, SessionOptions, Ttl};

use super::request::Auth;
use super::{
    fields::{duration_text, fields_of, strict},
    request::{
        ConsulError, ConsulState, answer, bad_request, blocking, go_duration, node_name, params, parse_session,
        session_uuid,
    },
};
use crate::{
    node::{Caller, NodeError},
    state::read_model::SessionView,
};

/// Consul's default lock-delay for sessions created over its API.
pub(super) const CONSUL_LOCK_DELAY: Duration = Duration::from_secs(15);
/// Consul's TTL bounds for sessions.
pub(super) const MIN_TTL: Duration = Duration::from_secs(10);
pub(super) const MAX_TTL: Duration = Duration::from_secs(86_400);

/// The fields a create body may carry (canonical: lower case, no underscores). `ID`,
/// `CreateIndex` and `ModifyIndex` are ignored, as Consul ignores them on create.
pub(super) const CREATE_FIELDS: &[&str] = &[
    "name",
    "node",
    "checks",
    "nodechecks",
    "servicechecks",
    "lockdelay",
    "behavior",
    "ttl",
    "namespace",
    "partition",
    "id",
    "createindex",
    "modifyindex",
];

/// A session as Consul's `SessionEntry`.
pub(super) fn session_json(state: &ConsulState, s: &SessionView) -> Value {
    let ttl = if s.options.no_expiry { String::new() } else { duration_text(s.ttl.as_millis()) };
    json!({
        "ID": session_uuid(s.id),
        "Name": s.options.name,
        "Node": node_name(state),
        "LockDelay": s.options.lock_delay_ms * 1_000_000,
        "Behavior": match s.options.behavior { KeyBehavior::Release => "release", KeyBehavior::Delete => "delete" },
        "TTL": ttl,
        // Sessions live on the server's node, whose serfHealth is passing while it serves; the
        // checks they depend on are service checks.
        "Checks": std::iter::once("serfHealth").chain(s.options.checks.iter().map(String::as_str)).collect::<Vec<_>>(),
        "NodeChecks": ["serfHealth"],
        "ServiceChecks": if s.options.checks.is_empty() {
            Value::Null
        } else {
            Value::Array(s.options.checks.iter().map(|c| json!({ "ID": c, "Namespace": "" })).collect())
        },
        "CreateIndex": s.create_revision.get(),
        "ModifyIndex": s.create_revision.get(),
    })
}

/// Parses Consul's `LockDelay`: a Go duration string or a number of nanoseconds; either
/// below 1000 counts as seconds, as in Consul.
pub(super) fn lock_delay(value: &Value) -> Result<Duration, String> {
    let raw = match value {
        Value::Null => return Ok(CONSUL_LOCK_DELAY),
        Value::String(s) => go_duration(s).ok_or_else(|| format!("LockDelay: invalid duration {s:?}"))?,
        Value::Number(n) => {
            let ns = n.as_u64().ok_or_else(|| format!("LockDelay: expected a duration, got {n}"))?;
            Duration::from_nanos(ns)
        }
        other => return Err(format!("LockDelay: expected a duration, got {other}")),
    };
    if raw < Duration::from_nanos(1000) {
        let seconds = u64::try_from(raw.as_nanos()).unwrap_or(u64::MAX);
        return Ok(Duration::from_secs(seconds));
    }
    Ok(raw)
}

/// Adds the check ids of `Checks` / `NodeChecks` (strings) or `ServiceChecks` (objects with
/// an `ID`) to `into`; `serfHealth` (the node's, always passing here) is implied.
pub(super) fn check_list(value: Option<&Value>, what: &str, into: &mut Vec<String>) -> Result<(), String> {
    match value {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(items)) => {
            for item in items {
                let id = match item {
                    Value::String(id) => id.clone(),
                    Value::Object(_) => {
                        let fields = fields_of(item, what)?;
                        strict(&fields, item, &["id", "namespace", "partition"])?;
                        match fields.get("id") {
                            Some(Value::String(id)) => id.clone(),
                            _ => return Err(format!("{what}: every check needs an ID, got {item}")),
                        }
                    }
                    other => return Err(format!("{what}: expected check ids, got {other}")),
                };
                if id != "serfHealth" && !into.contains(&id) {
                    into.push(id);
                }
            }
            Ok(())
        }
        Some(other) => Err(format!("{what}: expected a list, got {other}")),
    }
}

/// A create body as Waggle session options and TTL.
pub(super) fn create_request(state: &ConsulState, body: &[u8]) -> Result<(Ttl, SessionOptions), String> {
    let raw: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| format!("Request decode failed: {e}"))?
    };
    let fields = fields_of(&raw, "body")?;
    strict(&fields, &raw, CREATE_FIELDS)?;
    let string = |key: &str, name: &str| -> Result<String, String> {
        match fields.get(key) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!("{name}: expected a string, got {other}")),
        }
    };
    let node = string("node", "Node")?;
    if !node.is_empty() && node != node_name(state) {
        return Err(format!("Missing node registration: sessions live on this server's node {:?}", node_name(state)));
    }
    for tenancy in ["namespace", "partition"] {
        let value = string(tenancy, tenancy)?;
        if !value.is_empty() && value != "default" {
            return Err(format!("{tenancy} {value:?} is not supported (only \"default\")"));
        }
    }
    let mut checks = Vec::new();
    check_list(fields.get("checks"), "Checks", &mut checks)?;
    check_list(fields.get("nodechecks"), "NodeChecks", &mut checks)?;
    check_list(fields.get("servicechecks"), "ServiceChecks", &mut checks)?;
    let behavior = match string("behavior", "Behavior")?.as_str() {
        "" | "release" => KeyBehavior::Release,
        "delete" => KeyBehavior::Delete,
        other => return Err(format!("Invalid Behavior setting '{other}'")),
    };
    let delay = lock_delay(fields.get("lockdelay").unwrap_or(&Value::Null))?;
    if delay > Duration::from_millis(waggle_core::MAX_LOCK_DELAY_MS) {
        return Err(format!("Invalid LockDelay '{delay:?}', must be at most 60s"));
    }
    let ttl_text = string("ttl", "TTL")?;
    let ttl = match ttl_text.as_str() {
        "" => Duration::ZERO,
        text => go_duration(text).ok_or_else(|| format!("Request decode failed: invalid TTL {ttl_text:?}"))?,
    };
    // No TTL (or 0, as in Consul): the session lives until destroyed.
    let (ttl, no_expiry) = if ttl.is_zero() {
        (Ttl::MAX, true)
    } else {
        if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
            return Err(format!("Invalid Session TTL '{ttl_text}', must be between [10s=24h0m0s]"));
        }
        (Ttl::from_duration(ttl).map_err(|e| e.to_string())?, false)
    };
    let options = SessionOptions {
        name: string("name", "Name")?,
        behavior,
        lock_delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        no_expiry,
        checks,
    };
    options.validate().map_err(|e| e.to_string())?;
    Ok((ttl, options))
}

/// `PUT /v1/session/create`: `{"ID": "..."}`.
pub(crate) async fn session_create(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    RawQuery(raw): RawQuery,
    body: axum::body::Bytes,
) -> Result<Response, ConsulError> {
    params(raw)?;
    let (ttl, options) = create_request(&state, &body).map_err(bad_request)?;
    let (id, revision) = state.node.open_session(&caller, ttl, options).await?;
    Ok(answer(&state, revision, json!({ "ID": session_uuid(id) })))
}

/// The session a `/v1/session/<verb>/:id` write names (after checking the query).
pub(super) fn session_arg(text: &str, raw: Option<String>) -> Result<SessionId, ConsulError> {
    params(raw)?;
    parse_session(text).ok_or_else(|| bad_request(format!("Invalid session ID {text:?}")))
}

/// `PUT /v1/session/destroy/:id`: `true` (also for a session that is already gone, as in
/// Consul). Its keys are released or deleted, under its lock-delay.
pub(crate) async fn session_destroy(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    let session = session_arg(&id, raw)?;
    let revision = match state.node.revoke_session(&caller, session).await {
        Ok(revision) => revision,
        Err(NodeError::NotFound(_)) => state.node.read_model().revision(),
        Err(e) => return Err(e.into()),
    };
    Ok(answer(&state, revision, Value::Bool(true)))
}

/// `PUT /v1/session/renew/:id`: the session, or 404 if it is gone.
pub(crate) async fn session_renew(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    let session = session_arg(&id, raw)?;
    let not_found = || ConsulError(StatusCode::NOT_FOUND, format!("Session id '{id}' not found"));
    let known = state.node.read_model().sessions().1.get(&session).cloned();
    // A session without a TTL has no deadline to push (and the leader's clock does not know it).
    if !known.is_some_and(|v| v.options.no_expiry) {
        let renewed = state.node.renew_session(&caller, session).await?;
        if renewed.is_none() {
            // Unknown to the clock: gone, or a session without a TTL this member has not
            // applied yet (created on another member a moment ago).
            let view = applied_soon(&state, session).await.ok_or_else(not_found)?;
            if !view.options.no_expiry {
                return Err(not_found());
            }
        }
    }
    let view = applied_soon(&state, session).await.ok_or_else(not_found)?;
    Ok(answer(&state, state.node.read_model().revision(), json!([session_json(&state, &view)])))
}

/// The session as this member knows it once it has applied everything committed before the
/// call (a session created through another member a moment ago is there; a gone one is not).
pub(super) async fn applied_soon(state: &ConsulState, session: SessionId) -> Option<std::sync::Arc<SessionView>> {
    if let Some(view) = state.node.read_model().sessions().1.get(&session).cloned() {
        return Some(view);
    }
    state.node.read_barrier().await.ok()?;
    state.node.read_model().sessions().1.get(&session).cloned()
}

/// Whether the caller may read the session (`session:read` on its name).
fn readable(caller: &Caller, session: &SessionView) -> bool {
    caller.may(waggle_core::acl::Resource::Session, &session.options.name, waggle_core::acl::Access::Read)
}

/// `GET /v1/session/info/:id`: a list of the session, or an empty list.
pub(crate) async fn session_info(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    let index = blocking(&state, &caller, &params(raw)?).await?;
    let (_, sessions) = state.node.read_model().sessions();
    let found: Vec<Value> = parse_session(&id)
        .and_then(|s| sessions.get(&s).cloned())
        .iter()
        .filter(|v| readable(&caller, v))
        .map(|v| session_json(&state, v))
        .collect();
    Ok(answer(&state, index, Value::Array(found)))
}

/// `GET /v1/session/list`: every live session.
pub(crate) async fn session_list(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    let index = blocking(&state, &caller, &params(raw)?).await?;
    let (_, sessions) = state.node.read_model().sessions();
    let listed = sessions.values().filter(|v| readable(&caller, v)).map(|v| session_json(&state, v)).collect();
    Ok(answer(&state, index, Value::Array(listed)))
}

/// `GET /v1/session/node/:node`: the sessions of a node (all of them on this server's node).
pub(crate) async fn session_node(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(node): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    let index = blocking(&state, &caller, &params(raw)?).await?;
    let (_, sessions) = state.node.read_model().sessions();
    let listed: Vec<Value> = if node == node_name(&state) {
        sessions.values().filter(|v| readable(&caller, v)).map(|v| session_json(&state, v)).collect()
    } else {
        Vec::new()
    };
    Ok(answer(&state, index, Value::Array(listed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_round_trip_as_uuids_and_hex() {
        for raw in [1u64, 0xdead_beef, u64::MAX - 1] {
            let id = SessionId::new(raw);
            let uuid = session_uuid(id);
            assert_eq!(uuid.len(), 36);
            assert_eq!(parse_session(&uuid), Some(id), "{uuid}");
            assert_eq!(parse_session(&id.to_string()), Some(id));
        }
        for bad in ["", "0", "xyz", "00000000-0000-0001-0000-000000000001", "adf4238a-882b-9ddc-4a9d-5b6758e4159e"] {
            assert_eq!(parse_session(bad), None, "{bad}");
        }
        assert_eq!(parse_session(&format!("{:x}", u64::MAX)), None, "the agent's session is not a Consul session");
    }

    #[test]
    fn lock_delays_parse_like_consul() {
        assert_eq!(lock_delay(&Value::Null), Ok(Duration::from_secs(15)));
        assert_eq!(lock_delay(&json!("20s")), Ok(Duration::from_secs(20)));
        assert_eq!(lock_delay(&json!(5)), Ok(Duration::from_secs(5)), "small numbers are seconds");
        assert_eq!(lock_delay(&json!(2_000_000_000u64)), Ok(Duration::from_secs(2)), "large ones nanoseconds");
        assert!(lock_delay(&json!("soon")).is_err());
        assert!(lock_delay(&json!(true)).is_err());
    }
}
