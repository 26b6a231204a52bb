//! How the registry looks through Consul's eyes: instances as catalog and health entries, the
//! one node (the member answering) and its `serfHealth` check, checks as `HealthCheck`s, and a
//! service read with `?tag`, `?passing` and `?filter`, rendered once per version of the service
//! when it can be.

use std::{
    collections::BTreeMap,
    time::{Duration, UNIX_EPOCH},
};

use axum::response::Response;
use base64::Engine;
use serde_json::{Value, json};
use waggle_core::{
    CheckKind, HealthStatus, Instance, KvEntry, Revision, ServiceName,
    acl::{AclState, GLOBAL_MANAGEMENT_ID, GLOBAL_MANAGEMENT_NAME, Grants, Token},
};

use crate::node::Caller;

use super::{
    fields::duration_text,
    request::{
        ConsulError, ConsulState, DATACENTER, Params, answer_text, bad_request, blocking, node_address, node_name,
        params, service_name,
    },
};

pub(crate) fn status_text(status: HealthStatus) -> &'static str {
    match status {
        HealthStatus::Passing => "passing",
        HealthStatus::Warning => "warning",
        _ => "critical",
    }
}

pub(super) fn matches_tags(instance: &Instance, tags: &[String]) -> bool {
    tags.iter().all(|t| instance.spec.tags.contains(t))
}

/// One service's instances in a stable order (by id), which catalog and health answers share:
/// Traefik pairs them by position.
pub(super) fn instances(
    state: &ConsulState,
    caller: &Caller,
    name: &ServiceName,
    tags: &[String],
) -> Vec<std::sync::Arc<Instance>> {
    if !readable(caller, name) {
        return Vec::new();
    }
    let (_, instances, _) = state.node.read_model().service(name);
    instances.values().filter(|i| matches_tags(i, tags)).cloned().collect()
}

/// Whether the caller may read the service (reads are filtered, not refused).
pub(super) fn readable(caller: &Caller, service: &ServiceName) -> bool {
    caller.may(waggle_core::acl::Resource::Service, service.as_str(), waggle_core::acl::Access::Read)
}

pub(super) fn meta(instance: &Instance) -> BTreeMap<&String, &String> {
    instance.spec.meta.iter().collect()
}

pub(super) fn weights(instance: &Instance) -> Value {
    json!({ "Passing": instance.spec.weight, "Warning": 1 })
}

/// A read of one service's instances as `entry` renders them: `?tag`, `?passing` (where
/// `honour_passing`), `?filter` on the rendered fields, blocking.
pub(super) async fn service_query(
    state: &ConsulState,
    caller: &crate::node::Caller,
    name: &str,
    raw: Option<String>,
    entry: fn(&ConsulState, &ServiceName, &Instance) -> Value,
    maps: &[&str],
    honour_passing: bool,
) -> Result<Response, ConsulError> {
    let p = params(raw)?;
    let name = service_name(name)?;
    let filter = parse_filter(&p, &entry(state, &name, &template()), maps)?;
    let index = blocking(state, caller, &p).await?;
    let passing_only = honour_passing && p.passing;
    let (_, instances, reads) = state.node.read_model().service(&name);
    // A service the token may not read answers as an empty one, marked filtered (Consul).
    if !caller.may(waggle_core::acl::Resource::Service, name.as_str(), waggle_core::acl::Access::Read) {
        let answer = answer_text(state, index, "[]".into());
        return Ok(super::request::filtered_by_acls(answer, !instances.is_empty()));
    }
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
pub(super) const CATALOG_MAPS: &[&str] = &["ServiceMeta", "NodeMeta", "TaggedAddresses", "ServiceTaggedAddresses"];

/// The same for health entries.
pub(super) const HEALTH_MAPS: &[&str] = &["Meta", "TaggedAddresses"];

/// An instance with every field, to check filter selectors against when there is no entry.
pub(super) fn template() -> Instance {
    let spec = waggle_core::InstanceSpec::new("template", "127.0.0.1", 1).unwrap_or_else(|_| unreachable!());
    Instance {
        spec,
        session: waggle_core::SessionId::new(1),
        create_revision: Revision::new(1),
        modify_revision: Revision::new(1),
        checks: Vec::new(),
    }
}

pub(super) fn parse_filter(
    p: &Params,
    template: &Value,
    maps: &[&str],
) -> Result<Option<crate::filter::Expr>, ConsulError> {
    p.filter
        .as_deref()
        .map(|text| {
            crate::filter::parse(text, template, maps)
                .map_err(|e| bad_request(format!("Failed to create boolean expression evaluator: {e}")))
        })
        .transpose()
}

pub(super) fn catalog_entry(state: &ConsulState, name: &ServiceName, i: &Instance) -> Value {
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

/// The node every instance is on: the member answering.
pub(super) fn node_json(state: &ConsulState) -> Value {
    let address = node_address(state);
    json!({
        "ID": "", "Node": node_name(state), "Address": address, "Datacenter": DATACENTER,
        "TaggedAddresses": { "lan": address }, "Meta": {}, "CreateIndex": 1, "ModifyIndex": 1,
    })
}

/// The node-level check: the answering member is alive.
pub(super) fn serf_check(state: &ConsulState) -> Value {
    json!({
        "Node": node_name(state), "CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing",
        "Notes": "", "Output": "Agent alive and reachable", "ServiceID": "", "ServiceName": "",
        "ServiceTags": [], "Type": "", "CreateIndex": 1, "ModifyIndex": 1,
    })
}

pub(super) fn health_entry(state: &ConsulState, name: &ServiceName, i: &Instance) -> Value {
    json!({
        "Node": node_json(state),
        "Service": {
            "ID": i.spec.id.to_string(), "Service": name.to_string(), "Tags": i.spec.tags, "Address": i.spec.address,
            "Meta": meta(i), "Port": i.spec.port, "Weights": weights(i), "EnableTagOverride": false,
            "CreateIndex": i.create_revision.get(), "ModifyIndex": i.modify_revision.get(),
        },
        "Checks": std::iter::once(serf_check(state)).chain(instance_checks(state, i)).collect::<Vec<_>>(),
    })
}

/// Every instance, in (service, id) order.
pub(super) fn all_instances(state: &ConsulState, caller: &Caller) -> Vec<std::sync::Arc<Instance>> {
    let (_, services) = state.node.read_model().services();
    services
        .iter()
        .filter(|(name, _)| readable(caller, name))
        .flat_map(|(_, instances)| instances.values().cloned())
        .collect()
}

/// The agent's own instances (registered through this API), in id order.
pub(crate) fn agent_instances(state: &ConsulState) -> Vec<std::sync::Arc<Instance>> {
    let (_, services) = state.node.read_model().services();
    let mut all: Vec<_> = services
        .iter()
        .flat_map(|(_, instances)| instances.values().filter(|i| i.session == waggle_core::SessionId::AGENT).cloned())
        .collect();
    all.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
    all
}

pub(super) fn agent_service_json(i: &Instance) -> Value {
    json!({
        "ID": i.spec.id.to_string(), "Service": i.spec.service.to_string(), "Tags": i.spec.tags,
        "Meta": meta(i), "Port": i.spec.port, "Address": i.spec.address, "Weights": weights(i),
        "EnableTagOverride": false, "Datacenter": DATACENTER, "ContentHash": "",
        "CreateIndex": i.create_revision.get(), "ModifyIndex": i.modify_revision.get(),
    })
}

/// One check as Consul's `HealthCheck`.
pub(crate) fn check_json(state: &ConsulState, i: &Instance, check: &waggle_core::Check) -> Value {
    let spec = &check.spec;
    let mut definition = serde_json::Map::new();
    match &spec.kind {
        CheckKind::Http { url, method, .. } => {
            definition.insert("HTTP".into(), json!(url));
            definition.insert("Method".into(), json!(method));
        }
        CheckKind::Tcp { address } => {
            definition.insert("TCP".into(), json!(address));
        }
        CheckKind::Grpc { address, service, .. } => {
            let target = if service.is_empty() { address.clone() } else { format!("{address}/{service}") };
            definition.insert("GRPC".into(), json!(target));
        }
        CheckKind::Ttl { ttl_ms } => {
            definition.insert("TTL".into(), json!(duration_text(*ttl_ms)));
        }
        _ => {}
    }
    if spec.kind.is_active() {
        definition.insert("Interval".into(), json!(duration_text(spec.interval_ms)));
        definition.insert("Timeout".into(), json!(duration_text(spec.timeout_ms)));
    }
    if spec.deregister_after_ms > 0 {
        definition.insert("DeregisterCriticalServiceAfter".into(), json!(duration_text(spec.deregister_after_ms)));
    }
    json!({
        "Node": node_name(state), "CheckID": spec.id, "Name": spec.name, "Status": status_text(check.status),
        "Notes": spec.notes, "Output": check.output, "ServiceID": i.spec.id.to_string(),
        "ServiceName": i.spec.service.to_string(), "ServiceTags": i.spec.tags, "Type": spec.kind.type_name(),
        "Interval": if spec.kind.is_active() { duration_text(spec.interval_ms) } else { String::new() },
        "Timeout": if spec.kind.is_active() { duration_text(spec.timeout_ms) } else { String::new() },
        "ExposedPort": 0, "Definition": Value::Object(definition),
        "CreateIndex": i.create_revision.get(), "ModifyIndex": i.modify_revision.get(),
    })
}

/// An instance's checks as Consul renders them. An instance without checks (an SDK
/// registration, whose session is its liveness) shows one check carrying its status.
pub(crate) fn instance_checks(state: &ConsulState, i: &Instance) -> Vec<Value> {
    if !i.checks.is_empty() {
        return i.checks.iter().map(|c| check_json(state, i, c)).collect();
    }
    let (id, name) = (i.spec.id.to_string(), i.spec.service.to_string());
    vec![json!({
        "Node": node_name(state), "CheckID": format!("service:{id}"), "Name": format!("Service '{name}' check"),
        "Status": status_text(i.spec.status), "Notes": "", "Output": "", "ServiceID": id,
        "ServiceName": name, "ServiceTags": i.spec.tags, "Type": "waggle", "Interval": "", "Timeout": "",
        "ExposedPort": 0, "Definition": {},
        "CreateIndex": i.create_revision.get(), "ModifyIndex": i.modify_revision.get(),
    })]
}

pub(super) fn entry_json(key: &str, e: &KvEntry) -> Value {
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
        out["Session"] = json!(super::request::session_uuid(session));
    }
    out
}
/// RFC 3339 time of `ms` since the Unix epoch.
pub(super) fn time_text(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn link_json(acl: &AclState, id: &str, policy: bool) -> Value {
    let name = if policy {
        if id == GLOBAL_MANAGEMENT_ID {
            Some(GLOBAL_MANAGEMENT_NAME.to_owned())
        } else {
            acl.policies().get(id).map(|p| p.name.clone())
        }
    } else {
        acl.roles().get(id).map(|r| r.name.clone())
    };
    json!({ "ID": id, "Name": name.unwrap_or_default() })
}

pub(super) fn grants_json(acl: &AclState, grants: &Grants, out: &mut serde_json::Map<String, Value>) {
    if !grants.policies.is_empty() {
        out.insert("Policies".into(), grants.policies.iter().map(|id| link_json(acl, id, true)).collect());
    }
    if !grants.service_identities.is_empty() {
        let list = grants
            .service_identities
            .iter()
            .map(|s| json!({ "ServiceName": s.service, "Datacenters": s.datacenters }))
            .collect();
        out.insert("ServiceIdentities".into(), list);
    }
    if !grants.node_identities.is_empty() {
        let list =
            grants.node_identities.iter().map(|n| json!({ "NodeName": n.node, "Datacenter": n.datacenter })).collect();
        out.insert("NodeIdentities".into(), list);
    }
    if !grants.templated_policies.is_empty() {
        let list = grants
            .templated_policies
            .iter()
            .map(|t| {
                let vars = t.name.as_ref().map_or(Value::Null, |n| json!({ "Name": n }));
                json!({ "TemplateName": t.template, "TemplateVariables": vars, "Datacenters": t.datacenters })
            })
            .collect();
        out.insert("TemplatedPolicies".into(), list);
    }
}

/// A token as Consul renders it (`secret`: whether to show the SecretID).
pub(super) fn token_json(acl: &AclState, t: &Token, secret: bool) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("AccessorID".into(), json!(t.accessor));
    out.insert("SecretID".into(), if secret { json!(t.secret) } else { json!("<hidden>") });
    out.insert("Description".into(), json!(t.description));
    grants_json(acl, &t.grants, &mut out);
    if !t.roles.is_empty() {
        out.insert("Roles".into(), t.roles.iter().map(|id| link_json(acl, id, false)).collect());
    }
    out.insert("Local".into(), json!(t.local));
    if let Some(method) = &t.auth_method {
        out.insert("AuthMethod".into(), json!(method));
    }
    if let Some(at) = t.expiration_ms {
        out.insert("ExpirationTime".into(), json!(time_text(at)));
    }
    out.insert("CreateTime".into(), json!(time_text(t.create_ms)));
    out.insert("Hash".into(), json!(""));
    out.insert("CreateIndex".into(), json!(t.create_index));
    out.insert("ModifyIndex".into(), json!(t.modify_index));
    Value::Object(out)
}
