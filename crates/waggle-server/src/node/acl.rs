//! ACL use cases: bootstrap, tokens, policies and roles (created, replaced, deleted through the
//! log; read from the read model's copy of the ACL state). Management needs `acl:write`, reads
//! `acl:read`, whatever the default policy; the state machine checks writes again where they
//! apply.

use std::sync::Arc;

use waggle_core::{
    Command,
    acl::{
        ANONYMOUS_ACCESSOR, ANONYMOUS_SECRET, Access, AclState, GLOBAL_MANAGEMENT_ID, Grants, Policy, Resource, Role,
        Rules, Token,
    },
};

use super::{Caller, Node, NodeError};

/// A token to create or replace, as a request gives it (ids and secret may be chosen by the
/// caller; empty ones are drawn at random).
pub(crate) struct TokenRequest {
    pub(crate) accessor: Option<String>,
    pub(crate) secret: Option<String>,
    pub(crate) description: String,
    pub(crate) grants: Grants,
    pub(crate) roles: Vec<String>,
    pub(crate) local: bool,
    pub(crate) expiration_ms: Option<u64>,
}

/// A policy to create or replace.
pub(crate) struct PolicyRequest {
    pub(crate) id: Option<String>,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) rules_text: String,
    pub(crate) datacenters: Vec<String>,
}

/// Whether `text` is shaped like a UUID (Consul takes any such string as an id or secret).
pub(crate) fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Node {
    /// A random version-4 UUID (ids and secrets).
    pub(crate) fn new_uuid(&self) -> String {
        let (a, b) = (self.session_ids.next_id(), self.session_ids.next_id());
        let a = (a & 0xffff_ffff_ffff_0fff) | 0x4000;
        let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        )
    }

    /// The ACL state, for a caller with `acl:read`.
    pub(crate) fn acl_state(&self, caller: &Caller) -> Result<Arc<AclState>, NodeError> {
        caller.check(Resource::Acl, "", Access::Read)?;
        Ok(self.read_model().acl())
    }

    /// The anonymous token as stored, or as it is before anyone wrote it (no policies).
    pub(crate) fn anonymous_token(acl: &AclState) -> Token {
        acl.token(ANONYMOUS_ACCESSOR).map_or_else(
            || Token {
                accessor: ANONYMOUS_ACCESSOR.into(),
                secret: ANONYMOUS_SECRET.into(),
                description: "Anonymous Token".into(),
                grants: Grants::default(),
                roles: Vec::new(),
                local: false,
                expiration_ms: None,
                create_ms: 0,
                auth_method: None,
                create_index: 0,
                modify_index: 0,
            },
            |t| (**t).clone(),
        )
    }

    /// The caller's own token (`token/self`): any valid token may read itself.
    pub(crate) fn own_token(&self, caller: &Caller) -> Result<Option<Arc<Token>>, NodeError> {
        let acl = self.read_model().acl();
        Ok(caller.accessor().and_then(|accessor| match acl.token(accessor) {
            Some(token) => Some(token.clone()),
            None if accessor == ANONYMOUS_ACCESSOR => Some(Arc::new(Self::anonymous_token(&acl))),
            None => None,
        }))
    }

    /// Bootstraps the ACL system: a management token, once, with `secret` (the initial
    /// management token's, or one the caller chose) or one drawn. Answers the token.
    pub(crate) async fn acl_bootstrap(&self, secret: Option<String>, description: &str) -> Result<Token, NodeError> {
        if !self.acl.enabled {
            return Err(NodeError::Invalid("ACL support disabled (start the server with --acl-enabled)".into()));
        }
        let token = Token {
            accessor: self.new_uuid(),
            secret: secret.unwrap_or_else(|| self.new_uuid()),
            description: description.into(),
            grants: Grants { policies: vec![GLOBAL_MANAGEMENT_ID.into()], ..Default::default() },
            roles: Vec::new(),
            local: false,
            expiration_ms: None,
            create_ms: now_ms(),
            auth_method: None,
            create_index: 0,
            modify_index: 0,
        };
        self.consensus.propose(Command::AclBootstrap { token: token.clone() }).await?;
        let acl = self.read_model().acl();
        Ok(acl.token(&token.accessor).map_or(token, |t| (**t).clone()))
    }

    /// Creates (no accessor, or a new one) or replaces a token. Answers the token as stored.
    pub(crate) async fn set_token(&self, caller: &Caller, request: TokenRequest) -> Result<Arc<Token>, NodeError> {
        caller.check(Resource::Acl, "", Access::Write)?;
        for (what, id) in [("AccessorID", &request.accessor), ("SecretID", &request.secret)] {
            if let Some(id) = id
                && !is_uuid(id)
                && id != ANONYMOUS_ACCESSOR
                && id != ANONYMOUS_SECRET
            {
                return Err(NodeError::Invalid(format!("Invalid {what}: {id:?} is not a UUID")));
            }
        }
        let acl = self.read_model().acl();
        let accessor = request.accessor.unwrap_or_else(|| self.new_uuid());
        let existing = acl.token(&accessor).cloned();
        let secret = match (request.secret, &existing) {
            (Some(secret), _) => secret,
            (None, Some(old)) => old.secret.clone(),
            // The anonymous token exists before anyone writes it; its secret is fixed.
            (None, None) if accessor == ANONYMOUS_ACCESSOR => ANONYMOUS_SECRET.to_owned(),
            (None, None) => self.new_uuid(),
        };
        let token = Token {
            accessor: accessor.clone(),
            secret,
            description: request.description,
            grants: request.grants,
            roles: request.roles,
            local: request.local,
            expiration_ms: request.expiration_ms,
            create_ms: existing.as_ref().map_or_else(now_ms, |t| t.create_ms),
            auth_method: existing.as_ref().and_then(|t| t.auth_method.clone()),
            create_index: 0,
            modify_index: 0,
        };
        self.write(caller, Command::AclSetToken { token }).await?;
        self.read_model().acl().token(&accessor).cloned().ok_or_else(|| NodeError::NotFound("token".into()))
    }

    /// Deletes a token.
    pub(crate) async fn delete_token(&self, caller: &Caller, accessor: String) -> Result<(), NodeError> {
        caller.check(Resource::Acl, "", Access::Write)?;
        self.write(caller, Command::AclDeleteToken { accessor }).await?;
        Ok(())
    }

    /// Creates (no id) or replaces a policy; its rules (HCL or JSON) are parsed here and
    /// refused with the line and the problem. Answers the policy as stored.
    pub(crate) async fn set_policy(&self, caller: &Caller, request: PolicyRequest) -> Result<Arc<Policy>, NodeError> {
        caller.check(Resource::Acl, "", Access::Write)?;
        let rules: Rules = crate::acl_rules::parse_rules(&request.rules_text)
            .map_err(|e| NodeError::Invalid(format!("Invalid rules: {e}")))?;
        let id = request.id.unwrap_or_else(|| self.new_uuid());
        let policy = Policy {
            id: id.clone(),
            name: request.name,
            description: request.description,
            rules_text: request.rules_text,
            rules,
            datacenters: request.datacenters,
            create_index: 0,
            modify_index: 0,
        };
        self.write(caller, Command::AclSetPolicy { policy }).await?;
        self.read_model().acl().policies().get(&id).cloned().ok_or_else(|| NodeError::NotFound("policy".into()))
    }

    /// Deletes a policy.
    pub(crate) async fn delete_policy(&self, caller: &Caller, id: String) -> Result<(), NodeError> {
        caller.check(Resource::Acl, "", Access::Write)?;
        self.write(caller, Command::AclDeletePolicy { id }).await?;
        Ok(())
    }

    /// Creates (no id) or replaces a role. Answers the role as stored.
    pub(crate) async fn set_role(&self, caller: &Caller, mut role: Role) -> Result<Arc<Role>, NodeError> {
        caller.check(Resource::Acl, "", Access::Write)?;
        if role.id.is_empty() {
            role.id = self.new_uuid();
        }
        let id = role.id.clone();
        self.write(caller, Command::AclSetRole { role }).await?;
        self.read_model().acl().roles().get(&id).cloned().ok_or_else(|| NodeError::NotFound("role".into()))
    }

    /// Deletes a role.
    pub(crate) async fn delete_role(&self, caller: &Caller, id: String) -> Result<(), NodeError> {
        caller.check(Resource::Acl, "", Access::Write)?;
        self.write(caller, Command::AclDeleteRole { id }).await?;
        Ok(())
    }
}
