//! Group commit for the Raft log: one thread owns every write to the log and its metadata,
//! and commits everything queued since its last commit in one redb transaction with one
//! fsync. Appends return as soon as their entries are queued (and readable from the cache in
//! `log_store`); openraft is told they are durable when the batch's commit returns.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread,
};

use openraft::storage::LogFlushed;

use super::{
    TypeConfig,
    storage::{LOG, META, Storage},
};

/// Most operations folded into one transaction.
const MAX_BATCH: usize = 4096;

/// A write the thread performs, in submission order.
pub(super) enum WriteOp {
    /// Log entries (index, encoded record); `done` is called once they are durable.
    Append { entries: Vec<(u64, Vec<u8>)>, done: Box<dyn FnOnce(Result<(), String>) + Send> },
    /// Remove entries with index ≥ `from`.
    Truncate { from: u64, done: tokio::sync::oneshot::Sender<Result<(), String>> },
    /// Remove entries with index ≤ `upto` and record the purge point.
    Purge { upto: u64, last_purged: Vec<u8>, done: tokio::sync::oneshot::Sender<Result<(), String>> },
    /// Write a metadata key (the vote); `done` is told once durable.
    Meta { key: &'static str, value: Vec<u8>, done: tokio::sync::oneshot::Sender<Result<(), String>> },
}

impl WriteOp {
    fn complete(self, result: Result<(), String>) {
        match self {
            WriteOp::Append { done, .. } => done(result),
            WriteOp::Truncate { done, .. } | WriteOp::Purge { done, .. } | WriteOp::Meta { done, .. } => {
                let _ = done.send(result);
            }
        }
    }
}

/// Wraps openraft's flush callback.
pub(super) fn flushed(callback: LogFlushed<TypeConfig>) -> Box<dyn FnOnce(Result<(), String>) + Send> {
    Box::new(move |result| callback.log_io_completed(result.map_err(std::io::Error::other)))
}

/// Starts the writer thread; it ends when every sender is dropped. `durable` is raised to the
/// highest log index known to be on disk after each commit.
pub(super) fn spawn(storage: Arc<Storage>, durable: Arc<AtomicU64>) -> std::io::Result<mpsc::Sender<WriteOp>> {
    let (tx, rx) = mpsc::channel::<WriteOp>();
    thread::Builder::new().name("waggle-log-writer".into()).spawn(move || {
        // After a failed commit nothing more is written: a later commit could leave a hole in
        // the log. openraft treats the error as fatal and stops.
        let mut failed: Option<String> = None;
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            if let Some(e) = &failed {
                for op in batch {
                    op.complete(Err(format!("the log is read-only after an earlier failure: {e}")));
                }
                continue;
            }
            let started = std::time::Instant::now();
            let result = commit(&storage, &batch).map_err(|e| e.to_string());
            tracing::trace!(ops = batch.len(), micros = started.elapsed().as_micros() as u64, "log batch");
            match &result {
                Ok(()) => {
                    let highest = batch
                        .iter()
                        .filter_map(|op| match op {
                            WriteOp::Append { entries, .. } => entries.last().map(|(i, _)| *i),
                            _ => None,
                        })
                        .max();
                    if let Some(index) = highest {
                        durable.fetch_max(index, Ordering::Release);
                    }
                }
                Err(e) => {
                    tracing::error!("log write failed: {e}");
                    failed = Some(e.clone());
                }
            }
            for op in batch {
                op.complete(result.clone());
            }
        }
    })?;
    Ok(tx)
}

/// Applies a batch in order in one transaction, fsynced on commit (redb's default
/// `Durability::Immediate`).
fn commit(storage: &Storage, batch: &[WriteOp]) -> Result<(), redb::Error> {
    let txn = storage.db().begin_write()?;
    {
        let mut log = txn.open_table(LOG)?;
        let mut meta = txn.open_table(META)?;
        for op in batch {
            match op {
                WriteOp::Append { entries, .. } => {
                    for (index, bytes) in entries {
                        log.insert(index, bytes.as_slice())?;
                    }
                }
                WriteOp::Truncate { from, .. } => {
                    log.retain_in(*from.., |_, _| false)?;
                }
                WriteOp::Purge { upto, last_purged, .. } => {
                    meta.insert("last_purged", last_purged.as_slice())?;
                    log.retain_in(..=*upto, |_, _| false)?;
                }
                WriteOp::Meta { key, value, .. } => {
                    meta.insert(*key, value.as_slice())?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}
