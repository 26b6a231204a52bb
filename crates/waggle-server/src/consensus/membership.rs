//! Dynamic membership: `waggle members add | remove`. A new member joins as a learner, catches
//! up from the leader (log entries, or a snapshot when the log it needs was purged), and only
//! then becomes a voter, so adding a member never costs the cluster its quorum while the new
//! node is still empty.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::{BasicNode, ChangeMembers, error::ClientWriteError, error::RaftError};

use super::ProposeError;
use super::{Consensus, Raft, Refusal, RefusalKind};

/// How long an added member may take to catch up before it is promoted to voter. Past this it
/// stays a learner and the caller is told why.
const CATCH_UP_PATIENCE: Duration = Duration::from_secs(30);

/// A change to the cluster's membership, as the leader carries it out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum MembershipChange {
    /// Add member `id` at peer address `addr`: a learner first, then (unless `learner`) a voter.
    Add {
        /// The new member's node id.
        id: u64,
        /// Its peer address.
        addr: String,
        /// Stop at learner (a read replica that does not vote).
        learner: bool,
    },
    /// Remove member `id`, voter or learner.
    Remove {
        /// The member's node id.
        id: u64,
    },
}

fn refused(kind: RefusalKind, message: String) -> ProposeError {
    ProposeError::Refused(Refusal { kind, message })
}

impl MembershipChange {
    /// Checks the change against the current membership (on the leader, before proposing).
    fn check(&self, voters: &BTreeSet<u64>, nodes: &BTreeMap<u64, BasicNode>) -> Result<(), ProposeError> {
        match self {
            MembershipChange::Add { id, addr, learner } => {
                if *id == 0 {
                    return Err(refused(RefusalKind::Invalid, "member ids start at 1".into()));
                }
                match addr.parse::<std::net::SocketAddr>() {
                    Err(_) => {
                        return Err(refused(RefusalKind::Invalid, format!("peer address {addr:?} is not IP:PORT")));
                    }
                    // Peers dial this address: it must name one host and a real port.
                    Ok(a) if a.ip().is_unspecified() || a.ip().is_multicast() || a.port() == 0 => {
                        return Err(refused(
                            RefusalKind::Invalid,
                            format!("peer address {addr} cannot be dialled (unspecified or multicast IP, or port 0)"),
                        ));
                    }
                    Ok(_) => {}
                }
                if let Some(node) = nodes.get(id)
                    && node.addr != *addr
                {
                    return Err(refused(
                        RefusalKind::Conflict,
                        format!("member {id} already exists at {}; remove it first", node.addr),
                    ));
                }
                if let Some((other, _)) = nodes.iter().find(|(other, node)| *other != id && node.addr == *addr) {
                    return Err(refused(RefusalKind::Conflict, format!("member {other} already uses {addr}")));
                }
                if *learner && voters.contains(id) {
                    return Err(refused(
                        RefusalKind::Precondition,
                        format!("member {id} is a voter; remove it first to re-add it as a learner"),
                    ));
                }
                Ok(())
            }
            MembershipChange::Remove { id } => {
                if !nodes.contains_key(id) {
                    return Err(refused(RefusalKind::NotFound, format!("member {id} is not in the cluster")));
                }
                if voters.len() == 1 && voters.contains(id) {
                    return Err(refused(RefusalKind::Precondition, format!("member {id} is the last voter")));
                }
                Ok(())
            }
        }
    }
}

fn write_error(e: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> ProposeError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => ProposeError::NotLeader,
        // Another change is still being committed: try again shortly.
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            openraft::error::ChangeMembershipError::InProgress(e),
        )) => ProposeError::Unavailable(format!("{e}; retry shortly")),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            refused(RefusalKind::Precondition, e.to_string())
        }
        e => ProposeError::Unavailable(e.to_string()),
    }
}

/// Carries out `change` on this node, which must lead.
pub(super) async fn apply(raft: &Raft, change: &MembershipChange) -> Result<(), ProposeError> {
    let membership = raft.metrics().borrow().membership_config.clone();
    let voters: BTreeSet<u64> = membership.membership().voter_ids().collect();
    let nodes: BTreeMap<u64, BasicNode> =
        membership.membership().nodes().map(|(id, node)| (*id, node.clone())).collect();
    change.check(&voters, &nodes)?;
    match change {
        MembershipChange::Add { id, addr, learner } => {
            // Raft messages do not name their target: a member added under the wrong id
            // would vote twice. Whoever answers at the address must be that node.
            if !nodes.contains_key(id) {
                let who = super::network::identify(addr).await.map_err(|_| {
                    ProposeError::Unavailable(format!(
                        "nothing answers at {addr}: start the new member first with `waggle server --node-id {id} --peer-addr {addr} --join`"
                    ))
                })?;
                if who.node_id != *id {
                    return Err(refused(
                        RefusalKind::Conflict,
                        format!("the node at {addr} is node {}, not node {id}", who.node_id),
                    ));
                }
            }
            let index = if nodes.contains_key(id) {
                raft.metrics().borrow().last_log_index.unwrap_or(0)
            } else {
                raft.add_learner(*id, BasicNode { addr: addr.clone() }, false).await.map_err(write_error)?.log_id.index
            };
            if !voters.contains(id) {
                wait_caught_up(raft, *id, index).await?;
            }
            if !learner && !voters.contains(id) {
                raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([*id])), false)
                    .await
                    .map_err(write_error)?;
            }
        }
        MembershipChange::Remove { id } => {
            let change = if voters.contains(id) {
                ChangeMembers::RemoveVoters(BTreeSet::from([*id]))
            } else {
                ChangeMembers::RemoveNodes(BTreeSet::from([*id]))
            };
            raft.change_membership(change, false).await.map_err(write_error)?;
            if let Some(node) = nodes.get(id) {
                super::network::Forwarder::notify_removed(&node.addr, *id).await;
            }
        }
    }
    Ok(())
}

/// Waits until the leader has replicated to learner `id` at least up to `index` (the entry
/// that added it).
async fn wait_caught_up(raft: &Raft, id: u64, index: u64) -> Result<(), ProposeError> {
    let caught_up = raft
        .wait(Some(CATCH_UP_PATIENCE))
        .metrics(
            |m| {
                let matched = m.replication.as_ref().and_then(|r| r.get(&id).copied().flatten());
                // Only a leader tracks replication: losing leadership ends the wait.
                matched.is_some_and(|l| l.index >= index) || m.current_leader != Some(m.id)
            },
            "a new member catching up",
        )
        .await;
    match caught_up {
        Ok(m) if m.current_leader != Some(m.id) => Err(ProposeError::NotLeader),
        Ok(_) => Ok(()),
        Err(_) => Err(ProposeError::Unavailable(format!(
            "member {id} was added as a learner but has not caught up within {}s; is `waggle server --join` running at its peer address? It stays a learner until `waggle members add` is repeated",
            CATCH_UP_PATIENCE.as_secs()
        ))),
    }
}

impl Consensus {
    /// Changes the membership: on the leader directly, otherwise forwarded to it once.
    pub(crate) async fn change_membership(&self, change: MembershipChange) -> Result<(), ProposeError> {
        let Some(forwarder) = &self.forwarder else {
            return Err(refused(
                RefusalKind::Precondition,
                "this server runs as a single node; start it with --initial-cluster to change members".into(),
            ));
        };
        // Like a write, a change that meets an election follows leadership until it settles.
        // Retrying is safe: adding a member is idempotent, and a removal that reported "not the
        // leader" may have committed before leadership moved, so its retry may find the member
        // already gone.
        let deadline = tokio::time::Instant::now() + super::FORWARD_PATIENCE;
        let mut retried = false;
        loop {
            let result = if self.is_leader() {
                apply(&self.raft, &change).await
            } else {
                match self.leader_peer_addr() {
                    Some(addr) => match forwarder.change_membership(&addr, &change).await {
                        // Answer with the membership as changed, here too.
                        Ok(()) => self.applied_here(&change).await,
                        Err(e) => Err(e),
                    },
                    None => Err(ProposeError::NotLeader),
                }
            };
            match result {
                Err(ProposeError::NotLeader | ProposeError::LeaderUnreachable)
                    if tokio::time::Instant::now() < deadline =>
                {
                    retried = true;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(ProposeError::Refused(r))
                    if retried
                        && r.kind == RefusalKind::NotFound
                        && matches!(change, MembershipChange::Remove { .. }) =>
                {
                    return Ok(());
                }
                result => return result,
            }
        }
    }
}

impl Consensus {
    /// Waits (at most 5 s) until this node has applied a change the leader committed.
    async fn applied_here(&self, change: &MembershipChange) -> Result<(), ProposeError> {
        let done = |m: &openraft::RaftMetrics<u64, BasicNode>| {
            let membership = m.membership_config.membership();
            match change {
                MembershipChange::Add { id, learner, .. } => {
                    membership.get_node(id).is_some() && (*learner || membership.voter_ids().any(|v| v == *id))
                }
                MembershipChange::Remove { id } => membership.get_node(id).is_none(),
            }
        };
        self.raft
            .wait(Some(Duration::from_secs(5)))
            .metrics(done, "a membership change applied here")
            .await
            .map(|_| ())
            .map_err(|_| ProposeError::Unavailable("the change is committed but not yet applied on this member".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> (BTreeSet<u64>, BTreeMap<u64, BasicNode>) {
        let nodes: BTreeMap<u64, BasicNode> =
            (1..=3).map(|i| (i, BasicNode { addr: format!("127.0.0.1:830{i}") })).collect();
        (nodes.keys().copied().collect(), nodes)
    }

    fn kind(r: Result<(), ProposeError>) -> Option<RefusalKind> {
        match r {
            Err(ProposeError::Refused(r)) => Some(r.kind),
            _ => None,
        }
    }

    #[test]
    fn changes_are_checked_against_the_membership() {
        let (voters, nodes) = cluster();
        let add = |id, addr: &str| MembershipChange::Add { id, addr: addr.into(), learner: false };
        assert!(add(4, "127.0.0.1:8304").check(&voters, &nodes).is_ok());
        // Re-adding with the same address is idempotent (a retried `members add`).
        assert!(add(3, "127.0.0.1:8303").check(&voters, &nodes).is_ok());
        assert_eq!(kind(add(3, "127.0.0.1:9999").check(&voters, &nodes)), Some(RefusalKind::Conflict));
        assert_eq!(kind(add(4, "127.0.0.1:8301").check(&voters, &nodes)), Some(RefusalKind::Conflict));
        assert_eq!(kind(add(4, "not an address").check(&voters, &nodes)), Some(RefusalKind::Invalid));
        assert_eq!(kind(add(0, "127.0.0.1:8304").check(&voters, &nodes)), Some(RefusalKind::Invalid));
        assert_eq!(kind(add(4, "0.0.0.0:8304").check(&voters, &nodes)), Some(RefusalKind::Invalid));
        assert_eq!(kind(add(4, "127.0.0.1:0").check(&voters, &nodes)), Some(RefusalKind::Invalid));
        let learner = MembershipChange::Add { id: 3, addr: "127.0.0.1:8303".into(), learner: true };
        assert_eq!(kind(learner.check(&voters, &nodes)), Some(RefusalKind::Precondition));
        let remove = |id| MembershipChange::Remove { id };
        assert!(remove(2).check(&voters, &nodes).is_ok());
        assert_eq!(kind(remove(9).check(&voters, &nodes)), Some(RefusalKind::NotFound));
        let one = BTreeSet::from([1]);
        assert_eq!(kind(remove(1).check(&one, &nodes)), Some(RefusalKind::Precondition));
    }
}
