//! The transport under the SDK's gRPC client: one lazily connected channel per server URL,
//! and a failover between them. Calls go to the current server; a call that fails at the
//! transport level (refused, reset, unreachable) moves the current server to the next URL, so
//! the SDK's own retry after back-off reaches a live member. gRPC statuses are answers, not
//! transport failures, and never move it. Any member of a cluster serves every call (writes
//! and keepalives are forwarded to the leader), so "the next URL" is always a fine choice.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};

use tonic::transport::Channel;
use tower::{BoxError, Service};

/// One channel per URL and the index of the current one, shared by every clone.
#[derive(Clone, Debug)]
pub(crate) struct Failover {
    channels: Vec<Channel>,
    current: Arc<AtomicUsize>,
    /// The channel `poll_ready` readied, which `call` must use.
    ready: usize,
}

impl Failover {
    pub(crate) fn new(channels: Vec<Channel>) -> Self {
        Failover { channels, current: Arc::new(AtomicUsize::new(0)), ready: 0 }
    }
}

impl Service<http::Request<tonic::body::Body>> for Failover {
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.ready = self.current.load(Relaxed) % self.channels.len().max(1);
        self.channels[self.ready].poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let used = self.ready;
        let call = self.channels[used].call(request);
        let (current, n) = (self.current.clone(), self.channels.len());
        Box::pin(async move {
            let result = call.await;
            if result.is_err() && n > 1 {
                // Only the first caller to see this server fail moves on; others that failed
                // on it at the same time must not skip the next one too.
                let _ = current.compare_exchange(used, (used + 1) % n, Relaxed, Relaxed);
                tracing::debug!(server = used, "transport failure; moving to the next server");
            }
            result.map_err(Into::into)
        })
    }
}
