//! The Raft state machine: the in-memory [`Registry`] plus the last applied log id and
//! membership. The registry is persisted through snapshots (in redb) and rebuilt on start from
//! the latest snapshot followed by log replay. After each batch of entries, effects go to the
//! read model (instance changes) and the session clock (sessions opened / closed).

use std::{io::Cursor, sync::Arc};

use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership, storage::RaftStateMachine,
};
use waggle_core::{Effect, Registry, codec};

use super::{BatchResult, CommandBatch, CommandResult, Refusal, TypeConfig, record, storage::Storage};
use crate::state::LocalState;

/// The registry as a Raft state machine.
pub(crate) struct StateMachine {
    storage: Arc<Storage>,
    registry: Registry,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    /// What the node keeps of the applied state outside the registry, fed with effects.
    state: Arc<LocalState>,
}

fn snap_err(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::read_snapshot(None, AnyError::new(&e)).into()
}

impl StateMachine {
    /// Restores from the data dir's latest snapshot (if any) and seeds the read model and clock.
    pub(crate) fn open(storage: Arc<Storage>, state: Arc<LocalState>) -> anyhow::Result<Self> {
        let mut sm = StateMachine {
            storage,
            registry: Registry::new(),
            last_applied: None,
            membership: StoredMembership::default(),
            state,
        };
        if let Some(bytes) = sm.storage.read_snapshot()? {
            let (meta, data) = record::decode_snapshot(&bytes)?;
            sm.restore(&meta, &data)?;
        } else {
            sm.reseed();
        }
        Ok(sm)
    }

    fn restore(&mut self, meta: &SnapshotMeta<u64, BasicNode>, data: &[u8]) -> Result<(), codec::CodecError> {
        self.registry = codec::decode_snapshot(data)?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.reseed();
        Ok(())
    }

    /// Replaces the local state with the registry's (a restore or an installed snapshot).
    fn reseed(&self) {
        self.state.reset(&self.registry);
    }

    fn publish(&self, effects: &[Effect]) {
        self.state.publish(&self.registry, effects);
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchResult>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut results = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let result = match entry.payload {
                EntryPayload::Blank => BatchResult(Vec::new()),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    BatchResult(Vec::new())
                }
                EntryPayload::Normal(CommandBatch(commands)) => BatchResult(
                    commands
                        .iter()
                        .map(|command| {
                            let outcome = self.registry.apply(command);
                            self.publish(&outcome.effects);
                            match outcome.response {
                                Ok(applied) => CommandResult::Applied(applied),
                                Err(e) => CommandResult::Refused(Refusal::from(e)),
                            }
                        })
                        .collect(),
                ),
            };
            results.push(result);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            storage: self.storage.clone(),
            registry: self.registry.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        self.restore(meta, &data).map_err(snap_err)?;
        self.storage
            .write_snapshot(&record::encode_snapshot(meta, &data))
            .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let Some(bytes) = self.storage.read_snapshot().map_err(snap_err)? else {
            return Ok(None);
        };
        let (meta, data) = record::decode_snapshot(&bytes).map_err(snap_err)?;
        Ok(Some(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}

/// Builds a snapshot from a copy of the registry taken when the build was requested.
pub(crate) struct SnapshotBuilder {
    storage: Arc<Storage>,
    registry: Registry,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let data = codec::encode_snapshot(&self.registry);
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, self.registry.revision()),
            None => format!("0-0-{}", self.registry.revision()),
        };
        let meta =
            SnapshotMeta { last_log_id: self.last_applied, last_membership: self.membership.clone(), snapshot_id };
        let bytes = record::encode_snapshot(&meta, &data);
        let storage = self.storage.clone();
        tokio::task::spawn_blocking(move || storage.write_snapshot(&bytes))
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?
            .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}
