//! The `LeaderPeer` service (`proto/waggle/v1/raft.proto`): what a follower asks of the leader
//! that is not Raft — renewing a session (only the leader holds deadlines) and taking a TTL
//! check report. Served on the peer address beside Raft's own service, over the same
//! connections; payloads are serde-JSON like Raft's (only Waggle members of one version talk
//! this protocol).

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use waggle_proto::v1::{
    RaftPayload,
    leader_peer_client::LeaderPeerClient,
    leader_peer_server::{LeaderPeer, LeaderPeerServer},
};

use super::{Leader, checks::Report, checks::ReportFailure};
use crate::consensus::{ProposeError, decode_peer_request, encode_peer_answer, peer_answer, peer_payload};

/// How long a follower waits for the leader to answer a keepalive or a check report.
const DEADLINE: Duration = Duration::from_secs(1);

/// The service, answering once the node's [`Leader`] is set (the peer listener starts before
/// consensus has elected anyone; until then every request is "not the leader").
pub(crate) fn routes(leader: Arc<OnceLock<Arc<Leader>>>) -> tonic::service::Routes {
    tonic::service::Routes::new(LeaderPeerServer::new(PeerService { leader }))
}

struct PeerService {
    leader: Arc<OnceLock<Arc<Leader>>>,
}

impl PeerService {
    /// The leader's duties, if this member leads with a quorum's recent acknowledgement.
    fn leading(&self) -> Option<&Leader> {
        self.leader.get().map(|l| &**l).filter(|l| l.consensus.leads_with_quorum())
    }
}

#[tonic::async_trait]
impl LeaderPeer for PeerService {
    async fn keep_alive(
        &self,
        request: tonic::Request<RaftPayload>,
    ) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
        let session: u64 = decode_peer_request(request)?;
        // Only a running leader holds deadlines; anything else must not pretend to renew.
        let answer: Result<Option<u64>, ProposeError> = match self.leading() {
            Some(leader) => Ok(leader.renew_here(session)),
            None => Err(ProposeError::NotLeader),
        };
        encode_peer_answer(&answer)
    }

    async fn report_check(
        &self,
        request: tonic::Request<RaftPayload>,
    ) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
        let report: Report = decode_peer_request(request)?;
        // Taken here or refused as "not the leader", never forwarded again.
        let answer = match self.leading() {
            Some(leader) => leader.take_report(report).await,
            None => Err(ReportFailure::Propose(ProposeError::NotLeader)),
        };
        encode_peer_answer(&answer)
    }
}

/// The leader's client, over the channel consensus keeps to it.
fn client(leader: &Leader) -> Result<LeaderPeerClient<tonic::transport::Channel>, ProposeError> {
    leader.consensus.leader_channel().map(LeaderPeerClient::new)
}

/// Renews `session` on the leader: its TTL in ms, or `None` if the leader does not know it.
pub(super) async fn keep_alive(leader: &Leader, session: u64) -> Result<Option<u64>, ProposeError> {
    let mut client = client(leader)?;
    // A keepalive is idempotent: whatever kept it from the leader, it may be sent again.
    let answer = tokio::time::timeout(DEADLINE, client.keep_alive(peer_payload(&session)?))
        .await
        .map_err(|_| ProposeError::LeaderUnreachable)?
        .map_err(|_| ProposeError::LeaderUnreachable)?;
    peer_answer(answer)?
}

/// Sends a TTL check report to the leader: the revision that wrote it, if any.
pub(super) async fn report_check(leader: &Leader, report: &Report) -> Result<Option<u64>, ReportFailure> {
    let unreachable = || ReportFailure::Propose(ProposeError::LeaderUnreachable);
    let mut client = client(leader).map_err(ReportFailure::Propose)?;
    let request = peer_payload(report).map_err(ReportFailure::Propose)?;
    // A report is idempotent: whatever kept it from the leader, it may be sent again.
    let answer = tokio::time::timeout(DEADLINE, client.report_check(request))
        .await
        .map_err(|_| unreachable())?
        .map_err(|_| unreachable())?;
    serde_json::from_slice(&answer.into_inner().data).map_err(|_| unreachable())?
}
