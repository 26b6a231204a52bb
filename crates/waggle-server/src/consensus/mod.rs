//! openraft glue: type configuration, the redb log store, the state machine wrapper and the
//! peer network. All openraft types stay inside this module (blueprint risk 1: the 0.10
//! migration should touch nothing else).

mod backup;
mod error;
mod log_store;
mod log_writer;
mod membership;
mod network;
mod peer_service;
mod record;
#[cfg(test)]
mod sim;
mod state_machine;
mod status;
mod storage;

use std::{collections::BTreeMap, io::Cursor, sync::Arc};

use openraft::{BasicNode, Config, ServerState, SnapshotPolicy};
use waggle_core::{Applied, Command};

pub use backup::RESTORE_REVISION_BUMP;
pub(crate) use backup::restore;
pub(crate) use error::ProposeError;
pub use error::{CommandResult, Refusal, RefusalKind};
pub(crate) use log_store::LogStore;
pub(crate) use membership::MembershipChange;
/// The peer protocol's payloads (serde-JSON in `RaftPayload`), for the services that share it.
pub(crate) use network::{answer_of as peer_answer, payload as peer_payload};
pub(crate) use peer_service::{decode as decode_peer_request, encode as encode_peer_answer};
pub(crate) use state_machine::StateMachine;

pub(crate) use status::MemberStatus;
pub use status::NodeStatus;
pub(crate) use storage::Storage;

use crate::{
    config::ServerConfig,
    state::{LocalState, ReadModel},
};

openraft::declare_raft_types!(
    /// Waggle's openraft type configuration.
    pub TypeConfig:
        D = CommandBatch,
        R = BatchResult,
);

/// The payload of one log entry: commands proposed together (group commit). openraft 0.9
/// waits for each append's fsync inside its core loop, so batching above it is what lets many
/// concurrent writes share one fsync.
/// Shared, because openraft clones entries (log cache → state machine) and a batch can hold a
/// thousand commands. On the peer protocol (JSON) a batch travels as its codec encoding in
/// base64: a value's bytes cost 1.33 bytes and one string scan, not a JSON array of numbers
/// (3.6 bytes and a parse per byte), which kept large values from replicating within the
/// AppendEntries timeout.
#[derive(Debug, Clone)]
pub struct CommandBatch(pub Arc<[Command]>);

impl serde::Serialize for CommandBatch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        let bytes = waggle_core::codec::encode_commands(&self.0);
        if serializer.is_human_readable() {
            serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
        } else {
            serializer.serialize_bytes(&bytes)
        }
    }
}

impl<'de> serde::Deserialize<'de> for CommandBatch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use base64::Engine;
        use serde::de::Error;
        let bytes = if deserializer.is_human_readable() {
            let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            base64::engine::general_purpose::STANDARD.decode(text.as_bytes()).map_err(D::Error::custom)?
        } else {
            <Vec<u8>>::deserialize(deserializer)?
        };
        let commands = waggle_core::codec::decode_commands(&bytes).map_err(D::Error::custom)?;
        Ok(CommandBatch(commands.into()))
    }
}

/// The answers to one entry's commands, in order.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BatchResult(pub Vec<CommandResult>);

/// How long a write waits for a leader to settle (an election) before failing.
const FORWARD_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// Most commands in one log entry.
const MAX_BATCH: usize = 1024;
/// About the most bytes of keys and values in one log entry (a single larger command still
/// makes one entry): every entry must replicate within one AppendEntries timeout.
const MAX_BATCH_BYTES: usize = 512 << 10;

/// About how many bytes a command adds to a log entry (its keys and values).
fn payload_bytes(command: &Command) -> usize {
    match command {
        Command::KvTxn { txn } => txn
            .success
            .iter()
            .chain(&txn.failure)
            .map(|op| op.written().map_or(64, |(key, value)| key.len() + value.len()))
            .sum(),
        Command::LockAcquire { value, .. } | Command::LockProclaim { value, .. } => 64 + value.len(),
        Command::Authorized { accessor, command, .. } => accessor.len() + payload_bytes(command),
        _ => 256,
    }
}
/// Proposals waiting for a batch; beyond this, writes are refused as overloaded rather than
/// queued without bound.
const MAX_QUEUED_PROPOSALS: usize = 65_536;
/// Batches proposed and not yet applied at once: one commits while the next fills up.
const BATCHES_IN_FLIGHT: usize = 1;

/// A command waiting to be batched, and where its answer goes.
struct Proposal {
    command: Command,
    reply: tokio::sync::oneshot::Sender<Result<Applied, ProposeError>>,
}

type Raft = openraft::Raft<TypeConfig>;

/// Collects concurrent proposals into batches (up to `MAX_BATCH`), keeps up to
/// `BATCHES_IN_FLIGHT` batches in Raft, and hands each command its own answer.
async fn run_batcher(raft: Raft, mut queue: tokio::sync::mpsc::Receiver<Proposal>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
    // A proposal that did not fit in the previous batch starts the next one.
    let mut carried: Option<Proposal> = None;
    loop {
        let Some(first) = next_or_carried(&mut carried, &mut queue).await else { return };
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        // Everything that queued up while the previous batch was committing goes in this one,
        // up to a count and a size.
        let mut bytes = payload_bytes(&first.command);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH
            && bytes < MAX_BATCH_BYTES
            && let Ok(p) = queue.try_recv()
        {
            let size = payload_bytes(&p.command);
            if bytes + size > MAX_BATCH_BYTES {
                carried = Some(p);
                break;
            }
            bytes += size;
            batch.push(p);
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let (commands, replies): (Vec<Command>, Vec<_>) = batch.into_iter().map(|p| (p.command, p.reply)).unzip();
            let n = commands.len();
            let started = std::time::Instant::now();
            let written = raft.client_write(CommandBatch(commands.into())).await;
            tracing::trace!(commands = n, micros = started.elapsed().as_micros() as u64, "batch applied");
            let results = match written {
                Ok(resp) if resp.data.0.len() == n => resp.data.0.into_iter().map(Ok).collect(),
                Ok(resp) => {
                    let e = format!("{} results for {n} commands", resp.data.0.len());
                    vec![Err(ProposeError::Unavailable(e)); n]
                }
                Err(openraft::error::RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(_))) => {
                    vec![Err(ProposeError::NotLeader); n]
                }
                Err(e) => vec![Err(ProposeError::Unavailable(e.to_string())); n],
            };
            drop(slot);
            for (reply, result) in replies.into_iter().zip(results) {
                let answer = result.and_then(|r| match r {
                    CommandResult::Applied(applied) => Ok(applied),
                    CommandResult::Refused(refusal) => Err(ProposeError::Refused(refusal)),
                });
                let _ = reply.send(answer);
            }
        });
    }
}

/// The item left over from the previous batch, else the next one queued (`None`: the queue
/// closed).
pub(crate) async fn next_or_carried<T>(
    carried: &mut Option<T>,
    queue: &mut tokio::sync::mpsc::Receiver<T>,
) -> Option<T> {
    match carried.take() {
        Some(item) => Some(item),
        None => queue.recv().await,
    }
}

/// Hands `command` to this node's batcher and waits for its answer.
async fn propose_locally(
    proposals: &tokio::sync::mpsc::Sender<Proposal>,
    command: Command,
) -> Result<Applied, ProposeError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    proposals.try_send(Proposal { command, reply }).map_err(|e| match e {
        tokio::sync::mpsc::error::TrySendError::Full(_) => ProposeError::Overloaded,
        tokio::sync::mpsc::error::TrySendError::Closed(_) => {
            ProposeError::Unavailable("the node is shutting down".into())
        }
    })?;
    answer.await.map_err(|_| ProposeError::Unavailable("the node is shutting down".into()))?
}

/// The URL clients reach this node at: its gRPC address, with the peer address's IP when
/// it listens on every interface (0.0.0.0 / ::).
fn client_url(config: &ServerConfig) -> String {
    let mut addr = config.grpc_addr;
    if addr.ip().is_unspecified()
        && let Some(peer) = config.peer_addr
    {
        addr.set_ip(peer.ip());
    }
    format!("http://{addr}")
}

/// Whether a quorum acknowledged this leader within `window_ms` (always, for a lone member).
fn quorum_fresh(raft: &Raft, window_ms: u64) -> bool {
    raft.metrics().borrow().millis_since_quorum_ack.is_some_and(|ms| ms <= window_ms)
}

/// On the leader: confirms leadership with a quorum and waits until everything committed
/// before is applied here (openraft's read-index), then answers the applied revision.
async fn read_index(raft: &Raft, read_model: &ReadModel) -> Result<u64, ProposeError> {
    match raft.ensure_linearizable().await {
        Ok(_) => Ok(read_model.revision().get()),
        Err(openraft::error::RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(_))) => {
            Err(ProposeError::NotLeader)
        }
        // A follower answered late (or a quorum is unreachable): worth asking again until the
        // read's deadline; an isolated leader keeps failing and the read is refused.
        Err(openraft::error::RaftError::APIError(openraft::error::CheckIsLeaderError::QuorumNotEnough(_))) => {
            Err(ProposeError::LeaderUnreachable)
        }
        Err(e) => Err(ProposeError::Unavailable(e.to_string())),
    }
}

/// Follows Raft metrics and publishes whether `node_id` leads with a running core.
fn leadership(raft: &Raft, node_id: u64) -> tokio::sync::watch::Receiver<bool> {
    let leads = move |m: &openraft::RaftMetrics<u64, BasicNode>| {
        m.running_state.is_ok() && m.state == ServerState::Leader && m.current_leader == Some(node_id)
    };
    let mut metrics = raft.metrics();
    let (tx, rx) = tokio::sync::watch::channel(leads(&metrics.borrow()));
    tokio::spawn(async move {
        loop {
            let now = leads(&metrics.borrow_and_update());
            tx.send_if_modified(|v| std::mem::replace(v, now) != now);
            if metrics.changed().await.is_err() {
                tx.send_replace(false);
                return;
            }
        }
    });
    rx
}

/// A running Raft node (one member by default) with the registry as its state machine.
pub(crate) struct Consensus {
    raft: Raft,
    node_id: u64,
    /// True while this node leads and its Raft core runs; read on every keepalive.
    leading: tokio::sync::watch::Receiver<bool>,
    proposals: tokio::sync::mpsc::Sender<Proposal>,
    /// The peer protocol's server, in cluster mode.
    peer_server: Option<tokio::task::JoinHandle<()>>,
    /// Sends writes this node cannot commit to the leader, in cluster mode.
    forwarder: Option<network::Forwarder>,
    /// The local applied state, which a forwarded write waits for (read-your-writes).
    read_model: Arc<ReadModel>,
    /// This node's client URL, and the ones learned from the other members (by peer address).
    client_url: String,
    client_urls: std::sync::Mutex<std::collections::HashMap<(u64, String), String>>,
    /// How fresh a quorum's acknowledgement must be for this leader to renew a session: the
    /// followers' leader lease (twice the minimum election timeout), before which none of
    /// them can have elected another leader.
    lease_ms: u64,
    /// Set when the leader reports this member removed (`failed` then resolves).
    removed: Arc<tokio::sync::watch::Sender<bool>>,
    /// Serialises backups.
    backups: tokio::sync::Semaphore,
    /// The data dir, which backups read the snapshot from. Weak: shutdown waits for the Raft
    /// tasks to release the data dir, and this handle must not keep it open.
    storage: std::sync::Weak<Storage>,
}

impl Consensus {
    /// Opens the log and state machine in `storage`, starts Raft, initialises a fresh single-node
    /// cluster on first boot, and waits until this node leads.
    pub(crate) async fn start(
        config: &ServerConfig,
        storage: Arc<Storage>,
        state: Arc<LocalState>,
        peer_services: tonic::service::Routes,
    ) -> anyhow::Result<Self> {
        let read_model = state.read_model.clone();
        let node_id = config.node_id;
        let raft_config = Config {
            cluster_name: "waggle".to_string(),
            heartbeat_interval: config.raft.heartbeat_interval.as_millis() as u64,
            election_timeout_min: config.raft.election_timeout.as_millis() as u64,
            election_timeout_max: config.raft.election_timeout.as_millis() as u64 * 2,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.raft.snapshot_every),
            max_in_snapshot_log_to_keep: config.raft.logs_kept_after_snapshot,
            purge_batch_size: config.raft.purge_batch,
            // Snapshot chunks (base64 in JSON) small enough to arrive in time.
            snapshot_max_chunk_size: 1024 * 1024,
            install_snapshot_timeout: 1_000,
            ..Default::default()
        }
        .validate()?;
        let log_store = LogStore::new(storage.clone())?;
        let state_machine = StateMachine::open(storage.clone(), state)?;
        let raft = Raft::new(node_id, Arc::new(raft_config), network::Network, log_store, state_machine).await?;
        let clustered = config.clustered();
        let (proposals, queue) = tokio::sync::mpsc::channel(MAX_QUEUED_PROPOSALS);
        let removed = Arc::new(tokio::sync::watch::Sender::new(false));
        // Peers must reach this node before it can join an election, so serve first.
        let peer_server = match (clustered, config.peer_addr) {
            (true, Some(addr)) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen for peers on {addr}: {e}"))?;
                let service = peer_service::PeerService {
                    raft: raft.clone(),
                    proposals: proposals.clone(),
                    node_id,
                    read_model: read_model.clone(),
                    client_url: client_url(config),
                    removed: removed.clone(),
                };
                Some(peer_service::serve(service, peer_services, listener))
            }
            _ => None,
        };
        let initialized = raft.is_initialized().await?;
        if !initialized && !config.join {
            // etcd-style static bootstrap: every member initialises with the same membership,
            // which writes the same first log entry everywhere.
            let members: BTreeMap<u64, BasicNode> = if clustered {
                config.initial_cluster.iter().map(|(id, addr)| (*id, BasicNode { addr: addr.to_string() })).collect()
            } else {
                BTreeMap::from([(node_id, BasicNode { addr: config.grpc_addr.to_string() })])
            };
            match raft.initialize(members).await {
                Ok(()) => {}
                // A peer that initialised first already asked for this node's vote: the
                // membership will arrive from the leader with the log.
                Err(openraft::error::RaftError::APIError(openraft::error::InitializeError::NotAllowed(e)))
                    if clustered =>
                {
                    tracing::info!(%e, "joined a bootstrap already under way");
                }
                Err(e) => return Err(e.into()),
            }
        }
        if config.join && !initialized {
            tracing::info!(
                node_id,
                peer_addr = ?config.peer_addr,
                "waiting to be added: run `waggle members add {node_id} <this peer address>` against the cluster"
            );
            raft.wait(None)
                .metrics(|m| m.current_leader.is_some(), "waiting to be added to a cluster")
                .await
                .map_err(|e| anyhow::anyhow!("stopped waiting to be added: {e}"))?;
        } else if clustered {
            raft.wait(Some(config.raft.startup_timeout))
                .metrics(|m| m.current_leader.is_some(), "waiting for a leader")
                .await
                .map_err(|e| anyhow::anyhow!("the cluster elected no leader: {e}"))?;
        } else {
            raft.wait(Some(config.raft.startup_timeout))
                .current_leader(node_id, "waiting for this node to lead")
                .await
                .map_err(|e| anyhow::anyhow!("node did not become leader: {e}"))?;
            // Apply everything committed before serving, so that sessions and instances from
            // the log's tail are known to the clock and the read model when the first client arrives.
            raft.ensure_linearizable().await.map_err(|e| anyhow::anyhow!("cannot catch up with the log: {e}"))?;
        }
        let leading = leadership(&raft, node_id);
        tokio::spawn(run_batcher(raft.clone(), queue));
        let forwarder = clustered.then(network::Forwarder::start);
        let storage = Arc::downgrade(&storage);
        Ok(Consensus {
            raft,
            node_id,
            leading,
            proposals,
            peer_server,
            forwarder,
            read_model,
            client_url: client_url(config),
            client_urls: Default::default(),
            lease_ms: config.raft.election_timeout.as_millis() as u64 * 2,
            removed,
            backups: tokio::sync::Semaphore::new(1),
            storage,
        })
    }

    /// Proposes a command and waits until it is durable and applied. In a cluster, a node
    /// that does not lead forwards the command to the leader (once; the leader never forwards
    /// again).
    pub(crate) async fn propose(&self, command: Command) -> Result<Applied, ProposeError> {
        let Some(forwarder) = &self.forwarder else {
            return propose_locally(&self.proposals, command).await;
        };
        // During an election the leader is gone or unknown for a few hundred milliseconds:
        // rather than fail the client's write, follow leadership until it settles.
        let deadline = tokio::time::Instant::now() + FORWARD_PATIENCE;
        loop {
            let result = if self.is_leader() {
                propose_locally(&self.proposals, command.clone()).await
            } else {
                match self.leader_peer_addr() {
                    Some(addr) => self.caught_up(forwarder.forward(&addr, &command).await).await,
                    None => Err(ProposeError::NotLeader),
                }
            };
            // Only errors that prove the write was proposed nowhere are retried: a write that
            // might have been committed must not be applied twice.
            let retry = matches!(result, Err(ProposeError::NotLeader | ProposeError::LeaderUnreachable));
            if !retry || tokio::time::Instant::now() >= deadline {
                return result;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Proposes on this node only, never forwarding: for what only the current leader may
    /// decide (session expiry). If leadership moved meanwhile, the answer is `NotLeader`.
    pub(crate) async fn propose_here(&self, command: Command) -> Result<Applied, ProposeError> {
        propose_locally(&self.proposals, command).await
    }

    /// Waits (briefly) until this node has applied a write the leader committed, so a client
    /// that wrote through this node reads its write here too.
    async fn caught_up(&self, result: Result<Applied, ProposeError>) -> Result<Applied, ProposeError> {
        if let Ok(applied) = &result {
            let wait = self.read_model.applied(applied.revision());
            if tokio::time::timeout(std::time::Duration::from_secs(5), wait).await.is_err() {
                tracing::warn!(revision = applied.revision().get(), "a forwarded write is not applied here yet");
            }
        }
        result
    }

    /// A backup file of everything this node has applied (see `backup`).
    pub(crate) async fn backup(&self) -> Result<Vec<u8>, ProposeError> {
        let storage = self.storage.upgrade().ok_or_else(|| ProposeError::Unavailable("shutting down".into()))?;
        // One backup at a time: concurrent saves would each build a snapshot.
        let _one = self.backups.acquire().await.map_err(|_| ProposeError::Unavailable("shutting down".into()))?;
        backup::save(&self.raft, &storage).await
    }

    /// Waits until a read here is linearizable: nothing committed before this call is missing
    /// from the local state. The leader confirms its leadership with a quorum; a follower asks
    /// the leader for the revision to reach and waits until it has applied it. Follows
    /// leadership through an election for up to `FORWARD_PATIENCE`.
    pub(crate) async fn read_barrier(&self) -> Result<(), ProposeError> {
        let deadline = tokio::time::Instant::now() + FORWARD_PATIENCE;
        loop {
            let revision = if self.is_leader() {
                read_index(&self.raft, &self.read_model).await
            } else {
                match (&self.forwarder, self.leader_peer_addr()) {
                    (Some(forwarder), Some(addr)) => forwarder.read_index(&addr).await,
                    _ => Err(ProposeError::NotLeader),
                }
            };
            match revision {
                Ok(revision) => {
                    let applied = self.read_model.applied(waggle_core::Revision::new(revision));
                    return tokio::time::timeout(FORWARD_PATIENCE, applied).await.map_err(|_| {
                        ProposeError::Unavailable("this member is too far behind the leader to read".into())
                    });
                }
                Err(ProposeError::NotLeader | ProposeError::LeaderUnreachable)
                    if self.forwarder.is_some() && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// This node's id.
    pub(crate) fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Whether this node knows a leader (cheap: no copy of the metrics).
    pub(crate) fn leader_known(&self) -> bool {
        self.raft.metrics().borrow().current_leader.is_some()
    }

    /// The channel to the current leader's peer address, for requests of the leader's own
    /// services (`LeaderPeer`); `NotLeader` when there is no other leader to ask.
    pub(crate) fn leader_channel(&self) -> Result<tonic::transport::Channel, ProposeError> {
        match (&self.forwarder, self.leader_peer_addr()) {
            (Some(forwarder), Some(addr)) => forwarder.channel(&addr),
            _ => Err(ProposeError::NotLeader),
        }
    }

    /// Whether this node runs in a cluster (and so can forward to a leader).
    pub(crate) fn clustered(&self) -> bool {
        self.forwarder.is_some()
    }

    /// The current leader's peer address, if there is a leader other than this node.
    fn leader_peer_addr(&self) -> Option<String> {
        // On every forwarded write: read the metrics in place rather than copy them.
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader.filter(|leader| *leader != self.node_id)?;
        metrics.membership_config.membership().get_node(&leader).map(|node| node.addr.clone())
    }

    /// True when this node currently believes it leads and its Raft core runs (no quorum
    /// round trip; cheap enough for every keepalive).
    pub(crate) fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// True when this node leads and a quorum acknowledged it within the followers' lease: the
    /// test for answering keepalives. openraft 0.9 keeps an isolated leader leading, and its
    /// renewals would hide from the client that the majority expires its session.
    pub(crate) fn leads_with_quorum(&self) -> bool {
        self.is_leader() && quorum_fresh(&self.raft, self.lease_ms)
    }

    /// Confirms with a quorum that this node still leads (a read-index round).
    pub(crate) async fn confirm_leadership(&self) -> bool {
        self.raft.ensure_linearizable().await.is_ok()
    }

    /// Leadership changes: `true` while this node leads.
    pub(crate) fn leadership(&self) -> tokio::sync::watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Resolves with the reason if the Raft core stops running (fatal error or shutdown).
    pub(crate) async fn failed(&self) -> String {
        let mut metrics = self.raft.metrics();
        let mut removed = self.removed.subscribe();
        let mut was_member = false;
        loop {
            if *removed.borrow_and_update() {
                return format!("node {} was removed from the cluster", self.node_id);
            }
            {
                let m = metrics.borrow_and_update();
                if let Err(fatal) = &m.running_state {
                    return fatal.to_string();
                }
                // Removed from the cluster (`waggle members remove`): it will hear from no
                // leader again and must not go on serving stale state.
                let membership = m.membership_config.membership();
                if membership.get_node(&self.node_id).is_some() {
                    was_member = true;
                } else if was_member && membership.nodes().next().is_some() {
                    return format!("node {} was removed from the cluster", self.node_id);
                }
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() {
                    return "raft stopped".to_string();
                },
                _ = removed.changed() => {}
            }
        }
    }

    /// True while the Raft core runs.
    pub(crate) fn running(&self) -> bool {
        self.raft.metrics().borrow().running_state.is_ok()
    }

    /// The members as this node sees them: (leader, term, members). Replication progress is
    /// known only on the leader.
    pub(crate) fn members(&self) -> (Option<u64>, u64, Vec<MemberStatus>) {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        let leader_last = m.last_log_index;
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let log_index = if *id == self.node_id {
                    m.last_applied.map(|l| l.index)
                } else {
                    m.replication.as_ref().and_then(|r| r.get(id).copied().flatten()).map(|l| l.index)
                };
                let role = if m.current_leader == Some(*id) {
                    "leader"
                } else if voters.contains(id) {
                    "follower"
                } else {
                    "learner"
                };
                let lag = match (leader_last, log_index, m.current_leader == Some(self.node_id)) {
                    (Some(last), Some(at), true) => Some(last.saturating_sub(at)),
                    _ => None,
                };
                MemberStatus { id: *id, peer_address: node.addr.clone(), role, log_index, lag }
            })
            .collect();
        (m.current_leader, m.current_term, members)
    }

    /// Where clients reach member `id` (peer address `peer`): asked of the member once, then
    /// remembered; `None` while it cannot be asked.
    pub(crate) async fn client_url_of(&self, id: u64, peer: &str) -> Option<String> {
        if id == self.node_id {
            return Some(self.client_url.clone());
        }
        let key = (id, peer.to_owned());
        let known = self.client_urls.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key).cloned();
        if known.is_some() {
            return known;
        }
        let url = self.forwarder.as_ref()?.describe(peer).await.ok().filter(|who| who.node_id == id)?.client_url;
        self.client_urls.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, url.clone());
        Some(url)
    }

    /// A consistent reading of this node's Raft progress.
    pub(crate) fn status(&self) -> NodeStatus {
        let m = self.raft.metrics().borrow().clone();
        NodeStatus {
            node_id: self.node_id,
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            last_applied: m.last_applied.map_or(0, |l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
        }
    }

    /// Stops the Raft task.
    pub(crate) async fn shutdown(&self) {
        if let Some(peer_server) = &self.peer_server {
            peer_server.abort();
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
    }
}
