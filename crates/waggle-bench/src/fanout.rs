//! Fan-out measurement: writers record when each change was acknowledged (by revision),
//! watchers record when they received it; latency is receipt − acknowledgement (0 when the
//! event beat the acknowledgement).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use crate::stats::Recorder;

/// A watcher's handle for reporting receipts.
pub(crate) type Receipts = mpsc::UnboundedSender<(i64, Instant)>;

/// Collects acknowledgements and receipts.
pub(crate) struct FanOut {
    acks: Arc<Mutex<HashMap<i64, Instant>>>,
    tx: Receipts,
    rx: mpsc::UnboundedReceiver<(i64, Instant)>,
}

/// A writer's handle for recording acknowledgements.
#[derive(Clone)]
pub(crate) struct Acks(Arc<Mutex<HashMap<i64, Instant>>>);

impl Acks {
    pub(crate) fn ack(&self, revision: i64, at: Instant) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).insert(revision, at);
    }
}

impl FanOut {
    pub(crate) fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        FanOut { acks: Arc::default(), tx, rx }
    }

    pub(crate) fn receipts(&self) -> Receipts {
        self.tx.clone()
    }

    pub(crate) fn acks(&self) -> Acks {
        Acks(self.acks.clone())
    }

    /// Waits for `expected` receipts of acknowledged revisions (or `grace` without progress)
    /// and returns their latencies. Receipts for revisions never acknowledged (setup writes)
    /// are ignored.
    pub(crate) async fn collect(mut self, expected: u64, grace: Duration) -> Recorder {
        drop(self.tx);
        let mut pending: Vec<(i64, Instant)> = Vec::new();
        let mut recorder = Recorder::new();
        let mut matched = 0u64;
        while matched < expected {
            match tokio::time::timeout(grace, self.rx.recv()).await {
                Ok(Some(receipt)) => pending.push(receipt),
                Ok(None) | Err(_) => break,
            }
            // Match in batches to keep the lock short.
            if pending.len() >= 1024 || self.rx.is_empty() {
                let acks = self.acks.lock().unwrap_or_else(PoisonError::into_inner);
                for (revision, at) in pending.drain(..) {
                    if let Some(acked) = acks.get(&revision) {
                        recorder.record(at.saturating_duration_since(*acked));
                        matched += 1;
                    }
                }
            }
        }
        recorder.errors = expected.saturating_sub(matched);
        recorder
    }
}
