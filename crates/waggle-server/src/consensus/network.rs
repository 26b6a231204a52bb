//! The client side of the Raft peer network: openraft's RPCs carried over a small gRPC service
//! (`RaftPeer` in `proto/waggle/v1/raft.proto`), and the [`Forwarder`] that sends a follower's
//! writes, read-index and membership requests to the leader (and keeps the channels to the
//! peers, which the leader's own peer service shares). Payloads are openraft's own request and
//! response types, serialised with serde (only Waggle nodes of one version speak this
//! protocol). The server side is `peer_service.rs`.

use std::time::Duration;

use openraft::{
    BasicNode, RaftNetwork, RaftNetworkFactory,
    error::{InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable},
    network::RPCOption,
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
        VoteResponse,
    },
};
use serde::{Serialize, de::DeserializeOwned};
use tonic::transport::Channel;
use waggle_proto::v1::RaftPayload;
use waggle_proto::v1::raft_peer_client::RaftPeerClient;

use waggle_core::{Applied, Command};

use super::ProposeError;
use super::TypeConfig;

/// Creates a [`Network`] client per peer.
pub(crate) struct Network;

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        // Lazily connected: an unreachable peer fails its RPCs, it does not block the factory.
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.addr))
            .map(|e| e.connect_timeout(Duration::from_millis(500)).connect_lazy());
        Peer { target, client: channel.ok().map(RaftPeerClient::new) }
    }
}

/// One peer's client.
pub(crate) struct Peer {
    target: u64,
    client: Option<RaftPeerClient<Channel>>,
}

type Remote<E> = RPCError<u64, BasicNode, RaftError<u64, E>>;

impl Peer {
    /// Sends one RPC: `request` out, a serialised `Result<Resp, RaftError<E>>` back.
    async fn call<Req, Resp, E>(&mut self, method: Method, request: &Req, option: &RPCOption) -> Result<Resp, Remote<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let data = serde_json::to_vec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.send(method, data, option).await
    }

    /// Sends one encoded RPC; decodes the answer.
    async fn send<Resp, E>(&mut self, method: Method, data: Vec<u8>, option: &RPCOption) -> Result<Resp, Remote<E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(client) = self.client.as_mut() else {
            return Err(unreachable("the peer's address does not form a URI"));
        };
        let mut message = tonic::Request::new(RaftPayload { data });
        message.set_timeout(option.hard_ttl());
        let answer = match method {
            Method::AppendEntries => client.append_entries(message).await,
            Method::Vote => client.vote(message).await,
            Method::InstallSnapshot => client.install_snapshot(message).await,
        };
        // Only a refused connection means the peer is down (openraft then backs off before
        // retrying). A slow answer (a follower's fsync, a fresh connection's handshake) is an
        // ordinary network error, retried at the next heartbeat: backing off for it would starve
        // the follower of heartbeats and start a needless election.
        let payload = answer
            .map_err(|status| {
                if never_connected(&status) {
                    unreachable(&status.to_string())
                } else {
                    RPCError::Network(NetworkError::new(&status))
                }
            })?
            .into_inner();
        let result: Result<Resp, RaftError<u64, E>> =
            serde_json::from_slice(&payload.data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// An InstallSnapshot request on the wire: openraft's, with the chunk's bytes in base64 (a
/// JSON array of numbers would cost 3.6 bytes and a parse per byte).
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct SnapshotChunk {
    vote: openraft::Vote<u64>,
    meta: openraft::SnapshotMeta<u64, BasicNode>,
    offset: u64,
    data: String,
    done: bool,
}

impl From<InstallSnapshotRequest<TypeConfig>> for SnapshotChunk {
    fn from(r: InstallSnapshotRequest<TypeConfig>) -> Self {
        use base64::Engine;
        let data = base64::engine::general_purpose::STANDARD.encode(&r.data);
        SnapshotChunk { vote: r.vote, meta: r.meta, offset: r.offset, data, done: r.done }
    }
}

impl SnapshotChunk {
    pub(super) fn into_request(self) -> Result<InstallSnapshotRequest<TypeConfig>, base64::DecodeError> {
        use base64::Engine;
        let data = base64::engine::general_purpose::STANDARD.decode(self.data.as_bytes())?;
        Ok(InstallSnapshotRequest { vote: self.vote, meta: self.meta, offset: self.offset, data, done: self.done })
    }
}

/// About the most bytes sent in one AppendEntries, unless it carries a single entry: every
/// AppendEntries must be sent, appended (with an fsync) and answered within openraft's timeout
/// of one heartbeat interval, or the follower hears nothing and starts an election.
const MAX_APPEND_BYTES: usize = 512 << 10;

/// Whether an AppendEntries of `entries` encoded in `encoded` bytes is too large to send at
/// once: then openraft is told how many entries to send instead (at least one).
fn too_large(entries: usize, encoded: usize) -> Option<PayloadTooLarge> {
    let entries = entries as u64;
    (encoded > MAX_APPEND_BYTES && entries > 1).then(|| {
        let fitting = entries.saturating_mul(MAX_APPEND_BYTES as u64) / encoded as u64;
        PayloadTooLarge::new_entries_hint(fitting.clamp(1, entries - 1))
    })
}

/// Whether a call failed before reaching the peer (the connection was refused), so the
/// request certainly had no effect there.
fn never_connected(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = error.source();
    }
    status.code() == tonic::Code::Unavailable && status.message().contains("Connection refused")
}

/// How long a follower waits for the leader's answer to each kind of forwarded request. A
/// leader that is cut off (its writes never commit) or gone without closing the connection
/// must not hold a follower's requests, or its batching slots, for longer.
const FORWARD_DEADLINE: Duration = Duration::from_secs(5);
const READ_INDEX_DEADLINE: Duration = Duration::from_secs(2);
const MEMBERSHIP_DEADLINE: Duration = Duration::from_secs(60);

/// Runs a peer call with a deadline (a timeout becomes `DEADLINE_EXCEEDED`).
async fn within<T>(
    deadline: Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<tonic::Response<T>, tonic::Status> {
    tokio::time::timeout(deadline, call)
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded(format!("no answer within {deadline:?}"))))
}

/// A failed forward: certainly not delivered (safe to retry) or of unknown outcome.
fn forward_error(status: &tonic::Status) -> ProposeError {
    if never_connected(status) {
        ProposeError::LeaderUnreachable
    } else {
        ProposeError::Unavailable(format!("forwarding to the leader: {}", status.message()))
    }
}

#[derive(Clone, Copy)]
enum Method {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

pub(super) fn unreachable<E: std::error::Error>(why: &str) -> RPCError<u64, BasicNode, E> {
    let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, why.to_owned());
    RPCError::Unreachable(Unreachable::new(&io))
}

impl RaftNetwork<TypeConfig> for Peer {
    /// After a peer refused a connection (it is down or restarting), wait this long before
    /// trying it again: short, so a restarted member gets the log (and heartbeats) again soon.
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let data = serde_json::to_vec(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if let Some(too_large) = too_large(rpc.entries.len(), data.len()) {
            return Err(RPCError::PayloadTooLarge(too_large));
        }
        self.send(Method::AppendEntries, data, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>> {
        self.call(Method::InstallSnapshot, &SnapshotChunk::from(rpc), &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(Method::Vote, &rpc, &option).await
    }
}

/// One lazily connected channel per peer, shared by every peer service on it.
#[derive(Default)]
struct Clients(std::sync::Mutex<std::collections::HashMap<String, Channel>>);

impl Clients {
    fn get(&self, addr: &str) -> Result<RaftPeerClient<Channel>, ProposeError> {
        self.channel(addr).map(RaftPeerClient::new)
    }

    fn channel(&self, addr: &str) -> Result<Channel, ProposeError> {
        let mut clients = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(channel) = clients.get(addr) {
            return Ok(channel.clone());
        }
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| ProposeError::Unavailable(format!("leader address {addr}: {e}")))?;
        // HTTP/2 pings notice a leader that vanished without closing the connection.
        let endpoint = endpoint
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(2))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_lazy();
        clients.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }
}

/// Who answers at a peer address (`Describe`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Identity {
    /// Its node id.
    pub(crate) node_id: u64,
    /// Where clients reach it.
    pub(crate) client_url: String,
}

/// Asks a peer who it is (at most 500 ms).
async fn describe(mut client: RaftPeerClient<Channel>) -> Result<Identity, ProposeError> {
    let ask = client.describe(RaftPayload { data: Vec::new() });
    let answer = tokio::time::timeout(Duration::from_millis(500), ask)
        .await
        .map_err(|_| ProposeError::LeaderUnreachable)?
        .map_err(|_| ProposeError::LeaderUnreachable)?;
    answer_of(answer)
}

/// Asks whoever listens at peer address `addr` who it is (a one-off connection).
pub(crate) async fn identify(addr: &str) -> Result<Identity, ProposeError> {
    describe(one_off(addr)?).await
}

/// A client for one call to the peer at `addr`, outside the cached channels.
fn one_off(addr: &str) -> Result<RaftPeerClient<Channel>, ProposeError> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| ProposeError::Unavailable(format!("peer address {addr}: {e}")))?;
    Ok(RaftPeerClient::new(endpoint.connect_timeout(Duration::from_millis(500)).connect_lazy()))
}

/// A value as a peer payload.
pub(crate) fn payload<T: Serialize>(value: &T) -> Result<RaftPayload, ProposeError> {
    let data = serde_json::to_vec(value).map_err(|e| ProposeError::Unavailable(e.to_string()))?;
    Ok(RaftPayload { data })
}

/// A peer's answer decoded.
pub(crate) fn answer_of<T: DeserializeOwned>(answer: tonic::Response<RaftPayload>) -> Result<T, ProposeError> {
    serde_json::from_slice(&answer.into_inner().data).map_err(|e| ProposeError::Unavailable(e.to_string()))
}

/// A write waiting to be forwarded, and where its answer goes.
struct Forwarded {
    addr: String,
    command: Command,
    reply: tokio::sync::oneshot::Sender<Result<Applied, ProposeError>>,
}

/// Most writes in one forwarded batch.
const FORWARD_BATCH: usize = 1024;
/// Forwarded batches in flight at once; writes that arrive meanwhile wait for the next batch.
const FORWARDS_IN_FLIGHT: usize = 4;

/// Sends the writes, read-index requests and membership changes a follower receives to the
/// leader.
/// Concurrent writes travel together: one `Forward` RPC carries every write queued while the
/// previous batches were in flight, so a follower adds one round trip per batch, not per write.
pub(crate) struct Forwarder {
    clients: std::sync::Arc<Clients>,
    queue: tokio::sync::mpsc::Sender<Forwarded>,
}

impl Forwarder {
    /// Starts the batching task (on the current tokio runtime).
    pub(crate) fn start() -> Self {
        let clients = std::sync::Arc::new(Clients::default());
        let (queue, rx) = tokio::sync::mpsc::channel(super::MAX_QUEUED_PROPOSALS);
        tokio::spawn(run_forwarder(clients.clone(), rx));
        Forwarder { clients, queue }
    }

    fn client(&self, addr: &str) -> Result<RaftPeerClient<Channel>, ProposeError> {
        self.clients.get(addr)
    }

    /// The (lazily connected) channel to the peer at `addr`, for the other services served on
    /// the peer address.
    pub(crate) fn channel(&self, addr: &str) -> Result<Channel, ProposeError> {
        self.clients.channel(addr)
    }

    /// Tells the member at `addr` (best effort) that the cluster removed it, so it stops.
    pub(crate) async fn notify_removed(addr: &str, id: u64) {
        let (Ok(mut client), Ok(message)) = (one_off(addr), payload(&id)) else { return };
        let tell = client.removed(message);
        if tokio::time::timeout(Duration::from_secs(1), tell).await.is_err() {
            tracing::info!(id, addr, "could not tell the removed member; it must be stopped by hand");
        }
    }

    /// Asks the member at `addr` where clients reach it.
    pub(crate) async fn describe(&self, addr: &str) -> Result<Identity, ProposeError> {
        describe(self.client(addr)?).await
    }

    /// Asks the leader at `addr` for a read index: the revision a linearizable read must see.
    pub(crate) async fn read_index(&self, addr: &str) -> Result<u64, ProposeError> {
        let mut client = self.client(addr)?;
        // A read is idempotent: whatever kept it from the leader, it may be asked again.
        let answer = within(READ_INDEX_DEADLINE, client.read_index(RaftPayload { data: Vec::new() }))
            .await
            .map_err(|_| ProposeError::LeaderUnreachable)?;
        answer_of(answer)?
    }

    /// Asks the leader at `addr` to carry out a membership change.
    pub(crate) async fn change_membership(
        &self,
        addr: &str,
        change: &super::MembershipChange,
    ) -> Result<(), ProposeError> {
        let mut client = self.client(addr)?;
        let answer = within(MEMBERSHIP_DEADLINE, client.change_membership(payload(change)?))
            .await
            .map_err(|s| forward_error(&s))?;
        answer_of(answer)?
    }

    /// Sends `command` to the node whose peer address is `addr` (in a batch with other writes)
    /// and returns its answer.
    pub(crate) async fn forward(&self, addr: &str, command: &Command) -> Result<Applied, ProposeError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let forwarded = Forwarded { addr: addr.to_owned(), command: command.clone(), reply };
        self.queue.try_send(forwarded).map_err(|e| match e {
            tokio::sync::mpsc::error::TrySendError::Full(_) => ProposeError::Overloaded,
            tokio::sync::mpsc::error::TrySendError::Closed(_) => ProposeError::Unavailable("shutting down".into()),
        })?;
        answer.await.map_err(|_| ProposeError::Unavailable("shutting down".into()))?
    }
}

/// Collects queued writes into batches per leader address and sends each as one `Forward`.
async fn run_forwarder(clients: std::sync::Arc<Clients>, mut queue: tokio::sync::mpsc::Receiver<Forwarded>) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(FORWARDS_IN_FLIGHT));
    let mut carried: Option<Forwarded> = None;
    loop {
        let Some(first) = super::next_or_carried(&mut carried, &mut queue).await else { return };
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let mut batch = vec![first];
        while batch.len() < FORWARD_BATCH {
            match queue.try_recv() {
                Ok(next) if next.addr == batch[0].addr => batch.push(next),
                // Leadership moved: this one starts the next batch.
                Ok(next) => {
                    carried = Some(next);
                    break;
                }
                Err(_) => break,
            }
        }
        let client = clients.get(&batch[0].addr);
        tokio::spawn(async move {
            let (commands, replies): (Vec<Command>, Vec<_>) = batch.into_iter().map(|f| (f.command, f.reply)).unzip();
            let answers = match client {
                Ok(client) => send_batch(client, &commands).await,
                Err(e) => Err(e),
            };
            drop(slot);
            match answers {
                Ok(answers) if answers.len() == replies.len() => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(answer);
                    }
                }
                Ok(answers) => {
                    let e =
                        ProposeError::Unavailable(format!("{} answers for {} writes", answers.len(), replies.len()));
                    replies.into_iter().for_each(|reply| drop(reply.send(Err(e.clone()))));
                }
                Err(e) => replies.into_iter().for_each(|reply| drop(reply.send(Err(e.clone())))),
            }
        });
    }
}

async fn send_batch(
    mut client: RaftPeerClient<Channel>,
    commands: &[Command],
) -> Result<Vec<Result<Applied, ProposeError>>, ProposeError> {
    let data = waggle_core::codec::encode_commands(commands);
    // Past the deadline the outcome is unknown: `Unavailable`, never retried.
    let answer = within(FORWARD_DEADLINE, client.forward(RaftPayload { data })).await.map_err(|s| forward_error(&s))?;
    answer_of(answer)
}
