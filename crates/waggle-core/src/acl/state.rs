//! The replicated ACL state (tokens, policies, roles, auth methods, binding rules) and the [`Authorizer`] a token resolves
//! to against it. The state machine resolves and checks at apply time, so a token revoked or
//! narrowed before a write commits is refused; readers resolve against the same state.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use super::{
    model::{ANONYMOUS_ACCESSOR, AuthMethod, BindingRule, GLOBAL_MANAGEMENT_ID, Grants, Policy, Role, Token},
    rules::{Access, Level, Resource, Rules},
};

/// What a request gets where no rule applies (`--acl-default-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DefaultPolicy {
    /// Allowed, except ACL management.
    Allow,
    /// Denied (the default when ACLs are on).
    Deny,
}

/// Tokens, policies, roles, auth methods and binding rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclState {
    /// Tokens by accessor.
    pub(crate) tokens: BTreeMap<String, Arc<Token>>,
    /// Accessors by secret.
    pub(crate) secrets: HashMap<String, String>,
    /// Policies by id (the built-in global-management policy is implicit).
    pub(crate) policies: BTreeMap<String, Arc<Policy>>,
    /// Roles by id.
    pub(crate) roles: BTreeMap<String, Arc<Role>>,
    /// Auth methods by name.
    pub(crate) auth_methods: BTreeMap<String, Arc<AuthMethod>>,
    /// Binding rules by id.
    pub(crate) binding_rules: BTreeMap<String, Arc<BindingRule>>,
    /// The revision of the bootstrap, once done.
    pub(crate) bootstrapped: Option<u64>,
    /// The revision of the last ACL change (0: none).
    pub(crate) index: u64,
}

/// A permission a token lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Permission denied: token with AccessorID '{accessor}' lacks permission '{}:{}'{}", .resource.as_str(), .access.as_str(), on(.name))]
pub struct Denied {
    /// The token's accessor.
    pub accessor: String,
    /// The resource.
    pub resource: Resource,
    /// The object's name (empty for resources without names).
    pub name: String,
    /// What was needed.
    pub access: Access,
}

fn on(name: &str) -> String {
    if name.is_empty() { String::new() } else { format!(" on {name:?}") }
}

/// What one token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorizer {
    accessor: String,
    management: bool,
    rules: Rules,
    default: DefaultPolicy,
}

impl Authorizer {
    /// Everything allowed (ACLs off, or the server's own work).
    pub fn allow_all() -> Self {
        Authorizer { accessor: String::new(), management: true, rules: Rules::new(), default: DefaultPolicy::Allow }
    }

    /// The token's accessor.
    pub fn accessor(&self) -> &str {
        &self.accessor
    }

    /// Whether the token has the global-management policy.
    pub fn is_management(&self) -> bool {
        self.management
    }

    /// What applies where no rule does: the default policy, except for ACL management.
    fn default_level(&self, resource: Resource) -> Option<Level> {
        match (self.default, resource) {
            (_, Resource::Acl) | (DefaultPolicy::Deny, _) => None,
            (DefaultPolicy::Allow, _) => Some(Level::Write),
        }
    }

    /// Whether the token may `access` the object `name` of `resource`.
    pub fn allowed(&self, resource: Resource, name: &str, access: Access) -> bool {
        if self.management {
            return true;
        }
        self.rules.level(resource, name).or_else(|| self.default_level(resource)).is_some_and(|l| l.grants(access))
    }

    /// [`Authorizer::allowed`], or why not.
    pub fn check(&self, resource: Resource, name: &str, access: Access) -> Result<(), Denied> {
        if self.allowed(resource, name, access) {
            return Ok(());
        }
        Err(Denied { accessor: self.accessor.clone(), resource, name: name.to_owned(), access })
    }

    /// Whether the token may `access` every object whose name starts with `prefix` (a recursive
    /// delete): the longest prefix rule covering `prefix` (else the default), and no rule below
    /// it that grants less. An exact rule on `prefix` itself covers that one name only, not the
    /// names below it: it counts among the rules below.
    pub fn allowed_under(&self, resource: Resource, prefix: &str, access: Access) -> bool {
        if self.management {
            return true;
        }
        let rules = self.rules.resources.get(&resource);
        let covering = rules.and_then(|rules| {
            if !resource.is_named() {
                return rules.all;
            }
            (0..=prefix.len())
                .rev()
                .filter(|i| prefix.is_char_boundary(*i))
                .find_map(|i| rules.prefix.get(&prefix[..i]).copied())
        });
        if !covering.or_else(|| self.default_level(resource)).is_some_and(|l| l.grants(access)) {
            return false;
        }
        let Some(rules) = rules else { return true };
        rules
            .exact
            .iter()
            .chain(&rules.prefix)
            .filter(|(name, _)| name.starts_with(prefix))
            .all(|(_, l)| l.grants(access))
    }

    /// [`Authorizer::allowed_under`], or why not.
    pub fn check_under(&self, resource: Resource, prefix: &str, access: Access) -> Result<(), Denied> {
        if self.allowed_under(resource, prefix, access) {
            return Ok(());
        }
        Err(Denied { accessor: self.accessor.clone(), resource, name: prefix.to_owned(), access })
    }
}

impl AclState {
    /// The state restored from a snapshot: the `secrets` index is rebuilt from the tokens
    /// (the caller checks that no two share a secret).
    pub(crate) fn from_parts(
        tokens: BTreeMap<String, Arc<Token>>,
        policies: BTreeMap<String, Arc<Policy>>,
        roles: BTreeMap<String, Arc<Role>>,
        auth_methods: BTreeMap<String, Arc<AuthMethod>>,
        binding_rules: BTreeMap<String, Arc<BindingRule>>,
        bootstrapped: Option<u64>,
        index: u64,
    ) -> Self {
        let secrets = tokens.values().map(|t| (t.secret.clone(), t.accessor.clone())).collect();
        AclState { tokens, secrets, policies, roles, auth_methods, binding_rules, bootstrapped, index }
    }

    /// The token with this secret.
    pub fn token_by_secret(&self, secret: &str) -> Option<&Arc<Token>> {
        self.tokens.get(self.secrets.get(secret)?)
    }

    /// The token with this accessor.
    pub fn token(&self, accessor: &str) -> Option<&Arc<Token>> {
        self.tokens.get(accessor)
    }

    /// Every token, by accessor.
    pub fn tokens(&self) -> &BTreeMap<String, Arc<Token>> {
        &self.tokens
    }

    /// Every stored policy, by id (the built-in global-management policy is not stored).
    pub fn policies(&self) -> &BTreeMap<String, Arc<Policy>> {
        &self.policies
    }

    /// Every role, by id.
    pub fn roles(&self) -> &BTreeMap<String, Arc<Role>> {
        &self.roles
    }

    /// Every auth method, by name.
    pub fn auth_methods(&self) -> &BTreeMap<String, Arc<AuthMethod>> {
        &self.auth_methods
    }

    /// Every binding rule, by id.
    pub fn binding_rules(&self) -> &BTreeMap<String, Arc<BindingRule>> {
        &self.binding_rules
    }

    /// The binding rules of the auth method `method`, by id.
    pub fn binding_rules_of<'a>(&'a self, method: &'a str) -> impl Iterator<Item = &'a Arc<BindingRule>> + 'a {
        self.binding_rules.values().filter(move |r| r.auth_method == method)
    }

    /// The policy with this name.
    pub fn policy_by_name(&self, name: &str) -> Option<&Arc<Policy>> {
        self.policies.values().find(|p| p.name == name)
    }

    /// The role with this name.
    pub fn role_by_name(&self, name: &str) -> Option<&Arc<Role>> {
        self.roles.values().find(|r| r.name == name)
    }

    /// Whether the ACL system was bootstrapped (and at which revision).
    pub fn bootstrapped(&self) -> Option<u64> {
        self.bootstrapped
    }

    /// The revision of the last ACL change (0: none): resolved tokens stay valid until it moves.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// What the token with `accessor` may do, or `None` if there is no such token. The
    /// anonymous token exists even when no record of it was written (then it grants nothing
    /// beyond the default policy).
    pub fn authorizer(&self, accessor: &str, default: DefaultPolicy) -> Option<Authorizer> {
        let empty;
        let grants_and_roles: (&Grants, &[String]) = match self.tokens.get(accessor) {
            Some(token) => (&token.grants, &token.roles),
            None if accessor == ANONYMOUS_ACCESSOR => {
                empty = Grants::default();
                (&empty, &[])
            }
            None => return None,
        };
        let (grants, roles) = grants_and_roles;
        let mut authorizer =
            Authorizer { accessor: accessor.to_owned(), management: false, rules: Rules::new(), default };
        let add = |grants: &Grants, authorizer: &mut Authorizer| {
            for id in &grants.policies {
                if id == GLOBAL_MANAGEMENT_ID {
                    authorizer.management = true;
                } else if let Some(policy) = self.policies.get(id) {
                    authorizer.rules.merge(&policy.rules);
                }
            }
            authorizer.rules.merge(&grants.identity_rules());
        };
        add(grants, &mut authorizer);
        for id in roles {
            if let Some(role) = self.roles.get(id) {
                add(&role.grants, &mut authorizer);
            }
        }
        Some(authorizer)
    }
}
