//! Backups: `waggle snapshot save FILE` (online, from any member) and
//! `waggle snapshot restore FILE --data-dir DIR` (offline, into a fresh data dir).
//!
//! A backup file is `MAGIC`, a snapshot record (`record::encode_snapshot`: openraft metadata
//! plus the registry in `waggle_core::codec`), and the record's CRC-32 (IEEE) as four
//! little-endian bytes, so a truncated or damaged file is refused before anything is
//! written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use openraft::{BasicNode, LeaderId, LogId, Membership, SnapshotMeta, StoredMembership};
use waggle_core::codec;

use super::ProposeError;
use super::{Raft, record, storage::Storage};

/// The first bytes of every backup file: a name and a format version.
const MAGIC: &[u8; 8] = b"WGLSNAP1";

/// How long a save waits for the snapshot covering everything applied when it was asked.
const SAVE_PATIENCE: Duration = Duration::from_secs(30);

/// Builds a snapshot of everything this node has applied and returns it as a backup file.
pub(super) async fn save(raft: &Raft, storage: &Storage) -> Result<Vec<u8>, ProposeError> {
    let target = raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
    let deadline = tokio::time::Instant::now() + SAVE_PATIENCE;
    // A build already under way may cover less than `target`: ask again until one covers it.
    loop {
        raft.trigger().snapshot().await.map_err(|e| ProposeError::Unavailable(e.to_string()))?;
        let built = raft
            .wait(Some(Duration::from_secs(2)))
            .metrics(|m| m.snapshot.is_some_and(|s| s.index >= target), "a snapshot for a backup")
            .await;
        if built.is_ok() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ProposeError::Unavailable("no snapshot was built in time for the backup".into()));
        }
    }
    let record = storage
        .read_snapshot()
        .map_err(|e| ProposeError::Unavailable(format!("reading the snapshot: {e}")))?
        .ok_or_else(|| ProposeError::Unavailable("the snapshot vanished".into()))?;
    let mut file = Vec::with_capacity(MAGIC.len() + record.len() + 4);
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&record);
    file.extend_from_slice(&crc32fast::hash(&record).to_le_bytes());
    Ok(file)
}

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BackupSummary {
    pub(crate) revision: u64,
    pub(crate) services: usize,
    pub(crate) instances: usize,
    pub(crate) sessions: usize,
}

/// Checks a backup file and decodes its snapshot record.
fn open(file: &[u8]) -> anyhow::Result<(SnapshotMeta<u64, BasicNode>, Vec<u8>, BackupSummary)> {
    let Some(rest) = file.strip_prefix(MAGIC.as_slice()) else {
        anyhow::bail!("not a Waggle backup (it does not start with {:?})", String::from_utf8_lossy(MAGIC));
    };
    let Some(split) = rest.len().checked_sub(4) else { anyhow::bail!("the backup is truncated") };
    let (record, crc) = rest.split_at(split);
    let expected = u32::from_le_bytes(crc.try_into()?);
    if crc32fast::hash(record) != expected {
        anyhow::bail!("the backup is damaged or truncated (checksum mismatch)");
    }
    let (meta, data) = record::decode_snapshot(record)?;
    let registry = codec::decode_snapshot(&data)?;
    let summary = BackupSummary {
        revision: registry.revision().get(),
        services: registry.services().len(),
        instances: registry.services().values().map(|s| s.len()).sum(),
        sessions: registry.sessions().len(),
    };
    Ok((meta, data, summary))
}

/// How far a restore moves the revision ahead of the backup's by default.
pub const RESTORE_REVISION_BUMP: u64 = 1_000_000_000;

/// Writes a backup into a fresh data dir as the state of a new cluster whose members are
/// `members` (node id → peer address; one entry for a single node), for node `node_id`.
///
/// The restored log starts where the backup's did, under a term of 0, so the new cluster's
/// first election (term 1 and up) stays ahead of every entry it holds.
pub(crate) fn restore(
    file: &Path,
    data_dir: &Path,
    node_id: u64,
    members: &BTreeMap<u64, String>,
    identity: &str,
    bump: u64,
) -> anyhow::Result<BackupSummary> {
    let bytes = std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let (meta, data, mut summary) = open(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    summary.revision = summary.revision.saturating_add(bump);
    if data_dir.join(super::storage::DB_FILE).exists() {
        anyhow::bail!("{} already holds a data dir: restore into a fresh one", data_dir.display());
    }
    if std::fs::read_dir(data_dir).is_ok_and(|mut entries| entries.next().is_some()) {
        anyhow::bail!("{} is not empty: restore into a fresh (missing or empty) dir", data_dir.display());
    }
    // Built beside the target and renamed into place: a restore that fails half-way leaves
    // nothing a server would start from.
    let name = data_dir.file_name().map_or_else(|| "data".into(), |n| n.to_string_lossy().into_owned());
    let building = data_dir.with_file_name(format!(".{name}.restoring-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    let written = write_restored(&building, &meta, &data, node_id, members, identity, bump);
    if let Err(e) = written.and_then(|()| {
        if data_dir.exists() {
            std::fs::remove_dir(data_dir)?;
        }
        std::fs::rename(&building, data_dir).map_err(anyhow::Error::from)
    }) {
        let _ = std::fs::remove_dir_all(&building);
        return Err(e);
    }
    Ok(summary)
}

/// Writes the restored data dir's contents into `dir` (a fresh one).
fn write_restored(
    dir: &Path,
    meta: &SnapshotMeta<u64, BasicNode>,
    data: &[u8],
    node_id: u64,
    members: &BTreeMap<u64, String>,
    identity: &str,
    bump: u64,
) -> anyhow::Result<()> {
    // The restored state starts a history of its own: revisions in it go on from the backup's,
    // but watchers of the old cluster must not resume against it as if nothing happened since.
    let mut registry = codec::decode_snapshot(data)?;
    registry.start_new_history();
    // Fencing tokens are revisions: the old cluster may have granted locks after this backup,
    // so the restored one continues far ahead of anything it can have reached (as etcd's
    // `snapshot restore --bump-revision`). The same on every member restored from the file.
    registry.bump_revision(bump);
    let data = codec::encode_snapshot(&registry);
    let storage = Storage::open(dir)?;
    storage.check_identity(node_id, identity)?;
    let index = meta.last_log_id.map_or(0, |l| l.index);
    let log_id = LogId::new(LeaderId::new(0, 0), index);
    let voters: BTreeSet<u64> = members.keys().copied().collect();
    let nodes: BTreeMap<u64, BasicNode> =
        members.iter().map(|(id, addr)| (*id, BasicNode { addr: addr.clone() })).collect();
    let membership = StoredMembership::new(Some(log_id), Membership::new(vec![voters], nodes));
    let meta = SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: membership,
        snapshot_id: format!("restored-{index}-{}", registry.revision()),
    };
    storage.write_snapshot(&record::encode_snapshot(&meta, &data))?;
    // The log begins after the snapshot: openraft reads this as "everything up to here purged".
    storage.write_meta("last_purged", &serde_json::to_vec(&Some(log_id))?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_files_are_refused() {
        assert!(open(b"hello").unwrap_err().to_string().contains("not a Waggle backup"));
        assert!(open(MAGIC).unwrap_err().to_string().contains("truncated"));
        let record = record::encode_snapshot(
            &SnapshotMeta { last_log_id: None, last_membership: StoredMembership::default(), snapshot_id: "x".into() },
            &codec::encode_snapshot(&waggle_core::Registry::new()),
        );
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&record);
        file.extend_from_slice(&crc32fast::hash(&record).to_le_bytes());
        assert_eq!(open(&file).unwrap().2.revision, waggle_core::Revision::INITIAL.get());
        let last = file.len() - 6;
        file[last] ^= 1;
        assert!(open(&file).unwrap_err().to_string().contains("checksum"));
    }
}
