//! Consul's `/v1/catalog`: services, a service's instances, nodes, and registration and
//! deregistration through the catalog (instances of the agent).

use std::collections::{BTreeMap, BTreeSet};

use axum::{
    extract::{Path, RawQuery, State},
    response::Response,
};
use serde_json::{Value, json};

use waggle_core::acl::{Access, Resource};

use super::request::{Auth, filtered_by_acls};
use super::{
    fields::{CATALOG_FIELDS, CATALOG_SERVICE_FIELDS, strict},
    registration::{Registration, register_agent_instance},
    render::{
        CATALOG_MAPS, agent_instances, agent_service_json, all_instances, catalog_entry, node_json, service_query,
    },
    request::{ConsulError, ConsulState, answer, bad_request, canonical, node_name, plain_query},
};

/// Fields of a catalog registration, keys matched like the agent's.
pub(super) fn catalog_fields(body: &[u8], known: &[&str]) -> Result<BTreeMap<String, Value>, ConsulError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| bad_request(format!("Request decode failed: {e}")))?;
    let Value::Object(raw) = &value else {
        return Err(bad_request("Request decode failed: the body must be a JSON object"));
    };
    let fields = raw.iter().map(|(k, v)| (canonical(k), v.clone())).collect();
    strict(&fields, &value, known).map_err(|e| bad_request(format!("Request decode failed: {e}")))?;
    Ok(fields)
}

/// `PUT /v1/catalog/register`: its `Service` is registered like an agent service (the node
/// fields are not modelled: every instance is on the answering member). Its `Check` /
/// `Checks` are the service's, carrying a status that nothing runs. Answers `true`.
pub(super) async fn catalog_register(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    body: axum::body::Bytes,
) -> Result<Response, ConsulError> {
    let fields = catalog_fields(&body, CATALOG_FIELDS)?;
    let has_checks =
        fields.get("check").is_some_and(|c| !c.is_null()) || fields.get("checks").is_some_and(|c| !c.is_null());
    match fields.get("service") {
        None | Some(Value::Null) if has_checks => {
            return Err(bad_request("node-level checks are not supported: register them with a Service"));
        }
        None | Some(Value::Null) => {}
        Some(service) => {
            let mut reg = Registration::from_value(service.clone(), CATALOG_SERVICE_FIELDS)
                .map_err(|e| bad_request(format!("Request decode failed: Service: {e}")))?;
            if reg.address.is_empty()
                && let Some(Value::String(address)) = fields.get("address")
            {
                reg.address = address.clone();
            }
            reg.check = fields.get("check").cloned();
            reg.checks = fields.get("checks").cloned();
            register_agent_instance(&state, &caller, reg, true).await?;
        }
    }
    Ok(answer(&state, state.node.read_model().revision(), Value::Bool(true)))
}

/// `PUT /v1/catalog/deregister`: with `ServiceID`, that instance (answers `true` whether or not
/// it existed, as Consul does); a whole node is not modelled.
pub(super) async fn catalog_deregister(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    body: axum::body::Bytes,
) -> Result<Response, ConsulError> {
    let fields =
        catalog_fields(&body, &["node", "datacenter", "serviceid", "checkid", "namespace", "partition", "token"])?;
    let Some(Value::String(id)) = fields.get("serviceid") else {
        return Err(bad_request("deregistering a whole node is not supported: give ServiceID"));
    };
    if let Some(instance) = agent_instances(&state).into_iter().find(|i| i.spec.id.as_str() == id) {
        state.node.deregister(&caller, instance.spec.service.clone(), instance.spec.id.clone()).await?;
    }
    Ok(answer(&state, state.node.read_model().revision(), Value::Bool(true)))
}

pub(super) async fn catalog_services(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    let index = plain_query(&state, &caller, raw).await?;
    let (_, services) = state.node.read_model().services();
    let mut out = serde_json::Map::new();
    let mut filtered = false;
    for (name, instances) in &services {
        if !caller.may(Resource::Service, name.as_str(), Access::Read) {
            filtered = true;
            continue;
        }
        let tags: BTreeSet<&String> = instances.values().flat_map(|i| i.spec.tags.iter()).collect();
        out.insert(name.to_string(), json!(tags));
    }
    Ok(filtered_by_acls(answer(&state, index, Value::Object(out)), filtered))
}

pub(super) async fn catalog_service(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    service_query(&state, &caller, &name, raw, catalog_entry, CATALOG_MAPS, false).await
}

/// `GET /v1/catalog/nodes`: the answering member.
pub(super) async fn catalog_nodes(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    let index = plain_query(&state, &caller, raw).await?;
    Ok(answer(&state, index, json!([node_json(&state)])))
}

/// `GET /v1/catalog/node/:node`: the node and its services, or `null` for another node.
pub(super) async fn catalog_node(
    State(state): State<ConsulState>,
    Auth(caller): Auth,
    Path(node): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsulError> {
    let index = plain_query(&state, &caller, raw).await?;
    if node != node_name(&state) {
        return Ok(answer(&state, index, Value::Null));
    }
    let services: serde_json::Map<String, Value> =
        all_instances(&state, &caller).iter().map(|i| (i.spec.id.to_string(), agent_service_json(i))).collect();
    Ok(answer(&state, index, json!({ "Node": node_json(&state), "Services": services })))
}
