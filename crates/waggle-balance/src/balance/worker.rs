//! The worker: one task per balancer that owns discovery and every endpoint's life cycle, and
//! publishes a new routing table whenever either changes.
//!
//! Requests never wait for it: they read the last published table. What they learn (a
//! service that failed to become ready, N failures in a row, a probe's outcome) comes back as
//! a [`Report`]; operators talk to it through the [`Handle`](super::Handle).

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::future::{FutureExt, poll_fn};
use futures_util::stream::{FuturesUnordered, StreamExt};
use rand::rngs::SmallRng;
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, sleep_until};
use tower::BoxError;
use tower::discover::{Change, Discover};

use super::config::Ejection;
use super::handle::{Control, EndpointSnapshot};
use super::slot::{Locality, Slot, ZoneLoad};
use super::state::{EndpointState, Lifecycle, later};
use super::table::{Table, TableConfig};
use super::{EndpointDiscover, EndpointKey, EndpointService};
use crate::{Endpoint, EndpointStats, stable_hash};

/// What requests tell the worker.
pub(crate) enum Report<K, S> {
    /// The endpoint's service failed to become ready, or its responses failed too often.
    Failed { slot: Arc<Slot<K, S>>, reason: String, kind: FailureKind },
    /// A response from an endpoint on probation.
    Verdict { slot: Arc<Slot<K, S>>, success: bool },
}

/// Why an endpoint is reported failing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// Its service cannot become ready: always ejected.
    NotReady,
    /// Its responses fail: ejected within the maximum ejected share.
    Responses,
}

struct Entry<K, S> {
    slot: Arc<Slot<K, S>>,
    life: Lifecycle,
}

type Readiness<K, S> = Pin<Box<dyn Future<Output = (Arc<Slot<K, S>>, Result<(), String>)> + Send>>;

/// Back-off after a discovery error, doubling up to the max while errors continue.
const DISCOVER_BACKOFF_MIN: Duration = Duration::from_millis(100);
const DISCOVER_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How many discovery changes are folded into one table rebuild at most.
const MAX_CHANGES_PER_REBUILD: usize = 16_384;

pub(crate) struct WorkerConfig {
    pub(crate) table: TableConfig,
    pub(crate) ejection: Ejection,
    pub(crate) readiness_timeout: Duration,
    pub(crate) latency_decay: Option<Duration>,
}

pub(crate) struct Worker<K, S, Req, D> {
    discover: Option<D>,
    entries: Vec<Entry<K, S>>,
    index: HashMap<K, usize>,
    readiness: FuturesUnordered<Readiness<K, S>>,
    reports: mpsc::UnboundedReceiver<Report<K, S>>,
    control: mpsc::UnboundedReceiver<Control<K>>,
    control_open: bool,
    published: Arc<ArcSwap<Table<K, S>>>,
    notify: Arc<Notify>,
    config: WorkerConfig,
    zone_load: Option<Arc<ZoneLoad>>,
    rng: SmallRng,
    next_warmup: Option<Instant>,
    /// Slots replaced or removed since the last publish; marked removed after it.
    retired: Vec<Arc<Slot<K, S>>>,
    /// After a discovery error, discovery is polled again only from this time on.
    discover_paused_until: Option<Instant>,
    discover_backoff: Duration,
    dirty: bool,
    origin: Instant,
    _request: PhantomData<fn(Req)>,
}

impl<K, S, Req, D> Worker<K, S, Req, D>
where
    K: EndpointKey,
    S: EndpointService<Req>,
    D: EndpointDiscover<K, S>,
{
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        discover: D,
        reports: mpsc::UnboundedReceiver<Report<K, S>>,
        control: mpsc::UnboundedReceiver<Control<K>>,
        published: Arc<ArcSwap<Table<K, S>>>,
        notify: Arc<Notify>,
        config: WorkerConfig,
        rng: SmallRng,
        origin: Instant,
    ) -> Self {
        let zone_load = config.table.zone.as_ref().map(|_| Arc::new(ZoneLoad::default()));
        Worker {
            discover: Some(discover),
            entries: Vec::new(),
            index: HashMap::new(),
            readiness: FuturesUnordered::new(),
            reports,
            control,
            control_open: true,
            published,
            notify,
            config,
            zone_load,
            rng,
            next_warmup: None,
            retired: Vec::new(),
            discover_paused_until: None,
            discover_backoff: DISCOVER_BACKOFF_MIN,
            dirty: false,
            origin,
            _request: PhantomData,
        }
    }

    /// Runs until every [`Balance`](super::Balance) clone and in-flight request is gone.
    pub(crate) async fn run(mut self) {
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                report = self.reports.recv() => match report {
                    Some(report) => self.on_report(report),
                    None => return,
                },
                control = self.control.recv(), if self.control_open => match control {
                    Some(control) => self.on_control(control),
                    None => self.control_open = false,
                },
                change = next_change(&mut self.discover), if self.discover.is_some() && self.discover_paused_until.is_none() => {
                    self.on_change(change);
                    self.drain_discover();
                }
                Some((slot, result)) = self.readiness.next(), if !self.readiness.is_empty() => {
                    self.on_readiness(&slot, result);
                    // Endpoints inserted together usually become ready together: publish them
                    // in one table, so a hash ring does not reshuffle once per endpoint.
                    while let Some(Some((slot, result))) = self.readiness.next().now_or_never() {
                        self.on_readiness(&slot, result);
                    }
                }
                () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {}
            }
            self.on_timers(Instant::now());
            if self.dirty {
                self.publish();
            }
        }
    }

    fn drain_discover(&mut self) {
        for _ in 0..MAX_CHANGES_PER_REBUILD {
            if self.discover_paused_until.is_some() {
                return;
            }
            match next_change(&mut self.discover).now_or_never() {
                Some(change) => self.on_change(change),
                None => return,
            }
        }
    }

    fn on_change(&mut self, change: Option<DiscoverResult<D>>) {
        match change {
            None => {
                tracing::debug!("discovery ended; keeping the current endpoints");
                self.discover = None;
            }
            Some(Err(error)) => {
                let error: BoxError = error.into();
                let backoff = self.discover_backoff;
                tracing::warn!(%error, ?backoff, "discovery failed; keeping the current endpoints");
                self.discover_paused_until = Some(later(Instant::now(), backoff));
                self.discover_backoff = (backoff * 2).min(DISCOVER_BACKOFF_MAX);
            }
            Some(Ok(Change::Insert(key, endpoint))) => {
                self.discover_backoff = DISCOVER_BACKOFF_MIN;
                self.insert(key, endpoint);
            }
            Some(Ok(Change::Remove(key))) => {
                self.discover_backoff = DISCOVER_BACKOFF_MIN;
                self.remove(&key);
            }
        }
    }

    fn new_slot(&self, key: K, endpoint: Endpoint<S>, stats: Arc<EndpointStats>) -> Arc<Slot<K, S>> {
        let locality = match &self.config.table.zone {
            Some(zone) if endpoint.zone.as_deref() != Some(&*zone.local) => Locality::Remote,
            _ => Locality::Local,
        };
        Arc::new(Slot {
            hash_id: stable_hash(&key),
            key,
            endpoint,
            stats,
            locality,
            zone_load: self.zone_load.clone(),
            removed: Default::default(),
            probing: Default::default(),
            suspect: Default::default(),
        })
    }

    fn insert(&mut self, key: K, endpoint: Endpoint<S>) {
        self.dirty = true;
        if let Some(&idx) = self.index.get(&key) {
            // An update: same endpoint, new service or attributes. It keeps its state and
            // load; requests holding the old slot finish on it, new ones pick the new slot.
            // Stats the update brings (a fresh limiter publishing into them) win; otherwise
            // the endpoint keeps its own, load included.
            let stats = endpoint.stats.clone().unwrap_or_else(|| self.entries[idx].slot.stats.clone());
            let slot = self.new_slot(key, endpoint, stats);
            let entry = &mut self.entries[idx];
            slot.probing.store(entry.life.state == EndpointState::Probation, Relaxed);
            let old = std::mem::replace(&mut entry.slot, slot);
            self.retired.push(old);
            return;
        }
        let stats = endpoint.stats.clone().unwrap_or_default();
        let slot = self.new_slot(key.clone(), endpoint, stats);
        self.index.insert(key, self.entries.len());
        self.entries.push(Entry { slot: slot.clone(), life: Lifecycle::new() });
        let timeout = self.config.readiness_timeout;
        self.readiness.push(Box::pin(async move {
            let mut service = slot.endpoint.service.clone();
            let ready = poll_fn(|cx| service.poll_ready(cx));
            let result = match tokio::time::timeout(timeout, ready).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(format!("not ready: {}", error.into())),
                Err(_) => Err(format!("not ready within {timeout:?}")),
            };
            (slot, result)
        }));
    }

    fn remove(&mut self, key: &K) {
        let Some(idx) = self.index.remove(key) else { return };
        let entry = self.entries.swap_remove(idx);
        self.retired.push(entry.slot);
        if let Some(moved) = self.entries.get(idx) {
            self.index.insert(moved.slot.key.clone(), idx);
        }
        self.dirty = true;
    }

    /// The entry `slot` belongs to, if the endpoint is still present. Replacements of a slot
    /// share its stats, so reports about an older slot still reach the endpoint.
    fn entry_of(&mut self, slot: &Slot<K, S>) -> Option<&mut Entry<K, S>> {
        let idx = *self.index.get(&slot.key)?;
        let entry = &mut self.entries[idx];
        Arc::ptr_eq(&entry.slot.stats, &slot.stats).then_some(entry)
    }

    fn on_readiness(&mut self, slot: &Slot<K, S>, result: Result<(), String>) {
        let now = Instant::now();
        let policy = self.config.table.policy.name();
        let ejection = self.config.ejection.clone();
        let Some(entry) = self.entry_of(slot) else { return };
        let changed = match result {
            Ok(()) => entry.life.on_connected(now),
            // Only a connecting endpoint is judged by its first readiness check; anything else
            // has been judged since.
            Err(_) if entry.life.state != EndpointState::Connecting => false,
            Err(reason) => {
                tracing::debug!(reason, "endpoint ejected");
                let ejected = entry.life.eject(now, &ejection, None, reason).is_some();
                if ejected {
                    super::telemetry::ejected(policy);
                }
                ejected
            }
        };
        self.dirty |= changed;
    }

    fn on_report(&mut self, report: Report<K, S>) {
        let now = Instant::now();
        let policy = self.config.table.policy.name();
        let ejection = self.config.ejection.clone();
        match report {
            Report::Failed { slot, reason, kind } => {
                let n_ejected = self.entries.iter().filter(|e| e.life.state == EndpointState::Ejected).count();
                let may_eject = kind == FailureKind::NotReady || n_ejected < ejection.max_ejected(self.entries.len());
                let Some(entry) = self.entry_of(&slot) else { return };
                if !may_eject {
                    tracing::debug!(reason, n_ejected, "not ejecting: the maximum ejected share is reached");
                    entry.slot.stats.reset_failures();
                    entry.slot.suspect.store(false, Relaxed);
                    return;
                }
                if entry.life.eject(now, &ejection, None, reason).is_some() {
                    super::telemetry::ejected(policy);
                    entry.slot.stats.reset_failures();
                    entry.slot.probing.store(false, Relaxed);
                    self.dirty = true;
                }
            }
            Report::Verdict { slot, success } => {
                let Some(entry) = self.entry_of(&slot) else { return };
                if entry.life.state != EndpointState::Probation {
                    return;
                }
                entry.slot.probing.store(false, Relaxed);
                if success {
                    if entry.life.on_probe_succeeded(now) {
                        super::telemetry::readmitted(policy);
                    }
                    entry.slot.stats.reset_failures();
                } else {
                    if entry.life.eject(now, &ejection, None, "failed on probation".into()).is_some() {
                        super::telemetry::ejected(policy);
                    }
                    entry.slot.stats.reset_failures();
                }
                self.dirty = true;
            }
        }
    }

    fn on_control(&mut self, control: Control<K>) {
        let now = Instant::now();
        let policy = self.config.table.policy.name();
        match control {
            Control::Snapshot(reply) => {
                let _ = reply.send(self.snapshot(now));
            }
            Control::Eject { key, duration } => {
                let Some(&idx) = self.index.get(&key) else { return };
                let entry = &mut self.entries[idx];
                if entry.life.eject(now, &self.config.ejection, duration, "ejected by the handle".into()).is_some() {
                    super::telemetry::ejected(policy);
                    entry.slot.probing.store(false, Relaxed);
                    self.dirty = true;
                }
            }
            Control::Restore { key } => {
                let Some(&idx) = self.index.get(&key) else { return };
                let entry = &mut self.entries[idx];
                if entry.life.restore(now) {
                    entry.slot.probing.store(false, Relaxed);
                    entry.slot.suspect.store(false, Relaxed);
                    entry.slot.stats.reset_failures();
                    self.dirty = true;
                }
            }
        }
    }

    fn on_timers(&mut self, now: Instant) {
        for entry in &mut self.entries {
            if entry.life.on_backoff_elapsed(now) {
                entry.slot.probing.store(true, Relaxed);
                entry.slot.suspect.store(false, Relaxed);
                self.dirty = true;
            }
        }
        if self.next_warmup.is_some_and(|at| at <= now) {
            self.dirty = true;
        }
        if self.discover_paused_until.is_some_and(|at| at <= now) {
            self.discover_paused_until = None;
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let retries = self.entries.iter().filter_map(|e| e.life.retry_at);
        retries.chain(self.next_warmup).chain(self.discover_paused_until).min()
    }

    fn publish(&mut self) {
        let now = Instant::now();
        let entries = self.entries.iter().map(|e| (&e.slot, &e.life));
        let table = Table::build(entries, &self.config.table, self.zone_load.as_ref(), now, &mut self.rng);
        self.next_warmup = self.config.table.next_warmup_step(self.entries.iter().map(|e| &e.life), now);
        self.published.store(Arc::new(table));
        super::telemetry::endpoints(self.config.table.policy.name(), self.entries.iter().map(|e| e.life.state));
        // Only now that no table holds them: a request that still picks a retired slot from
        // an older table picks again and finds the new one.
        for slot in self.retired.drain(..) {
            slot.removed.store(true, Relaxed);
        }
        self.notify.notify_waiters();
        self.dirty = false;
    }

    fn snapshot(&self, now: Instant) -> Vec<EndpointSnapshot<K>> {
        let table = self.published.load();
        let weight_in_table = |slot: &Arc<Slot<K, S>>| -> f64 {
            table
                .tiers
                .iter()
                .flat_map(|tier| tier.slots.iter().zip(&tier.candidates))
                .find(|(s, _)| Arc::ptr_eq(s, slot))
                .map_or(0.0, |(_, candidate)| candidate.weight())
        };
        let since_origin = now.saturating_duration_since(self.origin);
        self.entries
            .iter()
            .map(|Entry { slot, life }| EndpointSnapshot {
                key: slot.key.clone(),
                state: life.state,
                weight: slot.endpoint.weight,
                effective_weight: weight_in_table(slot),
                zone: slot.endpoint.zone.as_deref().map(str::to_owned),
                in_flight: slot.stats.in_flight(),
                successes: slot.stats.successes(),
                failures: slot.stats.failures(),
                latency: self
                    .config
                    .latency_decay
                    .map(|decay| Duration::from_nanos(slot.stats.peak_ewma(since_origin, decay) as u64)),
                ejections: life.total_ejections,
                retry_in: life.retry_at.map(|at| at.saturating_duration_since(now)),
                last_error: life.last_error.clone(),
            })
            .collect()
    }
}

type DiscoverResult<D> = Result<Change<<D as Discover>::Key, <D as Discover>::Service>, <D as Discover>::Error>;

async fn next_change<D: Discover + Unpin>(discover: &mut Option<D>) -> Option<DiscoverResult<D>> {
    match discover {
        Some(discover) => poll_fn(|cx| Pin::new(&mut *discover).poll_discover(cx)).await,
        None => std::future::pending().await,
    }
}
