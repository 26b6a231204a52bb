//! An agent service registration (`/v1/agent/service/register`, and the service part of
//! `/v1/catalog/register`): Consul's `AgentServiceRegistration` parsed, and registered as an
//! agent instance with its checks.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::node::Caller;

use super::{
    fields::{SERVICE_FIELDS, registration_checks, strict},
    render::agent_instances,
    request::{ConsulError, ConsulState, bad_request, canonical, node_address},
};

/// Consul's `AgentServiceRegistration`, the fields Waggle maps (others are ignored, as
/// Consul's agent ignores those it does not use). Keys match as Go's decoder matches them:
/// case-insensitively, and Consul also takes snake_case (`tagged_addresses`).
pub(super) struct Registration {
    pub(super) id: Option<String>,
    pub(super) name: String,
    pub(super) tags: Vec<String>,
    pub(super) address: String,
    pub(super) port: u32,
    pub(super) meta: BTreeMap<String, String>,
    pub(super) weight: Option<u32>,
    pub(super) check: Option<Value>,
    pub(super) checks: Option<Value>,
    /// Drop the instance's checks that the registration does not list (Consul's
    /// `?replace-existing-checks`); otherwise they are kept.
    pub(super) replace_checks: bool,
}

impl Registration {
    pub(super) fn parse(body: &[u8]) -> Result<Self, String> {
        let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        Self::from_value(value, SERVICE_FIELDS)
    }

    /// From a registration object (the agent's body, or a catalog registration's `Service`,
    /// whose name is under `Service` rather than `Name`), whose fields must be among `known`.
    pub(super) fn from_value(value: Value, known: &[&str]) -> Result<Self, String> {
        let Value::Object(raw) = &value else { return Err("the body must be a JSON object".into()) };
        let fields: BTreeMap<String, Value> = raw.iter().map(|(k, v)| (canonical(k), v.clone())).collect();
        strict(&fields, &value, known)?;
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

/// Registers `reg` under the agent session, with its checks (`static_checks`: a catalog
/// registration's, which only carry a status).
pub(super) async fn register_agent_instance(
    state: &ConsulState,
    caller: &Caller,
    reg: Registration,
    static_checks: bool,
) -> Result<(), ConsulError> {
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
    let mut checks = registration_checks(
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
        let (_, current, _) = state.node.read_model().service(&spec.service);
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
        state.node.deregister(caller, old.spec.service.clone(), old.spec.id.clone()).await?;
    }
    state.node.register_agent(caller, spec, checks).await?;
    Ok(())
}
