//! The records of the ACL objects (tokens, policies with their parsed rules, roles, auth methods,
//! binding rules), shared by the ACL commands and the snapshot. Enums are written as fixed codes; unknown codes are
//! refused.

use std::{collections::BTreeMap, sync::Arc};

use crate::{
    ValidationError,
    acl::{
        AuthMethod, BindType, BindingRule, DefaultPolicy, Grants, JwtConfig, Level, NodeIdentity, Policy, Resource,
        Role, Rules, ServiceIdentity, TemplatedPolicy, Token,
    },
};

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct TokenRecord {
    #[prost(string, tag = "1")]
    accessor: String,
    #[prost(string, tag = "2")]
    secret: String,
    #[prost(string, tag = "3")]
    description: String,
    #[prost(message, optional, tag = "4")]
    grants: Option<GrantsRecord>,
    /// Role ids.
    #[prost(string, repeated, tag = "5")]
    roles: Vec<String>,
    #[prost(bool, tag = "6")]
    local: bool,
    #[prost(uint64, optional, tag = "7")]
    expiration_ms: Option<u64>,
    #[prost(uint64, tag = "8")]
    create_ms: u64,
    #[prost(string, optional, tag = "9")]
    auth_method: Option<String>,
    #[prost(uint64, tag = "10")]
    create_index: u64,
    #[prost(uint64, tag = "11")]
    modify_index: u64,
}

/// What a token or role grants besides its roles.
#[derive(Clone, PartialEq, prost::Message)]
struct GrantsRecord {
    /// Policy ids.
    #[prost(string, repeated, tag = "1")]
    policies: Vec<String>,
    #[prost(message, repeated, tag = "2")]
    service_identities: Vec<ServiceIdentityRecord>,
    #[prost(message, repeated, tag = "3")]
    node_identities: Vec<NodeIdentityRecord>,
    #[prost(message, repeated, tag = "4")]
    templated_policies: Vec<TemplatedPolicyRecord>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ServiceIdentityRecord {
    #[prost(string, tag = "1")]
    service: String,
    #[prost(string, repeated, tag = "2")]
    datacenters: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NodeIdentityRecord {
    #[prost(string, tag = "1")]
    node: String,
    #[prost(string, tag = "2")]
    datacenter: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TemplatedPolicyRecord {
    #[prost(string, tag = "1")]
    template: String,
    #[prost(string, optional, tag = "2")]
    name: Option<String>,
    #[prost(string, repeated, tag = "3")]
    datacenters: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct PolicyRecord {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(string, tag = "3")]
    description: String,
    #[prost(string, tag = "4")]
    rules_text: String,
    /// The parsed rules, by resource in order; within one, the `all` level, then exact names,
    /// then prefixes, each in name order.
    #[prost(message, repeated, tag = "5")]
    rules: Vec<RuleRecord>,
    #[prost(string, repeated, tag = "6")]
    datacenters: Vec<String>,
    #[prost(uint64, tag = "7")]
    create_index: u64,
    #[prost(uint64, tag = "8")]
    modify_index: u64,
}

/// One parsed rule: a level for a name (exact, or a prefix with `prefix`) of a resource, or
/// with `all` the level for every object of the resource (`acl = "write"`; `name` empty and
/// `prefix` false).
#[derive(Clone, PartialEq, prost::Message)]
struct RuleRecord {
    /// See [`resource_code`].
    #[prost(uint32, tag = "1")]
    resource: u32,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(bool, tag = "3")]
    prefix: bool,
    /// See [`level_code`].
    #[prost(uint32, tag = "4")]
    level: u32,
    #[prost(bool, tag = "5")]
    all: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct RoleRecord {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(string, tag = "3")]
    description: String,
    #[prost(message, optional, tag = "4")]
    grants: Option<GrantsRecord>,
    #[prost(uint64, tag = "5")]
    create_index: u64,
    #[prost(uint64, tag = "6")]
    modify_index: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct AuthMethodRecord {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    method_type: String,
    #[prost(string, tag = "3")]
    display_name: String,
    #[prost(string, tag = "4")]
    description: String,
    #[prost(uint64, optional, tag = "5")]
    max_token_ttl_ms: Option<u64>,
    #[prost(string, tag = "6")]
    token_locality: String,
    #[prost(message, optional, tag = "7")]
    config: Option<JwtConfigRecord>,
    #[prost(uint64, tag = "8")]
    create_index: u64,
    #[prost(uint64, tag = "9")]
    modify_index: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct JwtConfigRecord {
    /// PEM.
    #[prost(string, repeated, tag = "1")]
    validation_pub_keys: Vec<String>,
    #[prost(string, tag = "2")]
    bound_issuer: String,
    #[prost(string, repeated, tag = "3")]
    bound_audiences: Vec<String>,
    #[prost(btree_map = "string, string", tag = "4")]
    claim_mappings: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "5")]
    list_claim_mappings: BTreeMap<String, String>,
    #[prost(string, repeated, tag = "6")]
    supported_algs: Vec<String>,
    #[prost(sint64, tag = "7")]
    clock_skew_leeway_ms: i64,
    #[prost(sint64, tag = "8")]
    expiration_leeway_ms: i64,
    #[prost(sint64, tag = "9")]
    not_before_leeway_ms: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct BindingRuleRecord {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(string, tag = "2")]
    description: String,
    #[prost(string, tag = "3")]
    auth_method: String,
    #[prost(string, tag = "4")]
    selector: String,
    /// See [`bind_type_code`].
    #[prost(uint32, tag = "5")]
    bind_type: u32,
    #[prost(string, tag = "6")]
    bind_name: String,
    #[prost(string, optional, tag = "7")]
    bind_vars: Option<String>,
    #[prost(uint64, tag = "8")]
    create_index: u64,
    #[prost(uint64, tag = "9")]
    modify_index: u64,
}

/// 1 acl, 2 agent, 3 event, 4 key, 5 keyring, 6 node, 7 operator, 8 query, 9 service,
/// 10 session, 11 mesh, 12 peering (0 is refused).
fn resource_code(resource: Resource) -> u32 {
    match resource {
        Resource::Acl => 1,
        Resource::Agent => 2,
        Resource::Event => 3,
        Resource::Key => 4,
        Resource::Keyring => 5,
        Resource::Node => 6,
        Resource::Operator => 7,
        Resource::Query => 8,
        Resource::Service => 9,
        Resource::Session => 10,
        Resource::Mesh => 11,
        Resource::Peering => 12,
    }
}

fn code_resource(code: u32) -> Result<Resource, ValidationError> {
    Ok(match code {
        1 => Resource::Acl,
        2 => Resource::Agent,
        3 => Resource::Event,
        4 => Resource::Key,
        5 => Resource::Keyring,
        6 => Resource::Node,
        7 => Resource::Operator,
        8 => Resource::Query,
        9 => Resource::Service,
        10 => Resource::Session,
        11 => Resource::Mesh,
        12 => Resource::Peering,
        n => return Err(ValidationError::new("rule", format!("unknown resource code {n}"))),
    })
}

/// 1 deny, 2 list, 3 read, 4 write (0 is refused).
fn level_code(level: Level) -> u32 {
    match level {
        Level::Deny => 1,
        Level::List => 2,
        Level::Read => 3,
        Level::Write => 4,
    }
}

fn code_level(code: u32) -> Result<Level, ValidationError> {
    Ok(match code {
        1 => Level::Deny,
        2 => Level::List,
        3 => Level::Read,
        4 => Level::Write,
        n => return Err(ValidationError::new("rule", format!("unknown rule level {n}"))),
    })
}

/// 1 allow, 2 deny (0 is refused).
pub(super) fn default_policy_code(default: DefaultPolicy) -> u32 {
    match default {
        DefaultPolicy::Allow => 1,
        DefaultPolicy::Deny => 2,
    }
}

pub(super) fn code_default_policy(code: u32) -> Result<DefaultPolicy, ValidationError> {
    match code {
        1 => Ok(DefaultPolicy::Allow),
        2 => Ok(DefaultPolicy::Deny),
        n => Err(ValidationError::new("default policy", format!("unknown default policy code {n}"))),
    }
}

/// 1 service, 2 node, 3 role, 4 policy, 5 templated policy (0 is refused).
fn bind_type_code(bind_type: BindType) -> u32 {
    match bind_type {
        BindType::Service => 1,
        BindType::Node => 2,
        BindType::Role => 3,
        BindType::Policy => 4,
        BindType::TemplatedPolicy => 5,
    }
}

fn code_bind_type(code: u32) -> Result<BindType, ValidationError> {
    Ok(match code {
        1 => BindType::Service,
        2 => BindType::Node,
        3 => BindType::Role,
        4 => BindType::Policy,
        5 => BindType::TemplatedPolicy,
        n => return Err(ValidationError::new("binding rule", format!("unknown bind type code {n}"))),
    })
}

fn grants_record(grants: &Grants) -> GrantsRecord {
    GrantsRecord {
        policies: grants.policies.clone(),
        service_identities: grants
            .service_identities
            .iter()
            .map(|i| ServiceIdentityRecord { service: i.service.clone(), datacenters: i.datacenters.clone() })
            .collect(),
        node_identities: grants
            .node_identities
            .iter()
            .map(|i| NodeIdentityRecord { node: i.node.clone(), datacenter: i.datacenter.clone() })
            .collect(),
        templated_policies: grants
            .templated_policies
            .iter()
            .map(|t| TemplatedPolicyRecord {
                template: t.template.clone(),
                name: t.name.clone(),
                datacenters: t.datacenters.clone(),
            })
            .collect(),
    }
}

fn record_grants(r: Option<GrantsRecord>) -> Grants {
    let Some(r) = r else { return Grants::default() };
    Grants {
        policies: r.policies,
        service_identities: r
            .service_identities
            .into_iter()
            .map(|i| ServiceIdentity { service: i.service, datacenters: i.datacenters })
            .collect(),
        node_identities: r
            .node_identities
            .into_iter()
            .map(|i| NodeIdentity { node: i.node, datacenter: i.datacenter })
            .collect(),
        templated_policies: r
            .templated_policies
            .into_iter()
            .map(|t| TemplatedPolicy { template: t.template, name: t.name, datacenters: t.datacenters })
            .collect(),
    }
}

pub(super) fn token_record(token: &Token) -> TokenRecord {
    TokenRecord {
        accessor: token.accessor.clone(),
        secret: token.secret.clone(),
        description: token.description.clone(),
        grants: Some(grants_record(&token.grants)),
        roles: token.roles.clone(),
        local: token.local,
        expiration_ms: token.expiration_ms,
        create_ms: token.create_ms,
        auth_method: token.auth_method.clone(),
        create_index: token.create_index,
        modify_index: token.modify_index,
    }
}

pub(super) fn record_token(r: TokenRecord) -> Token {
    Token {
        accessor: r.accessor,
        secret: r.secret,
        description: r.description,
        grants: record_grants(r.grants),
        roles: r.roles,
        local: r.local,
        expiration_ms: r.expiration_ms,
        create_ms: r.create_ms,
        auth_method: r.auth_method,
        create_index: r.create_index,
        modify_index: r.modify_index,
    }
}

fn rule_records(rules: &Rules) -> Vec<RuleRecord> {
    let mut out = Vec::with_capacity(rules.len());
    for (resource, r) in &rules.resources {
        let resource = resource_code(*resource);
        if let Some(level) = r.all {
            out.push(RuleRecord { resource, level: level_code(level), all: true, ..Default::default() });
        }
        for (prefix, map) in [(false, &r.exact), (true, &r.prefix)] {
            for (name, level) in map {
                out.push(RuleRecord { resource, name: name.clone(), prefix, level: level_code(*level), all: false });
            }
        }
    }
    out
}

/// Rebuilds the rules exactly as written (not through [`Rules::add`], which would route names
/// by resource kind and merge): a rule given twice is refused.
fn record_rules(records: Vec<RuleRecord>) -> Result<Rules, ValidationError> {
    let mut rules = Rules::new();
    for r in records {
        let resource = code_resource(r.resource)?;
        let level = code_level(r.level)?;
        let slot = rules.resources.entry(resource).or_default();
        let duplicate = if r.all {
            if r.prefix || !r.name.is_empty() {
                return Err(ValidationError::new("rule", "a rule for every object of a resource has no name"));
            }
            slot.all.replace(level).is_some()
        } else {
            let map = if r.prefix { &mut slot.prefix } else { &mut slot.exact };
            map.insert(r.name, level).is_some()
        };
        if duplicate {
            return Err(ValidationError::new("rule", format!("a {} rule is given twice", resource.as_str())));
        }
    }
    Ok(rules)
}

pub(super) fn policy_record(policy: &Policy) -> PolicyRecord {
    PolicyRecord {
        id: policy.id.clone(),
        name: policy.name.clone(),
        description: policy.description.clone(),
        rules_text: policy.rules_text.clone(),
        rules: rule_records(&policy.rules),
        datacenters: policy.datacenters.clone(),
        create_index: policy.create_index,
        modify_index: policy.modify_index,
    }
}

pub(super) fn record_policy(r: PolicyRecord) -> Result<Policy, ValidationError> {
    Ok(Policy {
        id: r.id,
        name: r.name,
        description: r.description,
        rules_text: r.rules_text,
        rules: record_rules(r.rules)?,
        datacenters: r.datacenters,
        create_index: r.create_index,
        modify_index: r.modify_index,
    })
}

pub(super) fn role_record(role: &Role) -> RoleRecord {
    RoleRecord {
        id: role.id.clone(),
        name: role.name.clone(),
        description: role.description.clone(),
        grants: Some(grants_record(&role.grants)),
        create_index: role.create_index,
        modify_index: role.modify_index,
    }
}

pub(super) fn record_role(r: RoleRecord) -> Role {
    Role {
        id: r.id,
        name: r.name,
        description: r.description,
        grants: record_grants(r.grants),
        create_index: r.create_index,
        modify_index: r.modify_index,
    }
}

pub(super) fn auth_method_record(method: &AuthMethod) -> AuthMethodRecord {
    let c = &method.config;
    AuthMethodRecord {
        name: method.name.clone(),
        method_type: method.method_type.clone(),
        display_name: method.display_name.clone(),
        description: method.description.clone(),
        max_token_ttl_ms: method.max_token_ttl_ms,
        token_locality: method.token_locality.clone(),
        config: Some(JwtConfigRecord {
            validation_pub_keys: c.validation_pub_keys.clone(),
            bound_issuer: c.bound_issuer.clone(),
            bound_audiences: c.bound_audiences.clone(),
            claim_mappings: c.claim_mappings.clone(),
            list_claim_mappings: c.list_claim_mappings.clone(),
            supported_algs: c.supported_algs.clone(),
            clock_skew_leeway_ms: c.clock_skew_leeway_ms,
            expiration_leeway_ms: c.expiration_leeway_ms,
            not_before_leeway_ms: c.not_before_leeway_ms,
        }),
        create_index: method.create_index,
        modify_index: method.modify_index,
    }
}

pub(super) fn record_auth_method(r: AuthMethodRecord) -> AuthMethod {
    let config = r.config.map_or_else(JwtConfig::default, |c| JwtConfig {
        validation_pub_keys: c.validation_pub_keys,
        bound_issuer: c.bound_issuer,
        bound_audiences: c.bound_audiences,
        claim_mappings: c.claim_mappings,
        list_claim_mappings: c.list_claim_mappings,
        supported_algs: c.supported_algs,
        clock_skew_leeway_ms: c.clock_skew_leeway_ms,
        expiration_leeway_ms: c.expiration_leeway_ms,
        not_before_leeway_ms: c.not_before_leeway_ms,
    });
    AuthMethod {
        name: r.name,
        method_type: r.method_type,
        display_name: r.display_name,
        description: r.description,
        max_token_ttl_ms: r.max_token_ttl_ms,
        token_locality: r.token_locality,
        config,
        create_index: r.create_index,
        modify_index: r.modify_index,
    }
}

pub(super) fn binding_rule_record(rule: &BindingRule) -> BindingRuleRecord {
    BindingRuleRecord {
        id: rule.id.clone(),
        description: rule.description.clone(),
        auth_method: rule.auth_method.clone(),
        selector: rule.selector.clone(),
        bind_type: bind_type_code(rule.bind_type),
        bind_name: rule.bind_name.clone(),
        bind_vars: rule.bind_vars.clone(),
        create_index: rule.create_index,
        modify_index: rule.modify_index,
    }
}

pub(super) fn record_binding_rule(r: BindingRuleRecord) -> Result<BindingRule, ValidationError> {
    Ok(BindingRule {
        id: r.id,
        description: r.description,
        auth_method: r.auth_method,
        selector: r.selector,
        bind_type: code_bind_type(r.bind_type)?,
        bind_name: r.bind_name,
        bind_vars: r.bind_vars,
        create_index: r.create_index,
        modify_index: r.modify_index,
    })
}

/// Keys `items` by `key`, refusing a key given twice (a snapshot's tokens, policies, roles).
pub(super) fn keyed<T>(
    what: &'static str,
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> &str,
) -> Result<BTreeMap<String, Arc<T>>, ValidationError> {
    let mut map = BTreeMap::new();
    for item in items {
        let k = key(&item).to_owned();
        if map.contains_key(&k) {
            return Err(ValidationError::new(what, format!("{k:?} is given twice")));
        }
        map.insert(k, Arc::new(item));
    }
    Ok(map)
}
