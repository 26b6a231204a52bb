//! The data dir's one redb database: Raft log, Raft metadata (vote, committed, purged) and the
//! latest snapshot. Every write that Raft needs durable commits with `Durability::Immediate`
//! (fsync) before it is acknowledged.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// Log entries by index, each a `record::LogRecord`.
pub(super) const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("raft_log");
/// Raft metadata: `vote`, `committed`, `last_purged` (JSON of openraft types).
pub(super) const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("raft_meta");
/// The current snapshot under the key `current`.
pub(super) const SNAPSHOT: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("snapshot");

/// redb's page cache.
const REDB_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// The database file inside the data dir.
pub(crate) const DB_FILE: &str = "waggle.redb";

/// An open data dir.
pub(crate) struct Storage {
    db: Database,
    path: PathBuf,
}

impl Storage {
    /// Opens (creating if needed) the database in `data_dir`. redb holds an exclusive file lock,
    /// so a second server on the same data dir fails here with a clear error.
    pub(crate) fn open(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", data_dir.display()))?;
        let path = data_dir.join(DB_FILE);
        // redb caches up to 1 GiB by default; the registry lives in memory anyway and the log is
        // written sequentially, so a small cache is enough.
        let db = Database::builder()
            .set_cache_size(REDB_CACHE_BYTES)
            .create(&path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(META)?;
        txn.open_table(SNAPSHOT)?;
        txn.commit()?;
        Ok(Storage { db, path })
    }

    /// Records which node this data dir belongs to (its id and the member ids it was
    /// bootstrapped with) on first start, and refuses a later start whose configuration
    /// disagrees: a data dir copied to the wrong node, or a cluster flag forgotten, must not
    /// start and corrupt the cluster.
    /// `members` is the bootstrap's member ids joined by commas, empty for a single node, or
    /// `join` for a member added to a running cluster.
    pub(crate) fn check_identity(&self, node_id: u64, members: &str) -> anyhow::Result<()> {
        let members_text = members;
        let stored_id = self.read_meta("node_id")?;
        let Some(stored_id) = stored_id else {
            self.write_meta("node_id", &node_id.to_le_bytes())?;
            self.write_meta("members", members_text.as_bytes())?;
            return Ok(());
        };
        let stored_id = u64::from_le_bytes(
            stored_id.as_slice().try_into().map_err(|_| anyhow::anyhow!("corrupt node id in the data dir"))?,
        );
        if stored_id != node_id {
            anyhow::bail!(
                "this data dir belongs to node {stored_id}, not node {node_id}: start it with --node-id {stored_id}, or use a fresh data dir"
            );
        }
        let stored_members = String::from_utf8(self.read_meta("members")?.unwrap_or_default()).unwrap_or_default();
        if stored_members != members_text {
            let describe = |m: &str| match m {
                "" => "a single node".to_owned(),
                "join" => "a member that joined a running cluster (--join)".to_owned(),
                m => format!("members {m}"),
            };
            anyhow::bail!(
                "this data dir was bootstrapped as {}, but the configuration says {}: pass the same --initial-cluster as at bootstrap, or use a fresh data dir",
                describe(&stored_members),
                describe(members_text)
            );
        }
        Ok(())
    }

    /// The database file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn read_meta(&self, key: &str) -> Result<Option<Vec<u8>>, redb::Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(META)?;
        Ok(table.get(key)?.map(|v| v.value().to_vec()))
    }

    /// Writes one metadata key, fsynced. (The log writer owns every write once Raft runs.)
    pub(super) fn write_meta(&self, key: &str, value: &[u8]) -> Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        txn.open_table(META)?.insert(key, value)?;
        txn.commit()?;
        Ok(())
    }

    pub(super) fn read_snapshot(&self) -> Result<Option<Vec<u8>>, redb::Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SNAPSHOT)?;
        Ok(table.get("current")?.map(|v| v.value().to_vec()))
    }

    pub(super) fn write_snapshot(&self, bytes: &[u8]) -> Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        txn.open_table(SNAPSHOT)?.insert("current", bytes)?;
        txn.commit()?;
        Ok(())
    }

    pub(super) fn db(&self) -> &Database {
        &self.db
    }
}

pub(super) fn last_log(db: &Database) -> Result<Option<Vec<u8>>, redb::Error> {
    let txn = db.begin_read()?;
    let table = txn.open_table(LOG)?;
    Ok(table.last()?.map(|(_, v)| v.value().to_vec()))
}
