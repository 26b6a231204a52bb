//! The Raft log on redb: entries by index plus vote / committed / purged metadata.

// openraft's trait signatures fix the error type (`StorageError`, ~224 bytes); boxing it in
// helpers would only add conversions at every call.
#![allow(clippy::result_large_err)]

use std::{fmt::Debug, ops::RangeBounds, sync::Arc};

use openraft::{
    AnyError, Entry, LogId, LogState, RaftLogReader, StorageError, StorageIOError, Vote,
    storage::{LogFlushed, RaftLogStorage},
};
use redb::ReadableDatabase;

use super::{
    TypeConfig, record,
    storage::{self, LOG, Storage},
};

/// The log store. Cheap to clone: readers share the database.
#[derive(Clone)]
pub(crate) struct LogStore {
    storage: Arc<Storage>,
}

impl LogStore {
    pub(crate) fn new(storage: Arc<Storage>) -> Self {
        LogStore { storage }
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError<u64>> {
        let bytes = self.storage.read_meta(key).map_err(|e| StorageIOError::read(AnyError::new(&e)))?;
        bytes
            .map(|b| serde_json::from_slice(&b).map_err(|e| StorageIOError::read(AnyError::new(&e)).into()))
            .transpose()
    }

    fn write_json<T: serde::Serialize>(&self, key: &str, value: &T, durable: bool) -> Result<(), StorageError<u64>> {
        let bytes = serde_json::to_vec(value).map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        self.storage.write_meta(key, &bytes, durable).map_err(|e| StorageIOError::write(AnyError::new(&e)).into())
    }

    /// Runs a blocking redb operation off the async worker threads.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StorageError<u64>>
    where
        T: Send + 'static,
        F: FnOnce(&Storage) -> Result<T, StorageError<u64>> + Send + 'static,
    {
        let storage = self.storage.clone();
        tokio::task::spawn_blocking(move || f(&storage))
            .await
            .map_err(|e| StorageError::from(StorageIOError::write(AnyError::new(&e))))?
    }
}

fn io_read(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

fn io_write(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        let txn = self.storage.db().begin_read().map_err(io_read)?;
        let table = txn.open_table(LOG).map_err(io_read)?;
        let mut entries = Vec::new();
        for item in table.range(range).map_err(io_read)? {
            let (_, value) = item.map_err(io_read)?;
            entries.push(record::decode_entry(value.value()).map_err(io_read)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let last_purged_log_id: Option<LogId<u64>> = self.read_json("last_purged")?;
        let last = storage::last_log(self.storage.db()).map_err(io_read)?;
        let last_log_id = match last {
            Some(bytes) => Some(record::decode_entry(&bytes).map_err(io_read)?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.write_json("vote", vote, true)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        self.read_json("vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError<u64>> {
        // A hint for faster restart; losing it is safe (Raft re-learns the commit index), so it
        // is not fsynced on its own: it becomes durable with the next log append.
        self.write_json("committed", &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(self.read_json::<Option<LogId<u64>>>("committed")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let encoded: Vec<(u64, Vec<u8>)> =
            entries.into_iter().map(|e| (e.log_id.index, record::encode_entry(&e))).collect();
        let result = self
            .blocking(move |s| {
                let txn = s.db().begin_write().map_err(io_write)?;
                {
                    let mut table = txn.open_table(LOG).map_err(io_write)?;
                    for (index, bytes) in &encoded {
                        table.insert(index, bytes.as_slice()).map_err(io_write)?;
                    }
                }
                // Default durability is Immediate: commit returns after fsync.
                txn.commit().map_err(io_write)
            })
            .await;
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.blocking(move |s| {
            let txn = s.db().begin_write().map_err(io_write)?;
            txn.open_table(LOG).map_err(io_write)?.retain_in(log_id.index.., |_, _| false).map_err(io_write)?;
            txn.commit().map_err(io_write)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let purged = serde_json::to_vec(&Some(log_id)).map_err(io_write)?;
        self.blocking(move |s| {
            let txn = s.db().begin_write().map_err(io_write)?;
            txn.open_table(storage::META)
                .map_err(io_write)?
                .insert("last_purged", purged.as_slice())
                .map_err(io_write)?;
            txn.open_table(LOG).map_err(io_write)?.retain_in(..=log_id.index, |_, _| false).map_err(io_write)?;
            txn.commit().map_err(io_write)
        })
        .await
    }
}
