//! Consul's `/v1/txn` (KV operations): Consul's verbs translated into one core transaction
//! whose `Assert`s abort it, atomic like Consul's; 409 with `Errors` naming the operation that
//! failed.

use axum::{
    extract::{RawQuery, State},
    http::StatusCode,
    response::Response,
};
use base64::Engine;
use serde_json::{Value, json};
use waggle_core::{Compare, CompareOp, CompareTarget, KvOp, OpResult, Txn};

use super::request::Auth;
use super::{
    fields::{fields_of, strict},
    render::entry_json,
    request::{ConsulError, ConsulState, answer, bad_request, invalid_session, params, parse_session, session_uuid},
};

/// What a Waggle operation of a translated transaction contributes to Consul's results.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Shown {
    /// Nothing (deletes, the check half of `cas` / `get`, `check-not-exists`).
    Nothing,
    /// The key's entry without its value (writes and checks).
    Entry,
    /// The entries with their values (`get`, `get-tree`).
    Values,
}

/// One Waggle operation of a Consul transaction: the Consul operation it came from, the error
/// Consul reports if it aborts, and what it shows.
pub(super) struct Step {
    op: KvOp,
    index: usize,
    error: String,
    shown: Shown,
}

/// The operations of `/v1/txn` at most (Consul's limit).
pub(super) const MAX_TXN_OPS: usize = 64;

/// Translates one Consul `KV` operation into Waggle steps.
pub(super) fn txn_steps(index: usize, kv: &Value, steps: &mut Vec<Step>) -> Result<(), String> {
    let fields = fields_of(kv, "KV")?;
    strict(&fields, kv, &["verb", "key", "value", "flags", "index", "session", "namespace", "partition"])?;
    let text = |name: &str| -> Result<String, String> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!("KV.{name}: expected a string, got {other}")),
        }
    };
    let number = |name: &str| -> Result<u64, String> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(0),
            Some(v) => v.as_u64().ok_or_else(|| format!("KV.{name}: expected a number, got {v}")),
        }
    };
    let verb = text("verb")?;
    let key = text("key")?;
    let value = base64::engine::general_purpose::STANDARD
        .decode(text("value")?)
        .map_err(|e| format!("KV.Value: invalid base64: {e}"))?;
    let flags = number("flags")?;
    let at = number("index")?;
    let session = || {
        let raw = text("session")?;
        parse_session(&raw).ok_or_else(|| format!("KV.Session: invalid session {raw:?}"))
    };
    let prefix = matches!(verb.as_str(), "get-tree" | "delete-tree");
    let checked = if prefix { waggle_core::check_prefix(&key) } else { waggle_core::check_key(&key) };
    checked.map_err(|e| format!("KV.Key: {e}"))?;
    let compare = |target, op| KvOp::Assert(Compare { key: key.clone(), target, op });
    let mut step = |op: KvOp, error: String, shown: Shown| steps.push(Step { op, index, error, shown });
    let stale = |what: &str| format!("failed to {what} key {key:?}, index is stale");
    match verb.as_str() {
        "set" => step(KvOp::Set { key: key.clone(), value, flags }, String::new(), Shown::Entry),
        "cas" => {
            step(compare(CompareTarget::ModifyRevision(at), CompareOp::Equal), stale("set"), Shown::Nothing);
            step(KvOp::Set { key: key.clone(), value, flags }, String::new(), Shown::Entry);
        }
        "lock" => {
            let error = format!("failed to lock key {key:?}, lock is already held (or under a lock-delay)");
            step(KvOp::Acquire { key: key.clone(), value, flags, session: session()? }, error, Shown::Entry);
        }
        "unlock" => {
            let error = format!("failed to unlock key {key:?}, lock isn't held, or is held by another session");
            step(KvOp::Release { key: key.clone(), value, flags, session: session()? }, error, Shown::Entry);
        }
        "get" => {
            let missing = format!("key {key:?} doesn't exist");
            step(compare(CompareTarget::ModifyRevision(0), CompareOp::NotEqual), missing, Shown::Nothing);
            step(KvOp::Get { key: key.clone(), prefix: false }, String::new(), Shown::Values);
        }
        "get-tree" => step(KvOp::Get { key: key.clone(), prefix: true }, String::new(), Shown::Values),
        "check-index" => {
            let missing = format!("key {key:?} doesn't exist");
            step(compare(CompareTarget::ModifyRevision(0), CompareOp::NotEqual), missing, Shown::Nothing);
            let error = format!("current modify index of key {key:?} != {at}");
            step(compare(CompareTarget::ModifyRevision(at), CompareOp::Equal), error, Shown::Entry);
        }
        "check-session" => {
            let s = session()?;
            let error = format!("key {key:?} is not locked by session {:?}", session_uuid(s));
            step(compare(CompareTarget::Session(s.get()), CompareOp::Equal), error, Shown::Entry);
        }
        "check-not-exists" => {
            let error = format!("key {key:?} exists");
            step(compare(CompareTarget::ModifyRevision(0), CompareOp::Equal), error, Shown::Nothing);
        }
        "delete" => step(KvOp::Delete { key: key.clone(), prefix: false }, String::new(), Shown::Nothing),
        "delete-tree" => step(KvOp::Delete { key: key.clone(), prefix: true }, String::new(), Shown::Nothing),
        "delete-cas" => {
            // As in Consul, deleting a key that is already gone succeeds.
            let target = CompareTarget::ModifyRevisionIfPresent(at);
            step(compare(target, CompareOp::Equal), stale("delete"), Shown::Nothing);
            step(KvOp::Delete { key: key.clone(), prefix: false }, String::new(), Shown::Nothing);
        }
        other => return Err(format!("unknown KV verb {other:?}")),
    }
    Ok(())
}

/// A transaction body as steps.
pub(super) fn txn_request(body: &[u8]) -> Result<Vec<Step>, ConsulError> {
    let raw: Value = serde_json::from_slice(body).map_err(|e| bad_request(format!("Failed to parse body: {e}")))?;
    let Value::Array(ops) = raw else { return Err(bad_request("Failed to parse body: expected a list of operations")) };
    if ops.len() > MAX_TXN_OPS {
        let message = format!("Transaction contains too many operations ({} > {MAX_TXN_OPS})", ops.len());
        return Err(ConsulError(StatusCode::PAYLOAD_TOO_LARGE, message));
    }
    let mut steps = Vec::with_capacity(ops.len());
    for (index, op) in ops.iter().enumerate() {
        let fields = fields_of(op, "operation").map_err(bad_request)?;
        let Some(kv) = fields.get("kv") else {
            return match fields.keys().next() {
                Some(kind) => {
                    Err(bad_request(format!("operation {index}: only KV operations are supported, not {kind}")))
                }
                None => Err(bad_request(format!("operation {index}: empty"))),
            };
        };
        if fields.len() > 1 {
            return Err(bad_request(format!("operation {index}: one of KV, Node, Service or Check per operation")));
        }
        txn_steps(index, kv, &mut steps).map_err(|e| bad_request(format!("operation {index}: {e}")))?;
    }
    Ok(steps)
}

/// `PUT /v1/txn`: KV operations run atomically. 200 with `Results`, or 409 with `Errors`
/// naming the operation that failed (and nothing changed).
pub(crate) async fn txn(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    RawQuery(raw): RawQuery,
    body: axum::body::Bytes,
) -> Result<Response, ConsulError> {
    params(raw)?;
    let steps = txn_request(&body)?;
    let txn = Txn { success: steps.iter().map(|s| s.op.clone()).collect(), ..Default::default() };
    let conflict = |revision, index: usize, what: &str| {
        let errors = json!([{ "OpIndex": index, "What": what }]);
        let mut response = answer(&state, revision, json!({ "Results": Value::Null, "Errors": errors }));
        *response.status_mut() = StatusCode::CONFLICT;
        response
    };
    let (revision, result) = match state.node.run_txn(&caller, txn).await.map_err(ConsulError::from) {
        Ok(done) => done,
        // A lock for a session that does not exist: Consul names the operation (409).
        Err(e) if e.0 == StatusCode::NOT_FOUND => {
            let sessions = state.node.read_model().sessions().1;
            let unknown = steps.iter().find_map(|s| match &s.op {
                KvOp::Acquire { session, .. } if !sessions.contains_key(session) => Some((s.index, *session)),
                _ => None,
            });
            return match unknown {
                Some((index, session)) => {
                    let what = format!("invalid session {:?}", session_uuid(session));
                    Ok(conflict(state.node.read_model().revision(), index, &what))
                }
                None => Err(invalid_session(e)),
            };
        }
        Err(e) => return Err(e),
    };
    if let Some(at) = result.aborted {
        let step = steps.get(at);
        return Ok(conflict(revision, step.map_or(0, |s| s.index), step.map_or("", |s| s.error.as_str())));
    }
    let mut results = Vec::new();
    for (step, outcome) in steps.iter().zip(&result.results) {
        let key = match &step.op {
            KvOp::Assert(c) => c.key.as_str(),
            op => op.written().map_or("", |(key, _)| key),
        };
        match (step.shown, outcome) {
            (Shown::Entry, OpResult::Entry { entry: Some(e) }) => {
                let mut shown = entry_json(key, e);
                shown["Value"] = Value::Null;
                results.push(json!({ "KV": shown }));
            }
            (Shown::Values, OpResult::Get { entries }) => {
                results.extend(entries.iter().map(|(k, e)| json!({ "KV": entry_json(k, e) })));
            }
            _ => {}
        }
    }
    Ok(answer(&state, revision, json!({ "Results": results, "Errors": Value::Null })))
}
