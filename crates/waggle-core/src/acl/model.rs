//! The ACL objects, Consul's: tokens (a public accessor and a bearer secret), policies (named
//! rules), roles (named sets of policies and identities), and the identities that stand for
//! generated policies (service and node identities, templated policies).

use super::rules::{Level, Resource, Rules};

/// The accessor of the anonymous token, used for requests that carry none.
pub const ANONYMOUS_ACCESSOR: &str = "00000000-0000-0000-0000-000000000002";
/// The anonymous token's secret.
pub const ANONYMOUS_SECRET: &str = "anonymous";
/// The id of the built-in global-management policy: everything allowed.
pub const GLOBAL_MANAGEMENT_ID: &str = "00000000-0000-0000-0000-000000000001";
/// The global-management policy's name.
pub const GLOBAL_MANAGEMENT_NAME: &str = "global-management";

/// A service identity: write on the service (and its sidecar proxy), read on every service and
/// node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceIdentity {
    /// The service.
    pub service: String,
    /// Datacenters it is valid in (empty: all).
    pub datacenters: Vec<String>,
}

/// A node identity: write on the node, read on every service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeIdentity {
    /// The node.
    pub node: String,
    /// The datacenter it is valid in.
    pub datacenter: String,
}

/// A templated policy and its variables (`builtin/service` and `builtin/node` take `name`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TemplatedPolicy {
    /// `builtin/service`, `builtin/node` or `builtin/dns`.
    pub template: String,
    /// The `name` variable, where the template takes one.
    pub name: Option<String>,
    /// Datacenters it is valid in (empty: all).
    pub datacenters: Vec<String>,
}

/// What a token or role grants besides its policies.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grants {
    /// Policy ids.
    pub policies: Vec<String>,
    /// Service identities.
    pub service_identities: Vec<ServiceIdentity>,
    /// Node identities.
    pub node_identities: Vec<NodeIdentity>,
    /// Templated policies.
    pub templated_policies: Vec<TemplatedPolicy>,
}

impl Grants {
    /// The rules the identities and templated policies stand for.
    pub fn identity_rules(&self) -> Rules {
        let mut rules = Rules::new();
        for identity in &self.service_identities {
            service_identity_rules(&mut rules, &identity.service);
        }
        for identity in &self.node_identities {
            node_identity_rules(&mut rules, &identity.node);
        }
        for templated in &self.templated_policies {
            match (templated.template.as_str(), &templated.name) {
                ("builtin/service", Some(name)) => service_identity_rules(&mut rules, name),
                ("builtin/node", Some(name)) => node_identity_rules(&mut rules, name),
                ("builtin/dns", _) => {
                    for resource in [Resource::Service, Resource::Node, Resource::Query] {
                        rules.add(resource, Some(""), true, Level::Read);
                    }
                }
                _ => {}
            }
        }
        rules
    }
}

fn service_identity_rules(rules: &mut Rules, service: &str) {
    rules.add(Resource::Service, Some(service), false, Level::Write);
    rules.add(Resource::Service, Some(&format!("{service}-sidecar-proxy")), false, Level::Write);
    rules.add(Resource::Service, Some(""), true, Level::Read);
    rules.add(Resource::Node, Some(""), true, Level::Read);
}

fn node_identity_rules(rules: &mut Rules, node: &str) {
    rules.add(Resource::Node, Some(node), false, Level::Write);
    rules.add(Resource::Service, Some(""), true, Level::Read);
}

/// A token: a public accessor, a bearer secret, and what it grants.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Token {
    /// Public id (a UUID).
    pub accessor: String,
    /// The bearer secret (a UUID, or any string the operator chose). Never logged.
    pub secret: String,
    /// Free text.
    pub description: String,
    /// Policies, identities and templated policies.
    pub grants: Grants,
    /// Role ids.
    pub roles: Vec<String>,
    /// Valid in this datacenter only.
    pub local: bool,
    /// When it stops being valid (ms since the Unix epoch), if ever. The leader deletes expired
    /// tokens; until then requests check the time themselves.
    pub expiration_ms: Option<u64>,
    /// When it was created (ms since the Unix epoch, chosen by the proposer).
    pub create_ms: u64,
    /// The auth method that issued it (`login`), if any.
    pub auth_method: Option<String>,
    /// The revision that created it (set by the state machine).
    pub create_index: u64,
    /// The revision that last changed it (set by the state machine).
    pub modify_index: u64,
}

/// A named set of rules.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    /// Its id (a UUID).
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The rules as written (HCL or JSON), shown back to readers.
    pub rules_text: String,
    /// The rules as parsed by the proposer.
    pub rules: Rules,
    /// Datacenters it is valid in (empty: all).
    pub datacenters: Vec<String>,
    /// The revision that created it (set by the state machine).
    pub create_index: u64,
    /// The revision that last changed it (set by the state machine).
    pub modify_index: u64,
}

/// A named set of policies and identities tokens can link to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Role {
    /// Its id (a UUID).
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// What it grants.
    pub grants: Grants,
    /// The revision that created it (set by the state machine).
    pub create_index: u64,
    /// The revision that last changed it (set by the state machine).
    pub modify_index: u64,
}

/// How a JWT auth method verifies a bearer token and what it takes from its claims (Consul's
/// `jwt` auth method with static keys).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JwtConfig {
    /// The public keys (PEM) a token's signature may verify with.
    pub validation_pub_keys: Vec<String>,
    /// The `iss` a token must carry (empty: any).
    pub bound_issuer: String,
    /// One of these must be in a token's `aud` (empty: a token must carry no `aud`).
    pub bound_audiences: Vec<String>,
    /// Claim (a name, or a `/`-separated path into nested claims) → the name its value goes by
    /// (`value.<name>` in selectors, `${value.<name>}` in bind names).
    pub claim_mappings: std::collections::BTreeMap<String, String>,
    /// Claim → the name its list of values goes by (`list.<name>` in selectors).
    pub list_claim_mappings: std::collections::BTreeMap<String, String>,
    /// The signature algorithms accepted (empty: the default, `RS256` and `ES256`).
    pub supported_algs: Vec<String>,
    /// Leeway for clock skew in the `exp`, `nbf` and `iat` checks, in ms (0: the default,
    /// 60 s; negative: none).
    pub clock_skew_leeway_ms: i64,
    /// How long a token without `exp` stays valid after its `iat` or `nbf`, in ms (0: the
    /// default, 150 s; negative: not at all).
    pub expiration_leeway_ms: i64,
    /// How long before its `exp` a token without `nbf` or `iat` is valid, in ms (0: the default,
    /// 150 s; negative: not at all).
    pub not_before_leeway_ms: i64,
}

/// An auth method: a trusted issuer of JWTs that `login` exchanges for tokens, with the
/// identities its binding rules grant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuthMethod {
    /// Unique name.
    pub name: String,
    /// `jwt` (the only type).
    pub method_type: String,
    /// Shown in user interfaces.
    pub display_name: String,
    /// Free text.
    pub description: String,
    /// How long the tokens it issues live, if limited.
    pub max_token_ttl_ms: Option<u64>,
    /// `local` or `global`: whether the tokens it issues are local.
    pub token_locality: String,
    /// How it verifies tokens.
    pub config: JwtConfig,
    /// The revision that created it (set by the state machine).
    pub create_index: u64,
    /// The revision that last changed it (set by the state machine).
    pub modify_index: u64,
}

/// What a binding rule grants a token created by login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum BindType {
    /// A service identity named by the bind name.
    Service,
    /// A node identity named by the bind name.
    Node,
    /// The role named by the bind name (if it exists at login).
    Role,
    /// The policy named by the bind name (if it exists at login).
    Policy,
    /// The templated policy named by the bind name, its `Name` variable from `bind_vars`.
    TemplatedPolicy,
}

impl BindType {
    /// Consul's name for it (`service`, `node`, `role`, `policy`, `templated-policy`).
    pub fn as_str(self) -> &'static str {
        match self {
            BindType::Service => "service",
            BindType::Node => "node",
            BindType::Role => "role",
            BindType::Policy => "policy",
            BindType::TemplatedPolicy => "templated-policy",
        }
    }

    /// The bind type Consul names `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "service" => BindType::Service,
            "node" => BindType::Node,
            "role" => BindType::Role,
            "policy" => BindType::Policy,
            "templated-policy" => BindType::TemplatedPolicy,
            _ => return None,
        })
    }
}

/// The templated policies a binding rule may name (the built-in ones).
pub const TEMPLATED_POLICIES: &[&str] = &["builtin/service", "builtin/node", "builtin/dns"];

/// A binding rule: which logins through an auth method (a selector on their claims) get what
/// (a bind type and a name, which may interpolate claims: `${value.service}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BindingRule {
    /// Its id (a UUID).
    pub id: String,
    /// Free text.
    pub description: String,
    /// The auth method it applies to.
    pub auth_method: String,
    /// Consul's filter expression on `value.<name>` and `list.<name>` (empty: every login).
    pub selector: String,
    /// What it grants.
    pub bind_type: BindType,
    /// The name of what it grants (a template).
    pub bind_name: String,
    /// A templated policy's `Name` variable (a template), where it takes one.
    pub bind_vars: Option<String>,
    /// The revision that created it (set by the state machine).
    pub create_index: u64,
    /// The revision that last changed it (set by the state machine).
    pub modify_index: u64,
}
