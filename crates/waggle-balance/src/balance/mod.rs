//! [`Balance`]: a tower service that spreads requests over discovered endpoints.
//!
//! ```text
//!  Discover ──► worker task ──publishes──► routing table (ArcSwap) ◄──reads── Balance::call
//!                 ▲  owns endpoint life cycles,                                  │
//!                 │  readiness checks, back-off timers                           ▼
//!                 └──────────── reports (not ready, N failures, probe outcome) ◄─ ResponseFuture
//! ```
//!
//! * The pick happens in `call`, so hash policies see the request and load-aware policies
//!   count the request against its endpoint at once.
//! * `Balance` is `Clone`; clones share the table and the worker, and each has its own RNG.
//!   No `Buffer` is needed in front of it.
//! * Endpoint services must be `Clone` (tonic `Channel`, hyper clients and `BoxCloneService`
//!   are); each request clones the picked endpoint's service, drives it to readiness and
//!   calls it. An endpoint whose service fails to become ready is ejected and the request
//!   picks again (up to [`Builder::max_attempts`]), so one bad endpoint never blocks the
//!   balancer.
//! * A request that picked an endpoint which discovery then removed picks again before
//!   calling it (the tower#856 class of bug cannot happen: nothing is cached by index).

mod config;
mod error;
mod future;
mod handle;
mod layer;
mod record;
mod slot;
mod state;
mod table;
mod telemetry;
mod worker;

use std::any::Any;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use arc_swap::ArcSwap;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tower::discover::{Change, Discover};
use tower::{BoxError, Service};

pub use config::{Ejection, FailureRate, Fallback, Growth, Selector, SlowStart, Subset, WhenEmpty, ZoneAware};
pub use error::{CallTimedOut, Closed, NoEndpoints, NotReady};
pub use future::ResponseFuture;
pub use handle::{EndpointSnapshot, Handle};
pub use layer::BalanceLayer;
pub use record::{PickRecord, RecordedCandidate};
pub use slot::Locality;
pub use state::EndpointState;

use crate::policy::{LeastRequest, Policy};
use crate::{Endpoint, RequestHash};
use slot::Slot;
use table::{Mode, Table, TableConfig};
use worker::{Report, Worker, WorkerConfig};

/// How many times a pick may land on an endpoint just reported as failing before it is used
/// anyway (everything else may be failing too).
const SUSPECT_REPICKS: u32 = 3;

/// What a discovery key must be: hashable (also onto rings, with [`stable_hash`](crate::stable_hash)),
/// cloneable and shareable. Implemented for every such type.
pub trait EndpointKey: Clone + Eq + std::hash::Hash + Send + Sync + 'static {}
impl<K: Clone + Eq + std::hash::Hash + Send + Sync + 'static> EndpointKey for K {}

/// What an endpoint's service must be: cloneable (each request drives its own clone),
/// shareable, with errors that box. Implemented for every such service.
pub trait EndpointService<Req>:
    Service<Req, Error: Into<BoxError>, Response: 'static> + Clone + Send + Sync + 'static
{
}
impl<S, Req> EndpointService<Req> for S where
    S: Service<Req, Error: Into<BoxError>, Response: 'static> + Clone + Send + Sync + 'static
{
}

/// What a balancer can be built over: a [`Discover`] of [`Endpoint`]s. Implemented for every
/// such stream.
pub trait EndpointDiscover<K, S>:
    Discover<Key = K, Service = Endpoint<S>, Error: Into<BoxError>> + Unpin + Send + 'static
{
}
impl<K, S, D> EndpointDiscover<K, S> for D where
    D: Discover<Key = K, Service = Endpoint<S>, Error: Into<BoxError>> + Unpin + Send + 'static
{
}

type Observer<K> = Arc<dyn Fn(&PickRecord<K>) + Send + Sync>;

/// Configures a [`Balance`]. Every setting has a documented default; `Builder::new(policy)`
/// alone gives a working balancer.
pub struct Builder<K, Req> {
    table: TableConfig,
    ejection: Ejection,
    readiness_timeout: Duration,
    when_empty: WhenEmpty,
    max_attempts: u32,
    seed: Option<u64>,
    request_hash: Option<Arc<dyn RequestHash<Req>>>,
    observer: Option<Observer<K>>,
    /// A [`FailureClassifier`] for the services' response type, type-erased until `build`.
    classifier: Option<Arc<dyn Any + Send + Sync>>,
    attempts_of: Option<fn(&Req) -> Option<Attempts>>,
    call_timeout: Option<Duration>,
}

/// The endpoints the attempts of one request went to, shared by its copies (retries, hedges):
/// put one in a request before its first attempt, and a balancer built with
/// [`Builder::track_attempts`] sends each further attempt to an endpoint not tried yet.
#[derive(Clone, Debug, Default)]
pub struct Attempts(Arc<std::sync::Mutex<Vec<u64>>>);

impl Attempts {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// The log in an HTTP request's extensions.
    pub fn of<B>(request: &http::Request<B>) -> Option<Attempts> {
        request.extensions().get::<Attempts>().cloned()
    }

    /// How many attempts were made.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no attempt was made yet.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn tried(&self) -> Vec<u64> {
        self.lock().clone()
    }

    fn record(&self, hash_id: u64) {
        self.lock().push(hash_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u64>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Decides whether a response counts as a failure for ejection (`true` = failed).
pub type FailureClassifier<Res> = Arc<dyn Fn(Result<&Res, &BoxError>) -> bool + Send + Sync>;

impl<K, Req> Clone for Builder<K, Req> {
    fn clone(&self) -> Self {
        Builder {
            table: self.table.clone(),
            ejection: self.ejection.clone(),
            readiness_timeout: self.readiness_timeout,
            when_empty: self.when_empty,
            max_attempts: self.max_attempts,
            seed: self.seed,
            request_hash: self.request_hash.clone(),
            observer: self.observer.clone(),
            classifier: self.classifier.clone(),
            attempts_of: self.attempts_of,
            call_timeout: self.call_timeout,
        }
    }
}

impl<K, Req> fmt::Debug for Builder<K, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("table", &self.table)
            .field("ejection", &self.ejection)
            .field("readiness_timeout", &self.readiness_timeout)
            .field("when_empty", &self.when_empty)
            .field("max_attempts", &self.max_attempts)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl<K, Req> Builder<K, Req> {
    /// A builder for `policy` with the defaults: panic threshold 50 %, no zone preference, no
    /// slow start, no subset, [`Ejection::default`], readiness timeout 2 s, wait when empty,
    /// 3 attempts per request, a random seed.
    pub fn new(policy: impl Policy) -> Self {
        Builder {
            table: TableConfig {
                policy: Arc::new(policy),
                panic_threshold: 0.5,
                zone: None,
                slow_start: None,
                subset: None,
            },
            ejection: Ejection::default(),
            readiness_timeout: Duration::from_secs(2),
            when_empty: WhenEmpty::Wait,
            max_attempts: 3,
            seed: None,
            request_hash: None,
            observer: None,
            classifier: None,
            attempts_of: None,
            call_timeout: None,
        }
    }

    /// When fewer than this share of the known endpoints (in `[0, 1]`) is healthy, balance
    /// over all of them instead of overloading the few (Envoy's panic mode). 0 disables it.
    pub fn panic_threshold(mut self, share: f64) -> Self {
        self.table.panic_threshold = if share.is_finite() { share.clamp(0.0, 1.0) } else { 0.5 };
        self
    }

    /// Prefers endpoints in the local zone.
    pub fn zone_aware(mut self, zone: ZoneAware) -> Self {
        self.table.zone = Some(zone);
        self
    }

    /// Ramps new and returning endpoints up.
    pub fn slow_start(mut self, slow_start: SlowStart) -> Self {
        self.table.slow_start = Some(slow_start);
        self
    }

    /// Balances over a subset of the endpoints.
    pub fn subset(mut self, subset: Subset) -> Self {
        self.table.subset = Some(subset);
        self
    }

    /// Sets when endpoints are ejected and for how long.
    pub fn ejection(mut self, ejection: Ejection) -> Self {
        self.ejection = ejection;
        self
    }

    /// How long an endpoint's service may take to become ready — when it is discovered, and
    /// when a request has picked it — before it is ejected and the request picks another
    /// (default 2 s, at least 1 ms). So a stuck endpoint delays a request by at most this.
    pub fn readiness_timeout(mut self, timeout: Duration) -> Self {
        self.readiness_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// What requests do while there is no endpoint.
    pub fn when_empty(mut self, when_empty: WhenEmpty) -> Self {
        self.when_empty = when_empty;
        self
    }

    /// How many endpoints one request may try when services fail to become ready (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Seeds every random choice, for reproducible tests and simulations.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Sets the request key for consistent-hash policies ([`HeaderHash`](crate::HeaderHash),
    /// [`PathHash`](crate::PathHash), [`ClientIpHash`](crate::ClientIpHash) or a function).
    pub fn request_hash(mut self, hash: impl RequestHash<Req>) -> Self {
        self.request_hash = Some(Arc::new(hash));
        self
    }

    /// Decides which responses count as failures for ejection (by default every `Err` and
    /// nothing else). `Res` must be the endpoints' response type; `build` panics otherwise.
    /// waggle-resilience's classifiers plug in here, so ejection, retries and the circuit
    /// breaker agree on what failed.
    pub fn failure_classifier<Res: 'static>(
        mut self,
        is_failure: impl Fn(Result<&Res, &BoxError>) -> bool + Send + Sync + 'static,
    ) -> Self {
        let classifier: FailureClassifier<Res> = Arc::new(is_failure);
        self.classifier = Some(Arc::new(classifier));
        self
    }

    /// Where requests carry an [`Attempts`] log (for HTTP requests, [`Attempts::of`]): every
    /// pick records its endpoint there and avoids the endpoints earlier attempts of the same
    /// request used, so a retry or a hedge goes somewhere else.
    pub fn track_attempts(mut self, attempts_of: fn(&Req) -> Option<Attempts>) -> Self {
        self.attempts_of = Some(attempts_of);
        self
    }

    /// Bounds each call to an endpoint (one attempt): past it, the call is dropped, fails
    /// with [`CallTimedOut`] and counts as the endpoint's failure, so a hung endpoint is
    /// ejected like a failing one. Off by default.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = Some(timeout.max(Duration::from_millis(1)));
        self
    }

    /// Calls `observer` with a [`PickRecord`] for every pick.
    pub fn on_pick(mut self, observer: impl Fn(&PickRecord<K>) + Send + Sync + 'static) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// Starts the balancer over `discover`: spawns its worker on the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime, as `tokio::spawn` does.
    pub fn build<S, D>(self, discover: D) -> Balance<K, S, Req>
    where
        K: EndpointKey,
        S: EndpointService<Req>,
        Req: Send + 'static,
        D: EndpointDiscover<K, S>,
    {
        if let Some(classifier) = &self.classifier {
            assert!(
                classifier.is::<FailureClassifier<S::Response>>(),
                "Builder::failure_classifier was given a classifier for another response type than the endpoints' ({})",
                std::any::type_name::<S::Response>()
            );
        }
        let mut rng = match self.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_os_rng(),
        };
        let origin = Instant::now();
        let published = Arc::new(ArcSwap::from_pointee(Table::empty()));
        let notify = Arc::new(Notify::new());
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let latency_decay = self.table.policy.load_decay();
        let config = WorkerConfig {
            table: self.table.clone(),
            ejection: self.ejection.clone(),
            readiness_timeout: self.readiness_timeout,
            latency_decay,
        };
        let worker_rng = SmallRng::seed_from_u64(rng.next_u64());
        let worker = Worker::new(
            discover,
            reports_rx,
            control_rx,
            published.clone(),
            notify.clone(),
            config,
            worker_rng,
            origin,
        );
        tokio::spawn(worker.run());
        let shared = Arc::new(Shared {
            table: published,
            notify,
            reports: reports_tx,
            control: control_tx,
            origin,
            request_hash: self.request_hash,
            observer: self.observer,
            latency_decay,
            ejection_threshold: self.ejection.consecutive_failures,
            failure_rate: self.ejection.failure_rate,
            classifier: self.classifier,
            attempts_of: self.attempts_of,
            call_timeout: self.call_timeout,
            max_attempts: self.max_attempts,
            readiness_timeout: self.readiness_timeout,
            when_empty: self.when_empty,
            next_seed: AtomicU64::new(rng.next_u64()),
            policy_name: self.table.policy.name(),
        });
        Balance { rng, shared, waiting: None }
    }

    /// Starts the balancer over a fixed list of endpoints.
    pub fn build_static<S>(self, endpoints: impl IntoIterator<Item = (K, Endpoint<S>)>) -> Balance<K, S, Req>
    where
        K: EndpointKey,
        S: EndpointService<Req>,
        Req: Send + 'static,
    {
        let changes: Vec<Result<Change<K, Endpoint<S>>, std::convert::Infallible>> =
            endpoints.into_iter().map(|(key, endpoint)| Ok(Change::Insert(key, endpoint))).collect();
        self.build(futures_util::stream::iter(changes))
    }
}

/// State shared by every clone of a [`Balance`] and by its in-flight requests.
pub(crate) struct Shared<K, S, Req> {
    table: Arc<ArcSwap<Table<K, S>>>,
    notify: Arc<Notify>,
    reports: mpsc::UnboundedSender<Report<K, S>>,
    control: mpsc::UnboundedSender<handle::Control<K>>,
    origin: Instant,
    request_hash: Option<Arc<dyn RequestHash<Req>>>,
    observer: Option<Observer<K>>,
    /// The policy's latency decay window; `None` when it does not read latency.
    latency_decay: Option<Duration>,
    ejection_threshold: u32,
    failure_rate: Option<FailureRate>,
    classifier: Option<Arc<dyn Any + Send + Sync>>,
    attempts_of: Option<fn(&Req) -> Option<Attempts>>,
    call_timeout: Option<Duration>,
    max_attempts: u32,
    readiness_timeout: Duration,
    when_empty: WhenEmpty,
    next_seed: AtomicU64,
    policy_name: &'static str,
}

impl<K, S, Req> Shared<K, S, Req> {
    fn since_origin(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.origin)
    }

    /// Picks an endpoint from the current table and, when an observer is set, reports why.
    pub(crate) fn pick(
        &self,
        rng: &mut SmallRng,
        request_hash: Option<u64>,
        attempt: u32,
        exclude: &[K],
        attempts: Option<&Attempts>,
    ) -> Option<Arc<Slot<K, S>>>
    where
        K: Clone + PartialEq,
    {
        let table = self.table.load();
        // Reading the clock costs as much as a whole P2C pick: only for policies that use it.
        let now = match self.latency_decay {
            Some(_) => self.since_origin(Instant::now()),
            None => Duration::ZERO,
        };
        let tried = attempts.map(Attempts::tried).unwrap_or_default();
        let excluded = |slot: &Slot<K, S>| exclude.contains(&slot.key) || tried.contains(&slot.hash_id);
        let mut compared = Vec::new();
        let mut picked = None;
        // An endpoint a request just reported as failing is avoided at once, before the worker
        // has published a table without it. Hash policies perturb the key to move off it.
        for retry in 0..SUSPECT_REPICKS {
            compared.clear();
            let hash = match retry {
                0 => request_hash,
                _ => request_hash.map(|h| h ^ crate::hash::mix64(u64::from(retry))),
            };
            let record = self.observer.as_ref().map(|_| &mut compared);
            let candidate = table.pick(rng, now, hash, record)?;
            let avoid = candidate.slot.suspect.load(Relaxed) || excluded(candidate.slot);
            picked = Some(candidate);
            if !avoid {
                break;
            }
        }
        let mut picked = picked?;
        // Excluded endpoints (tried already by a failover) are avoided for sure when any other
        // exists: the policy had its chances, now take the first other one.
        if excluded(picked.slot)
            && let Some(other) = table.any_except(excluded, rng)
        {
            picked = other;
        }
        if let Some(attempts) = attempts {
            attempts.record(picked.slot.hash_id);
        }
        let Some(observer) = &self.observer else {
            return Some(picked.slot.clone());
        };
        let tier = &table.tiers[picked.locality as usize];
        let compared = compared
            .into_iter()
            .map(|(idx, load)| RecordedCandidate {
                key: tier.slots[idx].key.clone(),
                weight: tier.candidates[idx].weight(),
                load,
            })
            .collect();
        observer(&PickRecord {
            policy: self.policy_name,
            chosen: picked.slot.key.clone(),
            compared,
            locality: picked.locality,
            panic: table.mode == Mode::Panic,
            attempt,
        });
        Some(picked.slot.clone())
    }
}

/// Spreads requests over the endpoints of a [`Discover`] with a [`Policy`]; see the
/// [module docs](self) for how.
pub struct Balance<K, S, Req> {
    shared: Arc<Shared<K, S, Req>>,
    rng: SmallRng,
    waiting: Option<Pin<Box<OwnedNotified>>>,
}

impl<K, S, Req> Balance<K, S, Req> {
    /// A [`LeastRequest`] (weighted P2C) balancer over `discover` with default settings.
    pub fn new<D>(discover: D) -> Self
    where
        K: EndpointKey,
        S: EndpointService<Req>,
        Req: Send + 'static,
        D: EndpointDiscover<K, S>,
    {
        Builder::new(LeastRequest::new()).build(discover)
    }

    /// A handle for introspection and manual ejection.
    pub fn handle(&self) -> Handle<K> {
        Handle { control: self.shared.control.clone() }
    }

    /// How many endpoints currently take traffic.
    pub fn len(&self) -> usize {
        self.shared.table.load().len()
    }

    /// Whether no endpoint currently takes traffic.
    pub fn is_empty(&self) -> bool {
        self.shared.table.load().is_empty()
    }
}

impl<K, S, Req> Clone for Balance<K, S, Req> {
    fn clone(&self) -> Self {
        let seed = crate::rng::splitmix(self.shared.next_seed.fetch_add(1, Relaxed));
        Balance { shared: self.shared.clone(), rng: SmallRng::seed_from_u64(seed), waiting: None }
    }
}

impl<K, S, Req> fmt::Debug for Balance<K, S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balance")
            .field("policy", &self.shared.policy_name)
            .field("endpoints", &self.len())
            .finish_non_exhaustive()
    }
}

impl<K, S, Req> Service<Req> for Balance<K, S, Req>
where
    K: Clone + PartialEq,
    Req: 'static,
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    S::Response: 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<K, S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.shared.when_empty != WhenEmpty::Wait {
            return Poll::Ready(Ok(()));
        }
        loop {
            if !self.shared.table.load().is_empty() {
                self.waiting = None;
                return Poll::Ready(Ok(()));
            }
            match &mut self.waiting {
                // Register for the next table before looking again, so a table published in
                // between is not missed.
                None => {
                    let mut notified = Box::pin(self.shared.notify.clone().notified_owned());
                    notified.as_mut().enable();
                    self.waiting = Some(notified);
                }
                Some(notified) => {
                    // A worker that died (its runtime shut down) will never publish: say so
                    // rather than wait forever.
                    if self.shared.reports.is_closed() {
                        return Poll::Ready(Err(Closed.into()));
                    }
                    ready!(notified.as_mut().poll(cx));
                    self.waiting = None;
                }
            }
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        self.call_excluding(request, &[])
    }
}

impl<K, S, Req> Balance<K, S, Req>
where
    K: Clone + PartialEq,
    Req: 'static,
    S: Service<Req> + Clone,
{
    /// Like `call`, but never picks an endpoint in `exclude` while another is available —
    /// how a failover sends its next attempt somewhere else. Call after `poll_ready`.
    pub fn call_excluding(&mut self, request: Req, exclude: &[K]) -> ResponseFuture<K, S, Req> {
        let request_hash = self.shared.request_hash.as_ref().and_then(|hash| hash.hash_request(&request));
        let attempts = self.shared.attempts_of.and_then(|of| of(&request));
        let picked = self.shared.pick(&mut self.rng, request_hash, 0, exclude, attempts.as_ref());
        let avoid = (request_hash, exclude.to_vec(), attempts);
        ResponseFuture::new(self.shared.clone(), picked, request, avoid, self.rng.next_u64())
    }
}

use std::future::Future as _;
