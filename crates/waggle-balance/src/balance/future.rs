//! `ResponseFuture`: waits for the picked endpoint's service to be ready, calls it, and
//! feeds the outcome back into the endpoint's load and state.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::time::{Instant, Sleep, sleep};
use tower::{BoxError, Service};

use super::Shared;
use super::WhenEmpty;
use super::error::{CallTimedOut, Closed, NoEndpoints, NotReady};
use super::slot::Slot;
use super::worker::{FailureKind, Report};
use super::{Attempts, FailureClassifier};
use tokio::sync::futures::OwnedNotified;

/// Keeps an endpoint's in-flight count up while a request is on it, and records its latency
/// and outcome when it completes.
pub(crate) struct Guard<K, S> {
    slot: Arc<Slot<K, S>>,
    /// When the request started, if the policy reads latency; taken once recorded.
    started: Option<Instant>,
    latency_decay: Option<Duration>,
    origin: Instant,
}

impl<K, S> Guard<K, S> {
    pub(crate) fn new<Req>(slot: Arc<Slot<K, S>>, shared: &Shared<K, S, Req>) -> Self {
        slot.start();
        let started = shared.latency_decay.map(|_| Instant::now());
        Guard { slot, started, latency_decay: shared.latency_decay, origin: shared.origin }
    }
}

impl<K, S> Drop for Guard<K, S> {
    fn drop(&mut self) {
        // A request dropped before its response (the caller timed out, or lost a hedge) still
        // took this long: feed it to the latency estimate, as tower's PeakEwma does, so a
        // black-holed endpoint looks slow rather than idle. It is not a failure.
        if let (Some(started), Some(decay)) = (self.started.take(), self.latency_decay) {
            let now = Instant::now();
            let since_origin = now.saturating_duration_since(self.origin);
            self.slot.stats.observe_rtt(since_origin, now.saturating_duration_since(started), decay);
        }
        self.slot.finish();
    }
}

pin_project! {
    /// The response future of [`Balance`](super::Balance).
    pub struct ResponseFuture<K, S, Req>
    where
        S: Service<Req>,
    {
        shared: Arc<Shared<K, S, Req>>,
        guard: Option<Guard<K, S>>,
        attempts: u32,
        seed: u64,
        request_hash: Option<u64>,
        // What a re-pick must avoid, as the first pick did.
        exclude: Vec<K>,
        tried: Option<Attempts>,
        // Bounds the wait for the picked endpoint's readiness; boxed, and only created once
        // an endpoint is not ready at the first poll.
        ready_deadline: Option<Pin<Box<Sleep>>>,
        #[pin]
        state: State<S, Req, S::Future>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req, F> {
        // No endpoint yet (`WhenEmpty::WaitInCall`): wait for the worker's next table.
        Waiting { notified: Option<Pin<Box<OwnedNotified>>>, request: Option<Req> },
        Readying { service: S, request: Option<Req> },
        Calling { #[pin] future: F },
        Failed { error: Option<BoxError> },
    }
}

impl<K, S, Req> ResponseFuture<K, S, Req>
where
    S: Service<Req> + Clone,
{
    pub(crate) fn new(
        shared: Arc<Shared<K, S, Req>>,
        picked: Option<Arc<Slot<K, S>>>,
        request: Req,
        (request_hash, exclude, tried): (Option<u64>, Vec<K>, Option<Attempts>),
        seed: u64,
    ) -> Self {
        let (guard, state) = match picked {
            Some(slot) => {
                let service = slot.endpoint.service.clone();
                (Some(Guard::new(slot, &shared)), State::Readying { service, request: Some(request) })
            }
            None if shared.when_empty == WhenEmpty::WaitInCall => {
                (None, State::Waiting { notified: None, request: Some(request) })
            }
            None => (None, State::Failed { error: Some(NoEndpoints.into()) }),
        };
        ResponseFuture { shared, guard, attempts: 0, seed, request_hash, exclude, tried, ready_deadline: None, state }
    }
}

impl<K, S, Req> ResponseFuture<K, S, Req>
where
    S: Service<Req>,
{
    /// The endpoint this request is going to (it may still change if that endpoint turns out
    /// not to be ready).
    pub fn endpoint(&self) -> Option<&K> {
        self.guard.as_ref().map(|guard| &guard.slot.key)
    }
}

impl<K, S, Req> Future for ResponseFuture<K, S, Req>
where
    K: Clone + PartialEq,
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    S::Response: 'static,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting { notified, request } => {
                    if !this.shared.table.load().is_empty() {
                        let Some(request) = request.take() else {
                            return Poll::Ready(Err(NoEndpoints.into()));
                        };
                        let mut rng = SmallRng::seed_from_u64(*this.seed);
                        match this.shared.pick(&mut rng, *this.request_hash, 0, this.exclude, this.tried.as_ref()) {
                            Some(slot) => {
                                let service = slot.endpoint.service.clone();
                                *this.guard = Some(Guard::new(slot, this.shared));
                                this.state.set(State::Readying { service, request: Some(request) });
                            }
                            None => this.state.set(State::Waiting { notified: None, request: Some(request) }),
                        }
                        continue;
                    }
                    if this.shared.reports.is_closed() {
                        return Poll::Ready(Err(Closed.into()));
                    }
                    match notified {
                        // Register before looking again, so a table published in between is
                        // not missed.
                        None => {
                            let mut wait = Box::pin(this.shared.notify.clone().notified_owned());
                            wait.as_mut().enable();
                            *notified = Some(wait);
                        }
                        Some(wait) => {
                            ready!(wait.as_mut().poll(cx));
                            *notified = None;
                        }
                    }
                }
                StateProj::Readying { service, request } => {
                    let Some(guard) = this.guard.as_ref() else {
                        return Poll::Ready(Err(NoEndpoints.into()));
                    };
                    let failure = if guard.slot.is_removed() {
                        // Discovery removed the endpoint after this request picked it: pick
                        // again rather than send it somewhere the registry says is gone.
                        None
                    } else {
                        match service.poll_ready(cx) {
                            Poll::Pending => {
                                let timeout = this.shared.readiness_timeout;
                                let deadline = this.ready_deadline.get_or_insert_with(|| Box::pin(sleep(timeout)));
                                ready!(deadline.as_mut().poll(cx));
                                // A stuck endpoint must not hold the request: eject it, pick again.
                                Some(NotReady { waited: timeout }.into())
                            }
                            Poll::Ready(Ok(())) => {
                                let Some(request) = request.take() else {
                                    return Poll::Ready(Err(NoEndpoints.into()));
                                };
                                let future = service.call(request);
                                // The readiness timer is done; the call gets its own, if set.
                                *this.ready_deadline = this.shared.call_timeout.map(|t| Box::pin(sleep(t)));
                                this.state.set(State::Calling { future });
                                continue;
                            }
                            Poll::Ready(Err(error)) => Some(error.into()),
                        }
                    };
                    *this.ready_deadline = None;
                    // Picks avoid the endpoint from now on, before the worker has published a
                    // table without it (a removed one never returns, so marking it is harmless).
                    guard.slot.report_failing();
                    if let Some(error) = &failure {
                        let reason = format!("not ready: {error}");
                        let failed = Report::Failed { slot: guard.slot.clone(), reason, kind: FailureKind::NotReady };
                        let _ = this.shared.reports.send(failed);
                        *this.attempts += 1;
                    }
                    let Some(request) = request.take() else {
                        return Poll::Ready(Err(NoEndpoints.into()));
                    };
                    if *this.attempts >= this.shared.max_attempts {
                        *this.guard = None;
                        let error = failure.unwrap_or_else(|| NoEndpoints.into());
                        this.state.set(State::Failed { error: Some(error) });
                        continue;
                    }
                    let mut rng = SmallRng::seed_from_u64(*this.seed ^ u64::from(*this.attempts));
                    let next = this.shared.pick(
                        &mut rng,
                        *this.request_hash,
                        *this.attempts,
                        this.exclude,
                        this.tried.as_ref(),
                    );
                    *this.seed = this.seed.wrapping_add(1);
                    *this.guard = None;
                    match next {
                        Some(slot) => {
                            let service = slot.endpoint.service.clone();
                            *this.guard = Some(Guard::new(slot, this.shared));
                            this.state.set(State::Readying { service, request: Some(request) });
                        }
                        None => this.state.set(State::Failed { error: Some(NoEndpoints.into()) }),
                    }
                }
                StateProj::Calling { future } => {
                    let result = match future.poll(cx) {
                        Poll::Ready(result) => result.map_err(Into::into),
                        Poll::Pending => {
                            let Some(deadline) = this.ready_deadline.as_mut() else { return Poll::Pending };
                            ready!(deadline.as_mut().poll(cx));
                            // The endpoint did not answer in time: that is its failure (the
                            // call is dropped with this future).
                            let timeout = this.shared.call_timeout.unwrap_or_default();
                            Err(CallTimedOut { timeout }.into())
                        }
                    };
                    if let Some(mut guard) = this.guard.take() {
                        let failed = match this
                            .shared
                            .classifier
                            .as_ref()
                            .and_then(|c| c.downcast_ref::<FailureClassifier<S::Response>>())
                        {
                            Some(is_failure) => is_failure(result.as_ref()),
                            None => result.is_err(),
                        };
                        this.shared.complete(&mut guard, !failed);
                    }
                    return Poll::Ready(result);
                }
                StateProj::Failed { error } => {
                    return Poll::Ready(Err(error.take().unwrap_or_else(|| NoEndpoints.into())));
                }
            }
        }
    }
}

impl<K, S, Req> Shared<K, S, Req> {
    /// Folds a finished request into its endpoint's latency estimate and failure count, and
    /// tells the worker when that changes the endpoint's state.
    fn complete(&self, guard: &mut Guard<K, S>, success: bool) {
        let slot = &guard.slot;
        // Timing costs two clock reads and an `exp` per request: only when the policy uses it.
        if let (Some(decay), Some(started)) = (self.latency_decay, guard.started.take()) {
            let now = Instant::now();
            slot.stats.observe_rtt(self.since_origin(now), now.saturating_duration_since(started), decay);
        }
        let failures_in_a_row = slot.stats.record_outcome(success);
        if slot.probing.load(Relaxed) {
            let _ = self.reports.send(Report::Verdict { slot: slot.clone(), success });
        }
        // At or past the threshold (responses race), reported once: `suspect` stays set until
        // the endpoint is admitted again.
        let mut reason =
            (failures_in_a_row >= self.ejection_threshold).then(|| format!("{failures_in_a_row} failures in a row"));
        if let Some(rate) = self.failure_rate {
            let now = self.since_origin(Instant::now()).as_nanos() as u64;
            let (calls, failures) = slot.stats.record_in_window(success, now, rate.window.as_nanos() as u64);
            if calls >= rate.min_calls && f64::from(failures) >= rate.threshold * f64::from(calls) {
                reason = reason.or_else(|| Some(format!("{failures} of {calls} responses failed")));
            }
        }
        if let Some(reason) = reason
            && !slot.suspect.swap(true, Relaxed)
        {
            let _ = self.reports.send(Report::Failed { slot: slot.clone(), reason, kind: FailureKind::Responses });
        }
    }
}
