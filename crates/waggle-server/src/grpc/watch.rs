//! `Registry.Watch` as a stream: a snapshot (chunked) or the batches missed since the
//! watcher's revision, then deltas as the read model publishes them; a watcher that lags is
//! resynced with a fresh snapshot rather than buffered without bound.

use std::{collections::VecDeque, sync::Arc};

use futures_util::Stream;
use tokio::sync::broadcast;
use tonic::Status;
use waggle_core::{Revision, ServiceName};
use waggle_proto::{instance_from_core, v1};

use crate::state::read_model::{Batch, ChangeKind, ReadModel, Start};

/// A batch as a watch message. The event is encoded once per batch and shared by every
/// watcher of the topic (zero-copy fan-out).
fn deltas_message(batch: &Batch) -> v1::WatchResponse {
    let encoded = batch.wire.get_or_init(|| {
        let deltas = batch
            .changes
            .iter()
            .map(|c| v1::Delta {
                kind: match c.kind {
                    ChangeKind::Added => v1::DeltaKind::Added,
                    ChangeKind::Updated => v1::DeltaKind::Updated,
                    ChangeKind::Removed => v1::DeltaKind::Removed,
                } as i32,
                instance: Some(instance_from_core(&c.instance)),
            })
            .collect();
        let event = v1::watch_response::Event::Deltas(v1::Deltas { revision: batch.revision.get(), deltas });
        waggle_proto::EncodedEvent::encode(&event)
    });
    v1::WatchResponse::pre_encoded(encoded.clone())
}

/// Target size of one snapshot message; instances are at most ~20 KiB, so no message comes
/// near gRPC's usual 4 MiB limit.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// A snapshot as one or more messages (see `Snapshot.continued`).
fn snapshot_messages(revision: Revision, instances: &[Arc<waggle_core::Instance>]) -> Vec<v1::WatchResponse> {
    let mut chunks = vec![Vec::new()];
    let mut size = 0;
    for instance in instances {
        let wire = instance_from_core(instance);
        let len = prost::Message::encoded_len(&wire);
        if size + len > SNAPSHOT_CHUNK_BYTES && chunks.last().is_some_and(|c| !c.is_empty()) {
            chunks.push(Vec::new());
            size = 0;
        }
        size += len;
        if let Some(chunk) = chunks.last_mut() {
            chunk.push(wire);
        }
    }
    let n = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(idx, instances)| {
            v1::WatchResponse::new(v1::watch_response::Event::Snapshot(v1::Snapshot {
                revision: revision.get(),
                instances,
                continued: idx + 1 < n,
            }))
        })
        .collect()
}

/// One watcher's position: its subscription, the revision it is up to date with, and the
/// messages ready to go.
struct Watcher {
    read_model: Arc<ReadModel>,
    service: Option<ServiceName>,
    /// Where to resume on the next (re)subscription; `None` means start with a snapshot.
    from: Option<Revision>,
    rx: Option<broadcast::Receiver<Arc<Batch>>>,
    last: Revision,
    ready: VecDeque<v1::WatchResponse>,
}

impl Watcher {
    /// Subscribes and queues the start: a snapshot, or the missed batches plus one message at
    /// the current revision (so a resumed watcher learns it is up to date even if nothing
    /// changed while it was away).
    fn subscribe(&mut self) {
        let sub = self.read_model.subscribe(self.service.as_ref(), self.from);
        self.rx = Some(sub.rx);
        self.last = match sub.start {
            Start::Snapshot { revision, instances } => {
                self.ready.extend(snapshot_messages(revision, &instances));
                revision
            }
            Start::Replay { current, batches } => {
                self.ready.extend(batches.iter().map(|b| deltas_message(b)));
                if batches.last().is_none_or(|b| b.revision < current) {
                    self.ready.push_back(deltas_message(&Batch::new(current, Vec::new(), false)));
                }
                current
            }
        };
    }

    /// The next message, or `None` when the read model is gone.
    async fn next(&mut self) -> Option<v1::WatchResponse> {
        loop {
            if let Some(mut message) = self.ready.pop_front() {
                message.incarnation = self.read_model.history();
                return Some(message);
            }
            let Some(rx) = &mut self.rx else {
                self.subscribe();
                continue;
            };
            match rx.recv().await {
                Ok(batch) if batch.resync => self.resync(),
                Ok(batch) if batch.revision > self.last => {
                    self.last = batch.revision;
                    self.ready.push_back(deltas_message(&batch));
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(skipped = n, "watcher lagged; resyncing with a snapshot");
                    self.resync();
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    fn resync(&mut self) {
        self.from = None;
        self.rx = None;
    }
}

/// A watch as a stream that tonic polls directly: no task and no channel per watcher, so a
/// change reaches each watcher with one wake-up, and a departed client simply drops it.
pub(super) fn watch_stream(
    read_model: Arc<ReadModel>,
    service: Option<ServiceName>,
    from: Option<Revision>,
) -> impl Stream<Item = Result<v1::WatchResponse, Status>> + Send {
    let watcher = Watcher { read_model, service, from, rx: None, last: Revision::INITIAL, ready: VecDeque::new() };
    futures_util::stream::unfold(watcher, |mut w| async move { w.next().await.map(|m| (Ok(m), w)) })
}
