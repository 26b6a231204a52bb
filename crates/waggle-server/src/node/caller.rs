//! Who makes a request: the token it carries, resolved against the ACL state of the read model
//! (a revoke takes effect on this member as soon as it applies it: resolutions are cached only
//! for one ACL revision). Writes carry the token's accessor into the log, where the state
//! machine checks them again (`Command::Authorized`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use waggle_core::{
    Command, Revision, SessionId,
    acl::{ANONYMOUS_ACCESSOR, Access, Authorizer, DefaultPolicy, Resource},
};

use super::{Node, NodeError};

/// A request's identity.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// `None` when ACLs are off: everything is allowed.
    token: Option<Arc<Authorizer>>,
}

impl Caller {
    /// The caller of requests the server makes itself, and of every request with ACLs off.
    pub(crate) fn anyone() -> Self {
        Caller { token: None }
    }

    /// Whether it may `access` the object `name` of `resource`.
    pub(crate) fn may(&self, resource: Resource, name: &str, access: Access) -> bool {
        self.token.as_ref().is_none_or(|a| a.allowed(resource, name, access))
    }

    /// [`Caller::may`], or the permission error Consul would answer.
    pub(crate) fn check(&self, resource: Resource, name: &str, access: Access) -> Result<(), NodeError> {
        match &self.token {
            None => Ok(()),
            Some(authorizer) => {
                authorizer.check(resource, name, access).map_err(|e| NodeError::PermissionDenied(e.to_string()))
            }
        }
    }

    /// Its token's accessor (`None` with ACLs off).
    pub(crate) fn accessor(&self) -> Option<&str> {
        self.token.as_deref().map(Authorizer::accessor)
    }

    /// Wraps `command` so the state machine checks it for this caller where it applies it.
    fn authorize(&self, command: Command, default: DefaultPolicy) -> Command {
        match &self.token {
            None => command,
            Some(authorizer) => {
                Command::Authorized { accessor: authorizer.accessor().to_owned(), default, command: Box::new(command) }
            }
        }
    }
}

/// Resolved tokens by secret, valid for one ACL revision.
#[derive(Default)]
pub(super) struct TokenCache(Mutex<(Revision, HashMap<String, Resolved>)>);

/// A resolved token: what it may do, and when it expires (ms since the Unix epoch).
type Resolved = (Arc<Authorizer>, Option<u64>);

/// Most tokens kept resolved at once (the cache starts over past it).
const MAX_CACHED_TOKENS: usize = 4096;

/// Compares two secrets in time that depends only on their lengths.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Milliseconds since the Unix epoch (token expiry is checked here, outside the state machine).
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Node {
    /// Resolves the secret a request carries (`None` or empty: the anonymous token). With ACLs
    /// off every request is [`Caller::anyone`]. An unknown or expired secret is refused with
    /// Consul's "ACL not found"; the failure is logged with nothing of the secret.
    pub(crate) fn caller(&self, secret: Option<&str>) -> Result<Caller, NodeError> {
        if !self.acl.enabled {
            return Ok(Caller::anyone());
        }
        // Resolutions hold until the ACL state changes (its signal's revision moves).
        let generation = self.read_model().acl_generation();
        // A request without a token uses the agent's default token if one was set
        // (`/v1/agent/token/default`), else the anonymous token, cached under the empty secret.
        let default_token;
        let secret = match secret.filter(|s| !s.is_empty()) {
            Some(secret) => secret,
            None => {
                default_token = self.agent_tokens.lock().unwrap_or_else(PoisonError::into_inner).default.clone();
                default_token.as_deref().unwrap_or_default()
            }
        };
        {
            let cache = self.tokens.0.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.0 == generation
                && let Some((found, expiration_ms)) = cache.1.get(secret)
                && expiration_ms.is_none_or(|at| at > now_ms())
            {
                return Ok(Caller { token: Some(found.clone()) });
            }
        }
        let acl = self.read_model().acl();
        let default = self.acl.default_policy;
        if secret.is_empty() {
            let anonymous = acl
                .authorizer(ANONYMOUS_ACCESSOR, default)
                .ok_or_else(|| NodeError::PermissionDenied("ACL not found".into()))?;
            return Ok(self.remember(generation, String::new(), Arc::new(anonymous), None));
        }
        let token = acl
            .token_by_secret(secret)
            .filter(|t| same_secret(&t.secret, secret))
            .filter(|t| t.expiration_ms.is_none_or(|at| at > now_ms()));
        let Some(token) = token else {
            tracing::info!("a request carried a token that is unknown or expired");
            return Err(NodeError::PermissionDenied("ACL not found".into()));
        };
        let authorizer = Arc::new(
            acl.authorizer(&token.accessor, default)
                .ok_or_else(|| NodeError::PermissionDenied("ACL not found".into()))?,
        );
        Ok(self.remember(generation, secret.to_owned(), authorizer, token.expiration_ms))
    }

    /// [`Node::caller`], and for a secret this member does not know, once more after a read
    /// barrier: a token created through another member a moment ago works here at once.
    pub(crate) async fn resolve(&self, secret: Option<&str>) -> Result<Caller, NodeError> {
        match self.caller(secret) {
            Err(NodeError::PermissionDenied(_)) if secret.is_some_and(|s| !s.is_empty()) => {
                self.read_barrier().await?;
                self.caller(secret)
            }
            answer => answer,
        }
    }

    /// Whether a caller resolved earlier still holds: its token was not deleted or expired
    /// since (a blocking query or a watch ends with "ACL not found" when it does not).
    pub(crate) fn revalidate(&self, caller: &Caller) -> Result<(), NodeError> {
        let Some(accessor) = caller.accessor().filter(|a| *a != ANONYMOUS_ACCESSOR) else { return Ok(()) };
        let acl = self.read_model().acl();
        match acl.token(accessor) {
            Some(token) if token.expiration_ms.is_none_or(|at| at > now_ms()) => Ok(()),
            _ => Err(NodeError::PermissionDenied("ACL not found".into())),
        }
    }

    /// Caches a resolution for the ACL state of `generation`.
    fn remember(
        &self,
        generation: Revision,
        secret: String,
        authorizer: Arc<Authorizer>,
        expiration_ms: Option<u64>,
    ) -> Caller {
        let mut cache = self.tokens.0.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.0 != generation || cache.1.len() >= MAX_CACHED_TOKENS {
            *cache = (generation, HashMap::new());
        }
        cache.1.insert(secret, (authorizer.clone(), expiration_ms));
        Caller { token: Some(authorizer) }
    }

    /// Checks here whether `caller` may run `command` (what the state machine checks again
    /// where it applies).
    pub(super) fn precheck(&self, caller: &Caller, command: &Command) -> Result<(), NodeError> {
        if let Some(authorizer) = &caller.token {
            // Only commands that name a session by id look it up.
            let session_name = |id: SessionId| {
                let (_, sessions) = self.read_model().sessions();
                sessions.get(&id).map(|s| s.options.name.clone()).unwrap_or_default()
            };
            waggle_core::authorize(authorizer, command, session_name)
                .map_err(|e| NodeError::PermissionDenied(e.to_string()))?;
        }
        Ok(())
    }

    /// Wraps a write so the state machine checks it for `caller` against the ACL state where it
    /// applies (after [`Node::precheck`] refused it early here if it had to).
    pub(super) fn authorized(&self, caller: &Caller, command: Command) -> Command {
        caller.authorize(command, self.acl.default_policy)
    }
}
