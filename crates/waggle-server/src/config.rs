//! Server configuration: a plain struct with documented defaults and a `validate()`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::error::ServerError;

/// Default gRPC address (Consul's gRPC port).
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:8502";
/// Default HTTP address (Consul's HTTP port).
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8500";
/// Default DNS address (Consul's DNS port), UDP and TCP.
pub const DEFAULT_DNS_ADDR: &str = "127.0.0.1:8600";
/// Default data dir.
pub const DEFAULT_DATA_DIR: &str = "./waggle-data";

/// How one node runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Where the log and snapshots live (default `./waggle-data`).
    pub data_dir: PathBuf,
    /// gRPC listen address (default 127.0.0.1:8502; port 0 picks a free port).
    pub grpc_addr: SocketAddr,
    /// HTTP listen address (default 127.0.0.1:8500; port 0 picks a free port).
    pub http_addr: SocketAddr,
    /// DNS listen address, UDP and TCP on the same port (default 127.0.0.1:8600; port 0 picks
    /// a free port; `None` turns DNS off).
    pub dns_addr: Option<SocketAddr>,
    /// Zones the DNS interface answers for (default `waggle` and `consul`); other names are
    /// refused.
    pub dns_domains: Vec<String>,
    /// TTL of DNS answers, in seconds (default 0: no caching, as Consul).
    pub dns_ttl: u32,
    /// DNS answers warning instances too (default: passing only).
    pub dns_allow_warning: bool,
    /// This node's Raft id (default 1).
    pub node_id: u64,
    /// How often the leader looks for expired sessions (default 100 ms).
    pub session_tick: Duration,
    /// Batches a watcher may fall behind before it is resynced with a snapshot (default 256).
    pub watch_buffer: usize,
    /// Batches kept per watched topic so a reconnecting watcher can resume (default 64).
    pub watch_history: usize,
    /// Most bytes of keys and values the KV store may hold (default 1 GiB; every member keeps
    /// the whole store in memory). Writes that would go past it are refused; deletes never.
    pub kv_quota_bytes: u64,
    /// Raft timing and log compaction.
    pub raft: RaftConfig,
    /// Access control (off by default).
    pub acl: AclConfig,
    /// Seed for the session-id generator (default: from the OS). Set it in tests.
    pub seed: Option<u64>,
    /// Where this node listens for Raft traffic from its peers (cluster mode only).
    pub peer_addr: Option<SocketAddr>,
    /// The cluster's members at bootstrap, node id → peer address, this node included
    /// (etcd-style static bootstrap). Empty: a single-node cluster (the default).
    pub initial_cluster: std::collections::BTreeMap<u64, SocketAddr>,
    /// Start as a new member of a running cluster (etcd's `--initial-cluster-state existing`):
    /// no bootstrap; the node serves its peer address and waits, without a time limit, until
    /// the cluster adds it with `waggle members add`.
    pub join: bool,
}

/// Access control settings (`--acl-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AclConfig {
    /// Check every request's token (`--acl-enabled`). Off: everything is allowed, as before.
    pub enabled: bool,
    /// What applies where no rule of the token does (`--acl-default-policy`, default deny).
    /// ACL management always needs `acl:read` / `acl:write`, whatever the default.
    pub default_policy: waggle_core::acl::DefaultPolicy,
    /// The secret of a management token created on first start (`--acl-initial-management-token`),
    /// instead of `acl bootstrap`. Never logged.
    pub initial_management_token: Option<String>,
    /// Serve `/metrics` to anyone (`--metrics-public`); otherwise it needs `agent:read`.
    pub metrics_public: bool,
}

impl Default for AclConfig {
    fn default() -> Self {
        AclConfig {
            enabled: false,
            default_policy: waggle_core::acl::DefaultPolicy::Deny,
            initial_management_token: None,
            metrics_public: false,
        }
    }
}

/// Raft timing and log compaction settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RaftConfig {
    /// Leader heartbeat (default 40 ms). openraft ticks every 1.5 heartbeats.
    pub heartbeat_interval: Duration,
    /// Minimum election timeout; the maximum is twice this (default 100 ms). A follower that
    /// hears from its leader keeps it for a lease of the maximum, so it stands for election
    /// between 3× and 4× this after the last heartbeat (300–400 ms by default), and it refuses
    /// to vote while that lease runs: a flapping member cannot depose a healthy leader.
    pub election_timeout: Duration,
    /// Build a snapshot after this many log entries (default 10 000).
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot for lagging followers (default 1 000).
    pub logs_kept_after_snapshot: u64,
    /// Purge the log in batches of at least this many entries (default 256).
    pub purge_batch: u64,
    /// How long start-up waits for this node to lead (default 10 s).
    pub startup_timeout: Duration,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_interval: Duration::from_millis(40),
            election_timeout: Duration::from_millis(100),
            snapshot_every: 10_000,
            logs_kept_after_snapshot: 1_000,
            purge_batch: 256,
            startup_timeout: Duration::from_secs(10),
        }
    }
}

impl ServerConfig {
    /// Defaults with the given data dir.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            data_dir: data_dir.into(),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 8502)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8500)),
            dns_addr: Some(SocketAddr::from(([127, 0, 0, 1], 8600))),
            dns_domains: vec!["waggle".into(), "consul".into()],
            dns_ttl: 0,
            dns_allow_warning: false,
            node_id: 1,
            session_tick: Duration::from_millis(100),
            watch_buffer: 256,
            watch_history: 64,
            kv_quota_bytes: 1 << 30,
            raft: RaftConfig::default(),
            acl: AclConfig::default(),
            peer_addr: None,
            initial_cluster: std::collections::BTreeMap::new(),
            join: false,
            seed: None,
        }
    }

    /// Defaults for tests: the data dir given, both listeners on 127.0.0.1 port 0.
    pub fn ephemeral(data_dir: impl Into<PathBuf>) -> Self {
        let mut config = Self::new(data_dir);
        config.grpc_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.http_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.dns_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        config
    }

    /// Whether this node runs as a member of a multi-node cluster.
    pub fn clustered(&self) -> bool {
        self.join || !self.initial_cluster.is_empty()
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ServerError> {
        let err = |m: &str| Err(ServerError::Config(m.to_string()));
        if self.node_id == 0 {
            return err("node_id must be at least 1");
        }
        if self.session_tick.is_zero() || self.session_tick > Duration::from_secs(1) {
            return err("session_tick must be between 1ms and 1s");
        }
        if self.dns_domains.is_empty() {
            return err("the DNS interface needs at least one domain");
        }
        for domain in &self.dns_domains {
            let labels_ok = domain
                .split('.')
                .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
            if !labels_ok || domain.len() > 200 {
                return Err(ServerError::Config(format!("{domain:?} is not a DNS domain (labels of a-z, 0-9, -)")));
            }
        }
        if self.dns_ttl > 86_400 {
            return err("dns_ttl must be at most 86400 s");
        }
        if let Some(secret) = &self.acl.initial_management_token
            && (secret.is_empty() || secret.len() > 128 || secret == waggle_core::acl::ANONYMOUS_SECRET)
        {
            return err("the initial management token must be 1 to 128 characters and not \"anonymous\"");
        }
        if self.watch_buffer == 0 || self.watch_history == 0 {
            return err("watch_buffer and watch_history must be at least 1");
        }
        if self.raft.heartbeat_interval.is_zero() || self.raft.election_timeout < self.raft.heartbeat_interval * 2 {
            return err("election_timeout must be at least twice heartbeat_interval (and both non-zero)");
        }
        if self.raft.snapshot_every == 0 || self.raft.purge_batch == 0 {
            return err("snapshot_every and purge_batch must be at least 1");
        }
        if self.join {
            if !self.initial_cluster.is_empty() {
                return err("a joining node takes its members from the cluster: drop the initial cluster");
            }
            if self.peer_addr.is_none() {
                return err("a joining node needs a peer address");
            }
        }
        if !self.initial_cluster.is_empty() {
            let Some(peer_addr) = self.peer_addr else {
                return err("a clustered node needs a peer address");
            };
            match self.initial_cluster.get(&self.node_id) {
                None => return err("the initial cluster must list this node's id"),
                Some(listed) if listed.port() != 0 && peer_addr.port() != 0 && *listed != peer_addr => {
                    return err("the initial cluster lists this node at another address than its peer address");
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}
