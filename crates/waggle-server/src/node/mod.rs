//! The node's operations: one [`Node`] handle owning consensus, the local state (read model,
//! session clock, check table) and the leader's duties, with the use cases every front-end
//! shares — sessions (`sessions.rs`), registration and checks (`registry.rs`), KV transactions
//! and reads (`kv.rs`), locks (`locks.rs`), ACLs (`acl.rs`; auth methods, binding rules, login
//! and logout in `acl_auth.rs`) — and the cluster's administration here. Every
//! failure is a [`NodeError`].
//!
//! # Architecture invariant
//!
//! Front-ends (gRPC, Consul HTTP, DNS) parse a request, call `Node`, and render the answer; they
//! never propose to consensus themselves, and no use case lives in a front-end. This is the one
//! place a write passes through on its way to the log, where the ACL check will live. `Node`
//! knows no protocol: no tonic or axum types in its signatures.

mod acl;
mod acl_auth;
mod caller;
mod error;
mod kv;
mod locks;
mod registry;
mod sessions;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use waggle_core::{
    Applied, Command,
    acl::{Access, Resource},
};

pub(crate) use crate::consensus::MembershipChange;
pub(crate) use acl::{PolicyRequest, TokenRequest, is_uuid};
pub(crate) use acl_auth::LoginRequest;
pub(crate) use caller::Caller;
pub(crate) use error::NodeError;
pub(crate) use kv::KvRange;
pub(crate) use locks::Acquire;

use crate::{
    consensus::{Consensus, MemberStatus, NodeStatus},
    ids::RandomIds,
    leader::Leader,
    state::{CheckTable, LocalState, ReadModel},
};

/// The only datacenter (Consul's API and DNS name it).
pub(crate) const DATACENTER: &str = "dc1";

/// One member of the cluster and the URL its clients reach it at (if it could be asked).
pub(crate) struct Member {
    pub(crate) status: MemberStatus,
    pub(crate) client_url: Option<String>,
}

/// A running node's operations (cheap to share: hold it in an `Arc`).
pub(crate) struct Node {
    consensus: Arc<Consensus>,
    leader: Arc<Leader>,
    state: Arc<LocalState>,
    /// Draws the ids of new sessions.
    session_ids: RandomIds,
    /// Cancelled when the server stops: open streams end.
    shutdown: CancellationToken,
    /// Access control settings.
    acl: crate::config::AclConfig,
    /// Tokens resolved at the current ACL revision.
    tokens: caller::TokenCache,
    /// The agent's tokens (`/v1/agent/token/*`), in memory only, as Consul without token
    /// persistence.
    agent_tokens: std::sync::Mutex<AgentTokens>,
}

/// The tokens `/v1/agent/token/*` set on this member.
#[derive(Debug, Default)]
pub(crate) struct AgentTokens {
    /// Used for requests that carry no token (instead of the anonymous token).
    pub(crate) default: Option<String>,
    /// The others Consul has (`agent`, `agent_recovery`, `replication`,
    /// `config_file_service_registration`): kept, not used by Waggle's agent.
    pub(crate) others: std::collections::BTreeMap<String, String>,
}

impl Node {
    pub(crate) fn new(
        consensus: Arc<Consensus>,
        leader: Arc<Leader>,
        state: Arc<LocalState>,
        seed: Option<u64>,
        acl: crate::config::AclConfig,
        shutdown: CancellationToken,
    ) -> Self {
        let session_ids = RandomIds::new(seed);
        Node {
            consensus,
            leader,
            state,
            session_ids,
            shutdown,
            acl,
            tokens: Default::default(),
            agent_tokens: Default::default(),
        }
    }

    /// Proposes a command for `caller` and waits until it is applied here: the one way down to
    /// the log. With ACLs on, the caller's permission is checked here and again where the
    /// command applies.
    async fn write(&self, caller: &Caller, command: Command) -> Result<Applied, NodeError> {
        self.precheck(caller, &command)?;
        self.write_prechecked(caller, command).await
    }

    /// [`Node::write`] for a command already prechecked for `caller` here (the state machine
    /// still checks it where it applies).
    async fn write_prechecked(&self, caller: &Caller, command: Command) -> Result<Applied, NodeError> {
        let command = self.authorized(caller, command);
        Ok(self.consensus.propose(command).await?)
    }

    /// The applied state every read is answered from.
    pub(crate) fn read_model(&self) -> &Arc<ReadModel> {
        &self.state.read_model
    }

    /// Every check, with who owns it.
    pub(crate) fn checks(&self) -> &CheckTable {
        &self.state.checks
    }

    /// Whether `/metrics` is served without a token (`--metrics-public`, or ACLs off).
    pub(crate) fn metrics_public(&self) -> bool {
        !self.acl.enabled || self.acl.metrics_public
    }

    /// Sessions whose deadlines this member tracks.
    pub(crate) fn tracked_sessions(&self) -> usize {
        self.state.clock.len()
    }

    /// Cancelled when the server stops (streams end on it).
    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Waits until a read here is linearizable (see `Consensus::read_barrier`).
    pub(crate) async fn read_barrier(&self) -> Result<(), NodeError> {
        Ok(self.consensus.read_barrier().await?)
    }

    /// This node's id.
    pub(crate) fn node_id(&self) -> u64 {
        self.consensus.node_id()
    }

    /// A reading of this node's Raft progress.
    pub(crate) fn status(&self) -> NodeStatus {
        self.consensus.status()
    }

    /// Whether this node leads (no quorum round trip).
    pub(crate) fn is_leader(&self) -> bool {
        self.consensus.is_leader()
    }

    /// Whether this node knows a leader.
    pub(crate) fn leader_known(&self) -> bool {
        self.consensus.leader_known()
    }

    /// Whether the Raft core runs.
    pub(crate) fn running(&self) -> bool {
        self.consensus.running()
    }

    /// Whether this node is a member of a cluster (it can pass requests on to a leader).
    pub(crate) fn clustered(&self) -> bool {
        self.consensus.clustered()
    }

    /// The members as this node sees them: (leader, term, members).
    pub(crate) fn members(&self) -> (Option<u64>, u64, Vec<MemberStatus>) {
        self.consensus.members()
    }

    /// The members with the URLs clients reach them at, asked of every member at once (each
    /// at most 500 ms, once per member): (leader, term, members).
    pub(crate) async fn member_list(&self) -> (Option<u64>, u64, Vec<Member>) {
        let (leader, term, statuses) = self.consensus.members();
        let urls = futures_util::future::join_all(
            statuses.iter().map(|m| self.consensus.client_url_of(m.id, &m.peer_address)),
        )
        .await;
        let members =
            statuses.into_iter().zip(urls).map(|(status, client_url)| Member { status, client_url }).collect();
        (leader, term, members)
    }

    /// Adds or removes a member (on the leader, wherever it was asked); needs `operator:write`.
    pub(crate) async fn change_membership(&self, caller: &Caller, change: MembershipChange) -> Result<(), NodeError> {
        caller.check(Resource::Operator, "", Access::Write)?;
        Ok(self.consensus.change_membership(change).await?)
    }

    /// Sets one of the agent's tokens (`default`, `agent`, `agent_recovery`, `replication`,
    /// `config_file_service_registration`); needs `acl:write`.
    pub(crate) fn set_agent_token(&self, caller: &Caller, kind: &str, token: String) -> Result<(), NodeError> {
        caller.check(Resource::Acl, "", Access::Write)?;
        let mut tokens = self.agent_tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match kind {
            "default" => tokens.default = Some(token).filter(|t| !t.is_empty()),
            "agent" | "agent_recovery" | "replication" | "config_file_service_registration" => {
                tokens.others.insert(kind.to_owned(), token);
            }
            _ => return Err(NodeError::NotFound(format!("Token {kind:?} is unknown"))),
        }
        Ok(())
    }

    /// A backup file of everything this node has applied; needs `acl:write`, since it holds
    /// every token's secret.
    pub(crate) async fn backup(&self, caller: &Caller) -> Result<Vec<u8>, NodeError> {
        caller.check(Resource::Acl, "", Access::Write)?;
        Ok(self.consensus.backup().await?)
    }
}
