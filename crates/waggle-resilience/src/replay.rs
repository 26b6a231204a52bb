//! Copies of a request for another attempt (retry, hedge, failover), and bodies that can be
//! sent twice.
//!
//! A request can only be repeated if it can be copied. Plain values implement `Clone`;
//! HTTP bodies usually stream and cannot be. [`BufferBody`] reads a request body into memory
//! up to a cap and hands on a [`ReplayBody`] that can be copied; a body over the cap is
//! passed on as a stream, and such a request is simply not repeated.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use tower::{BoxError, Layer, Service};

use crate::BoxFuture;

/// Makes a copy of a request for another attempt. Implemented for closures
/// `Fn(&Req) -> Option<Req>`.
pub trait CloneRequest<Req>: Send + Sync + 'static {
    /// A copy of `request`, or `None` if it cannot be sent again.
    fn clone_request(&self, request: &Req) -> Option<Req>;
}

impl<Req, F> CloneRequest<Req> for F
where
    F: Fn(&Req) -> Option<Req> + Send + Sync + 'static,
{
    fn clone_request(&self, request: &Req) -> Option<Req> {
        self(request)
    }
}

/// What every layer that sends a request more than once needs: how to judge an answer,
/// whether the request may be repeated, and how to copy it. Shared by retries and hedges.
pub(crate) struct Repeat<Req, Res> {
    pub(crate) classify: std::sync::Arc<dyn crate::Classify<Res>>,
    pub(crate) idempotency: std::sync::Arc<dyn crate::IdempotencyPolicy<Req>>,
    pub(crate) copy: std::sync::Arc<dyn CloneRequest<Req>>,
}

impl<Req, Res> Repeat<Req, Res> {
    pub(crate) fn new(
        classify: impl crate::Classify<Res>,
        idempotency: impl crate::IdempotencyPolicy<Req>,
        copy: impl CloneRequest<Req>,
    ) -> Self {
        let (classify, idempotency, copy) =
            (std::sync::Arc::new(classify), std::sync::Arc::new(idempotency), std::sync::Arc::new(copy));
        Repeat { classify, idempotency, copy }
    }
}

impl<Req, Res> Clone for Repeat<Req, Res> {
    fn clone(&self) -> Self {
        Repeat { classify: self.classify.clone(), idempotency: self.idempotency.clone(), copy: self.copy.clone() }
    }
}

/// Copies requests that are `Clone`.
#[derive(Clone, Copy, Debug, Default)]
pub struct CloneAll;

impl<Req: Clone> CloneRequest<Req> for CloneAll {
    fn clone_request(&self, request: &Req) -> Option<Req> {
        Some(request.clone())
    }
}

/// Copies `http::Request<ReplayBody>`s whose body was buffered (method, URI, headers,
/// extensions and body).
#[derive(Clone, Copy, Debug, Default)]
pub struct CloneHttp;

impl CloneRequest<http::Request<ReplayBody>> for CloneHttp {
    fn clone_request(&self, request: &http::Request<ReplayBody>) -> Option<http::Request<ReplayBody>> {
        let body = request.body().try_clone()?;
        let mut copy = http::Request::new(body);
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.version_mut() = request.version();
        *copy.headers_mut() = request.headers().clone();
        *copy.extensions_mut() = request.extensions().clone();
        Some(copy)
    }
}

/// A request body that may have been buffered (and can then be copied) or is still a stream.
pub struct ReplayBody {
    state: State,
}

enum State {
    Buffered {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
    /// Over the cap: what was read already, then the rest of the stream.
    Streaming {
        prefix: Option<Bytes>,
        rest: UnsyncBoxBody<Bytes, BoxError>,
    },
}

impl ReplayBody {
    /// A buffered body holding `data`.
    pub fn from_bytes(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        ReplayBody { state: State::Buffered { data: (!data.is_empty()).then_some(data), trailers: None } }
    }

    /// An empty body.
    pub fn empty() -> Self {
        ReplayBody { state: State::Buffered { data: None, trailers: None } }
    }

    /// A copy, if the body was buffered.
    pub fn try_clone(&self) -> Option<Self> {
        match &self.state {
            State::Buffered { data, trailers } => {
                Some(ReplayBody { state: State::Buffered { data: data.clone(), trailers: trailers.clone() } })
            }
            State::Streaming { .. } => None,
        }
    }

    /// Whether the body can be copied.
    pub fn is_replayable(&self) -> bool {
        matches!(self.state, State::Buffered { .. })
    }

    /// Reads `body` into memory if all of it is already available and holds at most `cap`
    /// bytes. Otherwise keeps what was read and streams the rest, so a body that is over the
    /// cap, or still being produced (a client-streaming RPC waiting for the server), is never
    /// waited for — and such a request is simply not repeated.
    pub async fn buffer<B>(mut body: B, cap: usize) -> Result<Self, BoxError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        use futures_util::FutureExt;
        let mut data = BytesMut::new();
        loop {
            let frame = match body.frame().now_or_never() {
                Some(Some(frame)) => frame.map_err(Into::into)?,
                Some(None) => return Ok(ReplayBody::from_bytes(data.freeze())),
                // Not ready yet: stream from here on.
                None => return Ok(ReplayBody::streaming(data, body)),
            };
            match frame.into_data() {
                Ok(chunk) => {
                    data.extend_from_slice(&chunk);
                    if data.len() > cap {
                        return Ok(ReplayBody::streaming(data, body));
                    }
                }
                Err(frame) => {
                    let trailers = frame.into_trailers().ok();
                    let data = data.freeze();
                    return Ok(ReplayBody {
                        state: State::Buffered { data: (!data.is_empty()).then_some(data), trailers },
                    });
                }
            }
        }
    }

    fn streaming<B>(prefix: BytesMut, rest: B) -> Self
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let prefix = (!prefix.is_empty()).then(|| prefix.freeze());
        ReplayBody { state: State::Streaming { prefix, rest: rest.map_err(Into::into).boxed_unsync() } }
    }
}

impl Default for ReplayBody {
    fn default() -> Self {
        ReplayBody::empty()
    }
}

impl std::fmt::Debug for ReplayBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayBody").field("replayable", &self.is_replayable()).finish()
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.state {
            State::Buffered { data, trailers } => match data.take() {
                Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                None => Poll::Ready(trailers.take().map(|trailers| Ok(Frame::trailers(trailers)))),
            },
            State::Streaming { prefix, rest } => match prefix.take() {
                Some(prefix) => Poll::Ready(Some(Ok(Frame::data(prefix)))),
                None => Pin::new(rest).poll_frame(cx),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Buffered { data, trailers } => data.is_none() && trailers.is_none(),
            State::Streaming { prefix, rest } => prefix.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Buffered { data, .. } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            State::Streaming { prefix, rest } => {
                let prefix = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let mut hint = SizeHint::new();
                hint.set_lower(rest.size_hint().lower() + prefix);
                if let Some(upper) = rest.size_hint().upper() {
                    hint.set_upper(upper + prefix);
                }
                hint
            }
        }
    }
}

/// Buffers request bodies up to `cap` bytes into [`ReplayBody`]s (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct BufferBody<S> {
    inner: S,
    cap: usize,
}

/// Builds [`BufferBody`]s.
#[derive(Clone, Copy, Debug)]
pub struct BufferBodyLayer {
    cap: usize,
}

impl BufferBodyLayer {
    /// Buffers bodies of up to `cap` bytes (64 KiB is a sensible default for RPCs).
    pub fn new(cap: usize) -> Self {
        BufferBodyLayer { cap }
    }
}

impl<S> Layer<S> for BufferBodyLayer {
    type Service = BufferBody<S>;

    fn layer(&self, inner: S) -> BufferBody<S> {
        BufferBody { inner, cap: self.cap }
    }
}

impl<S, B> Service<http::Request<B>> for BufferBody<S>
where
    S: Service<http::Request<ReplayBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    S::Response: Send,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The ready service goes with this call; the clone waits for the next poll_ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let cap = self.cap;
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = ReplayBody::buffer(body, cap).await?;
            inner.call(http::Request::from_parts(parts, body)).await.map_err(Into::into)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    #[tokio::test]
    async fn small_bodies_are_buffered_and_copyable() {
        let body = ReplayBody::buffer(Full::new(Bytes::from_static(b"hello")), 64).await.unwrap();
        let copy = body.try_clone().expect("buffered");
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
        assert_eq!(copy.collect().await.unwrap().to_bytes(), "hello");
    }

    #[tokio::test]
    async fn a_body_still_being_produced_is_streamed_not_awaited() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(4);
        tx.send(Ok(Frame::data(Bytes::from_static(b"first")))).await.unwrap();
        let stream = StreamBody::new(tokio_stream_like(rx));
        // The second frame is not there yet: buffering must not wait for it.
        let body = ReplayBody::buffer(stream, 1024).await.unwrap();
        assert!(body.try_clone().is_none());
        tx.send(Ok(Frame::data(Bytes::from_static(b"-second")))).await.unwrap();
        drop(tx);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "first-second");
    }

    fn tokio_stream_like<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> + Unpin + Send {
        Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }

    #[tokio::test]
    async fn large_bodies_stream_whole_and_are_not_copied() {
        let chunks = (0..10).map(|i| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![i as u8; 10]))));
        let stream = StreamBody::new(futures_util::stream::iter(chunks));
        let body = ReplayBody::buffer(stream, 25).await.unwrap();
        assert!(body.try_clone().is_none());
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(all.len(), 100, "nothing lost across the cap");
        assert_eq!(&all[..10], &[0; 10]);
        assert_eq!(&all[90..], &[9; 10]);
    }

    #[test]
    fn http_requests_copy_with_their_parts() {
        let mut request = http::Request::put("/x").header("a", "b").body(ReplayBody::from_bytes("1")).unwrap();
        request.extensions_mut().insert(crate::Idempotency::Idempotent);
        let copy = CloneHttp.clone_request(&request).unwrap();
        assert_eq!((copy.method(), copy.uri().path()), (&http::Method::PUT, "/x"));
        assert_eq!(copy.headers()["a"], "b");
        assert_eq!(copy.extensions().get::<crate::Idempotency>(), Some(&crate::Idempotency::Idempotent));
    }
}
