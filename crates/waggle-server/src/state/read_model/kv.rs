//! The key/value store as readers see it: a persistent copy taken when a command changes it (a
//! read clones a pointer), the last [`KV_LOG`] change batches for watchers resuming from a
//! revision, and the store's byte count for the quota.

use std::{
    collections::{BTreeSet, VecDeque},
    sync::Arc,
};

use waggle_core::{Effect, KvEntry, KvMap, Registry, Revision, Txn};

/// One KV change: the key and its new entry (`None`: deleted).
pub(crate) type KvEvent = (String, Option<Arc<KvEntry>>);

/// KV change batches kept for resuming watchers.
const KV_LOG: usize = 4096;

/// What a KV watcher reads next (see `ReadModel::kv_since`).
pub(crate) enum KvRead {
    /// The batches with revisions from the one asked (maybe none), and the registry's
    /// revision when read.
    Changes(Vec<(Revision, Arc<Vec<KvEvent>>)>, Revision),
    /// The revision asked is older than the history kept.
    Compacted,
}

/// What a stored key counts against the quota: its key and value.
fn entry_bytes(key: &str, entry: &KvEntry) -> u64 {
    (key.len() + entry.value.len()) as u64
}

/// The store, its recent changes and its size.
#[derive(Default)]
pub(super) struct Kv {
    /// The store (a persistent map: a read clones a pointer).
    pub(super) map: KvMap,
    /// Recent changes by revision, for watchers resuming from a revision (oldest first).
    log: VecDeque<(Revision, Arc<Vec<KvEvent>>)>,
    /// Changes at or below this revision are not in `log` (trimmed, or before a reset).
    floor: Revision,
    /// Bytes of keys and values in `map`.
    bytes: u64,
}

impl Kv {
    /// Takes in the KV changes of one batch of effects at `revision` (`registry` is the state
    /// after it): whether the store changed.
    pub(super) fn publish(&mut self, registry: &Registry, effects: &[Effect], revision: Revision) -> bool {
        let events: Vec<KvEvent> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::KvChanged { key, entry, .. } => Some((key.clone(), entry.clone())),
                _ => None,
            })
            .collect();
        if events.is_empty() {
            return false;
        }
        // Keep the store's size: each key's size before this batch (from the old copy), then
        // after it (from the new one).
        let touched: BTreeSet<&String> = events.iter().map(|(k, _)| k).collect();
        let new = registry.kv();
        for key in touched {
            let before = self.map.get(key).map_or(0, |e| entry_bytes(key, e));
            let after = new.get(key).map_or(0, |e| entry_bytes(key, e));
            self.bytes = (self.bytes + after).saturating_sub(before);
        }
        self.map = new.clone();
        self.log.push_back((revision, Arc::new(events)));
        if self.log.len() > KV_LOG
            && let Some((trimmed, _)) = self.log.pop_front()
        {
            self.floor = trimmed;
        }
        true
    }

    /// Replaces the store with the registry's; changes before `revision` are unknown from now on
    /// (watchers from older revisions start over).
    pub(super) fn reset(&mut self, registry: &Registry, revision: Revision) {
        self.map = registry.kv().clone();
        self.bytes = self.map.iter().map(|(k, e)| entry_bytes(k, e)).sum();
        self.log.clear();
        self.floor = revision;
    }

    /// Refuses a transaction that could take the store past `quota`: the bytes held and the
    /// quota. What it could add is counted against this copy: a write replacing a value adds
    /// only what it is longer by, so releasing, shrinking and deleting always pass.
    pub(super) fn admits(&self, txn: &Txn, quota: u64) -> Result<(), (u64, u64)> {
        let growth: u64 = txn
            .success
            .iter()
            .chain(&txn.failure)
            .filter_map(|op| op.written())
            .map(|(key, value)| {
                let old = self.map.get(key).map_or(0, |e| entry_bytes(key, e));
                ((key.len() + value.len()) as u64).saturating_sub(old)
            })
            .sum();
        if growth > 0 && self.bytes.saturating_add(growth) > quota { Err((self.bytes, quota)) } else { Ok(()) }
    }

    /// Changes with revisions from `from` on, as far as they are known; `current` is the
    /// revision the copy is at.
    pub(super) fn since(&self, from: Revision, current: Revision) -> KvRead {
        if from.get() <= self.floor.get() {
            return KvRead::Compacted;
        }
        let changes: Vec<_> = self.log.iter().filter(|(r, _)| r.get() >= from.get()).cloned().collect();
        KvRead::Changes(changes, current)
    }
}
