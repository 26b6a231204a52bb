//! Test backends and a discovery channel for the `Balance` tests.

#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tower::BoxError;
use tower::discover::Change;
use waggle_balance::Endpoint;

/// A backend whose behaviour the test controls: latency, failing calls, failing readiness.
#[derive(Clone)]
pub struct Backend {
    pub name: &'static str,
    pub state: Arc<BackendState>,
}

#[derive(Default)]
pub struct BackendState {
    pub calls: AtomicUsize,
    pub fail_calls: AtomicBool,
    pub fail_ready: AtomicBool,
    /// `poll_ready` stays pending and never wakes (a wedged connection).
    pub hang_ready: AtomicBool,
    pub latency: Mutex<Duration>,
}

impl Backend {
    pub fn new(name: &'static str) -> Self {
        Backend { name, state: Arc::default() }
    }

    pub fn with_latency(self, latency: Duration) -> Self {
        *self.state.latency.lock().unwrap() = latency;
        self
    }

    pub fn calls(&self) -> usize {
        self.state.calls.load(SeqCst)
    }

    pub fn set_failing(&self, failing: bool) {
        self.state.fail_calls.store(failing, SeqCst);
    }
}

impl tower::Service<u64> for Backend {
    type Response = &'static str;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<&'static str, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.state.hang_ready.load(SeqCst) {
            return Poll::Pending;
        }
        if self.state.fail_ready.load(SeqCst) {
            return Poll::Ready(Err(format!("{} refused the connection", self.name).into()));
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: u64) -> Self::Future {
        self.state.calls.fetch_add(1, SeqCst);
        let failing = self.state.fail_calls.load(SeqCst);
        let latency = *self.state.latency.lock().unwrap();
        let name = self.name;
        Box::pin(async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            if failing { Err(format!("{name} failed").into()) } else { Ok(name) }
        })
    }
}

pub type Discovery = UnboundedReceiverStream<Result<Change<&'static str, Endpoint<Backend>>, Infallible>>;

/// A discovery stream the test feeds by hand.
pub struct Feed(mpsc::UnboundedSender<Result<Change<&'static str, Endpoint<Backend>>, Infallible>>);

pub fn discovery() -> (Feed, Discovery) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Feed(tx), UnboundedReceiverStream::new(rx))
}

impl Feed {
    pub fn insert(&self, endpoint: Endpoint<Backend>) {
        let key = endpoint.service().name;
        self.0.send(Ok(Change::Insert(key, endpoint))).unwrap();
    }

    pub fn remove(&self, key: &'static str) {
        self.0.send(Ok(Change::Remove(key))).unwrap();
    }
}

/// Lets the worker process everything queued (paused-time tests run on one thread).
pub async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}
