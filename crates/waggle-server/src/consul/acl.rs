//! Consul's `/v1/acl`: bootstrap, tokens (create, read, update, clone, delete, list, self),
//! policies and roles (create, read by id or name, update, delete, list), with Consul's
//! bodies and status codes: 403 "Permission denied: ..." or "ACL not found", a missing token
//! or policy is an error ("ACL not found", 403), a missing role is a 404. Every endpoint needs
//! `acl:read` or `acl:write` (bootstrap needs nothing, once).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::{
    extract::{Path, RawQuery, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use waggle_core::acl::{
    ANONYMOUS_ACCESSOR, AclState, GLOBAL_MANAGEMENT_ID, GLOBAL_MANAGEMENT_NAME, Grants, NodeIdentity, Policy, Role,
    ServiceIdentity, TemplatedPolicy,
};

use super::{
    fields::{Fields, body_fields, fields_of, list, strings, text},
    render::{grants_json, token_json},
    request::{Auth, ConsulError, ConsulState, answer, bad_request, go_duration, params},
};
use crate::node::{Node, NodeError, PolicyRequest, TokenRequest, is_uuid};

fn policy_json(p: &Policy) -> Value {
    json!({
        "ID": p.id, "Name": p.name, "Description": p.description, "Rules": p.rules_text,
        "Datacenters": p.datacenters, "Hash": "", "CreateIndex": p.create_index, "ModifyIndex": p.modify_index,
    })
}

/// The built-in global-management policy.
fn management_json() -> Value {
    json!({
        "ID": GLOBAL_MANAGEMENT_ID, "Name": GLOBAL_MANAGEMENT_NAME,
        "Description": "Builtin Policy that grants unlimited access", "Rules": "", "Datacenters": [],
        "Hash": "", "CreateIndex": 1, "ModifyIndex": 1,
    })
}

fn role_json(acl: &AclState, r: &Role) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("ID".into(), json!(r.id));
    out.insert("Name".into(), json!(r.name));
    out.insert("Description".into(), json!(r.description));
    grants_json(acl, &r.grants, &mut out);
    out.insert("Hash".into(), json!(""));
    out.insert("CreateIndex".into(), json!(r.create_index));
    out.insert("ModifyIndex".into(), json!(r.modify_index));
    Value::Object(out)
}

/// A link (`{"ID": ...}` or `{"Name": ...}`) to a policy or role, as an id.
fn link(acl: &AclState, item: &Value, policy: bool) -> Result<String, ConsulError> {
    let fields = fields_of(item, "link").map_err(bad_request)?;
    let what = if policy { "policy" } else { "role" };
    if let Some(id) = text(&fields, "id")?.filter(|s| !s.is_empty()) {
        return Ok(id);
    }
    let name = text(&fields, "name")?.unwrap_or_default();
    let found = if policy {
        if name == GLOBAL_MANAGEMENT_NAME {
            Some(GLOBAL_MANAGEMENT_ID.to_owned())
        } else {
            acl.policy_by_name(&name).map(|p| p.id.clone())
        }
    } else {
        acl.role_by_name(&name).map(|r| r.id.clone())
    };
    found.ok_or_else(|| bad_request(format!("cannot find {what} {name:?}")))
}

/// The policies, identities and templated policies of a token or role body.
fn grants(acl: &AclState, fields: &Fields) -> Result<Grants, ConsulError> {
    let mut grants = Grants::default();
    for item in list(fields, "policies")? {
        grants.policies.push(link(acl, item, true)?);
    }
    for item in list(fields, "serviceidentities")? {
        let f = fields_of(item, "ServiceIdentities").map_err(bad_request)?;
        let service = text(&f, "servicename")?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad_request("ServiceIdentities: ServiceName is required"))?;
        waggle_core::ServiceName::new(&service).map_err(|e| bad_request(format!("ServiceIdentities: {e}")))?;
        grants.service_identities.push(ServiceIdentity { service, datacenters: strings(f.get("datacenters")) });
    }
    for item in list(fields, "nodeidentities")? {
        let f = fields_of(item, "NodeIdentities").map_err(bad_request)?;
        let node = text(&f, "nodename")?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad_request("NodeIdentities: NodeName is required"))?;
        let datacenter = text(&f, "datacenter")?.unwrap_or_else(|| super::request::DATACENTER.to_owned());
        grants.node_identities.push(NodeIdentity { node, datacenter });
    }
    for item in list(fields, "templatedpolicies")? {
        let f = fields_of(item, "TemplatedPolicies").map_err(bad_request)?;
        let template = text(&f, "templatename")?.unwrap_or_default();
        let name = match f.get("templatevariables") {
            Some(vars @ Value::Object(_)) => text(&fields_of(vars, "TemplateVariables").map_err(bad_request)?, "name")?,
            _ => None,
        };
        match (template.as_str(), &name) {
            ("builtin/service" | "builtin/node", Some(_)) | ("builtin/dns", _) => {}
            ("builtin/service" | "builtin/node", None) => {
                return Err(bad_request(format!("TemplatedPolicies: {template} needs TemplateVariables.Name")));
            }
            _ => return Err(bad_request(format!("TemplatedPolicies: unknown template {template:?}"))),
        }
        grants.templated_policies.push(TemplatedPolicy { template, name, datacenters: strings(f.get("datacenters")) });
    }
    Ok(grants)
}

/// A token body (`PUT /v1/acl/token[/:id]`); `accessor` from the path, if any.
fn token_request(acl: &AclState, body: &[u8], accessor: Option<String>) -> Result<TokenRequest, ConsulError> {
    let fields = body_fields(body)?;
    let in_body = text(&fields, "accessorid")?.filter(|s| !s.is_empty());
    if let (Some(path), Some(body)) = (&accessor, &in_body)
        && path != body
    {
        return Err(bad_request("AccessorID in the body does not match the URL"));
    }
    let mut roles = Vec::new();
    for item in list(&fields, "roles")? {
        roles.push(link(acl, item, false)?);
    }
    let expiration_ms = match (text(&fields, "expirationtime")?, text(&fields, "expirationttl")?) {
        (Some(_), Some(_)) => return Err(bad_request("ExpirationTime and ExpirationTTL cannot both be set")),
        (Some(at), None) => {
            let at = humantime::parse_rfc3339_weak(&at).map_err(|e| bad_request(format!("ExpirationTime: {e}")))?;
            Some(at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))
        }
        (None, Some(ttl)) => {
            let ttl =
                go_duration(&ttl).ok_or_else(|| bad_request(format!("ExpirationTTL: invalid duration {ttl:?}")))?;
            if ttl < Duration::from_secs(60) || ttl > Duration::from_secs(24 * 3600) {
                return Err(bad_request("ExpirationTTL: must be between 1m and 24h"));
            }
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            Some((now + ttl).as_millis() as u64)
        }
        (None, None) => None,
    };
    Ok(TokenRequest {
        accessor: accessor.or(in_body),
        secret: text(&fields, "secretid")?.filter(|s| !s.is_empty()),
        description: text(&fields, "description")?.unwrap_or_default(),
        grants: grants(acl, &fields)?,
        roles,
        local: matches!(fields.get("local"), Some(Value::Bool(true))),
        expiration_ms,
    })
}

/// A delete's answer: `true`, also for something already gone (as Consul answers).
fn deleted(state: &ConsulState, result: Result<(), NodeError>) -> Result<Response, ConsulError> {
    match result {
        Ok(()) | Err(NodeError::NotFound(_)) => Ok(answer(state, unchanged_index(state), Value::Bool(true))),
        Err(e) => Err(e.into()),
    }
}

/// A missing token or policy is an error in Consul ("ACL not found"), not a 404.
fn acl_not_found() -> ConsulError {
    ConsulError(StatusCode::FORBIDDEN, "ACL not found".into())
}

fn unchanged_index(state: &ConsulState) -> waggle_core::Revision {
    state.node.read_model().revision()
}

/// `PUT /v1/acl/bootstrap`, optionally with `{"BootstrapSecret": "<uuid>"}` (Consul 1.19+).
pub(crate) async fn bootstrap(
    State(state): State<ConsulState>,
    body: axum::body::Bytes,
) -> Result<Response, ConsulError> {
    let fields = body_fields(&body)?;
    let secret = text(&fields, "bootstrapsecret")?.filter(|s| !s.is_empty());
    if let Some(secret) = &secret
        && !is_uuid(secret)
    {
        return Err(bad_request("BootstrapSecret: not a UUID"));
    }
    let token = state.node.acl_bootstrap(secret, "Bootstrap Token (Global Management)").await.map_err(|e| match e {
        NodeError::PermissionDenied(m) => ConsulError(StatusCode::FORBIDDEN, m),
        e => e.into(),
    })?;
    let acl = state.node.read_model().acl();
    Ok(answer(&state, unchanged_index(&state), token_json(&acl, &token, true)))
}

/// `GET /v1/acl/token/self`.
pub(crate) async fn token_self(State(state): State<ConsulState>, Auth(caller): Auth) -> Result<Response, ConsulError> {
    let token = state.node.own_token(&caller)?.ok_or_else(acl_not_found)?;
    let acl = state.node.read_model().acl();
    Ok(answer(&state, unchanged_index(&state), token_json(&acl, &token, true)))
}

/// `PUT /v1/acl/token`: create.
pub(crate) async fn token_create(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    body: axum::body::Bytes,
) -> Result<Response, ConsulError> {
    let acl = state.node.read_model().acl();
    let request = token_request(&acl, &body, None)?;
    if let Some(id) = &request.accessor
        && acl.token(id).is_some()
    {
        return Err(bad_request(format!("Token with AccessorID {id:?} already exists")));
    }
    let token = state.node.set_token(&caller, request).await?;
    Ok(answer(&state, unchanged_index(&state), token_json(&state.node.read_model().acl(), &token, true)))
}

/// `GET /v1/acl/token/:id`.
pub(crate) async fn token_read(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    params(raw)?;
    let acl = state.node.acl_state(&caller)?;
    let token = match acl.token(&id) {
        Some(token) => token.clone(),
        None if id == ANONYMOUS_ACCESSOR => std::sync::Arc::new(Node::anonymous_token(&acl)),
        None => return Err(acl_not_found()),
    };
    Ok(answer(&state, unchanged_index(&state), token_json(&acl, &token, true)))
}

/// `PUT /v1/acl/token/:id`: update (a missing token is an error).
pub(crate) async fn token_update(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ConsulError> {
    let acl = state.node.read_model().acl();
    let request = token_request(&acl, &body, Some(id.clone()))?;
    caller_acl_write(&caller)?;
    if acl.token(&id).is_none() && id != ANONYMOUS_ACCESSOR {
        return Err(acl_not_found());
    }
    let token = state.node.set_token(&caller, request).await?;
    Ok(answer(&state, unchanged_index(&state), token_json(&state.node.read_model().acl(), &token, true)))
}

fn caller_acl_write(caller: &crate::node::Caller) -> Result<(), ConsulError> {
    Ok(caller.check(waggle_core::acl::Resource::Acl, "", waggle_core::acl::Access::Write)?)
}

/// `PUT /v1/acl/token/:id/clone`: a new token with the same links and a new secret.
pub(crate) async fn token_clone(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ConsulError> {
    caller_acl_write(&caller)?;
    let acl = state.node.read_model().acl();
    let original = acl.token(&id).ok_or_else(acl_not_found)?.clone();
    let fields = body_fields(&body)?;
    let request = TokenRequest {
        accessor: None,
        secret: None,
        description: text(&fields, "description")?.unwrap_or_else(|| original.description.clone()),
        grants: original.grants.clone(),
        roles: original.roles.clone(),
        local: original.local,
        expiration_ms: original.expiration_ms,
    };
    let token = state.node.set_token(&caller, request).await?;
    Ok(answer(&state, unchanged_index(&state), token_json(&state.node.read_model().acl(), &token, true)))
}

/// `DELETE /v1/acl/token/:id`: `true`.
pub(crate) async fn token_delete(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response, ConsulError> {
    caller_acl_write(&caller)?;
    if !is_uuid(&id) {
        return Err(bad_request(format!("Invalid AccessorID {id:?}")));
    }
    deleted(&state, state.node.delete_token(&caller, id).await)
}

/// The `?name=value` pairs of a query string.
fn query_pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, ConsulError> {
    serde_urlencoded::from_str(raw.unwrap_or("")).map_err(|e| bad_request(format!("malformed query string: {e}")))
}

/// `GET /v1/acl/tokens`: every token (secrets hidden from tokens without `acl:write`), or those
/// linked to `?policy=<id>`, `?role=<id>`, or issued by `?authmethod=<name>`.
pub(crate) async fn token_list(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    let query = query_pairs(raw.as_deref())?;
    let wanted = |key: &str| query.iter().find(|(k, v)| k == key && !v.is_empty()).map(|(_, v)| v.as_str());
    let (policy, role, method) = (wanted("policy"), wanted("role"), wanted("authmethod"));
    let acl = state.node.acl_state(&caller)?;
    let secrets = caller.may(waggle_core::acl::Resource::Acl, "", waggle_core::acl::Access::Write);
    let anonymous = acl.token(ANONYMOUS_ACCESSOR).is_none().then(|| std::sync::Arc::new(Node::anonymous_token(&acl)));
    let list: Vec<Value> = acl
        .tokens()
        .values()
        .chain(anonymous.as_ref())
        .filter(|t| policy.is_none_or(|p| t.grants.policies.iter().any(|id| id == p)))
        .filter(|t| role.is_none_or(|r| t.roles.iter().any(|id| id == r)))
        .filter(|t| method.is_none_or(|m| t.auth_method.as_deref() == Some(m)))
        .map(|t| token_json(&acl, t, secrets))
        .collect();
    Ok(answer(&state, unchanged_index(&state), Value::Array(list)))
}

fn policy_request(body: &[u8], id: Option<String>) -> Result<PolicyRequest, ConsulError> {
    let fields = body_fields(body)?;
    let in_body = text(&fields, "id")?.filter(|s| !s.is_empty());
    if let (Some(path), Some(body)) = (&id, &in_body)
        && path != body
    {
        return Err(bad_request("ID in the body does not match the URL"));
    }
    let name = text(&fields, "name")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad_request("Invalid Policy: no Name is set"))?;
    let valid_name = name.len() <= 128 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid_name {
        return Err(bad_request(format!(
            "Invalid Policy: invalid Name {name:?} (letters, digits, - and _, at most 128)"
        )));
    }
    Ok(PolicyRequest {
        id: id.or(in_body),
        name,
        description: text(&fields, "description")?.unwrap_or_default(),
        rules_text: text(&fields, "rules")?.unwrap_or_default(),
        datacenters: strings(fields.get("datacenters")),
    })
}

/// `PUT /v1/acl/policy`: create.
pub(crate) async fn policy_create(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    body: axum::body::Bytes,
) -> Result<Response, ConsulError> {
    let request = policy_request(&body, None)?;
    let policy = state.node.set_policy(&caller, request).await?;
    Ok(answer(&state, unchanged_index(&state), policy_json(&policy)))
}

/// `GET /v1/acl/policy/:id`.
pub(crate) async fn policy_read(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response, ConsulError> {
    let acl = state.node.acl_state(&caller)?;
    if id == GLOBAL_MANAGEMENT_ID {
        return Ok(answer(&state, unchanged_index(&state), management_json()));
    }
    let policy = acl.policies().get(&id).ok_or_else(acl_not_found)?;
    Ok(answer(&state, unchanged_index(&state), policy_json(policy)))
}

/// `GET /v1/acl/policy/name/:name`.
pub(crate) async fn policy_read_by_name(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
) -> Result<Response, ConsulError> {
    let acl = state.node.acl_state(&caller)?;
    if name == GLOBAL_MANAGEMENT_NAME {
        return Ok(answer(&state, unchanged_index(&state), management_json()));
    }
    let policy = acl.policy_by_name(&name).ok_or_else(acl_not_found)?;
    Ok(answer(&state, unchanged_index(&state), policy_json(policy)))
}

/// `PUT /v1/acl/policy/:id`: update.
pub(crate) async fn policy_update(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ConsulError> {
    caller_acl_write(&caller)?;
    let request = policy_request(&body, Some(id.clone()))?;
    if id != GLOBAL_MANAGEMENT_ID && state.node.read_model().acl().policies().get(&id).is_none() {
        return Err(acl_not_found());
    }
    let policy = state.node.set_policy(&caller, request).await?;
    Ok(answer(&state, unchanged_index(&state), policy_json(&policy)))
}

/// `DELETE /v1/acl/policy/:id`: `true`.
pub(crate) async fn policy_delete(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response, ConsulError> {
    deleted(&state, state.node.delete_policy(&caller, id).await)
}

/// `GET /v1/acl/policies`.
pub(crate) async fn policy_list(State(state): State<ConsulState>, Auth(caller): Auth) -> Result<Response, ConsulError> {
    let acl = state.node.acl_state(&caller)?;
    let list: Vec<Value> =
        std::iter::once(management_json()).chain(acl.policies().values().map(|p| policy_json(p))).collect();
    Ok(answer(&state, unchanged_index(&state), Value::Array(list)))
}

fn role_request(acl: &AclState, body: &[u8], id: Option<String>) -> Result<Role, ConsulError> {
    let fields = body_fields(body)?;
    let in_body = text(&fields, "id")?.filter(|s| !s.is_empty());
    if let (Some(path), Some(body)) = (&id, &in_body)
        && path != body
    {
        return Err(bad_request("ID in the body does not match the URL"));
    }
    let name = text(&fields, "name")?.filter(|s| !s.is_empty()).ok_or_else(|| bad_request("Role name is missing"))?;
    Ok(Role {
        id: id.or(in_body).unwrap_or_default(),
        name,
        description: text(&fields, "description")?.unwrap_or_default(),
        grants: grants(acl, &fields)?,
        create_index: 0,
        modify_index: 0,
    })
}

/// `PUT /v1/acl/role`: create.
pub(crate) async fn role_create(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    body: axum::body::Bytes,
) -> Result<Response, ConsulError> {
    let acl = state.node.read_model().acl();
    let role = state.node.set_role(&caller, role_request(&acl, &body, None)?).await?;
    Ok(answer(&state, unchanged_index(&state), role_json(&state.node.read_model().acl(), &role)))
}

/// `GET /v1/acl/role/:id`: a missing role is a 404, as in Consul.
pub(crate) async fn role_read(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response, ConsulError> {
    let acl = state.node.acl_state(&caller)?;
    let role = acl.roles().get(&id).ok_or_else(|| ConsulError(StatusCode::NOT_FOUND, "Role not found".into()))?;
    Ok(answer(&state, unchanged_index(&state), role_json(&acl, role)))
}

/// `GET /v1/acl/role/name/:name`.
pub(crate) async fn role_read_by_name(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
) -> Result<Response, ConsulError> {
    let acl = state.node.acl_state(&caller)?;
    let role = acl.role_by_name(&name).ok_or_else(|| ConsulError(StatusCode::NOT_FOUND, "Role not found".into()))?;
    Ok(answer(&state, unchanged_index(&state), role_json(&acl, role)))
}

/// `PUT /v1/acl/role/:id`: update.
pub(crate) async fn role_update(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ConsulError> {
    caller_acl_write(&caller)?;
    let acl = state.node.read_model().acl();
    if acl.roles().get(&id).is_none() {
        return Err(ConsulError(StatusCode::NOT_FOUND, "Role not found".into()));
    }
    let role = state.node.set_role(&caller, role_request(&acl, &body, Some(id))?).await?;
    Ok(answer(&state, unchanged_index(&state), role_json(&state.node.read_model().acl(), &role)))
}

/// `DELETE /v1/acl/role/:id`: `true`.
pub(crate) async fn role_delete(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response, ConsulError> {
    deleted(&state, state.node.delete_role(&caller, id).await)
}

/// `GET /v1/acl/roles`, or those linked to `?policy=<id>`.
pub(crate) async fn role_list(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    let query = query_pairs(raw.as_deref())?;
    let policy = query.iter().find(|(k, v)| k == "policy" && !v.is_empty()).map(|(_, v)| v.clone());
    let acl = state.node.acl_state(&caller)?;
    let list: Vec<Value> = acl
        .roles()
        .values()
        .filter(|r| policy.as_ref().is_none_or(|p| r.grants.policies.contains(p)))
        .map(|r| role_json(&acl, r))
        .collect();
    Ok(answer(&state, unchanged_index(&state), Value::Array(list)))
}

/// Consul's built-in templated policies: name, description, the variable they take, and their
/// rules with `{{.Name}}` standing for it.
const TEMPLATES: &[(&str, &str, bool, &str)] = &[
    (
        "builtin/service",
        "Gives the token or role permissions to register a service and discover services in the Consul catalog. It also gives the specified service's sidecar proxy the permission to discover and route traffic to other services.",
        true,
        "service \"{{.Name}}\" {\n  policy = \"write\"\n}\nservice \"{{.Name}}-sidecar-proxy\" {\n  policy = \"write\"\n}\nservice_prefix \"\" {\n  policy = \"read\"\n}\nnode_prefix \"\" {\n  policy = \"read\"\n}",
    ),
    (
        "builtin/node",
        "Gives the token or role permissions for a register an agent/node into the catalog. A node is typically a consul agent but can also be a physical server, cloud instance or a container.",
        true,
        "node \"{{.Name}}\" {\n  policy = \"write\"\n}\nservice_prefix \"\" {\n  policy = \"read\"\n}",
    ),
    (
        "builtin/dns",
        "Gives the token or role permissions for the Consul DNS to query services in the network.",
        false,
        "node_prefix \"\" {\n  policy = \"read\"\n}\nservice_prefix \"\" {\n  policy = \"read\"\n}\nquery_prefix \"\" {\n  policy = \"read\"\n}",
    ),
];

fn template_json((name, description, takes_name, rules): &(&str, &str, bool, &str)) -> Value {
    let schema = if *takes_name {
        r##"{"type":"object","properties":{"name":{"type":"string","$ref":"#/definitions/min-length-one"}},"required":["name"]}"##
    } else {
        ""
    };
    json!({ "TemplateName": name, "Schema": schema, "Template": rules, "Description": description })
}

/// `GET /v1/acl/templated-policies`.
pub(crate) async fn templated_policies(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
) -> Result<Response, ConsulError> {
    state.node.acl_state(&caller)?;
    let all: serde_json::Map<String, Value> = TEMPLATES.iter().map(|t| (t.0.to_owned(), template_json(t))).collect();
    Ok(answer(&state, unchanged_index(&state), Value::Object(all)))
}

fn template(name: &str) -> Result<&'static (&'static str, &'static str, bool, &'static str), ConsulError> {
    TEMPLATES
        .iter()
        .find(|t| t.0 == name)
        .ok_or_else(|| ConsulError(StatusCode::NOT_FOUND, format!("Templated policy {name:?} not found")))
}

/// `GET /v1/acl/templated-policy/name/:name` (the name holds a `/`: `builtin/service`).
pub(crate) async fn templated_policy(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
) -> Result<Response, ConsulError> {
    state.node.acl_state(&caller)?;
    Ok(answer(&state, unchanged_index(&state), template_json(template(&name)?)))
}

/// `POST /v1/acl/templated-policy/preview/:name` with `{"Name": ...}`: the policy it renders to.
pub(crate) async fn templated_policy_preview(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ConsulError> {
    state.node.acl_state(&caller)?;
    let (template_name, _, takes_name, rules) = template(&name)?;
    let fields = body_fields(&body)?;
    let variable = text(&fields, "name")?.filter(|n| !n.is_empty());
    let rules = match (takes_name, variable) {
        (true, Some(variable)) => {
            waggle_core::ServiceName::new(&variable).map_err(|e| bad_request(format!("Name: {e}")))?;
            rules.replace("{{.Name}}", &variable)
        }
        (true, None) => return Err(bad_request(format!("{template_name} needs Name"))),
        (false, _) => (*rules).to_owned(),
    };
    let preview = json!({
        "ID": "", "Name": format!("{template_name}-preview"),
        "Description": format!("synthetic policy generated from templated policy: {template_name}"),
        "Rules": rules,
    });
    Ok(answer(&state, unchanged_index(&state), preview))
}

/// `PUT /v1/agent/token/:kind` with `{"Token": ...}`: sets one of the agent's tokens (the
/// `default` token then serves requests that carry none). In memory only.
pub(crate) async fn agent_token(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(kind): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ConsulError> {
    let fields = body_fields(&body)?;
    let token = text(&fields, "token")?.unwrap_or_default();
    state.node.set_agent_token(&caller, &kind, token)?;
    Ok(StatusCode::OK.into_response())
}
