//! The `waggle.v1.Kv` gRPC service: every write a transaction through the log, reads from the
//! watch hub's copy of the store (a persistent map: a read clones a pointer), linearizable on
//! request.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use waggle_core::{Command, OpResult, Txn, TxnResult};
use waggle_proto::v1::{self, kv_server::Kv};

use crate::{consensus::Consensus, watch::WatchHub};

pub(crate) struct KvService {
    pub(crate) consensus: Arc<Consensus>,
    pub(crate) hub: Arc<WatchHub>,
    /// Ends open watches when the server stops.
    pub(crate) shutdown: tokio_util::sync::CancellationToken,
}

fn invalid(e: waggle_core::ValidationError) -> Status {
    Status::invalid_argument(format!("invalid request: {e}"))
}

impl KvService {
    /// Runs a transaction: its revision and result.
    async fn run(&self, txn: Txn) -> Result<(u64, TxnResult), Status> {
        match run_txn(&self.consensus, &self.hub, txn).await {
            Ok((revision, result)) => Ok((revision.get(), result)),
            Err(TxnRefusal::Invalid(e)) => Err(invalid(e)),
            Err(TxnRefusal::Full(message) | TxnRefusal::TooLarge(message)) => Err(Status::resource_exhausted(message)),
            Err(TxnRefusal::Failed(e)) => Err(e.into()),
        }
    }
}

/// Why a transaction was not run (or answered).
pub(crate) enum TxnRefusal {
    /// A bad key, value or limit.
    Invalid(waggle_core::ValidationError),
    /// The store is at its quota.
    Full(String),
    /// A read-only transaction's answer would be too large.
    TooLarge(String),
    /// Proposing (or the read barrier) failed, or the state machine refused it.
    Failed(crate::error::ProposeError),
}

/// Runs a transaction for a front-end (gRPC or Consul): checked, then answered from this
/// member's copy after a read barrier if it only reads (as linearizable as the log, without a
/// write), else held to the quota and proposed.
pub(crate) async fn run_txn(
    consensus: &Consensus,
    hub: &WatchHub,
    txn: Txn,
) -> Result<(waggle_core::Revision, TxnResult), TxnRefusal> {
    txn.validate().map_err(TxnRefusal::Invalid)?;
    if txn.is_read_only() {
        consensus.read_barrier().await.map_err(TxnRefusal::Failed)?;
        let (revision, kv, locks) = hub.kv_and_locks();
        let result = waggle_core::read_only_txn(&txn, &kv, &locks)
            .map_err(|e| TxnRefusal::Failed(crate::error::ProposeError::Refused(crate::consensus::Refusal::from(e))))?;
        if txn_answer_too_large(&result) {
            let limit = MAX_ANSWER_BYTES >> 20;
            return Err(TxnRefusal::TooLarge(format!("the answer would exceed {limit} MiB: read less at once")));
        }
        return Ok((revision, result));
    }
    hub.kv_admits(&txn).map_err(|(used, quota)| {
        TxnRefusal::Full(format!("the KV store is full: {used} of its {quota} bytes used (--kv-quota)"))
    })?;
    let applied = consensus.propose(Command::KvTxn { txn }).await.map_err(TxnRefusal::Failed)?;
    let result = applied.txn.ok_or_else(|| {
        TxnRefusal::Failed(crate::error::ProposeError::Unavailable("a transaction answered without a result".into()))
    })?;
    Ok((applied.revision, result))
}

/// The largest read answered at once (keys, values and their framing); larger reads must use
/// a limit.
const MAX_ANSWER_BYTES: usize = 32 << 20;

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

#[tonic::async_trait]
impl Kv for KvService {
    async fn put(&self, request: Request<v1::PutRequest>) -> Result<Response<v1::PutResponse>, Status> {
        let req = request.get_ref();
        let (revision, result) = self.run(waggle_proto::put_txn(req)).await?;
        let previous = match result.results.first() {
            Some(OpResult::Put { previous }) => {
                previous.as_ref().map(|p| waggle_proto::kv_from_core(&req.key, p, false))
            }
            _ => None,
        };
        Ok(Response::new(v1::PutResponse { revision, succeeded: result.succeeded, previous }))
    }

    async fn get(&self, request: Request<v1::GetRequest>) -> Result<Response<v1::GetResponse>, Status> {
        let req = request.get_ref();
        if req.prefix { waggle_core::check_prefix(&req.key) } else { waggle_core::check_key(&req.key) }
            .map_err(invalid)?;
        if req.linearizable {
            self.consensus.read_barrier().await?;
        }
        let (revision, kv) = self.hub.kv();
        let limit = if req.limit == 0 { usize::MAX } else { req.limit as usize };
        let mut kvs = Vec::new();
        let mut more = false;
        if req.prefix {
            let mut bytes = 0usize;
            for (key, entry) in kv.range(req.key.clone()..).take_while(|(k, _)| k.starts_with(req.key.as_str())) {
                if kvs.len() == limit {
                    more = true;
                    break;
                }
                bytes += answer_bytes(key, if req.keys_only { 0 } else { entry.value.len() });
                if bytes > MAX_ANSWER_BYTES {
                    return Err(Status::resource_exhausted(format!(
                        "the answer would exceed {} MiB: read with a limit, or keys_only",
                        MAX_ANSWER_BYTES >> 20
                    )));
                }
                kvs.push(waggle_proto::kv_from_core(key, entry, req.keys_only));
            }
        } else if let Some(entry) = kv.get(&req.key) {
            kvs.push(waggle_proto::kv_from_core(&req.key, entry, req.keys_only));
        }
        Ok(Response::new(v1::GetResponse { revision: revision.get(), kvs, more }))
    }

    async fn delete(&self, request: Request<v1::DeleteRequest>) -> Result<Response<v1::DeleteResponse>, Status> {
        let txn = waggle_proto::delete_txn(request.get_ref()).map_err(invalid)?;
        let (revision, result) = self.run(txn).await?;
        let deleted = match result.results.first() {
            Some(OpResult::Delete { deleted }) => *deleted,
            _ => 0,
        };
        Ok(Response::new(v1::DeleteResponse { revision, succeeded: result.succeeded, deleted }))
    }

    type WatchStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<v1::WatchKvResponse, Status>> + Send>>;

    async fn watch(&self, request: Request<v1::WatchKvRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        if req.prefix { waggle_core::check_prefix(&req.key) } else { waggle_core::check_key(&req.key) }
            .map_err(invalid)?;
        let from = match req.from_revision {
            0 => self.hub.revision().get() + 1,
            n => n,
        };
        let watch = KvWatch { hub: self.hub.clone(), key: req.key, prefix: req.prefix, next: from, done: false };
        let shutdown = self.shutdown.clone();
        let stream = futures_util::stream::unfold(watch, move |mut w| {
            let shutdown = shutdown.clone();
            async move {
                if w.done {
                    return None;
                }
                let item = tokio::select! {
                    item = w.next_message() => item,
                    () = shutdown.cancelled() => return None,
                };
                w.done = item.is_err();
                Some((item, w))
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn txn(&self, request: Request<v1::TxnRequest>) -> Result<Response<v1::TxnResponse>, Status> {
        let txn = waggle_proto::txn_from_wire(request.get_ref()).map_err(invalid)?;
        let (revision, result) = self.run(txn).await?;
        Ok(Response::new(waggle_proto::txn_result_to_wire(revision, &result)))
    }
}

/// A KV watcher's position.
struct KvWatch {
    hub: Arc<WatchHub>,
    key: String,
    prefix: bool,
    /// The next revision to report.
    next: u64,
    done: bool,
}

impl KvWatch {
    fn matches(&self, key: &str) -> bool {
        if self.prefix { key.starts_with(self.key.as_str()) } else { key == self.key }
    }

    /// Waits for the next revisions with changes of the watched keys.
    async fn next_message(&mut self) -> Result<v1::WatchKvResponse, Status> {
        // Woken when the store changes, not on every write.
        let mut signal = self.hub.kv_signal();
        loop {
            let (changes, seen) = match self.hub.kv_since(waggle_core::Revision::new(self.next)) {
                crate::watch::KvRead::Compacted => {
                    return Err(Status::out_of_range(format!(
                        "compacted: revision {} is older than the history kept; read again and watch from the read's revision + 1",
                        self.next
                    )));
                }
                crate::watch::KvRead::Changes(changes, seen) => (changes, seen),
            };
            let events: Vec<v1::KvEvent> = changes
                .iter()
                .flat_map(|(revision, batch)| {
                    batch.iter().filter(|(key, _)| self.matches(key)).map(|(key, entry)| v1::KvEvent {
                        key: key.clone(),
                        kv: entry.as_ref().map(|e| waggle_proto::kv_from_core(key, e, false)),
                        revision: revision.get(),
                    })
                })
                .collect();
            self.next = self.next.max(seen.get() + 1);
            if !events.is_empty() {
                return Ok(v1::WatchKvResponse { revision: seen.get(), events });
            }
            if signal.changed().await.is_err() {
                return Err(Status::unavailable("the server is stopping"));
            }
        }
    }
}
