//! KV use cases: transactions (every write one, through the log, held to the quota; read-only
//! ones answered from this member's copy after a read barrier) and reads of a key or a prefix,
//! capped in size.

use std::sync::Arc;

use waggle_core::{
    Applied, Command, KvEntry, OpResult, Revision, Txn, TxnResult,
    acl::{Access, Resource},
};

use super::{Caller, Node, NodeError};

/// The largest read answered at once (keys, values and their framing); larger reads must use
/// a limit.
pub(crate) const MAX_ANSWER_BYTES: usize = 32 << 20;

/// What an entry costs in an answer: its key, its value, and at most 64 bytes of framing
/// (revisions, version, flags, session).
fn answer_bytes(key: &str, value: usize) -> usize {
    key.len() + value + 64
}

/// Whether a read-only transaction's answer is over [`MAX_ANSWER_BYTES`] (nothing was written,
/// so it can be refused).
fn txn_answer_too_large(result: &TxnResult) -> bool {
    let bytes: usize = result
        .results
        .iter()
        .map(|r| match r {
            OpResult::Get { entries } => entries.iter().map(|(k, e)| answer_bytes(k, e.value.len())).sum(),
            _ => 64,
        })
        .sum();
    bytes > MAX_ANSWER_BYTES
}

/// A read of one key or of every key under a prefix.
pub(crate) struct KvRange<'a> {
    pub(crate) key: &'a str,
    pub(crate) prefix: bool,
    /// Most entries (0: no limit).
    pub(crate) limit: usize,
    /// Values are not returned (they do not count against the size cap).
    pub(crate) keys_only: bool,
    pub(crate) linearizable: bool,
}

impl Node {
    /// Runs a transaction: checked, then answered from this member's copy after a read barrier
    /// if it only reads (as linearizable as the log, without a write), else held to the quota
    /// and proposed. Its revision and result.
    pub(crate) async fn run_txn(&self, caller: &Caller, txn: Txn) -> Result<(Revision, TxnResult), NodeError> {
        txn.validate()?;
        let read_model = self.read_model();
        let command = Command::KvTxn { txn };
        self.precheck(caller, &command)?;
        let Command::KvTxn { txn } = &command else { return Err(NodeError::Unavailable("not a transaction".into())) };
        if txn.is_read_only() {
            self.read_barrier().await?;
            let (revision, kv, locks) = read_model.kv_and_locks();
            let result = waggle_core::read_only_txn(txn, &kv, &locks)?;
            if txn_answer_too_large(&result) {
                let limit = MAX_ANSWER_BYTES >> 20;
                return Err(NodeError::TooLarge(format!("the answer would exceed {limit} MiB: read less at once")));
            }
            return Ok((revision, result));
        }
        read_model.kv_admits(txn).map_err(|(used, quota)| {
            NodeError::TooLarge(format!("the KV store is full: {used} of its {quota} bytes used (--kv-quota)"))
        })?;
        match self.write_prechecked(caller, command).await? {
            Applied::Txn { revision, result } => Ok((revision, result)),
            _ => Err(NodeError::Unavailable("a transaction answered without a result".into())),
        }
    }

    /// Reads a key or a prefix: the revision read at, the entries in key order, and whether a
    /// limit left more out. An answer over [`MAX_ANSWER_BYTES`] is refused.
    pub(crate) async fn kv_range(
        &self,
        caller: &Caller,
        range: KvRange<'_>,
    ) -> Result<(Revision, Vec<(String, Arc<KvEntry>)>, bool), NodeError> {
        if range.prefix { waggle_core::check_prefix(range.key) } else { waggle_core::check_key(range.key) }?;
        if range.linearizable {
            self.read_barrier().await?;
        }
        let (revision, kv) = self.read_model().kv();
        let limit = if range.limit == 0 { usize::MAX } else { range.limit };
        let mut entries = Vec::new();
        let mut more = false;
        if range.prefix {
            let mut bytes = 0usize;
            let readable = kv
                .range(range.key.to_owned()..)
                .take_while(|(k, _)| k.starts_with(range.key))
                .filter(|(k, _)| caller.may(Resource::Key, k, Access::Read));
            for (key, entry) in readable {
                if entries.len() == limit {
                    more = true;
                    break;
                }
                bytes += answer_bytes(key, if range.keys_only { 0 } else { entry.value.len() });
                if bytes > MAX_ANSWER_BYTES {
                    return Err(NodeError::TooLarge(format!(
                        "the answer would exceed {} MiB: read with a limit, or keys_only",
                        MAX_ANSWER_BYTES >> 20
                    )));
                }
                entries.push((key.clone(), entry.clone()));
            }
        } else if let Some(entry) = kv.get(range.key) {
            caller.check(Resource::Key, range.key, Access::Read)?;
            entries.push((range.key.to_owned(), entry.clone()));
        }
        Ok((revision, entries, more))
    }
}
