//! The Raft peer network. A single-node cluster never dials a peer; the clustered transport
//! (a tonic service per node) arrives with multi-node support.

use openraft::{
    BasicNode, RaftNetwork, RaftNetworkFactory,
    error::{InstallSnapshotError, RPCError, RaftError, Unreachable},
    network::RPCOption,
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
        VoteResponse,
    },
};

use super::TypeConfig;

/// Creates [`Network`] clients; every peer is unreachable until clustering lands.
pub(crate) struct Network;

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Network;

    async fn new_client(&mut self, _target: u64, _node: &BasicNode) -> Self::Network {
        Network
    }
}

fn unreachable<E: std::error::Error>() -> RPCError<u64, BasicNode, E> {
    let io = std::io::Error::new(std::io::ErrorKind::Unsupported, "this node runs as a single-member cluster");
    RPCError::Unreachable(Unreachable::new(&io))
}

impl RaftNetwork<TypeConfig> for Network {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>> {
        Err(unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(unreachable())
    }
}
