//! The read model: one shared, copy-on-write view per service (also the read model for
//! `GetService` / `ListServices`), and a broadcast topic per watched service plus one for all
//! services. A subscriber gets a snapshot (or a replay of recent batches when resuming), then
//! deltas; buffers are bounded by the broadcast capacity, and a subscriber that lags behind is
//! resynced with a fresh snapshot instead of growing memory (blueprint decision 6).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use tokio::sync::broadcast;
use waggle_core::{Effect, Instance, Registry, Revision, ServiceInstances, ServiceName};

/// What happened to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Added,
    Updated,
    Removed,
}

/// One instance change.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) kind: ChangeKind,
    pub(crate) instance: Arc<Instance>,
}

/// All changes one revision made to a topic. `resync` batches carry no changes: they tell
/// subscribers that the state was replaced (snapshot installed) and they must re-snapshot.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) revision: Revision,
    pub(crate) changes: Vec<Change>,
    pub(crate) resync: bool,
    /// The batch as a wire event, encoded by the first watcher that sends it.
    pub(crate) wire: std::sync::OnceLock<waggle_proto::EncodedEvent>,
}

impl Batch {
    pub(crate) fn new(revision: Revision, changes: Vec<Change>, resync: bool) -> Self {
        Batch { revision, changes, resync, wire: std::sync::OnceLock::new() }
    }
}

/// How a subscription starts.
pub(crate) enum Start {
    /// Everything the subscriber should know, at a revision.
    Snapshot { revision: Revision, instances: Vec<Arc<Instance>> },
    /// The batches after the subscriber's resume revision `from` (possibly none), and the
    /// revision the subscriber is up to date with once it has them.
    Replay { current: Revision, batches: Vec<Arc<Batch>> },
}

/// A new subscription: its start and the receiver of later batches. Batches whose revision is
/// not above the start's revision must be skipped.
pub(crate) struct Subscription {
    pub(crate) start: Start,
    pub(crate) rx: broadcast::Receiver<Arc<Batch>>,
}

struct Topic {
    tx: broadcast::Sender<Arc<Batch>>,
    history: VecDeque<Arc<Batch>>,
    /// Every batch with a revision above `floor` is in `history`.
    floor: Revision,
}

impl Topic {
    fn new(capacity: usize, revision: Revision) -> Self {
        Topic { tx: broadcast::channel(capacity).0, history: VecDeque::new(), floor: revision }
    }

    fn send(&mut self, batch: Arc<Batch>, history_len: usize) {
        if self.history.len() >= history_len
            && let Some(oldest) = self.history.pop_front()
        {
            self.floor = oldest.revision;
        }
        self.history.push_back(batch.clone());
        // No receivers is fine: the batch stays in history for resuming watchers.
        let _ = self.tx.send(batch);
    }

    fn resync(&mut self, revision: Revision) {
        self.history.clear();
        self.floor = revision;
        let _ = self.tx.send(Arc::new(Batch::new(revision, Vec::new(), true)));
    }

    fn subscribe(
        &self,
        from: Option<Revision>,
        current: Revision,
        snapshot: impl FnOnce() -> Vec<Arc<Instance>>,
    ) -> Subscription {
        let rx = self.tx.subscribe();
        let start = match from {
            Some(from) if from >= self.floor && from <= current => {
                Start::Replay { current, batches: self.history.iter().filter(|b| b.revision > from).cloned().collect() }
            }
            _ => Start::Snapshot { revision: current, instances: snapshot() },
        };
        Subscription { start, rx }
    }
}

#[derive(Default)]
struct View {
    instances: Arc<ServiceInstances>,
    topic: Option<Topic>,
    /// Encodings of `instances` for discovery reads, filled on first read, replaced (empty)
    /// whenever `instances` changes.
    reads: Arc<ReadCache>,
}

/// Discovery reads of one version of a service, encoded once and shared by every reader.
#[derive(Default)]
pub(crate) struct ReadCache {
    /// Passing instances only.
    pub(crate) passing: std::sync::OnceLock<waggle_proto::EncodedInstances>,
    /// Every instance.
    pub(crate) all: std::sync::OnceLock<waggle_proto::EncodedInstances>,
    /// Consul-compatible JSON answers without tag or filter, by kind (see `consul/render.rs`), built
    /// once per version of the service.
    pub(crate) consul: [std::sync::OnceLock<String>; 3],
}

struct ReadState {
    revision: Revision,
    services: HashMap<ServiceName, View>,
    all: Topic,
    /// The key/value store as of `revision` (a persistent map: a read clones a pointer).
    kv: imbl::OrdMap<String, Arc<waggle_core::KvEntry>>,
    /// The locks as of `revision`.
    locks: imbl::OrdMap<String, Arc<waggle_core::LockState>>,
    /// Recent KV changes by revision, for watchers resuming from a revision (oldest first).
    kv_log: std::collections::VecDeque<(Revision, Arc<Vec<KvEvent>>)>,
    /// Changes at or below this revision are not in `kv_log` (trimmed, or before a reset).
    kv_floor: Revision,
    /// Live sessions as of `revision` (for Consul's `/v1/session` reads).
    sessions: imbl::OrdMap<waggle_core::SessionId, Arc<SessionView>>,
    /// Bytes of keys and values in `kv`.
    kv_bytes: u64,
    /// Per-lock change signals for waiting acquires and observers, created on demand and
    /// dropped once nobody listens: a waiter wakes when its lock changes, not on every write.
    lock_signals: HashMap<String, tokio::sync::watch::Sender<Revision>>,
}

/// A live session as readers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionView {
    pub(crate) id: waggle_core::SessionId,
    pub(crate) ttl: waggle_core::Ttl,
    pub(crate) options: waggle_core::SessionOptions,
    pub(crate) create_revision: Revision,
}

/// What a stored key counts against the quota: its key and value.
fn entry_bytes(key: &str, entry: &waggle_core::KvEntry) -> u64 {
    (key.len() + entry.value.len()) as u64
}

/// One KV change: the key and its new entry (`None`: deleted).
pub(crate) type KvEvent = (String, Option<Arc<waggle_core::KvEntry>>);

/// KV change batches kept for resuming watchers.
const KV_LOG: usize = 4096;

/// What a KV watcher reads next (see [`ReadModel::kv_since`]).
pub(crate) enum KvRead {
    /// The batches with revisions from the one asked (maybe none), and the registry's
    /// revision when read.
    Changes(Vec<(Revision, Arc<Vec<KvEvent>>)>, Revision),
    /// The revision asked is older than the history kept.
    Compacted,
}

/// Watch read model settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadLimits {
    /// Most bytes of keys and values in the KV store (writes beyond it are refused).
    pub(crate) kv_quota: u64,
    /// Batches a subscriber may fall behind before it is resynced.
    pub(crate) buffer: usize,
    /// Batches kept per topic for resuming watchers.
    pub(crate) history: usize,
}

/// The read model. All methods take a short lock; readers clone `Arc`s out of it.
pub(crate) struct ReadModel {
    state: Mutex<ReadState>,
    limits: ReadLimits,
    /// The registry's history id (`Registry::history`), stamped on every watch message.
    history: std::sync::atomic::AtomicU64,
    /// The applied revision, for writers waiting to read their own write here.
    applied: tokio::sync::watch::Sender<Revision>,
    /// The revision of the last change to the KV store (or of a reset), for KV watchers: they
    /// wake when the store changes, not on every write.
    kv_changed: tokio::sync::watch::Sender<Revision>,
}

impl ReadModel {
    pub(crate) fn new(limits: ReadLimits) -> Self {
        ReadModel {
            state: Mutex::new(ReadState {
                revision: Revision::INITIAL,
                services: HashMap::new(),
                all: Topic::new(limits.buffer, Revision::INITIAL),
                kv: imbl::OrdMap::new(),
                locks: imbl::OrdMap::new(),
                kv_log: Default::default(),
                kv_floor: Revision::INITIAL,
                sessions: imbl::OrdMap::new(),
                lock_signals: HashMap::new(),
                kv_bytes: 0,
            }),
            kv_changed: tokio::sync::watch::Sender::new(Revision::INITIAL),
            limits,
            history: std::sync::atomic::AtomicU64::new(0),
            applied: tokio::sync::watch::Sender::new(Revision::INITIAL),
        }
    }

    /// Resolves once this node has applied `revision` (a write that another member committed).
    pub(crate) async fn applied(&self, revision: Revision) {
        let mut rx = self.applied.subscribe();
        let _ = rx.wait_for(|applied| *applied >= revision).await;
    }

    /// The id of the registry's history (0 until its first leader names it).
    pub(crate) fn history(&self) -> u64 {
        self.history.load(std::sync::atomic::Ordering::Acquire)
    }

    fn state(&self) -> MutexGuard<'_, ReadState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The revision of the latest published change.
    pub(crate) fn revision(&self) -> Revision {
        self.state().revision
    }

    /// One service's instances (empty if unknown), their read cache, and the current revision.
    pub(crate) fn service(&self, name: &ServiceName) -> (Revision, Arc<ServiceInstances>, Arc<ReadCache>) {
        let state = self.state();
        match state.services.get(name) {
            Some(v) => (state.revision, v.instances.clone(), v.reads.clone()),
            None => (state.revision, Arc::default(), Arc::default()),
        }
    }

    /// The key/value store and the revision it is at.
    pub(crate) fn kv(&self) -> (Revision, imbl::OrdMap<String, Arc<waggle_core::KvEntry>>) {
        let state = self.state();
        (state.revision, state.kv.clone())
    }

    /// A signal that changes whenever lock `name` does (or the state is replaced). Subscribe
    /// before reading the lock, then wait for `changed()`.
    pub(crate) fn lock_signal(&self, name: &str) -> tokio::sync::watch::Receiver<Revision> {
        let mut state = self.state();
        let revision = state.revision;
        state
            .lock_signals
            .entry(name.to_owned())
            .or_insert_with(|| tokio::sync::watch::Sender::new(revision))
            .subscribe()
    }

    /// Refuses a transaction that could take the store past its quota: the bytes held and the
    /// quota. What it could add is counted against this member's copy: a write replacing a
    /// value adds only what it is longer by, so releasing, shrinking and deleting always pass.
    pub(crate) fn kv_admits(&self, txn: &waggle_core::Txn) -> Result<(), (u64, u64)> {
        let state = self.state();
        let growth: u64 = txn
            .success
            .iter()
            .chain(&txn.failure)
            .filter_map(|op| op.written())
            .map(|(key, value)| {
                let old = state.kv.get(key).map_or(0, |e| entry_bytes(key, e));
                ((key.len() + value.len()) as u64).saturating_sub(old)
            })
            .sum();
        let (used, quota) = (state.kv_bytes, self.limits.kv_quota);
        if growth > 0 && used.saturating_add(growth) > quota { Err((used, quota)) } else { Ok(()) }
    }

    /// A signal that changes whenever the KV store does (or is replaced). Subscribe before
    /// reading, then wait for `changed()`.
    pub(crate) fn kv_signal(&self) -> tokio::sync::watch::Receiver<Revision> {
        self.kv_changed.subscribe()
    }

    /// Live sessions (the agent's excluded) and the revision they are at.
    pub(crate) fn sessions(&self) -> (Revision, imbl::OrdMap<waggle_core::SessionId, Arc<SessionView>>) {
        let state = self.state();
        (state.revision, state.sessions.clone())
    }

    /// The store and the locks, both as of the returned revision (for read-only transactions).
    pub(crate) fn kv_and_locks(
        &self,
    ) -> (Revision, waggle_core::KvMap, imbl::OrdMap<String, Arc<waggle_core::LockState>>) {
        let state = self.state();
        (state.revision, state.kv.clone(), state.locks.clone())
    }

    /// KV changes with revisions from `from` on, as far as they are known.
    pub(crate) fn kv_since(&self, from: Revision) -> KvRead {
        let state = self.state();
        if from.get() <= state.kv_floor.get() {
            return KvRead::Compacted;
        }
        let changes: Vec<_> = state.kv_log.iter().filter(|(r, _)| r.get() >= from.get()).cloned().collect();
        KvRead::Changes(changes, state.revision)
    }

    /// One lock's state (`None`: free, nobody waiting) and the revision it is at.
    pub(crate) fn lock(&self, name: &str) -> (Revision, Option<Arc<waggle_core::LockState>>) {
        let state = self.state();
        (state.revision, state.locks.get(name).cloned())
    }

    /// Every service with instances, sorted by name, and the current revision.
    pub(crate) fn services(&self) -> (Revision, Vec<(ServiceName, Arc<ServiceInstances>)>) {
        let state = self.state();
        let mut list: Vec<_> = state
            .services
            .iter()
            .filter(|(_, v)| !v.instances.is_empty())
            .map(|(k, v)| (k.clone(), v.instances.clone()))
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        (state.revision, list)
    }

    /// Subscribes to one service (`Some`) or to all services (`None`).
    pub(crate) fn subscribe(&self, service: Option<&ServiceName>, from: Option<Revision>) -> Subscription {
        let mut guard = self.state();
        let state = &mut *guard;
        let current = state.revision;
        match service {
            None => {
                let services = &state.services;
                state.all.subscribe(from, current, || {
                    let mut all: Vec<Arc<Instance>> =
                        services.values().flat_map(|v| v.instances.values().cloned()).collect();
                    all.sort_by(|a, b| (a.service(), a.id()).cmp(&(b.service(), b.id())));
                    all
                })
            }
            Some(name) => {
                let buffer = self.limits.buffer;
                let all = &state.all;
                let view = state.services.entry(name.clone()).or_default();
                let instances = view.instances.clone();
                let topic = view.topic.get_or_insert_with(|| Topic::new(buffer, current));
                match from {
                    // A resume from before this topic's own history (a service first watched
                    // here after the watcher's revision: typically a watch that failed over
                    // from another member) replays the service's changes from the history of
                    // all services, when that still reaches back far enough.
                    Some(from) if from < topic.floor && from >= all.floor && from <= current => {
                        let batches = all
                            .history
                            .iter()
                            .filter(|b| b.revision > from)
                            .filter_map(|b| {
                                let changes: Vec<Change> =
                                    b.changes.iter().filter(|c| c.instance.service() == name).cloned().collect();
                                (!changes.is_empty()).then(|| Arc::new(Batch::new(b.revision, changes, false)))
                            })
                            .collect();
                        Subscription { start: Start::Replay { current, batches }, rx: topic.tx.subscribe() }
                    }
                    _ => topic.subscribe(from, current, || instances.values().cloned().collect()),
                }
            }
        }
    }

    /// Publishes the effects of one applied command; `registry` is the state after it.
    pub(crate) fn publish(&self, registry: &Registry, effects: &[Effect]) {
        self.history.store(registry.history(), std::sync::atomic::Ordering::Release);
        let mut per_service: HashMap<ServiceName, Vec<Change>> = HashMap::new();
        for effect in effects {
            let change = match effect {
                Effect::InstanceUpserted { instance, created } => Change {
                    kind: if *created { ChangeKind::Added } else { ChangeKind::Updated },
                    instance: instance.clone(),
                },
                Effect::InstanceRemoved { instance, .. } => {
                    Change { kind: ChangeKind::Removed, instance: instance.clone() }
                }
                Effect::SessionOpened { .. }
                | Effect::SessionClosed { .. }
                | Effect::KvChanged { .. }
                | Effect::LockChanged { .. }
                | Effect::LockDelayStarted { .. }
                | Effect::LockDelayLifted { .. } => continue,
            };
            per_service.entry(change.instance.service().clone()).or_default().push(change);
        }
        let revision = registry.revision();
        let history = self.limits.history;
        let mut state = self.state();
        state.revision = revision;
        let kv_events: Vec<KvEvent> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::KvChanged { key, entry, .. } => Some((key.clone(), entry.clone())),
                _ => None,
            })
            .collect();
        if !kv_events.is_empty() {
            self.kv_changed.send_replace(revision);
            // Keep the store's size: each key's size before this batch (from the old copy),
            // then after it (from the new one).
            let touched: std::collections::BTreeSet<&String> = kv_events.iter().map(|(k, _)| k).collect();
            let new = registry.kv();
            for key in touched {
                let before = state.kv.get(key).map_or(0, |e| entry_bytes(key, e));
                let after = new.get(key).map_or(0, |e| entry_bytes(key, e));
                state.kv_bytes = (state.kv_bytes + after).saturating_sub(before);
            }
            state.kv = registry.kv().clone();
            state.kv_log.push_back((revision, Arc::new(kv_events)));
            if state.kv_log.len() > KV_LOG
                && let Some((trimmed, _)) = state.kv_log.pop_front()
            {
                state.kv_floor = trimmed;
            }
        }
        if effects.iter().any(|e| matches!(e, Effect::LockChanged { .. })) {
            state.locks = registry.locks().clone();
            for effect in effects {
                if let Effect::LockChanged { lock, .. } = effect
                    && let Some(signal) = state.lock_signals.get(lock)
                {
                    signal.send_replace(revision);
                }
            }
        }
        for effect in effects {
            match effect {
                Effect::SessionOpened { session, ttl, options, revision } => {
                    let view =
                        SessionView { id: *session, ttl: *ttl, options: options.clone(), create_revision: *revision };
                    state.sessions.insert(*session, Arc::new(view));
                }
                Effect::SessionClosed { session } => {
                    state.sessions.remove(session);
                }
                _ => {}
            }
        }
        self.applied.send_replace(revision);
        if per_service.is_empty() {
            return;
        }
        let mut all_changes = Vec::new();
        for (name, changes) in per_service {
            all_changes.extend(changes.iter().cloned());
            let instances = registry.service(name.as_str()).cloned().unwrap_or_default();
            let view = state.services.entry(name.clone()).or_default();
            view.instances = instances;
            view.reads = Arc::default();
            if let Some(topic) = &mut view.topic {
                topic.send(Arc::new(Batch::new(revision, changes, false)), history);
            }
            let unwatched = view.topic.as_ref().is_none_or(|t| t.tx.receiver_count() == 0);
            if view.instances.is_empty() && unwatched {
                state.services.remove(&name);
            }
        }
        state.all.send(Arc::new(Batch::new(revision, all_changes, false)), history);
    }

    /// Drops views that neither hold instances nor have subscribers (a watch of a service that
    /// never existed leaves one behind when the watcher goes).
    pub(crate) fn prune(&self) {
        let mut state = self.state();
        state
            .services
            .retain(|_, v| !v.instances.is_empty() || v.topic.as_ref().is_some_and(|t| t.tx.receiver_count() > 0));
        state.lock_signals.retain(|_, signal| signal.receiver_count() > 0);
    }

    /// Replaces every view with the registry's state (startup, snapshot install) and tells every
    /// subscriber to re-snapshot.
    pub(crate) fn reset(&self, registry: &Registry) {
        self.history.store(registry.history(), std::sync::atomic::Ordering::Release);
        let mut guard = self.state();
        let state = &mut *guard;
        let revision = registry.revision();
        state.revision = revision;
        state.kv = registry.kv().clone();
        state.kv_bytes = state.kv.iter().map(|(k, e)| entry_bytes(k, e)).sum();
        state.locks = registry.locks().clone();
        state.sessions = registry
            .sessions()
            .values()
            .filter(|s| s.id != waggle_core::SessionId::AGENT)
            .map(|s| {
                let view = SessionView {
                    id: s.id,
                    ttl: s.ttl,
                    options: s.options.clone(),
                    create_revision: s.create_revision,
                };
                (s.id, Arc::new(view))
            })
            .collect();
        // Changes before a reset are unknown here: watchers from older revisions start over.
        state.kv_log.clear();
        state.kv_floor = revision;
        self.kv_changed.send_replace(revision);
        for signal in state.lock_signals.values() {
            signal.send_replace(revision);
        }
        self.applied.send_replace(revision);
        state.services.retain(|_, v| v.topic.as_ref().is_some_and(|t| t.tx.receiver_count() > 0));
        for view in state.services.values_mut() {
            view.instances = Arc::default();
            view.reads = Arc::default();
            if let Some(topic) = &mut view.topic {
                topic.resync(revision);
            }
        }
        for (name, instances) in registry.services() {
            let view = state.services.entry(name.clone()).or_default();
            view.instances = instances.clone();
            view.reads = Arc::default();
        }
        state.all.resync(revision);
    }
}

#[cfg(test)]
mod tests {
    use waggle_core::{Command, SessionId, Ttl, Txn};

    use super::*;

    #[test]
    fn lock_and_kv_signals_fire_only_for_their_own_changes() {
        let read_model = ReadModel::new(ReadLimits { buffer: 16, history: 16, kv_quota: 1 << 20 });
        let mut registry = Registry::new();
        let apply = |registry: &mut Registry, command: Command| {
            let outcome = registry.apply(&command);
            assert!(outcome.response.is_ok(), "{command:?}");
            read_model.publish(registry, &outcome.effects);
        };
        let session = SessionId::new(1);
        apply(&mut registry, Command::CreateSession { session, ttl: Ttl::DEFAULT, options: Default::default() });
        let (mut a, b, mut kv) = (read_model.lock_signal("a"), read_model.lock_signal("b"), read_model.kv_signal());
        let acquire = Command::LockAcquire { lock: "a".into(), session, limit: 1, wait: false, value: Vec::new() };
        apply(&mut registry, acquire);
        assert_eq!(a.has_changed().ok(), Some(true), "a changed");
        assert_eq!((b.has_changed().ok(), kv.has_changed().ok()), (Some(false), Some(false)));
        a.borrow_and_update();
        apply(&mut registry, Command::KvTxn { txn: Txn::put("k", "v") });
        assert_eq!((a.has_changed().ok(), kv.has_changed().ok()), (Some(false), Some(true)));
        kv.borrow_and_update();
        // A state replacement wakes everyone; unused signals are dropped.
        read_model.reset(&registry);
        assert_eq!((a.has_changed().ok(), kv.has_changed().ok()), (Some(true), Some(true)));
        drop(b);
        read_model.prune();
        assert_eq!(read_model.state().lock_signals.keys().collect::<Vec<_>>(), ["a"]);
    }
}
