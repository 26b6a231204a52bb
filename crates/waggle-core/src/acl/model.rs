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
