//! The read model: the node's applied state as every reader sees it — services and their
//! watches (`services.rs`), the KV store and its recent changes (`kv.rs`), the locks and their
//! signals (`locks.rs`), the live sessions (`sessions.rs`) — all as of one revision, behind one
//! short lock (readers clone `Arc`s and persistent maps out of it), plus the signals writers and
//! waiters follow: the applied revision, KV changes, each lock's changes. Fed by the state
//! machine's effects (`publish`), replaced on a restore or an installed snapshot (`reset`).

mod kv;
mod locks;
mod services;
mod sessions;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use waggle_core::{
    Effect, KvMap, LockState, Registry, Revision, ServiceInstances, ServiceName, SessionId, Txn, acl::AclState,
};

pub(crate) use kv::KvRead;
pub(crate) use services::{Batch, ChangeKind, ReadCache, Start, Subscription};
pub(crate) use sessions::SessionView;

/// Read model settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadLimits {
    /// Most bytes of keys and values in the KV store (writes beyond it are refused).
    pub(crate) kv_quota: u64,
    /// Batches a subscriber may fall behind before it is resynced.
    pub(crate) buffer: usize,
    /// Batches kept per topic for resuming watchers.
    pub(crate) history: usize,
}

/// Every aggregate as of `revision`.
struct ReadState {
    revision: Revision,
    services: services::Services,
    kv: kv::Kv,
    locks: locks::Locks,
    sessions: sessions::Sessions,
    /// Tokens, policies and roles (a copy taken when they change: tokens resolve against it).
    acl: Arc<AclState>,
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
    /// The revision of the last ACL change (or reset), for streams that end when their token goes.
    acl_changed: tokio::sync::watch::Sender<Revision>,
}

impl ReadModel {
    pub(crate) fn new(limits: ReadLimits) -> Self {
        ReadModel {
            state: Mutex::new(ReadState {
                revision: Revision::INITIAL,
                services: services::Services::new(limits.buffer),
                kv: kv::Kv::default(),
                locks: locks::Locks::default(),
                sessions: sessions::Sessions::new(),
                acl: Arc::default(),
            }),
            kv_changed: tokio::sync::watch::Sender::new(Revision::INITIAL),
            acl_changed: tokio::sync::watch::Sender::new(Revision::INITIAL),
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
        let (instances, reads) = state.services.service(name);
        (state.revision, instances, reads)
    }

    /// Every service with instances, sorted by name, and the current revision.
    pub(crate) fn services(&self) -> (Revision, Vec<(ServiceName, Arc<ServiceInstances>)>) {
        let state = self.state();
        (state.revision, state.services.list())
    }

    /// Subscribes to one service (`Some`) or to all services (`None`).
    pub(crate) fn subscribe(&self, service: Option<&ServiceName>, from: Option<Revision>) -> Subscription {
        let mut state = self.state();
        let current = state.revision;
        state.services.subscribe(service, from, current, self.limits.buffer)
    }

    /// The key/value store and the revision it is at.
    pub(crate) fn kv(&self) -> (Revision, KvMap) {
        let state = self.state();
        (state.revision, state.kv.map.clone())
    }

    /// Refuses a transaction that could take the store past its quota: the bytes held and the
    /// quota (see `kv::Kv::admits`).
    pub(crate) fn kv_admits(&self, txn: &Txn) -> Result<(), (u64, u64)> {
        self.state().kv.admits(txn, self.limits.kv_quota)
    }

    /// A signal that changes whenever the KV store does (or is replaced). Subscribe before
    /// reading, then wait for `changed()`.
    pub(crate) fn kv_signal(&self) -> tokio::sync::watch::Receiver<Revision> {
        self.kv_changed.subscribe()
    }

    /// KV changes with revisions from `from` on, as far as they are known.
    pub(crate) fn kv_since(&self, from: Revision) -> KvRead {
        let state = self.state();
        state.kv.since(from, state.revision)
    }

    /// The store and the locks, both as of the returned revision (for read-only transactions).
    pub(crate) fn kv_and_locks(&self) -> (Revision, KvMap, imbl::OrdMap<String, Arc<LockState>>) {
        let state = self.state();
        (state.revision, state.kv.map.clone(), state.locks.map.clone())
    }

    /// One lock's state (`None`: free, nobody waiting) and the revision it is at.
    pub(crate) fn lock(&self, name: &str) -> (Revision, Option<Arc<LockState>>) {
        let state = self.state();
        (state.revision, state.locks.map.get(name).cloned())
    }

    /// A signal that changes whenever lock `name` does (or the state is replaced). Subscribe
    /// before reading the lock, then wait for `changed()`.
    pub(crate) fn lock_signal(&self, name: &str) -> tokio::sync::watch::Receiver<Revision> {
        let mut state = self.state();
        let revision = state.revision;
        state.locks.signal(name, revision)
    }

    /// Live sessions (the agent's excluded) and the revision they are at.
    pub(crate) fn sessions(&self) -> (Revision, imbl::OrdMap<SessionId, Arc<SessionView>>) {
        let state = self.state();
        (state.revision, state.sessions.clone())
    }

    /// The revision of the last ACL change (or reset): what resolved tokens are valid for.
    pub(crate) fn acl_generation(&self) -> Revision {
        *self.acl_changed.borrow()
    }

    /// A signal that changes whenever tokens, policies or roles do (or the state is replaced).
    pub(crate) fn acl_signal(&self) -> tokio::sync::watch::Receiver<Revision> {
        self.acl_changed.subscribe()
    }

    /// The ACL state (tokens, policies, roles) as of the current revision.
    pub(crate) fn acl(&self) -> Arc<AclState> {
        self.state().acl.clone()
    }

    /// Publishes the effects of one applied batch; `registry` is the state after it.
    pub(crate) fn publish(&self, registry: &Registry, effects: &[Effect]) {
        self.history.store(registry.history(), std::sync::atomic::Ordering::Release);
        let revision = registry.revision();
        let mut guard = self.state();
        let state = &mut *guard;
        state.revision = revision;
        if state.kv.publish(registry, effects, revision) {
            self.kv_changed.send_replace(revision);
        }
        state.locks.publish(registry, effects, revision);
        sessions::publish(&mut state.sessions, effects);
        if effects.iter().any(|e| matches!(e, Effect::AclChanged { .. })) {
            state.acl = Arc::new(registry.acl().clone());
            self.acl_changed.send_replace(revision);
        }
        self.applied.send_replace(revision);
        state.services.publish(registry, effects, revision, self.limits.history);
    }

    /// Drops what nobody needs any more: service views without instances or subscribers, lock
    /// signals without listeners.
    pub(crate) fn prune(&self) {
        let mut state = self.state();
        state.services.prune();
        state.locks.prune();
    }

    /// Replaces every aggregate with the registry's state (startup, snapshot install), wakes
    /// every waiter and tells every subscriber to re-snapshot.
    pub(crate) fn reset(&self, registry: &Registry) {
        self.history.store(registry.history(), std::sync::atomic::Ordering::Release);
        let mut guard = self.state();
        let state = &mut *guard;
        let revision = registry.revision();
        state.revision = revision;
        state.kv.reset(registry, revision);
        state.locks.reset(registry, revision);
        state.sessions = sessions::of(registry);
        state.acl = Arc::new(registry.acl().clone());
        self.acl_changed.send_replace(revision);
        self.kv_changed.send_replace(revision);
        self.applied.send_replace(revision);
        state.services.reset(registry, revision);
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
        assert_eq!(read_model.state().locks.signalled(), ["a"]);
    }
}
