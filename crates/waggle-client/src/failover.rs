//! The transport under the SDK's gRPC client: one lazily connected channel per server URL,
//! and a failover between them. Calls go to the current server; a call that fails at the
//! transport level (refused, reset, unreachable), or that a member answers with UNAVAILABLE
//! (cut off from the quorum, shutting down), moves the current server to the next URL, so the
//! SDK's own retry after back-off reaches a live member. Other gRPC statuses are answers and
//! never move it. Any member of a cluster serves every call (writes
//! and keepalives are forwarded to the leader), so "the next URL" is always a fine choice.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use tonic::transport::Channel;
use tower::{BoxError, Service};

/// The servers and the index of the current one, shared by every clone.
#[derive(Debug)]
struct Servers {
    /// (URL, channel), the configured ones first; learned members are appended.
    list: RwLock<Vec<(String, Channel)>>,
    current: AtomicUsize,
    /// The ACL token every call carries (`x-consul-token`), if any.
    token: Option<http::HeaderValue>,
}

/// The failover transport. Cloned per call site; every clone shares the server list.
#[derive(Debug)]
pub(crate) struct Failover {
    servers: Arc<Servers>,
    /// The server (index and channel clone) `poll_ready` readied, which `call` must use.
    ready: Option<(usize, Channel)>,
}

impl Failover {
    /// The failover over `servers`, every call carrying `token` (sensitive: never logged).
    pub(crate) fn new(servers: Vec<(String, Channel)>, token: Option<http::HeaderValue>) -> Self {
        let token = token.map(|mut t| {
            t.set_sensitive(true);
            t
        });
        Failover {
            servers: Arc::new(Servers { list: RwLock::new(servers), current: AtomicUsize::new(0), token }),
            ready: None,
        }
    }

    /// Adds a server (a cluster member learned from the member list) unless already known.
    pub(crate) fn add(&self, url: &str, connect: impl FnOnce() -> Option<Channel>) -> bool {
        let mut list = self.servers.list.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if list.iter().any(|(known, _)| same_url(known, url)) {
            return false;
        }
        match connect() {
            Some(channel) => {
                list.push((url.to_owned(), channel));
                true
            }
            None => false,
        }
    }

    /// The URLs calls may go to.
    pub(crate) fn urls(&self) -> Vec<String> {
        let list = self.servers.list.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        list.iter().map(|(url, _)| url.clone()).collect()
    }
}

impl Servers {
    /// Moves the current server past `used` after a transport failure on it. Only the first
    /// caller to see a server fail moves on; others that failed on it at the same time must
    /// not skip the next one too.
    fn rotate_from(&self, used: usize) {
        let n = self.list.read().unwrap_or_else(std::sync::PoisonError::into_inner).len();
        if n > 1 {
            let _ = self.current.compare_exchange(used, (used + 1) % n, Relaxed, Relaxed);
            tracing::debug!(server = used, "transport failure; moving to the next server");
        }
    }
}

impl Clone for Failover {
    /// A clone is not ready: it shares the servers, not the readied channel.
    fn clone(&self) -> Self {
        Failover { servers: self.servers.clone(), ready: None }
    }
}

fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

impl Service<http::Request<tonic::body::Body>> for Failover {
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.ready.is_none() {
            let list = self.servers.list.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            let index = self.servers.current.load(Relaxed) % list.len().max(1);
            let Some((_, channel)) = list.get(index) else {
                return Poll::Ready(Err("no server to call".into()));
            };
            self.ready = Some((index, channel.clone()));
        }
        let Some((used, channel)) = &mut self.ready else {
            return Poll::Ready(Err("no server to call".into()));
        };
        match channel.poll_ready(cx) {
            Poll::Ready(Err(e)) => {
                // A channel that cannot become ready (its worker is gone): move on, so the next
                // call tries another server.
                let used = *used;
                self.ready = None;
                self.servers.rotate_from(used);
                Poll::Ready(Err(e.into()))
            }
            other => other.map_err(Into::into),
        }
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        if let Some(token) = &self.servers.token {
            request.headers_mut().insert("x-consul-token", token.clone());
        }
        let Some((used, mut channel)) = self.ready.take() else {
            return Box::pin(async { Err("call without poll_ready".into()) });
        };
        let call = channel.call(request);
        let servers = self.servers.clone();
        Box::pin(async move {
            let result = call.await;
            // A transport failure, or a member answering UNAVAILABLE (it is cut off from the
            // quorum, or shutting down): the next call goes to another member. The status of
            // an error answer travels in its headers (trailers-only response).
            let unavailable = |r: &http::Response<tonic::body::Body>| {
                r.headers().get("grpc-status").is_some_and(|s| s.as_bytes() == b"14")
            };
            if result.as_ref().map_or(true, unavailable) {
                servers.rotate_from(used);
            }
            result.map_err(Into::into)
        })
    }
}
