//! Waggle's node runtime.
//!
//! A [`Server`] opens the data dir, starts openraft (a one-member cluster by default) with the
//! registry as its state machine, and serves the gRPC API, the HTTP endpoint (the Consul API and
//! the node's own endpoints) and DNS.
//!
//! Layers, top down (each imports only from those below it):
//! - front-ends: `grpc/`, `consul/` (mounted by `http.rs`), `dns/` — parse, call the node,
//!   render; none imports another;
//! - `node/` — the use cases every front-end shares, and `NodeError`;
//! - `leader/` — the leader's duties that are not Raft (expiry, checks, forwarded keepalives);
//! - `consensus/` — openraft: log, snapshots, state machine adapter, membership, peers;
//! - `state/` — what the state machine feeds: read model, session clock, check table.
//!
//! Leaves any layer may use: `acl_rules` (ACL rules in HCL or JSON), `filter` (Consul's filter
//! language: `?filter=` in `consul/`, binding-rule selectors in `node/`), `jwt` (the bearer
//! tokens of auth methods, verified).
//!
//! # Architecture invariant
//!
//! This crate owns every side effect of a node: storage, clocks, sockets, tasks. It knows
//! nothing of the client SDK. openraft types never leave the `consensus` module.
//!
//! # API boundary
//!
//! [`ServerConfig`] in, [`Server`] out (its bound addresses and `shutdown`).

#![warn(missing_docs)]

mod acl_rules;
mod config;
mod consensus;
mod consul;
mod dns;
mod error;
mod filter;
mod grpc;
mod http;
mod ids;
mod jwt;
mod leader;
mod metrics;
mod node;
mod state;

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use waggle_core::Revision;

pub use config::{
    AclConfig, DEFAULT_DATA_DIR, DEFAULT_DNS_ADDR, DEFAULT_GRPC_ADDR, DEFAULT_HTTP_ADDR, RaftConfig, ServerConfig,
};
pub use consensus::NodeStatus;
pub use error::ServerError;

use crate::{
    consensus::{Consensus, Storage},
    leader::{Leader, LeaderSlot},
    node::Node,
    state::{LocalState, ReadLimits, ReadModel},
};

/// What [`restore_snapshot`] restored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoreSummary {
    /// The registry's revision in the backup; the restored node continues from it.
    pub revision: u64,
    /// Services in the backup.
    pub services: usize,
    /// Instances in the backup.
    pub instances: usize,
    /// Sessions in the backup. Each gets a full TTL of grace when the node starts, so clients
    /// that still run can keep them alive.
    pub sessions: usize,
}

/// Restores a backup (`waggle snapshot save`) into `config.data_dir`, which must not hold a
/// data dir yet, as the state of a new cluster: a single node, or the members of
/// `config.initial_cluster` (restore every member from the same file, as with etcd). Start
/// the node afterwards with the same configuration.
pub fn restore_snapshot(file: &std::path::Path, config: &ServerConfig) -> Result<RestoreSummary, ServerError> {
    restore_snapshot_with(file, config, RESTORE_REVISION_BUMP)
}

/// How far `restore_snapshot` moves the revision ahead of the backup's: fencing tokens are
/// revisions, and the old cluster may have gone on after the backup was taken.
pub use consensus::RESTORE_REVISION_BUMP;

/// [`restore_snapshot`], moving the revision `bump` ahead of the backup's (give every member
/// of a new cluster the same value; at least the number of writes the old cluster may have
/// made since the backup).
pub fn restore_snapshot_with(
    file: &std::path::Path,
    config: &ServerConfig,
    bump: u64,
) -> Result<RestoreSummary, ServerError> {
    config.validate()?;
    if config.join {
        return Err(ServerError::Config("a restored node starts a new cluster: it cannot --join one".into()));
    }
    let members: std::collections::BTreeMap<u64, String> = if config.initial_cluster.is_empty() {
        std::collections::BTreeMap::from([(config.node_id, config.grpc_addr.to_string())])
    } else {
        config.initial_cluster.iter().map(|(id, addr)| (*id, addr.to_string())).collect()
    };
    let summary = consensus::restore(file, &config.data_dir, config.node_id, &members, &identity(config), bump)?;
    Ok(RestoreSummary {
        revision: summary.revision,
        services: summary.services,
        instances: summary.instances,
        sessions: summary.sessions,
    })
}

/// What the data dir records about the configuration it was created with.
fn identity(config: &ServerConfig) -> String {
    if config.join {
        "join".to_owned()
    } else {
        config.initial_cluster.keys().map(u64::to_string).collect::<Vec<_>>().join(",")
    }
}

/// Creates the management token `--acl-initial-management-token` names, on the first start of
/// a cluster: whichever member leads proposes the bootstrap until the ACL system is bootstrapped
/// (by this, by an earlier start, or by `acl bootstrap`). The secret is never logged.
async fn create_initial_management_token(node: Arc<Node>, secret: String, shutdown: CancellationToken) {
    while node.read_model().acl().bootstrapped().is_none() {
        if node.is_leader() {
            match node.acl_bootstrap(Some(secret.clone()), "Initial Management Token").await {
                Ok(_) => tracing::info!("created the initial management token"),
                Err(node::NodeError::PermissionDenied(_)) => return,
                Err(e) => tracing::debug!("creating the initial management token: {e}"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// A running node.
pub struct Server {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    dns_addr: Option<SocketAddr>,
    data_dir: PathBuf,
    consensus: Arc<Consensus>,
    read_model: Arc<ReadModel>,
    storage: Arc<Storage>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })
}

impl Server {
    /// Starts a node and returns once it leads and its listeners accept connections.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        config.validate()?;
        let grpc_listener = bind(config.grpc_addr).await?;
        let http_listener = bind(config.http_addr).await?;
        let grpc_addr =
            grpc_listener.local_addr().map_err(|source| ServerError::Bind { addr: config.grpc_addr, source })?;
        let http_addr =
            http_listener.local_addr().map_err(|source| ServerError::Bind { addr: config.http_addr, source })?;
        let mut config = config;
        config.grpc_addr = grpc_addr;
        config.http_addr = http_addr;

        let storage = Arc::new(Storage::open(&config.data_dir)?);
        storage.check_identity(config.node_id, &identity(&config))?;
        let state = Arc::new(LocalState::new(ReadLimits {
            buffer: config.watch_buffer,
            history: config.watch_history,
            kv_quota: config.kv_quota_bytes,
        }));
        let read_model = state.read_model.clone();
        // The leader's peer service answers once the leader's duties exist, which need consensus.
        let leader_slot = LeaderSlot::default();
        let consensus = Arc::new(
            Consensus::start(&config, storage.clone(), state.clone(), leader::peer_routes(leader_slot.clone())).await?,
        );
        tracing::info!(data = %storage.path().display(), revision = %read_model.revision(), "registry ready");
        let leader = Arc::new(Leader::new(consensus.clone(), &state));
        let _ = leader_slot.set(leader.clone());

        let shutdown = CancellationToken::new();
        let mut tasks = leader.spawn(config.session_tick, config.seed, &shutdown);
        let node =
            Arc::new(Node::new(consensus.clone(), leader, state, config.seed, config.acl.clone(), shutdown.clone()));

        if let Some(secret) = config.acl.initial_management_token.clone().filter(|_| config.acl.enabled) {
            tasks.push(tokio::spawn(create_initial_management_token(node.clone(), secret, shutdown.clone())));
        }
        let requests = Arc::new(metrics::RequestCounts::default());
        tasks.push(grpc::serve(grpc_listener, node.clone(), requests.clone(), shutdown.clone()).await);

        let mut dns_addr = None;
        if let Some(addr) = config.dns_addr {
            let settings = dns::DnsSettings {
                domains: config.dns_domains.iter().map(|d| d.trim_end_matches('.').to_ascii_lowercase()).collect(),
                ttl: config.dns_ttl,
                allow_warning: config.dns_allow_warning,
                node: format!("waggle-{}", config.node_id),
                node_ip: if http_addr.ip().is_unspecified() {
                    std::net::IpAddr::from([127, 0, 0, 1])
                } else {
                    http_addr.ip()
                },
            };
            let (bound, task) = dns::serve(addr, dns::Handler::new(&node, settings), shutdown.clone())
                .await
                .map_err(|source| ServerError::Bind { addr, source })?;
            dns_addr = Some(bound);
            tasks.push(task);
        }

        let http = axum::serve(http_listener, http::router(node, requests, http_addr))
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = http.await {
                tracing::error!("HTTP server failed: {e}");
            }
        }));

        Ok(Server {
            grpc_addr,
            http_addr,
            dns_addr,
            data_dir: config.data_dir,
            consensus,
            read_model,
            storage,
            shutdown,
            tasks,
        })
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound DNS address (UDP and TCP), unless DNS is off.
    pub fn dns_addr(&self) -> Option<SocketAddr> {
        self.dns_addr
    }

    /// The data dir.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// This node's Raft progress.
    pub fn status(&self) -> NodeStatus {
        self.consensus.status()
    }

    /// The registry's current revision.
    pub fn revision(&self) -> Revision {
        self.read_model.revision()
    }

    /// Resolves if the consensus engine stops on its own (a fatal storage error), or when this
    /// member is removed from its cluster: the node can no longer accept writes and should
    /// exit.
    pub async fn failed(&self) -> String {
        self.consensus.failed().await
    }

    /// Stops serving, ends open streams and stops Raft. Connections that do not close within
    /// five seconds (for example a client that stopped reading) are dropped.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for mut task in self.tasks {
            if tokio::time::timeout(std::time::Duration::from_secs(5), &mut task).await.is_err() {
                task.abort();
            }
        }
        self.consensus.shutdown().await;
        // The data dir is released once the Raft tasks and the log writer thread have let go of
        // it; wait for that, so a restart in the same process can open it again.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while Arc::strong_count(&self.storage) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}
