//! The server side of the peer protocol: openraft's RPCs handed to the local Raft node, writes
//! forwarded by followers handed to the local proposal queue, read-index and membership
//! requests carried out here when this member leads, and `Describe` / `Removed`. Served on
//! `--peer-addr` together with the services above consensus (the leader's).

use std::net::SocketAddr;

use openraft::raft::{AppendEntriesRequest, VoteRequest};
use serde::{Serialize, de::DeserializeOwned};
use waggle_proto::v1::RaftPayload;
use waggle_proto::v1::raft_peer_server::{RaftPeer, RaftPeerServer};

use super::{
    Proposal, ProposeError, Raft, TypeConfig,
    network::{Identity, SnapshotChunk},
};

/// The server side: hands each RPC to the local Raft node, and forwarded writes to the local
/// proposal queue.
pub(super) struct PeerService {
    pub(super) raft: Raft,
    pub(super) proposals: tokio::sync::mpsc::Sender<Proposal>,
    pub(super) node_id: u64,
    pub(super) read_model: std::sync::Arc<crate::state::ReadModel>,
    /// Where clients reach this node (`Describe`).
    pub(super) client_url: String,
    /// Set when the leader reports this node removed from the cluster.
    pub(super) removed: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

pub(crate) fn decode<T: DeserializeOwned>(request: tonic::Request<RaftPayload>) -> Result<T, tonic::Status> {
    serde_json::from_slice(&request.into_inner().data)
        .map_err(|e| tonic::Status::invalid_argument(format!("malformed raft payload: {e}")))
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
    let data = serde_json::to_vec(value).map_err(|e| tonic::Status::internal(e.to_string()))?;
    Ok(tonic::Response::new(RaftPayload { data }))
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(
        &self,
        request: tonic::Request<RaftPayload>,
    ) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(request)?;
        encode(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: tonic::Request<RaftPayload>) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
        let rpc: VoteRequest<u64> = decode(request)?;
        encode(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: tonic::Request<RaftPayload>,
    ) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
        let chunk: SnapshotChunk = decode(request)?;
        let rpc = chunk
            .into_request()
            .map_err(|e| tonic::Status::invalid_argument(format!("malformed snapshot chunk: {e}")))?;
        encode(&self.raft.install_snapshot(rpc).await)
    }

    async fn forward(
        &self,
        request: tonic::Request<RaftPayload>,
    ) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
        let commands = waggle_core::codec::decode_commands(&request.into_inner().data)
            .map_err(|e| tonic::Status::invalid_argument(format!("malformed forwarded writes: {e}")))?;
        // Proposed here, never forwarded again: if this node no longer leads, the answers say
        // so and the follower retries. Queued together, they share the leader's next batch.
        let answers = futures_util::future::join_all(
            commands.into_iter().map(|command| super::propose_locally(&self.proposals, command)),
        )
        .await;
        encode(&answers)
    }

    async fn removed(
        &self,
        request: tonic::Request<RaftPayload>,
    ) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
        let id: u64 = decode(request)?;
        // Peers are trusted here as for every Raft message (an AppendEntries can do far more).
        // A removed member hears from no leader again: it stops rather than serve stale state.
        if id == self.node_id {
            tracing::warn!("the leader reports this member removed from the cluster");
            self.removed.send_replace(true);
        }
        encode(&())
    }

    async fn describe(
        &self,
        _request: tonic::Request<RaftPayload>,
    ) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
        encode(&Identity { node_id: self.node_id, client_url: self.client_url.clone() })
    }

    async fn read_index(
        &self,
        _request: tonic::Request<RaftPayload>,
    ) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
        encode(&self.read_index_here().await)
    }

    async fn change_membership(
        &self,
        request: tonic::Request<RaftPayload>,
    ) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
        let change: super::MembershipChange = decode(request)?;
        // Carried out here or refused as "not the leader", never forwarded again.
        let answer = if raft_leads(&self.raft, self.node_id) {
            super::membership::apply(&self.raft, &change).await
        } else {
            Err(ProposeError::NotLeader)
        };
        encode(&answer)
    }
}

impl PeerService {
    async fn read_index_here(&self) -> Result<u64, ProposeError> {
        if !raft_leads(&self.raft, self.node_id) {
            return Err(ProposeError::NotLeader);
        }
        super::read_index(&self.raft, &self.read_model).await
    }
}

fn raft_leads(raft: &Raft, node_id: u64) -> bool {
    let m = raft.metrics();
    let m = m.borrow();
    m.running_state.is_ok() && m.current_leader == Some(node_id)
}

/// Serves the peer protocol on `listener` until the task is aborted.
/// Services above consensus (the leader's) share the listener: `others`.
pub(super) fn serve(
    service: PeerService,
    others: tonic::service::Routes,
    listener: tokio::net::TcpListener,
) -> tokio::task::JoinHandle<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tokio::spawn(async move {
        // Small request/response pairs (heartbeats, forwarded batches, their answers): never
        // wait for Nagle + delayed ACK (40 ms stalls).
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let server = tonic::transport::Server::builder()
            .add_routes(others)
            .add_service(RaftPeerServer::new(service).max_decoding_message_size(64 << 20));
        if let Err(error) = server.serve_with_incoming(incoming).await {
            tracing::error!(?addr, %error, "raft peer server stopped");
        }
    })
}
