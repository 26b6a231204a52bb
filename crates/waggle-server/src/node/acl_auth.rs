//! Auth methods and binding rules (set, delete; read through `acl_state`), and the logins they
//! allow: `login` exchanges a JWT the method verifies (`crate::jwt`) for a token whose
//! identities, roles and policies the method's binding rules grant (selectors evaluated with
//! `crate::filter`), created through the log; `logout` deletes a token login created. Managing
//! needs `acl:write`; login needs no token (the JWT is the credential), logout the token itself.

use std::{collections::BTreeMap, sync::Arc};

use waggle_core::{
    Command,
    acl::{
        Access, AclState, AuthMethod, BindType, BindingRule, Grants, NodeIdentity, Resource, ServiceIdentity,
        TemplatedPolicy, Token,
    },
};

use super::{Caller, DATACENTER, Node, NodeError};
use crate::{filter, jwt};

/// The longest a token created by login may live (Consul's `acl.token_max_expiration_ttl`), and
/// the shortest.
const MAX_TOKEN_TTL_MS: u64 = 24 * 3600 * 1000;
const MIN_TOKEN_TTL_MS: u64 = 60 * 1000;

/// A login: the method, its bearer token (a JWT) and metadata for the token's description.
pub(crate) struct LoginRequest {
    pub(crate) auth_method: String,
    pub(crate) bearer_token: String,
    pub(crate) meta: BTreeMap<String, String>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn invalid(what: &str, problem: impl std::fmt::Display) -> NodeError {
    NodeError::Invalid(format!("Invalid {what}: {problem}"))
}

/// Consul's names of auth methods, roles and policies: letters, digits, `-` and `_`.
fn valid_name(name: &str, max: usize) -> bool {
    !name.is_empty() && name.len() <= max && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Consul's service and node identity names: lowercase letters, digits, `-` and `_`, starting
/// and ending with a letter or digit.
fn valid_identity_name(name: &str) -> bool {
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    name.len() <= 256
        && edge(name.as_bytes().first())
        && edge(name.as_bytes().last())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Interpolates `${value.<name>}` in `template` (Consul's HIL, plain variables only). A value
/// with capitals is refused, as Consul refuses it (bind names are lowercase).
fn interpolate(template: &str, variables: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or("unterminated ${")?;
        let name = after[..end].trim();
        let value = variables.get(name).ok_or_else(|| format!("unknown variable {name:?}"))?;
        if value.chars().any(char::is_uppercase) {
            return Err(format!("the value of {name} holds capitals, but bind names are lowercase"));
        }
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether `name`, computed for `bind_type` (the templated policy's variable for
/// `TemplatedPolicy`), is a valid one.
fn check_bind_name(bind_type: BindType, name: &str) -> Result<(), String> {
    let valid = match bind_type {
        BindType::Service => valid_identity_name(name) && waggle_core::ServiceName::new(name).is_ok(),
        BindType::Node | BindType::TemplatedPolicy => valid_identity_name(name),
        BindType::Role => valid_name(name, 256),
        BindType::Policy => valid_name(name, 128),
    };
    if valid { Ok(()) } else { Err(format!("invalid bind name {name:?}")) }
}

/// What a login is granted: identities, templated policies, policies (ids) and roles (ids).
#[derive(Default)]
struct Bindings {
    grants: Grants,
    roles: Vec<String>,
}

impl Bindings {
    fn none(&self) -> bool {
        let g = &self.grants;
        g.policies.is_empty()
            && g.service_identities.is_empty()
            && g.node_identities.is_empty()
            && g.templated_policies.is_empty()
            && self.roles.is_empty()
    }

    /// Adds what `rule` binds for `identity` (a role or policy that does not exist binds
    /// nothing, as in Consul).
    fn add(&mut self, acl: &AclState, rule: &BindingRule, identity: &jwt::Identity) -> Result<(), String> {
        let name = interpolate(&rule.bind_name, &identity.variables)?;
        let g = &mut self.grants;
        match rule.bind_type {
            BindType::TemplatedPolicy => {
                let variable = match &rule.bind_vars {
                    Some(vars) => {
                        let value = interpolate(vars, &identity.variables)?;
                        check_bind_name(BindType::TemplatedPolicy, &value)?;
                        Some(value)
                    }
                    None => None,
                };
                let templated = TemplatedPolicy { template: name, name: variable, datacenters: Vec::new() };
                if !g.templated_policies.contains(&templated) {
                    g.templated_policies.push(templated);
                }
                return Ok(());
            }
            bind_type => check_bind_name(bind_type, &name)?,
        }
        match rule.bind_type {
            BindType::Service => {
                if !g.service_identities.iter().any(|s| s.service == name) {
                    g.service_identities.push(ServiceIdentity { service: name, datacenters: Vec::new() });
                }
            }
            BindType::Node => {
                if !g.node_identities.iter().any(|n| n.node == name) {
                    g.node_identities.push(NodeIdentity { node: name, datacenter: DATACENTER.into() });
                }
            }
            BindType::Role => {
                if let Some(role) = acl.role_by_name(&name)
                    && !self.roles.contains(&role.id)
                {
                    self.roles.push(role.id.clone());
                }
            }
            BindType::Policy => {
                if let Some(policy) = acl.policy_by_name(&name)
                    && !g.policies.contains(&policy.id)
                {
                    g.policies.push(policy.id.clone());
                }
            }
            BindType::TemplatedPolicy => {}
        }
        Ok(())
    }
}

/// Whether `selector` (empty: every login) holds for `identity`; one that does not parse
/// matches nothing (Consul).
fn selects(selector: &str, identity: &jwt::Identity) -> bool {
    if selector.trim().is_empty() {
        return true;
    }
    let (template, maps) = jwt::selector_template();
    filter::parse(selector, &template, maps).is_ok_and(|expr| filter::eval(&expr, &identity.selectable))
}

impl Node {
    /// Creates or replaces an auth method (by name): Consul's rules on the name, type, token
    /// locality and `MaxTokenTTL`, and a configuration whose keys parse. Answers it as stored.
    pub(crate) async fn set_auth_method(
        &self,
        caller: &Caller,
        mut method: AuthMethod,
    ) -> Result<Arc<AuthMethod>, NodeError> {
        caller.check(Resource::Acl, "", Access::Write)?;
        if !valid_name(&method.name, 128) {
            return Err(invalid(
                "Auth Method",
                format!("invalid Name {:?} (letters, digits, - and _, at most 128)", method.name),
            ));
        }
        if method.method_type != "jwt" {
            return Err(invalid(
                "Auth Method",
                format!("Type {:?} is not supported (only \"jwt\")", method.method_type),
            ));
        }
        match method.token_locality.as_str() {
            "" => method.token_locality = "local".into(),
            "local" | "global" => {}
            other => return Err(invalid("Auth Method", format!("TokenLocality {other:?}: \"local\" or \"global\""))),
        }
        if let Some(ttl) = method.max_token_ttl_ms
            && !(MIN_TOKEN_TTL_MS..=MAX_TOKEN_TTL_MS).contains(&ttl)
        {
            return Err(invalid("Auth Method", "MaxTokenTTL must be between 1m and 24h"));
        }
        jwt::check_config(&method.config).map_err(|e| invalid("Auth Method", e))?;
        let name = method.name.clone();
        self.write(caller, Command::AclSetAuthMethod { method }).await?;
        self.read_model()
            .acl()
            .auth_methods()
            .get(&name)
            .cloned()
            .ok_or_else(|| NodeError::NotFound("auth method".into()))
    }

    /// Deletes an auth method, its binding rules and the tokens it issued.
    pub(crate) async fn delete_auth_method(&self, caller: &Caller, name: String) -> Result<(), NodeError> {
        caller.check(Resource::Acl, "", Access::Write)?;
        self.write(caller, Command::AclDeleteAuthMethod { name }).await?;
        Ok(())
    }

    /// Creates (no id) or replaces a binding rule: its method must exist, its selector parse,
    /// and its bind name (and variables) interpolate only the method's claims to a valid name.
    /// Answers it as stored.
    pub(crate) async fn set_binding_rule(
        &self,
        caller: &Caller,
        mut rule: BindingRule,
    ) -> Result<Arc<BindingRule>, NodeError> {
        caller.check(Resource::Acl, "", Access::Write)?;
        let acl = self.read_model().acl();
        let method = acl
            .auth_methods()
            .get(&rule.auth_method)
            .ok_or_else(|| invalid("Binding Rule", format!("cannot find auth method {:?}", rule.auth_method)))?;
        if !rule.selector.trim().is_empty() {
            let (template, maps) = jwt::selector_template();
            filter::parse(&rule.selector, &template, maps)
                .map_err(|e| invalid("Binding Rule", format!("Selector is invalid: {e}")))?;
        }
        // The bind name as a login would compute it, every claim standing in as "fake".
        let fake: BTreeMap<String, String> =
            method.config.claim_mappings.values().map(|name| (format!("value.{name}"), "fake".into())).collect();
        if rule.bind_name.is_empty() {
            return Err(invalid("Binding Rule", "BindName is required"));
        }
        let name =
            interpolate(&rule.bind_name, &fake).map_err(|e| invalid("Binding Rule", format!("BindName: {e}")))?;
        match rule.bind_type {
            BindType::TemplatedPolicy => {
                if !waggle_core::acl::TEMPLATED_POLICIES.contains(&name.as_str()) {
                    return Err(invalid("Binding Rule", format!("BindName: unknown templated policy {name:?}")));
                }
                let takes_name = name != "builtin/dns";
                match (&rule.bind_vars, takes_name) {
                    (Some(vars), true) => {
                        let value = interpolate(vars, &fake)
                            .map_err(|e| invalid("Binding Rule", format!("BindVars.Name: {e}")))?;
                        check_bind_name(BindType::TemplatedPolicy, &value)
                            .map_err(|e| invalid("Binding Rule", format!("BindVars.Name: {e}")))?;
                    }
                    (None, true) => return Err(invalid("Binding Rule", format!("{name} needs BindVars.Name"))),
                    (_, false) => rule.bind_vars = None,
                }
            }
            bind_type => {
                check_bind_name(bind_type, &name).map_err(|e| invalid("Binding Rule", format!("BindName: {e}")))?;
                if rule.bind_vars.is_some() {
                    return Err(invalid("Binding Rule", "BindVars is for the templated-policy BindType only"));
                }
            }
        }
        if rule.id.is_empty() {
            rule.id = self.new_uuid();
        }
        let id = rule.id.clone();
        self.write(caller, Command::AclSetBindingRule { rule }).await?;
        self.read_model()
            .acl()
            .binding_rules()
            .get(&id)
            .cloned()
            .ok_or_else(|| NodeError::NotFound("binding rule".into()))
    }

    /// Deletes a binding rule.
    pub(crate) async fn delete_binding_rule(&self, caller: &Caller, id: String) -> Result<(), NodeError> {
        caller.check(Resource::Acl, "", Access::Write)?;
        self.write(caller, Command::AclDeleteBindingRule { id }).await?;
        Ok(())
    }

    /// Exchanges a JWT for a token: the method verifies it, each of its binding rules whose
    /// selector holds binds an identity, role, policy or templated policy, and the token
    /// holding them is created through the log (no token needed: the JWT is the credential).
    /// Nothing bound is refused with Consul's "Permission denied"; so is a JWT that does not
    /// verify (logged with the reason, never the JWT). An unknown method is "ACL not found".
    pub(crate) async fn login(&self, request: LoginRequest) -> Result<Arc<Token>, NodeError> {
        if !self.acl.enabled {
            return Err(NodeError::Invalid("ACL support disabled (start the server with --acl-enabled)".into()));
        }
        if request.bearer_token.is_empty() {
            return Err(NodeError::Invalid("Invalid Login request: missing BearerToken".into()));
        }
        let name = request.auth_method;
        let mut acl = self.read_model().acl();
        if !acl.auth_methods().contains_key(&name) {
            // Created through another member a moment ago?
            self.read_barrier().await?;
            acl = self.read_model().acl();
        }
        let Some(method) = acl.auth_methods().get(&name).cloned() else {
            tracing::info!(method = ?name, "login refused: no such auth method");
            return Err(NodeError::PermissionDenied(format!("ACL not found: auth method {name:?} not found")));
        };
        let refused = |reason: String| {
            tracing::info!(method = ?name, %reason, "login refused");
            NodeError::PermissionDenied(format!("Permission denied: {reason}"))
        };
        let now = now_ms();
        let claims = jwt::verify(&request.bearer_token, &method.config, i64::try_from(now).unwrap_or(i64::MAX))
            .map_err(|e| refused(format!("the bearer token does not verify: {e}")))?;
        let identity = jwt::identity(&claims, &method.config).map_err(refused)?;
        let mut bindings = Bindings::default();
        for rule in acl.binding_rules_of(&name).filter(|r| selects(&r.selector, &identity)) {
            bindings.add(&acl, rule, &identity).map_err(|e| refused(format!("binding rule {}: {e}", rule.id)))?;
        }
        if bindings.none() {
            tracing::info!(method = ?name, "login refused: no binding rule granted anything");
            return Err(NodeError::PermissionDenied("Permission denied".into()));
        }
        let mut description = "token created via login".to_owned();
        if !request.meta.is_empty() {
            description.push_str(": ");
            description.push_str(&serde_json::to_string(&request.meta).unwrap_or_default());
        }
        let token = Token {
            accessor: self.new_uuid(),
            secret: self.new_uuid(),
            description,
            grants: bindings.grants,
            roles: bindings.roles,
            local: method.token_locality != "global",
            expiration_ms: method.max_token_ttl_ms.map(|ttl| now.saturating_add(ttl)),
            create_ms: now,
            auth_method: Some(name.clone()),
            create_index: 0,
            modify_index: 0,
        };
        let accessor = token.accessor.clone();
        // Not for a caller: the state machine checks only that the method still exists (a
        // login racing its method's deletion creates nothing).
        self.consensus.propose(Command::AclSetToken { token }).await.map_err(|e| match NodeError::from(e) {
            NodeError::NotFound(_) => NodeError::PermissionDenied("Permission denied".into()),
            other => other,
        })?;
        tracing::info!(method = ?name, accessor = %accessor, "login created a token");
        self.read_model().acl().token(&accessor).cloned().ok_or_else(|| NodeError::NotFound("token".into()))
    }

    /// Deletes the caller's own token, if login created it ("Permission denied" otherwise; "ACL
    /// not found" without a token).
    pub(crate) async fn logout(&self, caller: &Caller) -> Result<(), NodeError> {
        if !self.acl.enabled {
            return Err(NodeError::Invalid("ACL support disabled (start the server with --acl-enabled)".into()));
        }
        let acl = self.read_model().acl();
        let token = caller
            .accessor()
            .and_then(|accessor| acl.token(accessor))
            .ok_or_else(|| NodeError::PermissionDenied("ACL not found".into()))?;
        if token.auth_method.is_none() {
            return Err(NodeError::PermissionDenied("Permission denied: the token was not created by login".into()));
        }
        // The token may not manage ACLs: its own deletion is proposed for no caller.
        let accessor = token.accessor.clone();
        self.consensus.propose(Command::AclDeleteToken { accessor }).await.map_err(|e| match NodeError::from(e) {
            NodeError::NotFound(_) => NodeError::PermissionDenied("ACL not found".into()),
            other => other,
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_names_interpolate_claims() {
        let vars: BTreeMap<String, String> =
            [("value.service".into(), "web".into()), ("value.team".into(), "Core".into())].into();
        assert_eq!(interpolate("${value.service}", &vars).as_deref(), Ok("web"));
        assert_eq!(interpolate("svc-${ value.service }-x", &vars).as_deref(), Ok("svc-web-x"));
        assert_eq!(interpolate("plain", &vars).as_deref(), Ok("plain"));
        assert!(interpolate("${value.other}", &vars).unwrap_err().contains("unknown variable"));
        assert!(interpolate("${value.service", &vars).unwrap_err().contains("unterminated"));
        assert!(interpolate("${value.team}", &vars).unwrap_err().contains("capitals"));
    }

    #[test]
    fn bind_names_follow_consuls_rules() {
        assert!(check_bind_name(BindType::Service, "web-1").is_ok());
        for bad in ["", "Web", "-web", "web-", "a b"] {
            assert!(check_bind_name(BindType::Service, bad).is_err(), "{bad:?}");
            assert!(check_bind_name(BindType::Node, bad).is_err(), "{bad:?}");
        }
        assert!(check_bind_name(BindType::Role, "Deployers_1").is_ok());
        assert!(check_bind_name(BindType::Policy, &"p".repeat(129)).is_err());
        assert!(check_bind_name(BindType::Role, "a/b").is_err());
    }
}
