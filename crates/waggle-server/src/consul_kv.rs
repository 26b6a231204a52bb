//! Consul's `/v1/kv` on Waggle's key/value store: reads (`?recurse`, `?keys`, `?separator`,
//! `?raw`, blocking with `?index`), writes (`?cas`, `?flags`, `?acquire`, `?release`) and
//! deletes (`?recurse`, `?cas`), as Consul answers them (base64 values, `true` / `false`
//! bodies, 404 for a missing key); and `/v1/txn` (KV operations), atomic like Consul's.

use axum::{
    extract::{Path, RawQuery, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine;
use serde_json::{Value, json};
use waggle_core::{Compare, CompareOp, CompareTarget, KvEntry, KvOp, OpResult, Txn};

use crate::{
    consul::{ConsulError, Params, answer, bad_request, blocking, params, write_failed},
    http::AppState,
};

/// The query flags of the KV endpoints (besides the common ones `params` reads).
#[derive(Default)]
struct KvFlags {
    recurse: bool,
    keys: bool,
    raw: bool,
    separator: Option<String>,
    cas: Option<u64>,
    flags: Option<u64>,
    acquire: Option<waggle_core::SessionId>,
    release: Option<waggle_core::SessionId>,
}

fn kv_flags(raw: Option<&str>) -> Result<KvFlags, ConsulError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| bad_request(format!("malformed query string: {e}")))?;
    let number = |key: &str, v: &str| v.parse::<u64>().map_err(|_| bad_request(format!("invalid {key} {v:?}")));
    let mut f = KvFlags::default();
    for (key, value) in pairs {
        match key.as_str() {
            "recurse" => f.recurse = true,
            "keys" => f.keys = true,
            "raw" => f.raw = true,
            "separator" => f.separator = Some(value),
            "cas" => f.cas = Some(number("cas", &value)?),
            "flags" => f.flags = Some(number("flags", &value)?),
            "acquire" | "release" => {
                let session = crate::consul_session::parse_session(&value)
                    .ok_or_else(|| bad_request(format!("invalid session {value:?}")))?;
                if key == "acquire" { f.acquire = Some(session) } else { f.release = Some(session) }
            }
            _ => {}
        }
    }
    if f.acquire.is_some() && f.release.is_some() {
        return Err(bad_request("?acquire and ?release cannot be used together"));
    }
    Ok(f)
}

fn entry_json(key: &str, e: &KvEntry) -> Value {
    let value = if e.value.is_empty() {
        Value::Null
    } else {
        Value::String(base64::engine::general_purpose::STANDARD.encode(&e.value))
    };
    let mut out = json!({
        "LockIndex": e.lock_index, "Key": key, "Flags": e.flags, "Value": value,
        "CreateIndex": e.create_revision.get(), "ModifyIndex": e.modify_revision.get(),
    });
    if let Some(session) = e.session {
        out["Session"] = json!(crate::consul_session::session_uuid(session));
    }
    out
}

fn check(key: &str, prefix: bool) -> Result<(), ConsulError> {
    let checked = if prefix { waggle_core::check_prefix(key) } else { waggle_core::check_key(key) };
    checked.map_err(|e| bad_request(format!("Invalid key: {e}")))
}

fn missing(state: &AppState, index: waggle_core::Revision) -> Response {
    let mut response = answer(state, index, Value::Null);
    *response.status_mut() = StatusCode::NOT_FOUND;
    *response.body_mut() = axum::body::Body::empty();
    response
}

/// A KV request's key (empty under `/v1/kv/`), its KV flags and its common parameters.
fn request(key: Option<Path<String>>, raw: Option<String>) -> Result<(String, KvFlags, Params), ConsulError> {
    let flags = kv_flags(raw.as_deref())?;
    Ok((key.map(|Path(k)| k).unwrap_or_default(), flags, params(raw)?))
}

/// `GET /v1/kv/:key`.
pub(crate) async fn kv_get(
    State(state): State<AppState>,
    key: Option<Path<String>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    let (key, flags, p) = request(key, raw)?;
    let prefix = flags.recurse || flags.keys;
    check(&key, prefix)?;
    let index = blocking(&state, &p).await?;
    let (_, kv) = state.hub.kv();
    if !prefix {
        let Some(entry) = kv.get(&key) else { return Ok(missing(&state, index)) };
        if flags.raw {
            return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/octet-stream")], entry.value.to_vec())
                .into_response());
        }
        return Ok(answer(&state, index, json!([entry_json(&key, entry)])));
    }
    let under = kv.range(key.clone()..).take_while(|(k, _)| k.starts_with(key.as_str()));
    let body: Vec<Value> = if flags.keys {
        // With a separator, keys are cut after the first separator past the prefix (Consul's
        // "folders"), each listed once.
        let mut keys: Vec<String> = Vec::new();
        for (k, _) in under {
            let listed = match flags.separator.as_deref().filter(|s| !s.is_empty()) {
                Some(sep) => match k[key.len()..].find(sep) {
                    Some(at) => k[..key.len() + at + sep.len()].to_owned(),
                    None => k.clone(),
                },
                None => k.clone(),
            };
            if keys.last() != Some(&listed) {
                keys.push(listed);
            }
        }
        keys.into_iter().map(Value::String).collect()
    } else {
        under.map(|(k, e)| entry_json(k, e)).collect()
    };
    if body.is_empty() {
        return Ok(missing(&state, index));
    }
    Ok(answer(&state, index, Value::Array(body)))
}

/// Runs a transaction; refusals are the client's fault.
async fn run(state: &AppState, txn: Txn) -> Result<(waggle_core::Revision, waggle_core::TxnResult), ConsulError> {
    use crate::kv::TxnRefusal;
    crate::kv::run_txn(&state.consensus, &state.hub, txn).await.map_err(|refusal| match refusal {
        TxnRefusal::Invalid(e) => bad_request(format!("Invalid request: {e}")),
        TxnRefusal::Full(message) | TxnRefusal::TooLarge(message) => {
            ConsulError(StatusCode::PAYLOAD_TOO_LARGE, message)
        }
        TxnRefusal::Failed(e) => write_failed(e),
    })
}

/// A `?cas=N` as compares: the key's modify revision (as `target` reads it) must be N.
fn cas(key: &str, at: Option<u64>, target: fn(u64) -> CompareTarget) -> Vec<Compare> {
    at.map(|n| Compare { key: key.to_owned(), target: target(n), op: CompareOp::Equal }).into_iter().collect()
}

/// `PUT /v1/kv/:key` with the value as the body: `true`, or `false` when `?cas` did not match,
/// or `?acquire` found the key held by another session (or under a lock-delay), or `?release`
/// found it not held by the session. A plain write keeps the key's lock holder, as in Consul.
pub(crate) async fn kv_put(
    State(state): State<AppState>,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
    body: axum::body::Bytes,
) -> Result<Response, ConsulError> {
    let (key, flags, _) = request(Some(Path(key)), raw)?;
    check(&key, false)?;
    let (value, flag_bits) = (body.to_vec(), flags.flags.unwrap_or(0));
    let op = match (flags.acquire, flags.release) {
        (Some(session), _) => KvOp::Acquire { key: key.clone(), value, flags: flag_bits, session },
        (_, Some(session)) => KvOp::Release { key: key.clone(), value, flags: flag_bits, session },
        _ => KvOp::Set { key: key.clone(), value, flags: flag_bits },
    };
    let (revision, result) = run(
        &state,
        Txn { compares: cas(&key, flags.cas, CompareTarget::ModifyRevision), success: vec![op], ..Default::default() },
    )
    .await
    .map_err(invalid_session)?;
    Ok(answer(&state, revision, Value::Bool(result.succeeded)))
}

/// A write naming a session that does not exist: the client's mistake (Consul: "invalid
/// session").
fn invalid_session(e: ConsulError) -> ConsulError {
    if e.0 == StatusCode::NOT_FOUND { bad_request(format!("invalid session: {}", e.1)) } else { e }
}

/// `DELETE /v1/kv/:key` (`?recurse`: everything under it; `?cas`): `true`, or `false` when
/// `?cas` did not match (a key already gone matches, as in Consul).
pub(crate) async fn kv_delete(
    State(state): State<AppState>,
    key: Option<Path<String>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    let (key, flags, _) = request(key, raw)?;
    if flags.recurse && flags.cas.is_some() {
        return Err(bad_request("?cas cannot be used with ?recurse"));
    }
    check(&key, flags.recurse)?;
    let op = KvOp::Delete { key: key.clone(), prefix: flags.recurse };
    // As in Consul, a cas delete of a key that is already gone succeeds.
    let compares = cas(&key, flags.cas, CompareTarget::ModifyRevisionIfPresent);
    let (revision, result) = run(&state, Txn { compares, success: vec![op], ..Default::default() }).await?;
    let succeeded = result.succeeded && matches!(result.results.first(), Some(OpResult::Delete { .. }));
    Ok(answer(&state, revision, Value::Bool(succeeded)))
}

/// What a Waggle operation of a translated transaction contributes to Consul's results.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shown {
    /// Nothing (deletes, the check half of `cas` / `get`, `check-not-exists`).
    Nothing,
    /// The key's entry without its value (writes and checks).
    Entry,
    /// The entries with their values (`get`, `get-tree`).
    Values,
}

/// One Waggle operation of a Consul transaction: the Consul operation it came from, the error
/// Consul reports if it aborts, and what it shows.
struct Step {
    op: KvOp,
    index: usize,
    error: String,
    shown: Shown,
}

/// The operations of `/v1/txn` at most (Consul's limit).
const MAX_TXN_OPS: usize = 64;

/// Translates one Consul `KV` operation into Waggle steps.
fn txn_steps(index: usize, kv: &Value, steps: &mut Vec<Step>) -> Result<(), String> {
    let fields = crate::consul_checks::fields_of(kv, "KV")?;
    crate::consul_checks::strict(
        &fields,
        kv,
        &["verb", "key", "value", "flags", "index", "session", "namespace", "partition"],
    )?;
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
        crate::consul_session::parse_session(&raw).ok_or_else(|| format!("KV.Session: invalid session {raw:?}"))
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
            let error = format!("key {key:?} is not locked by session {:?}", crate::consul_session::session_uuid(s));
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
fn txn_request(body: &[u8]) -> Result<Vec<Step>, ConsulError> {
    let raw: Value = serde_json::from_slice(body).map_err(|e| bad_request(format!("Failed to parse body: {e}")))?;
    let Value::Array(ops) = raw else { return Err(bad_request("Failed to parse body: expected a list of operations")) };
    if ops.len() > MAX_TXN_OPS {
        let message = format!("Transaction contains too many operations ({} > {MAX_TXN_OPS})", ops.len());
        return Err(ConsulError(StatusCode::PAYLOAD_TOO_LARGE, message));
    }
    let mut steps = Vec::with_capacity(ops.len());
    for (index, op) in ops.iter().enumerate() {
        let fields = crate::consul_checks::fields_of(op, "operation").map_err(bad_request)?;
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
    State(state): State<AppState>,
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
    let (revision, result) = match run(&state, txn).await {
        Ok(done) => done,
        // A lock for a session that does not exist: Consul names the operation (409).
        Err(e) if e.0 == StatusCode::NOT_FOUND => {
            let sessions = state.hub.sessions().1;
            let unknown = steps.iter().find_map(|s| match &s.op {
                KvOp::Acquire { session, .. } if !sessions.contains_key(session) => Some((s.index, *session)),
                _ => None,
            });
            return match unknown {
                Some((index, session)) => {
                    let what = format!("invalid session {:?}", crate::consul_session::session_uuid(session));
                    Ok(conflict(state.hub.revision(), index, &what))
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
