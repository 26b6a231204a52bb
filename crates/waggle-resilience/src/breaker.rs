//! A per-service circuit breaker: closed → open → half-open → closed.
//!
//! While **closed**, outcomes fill a sliding window (the last N calls, or the last N
//! seconds). Once the window holds at least `minimum_calls`, a failure rate at or above
//! `failure_rate` or a slow-call rate at or above `slow_call_rate` opens the breaker. While
//! **open**, calls fail at once with [`BreakerOpen`] (which the classifier calls
//! non-retryable, so retries do not hammer an open breaker). After `open_for` the breaker is
//! **half-open**: `half_open_calls` probe calls go through, the rest are rejected; when they
//! are all back, their failure and slow rates decide between closed and open again. A
//! [`BreakerHandle`] forces it open or closed, reports its state and streams state changes,
//! which are also logged through `tracing`.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tower::{BoxError, Layer, Service};

use crate::BoxFuture;
use crate::classify::{Classify, Outcome};
pub use crate::error::BreakerOpen;

/// The breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls flow; outcomes are recorded.
    Closed,
    /// Calls are rejected until the open period ends.
    Open,
    /// A few probe calls decide.
    HalfOpen,
    /// Rejecting everything until released by the handle.
    ForcedOpen,
    /// Letting everything through until released by the handle.
    ForcedClosed,
}

/// The sliding window outcomes are judged over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// The last `n` calls.
    Count(u32),
    /// The calls of the last `n` whole seconds.
    Time(Duration),
}

/// Breaker settings.
#[derive(Clone, Debug)]
pub struct BreakerConfig {
    window: Window,
    failure_rate: f64,
    slow_call_rate: f64,
    slow_call_duration: Duration,
    minimum_calls: u32,
    open_for: Duration,
    half_open_calls: u32,
}

impl Default for BreakerConfig {
    /// A window of the last 100 calls, open at 50 % failures or 100 % slow calls (over 5 s),
    /// at least 20 calls, open for 30 s, 5 probe calls.
    fn default() -> Self {
        BreakerConfig {
            window: Window::Count(100),
            failure_rate: 0.5,
            slow_call_rate: 1.0,
            slow_call_duration: Duration::from_secs(5),
            minimum_calls: 20,
            open_for: Duration::from_secs(30),
            half_open_calls: 5,
        }
    }
}

impl BreakerConfig {
    /// Sets the window (at least 1 call or 1 second, at most 10,000 calls or 3,600 s).
    pub fn window(mut self, window: Window) -> Self {
        self.window = match window {
            Window::Count(n) => Window::Count(n.clamp(1, 10_000)),
            Window::Time(d) => Window::Time(Duration::from_secs(d.as_secs().clamp(1, 3_600))),
        };
        self
    }

    /// Opens at this failure rate, in `(0, 1]`.
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = clamp_rate(rate, 0.5);
        self
    }

    /// Opens at this rate of calls slower than `duration`, in `(0, 1]`.
    pub fn slow_calls(mut self, rate: f64, duration: Duration) -> Self {
        self.slow_call_rate = clamp_rate(rate, 1.0);
        self.slow_call_duration = duration;
        self
    }

    /// Judges only once the window holds this many calls (at least 1).
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.minimum_calls = calls.max(1);
        self
    }

    /// How long the breaker stays open before probing.
    pub fn open_for(mut self, duration: Duration) -> Self {
        self.open_for = duration;
        self
    }

    /// How many probe calls a half-open breaker lets through (at least 1).
    pub fn half_open_calls(mut self, calls: u32) -> Self {
        self.half_open_calls = calls.max(1);
        self
    }
}

fn clamp_rate(rate: f64, default: f64) -> f64 {
    if rate.is_finite() && rate > 0.0 { rate.min(1.0) } else { default }
}

/// Outcome counts: calls, failures, slow calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    calls: u32,
    failures: u32,
    slow: u32,
}

impl Counts {
    fn add(&mut self, failure: bool, slow: bool) {
        self.calls += 1;
        self.failures += u32::from(failure);
        self.slow += u32::from(slow);
    }

    fn sub(&mut self, other: Counts) {
        self.calls -= other.calls;
        self.failures -= other.failures;
        self.slow -= other.slow;
    }

    /// Whether these counts trip the breaker.
    fn trips(&self, config: &BreakerConfig) -> bool {
        let calls = f64::from(self.calls.max(1));
        f64::from(self.failures) / calls >= config.failure_rate || f64::from(self.slow) / calls >= config.slow_call_rate
    }
}

/// The sliding window's data.
#[derive(Debug)]
enum Recorded {
    Calls(VecDeque<Counts>),
    /// One bucket per second: (second, counts).
    Seconds(VecDeque<(u64, Counts)>),
}

/// The pure state machine; time comes in as an argument.
#[derive(Debug)]
struct Machine {
    config: BreakerConfig,
    state: BreakerState,
    recorded: Recorded,
    total: Counts,
    open_until: Option<Instant>,
    probes_issued: u32,
    probes: Counts,
    /// Bumped on every transition, so a late result from an earlier state is ignored.
    generation: u64,
    origin: Instant,
}

impl Machine {
    fn new(config: BreakerConfig, now: Instant) -> Self {
        let recorded = match config.window {
            Window::Count(_) => Recorded::Calls(VecDeque::new()),
            Window::Time(_) => Recorded::Seconds(VecDeque::new()),
        };
        Machine {
            config,
            state: BreakerState::Closed,
            recorded,
            total: Counts::default(),
            open_until: None,
            probes_issued: 0,
            probes: Counts::default(),
            generation: 0,
            origin: now,
        }
    }

    /// Admits a call (returning the generation it belongs to) or rejects it.
    fn try_acquire(&mut self, now: Instant) -> Result<u64, BreakerOpen> {
        if self.state == BreakerState::Open && self.open_until.is_some_and(|t| now >= t) {
            self.transition(BreakerState::HalfOpen, now);
        }
        match self.state {
            BreakerState::Closed | BreakerState::ForcedClosed => Ok(self.generation),
            BreakerState::Open | BreakerState::ForcedOpen => Err(BreakerOpen),
            BreakerState::HalfOpen if self.probes_issued < self.config.half_open_calls => {
                self.probes_issued += 1;
                Ok(self.generation)
            }
            BreakerState::HalfOpen => Err(BreakerOpen),
        }
    }

    /// Records a call admitted in `generation`; returns a state change, if any.
    fn record(&mut self, generation: u64, outcome: Outcome, duration: Duration, now: Instant) -> Option<BreakerState> {
        if generation != self.generation {
            return None;
        }
        let (failure, slow) = (outcome.is_failure(), duration >= self.config.slow_call_duration);
        match self.state {
            BreakerState::Closed => {
                self.push(failure, slow, now);
                // A count window smaller than the minimum could never trip: the window is the
                // minimum then.
                let minimum = match self.config.window {
                    Window::Count(n) => self.config.minimum_calls.min(n),
                    Window::Time(_) => self.config.minimum_calls,
                };
                if self.total.calls >= minimum && self.total.trips(&self.config) {
                    return Some(self.transition(BreakerState::Open, now));
                }
                None
            }
            BreakerState::HalfOpen => {
                self.probes.add(failure, slow);
                if self.probes.calls < self.config.half_open_calls {
                    return None;
                }
                let next = if self.probes.trips(&self.config) { BreakerState::Open } else { BreakerState::Closed };
                Some(self.transition(next, now))
            }
            _ => None,
        }
    }

    /// A call admitted in `generation` was dropped before its result: a half-open breaker
    /// gets its probe permit back (otherwise a cancelled probe would hold it half-open for
    /// good); anything else has nothing to undo.
    fn release(&mut self, generation: u64) {
        if generation == self.generation && self.state == BreakerState::HalfOpen {
            self.probes_issued = self.probes_issued.saturating_sub(1);
        }
    }

    fn push(&mut self, failure: bool, slow: bool, now: Instant) {
        let mut one = Counts::default();
        one.add(failure, slow);
        self.total.add(failure, slow);
        match (&mut self.recorded, self.config.window) {
            (Recorded::Calls(calls), Window::Count(n)) => {
                calls.push_back(one);
                while calls.len() > n as usize {
                    if let Some(old) = calls.pop_front() {
                        self.total.sub(old);
                    }
                }
            }
            (Recorded::Seconds(seconds), Window::Time(window)) => {
                let second = now.saturating_duration_since(self.origin).as_secs();
                match seconds.back_mut() {
                    Some((s, counts)) if *s == second => counts.add(failure, slow),
                    _ => seconds.push_back((second, one)),
                }
                while seconds.front().is_some_and(|(s, _)| *s + window.as_secs() <= second) {
                    if let Some((_, old)) = seconds.pop_front() {
                        self.total.sub(old);
                    }
                }
            }
            _ => {}
        }
    }

    fn transition(&mut self, to: BreakerState, now: Instant) -> BreakerState {
        self.state = to;
        self.generation += 1;
        self.probes_issued = 0;
        self.probes = Counts::default();
        self.open_until = (to == BreakerState::Open).then(|| now + self.config.open_for);
        if matches!(to, BreakerState::Closed | BreakerState::Open) {
            self.total = Counts::default();
            match &mut self.recorded {
                Recorded::Calls(calls) => calls.clear(),
                Recorded::Seconds(seconds) => seconds.clear(),
            }
        }
        to
    }
}

struct Shared {
    machine: Mutex<Machine>,
    events: watch::Sender<BreakerState>,
    name: String,
}

impl Shared {
    fn with<T>(&self, f: impl FnOnce(&mut Machine) -> T) -> T {
        // The machine holds plain counters; a panic elsewhere leaves them usable.
        let mut machine = self.machine.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut machine)
    }

    fn announce(&self, state: BreakerState) {
        tracing::info!(breaker = %self.name, ?state, "circuit breaker changed state");
        crate::telemetry::breaker_transition(&self.name, state);
        self.events.send_replace(state);
    }
}

/// An admitted call's claim on the breaker; given back if the call is dropped unfinished.
struct Permit {
    shared: Arc<Shared>,
    generation: u64,
    settled: bool,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.settled {
            let generation = self.generation;
            self.shared.with(|m| m.release(generation));
        }
    }
}

/// Inspects and overrides a breaker; cheap to clone.
#[derive(Clone)]
pub struct BreakerHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for BreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerHandle").field("name", &self.shared.name).field("state", &self.state()).finish()
    }
}

impl BreakerHandle {
    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.shared.with(|m| m.state)
    }

    /// Every state change, starting with the current state.
    pub fn subscribe(&self) -> watch::Receiver<BreakerState> {
        self.shared.events.subscribe()
    }

    /// Rejects every call until [`release`](Self::release).
    pub fn force_open(&self) {
        self.set(BreakerState::ForcedOpen);
    }

    /// Admits every call until [`release`](Self::release).
    pub fn force_closed(&self) {
        self.set(BreakerState::ForcedClosed);
    }

    /// Back to normal operation, closed with an empty window.
    pub fn release(&self) {
        self.set(BreakerState::Closed);
    }

    fn set(&self, state: BreakerState) {
        let now = Instant::now();
        self.shared.with(|m| m.transition(state, now));
        self.shared.announce(state);
    }
}

/// Wraps a service with a circuit breaker (see the [module docs](self)). Clones share the
/// breaker.
pub struct CircuitBreaker<S, Res> {
    inner: S,
    shared: Arc<Shared>,
    classify: Arc<dyn Classify<Res>>,
}

impl<S: Clone, Res> Clone for CircuitBreaker<S, Res> {
    fn clone(&self) -> Self {
        CircuitBreaker { inner: self.inner.clone(), shared: self.shared.clone(), classify: self.classify.clone() }
    }
}

impl<S, Res> CircuitBreaker<S, Res> {
    /// Wraps `inner`; `name` labels logs and events.
    pub fn new(inner: S, name: impl Into<String>, config: BreakerConfig, classify: impl Classify<Res>) -> Self {
        BreakerLayer::new(name, config, classify).layer(inner)
    }

    /// The handle.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle { shared: self.shared.clone() }
    }
}

/// Builds [`CircuitBreaker`]s that all share one breaker.
pub struct BreakerLayer<Res> {
    shared: Arc<Shared>,
    classify: Arc<dyn Classify<Res>>,
}

impl<Res> Clone for BreakerLayer<Res> {
    fn clone(&self) -> Self {
        BreakerLayer { shared: self.shared.clone(), classify: self.classify.clone() }
    }
}

impl<Res> BreakerLayer<Res> {
    /// One breaker named `name`.
    pub fn new(name: impl Into<String>, config: BreakerConfig, classify: impl Classify<Res>) -> Self {
        let (events, _) = watch::channel(BreakerState::Closed);
        let machine = Mutex::new(Machine::new(config, Instant::now()));
        BreakerLayer { shared: Arc::new(Shared { machine, events, name: name.into() }), classify: Arc::new(classify) }
    }

    /// The handle.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle { shared: self.shared.clone() }
    }
}

impl<S, Res> Layer<S> for BreakerLayer<Res> {
    type Service = CircuitBreaker<S, Res>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker { inner, shared: self.shared.clone(), classify: self.classify.clone() }
    }
}

impl<S, Req, Res> Service<Req> for CircuitBreaker<S, Res>
where
    S: Service<Req, Response = Res>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    Res: Send + 'static,
{
    type Response = Res;
    type Error = BoxError;
    type Future = BoxFuture<Result<Res, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let started = Instant::now();
        let generation = match self.shared.with(|m| {
            let before = m.state;
            m.try_acquire(started).map(|generation| (generation, m.state != before))
        }) {
            Ok((generation, changed)) => {
                if changed {
                    self.shared.announce(BreakerState::HalfOpen);
                }
                generation
            }
            Err(open) => {
                crate::telemetry::breaker_rejected(&self.shared.name);
                return Box::pin(std::future::ready(Err(open.into())));
            }
        };
        let call = self.inner.call(request);
        let mut permit = Permit { shared: self.shared.clone(), generation, settled: false };
        let classify = self.classify.clone();
        Box::pin(async move {
            let result = call.await.map_err(Into::into);
            let outcome = classify.classify(result.as_ref());
            let now = Instant::now();
            permit.settled = true;
            let shared = &permit.shared;
            if let Some(state) = shared.with(|m| m.record(generation, outcome, now - started, now)) {
                shared.announce(state);
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(window: Window) -> Machine {
        let config = BreakerConfig::default()
            .window(window)
            .minimum_calls(4)
            .failure_rate(0.5)
            .open_for(Duration::from_secs(10))
            .half_open_calls(2);
        Machine::new(config, Instant::now())
    }

    fn call(m: &mut Machine, outcome: Outcome, now: Instant) -> Option<BreakerState> {
        let generation = m.try_acquire(now).ok()?;
        m.record(generation, outcome, Duration::from_millis(1), now)
    }

    #[test]
    fn opens_probes_and_closes() {
        let t0 = Instant::now();
        let mut m = machine(Window::Count(10));
        assert_eq!(call(&mut m, Outcome::RetryableFailure, t0), None);
        assert_eq!(call(&mut m, Outcome::RetryableFailure, t0), None);
        assert_eq!(call(&mut m, Outcome::Success, t0), None, "below the minimum of 4 calls");
        assert_eq!(call(&mut m, Outcome::Success, t0), Some(BreakerState::Open), "2 of 4 failed");
        assert_eq!(m.try_acquire(t0 + Duration::from_secs(9)), Err(BreakerOpen));
        // After 10 s two probes are let through, the third is rejected.
        let t1 = t0 + Duration::from_secs(10);
        let first = m.try_acquire(t1).unwrap();
        assert_eq!(m.state, BreakerState::HalfOpen);
        let second = m.try_acquire(t1).unwrap();
        assert_eq!(m.try_acquire(t1), Err(BreakerOpen));
        assert_eq!(m.record(first, Outcome::Success, Duration::ZERO, t1), None);
        assert_eq!(m.record(second, Outcome::Success, Duration::ZERO, t1), Some(BreakerState::Closed));
        assert!(m.try_acquire(t1).is_ok());
    }

    #[test]
    fn failed_probes_reopen() {
        let t0 = Instant::now();
        let mut m = machine(Window::Count(10));
        for _ in 0..4 {
            call(&mut m, Outcome::Timeout, t0);
        }
        assert_eq!(m.state, BreakerState::Open);
        let t1 = t0 + Duration::from_secs(10);
        let (a, b) = (m.try_acquire(t1).unwrap(), m.try_acquire(t1).unwrap());
        m.record(a, Outcome::Success, Duration::ZERO, t1);
        assert_eq!(m.record(b, Outcome::NonRetryableFailure, Duration::ZERO, t1), Some(BreakerState::Open));
        assert_eq!(m.open_until, Some(t1 + Duration::from_secs(10)));
    }

    #[test]
    fn count_window_forgets_old_calls() {
        let t0 = Instant::now();
        let mut m = machine(Window::Count(4));
        // 100 successes, then failures: the window only ever holds the last 4.
        for _ in 0..100 {
            call(&mut m, Outcome::Success, t0);
        }
        call(&mut m, Outcome::RetryableFailure, t0);
        assert_eq!(m.state, BreakerState::Closed);
        assert_eq!(call(&mut m, Outcome::RetryableFailure, t0), Some(BreakerState::Open));
    }

    #[test]
    fn time_window_forgets_old_seconds() {
        let t0 = Instant::now();
        let mut m = machine(Window::Time(Duration::from_secs(2)));
        call(&mut m, Outcome::RetryableFailure, t0);
        call(&mut m, Outcome::RetryableFailure, t0);
        call(&mut m, Outcome::RetryableFailure, t0);
        // Three seconds later those failures are out of the window.
        let t1 = t0 + Duration::from_secs(3);
        for _ in 0..3 {
            assert_eq!(call(&mut m, Outcome::Success, t1), None);
        }
        assert_eq!(call(&mut m, Outcome::RetryableFailure, t1), None, "1 of 4 in the window");
        assert_eq!(m.state, BreakerState::Closed);
    }

    #[test]
    fn slow_calls_trip_it_too() {
        let t0 = Instant::now();
        let config = BreakerConfig::default().minimum_calls(2).slow_calls(1.0, Duration::from_millis(100));
        let mut m = Machine::new(config, t0);
        for _ in 0..2 {
            let generation = m.try_acquire(t0).unwrap();
            m.record(generation, Outcome::Success, Duration::from_millis(150), t0);
        }
        assert_eq!(m.state, BreakerState::Open);
    }

    #[test]
    fn a_dropped_probe_gives_its_permit_back() {
        let t0 = Instant::now();
        let mut m = machine(Window::Count(10));
        for _ in 0..4 {
            call(&mut m, Outcome::Timeout, t0);
        }
        let t1 = t0 + Duration::from_secs(10);
        let (a, b) = (m.try_acquire(t1).unwrap(), m.try_acquire(t1).unwrap());
        assert_eq!(m.try_acquire(t1), Err(BreakerOpen));
        m.release(a);
        let c = m.try_acquire(t1).expect("the dropped probe's permit is free again");
        m.record(b, Outcome::Success, Duration::ZERO, t1);
        assert_eq!(m.record(c, Outcome::Success, Duration::ZERO, t1), Some(BreakerState::Closed));
    }

    #[test]
    fn a_count_window_below_the_minimum_still_trips() {
        let t0 = Instant::now();
        let config = BreakerConfig::default().window(Window::Count(5)).minimum_calls(20);
        let mut m = Machine::new(config, t0);
        for _ in 0..5 {
            call(&mut m, Outcome::RetryableFailure, t0);
        }
        assert_eq!(m.state, BreakerState::Open);
    }

    #[test]
    fn a_late_result_from_before_a_transition_is_ignored() {
        let t0 = Instant::now();
        let mut m = machine(Window::Count(10));
        let stale = m.try_acquire(t0).unwrap();
        for _ in 0..4 {
            call(&mut m, Outcome::RetryableFailure, t0);
        }
        assert_eq!(m.state, BreakerState::Open);
        assert_eq!(m.record(stale, Outcome::Success, Duration::ZERO, t0), None);
    }
}
