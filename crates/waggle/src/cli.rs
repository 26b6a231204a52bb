//! Command-line syntax (clap). Names here are a public interface: scripts depend on them.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

/// Waggle: a service registry and coordination service.
#[derive(Debug, Parser)]
#[command(name = "waggle", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// Server URL for client commands.
    #[arg(long, global = true, env = "WAGGLE_SERVER", default_value = "http://127.0.0.1:8502")]
    pub(crate) server: String,

    /// The ACL token client commands carry (default: `WAGGLE_TOKEN`, else Consul's
    /// `CONSUL_HTTP_TOKEN`, else none).
    #[arg(long, global = true, env = "WAGGLE_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a server node (an embedded single-node cluster with durable storage).
    Server(ServerArgs),
    /// Register an instance and keep it registered until interrupted (SIGINT / SIGTERM).
    Register(RegisterArgs),
    /// Remove one instance.
    Deregister(DeregisterArgs),
    /// List services.
    Services(ServicesArgs),
    /// List a service's instances.
    Instances(InstancesArgs),
    /// Follow a service's changes, one line per change.
    Watch(WatchArgs),
    /// Measure throughput and latency against Waggle, etcd or ZooKeeper.
    Bench(BenchArgs),
    /// The cluster's members.
    #[command(subcommand)]
    Members(MembersCommand),
    /// Backups: save a server's state to a file, restore a file into a fresh data dir.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// The key/value store.
    #[command(subcommand)]
    Kv(KvCommand),
    /// Run a command while holding a lock: waits for the lock, runs COMMAND with
    /// WAGGLE_LOCK_TOKEN (the fencing token) in its environment, kills it if the lock is lost,
    /// and exits with its status.
    Lock(LockArgs),
    /// Campaign in an election: waits until elected, prints `elected NAME term=T`, holds the
    /// leadership until SIGINT / SIGTERM (then resigns, exit 0) or until it is lost (exit 1).
    Elect(ElectArgs),
    /// Access control: bootstrap, tokens, policies, roles (through the HTTP API).
    #[command(subcommand)]
    Acl(AclCommand),
}

#[derive(Debug, Args)]
pub(crate) struct ElectArgs {
    /// The election's name.
    pub(crate) name: String,
    /// The value to proclaim (observers see it; for example this node's address).
    pub(crate) value: String,
    /// Session TTL: if this process dies, leadership passes on this long after its last
    /// keepalive.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) ttl: std::time::Duration,
    /// Lock-delay, 0-60s: if this process dies or stops while leading, the next candidate
    /// leads only this long after its session ended.
    #[arg(long, default_value = "0s", value_parser = lock_delay)]
    pub(crate) lock_delay: std::time::Duration,
}

/// A lock-delay: a duration of at most 60 s.
fn lock_delay(text: &str) -> Result<std::time::Duration, String> {
    let delay = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if delay > std::time::Duration::from_millis(waggle_core::MAX_LOCK_DELAY_MS) {
        return Err(format!("at most 60s, got {text}"));
    }
    Ok(delay)
}

#[derive(Debug, Args)]
pub(crate) struct LockArgs {
    /// The lock's name.
    pub(crate) name: String,
    /// Hold one of N slots of a semaphore instead of a mutex.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) limit: u32,
    /// Give up (exit 1) if not granted within this long (default: wait as long as it takes).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) timeout: Option<std::time::Duration>,
    /// Session TTL: if this process dies, the lock is freed this long after its last
    /// keepalive.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) ttl: std::time::Duration,
    /// Lock-delay, 0-60s: if this process dies or stops while holding the lock, the next
    /// waiter is granted only this long after its session ended.
    #[arg(long, default_value = "0s", value_parser = lock_delay)]
    pub(crate) lock_delay: std::time::Duration,
    /// The command and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    pub(crate) command: Vec<String>,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum KvCommand {
    /// Print a key's value (exit 1 if it does not exist).
    Get {
        /// The key.
        key: String,
        /// Print the entry as JSON (value as text, revisions, flags, session).
        #[arg(long)]
        json: bool,
    },
    /// Write a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Write only if the key's modify revision is N (0: only if it does not exist); exit 1
        /// if it is not.
        #[arg(long, value_name = "N")]
        cas: Option<u64>,
        /// Client flags stored with the value.
        #[arg(long, default_value_t = 0)]
        flags: u64,
    },
    /// Delete a key, or every key under a prefix.
    Delete {
        /// The key (or prefix).
        key: String,
        /// Delete every key starting with KEY.
        #[arg(long, conflicts_with = "cas")]
        prefix: bool,
        /// Delete only if the key's modify revision is N; exit 1 if it is not.
        #[arg(long, value_name = "N")]
        cas: Option<u64>,
    },
    /// Print changes of a key (or of every key under a prefix) as they happen, one line each
    /// (`put KEY=VALUE revision=R` or `delete KEY revision=R`), until interrupted.
    Watch {
        /// The key (or prefix).
        key: String,
        /// Watch every key starting with KEY.
        #[arg(long)]
        prefix: bool,
        /// Start at this revision (default: changes from now on).
        #[arg(long, value_name = "REVISION", default_value_t = 0)]
        from: u64,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// List the keys under a prefix (all keys without one), with their values.
    List {
        /// The prefix.
        #[arg(default_value = "")]
        prefix: String,
        /// Keys only.
        #[arg(long)]
        keys: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum SnapshotCommand {
    /// Save a backup of the server's state (online; any member) to FILE.
    Save(SnapshotSaveArgs),
    /// Restore a backup into a fresh data dir, as a new single node or as one member of a
    /// new cluster (restore every member from the same file); then start the server with the
    /// same flags.
    Restore(SnapshotRestoreArgs),
}

#[derive(Debug, Args)]
pub(crate) struct SnapshotSaveArgs {
    /// Where to write the backup (written to FILE.part, then renamed).
    pub(crate) file: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct SnapshotRestoreArgs {
    /// The backup file.
    pub(crate) file: PathBuf,
    /// The data dir to create (must not exist yet, or be empty).
    #[arg(long)]
    pub(crate) data_dir: PathBuf,
    /// Move the revision this far ahead of the backup's, so fencing tokens never repeat the
    /// old cluster's: at least the writes it may have made since the backup. The same on
    /// every member.
    #[arg(long, default_value_t = waggle_server::RESTORE_REVISION_BUMP)]
    pub(crate) bump_revision: u64,
    /// Who the restored node will be (flags as for `waggle server`).
    #[command(flatten)]
    pub(crate) member: MemberArgs,
}

/// A node's place in a cluster: shared by `waggle server` and `waggle snapshot restore`.
#[derive(Debug, Args)]
pub(crate) struct MemberArgs {
    /// This node's id in a cluster (1 or more).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) node_id: u64,
    /// Where to listen for Raft traffic from the other members, IP[:PORT] (port 8300 if
    /// omitted). Default in a cluster: this node's entry in --initial-cluster.
    #[arg(long, value_parser = parse_peer_addr)]
    pub(crate) peer_addr: Option<SocketAddr>,
    /// The members at bootstrap, ID=IP[:PORT],… (peer addresses, this node included; port
    /// 8300 if omitted). Without it the node runs as a single-member cluster.
    #[arg(long, value_parser = parse_initial_cluster)]
    pub(crate) initial_cluster: Option<std::collections::BTreeMap<u64, SocketAddr>>,
}

impl MemberArgs {
    /// Sets the node id, peer address (given, or else this node's entry in the initial
    /// cluster) and initial cluster.
    pub(crate) fn apply(self, config: &mut waggle_server::ServerConfig) {
        config.node_id = self.node_id;
        config.peer_addr =
            self.peer_addr.or_else(|| self.initial_cluster.as_ref().and_then(|m| m.get(&self.node_id).copied()));
        if let Some(members) = self.initial_cluster {
            config.initial_cluster = members;
        }
    }
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum MembersCommand {
    /// List the members: id, address, role, log index and lag.
    List(MembersListArgs),
    /// Add a member: start it first with `waggle server --join`; it joins as a learner,
    /// catches up, then becomes a voter.
    Add(MembersAddArgs),
    /// Remove a member (then stop its server).
    Remove(MembersRemoveArgs),
}

#[derive(Debug, Args)]
pub(crate) struct MembersAddArgs {
    /// The new member's node id (its `--node-id`).
    #[arg(value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) id: u64,
    /// Its peer address, IP[:PORT] (its `--peer-addr`; port 8300 if omitted).
    #[arg(value_parser = parse_peer_addr)]
    pub(crate) peer_addr: SocketAddr,
    /// Keep it a learner: it replicates and serves reads but does not vote.
    #[arg(long)]
    pub(crate) learner: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct MembersRemoveArgs {
    /// The member's node id.
    #[arg(value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) id: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct MembersListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// What to measure.
    #[arg(value_enum)]
    pub(crate) workload: waggle_bench::Workload,
    /// The system under test.
    #[arg(long, value_enum, default_value = "waggle")]
    pub(crate) target: waggle_bench::Target,
    /// Endpoint of an etcd or ZooKeeper target (Waggle uses --server).
    #[arg(long)]
    pub(crate) endpoint: Option<String>,
    /// Connections.
    #[arg(long, default_value_t = 4)]
    pub(crate) clients: usize,
    /// Outstanding requests per connection.
    #[arg(long, default_value_t = 16)]
    pub(crate) in_flight: usize,
    /// How long to run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, conflicts_with = "total")]
    pub(crate) duration: Duration,
    /// Stop after this many operations (watch: changes) instead of a duration.
    #[arg(long)]
    pub(crate) total: Option<u64>,
    /// Register: key space; discover: instances in the service read.
    #[arg(long, default_value_t = 100)]
    pub(crate) instances: usize,
    /// Watchers for watch and populate (default 1000) and churn (default 100).
    #[arg(long)]
    pub(crate) watchers: Option<usize>,
    /// Sessions for populate.
    #[arg(long, default_value_t = 1000)]
    pub(crate) sessions: usize,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// No progress output.
    #[arg(long)]
    pub(crate) quiet: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// Data directory (log and snapshots).
    #[arg(long, env = "WAGGLE_DATA_DIR", default_value = waggle_server::DEFAULT_DATA_DIR)]
    pub(crate) data_dir: PathBuf,
    /// gRPC listen address.
    #[arg(long, env = "WAGGLE_GRPC_ADDR", default_value = waggle_server::DEFAULT_GRPC_ADDR)]
    pub(crate) grpc_addr: SocketAddr,
    /// HTTP listen address.
    #[arg(long, env = "WAGGLE_HTTP_ADDR", default_value = waggle_server::DEFAULT_HTTP_ADDR)]
    pub(crate) http_addr: SocketAddr,
    /// DNS listen address, UDP and TCP (`off` turns DNS off).
    #[arg(long, env = "WAGGLE_DNS_ADDR", default_value = waggle_server::DEFAULT_DNS_ADDR, value_parser = parse_dns_addr)]
    pub(crate) dns_addr: DnsAddr,
    /// A zone the DNS interface answers for (repeat for several; default: waggle and consul).
    #[arg(long = "dns-domain", value_name = "DOMAIN")]
    pub(crate) dns_domains: Vec<String>,
    /// TTL of DNS answers (0: no caching, Consul's default).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub(crate) dns_ttl: std::time::Duration,
    /// DNS answers warning instances too (default: passing only).
    #[arg(long)]
    pub(crate) dns_allow_warning: bool,
    /// Development mode: use a temporary data dir, deleted on exit.
    #[arg(long)]
    pub(crate) dev: bool,
    /// Most bytes of keys and values the KV store holds (KiB, MiB, GiB suffixes; default
    /// 1GiB): writes past it are refused, deletes never.
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    pub(crate) kv_quota: u64,
    /// Check every request's token (Consul-compatible ACLs; deny by default).
    #[arg(long, env = "WAGGLE_ACL_ENABLED")]
    pub(crate) acl_enabled: bool,
    /// What applies where no rule of a token does: deny (the default) or allow.
    #[arg(long, env = "WAGGLE_ACL_DEFAULT_POLICY", default_value = "deny", value_parser = ["deny", "allow"])]
    pub(crate) acl_default_policy: String,
    /// The secret of a management token created on first start, instead of `waggle acl bootstrap`.
    #[arg(long, env = "WAGGLE_ACL_INITIAL_MANAGEMENT_TOKEN", value_name = "SECRET", hide_env_values = true)]
    pub(crate) acl_initial_management_token: Option<String>,
    /// Serve /metrics without a token (with ACLs on it needs agent:read otherwise).
    #[arg(long, env = "WAGGLE_METRICS_PUBLIC")]
    pub(crate) metrics_public: bool,
    /// Build a snapshot (and purge the log) every N entries.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) snapshot_every: u64,
    #[command(flatten)]
    pub(crate) member: MemberArgs,
    /// Join a running cluster instead of bootstrapping one: serve --peer-addr and wait until
    /// a member runs `waggle members add ID PEER_ADDR`.
    #[arg(long, conflicts_with = "initial_cluster", requires = "peer_addr")]
    pub(crate) join: bool,
    /// Raft election timeout (the minimum; the maximum is twice it). A follower stands for
    /// election 3–4× this after its leader's last heartbeat.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub(crate) election_timeout: std::time::Duration,
    /// Raft leader heartbeat interval; at most half the election timeout.
    #[arg(long, default_value = "40ms", value_parser = humantime::parse_duration)]
    pub(crate) heartbeat_interval: std::time::Duration,
}

/// `--dns-addr`: an address, or `off`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DnsAddr(pub(crate) Option<SocketAddr>);

fn parse_dns_addr(text: &str) -> Result<DnsAddr, String> {
    match text.trim() {
        "off" => Ok(DnsAddr(None)),
        addr => addr.parse().map(|a| DnsAddr(Some(a))).map_err(|_| format!("`{text}` is not IP:PORT or `off`")),
    }
}

/// The customary port for Raft traffic between members.
pub(crate) const DEFAULT_PEER_PORT: u16 = 8300;

/// Parses a peer address: `IP:PORT`, `[IPv6]:PORT`, or an IP alone (port 8300).
pub(crate) fn parse_peer_addr(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    let addr = match text.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => {
            let ip = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
            let ip = ip.parse::<std::net::IpAddr>().map_err(|_| format!("`{text}` is not an IP[:PORT] address"))?;
            SocketAddr::new(ip, DEFAULT_PEER_PORT)
        }
    };
    // Other members dial it: one host (not 0.0.0.0 or multicast) and a real port.
    if addr.ip().is_unspecified() || addr.ip().is_multicast() || addr.port() == 0 {
        return Err(format!("`{text}` cannot be dialled by other members: give a host IP and a port other than 0"));
    }
    Ok(addr)
}

/// Parses `1=127.0.0.1:8300,2=127.0.0.1:8301`: ids of 1 or more, each listed once.
pub(crate) fn parse_initial_cluster(text: &str) -> Result<std::collections::BTreeMap<u64, SocketAddr>, String> {
    let mut members = std::collections::BTreeMap::new();
    for member in text.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let (id, addr) = member.split_once('=').ok_or_else(|| format!("`{member}` is not ID=ADDR"))?;
        let id: u64 = id.trim().parse().map_err(|_| format!("`{id}` is not a node id"))?;
        if id == 0 {
            return Err("node ids start at 1".into());
        }
        let addr = parse_peer_addr(addr)?;
        if members.insert(id, addr).is_some() {
            return Err(format!("node {id} is listed twice"));
        }
    }
    if members.is_empty() {
        return Err("the initial cluster lists no member".into());
    }
    Ok(members)
}

#[derive(Debug, Args)]
pub(crate) struct RegisterArgs {
    /// Service name (a DNS label).
    pub(crate) service: String,
    /// ADDRESS:PORT, e.g. 10.0.0.1:8080 or [::1]:8080.
    pub(crate) endpoint: String,
    /// Instance id (default ADDRESS:PORT).
    #[arg(long)]
    pub(crate) id: Option<String>,
    /// A tag (repeatable).
    #[arg(long = "tag")]
    pub(crate) tags: Vec<String>,
    /// Metadata KEY=VALUE (repeatable).
    #[arg(long = "meta")]
    pub(crate) meta: Vec<String>,
    /// Weight, 1-10000.
    #[arg(long, default_value_t = 100)]
    pub(crate) weight: u32,
    /// Locality zone.
    #[arg(long)]
    pub(crate) zone: Option<String>,
    /// Health status to register with: passing, warning or critical.
    #[arg(long, default_value = "passing")]
    pub(crate) status: String,
    /// Session TTL, 1s-24h.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) ttl: Duration,
}

#[derive(Debug, Args)]
pub(crate) struct DeregisterArgs {
    /// Service name.
    pub(crate) service: String,
    /// Instance id.
    pub(crate) id: String,
}

#[derive(Debug, Args)]
pub(crate) struct ServicesArgs {
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct InstancesArgs {
    /// Service name.
    pub(crate) service: String,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Include warning and critical instances.
    #[arg(long)]
    pub(crate) all: bool,
    /// Linearizable read: include every write acknowledged before the call, whichever member
    /// answers (a quorum round trip through the leader).
    #[arg(long)]
    pub(crate) linearizable: bool,
}

#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// Service name.
    pub(crate) service: String,
    /// Print one JSON object per line.
    #[arg(long)]
    pub(crate) json: bool,
}

/// A size in bytes, with an optional KiB / MiB / GiB suffix.
fn parse_bytes(text: &str) -> Result<u64, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let scale: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown unit {other:?} (use B, KiB, MiB or GiB)")),
    };
    let n: u64 = number.parse().map_err(|_| format!("not a size: {text:?}"))?;
    n.checked_mul(scale).filter(|b| *b > 0).ok_or_else(|| format!("out of range: {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::{parse_bytes, parse_initial_cluster};

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("512KiB"), Ok(512 << 10));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        for bad in ["", "0", "1GB", "x", "99999999999GiB", "-1"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn initial_clusters_parse_and_reject_bad_members() {
        let members = parse_initial_cluster("1=127.0.0.1:8300, 2=127.0.0.1:8301,3=[::1]:8302").unwrap();
        assert_eq!(members.len(), 3);
        assert_eq!(members[&3].to_string(), "[::1]:8302");
        // The peer port defaults to 8300.
        let members = parse_initial_cluster("1=10.0.0.1,2=[::1],3=10.0.0.3:9000").unwrap();
        assert_eq!(members[&1].to_string(), "10.0.0.1:8300");
        assert_eq!(members[&2].to_string(), "[::1]:8300");
        assert_eq!(members[&3].to_string(), "10.0.0.3:9000");
        for (bad, why) in [
            ("", "no member"),
            ("1=127.0.0.1:8300,1=127.0.0.1:8301", "twice"),
            ("0=127.0.0.1:8300", "start at 1"),
            ("x=127.0.0.1:8300", "not a node id"),
            ("1=localhost", "not an IP[:PORT]"),
            ("1=10.0.0.1:99999", "not an IP[:PORT]"),
            ("1=0.0.0.0:8300", "cannot be dialled"),
            ("1=10.0.0.1:0", "cannot be dialled"),
            ("127.0.0.1:8300", "not ID=ADDR"),
        ] {
            let error = parse_initial_cluster(bad).unwrap_err();
            assert!(error.contains(why), "{bad:?}: {error}");
        }
    }
}

/// Where the ACL commands send their requests, and how they print.
#[derive(Debug, Args)]
pub(crate) struct HttpArgs {
    /// The server's HTTP API.
    #[arg(long, env = "WAGGLE_HTTP_ADDR", default_value = "127.0.0.1:8500")]
    pub(crate) http_addr: SocketAddr,
    /// Print the server's JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `waggle acl ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum AclCommand {
    /// Create the first management token (once; or start the server with
    /// --acl-initial-management-token).
    Bootstrap(HttpArgs),
    /// Tokens.
    #[command(subcommand)]
    Token(AclTokenCommand),
    /// Policies.
    #[command(subcommand)]
    Policy(AclPolicyCommand),
    /// Roles.
    #[command(subcommand)]
    Role(AclRoleCommand),
}

/// What a token or role grants.
#[derive(Debug, Args)]
pub(crate) struct TokenFields {
    /// Free text.
    #[arg(long)]
    pub(crate) description: Option<String>,
    /// A policy by name (repeatable).
    #[arg(long)]
    pub(crate) policy_name: Vec<String>,
    /// A policy by id (repeatable).
    #[arg(long)]
    pub(crate) policy_id: Vec<String>,
    /// A role by name (repeatable; not for roles).
    #[arg(long)]
    pub(crate) role_name: Vec<String>,
    /// A role by id (repeatable; not for roles).
    #[arg(long)]
    pub(crate) role_id: Vec<String>,
    /// A service identity: write on the service, read on all (repeatable).
    #[arg(long)]
    pub(crate) service_identity: Vec<String>,
    /// A node identity, NODE:DATACENTER (repeatable).
    #[arg(long)]
    pub(crate) node_identity: Vec<String>,
}

/// `waggle acl token ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum AclTokenCommand {
    /// Create a token.
    Create(TokenCreateArgs),
    /// Add links to a token (its existing ones are kept; --description replaces).
    Update(TokenUpdateArgs),
    /// Read a token (or --self: the one this command carries).
    Read(TokenReadArgs),
    /// List the tokens.
    List(HttpArgs),
    /// A new token with the same links and a new secret.
    Clone(TokenCloneArgs),
    /// Delete a token.
    Delete(IdArgs),
}

#[derive(Debug, Args)]
pub(crate) struct TokenCreateArgs {
    #[command(flatten)]
    pub(crate) fields: TokenFields,
    /// Its AccessorID (a UUID; default: drawn).
    #[arg(long)]
    pub(crate) accessor: Option<String>,
    /// Its SecretID (a UUID; default: drawn).
    #[arg(long)]
    pub(crate) secret: Option<String>,
    /// It expires after this long (1m to 24h).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) expires_ttl: Option<Duration>,
    #[command(flatten)]
    pub(crate) http: HttpArgs,
}

#[derive(Debug, Args)]
pub(crate) struct TokenUpdateArgs {
    /// The token's AccessorID.
    #[arg(long)]
    pub(crate) id: String,
    #[command(flatten)]
    pub(crate) fields: TokenFields,
    #[command(flatten)]
    pub(crate) http: HttpArgs,
}

#[derive(Debug, Args)]
pub(crate) struct TokenReadArgs {
    /// The token's AccessorID.
    #[arg(long, required_unless_present = "self_")]
    pub(crate) id: Option<String>,
    /// The token this command carries.
    #[arg(long = "self", id = "self_")]
    pub(crate) self_: bool,
    #[command(flatten)]
    pub(crate) http: HttpArgs,
}

#[derive(Debug, Args)]
pub(crate) struct TokenCloneArgs {
    /// The token's AccessorID.
    #[arg(long)]
    pub(crate) id: String,
    /// The clone's description.
    #[arg(long)]
    pub(crate) description: Option<String>,
    #[command(flatten)]
    pub(crate) http: HttpArgs,
}

#[derive(Debug, Args)]
pub(crate) struct IdArgs {
    /// The id (a token's AccessorID, a policy's or role's ID).
    #[arg(long)]
    pub(crate) id: String,
    #[command(flatten)]
    pub(crate) http: HttpArgs,
}

#[derive(Debug, Args)]
pub(crate) struct NameOrIdArgs {
    /// Its ID.
    #[arg(long, conflicts_with = "name")]
    pub(crate) id: Option<String>,
    /// Its name.
    #[arg(long)]
    pub(crate) name: Option<String>,
    #[command(flatten)]
    pub(crate) http: HttpArgs,
}

/// `waggle acl policy ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum AclPolicyCommand {
    /// Create a policy.
    Create(PolicyArgs),
    /// Replace a policy (--id).
    Update(PolicyArgs),
    /// Read a policy.
    Read(NameOrIdArgs),
    /// List the policies.
    List(HttpArgs),
    /// Delete a policy.
    Delete(IdArgs),
}

#[derive(Debug, Args)]
pub(crate) struct PolicyArgs {
    /// Its ID (update only).
    #[arg(long)]
    pub(crate) id: Option<String>,
    /// Its name.
    #[arg(long)]
    pub(crate) name: String,
    /// Free text.
    #[arg(long)]
    pub(crate) description: Option<String>,
    /// Its rules, HCL or JSON, or @FILE.
    #[arg(long)]
    pub(crate) rules: Option<String>,
    #[command(flatten)]
    pub(crate) http: HttpArgs,
}

/// `waggle acl role ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum AclRoleCommand {
    /// Create a role.
    Create(RoleArgs),
    /// Read a role.
    Read(NameOrIdArgs),
    /// List the roles.
    List(HttpArgs),
    /// Delete a role.
    Delete(IdArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RoleArgs {
    /// Its name.
    #[arg(long)]
    pub(crate) name: String,
    #[command(flatten)]
    pub(crate) fields: TokenFields,
    #[command(flatten)]
    pub(crate) http: HttpArgs,
}
