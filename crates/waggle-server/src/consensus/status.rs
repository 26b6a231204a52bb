//! Readings of this member's Raft progress: [`NodeStatus`] (public, through `Server::status`)
//! and the members as `ListMembers` reports them.

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
