//! The ACL aggregate: tokens, policies and roles (bootstrap, set, delete, expiry), auth methods
//! and binding rules (set, delete), and the
//! apply-time check of [`Command::Authorized`]: which permission each command needs, checked
//! against the ACL state at this point of the log.

use std::{collections::HashMap, sync::Arc};

use super::Registry;
use crate::{
    Applied, ApplyError, Command, Effect, KvOp, ValidationError,
    acl::{
        ANONYMOUS_ACCESSOR, ANONYMOUS_SECRET, Access, AclState, AuthMethod, Authorizer, BindType, BindingRule,
        DefaultPolicy, GLOBAL_MANAGEMENT_ID, GLOBAL_MANAGEMENT_NAME, Grants, Policy, Resource, Role,
        TEMPLATED_POLICIES, Token,
    },
};

fn invalid(field: &'static str, rule: impl Into<String>) -> ApplyError {
    ValidationError::new(field, rule).into()
}

/// Authorizers resolved since the last ACL change, by accessor and default policy: derived
/// state (a pure function of the ACL state, cleared whenever it changes), so a write does not
/// merge its token's policies again. Not part of the registry's value: clones start empty and
/// it never makes two registries differ.
#[derive(Debug, Default)]
pub(crate) struct AuthorizerCache(HashMap<DefaultPolicy, HashMap<String, Arc<Authorizer>>>);

impl Clone for AuthorizerCache {
    fn clone(&self) -> Self {
        AuthorizerCache::default()
    }
}

impl PartialEq for AuthorizerCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for AuthorizerCache {}

/// Most authorizers kept (the cache starts over past it).
const MAX_CACHED_AUTHORIZERS: usize = 4096;

impl Registry {
    /// The ACL state: tokens, policies, roles.
    pub fn acl(&self) -> &AclState {
        &self.acl
    }

    /// Replaces the ACL state (the snapshot codec).
    pub(crate) fn set_acl(&mut self, acl: AclState) {
        self.acl = acl;
        self.authorizers = AuthorizerCache::default();
    }

    /// Runs `command` for the token `accessor` if it may (see [`Command::Authorized`]).
    pub(super) fn authorized(
        &mut self,
        accessor: &str,
        default: DefaultPolicy,
        command: &Command,
        effects: &mut Vec<Effect>,
    ) -> Result<Applied, ApplyError> {
        let cached = self.authorizers.0.get(&default).and_then(|by_accessor| by_accessor.get(accessor));
        let authorizer = match cached {
            Some(found) => found.clone(),
            None => {
                let resolved = Arc::new(self.acl.authorizer(accessor, default).ok_or(ApplyError::TokenNotFound)?);
                let by_accessor = self.authorizers.0.entry(default).or_default();
                if by_accessor.len() >= MAX_CACHED_AUTHORIZERS {
                    by_accessor.clear();
                }
                by_accessor.insert(accessor.to_owned(), resolved.clone());
                resolved
            }
        };
        let session_name = |id| self.sessions.get(&id).map(|s| s.options.name.clone()).unwrap_or_default();
        authorize(&authorizer, command, session_name)?;
        self.apply_inner(command, effects)
    }

    /// Marks an ACL change: a new revision, the ACL index, and the effect readers follow.
    fn acl_changed(&mut self, effects: &mut Vec<Effect>) -> u64 {
        self.revision = self.revision.next();
        self.acl.index = self.revision.get();
        self.authorizers.0.clear();
        effects.push(Effect::AclChanged { revision: self.revision });
        self.revision.get()
    }

    /// Checks that every policy and role a token or role links to exists.
    fn check_links(&self, grants: &Grants, roles: &[String]) -> Result<(), ApplyError> {
        for id in &grants.policies {
            if id != GLOBAL_MANAGEMENT_ID && !self.acl.policies.contains_key(id) {
                return Err(ApplyError::AclNotFound(format!("policy {id:?}")));
            }
        }
        for id in roles {
            if !self.acl.roles.contains_key(id) {
                return Err(ApplyError::AclNotFound(format!("role {id:?}")));
            }
        }
        Ok(())
    }

    pub(super) fn acl_bootstrap(&mut self, token: &Token, effects: &mut Vec<Effect>) -> Result<Applied, ApplyError> {
        if self.acl.bootstrapped.is_some() {
            return Err(ApplyError::AclBootstrapped);
        }
        self.acl_set_token(token, effects)?;
        self.acl.bootstrapped = Some(self.revision.get());
        Ok(self.applied())
    }

    pub(super) fn acl_set_token(&mut self, token: &Token, effects: &mut Vec<Effect>) -> Result<Applied, ApplyError> {
        if token.accessor.is_empty() || token.secret.is_empty() {
            return Err(invalid("token", "AccessorID and SecretID are required"));
        }
        if (token.accessor == ANONYMOUS_ACCESSOR) != (token.secret == ANONYMOUS_SECRET) {
            return Err(invalid("token", "the anonymous token's secret is \"anonymous\", and no other token's"));
        }
        if let Some(owner) = self.acl.secrets.get(&token.secret)
            && *owner != token.accessor
        {
            return Err(ApplyError::AclConflict("a token with this SecretID already exists".into()));
        }
        let old = self.acl.tokens.get(&token.accessor).cloned();
        if let Some(old) = &old
            && old.secret != token.secret
        {
            return Err(invalid("token", "a token's SecretID cannot be changed"));
        }
        self.check_links(&token.grants, &token.roles)?;
        // A login racing the deletion of its auth method creates nothing.
        if let Some(method) = &token.auth_method
            && !self.acl.auth_methods.contains_key(method)
        {
            return Err(ApplyError::AclNotFound(format!("auth method {method:?}")));
        }
        let revision = self.acl_changed(effects);
        let mut stored = token.clone();
        stored.create_index = old.as_ref().map_or(revision, |o| o.create_index);
        stored.create_ms = old.as_ref().map_or(token.create_ms, |o| o.create_ms);
        stored.modify_index = revision;
        self.acl.secrets.insert(stored.secret.clone(), stored.accessor.clone());
        self.acl.tokens.insert(stored.accessor.clone(), Arc::new(stored));
        Ok(self.applied())
    }

    pub(super) fn acl_delete_token(
        &mut self,
        accessor: &str,
        effects: &mut Vec<Effect>,
    ) -> Result<Applied, ApplyError> {
        if accessor == ANONYMOUS_ACCESSOR {
            return Err(invalid("token", "the anonymous token cannot be deleted"));
        }
        let token =
            self.acl.tokens.remove(accessor).ok_or_else(|| ApplyError::AclNotFound(format!("token {accessor:?}")))?;
        self.acl.secrets.remove(&token.secret);
        self.acl_changed(effects);
        Ok(self.applied())
    }

    pub(super) fn acl_set_policy(&mut self, policy: &Policy, effects: &mut Vec<Effect>) -> Result<Applied, ApplyError> {
        if policy.id.is_empty() || policy.name.is_empty() {
            return Err(invalid("policy", "ID and Name are required"));
        }
        if policy.id == GLOBAL_MANAGEMENT_ID || policy.name == GLOBAL_MANAGEMENT_NAME {
            return Err(invalid("policy", "the global-management policy cannot be changed"));
        }
        if self.acl.policies.values().any(|p| p.name == policy.name && p.id != policy.id) {
            return Err(ApplyError::AclConflict(format!("a policy named {:?} already exists", policy.name)));
        }
        let old_index = self.acl.policies.get(&policy.id).map(|p| p.create_index);
        let revision = self.acl_changed(effects);
        let mut stored = policy.clone();
        stored.create_index = old_index.unwrap_or(revision);
        stored.modify_index = revision;
        self.acl.policies.insert(stored.id.clone(), Arc::new(stored));
        Ok(self.applied())
    }

    pub(super) fn acl_delete_policy(&mut self, id: &str, effects: &mut Vec<Effect>) -> Result<Applied, ApplyError> {
        if id == GLOBAL_MANAGEMENT_ID {
            return Err(invalid("policy", "the global-management policy cannot be deleted"));
        }
        self.acl.policies.remove(id).ok_or_else(|| ApplyError::AclNotFound(format!("policy {id:?}")))?;
        self.acl_changed(effects);
        Ok(self.applied())
    }

    pub(super) fn acl_set_role(&mut self, role: &Role, effects: &mut Vec<Effect>) -> Result<Applied, ApplyError> {
        if role.id.is_empty() || role.name.is_empty() {
            return Err(invalid("role", "ID and Name are required"));
        }
        if self.acl.roles.values().any(|r| r.name == role.name && r.id != role.id) {
            return Err(ApplyError::AclConflict(format!("a role named {:?} already exists", role.name)));
        }
        self.check_links(&role.grants, &[])?;
        let old_index = self.acl.roles.get(&role.id).map(|r| r.create_index);
        let revision = self.acl_changed(effects);
        let mut stored = role.clone();
        stored.create_index = old_index.unwrap_or(revision);
        stored.modify_index = revision;
        self.acl.roles.insert(stored.id.clone(), Arc::new(stored));
        Ok(self.applied())
    }

    pub(super) fn acl_delete_role(&mut self, id: &str, effects: &mut Vec<Effect>) -> Result<Applied, ApplyError> {
        self.acl.roles.remove(id).ok_or_else(|| ApplyError::AclNotFound(format!("role {id:?}")))?;
        self.acl_changed(effects);
        Ok(self.applied())
    }

    pub(super) fn acl_set_auth_method(
        &mut self,
        method: &AuthMethod,
        effects: &mut Vec<Effect>,
    ) -> Result<Applied, ApplyError> {
        if method.name.is_empty() {
            return Err(invalid("auth method", "Name is required"));
        }
        if method.method_type != "jwt" {
            return Err(invalid("auth method", format!("unknown Type {:?} (only \"jwt\")", method.method_type)));
        }
        if !matches!(method.token_locality.as_str(), "local" | "global") {
            return Err(invalid("auth method", "TokenLocality is \"local\" or \"global\""));
        }
        if method.config.validation_pub_keys.is_empty() {
            return Err(invalid("auth method", "JWTValidationPubKeys is required"));
        }
        let old_index = self.acl.auth_methods.get(&method.name).map(|m| m.create_index);
        let revision = self.acl_changed(effects);
        let mut stored = method.clone();
        stored.create_index = old_index.unwrap_or(revision);
        stored.modify_index = revision;
        self.acl.auth_methods.insert(stored.name.clone(), Arc::new(stored));
        Ok(self.applied())
    }

    /// Deletes the method, its binding rules and every token it issued (in one revision).
    pub(super) fn acl_delete_auth_method(
        &mut self,
        name: &str,
        effects: &mut Vec<Effect>,
    ) -> Result<Applied, ApplyError> {
        self.acl.auth_methods.remove(name).ok_or_else(|| ApplyError::AclNotFound(format!("auth method {name:?}")))?;
        self.acl.binding_rules.retain(|_, rule| rule.auth_method != name);
        let issued: Vec<String> = self
            .acl
            .tokens
            .values()
            .filter(|t| t.auth_method.as_deref() == Some(name))
            .map(|t| t.accessor.clone())
            .collect();
        for accessor in issued {
            if let Some(token) = self.acl.tokens.remove(&accessor) {
                self.acl.secrets.remove(&token.secret);
            }
        }
        self.acl_changed(effects);
        Ok(self.applied())
    }

    pub(super) fn acl_set_binding_rule(
        &mut self,
        rule: &BindingRule,
        effects: &mut Vec<Effect>,
    ) -> Result<Applied, ApplyError> {
        if rule.id.is_empty() {
            return Err(invalid("binding rule", "ID is required"));
        }
        if rule.bind_name.is_empty() {
            return Err(invalid("binding rule", "BindName is required"));
        }
        match (rule.bind_type, &rule.bind_vars) {
            (BindType::TemplatedPolicy, _) if !TEMPLATED_POLICIES.contains(&rule.bind_name.as_str()) => {
                return Err(invalid("binding rule", format!("unknown templated policy {:?}", rule.bind_name)));
            }
            (BindType::TemplatedPolicy, None) if rule.bind_name != "builtin/dns" => {
                return Err(invalid("binding rule", format!("{} needs BindVars.Name", rule.bind_name)));
            }
            (BindType::TemplatedPolicy, _) => {}
            (_, Some(_)) => return Err(invalid("binding rule", "BindVars is for the templated-policy BindType only")),
            (_, None) => {}
        }
        if !self.acl.auth_methods.contains_key(&rule.auth_method) {
            return Err(ApplyError::AclNotFound(format!("auth method {:?}", rule.auth_method)));
        }
        if let Some(old) = self.acl.binding_rules.get(&rule.id)
            && old.auth_method != rule.auth_method
        {
            return Err(invalid("binding rule", "a binding rule's AuthMethod cannot be changed"));
        }
        let old_index = self.acl.binding_rules.get(&rule.id).map(|r| r.create_index);
        let revision = self.acl_changed(effects);
        let mut stored = rule.clone();
        stored.create_index = old_index.unwrap_or(revision);
        stored.modify_index = revision;
        self.acl.binding_rules.insert(stored.id.clone(), Arc::new(stored));
        Ok(self.applied())
    }

    pub(super) fn acl_delete_binding_rule(
        &mut self,
        id: &str,
        effects: &mut Vec<Effect>,
    ) -> Result<Applied, ApplyError> {
        self.acl.binding_rules.remove(id).ok_or_else(|| ApplyError::AclNotFound(format!("binding rule {id:?}")))?;
        self.acl_changed(effects);
        Ok(self.applied())
    }

    pub(super) fn acl_expire_tokens(&mut self, accessors: &[String], effects: &mut Vec<Effect>) -> Applied {
        let mut removed = false;
        for accessor in accessors {
            if let Some(token) = self.acl.tokens.remove(accessor) {
                self.acl.secrets.remove(&token.secret);
                removed = true;
            }
        }
        if removed {
            self.acl_changed(effects);
        }
        self.applied()
    }
}

/// Whether `authorizer` may run `command`: the permissions each command needs (a KV
/// transaction op by op; a recursive delete or read on every key under its prefix; sessions by
/// their name, whose current value `session_name` looks up). The state machine checks this when
/// it applies an [`Command::Authorized`]; the node may check it first to refuse early.
pub fn authorize(
    authorizer: &Authorizer,
    command: &Command,
    session_name: impl Fn(crate::SessionId) -> String,
) -> Result<(), ApplyError> {
    use Access::{Read, Write};
    let check = |resource, name: &str, access| authorizer.check(resource, name, access);
    match command {
        Command::CreateSession { options, .. } => check(Resource::Session, &options.name, Write)?,
        Command::RevokeSession { session } => check(Resource::Session, &session_name(*session), Write)?,
        Command::Register { spec, .. } | Command::AgentRegister { spec, .. } => {
            check(Resource::Service, spec.service.as_str(), Write)?
        }
        Command::Deregister { service, .. }
        | Command::PutCheck { service, .. }
        | Command::RemoveCheck { service, .. } => check(Resource::Service, service.as_str(), Write)?,
        Command::KvTxn { txn } => {
            if let Some(guard) = &txn.guard {
                check(Resource::Key, &guard.lock, Read)?;
            }
            for compare in &txn.compares {
                check(Resource::Key, &compare.key, Read)?;
            }
            for op in txn.success.iter().chain(&txn.failure) {
                match op {
                    KvOp::Put { key, .. }
                    | KvOp::Set { key, .. }
                    | KvOp::Acquire { key, .. }
                    | KvOp::Release { key, .. }
                    | KvOp::Delete { key, prefix: false } => check(Resource::Key, key, Write)?,
                    KvOp::Delete { key, prefix: true } => authorizer.check_under(Resource::Key, key, Write)?,
                    KvOp::Get { key, prefix: false } => check(Resource::Key, key, Read)?,
                    KvOp::Get { key, prefix: true } => authorizer.check_under(Resource::Key, key, Read)?,
                    KvOp::Assert(compare) => check(Resource::Key, &compare.key, Read)?,
                }
            }
        }
        Command::LockAcquire { lock, .. } | Command::LockRelease { lock, .. } | Command::LockProclaim { lock, .. } => {
            check(Resource::Key, lock, Write)?
        }
        Command::AclBootstrap { .. } => {}
        Command::AclSetToken { .. }
        | Command::AclDeleteToken { .. }
        | Command::AclSetPolicy { .. }
        | Command::AclDeletePolicy { .. }
        | Command::AclSetRole { .. }
        | Command::AclDeleteRole { .. }
        | Command::AclSetAuthMethod { .. }
        | Command::AclDeleteAuthMethod { .. }
        | Command::AclSetBindingRule { .. }
        | Command::AclDeleteBindingRule { .. } => check(Resource::Acl, "", Write)?,
        // The leader's own decisions are never proposed for a token.
        Command::ExpireSessions { .. }
        | Command::UpdateChecks { .. }
        | Command::LiftLockDelays { .. }
        | Command::NameHistory { .. }
        | Command::AclExpireTokens { .. } => check(Resource::Operator, "", Write)?,
        Command::Authorized { .. } => return Err(invalid("command", "an authorized command cannot nest another")),
    }
    Ok(())
}
