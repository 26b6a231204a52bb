//! The services as readers see them: one shared, copy-on-write view per service (the answer to
//! `GetService` / `ListServices`, with its encodings cached per version), and a broadcast topic
//! per watched service plus one for all services. A subscriber gets a snapshot (or a replay of
//! recent batches when resuming), then deltas; buffers are bounded by the broadcast capacity,
//! and a subscriber that lags behind is resynced with a fresh snapshot instead of growing
//! memory (blueprint decision 6).

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
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

/// Every service's view and the topic of all services.
pub(super) struct Services {
    views: HashMap<ServiceName, View>,
    all: Topic,
}

impl Services {
    pub(super) fn new(buffer: usize) -> Self {
        Services { views: HashMap::new(), all: Topic::new(buffer, Revision::INITIAL) }
    }

    /// One service's instances (empty if unknown) and their read cache.
    pub(super) fn service(&self, name: &ServiceName) -> (Arc<ServiceInstances>, Arc<ReadCache>) {
        match self.views.get(name) {
            Some(v) => (v.instances.clone(), v.reads.clone()),
            None => (Arc::default(), Arc::default()),
        }
    }

    /// Every service with instances, sorted by name.
    pub(super) fn list(&self) -> Vec<(ServiceName, Arc<ServiceInstances>)> {
        let mut list: Vec<_> = self
            .views
            .iter()
            .filter(|(_, v)| !v.instances.is_empty())
            .map(|(k, v)| (k.clone(), v.instances.clone()))
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }

    /// Subscribes to one service (`Some`) or to all services (`None`); `current` is the
    /// revision the views are at, `buffer` a new topic's capacity.
    pub(super) fn subscribe(
        &mut self,
        service: Option<&ServiceName>,
        from: Option<Revision>,
        current: Revision,
        buffer: usize,
    ) -> Subscription {
        match service {
            None => {
                let views = &self.views;
                self.all.subscribe(from, current, || {
                    let mut all: Vec<Arc<Instance>> =
                        views.values().flat_map(|v| v.instances.values().cloned()).collect();
                    all.sort_by(|a, b| (a.service(), a.id()).cmp(&(b.service(), b.id())));
                    all
                })
            }
            Some(name) => {
                let all = &self.all;
                let view = self.views.entry(name.clone()).or_default();
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

    /// Takes in the instance changes of one batch of effects at `revision` (`registry` is the
    /// state after it); `history` batches are kept per topic.
    pub(super) fn publish(&mut self, registry: &Registry, effects: &[Effect], revision: Revision, history: usize) {
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
                | Effect::LockDelayLifted { .. }
                | Effect::AclChanged { .. } => continue,
            };
            per_service.entry(change.instance.service().clone()).or_default().push(change);
        }
        if per_service.is_empty() {
            return;
        }
        let mut all_changes = Vec::new();
        for (name, changes) in per_service {
            all_changes.extend(changes.iter().cloned());
            let instances = registry.service(name.as_str()).cloned().unwrap_or_default();
            let view = self.views.entry(name.clone()).or_default();
            view.instances = instances;
            view.reads = Arc::default();
            if let Some(topic) = &mut view.topic {
                topic.send(Arc::new(Batch::new(revision, changes, false)), history);
            }
            let unwatched = view.topic.as_ref().is_none_or(|t| t.tx.receiver_count() == 0);
            if view.instances.is_empty() && unwatched {
                self.views.remove(&name);
            }
        }
        self.all.send(Arc::new(Batch::new(revision, all_changes, false)), history);
    }

    /// Drops views that neither hold instances nor have subscribers (a watch of a service that
    /// never existed leaves one behind when the watcher goes).
    pub(super) fn prune(&mut self) {
        self.views
            .retain(|_, v| !v.instances.is_empty() || v.topic.as_ref().is_some_and(|t| t.tx.receiver_count() > 0));
    }

    /// Replaces every view with the registry's (startup, snapshot install) and tells every
    /// subscriber to re-snapshot.
    pub(super) fn reset(&mut self, registry: &Registry, revision: Revision) {
        self.views.retain(|_, v| v.topic.as_ref().is_some_and(|t| t.tx.receiver_count() > 0));
        for view in self.views.values_mut() {
            view.instances = Arc::default();
            view.reads = Arc::default();
            if let Some(topic) = &mut view.topic {
                topic.resync(revision);
            }
        }
        for (name, instances) in registry.services() {
            let view = self.views.entry(name.clone()).or_default();
            view.instances = instances.clone();
            view.reads = Arc::default();
        }
        self.all.resync(revision);
    }
}
