//! Access control, Consul's model: tokens resolve through their policies, roles and identities
//! to an [`Authorizer`] that allows or denies each access to a named object ([`rules`]). The
//! ACL objects live in the replicated state ([`AclState`], in the [`crate::Registry`]) and every
//! write that carries a token is checked against it when it is applied
//! ([`crate::Command::Authorized`]). Auth methods ([`AuthMethod`]) and their binding rules
//! ([`BindingRule`]) say which tokens `login` creates; verifying a JWT and evaluating selectors
//! is the node's work, the state machine only stores them.

mod model;
pub mod rules;
mod state;

pub use model::{
    ANONYMOUS_ACCESSOR, ANONYMOUS_SECRET, AuthMethod, BindType, BindingRule, GLOBAL_MANAGEMENT_ID,
    GLOBAL_MANAGEMENT_NAME, Grants, JwtConfig, NodeIdentity, Policy, Role, ServiceIdentity, TEMPLATED_POLICIES,
    TemplatedPolicy, Token,
};
pub use rules::{Access, Level, Resource, Rules};
pub use state::{AclState, Authorizer, DefaultPolicy, Denied};
