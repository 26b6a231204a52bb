//! Consul's `/v1/kv` on Waggle's key/value store: reads (`?recurse`, `?keys`, `?separator`,
//! `?raw`, blocking with `?index`), writes (`?cas`, `?flags`, `?acquire`, `?release`) and
//! deletes (`?recurse`, `?cas`), as Consul answers them (base64 values, `true` / `false`
//! bodies, 404 for a missing key).

use axum::{
    extract::{Path, RawQuery, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use waggle_core::{
    Compare, CompareOp, CompareTarget, KvOp, OpResult, Txn,
    acl::{Access, Resource},
};

use super::request::Auth;
use super::{
    render::entry_json,
    request::{
        ConsulError, ConsulState, Params, answer, bad_request, blocking, filtered_by_acls, invalid_session, params,
        parse_session,
    },
};

/// The query flags of the KV endpoints (besides the common ones `params` reads).
#[derive(Default)]
pub(super) struct KvFlags {
    recurse: bool,
    keys: bool,
    raw: bool,
    separator: Option<String>,
    cas: Option<u64>,
    flags: Option<u64>,
    acquire: Option<waggle_core::SessionId>,
    release: Option<waggle_core::SessionId>,
}

pub(super) fn kv_flags(raw: Option<&str>) -> Result<KvFlags, ConsulError> {
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
                let session = parse_session(&value).ok_or_else(|| bad_request(format!("invalid session {value:?}")))?;
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

pub(super) fn check(key: &str, prefix: bool) -> Result<(), ConsulError> {
    let checked = if prefix { waggle_core::check_prefix(key) } else { waggle_core::check_key(key) };
    checked.map_err(|e| bad_request(format!("Invalid key: {e}")))
}

pub(super) fn missing(state: &ConsulState, index: waggle_core::Revision) -> Response {
    let mut response = answer(state, index, Value::Null);
    *response.status_mut() = StatusCode::NOT_FOUND;
    *response.body_mut() = axum::body::Body::empty();
    response
}

/// A KV request's key (empty under `/v1/kv/`), its KV flags and its common parameters.
pub(super) fn request(
    key: Option<Path<String>>,
    raw: Option<String>,
) -> Result<(String, KvFlags, Params), ConsulError> {
    let flags = kv_flags(raw.as_deref())?;
    Ok((key.map(|Path(k)| k).unwrap_or_default(), flags, params(raw)?))
}

/// `GET /v1/kv/:key`.
pub(crate) async fn kv_get(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    key: Option<Path<String>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    let (key, flags, p) = request(key, raw)?;
    let prefix = flags.recurse || flags.keys;
    check(&key, prefix)?;
    let index = blocking(&state, &caller, &p).await?;
    let (_, kv) = state.node.read_model().kv();
    if !prefix {
        let Some(entry) = kv.get(&key) else { return Ok(missing(&state, index)) };
        caller.check(Resource::Key, &key, Access::Read)?;
        if flags.raw {
            return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/octet-stream")], entry.value.to_vec())
                .into_response());
        }
        return Ok(answer(&state, index, json!([entry_json(&key, entry)])));
    }
    // Filtered, not refused: only the keys the token may read (list, for `?keys`).
    let need = if flags.keys { Access::List } else { Access::Read };
    let mut filtered = false;
    let under = kv.range(key.clone()..).take_while(|(k, _)| k.starts_with(key.as_str())).filter(|(k, _)| {
        let may = caller.may(Resource::Key, k, need);
        filtered |= !may;
        may
    });
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
        return Ok(filtered_by_acls(missing(&state, index), filtered));
    }
    Ok(filtered_by_acls(answer(&state, index, Value::Array(body)), filtered))
}

/// A `?cas=N` as compares: the key's modify revision (as `target` reads it) must be N.
pub(super) fn cas(key: &str, at: Option<u64>, target: fn(u64) -> CompareTarget) -> Vec<Compare> {
    at.map(|n| Compare { key: key.to_owned(), target: target(n), op: CompareOp::Equal }).into_iter().collect()
}

/// `PUT /v1/kv/:key` with the value as the body: `true`, or `false` when `?cas` did not match,
/// or `?acquire` found the key held by another session (or under a lock-delay), or `?release`
/// found it not held by the session. A plain write keeps the key's lock holder, as in Consul.
pub(crate) async fn kv_put(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
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
    let txn =
        Txn { compares: cas(&key, flags.cas, CompareTarget::ModifyRevision), success: vec![op], ..Default::default() };
    let (revision, result) = state.node.run_txn(&caller, txn).await.map_err(|e| invalid_session(e.into()))?;
    Ok(answer(&state, revision, Value::Bool(result.succeeded)))
}

/// `DELETE /v1/kv/:key` (`?recurse`: everything under it; `?cas`): `true`, or `false` when
/// `?cas` did not match (a key already gone matches, as in Consul).
pub(crate) async fn kv_delete(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
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
    let (revision, result) =
        state.node.run_txn(&caller, Txn { compares, success: vec![op], ..Default::default() }).await?;
    let succeeded = result.succeeded && matches!(result.results.first(), Some(OpResult::Delete { .. }));
    Ok(answer(&state, revision, Value::Bool(succeeded)))
}
