//! The Raft log on redb: entries by index plus vote / purge-point metadata.
//!
//! Writes go through the group-commit thread (`log_writer`). Entries are readable from an
//! in-memory cache from the moment `append` returns; they leave it only once durable and when
//! it holds more than `CACHE_ENTRIES` entries or `CACHE_COMMANDS` commands, so the state
//! machine and replication rarely read them back from disk.

// openraft's trait signatures fix the error type (`StorageError`, ~224 bytes); boxing it in
// helpers would only add conversions at every call.
#![allow(clippy::result_large_err)]

use std::{
    collections::BTreeMap,
    fmt::Debug,
    ops::{Bound, RangeBounds},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
};

use openraft::{
    AnyError, Entry, LogId, LogState, RaftLogReader, StorageError, StorageIOError, Vote,
    storage::{LogFlushed, RaftLogStorage},
};
use redb::ReadableDatabase;

use super::{
    TypeConfig,
    log_writer::{self, WriteOp},
    record,
    storage::{self, LOG, Storage},
};

/// Recent entries kept in memory...
const CACHE_ENTRIES: usize = 256;
/// ... holding at most this many commands (an entry is a batch of up to 1,024).
const CACHE_COMMANDS: usize = 16_384;

/// How many commands an entry holds (at least 1).
fn weight(entry: &Entry<TypeConfig>) -> usize {
    match &entry.payload {
        openraft::EntryPayload::Normal(batch) => batch.0.len().max(1),
        _ => 1,
    }
}

/// The log store. Cheap to clone: readers share the cache and the database.
#[derive(Clone)]
pub(crate) struct LogStore {
    storage: Arc<Storage>,
    cache: Arc<Mutex<BTreeMap<u64, Entry<TypeConfig>>>>,
    writer: mpsc::Sender<WriteOp>,
    /// Entries up to this index are on disk; only those may leave the cache.
    durable: Arc<AtomicU64>,
}

fn io_read(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

fn io_write(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

fn io_write_msg(e: String) -> StorageError<u64> {
    io_write(std::io::Error::other(e))
}

impl LogStore {
    pub(crate) fn new(storage: Arc<Storage>) -> std::io::Result<Self> {
        let durable = Arc::new(AtomicU64::new(0));
        let writer = log_writer::spawn(storage.clone(), durable.clone())?;
        Ok(LogStore { storage, cache: Arc::default(), writer, durable })
    }

    fn cache(&self) -> MutexGuard<'_, BTreeMap<u64, Entry<TypeConfig>>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError<u64>> {
        let bytes = self.storage.read_meta(key).map_err(io_read)?;
        bytes.map(|b| serde_json::from_slice(&b).map_err(io_read)).transpose()
    }

    fn submit(&self, op: WriteOp) -> Result<(), StorageError<u64>> {
        self.writer.send(op).map_err(|_| io_write_msg("the log writer thread stopped".into()))
    }

    /// Submits an operation and waits until it is durable.
    async fn submit_and_wait(
        &self,
        make: impl FnOnce(tokio::sync::oneshot::Sender<Result<(), String>>) -> WriteOp,
    ) -> Result<(), StorageError<u64>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(make(tx))?;
        rx.await.map_err(|_| io_write_msg("the log writer thread stopped".into()))?.map_err(io_write_msg)
    }

    async fn write_json<T: serde::Serialize>(&self, key: &'static str, value: &T) -> Result<(), StorageError<u64>> {
        let value = serde_json::to_vec(value).map_err(io_write)?;
        self.submit_and_wait(|done| WriteOp::Meta { key, value, done }).await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        };
        // The cache holds a contiguous suffix of the log; read from disk only what precedes it.
        let (cached, cache_start) = {
            let cache = self.cache();
            let cached: Vec<Entry<TypeConfig>> = cache.range(range.clone()).map(|(_, e)| e.clone()).collect();
            (cached, cache.keys().next().copied())
        };
        if cache_start.is_some_and(|first| first <= start) {
            return Ok(cached);
        }
        let disk_end = cache_start.map_or(Bound::Unbounded, Bound::Excluded);
        let end = match (range.end_bound(), disk_end) {
            (Bound::Unbounded, b) => b,
            (b, Bound::Unbounded) => b.cloned(),
            (Bound::Included(&a), Bound::Excluded(b)) => {
                if a < b {
                    Bound::Included(a)
                } else {
                    Bound::Excluded(b)
                }
            }
            (Bound::Excluded(&a), Bound::Excluded(b)) => Bound::Excluded(a.min(b)),
            (_, Bound::Included(b)) => Bound::Included(b),
        };
        let txn = self.storage.db().begin_read().map_err(io_read)?;
        let table = txn.open_table(LOG).map_err(io_read)?;
        let mut entries = Vec::new();
        for item in table.range::<u64>((Bound::Included(start), end)).map_err(io_read)? {
            let (_, value) = item.map_err(io_read)?;
            entries.push(record::decode_entry(value.value()).map_err(io_read)?);
        }
        entries.extend(cached);
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let last_purged_log_id: Option<LogId<u64>> = self.read_json("last_purged")?;
        let cached_last = self.cache().values().next_back().map(|e| e.log_id);
        let last_log_id = match cached_last {
            Some(id) => Some(id),
            None => match storage::last_log(self.storage.db()).map_err(io_read)? {
                Some(bytes) => Some(record::decode_entry(&bytes).map_err(io_read)?.log_id),
                None => last_purged_log_id,
            },
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.write_json("vote", vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        self.read_json("vote")
    }

    // `save_committed` / `read_committed` keep openraft's defaults (not stored): writing the
    // commit index costs a B-tree page per commit, and on restart the node learns it again by
    // committing its first entry as leader, which start-up waits for anyway.

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let encoded = entries.iter().map(|e| (e.log_id.index, record::encode_entry(e))).collect();
        {
            let mut cache = self.cache();
            for entry in entries {
                cache.insert(entry.log_id.index, entry);
            }
            // Evict only entries already on disk, so a reader never finds a gap.
            let durable = self.durable.load(Ordering::Acquire);
            let mut commands: usize = cache.values().map(weight).sum();
            while (cache.len() > CACHE_ENTRIES || commands > CACHE_COMMANDS)
                && cache.first_key_value().is_some_and(|(&i, _)| i <= durable)
            {
                if let Some((_, evicted)) = cache.pop_first() {
                    commands -= weight(&evicted);
                }
            }
        }
        self.submit(WriteOp::Append { entries: encoded, done: log_writer::flushed(callback) })
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.cache().retain(|&i, _| i < log_id.index);
        self.submit_and_wait(|done| WriteOp::Truncate { from: log_id.index, done }).await
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let last_purged = serde_json::to_vec(&Some(log_id)).map_err(io_write)?;
        self.cache().retain(|&i, _| i > log_id.index);
        self.submit_and_wait(|done| WriteOp::Purge { upto: log_id.index, last_purged, done }).await
    }
}
