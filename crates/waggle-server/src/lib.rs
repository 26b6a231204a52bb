//! Waggle's node runtime.
//!
//! A [`Server`] opens the data dir, starts openraft (a one-member cluster by default) with the
//! registry as its state machine, and serves the gRPC API and the HTTP endpoint.
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

mod config;
mod consensus;
mod consul;
mod consul_checks;
mod consul_kv;
mod consul_session;
mod dns;
mod error;
mod filter;
mod grpc;
mod health;
mod http;
mod kv;
mod lock;
mod metrics;
mod probe;
mod sessions;
mod watch;

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use waggle_core::Revision;

pub use config::{DEFAULT_DATA_DIR, DEFAULT_DNS_ADDR, DEFAULT_GRPC_ADDR, DEFAULT_HTTP_ADDR, RaftConfig, ServerConfig};
pub use error::ServerError;

use crate::{
    consensus::{Consensus, Storage},
    sessions::SessionClock,
    watch::{HubLimits, WatchHub},
};

/// One member of the cluster, as `ListMembers` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberStatus {
    pub(crate) id: u64,
    pub(crate) peer_address: String,
    pub(crate) role: &'static str,
    pub(crate) log_index: Option<u64>,
    pub(crate) lag: Option<u64>,
}

/// A reading of a node's Raft progress (see [`Server::status`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct NodeStatus {
    /// This node's id.
    pub node_id: u64,
    /// The leader it knows, if any.
    pub leader: Option<u64>,
    /// The current Raft term.
    pub term: u64,
    /// The index of the last log entry.
    pub last_log_index: u64,
    /// The index of the last applied entry.
    pub last_applied: u64,
    /// The index covered by the latest snapshot.
    pub snapshot_index: Option<u64>,
    /// Entries up to this index have been purged from the log.
    pub purged_index: Option<u64>,
}

impl NodeStatus {
    /// How many entries the log holds on disk.
    pub fn log_entries(&self) -> u64 {
        self.last_log_index - self.purged_index.unwrap_or(0)
    }
}

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

/// Names the registry's history once (see `Command::NameHistory`): whichever member leads
/// while it is unnamed proposes a random id. Every member then stamps it on watch messages, so
/// a watcher resumes from its revision on any member of the cluster.
async fn name_history(
    consensus: Arc<Consensus>,
    hub: Arc<WatchHub>,
    ids: grpc::SessionIds,
    shutdown: CancellationToken,
) {
    let mut leading = consensus.leadership();
    while hub.history() == 0 {
        if *leading.borrow_and_update() {
            match consensus.propose(waggle_core::Command::NameHistory { id: ids.next_id() }).await {
                // Named, by this proposal or an earlier one.
                Ok(_) | Err(error::ProposeError::Refused(_)) => continue,
                Err(e) => tracing::debug!("naming the history: {e}"),
            }
        }
        tokio::select! {
            changed = leading.changed() => if changed.is_err() { return },
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
    hub: Arc<WatchHub>,
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
        let hub = Arc::new(WatchHub::new(HubLimits {
            buffer: config.watch_buffer,
            history: config.watch_history,
            kv_quota: config.kv_quota_bytes,
        }));
        let clock = Arc::new(SessionClock::new());
        let health = Arc::new(health::HealthChecks::new());
        let consensus =
            Arc::new(Consensus::start(&config, storage.clone(), hub.clone(), clock.clone(), health.clone()).await?);
        tracing::info!(data = %storage.path().display(), revision = %hub.revision(), "registry ready");

        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        // Grace starts now, when clients can reach us, not when the data dir was opened.
        clock.grant_grace();
        tasks.push(tokio::spawn(sessions::run_expiry(
            clock.clone(),
            consensus.clone(),
            hub.clone(),
            config.session_tick,
            shutdown.clone(),
        )));

        tasks.push(tokio::spawn(health::run_checks(health.clone(), consensus.clone(), shutdown.clone())));

        tasks.push(tokio::spawn(name_history(
            consensus.clone(),
            hub.clone(),
            grpc::SessionIds::new(config.seed.map(|s| s ^ 0x5eed)),
            shutdown.clone(),
        )));

        let clock_for_http = clock.clone();
        let requests = Arc::new(metrics::RequestCounts::default());
        let session_ids = Arc::new(grpc::SessionIds::new(config.seed));
        let service = grpc::RegistryService {
            consensus: consensus.clone(),
            hub: hub.clone(),
            clock,
            session_ids: session_ids.clone(),
            shutdown: shutdown.clone(),
        };
        // Small request/response pairs: never wait for Nagle + delayed ACK (40 ms stalls).
        let incoming = tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
        // The standard gRPC health service, for load balancers, Kubernetes probes and Waggle's
        // own gRPC checks: serving while the node runs.
        let (grpc_health, grpc_health_service) = tonic_health::server::health_reporter();
        grpc_health.set_serving::<waggle_proto::v1::registry_server::RegistryServer<grpc::RegistryService>>().await;
        let grpc = tonic::transport::Server::builder()
            .layer(metrics::CountLayer(requests.clone()))
            .add_service(grpc_health_service)
            .add_service(waggle_proto::v1::kv_server::KvServer::new(kv::KvService {
                consensus: consensus.clone(),
                hub: hub.clone(),
                shutdown: shutdown.clone(),
            }))
            .add_service(waggle_proto::v1::lock_server::LockServer::new(lock::LockService {
                consensus: consensus.clone(),
                hub: hub.clone(),
                shutdown: shutdown.clone(),
            }))
            .add_service(waggle_proto::v1::registry_server::RegistryServer::new(service))
            .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = grpc.await {
                tracing::error!("gRPC server failed: {e}");
            }
        }));

        let state = http::AppState {
            consensus: consensus.clone(),
            hub: hub.clone(),
            clock: clock_for_http,
            health,
            requests,
            http_addr,
            session_ids,
        };
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
            let (bound, task) = dns::serve(addr, dns::Handler::new(hub.clone(), settings), shutdown.clone())
                .await
                .map_err(|source| ServerError::Bind { addr, source })?;
            dns_addr = Some(bound);
            tasks.push(task);
        }

        let http =
            axum::serve(http_listener, http::router(state)).with_graceful_shutdown(shutdown.clone().cancelled_owned());
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
            hub,
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
        self.hub.revision()
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
