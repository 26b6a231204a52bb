//! The discovery cache: a live, lock-free view of one service fed by a watch stream.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Instant,
};

use arc_swap::ArcSwap;
use futures_util::Stream;
use tokio::{sync::watch, task::JoinHandle};
use tokio_stream::wrappers::WatchStream;
use waggle_core::{Instance, InstanceId, Revision, ServiceName};
use waggle_proto::v1::{self, watch_response::Event};

use crate::rpc::instance_from_wire;
use crate::{Client, Error, client::is_passing};

/// Whether the cache reflects the server right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheState {
    /// Connected and up to date.
    Fresh,
    /// Not connected (or not yet connected) since `since`; the cache serves last-known-good.
    Stale {
        /// When the cache stopped being fresh (or was created).
        since: Instant,
    },
}

/// What happened to an instance, as seen by a change stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A new instance appeared.
    Added,
    /// An instance changed (status, weight, tags...).
    Updated,
    /// An instance went away.
    Removed,
}

/// One change observed by [`Discovery::changes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryEvent {
    /// What happened.
    pub kind: ChangeKind,
    /// The instance (as it was, for removals).
    pub instance: Instance,
}

struct Shared {
    service: ServiceName,
    all: ArcSwap<Vec<Instance>>,
    passing: ArcSwap<Vec<Instance>>,
    state: Mutex<CacheState>,
    revision: AtomicU64,
    /// Bumped after every update of the instance lists; 0 until the first snapshot.
    generation: watch::Sender<u64>,
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A live cache of one service's instances. Cheap to clone; the background watch stops when
/// the last clone is dropped.
///
/// It keeps its last-known-good set while the server is unreachable (and says so through
/// [`Discovery::state`]); only a snapshot from a reachable server can replace the set.
#[derive(Clone)]
pub struct Discovery {
    shared: Arc<Shared>,
    _task: Arc<AbortOnDrop>,
}

impl Discovery {
    pub(crate) fn start(client: Client, service: ServiceName) -> Self {
        let shared = Arc::new(Shared {
            service,
            all: ArcSwap::default(),
            passing: ArcSwap::default(),
            state: Mutex::new(CacheState::Stale { since: Instant::now() }),
            revision: AtomicU64::new(0),
            generation: watch::channel(0).0,
        });
        let task = tokio::spawn(run(client, shared.clone()));
        Discovery { shared, _task: Arc::new(AbortOnDrop(task)) }
    }

    /// The service watched.
    pub fn service(&self) -> &ServiceName {
        &self.shared.service
    }

    /// The passing instances, sorted by id. Lock-free; cheap to call on every request.
    pub fn instances(&self) -> Arc<Vec<Instance>> {
        self.shared.passing.load_full()
    }

    /// Every instance whatever its status, sorted by id.
    pub fn all_instances(&self) -> Arc<Vec<Instance>> {
        self.shared.all.load_full()
    }

    /// Fresh, or stale since when.
    pub fn state(&self) -> CacheState {
        *self.shared.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The revision the cache reflects (`None` before the first snapshot).
    pub fn revision(&self) -> Option<Revision> {
        match self.shared.revision.load(Ordering::Acquire) {
            0 => None,
            r => Some(Revision::new(r)),
        }
    }

    /// Waits until the cache has loaded its first snapshot.
    pub async fn ready(&self) {
        let mut rx = self.shared.generation.subscribe();
        let _ = rx.wait_for(|g| *g > 0).await;
    }

    /// Waits until `predicate` holds for the passing instances (checked now and after every
    /// update).
    pub async fn wait_until(&self, mut predicate: impl FnMut(&[Instance]) -> bool) {
        let mut rx = self.shared.generation.subscribe();
        let shared = self.shared.clone();
        let _ = rx.wait_for(|_| predicate(&shared.passing.load())).await;
    }

    /// A stream of changes to every instance (whatever its status). It starts with an
    /// `Added` event for each instance already known, then follows updates. A slow consumer
    /// never buffers: it sees the net difference since it last looked.
    pub fn changes(&self) -> DiscoveryChanges {
        DiscoveryChanges(Differ::new(self, false))
    }

    /// A [`tower::discover::Discover`] of the passing instances that have a port, keyed by
    /// instance id: an instance that stops passing is removed, and inserted again when it
    /// recovers.
    pub fn discover(&self) -> DiscoverStream {
        DiscoverStream(Differ::new(self, true))
    }

    /// A [`tower::discover::Discover`] of [`waggle_balance::Endpoint`]s for a
    /// [`waggle_balance::Balance`]: every passing instance, carrying its weight, zone, tags and
    /// metadata, with the service `connect` builds for it (called when an instance appears or
    /// changes; a lazily connecting tonic `Channel` is the usual choice).
    pub fn endpoints<S, F>(&self, connect: F) -> Endpoints<F>
    where
        F: FnMut(&Instance) -> S,
    {
        Endpoints { changes: self.discover(), connect }
    }
}

/// The stream returned by [`Discovery::endpoints`].
pub struct Endpoints<F> {
    changes: DiscoverStream,
    connect: F,
}

impl<S, F> Stream for Endpoints<F>
where
    F: FnMut(&Instance) -> S + Unpin,
{
    type Item = Result<tower::discover::Change<InstanceId, waggle_balance::Endpoint<S>>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        use tower::discover::Change;
        let this = self.get_mut();
        Pin::new(&mut this.changes).poll_next(cx).map(|change| {
            change.map(|change| {
                change.map(|change| match change {
                    Change::Insert(id, instance) => Change::Insert(id, endpoint(&instance, (this.connect)(&instance))),
                    Change::Remove(id) => Change::Remove(id),
                })
            })
        })
    }
}

/// The balancer's view of an instance.
fn endpoint<S>(instance: &Instance, service: S) -> waggle_balance::Endpoint<S> {
    let spec = &instance.spec;
    let mut endpoint = waggle_balance::Endpoint::new(service).weight(spec.weight);
    if let Some(zone) = &spec.zone {
        endpoint = endpoint.zone(zone.as_str());
    }
    for tag in &spec.tags {
        endpoint = endpoint.tag(tag.clone());
    }
    for (key, value) in spec.meta.iter() {
        endpoint = endpoint.metadata(key.clone(), value.clone());
    }
    endpoint
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("service", &self.shared.service)
            .field("state", &self.state())
            .field("instances", &self.all_instances().len())
            .finish()
    }
}

fn set_state(shared: &Shared, fresh: bool) {
    let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
    *state = match (*state, fresh) {
        (_, true) => CacheState::Fresh,
        (CacheState::Fresh, false) => CacheState::Stale { since: Instant::now() },
        (stale, false) => stale,
    };
}

fn publish(shared: &Shared, map: &BTreeMap<InstanceId, Instance>, revision: u64) {
    let all: Vec<Instance> = map.values().cloned().collect();
    let passing: Vec<Instance> = all.iter().filter(|i| is_passing(i)).cloned().collect();
    shared.all.store(Arc::new(all));
    shared.passing.store(Arc::new(passing));
    shared.revision.store(revision, Ordering::Release);
    shared.generation.send_modify(|g| *g += 1);
}

/// The watcher's view of the stream: the applied map, its revision, and a snapshot being
/// received in several messages.
#[derive(Default)]
struct Follower {
    map: BTreeMap<InstanceId, Instance>,
    revision: u64,
    /// The server's history id; sent back when resuming so a wiped server re-snapshots.
    incarnation: u64,
    partial: Option<BTreeMap<InstanceId, Instance>>,
}

impl Follower {
    /// Applies one watch message; returns true when the map is complete and should be
    /// published (false while a chunked snapshot is still arriving).
    fn apply(&mut self, event: Event) -> Result<bool, Error> {
        match event {
            Event::Snapshot(snapshot) => {
                let partial = self.partial.get_or_insert_with(BTreeMap::new);
                for wire in &snapshot.instances {
                    let instance = instance_from_wire(wire)?;
                    partial.insert(instance.id().clone(), instance);
                }
                if snapshot.continued {
                    return Ok(false);
                }
                // A snapshot from a reachable server is authoritative, even when empty.
                self.map = self.partial.take().unwrap_or_default();
                self.revision = snapshot.revision;
                Ok(true)
            }
            Event::Deltas(batch) => {
                if self.partial.is_some() {
                    return Err(Error::Protocol("deltas inside a snapshot".into()));
                }
                if batch.revision <= self.revision && !batch.deltas.is_empty() {
                    return Ok(true); // Already applied.
                }
                for delta in &batch.deltas {
                    let wire =
                        delta.instance.as_ref().ok_or_else(|| Error::Protocol("delta without instance".into()))?;
                    let instance = instance_from_wire(wire)?;
                    if delta.kind == v1::DeltaKind::Removed as i32 {
                        self.map.remove(instance.id());
                    } else {
                        self.map.insert(instance.id().clone(), instance);
                    }
                }
                self.revision = self.revision.max(batch.revision);
                Ok(true)
            }
        }
    }
}

/// The background watch: connect, follow, and on any failure mark stale and reconnect with
/// jittered back-off, resuming from the last revision.
async fn run(client: Client, shared: Arc<Shared>) {
    let mut backoff = client.config().backoff();
    let mut follower = Follower::default();
    loop {
        follower.partial = None;
        let req = v1::WatchRequest {
            service: shared.service.to_string(),
            from_revision: follower.revision,
            incarnation: follower.incarnation,
        };
        match client.rpc().watch(req).await {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(v1::WatchResponse { event: Some(event), incarnation, .. })) => {
                            follower.incarnation = incarnation;
                            match follower.apply(event) {
                                Ok(true) => {
                                    publish(&shared, &follower.map, follower.revision);
                                    set_state(&shared, true);
                                    backoff.reset();
                                }
                                Ok(false) => {}
                                Err(e) => {
                                    tracing::warn!(service = %shared.service, "bad watch message: {e}");
                                    follower.revision = 0; // Start over with a snapshot.
                                    break;
                                }
                            }
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(status) => {
                            tracing::debug!(service = %shared.service, "watch stream ended: {status}");
                            break;
                        }
                    }
                }
            }
            Err(status) => tracing::debug!(service = %shared.service, "watch failed: {status}"),
        }
        set_state(&shared, false);
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Turns generation bumps into per-instance changes by diffing against what the consumer
/// has already seen.
struct Differ {
    shared: Arc<Shared>,
    /// Keeps the background watch alive while the stream exists, even if every `Discovery`
    /// handle was dropped.
    _task: Arc<AbortOnDrop>,
    generations: WatchStream<u64>,
    known: HashMap<InstanceId, Instance>,
    pending: VecDeque<DiscoveryEvent>,
    passing_only: bool,
}

impl Differ {
    fn new(discovery: &Discovery, passing_only: bool) -> Self {
        let shared = discovery.shared.clone();
        let generations = WatchStream::new(shared.generation.subscribe());
        Differ {
            shared,
            _task: discovery._task.clone(),
            generations,
            known: HashMap::new(),
            pending: VecDeque::new(),
            passing_only,
        }
    }

    fn diff(&mut self) {
        let current = if self.passing_only { self.shared.passing.load_full() } else { self.shared.all.load_full() };
        let mut seen: HashMap<InstanceId, Instance> = HashMap::with_capacity(current.len());
        // What a balancer may call: passing, and with a port (Consul's port-less services are
        // discovered but never called).
        for instance in current.iter().filter(|i| !self.passing_only || i.spec.port != 0) {
            let kind = match self.known.get(instance.id()) {
                None => Some(ChangeKind::Added),
                Some(old) if old != instance => Some(ChangeKind::Updated),
                Some(_) => None,
            };
            if let Some(kind) = kind {
                self.pending.push_back(DiscoveryEvent { kind, instance: instance.clone() });
            }
            seen.insert(instance.id().clone(), instance.clone());
        }
        let mut removed: Vec<Instance> =
            self.known.drain().filter(|(id, _)| !seen.contains_key(id)).map(|(_, i)| i).collect();
        removed.sort_by(|a, b| a.id().cmp(b.id()));
        self.pending.extend(removed.into_iter().map(|instance| DiscoveryEvent { kind: ChangeKind::Removed, instance }));
        self.known = seen;
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<DiscoveryEvent>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Poll::Ready(Some(event));
            }
            match Pin::new(&mut self.generations).poll_next(cx) {
                Poll::Ready(Some(_)) => self.diff(),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The stream returned by [`Discovery::changes`].
pub struct DiscoveryChanges(Differ);

impl Stream for DiscoveryChanges {
    type Item = DiscoveryEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().0.poll_event(cx)
    }
}

/// The stream returned by [`Discovery::discover`]; implements [`tower::discover::Discover`]
/// with instance ids as keys and instances as services.
pub struct DiscoverStream(Differ);

impl Stream for DiscoverStream {
    type Item = Result<tower::discover::Change<InstanceId, Instance>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().0.poll_event(cx).map(|event| {
            event.map(|e| {
                Ok(match e.kind {
                    ChangeKind::Added | ChangeKind::Updated => {
                        tower::discover::Change::Insert(e.instance.id().clone(), e.instance)
                    }
                    ChangeKind::Removed => tower::discover::Change::Remove(e.instance.id().clone()),
                })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(port: u32) -> v1::Instance {
        v1::Instance { service: "web".into(), address: "10.0.0.1".into(), port, ..Default::default() }
    }

    fn snapshot(revision: u64, ports: &[u32], continued: bool) -> Event {
        Event::Snapshot(v1::Snapshot { revision, instances: ports.iter().map(|p| wire(*p)).collect(), continued })
    }

    fn deltas(revision: u64, kind: v1::DeltaKind, port: u32) -> Event {
        Event::Deltas(v1::Deltas {
            revision,
            deltas: vec![v1::Delta { kind: kind as i32, instance: Some(wire(port)) }],
        })
    }

    #[test]
    fn chunked_snapshots_complete_before_they_replace_the_map() {
        let mut f = Follower::default();
        assert!(f.apply(snapshot(5, &[1], false)).unwrap());
        assert_eq!(f.map.len(), 1);
        assert!(!f.apply(snapshot(9, &[2, 3], true)).unwrap());
        assert_eq!((f.map.len(), f.revision), (1, 5), "a partial snapshot is not applied");
        assert!(f.apply(snapshot(9, &[4], false)).unwrap());
        assert_eq!((f.map.len(), f.revision), (3, 9));
        // An empty snapshot from a reachable server is authoritative.
        assert!(f.apply(snapshot(10, &[], false)).unwrap());
        assert!(f.map.is_empty());
    }

    #[test]
    fn deltas_apply_once_in_order() {
        let mut f = Follower::default();
        f.apply(snapshot(3, &[], false)).unwrap();
        f.apply(deltas(4, v1::DeltaKind::Added, 1)).unwrap();
        f.apply(deltas(5, v1::DeltaKind::Removed, 1)).unwrap();
        // A replayed batch at or below the current revision is ignored.
        f.apply(deltas(4, v1::DeltaKind::Added, 1)).unwrap();
        assert!(f.map.is_empty());
        assert_eq!(f.revision, 5);
        f.apply(snapshot(6, &[1], true)).unwrap();
        assert!(f.apply(deltas(7, v1::DeltaKind::Added, 2)).is_err(), "deltas cannot interrupt a snapshot");
    }
}
