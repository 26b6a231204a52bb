//! The service client: `client.service("orders")` → discovery + waggle-balance +
//! waggle-resilience, composed with production defaults into one cloneable tower `Service`
//! that a tonic client (or any HTTP/2 user) takes in place of a channel.
//!
//! ```text
//!  caller ─► Timeout / deadline ─► BufferBody (64 KiB) ─► Retry (budget) ─► [Hedge] ─►
//!  CircuitBreaker ─► Balance (policy, zones, outlier ejection) ─►
//!  per endpoint (attempt timeout in the balancer): [AIMD limit] ─► Channel
//! ```
//!
//! One classifier (gRPC status or HTTP status) drives the retry decisions, the hedge, the
//! breaker and the balancer's ejection, so they agree on what a failure is.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::transport::Channel;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Layer, Service, ServiceExt};
use waggle_balance::balance::{Attempts, Ejection, WhenEmpty, ZoneAware};
use waggle_balance::policy::LeastRequest;
use waggle_balance::{Builder as BalanceBuilder, EndpointStats, Handle, Policy};
use waggle_core::{Instance, InstanceId};
use waggle_resilience::Outcome;
use waggle_resilience::breaker::{BreakerConfig, BreakerHandle, BreakerLayer};
use waggle_resilience::classify::{Classify, GrpcStatus, HttpIdempotency, HttpStatus};
use waggle_resilience::deadline::{Deadline, Propagation, TimeoutLayer, refresh_header};
use waggle_resilience::hedge::{HedgeBudget, HedgeLayer, HedgePolicy};
use waggle_resilience::limit::{AdaptiveLimit, AimdConfig, Overloaded};
use waggle_resilience::replay::{BufferBodyLayer, CloneHttp, ReplayBody};
use waggle_resilience::retry::{RetryBudget, RetryLayer, RetryPolicy, track_http_attempts};

use crate::{Client, Error};

/// The wire protocol, which decides the classifier and the deadline header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// gRPC: `grpc-status` classification, `grpc-timeout` propagation.
    Grpc,
    /// Plain HTTP: status-code classification, `x-waggle-timeout-ms` propagation.
    Http,
}

/// Configures a [`ServiceClient`]; from [`Client::service`].
pub struct ServiceClientBuilder {
    client: Client,
    service: String,
    protocol: Protocol,
    policy: Arc<dyn Policy>,
    timeout: Duration,
    attempt_timeout: Option<Duration>,
    attempts: u32,
    budget: RetryBudget,
    hedge_quantile: Option<f64>,
    breaker: BreakerConfig,
    ejection: Ejection,
    zone: Option<ZoneAware>,
    adaptive_limit: Option<AimdConfig>,
    body_cap: usize,
}

impl std::fmt::Debug for ServiceClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceClientBuilder")
            .field("service", &self.service)
            .field("protocol", &self.protocol)
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for every instance of `service`, with the defaults of [`ServiceClientBuilder`].
    pub fn service(&self, service: &str) -> ServiceClientBuilder {
        ServiceClientBuilder {
            client: self.clone(),
            service: service.to_owned(),
            protocol: Protocol::Grpc,
            policy: Arc::new(LeastRequest::new()),
            timeout: Duration::from_secs(10),
            attempt_timeout: None,
            attempts: 3,
            budget: RetryBudget::default(),
            hedge_quantile: None,
            breaker: BreakerConfig::default(),
            ejection: Ejection::outlier_detection(),
            zone: None,
            adaptive_limit: None,
            body_cap: 64 * 1024,
        }
    }
}

impl ServiceClientBuilder {
    /// The protocol (default gRPC).
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// The balancing policy (default weighted least request).
    pub fn policy(mut self, policy: impl Policy) -> Self {
        self.policy = Arc::new(policy);
        self
    }

    /// The per-call timeout, propagated as a deadline (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Bounds each attempt (default: the timeout divided by the attempts), so a hung endpoint
    /// costs one attempt, counts as a failure for ejection and as a timeout for the breaker,
    /// and leaves time for a retry elsewhere.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// Attempts per call, retries included (default 3; 1 disables retries). Only
    /// idempotent calls are retried: mark gRPC calls with
    /// `request.extensions_mut().insert(Idempotency::Idempotent)`.
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// The retry budget shared by retries and hedges (default 20 % + 10/s).
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Sends backup requests after this latency quantile (off by default; 0.95 is typical).
    pub fn hedge(mut self, quantile: Option<f64>) -> Self {
        self.hedge_quantile = quantile;
        self
    }

    /// The circuit breaker (default [`BreakerConfig::default`]).
    pub fn breaker(mut self, breaker: BreakerConfig) -> Self {
        self.breaker = breaker;
        self
    }

    /// Endpoint ejection (default [`Ejection::outlier_detection`]: Envoy's numbers).
    pub fn ejection(mut self, ejection: Ejection) -> Self {
        self.ejection = ejection;
        self
    }

    /// Prefers endpoints in a zone.
    pub fn zone_aware(mut self, zone: ZoneAware) -> Self {
        self.zone = Some(zone);
        self
    }

    /// Puts an adaptive concurrency limit in front of every endpoint, visible to the
    /// balancer as load (off by default).
    pub fn adaptive_limit(mut self, config: Option<AimdConfig>) -> Self {
        self.adaptive_limit = config;
        self
    }

    /// Request bodies up to this size are buffered so they can be retried (default 64 KiB).
    pub fn body_cap(mut self, bytes: usize) -> Self {
        self.body_cap = bytes;
        self
    }

    /// Builds the client over lazily connected tonic channels, one per instance (plain
    /// `http://ADDRESS:PORT`). Must run inside a tokio runtime.
    pub fn build(self) -> Result<ServiceClient, Error> {
        self.build_with(|instance| {
            let uri = format!("http://{}", authority(instance));
            // Registry addresses are validated literals or hostnames, so the URI parses; a
            // channel that cannot be built becomes an endpoint that is never ready.
            let channel = tonic::transport::Endpoint::from_shared(uri).map(|e| e.connect_lazy());
            BoxCloneSyncService::new(ChannelOrBroken(channel.ok()))
        })
    }

    /// Builds the client over your own transport: `connect` makes the service for each
    /// instance (a hyper-util client aimed at it, a channel with TLS, …).
    pub fn build_with<S, F, ResBody, ReqBody>(self, mut connect: F) -> Result<ServiceClient<ResBody, ReqBody>, Error>
    where
        ReqBody: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
        ReqBody::Error: Into<BoxError>,
        F: FnMut(&Instance) -> S + Send + Unpin + 'static,
        S: Service<http::Request<ReplayBody>, Response = http::Response<ResBody>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        ResBody: Send + 'static,
    {
        type Res<B> = http::Response<B>;
        let classify: Arc<dyn Classify<Res<ResBody>>> = match self.protocol {
            Protocol::Grpc => Arc::new(GrpcStatus),
            Protocol::Http => Arc::new(HttpStatus),
        };
        let discovery = self.client.discover(&self.service)?;
        let adaptive = self.adaptive_limit;
        let limit_classify = classify.clone();
        let propagation = match self.protocol {
            Protocol::Grpc => Propagation::Grpc,
            Protocol::Http => Propagation::Http,
        };
        let attempt_timeout = self.attempt_timeout.unwrap_or(self.timeout / self.attempts);
        let endpoints = discovery.endpoints(move |instance| {
            let transport = BoxCloneSyncService::new(connect(instance).map_err(Into::into));
            let stats = Arc::new(EndpointStats::new());
            let service = match adaptive {
                Some(config) => {
                    // The balancer enforces the attempt timeout by dropping the call: tell the
                    // limiter that such a drop is a timeout.
                    let config = config.dropped_as_timeout_after(attempt_timeout);
                    let classify = limit_classify.clone();
                    let limited = AdaptiveLimit::new(
                        transport,
                        config,
                        move |r: Result<&Res<ResBody>, &BoxError>| classify.classify(r),
                        Some(stats.clone()),
                    );
                    BoxCloneSyncService::new(limited)
                }
                None => transport,
            };
            (service, stats)
        });
        let endpoints = futures_util::StreamExt::map(endpoints, |change| {
            change.map(|change| match change {
                tower::discover::Change::Insert(id, endpoint) => {
                    let stats = endpoint.service().1.clone();
                    tower::discover::Change::Insert(id, endpoint.map_service(|(service, _)| service).stats(stats))
                }
                tower::discover::Change::Remove(id) => tower::discover::Change::Remove(id),
            })
        });
        let eject_classify = classify.clone();
        // Waiting for a first endpoint happens inside the call, under the deadline.
        let mut balance = BalanceBuilder::<InstanceId, http::Request<ReplayBody>>::new(self.policy.clone())
            .when_empty(WhenEmpty::WaitInCall)
            .call_timeout(attempt_timeout)
            .ejection(self.ejection)
            .failure_classifier(move |r: Result<&Res<ResBody>, &BoxError>| {
                !shed_locally(r) && eject_classify.classify(r).is_failure()
            })
            .track_attempts(Attempts::of);
        if let Some(zone) = self.zone {
            balance = balance.zone_aware(zone);
        }
        let balance = balance.build(endpoints);
        let handle = balance.handle();

        let breaker_classify = classify.clone();
        let breaker =
            BreakerLayer::new(self.service.clone(), self.breaker, move |r: Result<&Res<ResBody>, &BoxError>| {
                if shed_locally(r) { Outcome::Success } else { breaker_classify.classify(r) }
            });
        let breaker_handle = breaker.handle();
        let retry_classify = classify.clone();
        let retry = RetryPolicy::new(
            move |r: Result<&Res<ResBody>, &BoxError>| retry_classify.classify(r),
            HttpIdempotency,
            CloneHttp,
        )
        .max_attempts(self.attempts)
        .budget(self.budget.clone())
        .deadline(Deadline::of)
        .prepare(track_http_attempts)
        .refresh(refresh_header);
        let inner = breaker.layer(balance);
        let inner = match self.hedge_quantile {
            Some(quantile) => {
                let hedge_classify = classify.clone();
                let policy = HedgePolicy::new(
                    HedgeBudget::SharedWithRetry(self.budget.clone()),
                    move |r: Result<&Res<ResBody>, &BoxError>| hedge_classify.classify(r),
                    HttpIdempotency,
                    CloneHttp,
                )
                .quantile(quantile);
                BoxCloneSyncService::new(HedgeLayer::new(policy).layer(inner))
            }
            None => BoxCloneSyncService::new(inner),
        };
        // The timeout is outermost, so it bounds everything: waiting for a first endpoint,
        // buffering, every attempt and back-off.
        let stack = tower::ServiceBuilder::new()
            .layer(TimeoutLayer::new(self.timeout, propagation))
            .layer(BufferBodyLayer::new(self.body_cap))
            .layer(RetryLayer::new(retry))
            .service(inner);
        Ok(ServiceClient {
            inner: BoxCloneSyncService::new(stack),
            balance: handle,
            breaker: breaker_handle,
            _discovery: discovery,
        })
    }
}

/// A call this client's own adaptive limit shed: the endpoint never saw it, so it counts
/// against neither the endpoint (ejection) nor the service (breaker); a retry may still take
/// it elsewhere.
fn shed_locally<Res>(result: Result<&Res, &BoxError>) -> bool {
    result.err().is_some_and(|error| error.is::<Overloaded>())
}

/// `ADDRESS:PORT`, bracketing IPv6 literals.
fn authority(instance: &Instance) -> String {
    let address = &instance.spec.address;
    if address.contains(':') {
        format!("[{address}]:{}", instance.spec.port)
    } else {
        format!("{address}:{}", instance.spec.port)
    }
}

/// A tonic channel taking buffered bodies, or, if the instance's address could not make one,
/// a service that is never ready (so the balancer ejects it).
#[derive(Clone)]
struct ChannelOrBroken(Option<Channel>);

impl Service<http::Request<ReplayBody>> for ChannelOrBroken {
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = waggle_resilience::BoxFuture<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match &mut self.0 {
            Some(channel) => channel.poll_ready(cx).map_err(Into::into),
            None => Poll::Ready(Err("the instance's address does not form a URI".into())),
        }
    }

    fn call(&mut self, request: http::Request<ReplayBody>) -> Self::Future {
        match &mut self.0 {
            Some(channel) => {
                let call = channel.call(request.map(tonic::body::Body::new));
                Box::pin(async move { call.await.map_err(Into::into) })
            }
            None => Box::pin(std::future::ready(Err("the instance's address does not form a URI".into()))),
        }
    }
}

/// One service's client: cloneable, a tower `Service` for `http::Request`s. Hand it to a
/// generated tonic client (`OrdersClient::new(client)`) in place of a channel; with
/// [`ServiceClientBuilder::build_with`] the request body can be any `http_body::Body` of
/// `Bytes` (hyper's `Full<Bytes>`, say).
pub struct ServiceClient<ResBody = tonic::body::Body, ReqBody = tonic::body::Body> {
    inner: BoxCloneSyncService<http::Request<ReqBody>, http::Response<ResBody>, BoxError>,
    balance: Handle<InstanceId>,
    breaker: BreakerHandle,
    /// Keeps the discovery watch alive as long as the client.
    _discovery: crate::Discovery,
}

impl<ResBody, ReqBody> Clone for ServiceClient<ResBody, ReqBody> {
    fn clone(&self) -> Self {
        ServiceClient {
            inner: self.inner.clone(),
            balance: self.balance.clone(),
            breaker: self.breaker.clone(),
            _discovery: self._discovery.clone(),
        }
    }
}

impl<ResBody, ReqBody> std::fmt::Debug for ServiceClient<ResBody, ReqBody> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceClient").field("breaker", &self.breaker).finish_non_exhaustive()
    }
}

impl<ResBody, ReqBody> ServiceClient<ResBody, ReqBody> {
    /// The balancer's handle: endpoint states, manual ejection.
    pub fn endpoints(&self) -> &Handle<InstanceId> {
        &self.balance
    }

    /// The circuit breaker's handle.
    pub fn breaker(&self) -> &BreakerHandle {
        &self.breaker
    }
}

impl<ResBody, ReqBody> Service<http::Request<ReqBody>> for ServiceClient<ResBody, ReqBody> {
    type Response = http::Response<ResBody>;
    type Error = BoxError;
    type Future = waggle_resilience::BoxFuture<Result<http::Response<ResBody>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        self.inner.call(request)
    }
}
