//! Consul's auth methods, binding rules, login and logout: `/v1/acl/auth-method[s]`,
//! `/v1/acl/binding-rule[s]`, `/v1/acl/login`, `/v1/acl/logout`, with Consul's bodies (keys
//! matched case-insensitively, unknown fields refused with 400; durations as Go durations) and
//! status codes: a missing auth method or binding rule is a 404, a login that verifies but binds
//! nothing 403 "Permission denied", an unknown method 403 "ACL not found". Only the `jwt` type
//! with static keys (`JWTValidationPubKeys`) is supported.

use std::collections::BTreeMap;

use axum::{
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode, Uri},
    response::Response,
};
use serde_json::{Map, Value, json};
use waggle_core::acl::{AuthMethod, BindType, BindingRule, JwtConfig};

use super::{
    fields::{Fields, body_fields, fields_of, strict, text},
    render::token_json,
    request::{Auth, ConsulError, ConsulState, answer, bad_request, params, request_token},
};
use crate::node::{LoginRequest, NodeError};

/// The fields of an auth method body (canonical); Consul Enterprise's are accepted and ignored.
const METHOD_FIELDS: &[&str] = &[
    "name",
    "type",
    "displayname",
    "description",
    "maxtokenttl",
    "tokenlocality",
    "config",
    "namespacerules",
    "namespace",
    "partition",
    "createindex",
    "modifyindex",
];

/// The `jwt` configuration fields Waggle supports.
const CONFIG_FIELDS: &[&str] = &[
    "jwtvalidationpubkeys",
    "boundissuer",
    "boundaudiences",
    "claimmappings",
    "listclaimmappings",
    "jwtsupportedalgs",
    "clockskewleeway",
    "expirationleeway",
    "notbeforeleeway",
];

/// Consul's other `jwt` / `oidc` configuration fields: refused unless empty (Waggle fetches no
/// keys and runs no OIDC flow).
const UNSUPPORTED_CONFIG_FIELDS: &[(&str, &str)] = &[
    ("jwksurl", "JWKSURL"),
    ("jwkscacert", "JWKSCACert"),
    ("oidcdiscoveryurl", "OIDCDiscoveryURL"),
    ("oidcdiscoverycacert", "OIDCDiscoveryCACert"),
    ("oidcclientid", "OIDCClientID"),
    ("oidcclientsecret", "OIDCClientSecret"),
    ("oidcscopes", "OIDCScopes"),
    ("oidcacrvalues", "OIDCACRValues"),
    ("allowedredirecturis", "AllowedRedirectURIs"),
    ("verboseoidclogging", "VerboseOIDCLogging"),
    ("boundsubject", "BoundSubject"),
];

const RULE_FIELDS: &[&str] = &[
    "id",
    "description",
    "authmethod",
    "selector",
    "bindtype",
    "bindname",
    "bindvars",
    "namespace",
    "partition",
    "createindex",
    "modifyindex",
];

const LOGIN_FIELDS: &[&str] = &["authmethod", "bearertoken", "meta", "namespace", "partition"];

fn index(state: &ConsulState) -> waggle_core::Revision {
    state.node.read_model().revision()
}

/// A JSON body as an object, its fields checked against `known`.
fn strict_body(body: &[u8], known: &[&str]) -> Result<Fields, ConsulError> {
    let fields = body_fields(body)?;
    let raw: Value = if fields.is_empty() { json!({}) } else { serde_json::from_slice(body).unwrap_or_default() };
    strict(&fields, &raw, known).map_err(|e| bad_request(format!("Failed to decode request body: {e}")))?;
    Ok(fields)
}

/// A duration as Go writes it (`1h0m0s`, `1m30s`, `1.5s`, `500ms`, `0s`, `-5s`).
fn go_duration_text(ms: i64) -> String {
    if ms < 0 {
        return format!("-{}", go_duration_text(ms.checked_neg().unwrap_or(i64::MAX)));
    }
    if ms < 1000 {
        return if ms == 0 { "0s".into() } else { format!("{ms}ms") };
    }
    let (hours, minutes, millis) = (ms / 3_600_000, ms / 60_000 % 60, ms % 60_000);
    let seconds = if millis % 1000 == 0 {
        format!("{}", millis / 1000)
    } else {
        format!("{}.{:03}", millis / 1000, millis % 1000).trim_end_matches('0').to_owned()
    };
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

/// A duration field in ms: a Go duration (`"10s"`, `"-1s"`) or a number of nanoseconds; 0 when
/// absent.
fn duration_field(fields: &Fields, key: &str, shown: &str) -> Result<i64, ConsulError> {
    let bad = || bad_request(format!("{shown}: invalid duration (use Go syntax, like \"10s\")"));
    match fields.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::String(s)) if s.is_empty() => Ok(0),
        Some(Value::String(s)) => {
            let (negative, text) = match s.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, s.strip_prefix('+').unwrap_or(s)),
            };
            let ms =
                super::request::go_duration(text).and_then(|d| i64::try_from(d.as_millis()).ok()).ok_or_else(bad)?;
            Ok(if negative { -ms } else { ms })
        }
        Some(Value::Number(n)) => n.as_i64().map(|ns| ns / 1_000_000).ok_or_else(bad),
        Some(_) => Err(bad()),
    }
}

/// A list of strings (anything else in it is refused).
fn string_list(fields: &Fields, key: &str, shown: &str) -> Result<Vec<String>, ConsulError> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| bad_request(format!("{shown}: expected strings"))))
            .collect(),
        Some(_) => Err(bad_request(format!("{shown}: expected a list of strings"))),
    }
}

/// A map of strings to strings, its keys as given (claim names are case-sensitive).
fn string_map(fields: &Fields, key: &str, shown: &str) -> Result<BTreeMap<String, String>, ConsulError> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) if !k.is_empty() && !s.is_empty() => Ok((k.clone(), s.clone())),
                _ => Err(bad_request(format!("{shown}: {k:?} must map to a name"))),
            })
            .collect(),
        Some(_) => Err(bad_request(format!("{shown}: expected an object of strings"))),
    }
}

fn config_of(value: Option<&Value>) -> Result<JwtConfig, ConsulError> {
    let raw = match value {
        None | Some(Value::Null) => return Ok(JwtConfig::default()),
        Some(raw) => raw,
    };
    let mut fields = fields_of(raw, "Config").map_err(bad_request)?;
    for (key, shown) in UNSUPPORTED_CONFIG_FIELDS {
        let given = fields.remove(*key);
        let empty = matches!(&given, None | Some(Value::Null) | Some(Value::Bool(false)))
            || given.as_ref().and_then(Value::as_str).is_some_and(str::is_empty)
            || given.as_ref().and_then(Value::as_array).is_some_and(Vec::is_empty);
        if !empty {
            return Err(bad_request(format!(
                "Invalid Auth Method: Config.{shown} is not supported (only JWTValidationPubKeys)"
            )));
        }
    }
    strict(&fields, raw, CONFIG_FIELDS).map_err(|e| bad_request(format!("Invalid Auth Method: Config: {e}")))?;
    Ok(JwtConfig {
        validation_pub_keys: string_list(&fields, "jwtvalidationpubkeys", "Config.JWTValidationPubKeys")?,
        bound_issuer: text(&fields, "boundissuer")?.unwrap_or_default(),
        bound_audiences: string_list(&fields, "boundaudiences", "Config.BoundAudiences")?,
        claim_mappings: string_map(&fields, "claimmappings", "Config.ClaimMappings")?,
        list_claim_mappings: string_map(&fields, "listclaimmappings", "Config.ListClaimMappings")?,
        supported_algs: string_list(&fields, "jwtsupportedalgs", "Config.JWTSupportedAlgs")?,
        clock_skew_leeway_ms: duration_field(&fields, "clockskewleeway", "Config.ClockSkewLeeway")?,
        expiration_leeway_ms: duration_field(&fields, "expirationleeway", "Config.ExpirationLeeway")?,
        not_before_leeway_ms: duration_field(&fields, "notbeforeleeway", "Config.NotBeforeLeeway")?,
    })
}

/// An auth method body; `name` from the path, if any.
fn method_request(body: &[u8], name: Option<String>) -> Result<AuthMethod, ConsulError> {
    let fields = strict_body(body, METHOD_FIELDS)?;
    let in_body = text(&fields, "name")?.filter(|s| !s.is_empty());
    if let (Some(path), Some(body)) = (&name, &in_body)
        && path != body
    {
        return Err(bad_request("Auth Method Name in the body does not match the URL"));
    }
    let name = name.or(in_body).ok_or_else(|| bad_request("Invalid Auth Method: no Name is set"))?;
    let max_ttl = duration_field(&fields, "maxtokenttl", "MaxTokenTTL")?;
    if max_ttl < 0 {
        return Err(bad_request("MaxTokenTTL: must not be negative"));
    }
    Ok(AuthMethod {
        name,
        method_type: text(&fields, "type")?.unwrap_or_default(),
        display_name: text(&fields, "displayname")?.unwrap_or_default(),
        description: text(&fields, "description")?.unwrap_or_default(),
        max_token_ttl_ms: u64::try_from(max_ttl).ok().filter(|ms| *ms > 0),
        token_locality: text(&fields, "tokenlocality")?.unwrap_or_default(),
        config: config_of(fields.get("config"))?,
        create_index: 0,
        modify_index: 0,
    })
}

fn config_json(c: &JwtConfig) -> Value {
    let mut out = Map::new();
    let mut put = |key: &str, value: Value, present: bool| {
        if present {
            out.insert(key.into(), value);
        }
    };
    put("JWTValidationPubKeys", json!(c.validation_pub_keys), !c.validation_pub_keys.is_empty());
    put("BoundIssuer", json!(c.bound_issuer), !c.bound_issuer.is_empty());
    put("BoundAudiences", json!(c.bound_audiences), !c.bound_audiences.is_empty());
    put("ClaimMappings", json!(c.claim_mappings), !c.claim_mappings.is_empty());
    put("ListClaimMappings", json!(c.list_claim_mappings), !c.list_claim_mappings.is_empty());
    put("JWTSupportedAlgs", json!(c.supported_algs), !c.supported_algs.is_empty());
    put("ClockSkewLeeway", json!(go_duration_text(c.clock_skew_leeway_ms)), c.clock_skew_leeway_ms != 0);
    put("ExpirationLeeway", json!(go_duration_text(c.expiration_leeway_ms)), c.expiration_leeway_ms != 0);
    put("NotBeforeLeeway", json!(go_duration_text(c.not_before_leeway_ms)), c.not_before_leeway_ms != 0);
    Value::Object(out)
}

/// An auth method as Consul renders it (`config`: with its configuration; lists show stubs).
fn method_json(m: &AuthMethod, config: bool) -> Value {
    let mut out = Map::new();
    out.insert("Name".into(), json!(m.name));
    out.insert("Type".into(), json!(m.method_type));
    if !m.display_name.is_empty() {
        out.insert("DisplayName".into(), json!(m.display_name));
    }
    out.insert("Description".into(), json!(m.description));
    if let Some(ttl) = m.max_token_ttl_ms {
        out.insert("MaxTokenTTL".into(), json!(go_duration_text(i64::try_from(ttl).unwrap_or(i64::MAX))));
    }
    out.insert("TokenLocality".into(), json!(m.token_locality));
    if config {
        out.insert("Config".into(), config_json(&m.config));
    }
    out.insert("CreateIndex".into(), json!(m.create_index));
    out.insert("ModifyIndex".into(), json!(m.modify_index));
    Value::Object(out)
}

fn method_not_found() -> ConsulError {
    ConsulError(StatusCode::NOT_FOUND, "Auth method not found".into())
}

fn rule_not_found() -> ConsulError {
    ConsulError(StatusCode::NOT_FOUND, "Binding rule not found".into())
}

/// `PUT /v1/acl/auth-method`: create (or replace, as Consul: methods are keyed by name).
pub(crate) async fn method_create(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    body: axum::body::Bytes,
) -> Result<Response, ConsulError> {
    let method = state.node.set_auth_method(&caller, method_request(&body, None)?).await?;
    Ok(answer(&state, index(&state), method_json(&method, true)))
}

/// `GET /v1/acl/auth-method/:name`.
pub(crate) async fn method_read(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    params(raw)?;
    let acl = state.node.acl_state(&caller)?;
    let method = acl.auth_methods().get(&name).ok_or_else(method_not_found)?;
    Ok(answer(&state, index(&state), method_json(method, true)))
}

/// `PUT /v1/acl/auth-method/:name`: update (a missing method is created, as in Consul).
pub(crate) async fn method_update(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ConsulError> {
    let method = state.node.set_auth_method(&caller, method_request(&body, Some(name))?).await?;
    Ok(answer(&state, index(&state), method_json(&method, true)))
}

/// `DELETE /v1/acl/auth-method/:name`: `true` (its binding rules and tokens go with it).
pub(crate) async fn method_delete(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
) -> Result<Response, ConsulError> {
    match state.node.delete_auth_method(&caller, name).await {
        Ok(()) | Err(NodeError::NotFound(_)) => Ok(answer(&state, index(&state), Value::Bool(true))),
        Err(e) => Err(e.into()),
    }
}

/// `GET /v1/acl/auth-methods`: every method, without its configuration.
pub(crate) async fn method_list(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    params(raw)?;
    let acl = state.node.acl_state(&caller)?;
    let list: Vec<Value> = acl.auth_methods().values().map(|m| method_json(m, false)).collect();
    Ok(answer(&state, index(&state), Value::Array(list)))
}

/// A binding rule body; `id` from the path, if any.
fn rule_request(body: &[u8], id: Option<String>) -> Result<BindingRule, ConsulError> {
    let fields = strict_body(body, RULE_FIELDS)?;
    let in_body = text(&fields, "id")?.filter(|s| !s.is_empty());
    if let (Some(path), Some(body)) = (&id, &in_body)
        && path != body
    {
        return Err(bad_request("Binding Rule ID in the body does not match the URL"));
    }
    let auth_method = text(&fields, "authmethod")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad_request("Invalid Binding Rule: no AuthMethod is set"))?;
    let bind_type_text = text(&fields, "bindtype")?.unwrap_or_default();
    let bind_type = BindType::parse(&bind_type_text).ok_or_else(|| {
        bad_request(format!(
            "Invalid Binding Rule: unknown BindType {bind_type_text:?} (service, node, role, policy or templated-policy)"
        ))
    })?;
    let bind_vars = match fields.get("bindvars") {
        None | Some(Value::Null) => None,
        Some(raw) => {
            let vars = fields_of(raw, "BindVars").map_err(bad_request)?;
            strict(&vars, raw, &["name"]).map_err(|e| bad_request(format!("BindVars: {e}")))?;
            text(&vars, "name")?.filter(|s| !s.is_empty())
        }
    };
    Ok(BindingRule {
        id: id.or(in_body).unwrap_or_default(),
        description: text(&fields, "description")?.unwrap_or_default(),
        auth_method,
        selector: text(&fields, "selector")?.unwrap_or_default(),
        bind_type,
        bind_name: text(&fields, "bindname")?.unwrap_or_default(),
        bind_vars,
        create_index: 0,
        modify_index: 0,
    })
}

fn rule_json(r: &BindingRule) -> Value {
    let mut out = json!({
        "ID": r.id, "Description": r.description, "AuthMethod": r.auth_method, "Selector": r.selector,
        "BindType": r.bind_type.as_str(), "BindName": r.bind_name,
        "CreateIndex": r.create_index, "ModifyIndex": r.modify_index,
    });
    if let (Some(name), Some(fields)) = (&r.bind_vars, out.as_object_mut()) {
        fields.insert("BindVars".into(), json!({ "Name": name }));
    }
    out
}

/// `PUT /v1/acl/binding-rule`: create (an `ID` in the body names a rule to update, as Consul).
pub(crate) async fn rule_create(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    body: axum::body::Bytes,
) -> Result<Response, ConsulError> {
    let rule = rule_request(&body, None)?;
    caller.check(waggle_core::acl::Resource::Acl, "", waggle_core::acl::Access::Write)?;
    if !rule.id.is_empty() && !state.node.read_model().acl().binding_rules().contains_key(&rule.id) {
        return Err(bad_request(format!("Invalid Binding Rule: cannot find binding rule {:?}", rule.id)));
    }
    let rule = state.node.set_binding_rule(&caller, rule).await?;
    Ok(answer(&state, index(&state), rule_json(&rule)))
}

/// `GET /v1/acl/binding-rule/:id`.
pub(crate) async fn rule_read(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    params(raw)?;
    let acl = state.node.acl_state(&caller)?;
    let rule = acl.binding_rules().get(&id).ok_or_else(rule_not_found)?;
    Ok(answer(&state, index(&state), rule_json(rule)))
}

/// `PUT /v1/acl/binding-rule/:id`: update (a missing rule is a 404).
pub(crate) async fn rule_update(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ConsulError> {
    let rule = rule_request(&body, Some(id.clone()))?;
    caller.check(waggle_core::acl::Resource::Acl, "", waggle_core::acl::Access::Write)?;
    if !state.node.read_model().acl().binding_rules().contains_key(&id) {
        return Err(rule_not_found());
    }
    let rule = state.node.set_binding_rule(&caller, rule).await?;
    Ok(answer(&state, index(&state), rule_json(&rule)))
}

/// `DELETE /v1/acl/binding-rule/:id`: `true`.
pub(crate) async fn rule_delete(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response, ConsulError> {
    match state.node.delete_binding_rule(&caller, id).await {
        Ok(()) | Err(NodeError::NotFound(_)) => Ok(answer(&state, index(&state), Value::Bool(true))),
        Err(e) => Err(e.into()),
    }
}

/// `GET /v1/acl/binding-rules[?authmethod=]`.
pub(crate) async fn rule_list(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| bad_request(format!("malformed query string: {e}")))?;
    params(raw)?;
    let method = pairs.into_iter().find_map(|(k, v)| (k == "authmethod").then_some(v)).filter(|m| !m.is_empty());
    let acl = state.node.acl_state(&caller)?;
    let list: Vec<Value> = acl
        .binding_rules()
        .values()
        .filter(|r| method.as_ref().is_none_or(|m| r.auth_method == *m))
        .map(|r| rule_json(r))
        .collect();
    Ok(answer(&state, index(&state), Value::Array(list)))
}

/// `POST /v1/acl/login` with `{"AuthMethod", "BearerToken", "Meta"}`: the token created, with
/// its secret. Needs no token.
pub(crate) async fn login(State(state): State<ConsulState>, body: axum::body::Bytes) -> Result<Response, ConsulError> {
    let fields = strict_body(&body, LOGIN_FIELDS)?;
    let auth_method = text(&fields, "authmethod")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad_request("Invalid Login request: missing AuthMethod"))?;
    let bearer_token = text(&fields, "bearertoken")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad_request("Invalid Login request: missing BearerToken"))?;
    let meta = match fields.get("meta") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(bad_request(format!("Meta: {k:?} is not a string"))),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad_request("Meta: expected an object of strings")),
    };
    let token = state.node.login(LoginRequest { auth_method, bearer_token, meta }).await?;
    Ok(answer(&state, index(&state), token_json(&state.node.read_model().acl(), &token, true)))
}

/// `POST /v1/acl/logout`: deletes the request's own token (`X-Consul-Token`), which login must
/// have created; `true`. A request without a token is refused ("ACL not found"), not run with
/// the agent's default token.
pub(crate) async fn logout(
    State(state): State<ConsulState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ConsulError> {
    let secret = request_token(&headers, &uri)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ConsulError(StatusCode::FORBIDDEN, "ACL not found".into()))?;
    let caller = state.node.resolve(Some(&secret)).await?;
    state.node.logout(&caller).await?;
    Ok(answer(&state, index(&state), Value::Bool(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_as_go_writes_them() {
        for (ms, text) in [
            (0, "0s"),
            (500, "500ms"),
            (1_000, "1s"),
            (1_500, "1.5s"),
            (90_000, "1m30s"),
            (300_000, "5m0s"),
            (3_600_000, "1h0m0s"),
            (86_400_000, "24h0m0s"),
            (-1_000, "-1s"),
        ] {
            assert_eq!(go_duration_text(ms), text, "{ms}");
        }
    }

    #[test]
    fn method_bodies_are_decoded_strictly() {
        let ok = method_request(
            br#"{"Name": "ci", "Type": "jwt", "MaxTokenTTL": "1h", "Config": {
                "JWTValidationPubKeys": ["k"], "ClaimMappings": {"Service_Name": "service"},
                "ClockSkewLeeway": "-1s", "ExpirationLeeway": 2000000000, "JWKSURL": ""}}"#,
            None,
        )
        .unwrap_or_else(|e| panic!("{}", e.1));
        assert_eq!(ok.max_token_ttl_ms, Some(3_600_000));
        assert_eq!(ok.config.claim_mappings["Service_Name"], "service", "claim names keep their case");
        assert_eq!((ok.config.clock_skew_leeway_ms, ok.config.expiration_leeway_ms), (-1000, 2000));
        for (body, why) in [
            (r#"{"Type": "jwt"}"#, "Name"),
            (r#"{"Name": "ci", "Nope": 1}"#, "Nope"),
            (r#"{"Name": "ci", "Config": {"JWKSURL": "https://x"}}"#, "JWKSURL"),
            (r#"{"Name": "ci", "Config": {"Other": 1}}"#, "Other"),
            (r#"{"Name": "ci", "Config": {"ClaimMappings": {"a": 1}}}"#, "ClaimMappings"),
            (r#"{"Name": "ci", "Config": {"ClockSkewLeeway": "soon"}}"#, "ClockSkewLeeway"),
            (r#"{"Name": "ci", "MaxTokenTTL": "-1h"}"#, "MaxTokenTTL"),
            (r#"["ci"]"#, "object"),
        ] {
            let err = method_request(body.as_bytes(), None).expect_err(body);
            assert_eq!(err.0, StatusCode::BAD_REQUEST, "{body}");
            assert!(err.1.contains(why), "{body}: {}", err.1);
        }
        let err = method_request(br#"{"Name": "a"}"#, Some("b".into())).expect_err("mismatch");
        assert!(err.1.contains("does not match"), "{}", err.1);
    }

    #[test]
    fn rule_bodies_are_decoded_strictly() {
        let rule = rule_request(
            br#"{"AuthMethod": "ci", "BindType": "templated-policy", "BindName": "builtin/service",
                "BindVars": {"Name": "${value.service}"}, "Selector": "value.team == core"}"#,
            None,
        )
        .unwrap_or_else(|e| panic!("{}", e.1));
        assert_eq!((rule.bind_type, rule.bind_vars.as_deref()), (BindType::TemplatedPolicy, Some("${value.service}")));
        assert_eq!(rule_json(&rule)["BindVars"], json!({ "Name": "${value.service}" }));
        for (body, why) in [
            (r#"{"BindType": "service", "BindName": "x"}"#, "AuthMethod"),
            (r#"{"AuthMethod": "ci", "BindType": "Service", "BindName": "x"}"#, "BindType"),
            (r#"{"AuthMethod": "ci", "BindName": "x"}"#, "BindType"),
            (r#"{"AuthMethod": "ci", "BindType": "service", "BindVars": {"Other": "x"}}"#, "Other"),
            (r#"{"AuthMethod": "ci", "BindType": "service", "Extra": true}"#, "Extra"),
        ] {
            let err = rule_request(body.as_bytes(), None).expect_err(body);
            assert!(err.0 == StatusCode::BAD_REQUEST && err.1.contains(why), "{body}: {}", err.1);
        }
    }
}
