//! The Consul-compatible HTTP API, read side (issue 7, in progress): catalog and health
//! queries for services, datacenters, status and agent self, with blocking queries
//! (`?index=&wait=`) served by the watch hub's revision (no polling) and Consul's headers.
//!
//! Mapping: every instance is a Consul service instance on one node, the server answering
//! (`waggle-<id>`, datacenter `dc1`), which carries the node-level `serfHealth` check; each
//! instance has one service check whose status is the instance's. `X-Consul-Index` is the
//! registry revision (starts at 1, never 0, only grows).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::{
    Router,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, put},
};
use serde_json::{Value, json};
use waggle_core::{HealthStatus, Instance, Revision, ServiceName};

use crate::{consul_checks as checks, http::AppState};

/// The only datacenter.
pub(crate) const DATACENTER: &str = "dc1";
/// Blocking queries wait this long by default, and at most `MAX_WAIT`.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const MAX_WAIT: Duration = Duration::from_secs(600);

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/catalog/services", get(catalog_services))
        .route("/v1/catalog/service/{name}", get(catalog_service))
        .route("/v1/catalog/datacenters", get(datacenters))
        .route("/v1/health/service/{name}", get(health_service))
        .route("/v1/status/leader", get(status_leader))
        .route("/v1/status/peers", get(status_peers))
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/agent/service/register", axum::routing::put(agent_register))
        .route("/v1/agent/service/deregister/{id}", axum::routing::put(agent_deregister))
        .route("/v1/agent/services", get(agent_services))
        .route("/v1/agent/service/{id}", get(agent_service))
        .route("/v1/agent/checks", get(agent_checks))
        .route("/v1/agent/members", get(agent_members))
        .route("/v1/agent/health/service/name/{name}", get(agent_health_by_name))
        .route("/v1/agent/health/service/id/{id}", get(agent_health_by_id))
        .route("/v1/catalog/nodes", get(catalog_nodes))
        .route("/v1/catalog/register", axum::routing::put(catalog_register))
        .route("/v1/catalog/deregister", axum::routing::put(catalog_deregister))
        .route("/v1/catalog/node/{node}", get(catalog_node))
        .route("/v1/health/checks/{service}", get(health_checks))
        .route("/v1/health/node/{node}", get(health_node))
        .route("/v1/health/state/{state}", get(health_state))
        .route("/v1/agent/check/register", put(checks::check_register))
        .route("/v1/agent/check/deregister/{id}", put(checks::check_deregister))
        .route("/v1/agent/check/pass/{id}", checks::ttl_route(HealthStatus::Passing))
        .route("/v1/agent/check/warn/{id}", checks::ttl_route(HealthStatus::Warning))
        .route("/v1/agent/check/fail/{id}", checks::ttl_route(HealthStatus::Critical))
        .route("/v1/agent/check/update/{id}", put(checks::check_update))
        .route("/v1/agent/service/maintenance/{id}", put(checks::service_maintenance))
        .route(
            "/v1/kv/{*key}",
            get(crate::consul_kv::kv_get).put(crate::consul_kv::kv_put).delete(crate::consul_kv::kv_delete),
        )
        .route("/v1/kv/", get(crate::consul_kv::kv_get).delete(crate::consul_kv::kv_delete))
        .route("/v1/txn", put(crate::consul_kv::txn))
        .route("/v1/session/create", put(crate::consul_session::session_create))
        .route("/v1/session/destroy/{id}", put(crate::consul_session::session_destroy))
        .route("/v1/session/renew/{id}", put(crate::consul_session::session_renew))
        .route("/v1/session/info/{id}", get(crate::consul_session::session_info))
        .route("/v1/session/list", get(crate::consul_session::session_list))
        .route("/v1/session/node/{node}", get(crate::consul_session::session_node))
        // Registration bodies are small; Consul's own limit is larger, ours is documented.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
}

/// The largest request body accepted (documented in docs/compatibility.md).
pub(crate) const MAX_BODY: usize = 512 * 1024;

/// Consul's `AgentServiceRegistration`, the fields Waggle maps (others are ignored, as
/// Consul's agent ignores those it does not use). Keys match as Go's decoder matches them:
/// case-insensitively, and Consul also takes snake_case (`tagged_addresses`).
struct Registration {
    id: Option<String>,
    name: String,
    tags: Vec<String>,
    address: String,
    port: u32,
    meta: BTreeMap<String, String>,
    weight: Option<u32>,
    check: Option<Value>,
    checks: Option<Value>,
    /// Drop the instance's checks that the registration does not list (Consul's
    /// `?replace-existing-checks`); otherwise they are kept.
    replace_checks: bool,
}

pub(crate) fn canonical(key: &str) -> String {
    key.chars().filter(|c| *c != '_').flat_map(char::to_lowercase).collect()
}

impl Registration {
    fn parse(body: &[u8]) -> Result<Self, String> {
        let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        Self::from_value(value, checks::SERVICE_FIELDS)
    }

    /// From a registration object (the agent's body, or a catalog registration's `Service`,
    /// whose name is under `Service` rather than `Name`), whose fields must be among `known`.
    fn from_value(value: Value, known: &[&str]) -> Result<Self, String> {
        let Value::Object(raw) = &value else { return Err("the body must be a JSON object".into()) };
        let fields: BTreeMap<String, Value> = raw.iter().map(|(k, v)| (canonical(k), v.clone())).collect();
        checks::strict(&fields, &value, known)?;
        let string = |key: &str| -> Result<Option<String>, String> {
            match fields.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(format!("{key}: expected a string, got {other}")),
            }
        };
        let tags = match fields.get("tags") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|t| t.as_str().map(str::to_owned).ok_or_else(|| format!("Tags: expected strings, got {t}")))
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(format!("Tags: expected a list, got {other}")),
        };
        let meta = match fields.get("meta") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    v.as_str().map(|v| (k.clone(), v.to_owned())).ok_or_else(|| format!("Meta.{k}: expected a string"))
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(format!("Meta: expected an object, got {other}")),
        };
        let port = match fields.get("port") {
            None | Some(Value::Null) => 0,
            Some(v) => v
                .as_u64()
                .and_then(|p| u32::try_from(p).ok())
                .ok_or_else(|| format!("Port: expected a port number, got {v}"))?,
        };
        let weight = match fields.get("weights") {
            None | Some(Value::Null) => None,
            Some(Value::Object(w)) => {
                let w: BTreeMap<String, &Value> = w.iter().map(|(k, v)| (canonical(k), v)).collect();
                match w.get("passing") {
                    None => None,
                    Some(v) => Some(
                        v.as_u64()
                            .and_then(|p| u32::try_from(p).ok())
                            .ok_or_else(|| format!("Weights.Passing: expected a number, got {v}"))?,
                    ),
                }
            }
            Some(other) => return Err(format!("Weights: expected an object, got {other}")),
        };
        Ok(Registration {
            id: string("id")?,
            name: string("name")?.or(string("service")?).ok_or("missing field Name")?,
            tags,
            address: string("address")?.unwrap_or_default(),
            port,
            meta,
            weight,
            check: fields.get("check").cloned(),
            checks: fields.get("checks").cloned(),
            replace_checks: false,
        })
    }
}

pub(crate) fn unavailable(e: crate::error::ProposeError) -> ConsulError {
    ConsulError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// A failed write of a client's request: a refusal is the client's fault (404 for unknown
/// objects, else 400); anything else is the server's (500).
pub(crate) fn write_failed(e: crate::error::ProposeError) -> ConsulError {
    match e {
        crate::error::ProposeError::Refused(r) => {
            let code = match r.kind {
                crate::consensus::RefusalKind::NotFound => StatusCode::NOT_FOUND,
                _ => StatusCode::BAD_REQUEST,
            };
            ConsulError(code, r.message)
        }
        e => unavailable(e),
    }
}

/// `PUT /v1/agent/service/register`: the instance belongs to the agent session (it stays until
/// deregistered); `ID` defaults to `Name`, `Address` to this node's.
async fn agent_register(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    body: axum::body::Bytes,
) -> Result<Response, ConsulError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| bad_request(format!("malformed query string: {e}")))?;
    let replace = match pairs.iter().find(|(k, _)| k == "replace-existing-checks") {
        None => false,
        Some((_, v)) if v.is_empty() => true,
        Some((_, v)) => {
            checks::parse_bool(v).ok_or_else(|| bad_request(format!("invalid replace-existing-checks {v:?}")))?
        }
    };
    let mut reg = Registration::parse(&body).map_err(|e| bad_request(format!("Request decode failed: {e}")))?;
    reg.replace_checks = replace;
    register_agent_instance(&state, reg, false).await?;
    Ok(StatusCode::OK.into_response())
}

/// Fields of a catalog registration, keys matched like the agent's.
fn catalog_fields(body: &[u8], known: &[&str]) -> Result<BTreeMap<String, Value>, ConsulError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| bad_request(format!("Request decode failed: {e}")))?;
    let Value::Object(raw) = &value else {
        return Err(bad_request("Request decode failed: the body must be a JSON object"));
    };
    let fields = raw.iter().map(|(k, v)| (canonical(k), v.clone())).collect();
    checks::strict(&fields, &value, known).map_err(|e| bad_request(format!("Request decode failed: {e}")))?;
    Ok(fields)
}

/// `PUT /v1/catalog/register`: its `Service` is registered like an agent service (the node
/// fields are not modelled: every instance is on the answering member). Its `Check` /
/// `Checks` are the service's, carrying a status that nothing runs. Answers `true`.
async fn catalog_register(State(state): State<AppState>, body: axum::body::Bytes) -> Result<Response, ConsulError> {
    let fields = catalog_fields(&body, checks::CATALOG_FIELDS)?;
    let has_checks =
        fields.get("check").is_some_and(|c| !c.is_null()) || fields.get("checks").is_some_and(|c| !c.is_null());
    match fields.get("service") {
        None | Some(Value::Null) if has_checks => {
            return Err(bad_request("node-level checks are not supported: register them with a Service"));
        }
        None | Some(Value::Null) => {}
        Some(service) => {
            let mut reg = Registration::from_value(service.clone(), checks::CATALOG_SERVICE_FIELDS)
                .map_err(|e| bad_request(format!("Request decode failed: Service: {e}")))?;
            if reg.address.is_empty()
                && let Some(Value::String(address)) = fields.get("address")
            {
                reg.address = address.clone();
            }
            reg.check = fields.get("check").cloned();
            reg.checks = fields.get("checks").cloned();
            register_agent_instance(&state, reg, true).await?;
        }
    }
    Ok(answer(&state, state.hub.revision(), Value::Bool(true)))
}

/// `PUT /v1/catalog/deregister`: with `ServiceID`, that instance (answers `true` whether or not
/// it existed, as Consul does); a whole node is not modelled.
async fn catalog_deregister(State(state): State<AppState>, body: axum::body::Bytes) -> Result<Response, ConsulError> {
    let fields =
        catalog_fields(&body, &["node", "datacenter", "serviceid", "checkid", "namespace", "partition", "token"])?;
    let Some(Value::String(id)) = fields.get("serviceid") else {
        return Err(bad_request("deregistering a whole node is not supported: give ServiceID"));
    };
    if let Some(instance) = agent_instances(&state).into_iter().find(|i| i.spec.id.as_str() == id) {
        let command =
            waggle_core::Command::Deregister { service: instance.spec.service.clone(), id: instance.spec.id.clone() };
        state.consensus.propose(command).await.map_err(unavailable)?;
    }
    Ok(answer(&state, state.hub.revision(), Value::Bool(true)))
}

/// Registers `reg` under the agent session, with its checks (`static_checks`: a catalog
/// registration's, which only carry a status).
async fn register_agent_instance(state: &AppState, reg: Registration, static_checks: bool) -> Result<(), ConsulError> {
    let address = if !reg.address.is_empty() {
        reg.address
    } else if state.http_addr.ip().is_unspecified() {
        return Err(bad_request("Address is required: this server listens on every interface"));
    } else {
        node_address(state)
    };
    let invalid = |e: waggle_core::ValidationError| bad_request(format!("Invalid service: {e}"));
    let mut spec = waggle_core::InstanceSpec::new(&reg.name, &address, reg.port).map_err(invalid)?;
    if let Some(id) = reg.id.filter(|id| !id.is_empty()) {
        spec = spec.with_id(&id).map_err(invalid)?;
    } else {
        spec = spec.with_id(&reg.name).map_err(invalid)?;
    }
    spec.tags = reg.tags;
    spec.meta = reg.meta.into_iter().collect();
    // Consul's default weight is 1 (Waggle's SDK uses 100): a service registered without
    // `Weights` must weigh what it weighs in Consul next to one registered with them.
    spec = spec.with_weight(reg.weight.unwrap_or(1));
    spec.validate().map_err(invalid)?;
    let mut checks = checks::registration_checks(
        reg.check.as_ref(),
        reg.checks.as_ref(),
        spec.id.as_str(),
        spec.service.as_str(),
        static_checks,
    )
    .map_err(|e| bad_request(format!("Invalid check: {e}")))?;
    // As Consul: checks the registration does not list (added with check/register,
    // maintenance) stay unless asked otherwise, and a catalog registration replaces them.
    if !reg.replace_checks && !static_checks {
        let (_, current, _) = state.hub.service(&spec.service);
        if let Some(existing) = current.get(&spec.id).filter(|i| i.session == waggle_core::SessionId::AGENT) {
            for old in &existing.checks {
                if !checks.iter().any(|c| c.id == old.spec.id) {
                    checks.push(old.spec.clone());
                }
            }
        }
    }
    // A service id is unique per agent: the same id under another name replaces the old one.
    for old in agent_instances(state).into_iter().filter(|i| i.spec.id == spec.id && i.spec.service != spec.service) {
        let command = waggle_core::Command::Deregister { service: old.spec.service.clone(), id: old.spec.id.clone() };
        state.consensus.propose(command).await.map_err(unavailable)?;
    }
    checks::propose(state, waggle_core::Command::AgentRegister { spec, checks }).await?;
    Ok(())
}

/// The agent's own instances (registered through this API), in id order.
pub(crate) fn agent_instances(state: &AppState) -> Vec<std::sync::Arc<Instance>> {
    let (_, services) = state.hub.services();
    let mut all: Vec<_> = services
        .iter()
        .flat_map(|(_, instances)| instances.values().filter(|i| i.session == waggle_core::SessionId::AGENT).cloned())
        .collect();
    all.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
    all
}

/// `PUT /v1/agent/service/deregister/:id`.
async fn agent_deregister(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ConsulError> {
    let Some(instance) = agent_instances(&state).into_iter().find(|i| i.spec.id.as_str() == id) else {
        return Err(ConsulError(
            StatusCode::NOT_FOUND,
            format!("Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."),
        ));
    };
    let command =
        waggle_core::Command::Deregister { service: instance.spec.service.clone(), id: instance.spec.id.clone() };
    state.consensus.propose(command).await.map_err(unavailable)?;
    Ok(StatusCode::OK.into_response())
}

fn agent_service_json(i: &Instance) -> Value {
    json!({
        "ID": i.spec.id.to_string(), "Service": i.spec.service.to_string(), "Tags": i.spec.tags,
        "Meta": meta(i), "Port": i.spec.port, "Address": i.spec.address, "Weights": weights(i),
        "EnableTagOverride": false, "Datacenter": DATACENTER, "ContentHash": "",
        "CreateIndex": i.create_revision.get(), "ModifyIndex": i.modify_revision.get(),
    })
}

/// `GET /v1/agent/services`: the agent's instances by id.
async fn agent_services(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Result<Response, ConsulError> {
    unfiltered(params(raw)?)?;
    let mut out = serde_json::Map::new();
    for i in agent_instances(&state) {
        out.insert(i.spec.id.to_string(), agent_service_json(&i));
    }
    Ok(answer(&state, state.hub.revision(), Value::Object(out)))
}

/// `GET /v1/agent/service/:id`.
async fn agent_service(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ConsulError> {
    match agent_instances(&state).into_iter().find(|i| i.spec.id.as_str() == id) {
        Some(i) => Ok(answer(&state, state.hub.revision(), agent_service_json(&i))),
        None => Err(ConsulError(StatusCode::NOT_FOUND, format!("unknown service ID: {id}"))),
    }
}

/// A Consul-shaped error: status code and a plain-text message.
pub(crate) struct ConsulError(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for ConsulError {
    fn into_response(self) -> Response {
        (self.0, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], self.1).into_response()
    }
}

pub(crate) fn bad_request(message: impl Into<String>) -> ConsulError {
    ConsulError(StatusCode::BAD_REQUEST, message.into())
}

/// The query parameters these endpoints understand.
#[derive(Default)]
pub(crate) struct Params {
    index: Option<u64>,
    wait: Option<Duration>,
    tags: Vec<String>,
    passing: bool,
    consistent: bool,
    filter: Option<String>,
}

pub(crate) fn params(raw: Option<String>) -> Result<Params, ConsulError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| bad_request(format!("malformed query string: {e}")))?;
    let mut p = Params::default();
    for (key, value) in pairs {
        match key.as_str() {
            "dc" if !value.is_empty() && value != DATACENTER => {
                return Err(ConsulError(StatusCode::INTERNAL_SERVER_ERROR, "No path to datacenter".into()));
            }
            "index" => {
                p.index = Some(value.parse().map_err(|_| bad_request(format!("invalid index {value:?}")))?);
            }
            // An empty wait is no wait parameter, as in Consul.
            "wait" if value.is_empty() => {}
            "wait" => {
                let wait = go_duration(&value).ok_or_else(|| bad_request(format!("invalid wait {value:?}")))?;
                // 0 means the default, as in Consul.
                p.wait = (!wait.is_zero()).then_some(wait.min(MAX_WAIT));
            }
            "tag" => p.tags.push(value),
            "passing" => p.passing = value.is_empty() || value == "true" || value == "1",
            "consistent" => p.consistent = true,
            "filter" => p.filter = Some(value),
            _ => {}
        }
    }
    Ok(p)
}

/// Parses a Go duration (`300ms`, `1.5s`, `2h45m`), as Consul's `?wait=` takes them.
pub(crate) fn go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    if text.is_empty() {
        return None;
    }
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    (total.is_finite() && total < 1e9).then(|| Duration::from_secs_f64(total))
}

/// Refuses `?filter=` where the endpoint does not apply it (rather than ignore it).
fn unfiltered(p: Params) -> Result<Params, ConsulError> {
    match p.filter {
        Some(_) => Err(bad_request("filter is not supported on this endpoint")),
        None => Ok(p),
    }
}

/// The query of an endpoint that takes no `tag` or `filter`: parsed, then blocked on.
async fn plain_query(state: &AppState, raw: Option<String>) -> Result<Revision, ConsulError> {
    blocking(state, &unfiltered(params(raw)?)?).await
}

/// Runs a blocking query: if `?index` is at or past the current revision, waits until the
/// registry changes or the wait (plus up to 1/16 jitter) ends. Then reads.
pub(crate) async fn blocking(state: &AppState, p: &Params) -> Result<Revision, ConsulError> {
    if p.consistent {
        state
            .consensus
            .read_barrier()
            .await
            .map_err(|e| ConsulError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    }
    let current = state.hub.revision();
    // An index past ours (a restored registry, another cluster's index) is answered at once, so
    // the client resets to ours rather than block on a number it will not see soon.
    if let Some(index) = p.index
        && index == current.get()
    {
        let wait = p.wait.unwrap_or(DEFAULT_WAIT);
        let jitter = wait / 16;
        let jitter = Duration::from_millis(rand_below(jitter.as_millis() as u64 + 1));
        let changed = state.hub.applied(Revision::new(index.saturating_add(1)));
        let _ = tokio::time::timeout(wait + jitter, changed).await;
    }
    Ok(state.hub.revision())
}

/// A random number below `n` (jitter only: std's per-instance random hasher keys suffice).
fn rand_below(n: u64) -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(n) % n.max(1)
}

/// JSON with Consul's headers.
pub(crate) fn answer(state: &AppState, index: Revision, body: Value) -> Response {
    answer_text(state, index, body.to_string())
}

/// Rendered JSON with Consul's headers.
fn answer_text(state: &AppState, index: Revision, body: String) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("X-Consul-Index", HeaderValue::from(index.get().max(1)));
    let known = state.consensus.leader_known();
    headers.insert("X-Consul-KnownLeader", HeaderValue::from_static(if known { "true" } else { "false" }));
    headers.insert("X-Consul-LastContact", HeaderValue::from_static("0"));
    (headers, body).into_response()
}

pub(crate) fn node_name(state: &AppState) -> String {
    format!("waggle-{}", state.consensus.node_id())
}

fn node_address(state: &AppState) -> String {
    state.http_addr.ip().to_string()
}

fn matches_tags(instance: &Instance, tags: &[String]) -> bool {
    tags.iter().all(|t| instance.spec.tags.contains(t))
}

pub(crate) fn status_text(status: HealthStatus) -> &'static str {
    match status {
        HealthStatus::Passing => "passing",
        HealthStatus::Warning => "warning",
        _ => "critical",
    }
}

fn service_name(name: &str) -> Result<ServiceName, ConsulError> {
    ServiceName::new(name).map_err(|e| bad_request(format!("invalid service name: {e}")))
}

async fn catalog_services(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Result<Response, ConsulError> {
    let index = plain_query(&state, raw).await?;
    let (_, services) = state.hub.services();
    let mut out = serde_json::Map::new();
    for (name, instances) in &services {
        let tags: BTreeSet<&String> = instances.values().flat_map(|i| i.spec.tags.iter()).collect();
        out.insert(name.to_string(), json!(tags));
    }
    Ok(answer(&state, index, Value::Object(out)))
}

/// One service's instances in a stable order (by id), which catalog and health answers share:
/// Traefik pairs them by position.
fn instances(state: &AppState, name: &ServiceName, tags: &[String]) -> Vec<std::sync::Arc<Instance>> {
    let (_, instances, _) = state.hub.service(name);
    instances.values().filter(|i| matches_tags(i, tags)).cloned().collect()
}

fn meta(instance: &Instance) -> BTreeMap<&String, &String> {
    instance.spec.meta.iter().collect()
}

fn weights(instance: &Instance) -> Value {
    json!({ "Passing": instance.spec.weight, "Warning": 1 })
}

async fn catalog_service(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    service_query(&state, &name, raw, catalog_entry, CATALOG_MAPS, false).await
}

/// A read of one service's instances as `entry` renders them: `?tag`, `?passing` (where
/// `honour_passing`), `?filter` on the rendered fields, blocking.
async fn service_query(
    state: &AppState,
    name: &str,
    raw: Option<String>,
    entry: fn(&AppState, &ServiceName, &Instance) -> Value,
    maps: &[&str],
    honour_passing: bool,
) -> Result<Response, ConsulError> {
    let p = params(raw)?;
    let name = service_name(name)?;
    let filter = parse_filter(&p, &entry(state, &name, &template()), maps)?;
    let index = blocking(state, &p).await?;
    let passing_only = honour_passing && p.passing;
    let (_, instances, reads) = state.hub.service(&name);
    let render = || {
        let list: Vec<Value> = instances
            .values()
            .filter(|i| matches_tags(i, &p.tags))
            .filter(|i| !passing_only || i.spec.status == HealthStatus::Passing)
            .map(|i| entry(state, &name, i))
            .filter(|e| filter.as_ref().is_none_or(|f| crate::filter::eval(f, e)))
            .collect();
        Value::Array(list).to_string()
    };
    // The plain reads (no tag, no filter) are rendered once per version of the service.
    let body = if p.tags.is_empty() && filter.is_none() {
        let kind = if !honour_passing {
            0
        } else if passing_only {
            1
        } else {
            2
        };
        reads.consul[kind].get_or_init(render).clone()
    } else {
        render()
    };
    Ok(answer_text(state, index, body))
}

/// Object fields of catalog entries that are maps (any key is a valid selector).
const CATALOG_MAPS: &[&str] = &["ServiceMeta", "NodeMeta", "TaggedAddresses", "ServiceTaggedAddresses"];
/// The same for health entries.
const HEALTH_MAPS: &[&str] = &["Meta", "TaggedAddresses"];

/// An instance with every field, to check filter selectors against when there is no entry.
fn template() -> Instance {
    let spec = waggle_core::InstanceSpec::new("template", "127.0.0.1", 1).unwrap_or_else(|_| unreachable!());
    Instance {
        spec,
        session: waggle_core::SessionId::new(1),
        create_revision: Revision::new(1),
        modify_revision: Revision::new(1),
        checks: Vec::new(),
    }
}

fn parse_filter(p: &Params, template: &Value, maps: &[&str]) -> Result<Option<crate::filter::Expr>, ConsulError> {
    p.filter
        .as_deref()
        .map(|text| {
            crate::filter::parse(text, template, maps)
                .map_err(|e| bad_request(format!("Failed to create boolean expression evaluator: {e}")))
        })
        .transpose()
}

fn catalog_entry(state: &AppState, name: &ServiceName, i: &Instance) -> Value {
    let node = node_name(state);
    let address = node_address(state);
    json!({
        "ID": "",
        "Node": node,
        "Address": address,
        "Datacenter": DATACENTER,
        "TaggedAddresses": { "lan": address },
        "NodeMeta": {},
        "ServiceKind": "",
        "ServiceID": i.spec.id.to_string(),
        "ServiceName": name.to_string(),
        "ServiceTags": i.spec.tags,
        "ServiceAddress": i.spec.address,
        "ServiceTaggedAddresses": {},
        "ServiceWeights": weights(i),
        "ServiceMeta": meta(i),
        "ServicePort": i.spec.port,
        "ServiceEnableTagOverride": false,
        "CreateIndex": i.create_revision.get(),
        "ModifyIndex": i.modify_revision.get(),
    })
}

async fn health_service(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    service_query(&state, &name, raw, health_entry, HEALTH_MAPS, true).await
}

/// The node every instance is on: the member answering.
fn node_json(state: &AppState) -> Value {
    let address = node_address(state);
    json!({
        "ID": "", "Node": node_name(state), "Address": address, "Datacenter": DATACENTER,
        "TaggedAddresses": { "lan": address }, "Meta": {}, "CreateIndex": 1, "ModifyIndex": 1,
    })
}

/// The node-level check: the answering member is alive.
fn serf_check(state: &AppState) -> Value {
    json!({
        "Node": node_name(state), "CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing",
        "Notes": "", "Output": "Agent alive and reachable", "ServiceID": "", "ServiceName": "",
        "ServiceTags": [], "Type": "", "CreateIndex": 1, "ModifyIndex": 1,
    })
}

fn health_entry(state: &AppState, name: &ServiceName, i: &Instance) -> Value {
    json!({
        "Node": node_json(state),
        "Service": {
            "ID": i.spec.id.to_string(), "Service": name.to_string(), "Tags": i.spec.tags, "Address": i.spec.address,
            "Meta": meta(i), "Port": i.spec.port, "Weights": weights(i), "EnableTagOverride": false,
            "CreateIndex": i.create_revision.get(), "ModifyIndex": i.modify_revision.get(),
        },
        "Checks": std::iter::once(serf_check(state)).chain(checks::instance_checks(state, i)).collect::<Vec<_>>(),
    })
}

/// Every instance, in (service, id) order.
fn all_instances(state: &AppState) -> Vec<std::sync::Arc<Instance>> {
    let (_, services) = state.hub.services();
    services.iter().flat_map(|(_, instances)| instances.values().cloned()).collect()
}

/// `GET /v1/catalog/nodes`: the answering member.
async fn catalog_nodes(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Result<Response, ConsulError> {
    let index = plain_query(&state, raw).await?;
    Ok(answer(&state, index, json!([node_json(&state)])))
}

/// `GET /v1/catalog/node/:node`: the node and its services, or `null` for another node.
async fn catalog_node(
    State(state): State<AppState>,
    Path(node): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    let index = plain_query(&state, raw).await?;
    if node != node_name(&state) {
        return Ok(answer(&state, index, Value::Null));
    }
    let services: serde_json::Map<String, Value> =
        all_instances(&state).iter().map(|i| (i.spec.id.to_string(), agent_service_json(i))).collect();
    Ok(answer(&state, index, json!({ "Node": node_json(&state), "Services": services })))
}

/// `GET /v1/health/checks/:service`: its instances' checks.
async fn health_checks(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    let p = unfiltered(params(raw)?)?;
    let name = service_name(&name)?;
    let index = blocking(&state, &p).await?;
    let checks: Vec<Value> =
        instances(&state, &name, &p.tags).iter().flat_map(|i| checks::instance_checks(&state, i)).collect();
    Ok(answer(&state, index, Value::Array(checks)))
}

/// Every check: the node's, then each instance's.
fn all_checks(state: &AppState) -> Vec<Value> {
    std::iter::once(serf_check(state))
        .chain(all_instances(state).iter().flat_map(|i| checks::instance_checks(state, i)))
        .collect()
}

/// `GET /v1/health/node/:node`.
async fn health_node(
    State(state): State<AppState>,
    Path(node): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    let index = plain_query(&state, raw).await?;
    let checks = if node == node_name(&state) { all_checks(&state) } else { Vec::new() };
    Ok(answer(&state, index, Value::Array(checks)))
}

/// `GET /v1/health/state/:state` (`any`, `passing`, `warning`, `critical`).
async fn health_state(
    State(state): State<AppState>,
    Path(wanted): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    if !["any", "passing", "warning", "critical"].contains(&wanted.as_str()) {
        return Err(bad_request(format!("Invalid check state {wanted:?}: any, passing, warning or critical")));
    }
    let index = plain_query(&state, raw).await?;
    let checks: Vec<Value> =
        all_checks(&state).into_iter().filter(|c| wanted == "any" || c["Status"] == wanted.as_str()).collect();
    Ok(answer(&state, index, Value::Array(checks)))
}

/// `GET /v1/agent/checks`: the checks of the agent's instances, by check id.
async fn agent_checks(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Result<Response, ConsulError> {
    unfiltered(params(raw)?)?;
    let checks: serde_json::Map<String, Value> = agent_instances(&state)
        .iter()
        .flat_map(|i| checks::instance_checks(&state, i))
        .map(|c| (c["CheckID"].as_str().unwrap_or_default().to_owned(), c))
        .collect();
    Ok(answer(&state, state.hub.revision(), Value::Object(checks)))
}

/// `GET /v1/agent/members`: the cluster's members, as Consul lists its servers.
async fn agent_members(State(state): State<AppState>) -> Response {
    let (_, _, members) = state.consensus.members();
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
    answer(&state, state.hub.revision(), Value::Array(list))
}

/// The aggregated status of instances (the worst), and its HTTP code as Consul's agent health
/// endpoints answer: 200 passing, 429 warning, 503 critical.
fn aggregate(statuses: impl Iterator<Item = HealthStatus>) -> (&'static str, StatusCode) {
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

fn agent_health_json(state: &AppState, i: &Instance) -> Value {
    let (status, _) = aggregate(std::iter::once(i.spec.status));
    json!({ "AggregatedStatus": status, "Service": agent_service_json(i), "Checks": checks::instance_checks(state, i) })
}

/// `GET /v1/agent/health/service/name/:name`.
async fn agent_health_by_name(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ConsulError> {
    let name = service_name(&name)?;
    let mine: Vec<_> = agent_instances(&state).into_iter().filter(|i| i.spec.service == name).collect();
    if mine.is_empty() {
        return Err(ConsulError(StatusCode::NOT_FOUND, format!("ServiceName {name} Not Found")));
    }
    let (_, code) = aggregate(mine.iter().map(|i| i.spec.status));
    let body: Vec<Value> = mine.iter().map(|i| agent_health_json(&state, i)).collect();
    Ok((code, [(header::CONTENT_TYPE, "application/json")], Value::Array(body).to_string()).into_response())
}

/// `GET /v1/agent/health/service/id/:id`.
async fn agent_health_by_id(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ConsulError> {
    let Some(i) = agent_instances(&state).into_iter().find(|i| i.spec.id.as_str() == id) else {
        return Err(ConsulError(StatusCode::NOT_FOUND, format!("ServiceId {id} Not Found")));
    };
    let (_, code) = aggregate(std::iter::once(i.spec.status));
    Ok((code, [(header::CONTENT_TYPE, "application/json")], agent_health_json(&state, &i).to_string()).into_response())
}

async fn datacenters(State(state): State<AppState>) -> Response {
    answer(&state, state.hub.revision(), json!([DATACENTER]))
}

/// The leader's peer address (`""` without a leader), as Consul answers its server address.
async fn status_leader(State(state): State<AppState>) -> Response {
    let (leader, _, members) = state.consensus.members();
    let addr = leader.and_then(|l| members.iter().find(|m| m.id == l)).map(|m| m.peer_address.clone());
    answer(&state, state.hub.revision(), json!(addr.unwrap_or_default()))
}

/// The voters' peer addresses.
async fn status_peers(State(state): State<AppState>) -> Response {
    let (_, _, members) = state.consensus.members();
    let peers: Vec<String> = members.into_iter().filter(|m| m.role != "learner").map(|m| m.peer_address).collect();
    answer(&state, state.hub.revision(), json!(peers))
}

async fn agent_self(State(state): State<AppState>) -> Response {
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
    answer(&state, state.hub.revision(), body)
}

/// The path and status code of an unknown endpoint, Consul-style.
pub(crate) async fn not_found() -> impl IntoResponse {
    ConsulError(StatusCode::NOT_FOUND, "unsupported endpoint (see docs/compatibility.md)\n".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_parse_as_go_durations() {
        assert_eq!(go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(go_duration("2h45m"), Some(Duration::from_secs(9900)));
        assert_eq!(go_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(go_duration("0"), Some(Duration::ZERO));
        for bad in ["", "soon", "5", "1.2.3s", "5x", "1e3s"] {
            assert_eq!(go_duration(bad), None, "{bad:?}");
        }
    }
}
