//! The `waggle.v1.Kv` service: transactions (every write one, through the log) and reads of
//! the node's copy of the store (a persistent map: a read clones a pointer), linearizable on
//! request, and watches of keys or prefixes from a revision.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::status::{BoxStream, caller, token_of, while_authorized};
use waggle_core::{
    OpResult, Txn, TxnResult,
    acl::{Access, Resource},
};
use waggle_proto::v1::{self, kv_server::Kv};

use crate::{
    node::{Caller, KvRange, Node, NodeError},
    state::read_model::{KvRead, ReadModel},
};

pub(crate) struct KvService {
    pub(crate) node: Arc<Node>,
}

fn invalid(e: waggle_core::ValidationError) -> Status {
    NodeError::BadInput(e).into()
}

impl KvService {
    /// Runs a transaction: its revision and result.
    async fn run(&self, caller: &Caller, txn: Txn) -> Result<(u64, TxnResult), Status> {
        let (revision, result) = self.node.run_txn(caller, txn).await?;
        Ok((revision.get(), result))
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn put(&self, request: Request<v1::PutRequest>) -> Result<Response<v1::PutResponse>, Status> {
        let caller = caller(&self.node, token_of(&request)).await?;
        let req = request.get_ref();
        let (revision, result) = self.run(&caller, waggle_proto::put_txn(req)).await?;
        let previous = match result.results.first() {
            Some(OpResult::Put { previous }) => {
                previous.as_ref().map(|p| waggle_proto::kv_from_core(&req.key, p, false))
            }
            _ => None,
        };
        Ok(Response::new(v1::PutResponse { revision, succeeded: result.succeeded, previous }))
    }

    async fn get(&self, request: Request<v1::GetRequest>) -> Result<Response<v1::GetResponse>, Status> {
        let caller = caller(&self.node, token_of(&request)).await?;
        let req = request.get_ref();
        let range = KvRange {
            key: &req.key,
            prefix: req.prefix,
            limit: req.limit as usize,
            keys_only: req.keys_only,
            linearizable: req.linearizable,
        };
        let (revision, entries, more) = self.node.kv_range(&caller, range).await?;
        let kvs = entries.iter().map(|(key, entry)| waggle_proto::kv_from_core(key, entry, req.keys_only)).collect();
        Ok(Response::new(v1::GetResponse { revision: revision.get(), kvs, more }))
    }

    async fn delete(&self, request: Request<v1::DeleteRequest>) -> Result<Response<v1::DeleteResponse>, Status> {
        let caller = caller(&self.node, token_of(&request)).await?;
        let txn = waggle_proto::delete_txn(request.get_ref()).map_err(invalid)?;
        let (revision, result) = self.run(&caller, txn).await?;
        let deleted = match result.results.first() {
            Some(OpResult::Delete { deleted }) => *deleted,
            _ => 0,
        };
        Ok(Response::new(v1::DeleteResponse { revision, succeeded: result.succeeded, deleted }))
    }

    type WatchStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<v1::WatchKvResponse, Status>> + Send>>;

    async fn watch(&self, request: Request<v1::WatchKvRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let caller = caller(&self.node, token_of(&request)).await?;
        let req = request.into_inner();
        if req.prefix { waggle_core::check_prefix(&req.key) } else { waggle_core::check_key(&req.key) }
            .map_err(invalid)?;
        if !req.prefix {
            caller.check(Resource::Key, &req.key, Access::Read)?;
        }
        let read_model = self.node.read_model().clone();
        let from = match req.from_revision {
            0 => read_model.revision().get() + 1,
            n => n,
        };
        let guard = caller.clone();
        let watch = KvWatch { read_model, caller, key: req.key, prefix: req.prefix, next: from, done: false };
        let shutdown = self.node.shutdown_token().clone();
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
        let stream: BoxStream<v1::WatchKvResponse> = Box::pin(stream);
        Ok(Response::new(while_authorized(stream, self.node.clone(), guard)))
    }

    async fn txn(&self, request: Request<v1::TxnRequest>) -> Result<Response<v1::TxnResponse>, Status> {
        let caller = caller(&self.node, token_of(&request)).await?;
        let txn = waggle_proto::txn_from_wire(request.get_ref()).map_err(invalid)?;
        let (revision, result) = self.run(&caller, txn).await?;
        Ok(Response::new(waggle_proto::txn_result_to_wire(revision, &result)))
    }
}

/// A KV watcher's position.
struct KvWatch {
    read_model: Arc<ReadModel>,
    /// Events of keys it may not read are left out.
    caller: Caller,
    key: String,
    prefix: bool,
    /// The next revision to report.
    next: u64,
    done: bool,
}

impl KvWatch {
    fn matches(&self, key: &str) -> bool {
        let watched = if self.prefix { key.starts_with(self.key.as_str()) } else { key == self.key };
        watched && self.caller.may(Resource::Key, key, Access::Read)
    }

    /// Waits for the next revisions with changes of the watched keys.
    async fn next_message(&mut self) -> Result<v1::WatchKvResponse, Status> {
        // Woken when the store changes, not on every write.
        let mut signal = self.read_model.kv_signal();
        loop {
            let (changes, seen) = match self.read_model.kv_since(waggle_core::Revision::new(self.next)) {
                KvRead::Compacted => {
                    return Err(Status::out_of_range(format!(
                        "compacted: revision {} is older than the history kept; read again and watch from the read's revision + 1",
                        self.next
                    )));
                }
                KvRead::Changes(changes, seen) => (changes, seen),
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
