//! One failure classification for every layer, and which requests may be sent twice.

use std::error::Error as StdError;
use std::io;

use tower::BoxError;

use crate::error::{BreakerOpen, DeadlineExceeded};

/// What a response (or error) means for fault tolerance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It worked (including application-level "no" answers such as 404 or NOT_FOUND: the
    /// endpoint is healthy).
    Success,
    /// The endpoint or the path to it failed in a way another attempt may fix (503, 429,
    /// UNAVAILABLE, a refused or reset connection).
    RetryableFailure,
    /// The endpoint failed and repeating the request would not help (500, INTERNAL).
    NonRetryableFailure,
    /// No answer in time.
    Timeout,
}

impl Outcome {
    /// Counts against the endpoint and the service (breaker, ejection).
    pub fn is_failure(self) -> bool {
        self != Outcome::Success
    }

    /// May be retried or hedged (if the request is idempotent and the budget allows).
    pub fn is_retryable(self) -> bool {
        matches!(self, Outcome::RetryableFailure | Outcome::Timeout)
    }
}

/// Classifies the result of a call. Implemented for closures
/// `Fn(Result<&Res, &BoxError>) -> Outcome`.
pub trait Classify<Res>: Send + Sync + 'static {
    /// The outcome of one call.
    fn classify(&self, result: Result<&Res, &BoxError>) -> Outcome;
}

impl<Res, F> Classify<Res> for F
where
    F: Fn(Result<&Res, &BoxError>) -> Outcome + Send + Sync + 'static,
{
    fn classify(&self, result: Result<&Res, &BoxError>) -> Outcome {
        self(result)
    }
}

/// Every `Ok` is a success; errors are classified by [`classify_error`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Errors;

impl<Res> Classify<Res> for Errors {
    fn classify(&self, result: Result<&Res, &BoxError>) -> Outcome {
        result.err().map_or(Outcome::Success, classify_error)
    }
}

/// HTTP: 502, 503 and 429 are retryable failures, 504 and 408 timeouts, other 5xx
/// non-retryable failures, everything else success; errors by [`classify_error`].
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpStatus;

impl<B> Classify<http::Response<B>> for HttpStatus {
    fn classify(&self, result: Result<&http::Response<B>, &BoxError>) -> Outcome {
        match result {
            Ok(response) => classify_http_status(response.status()),
            Err(error) => classify_error(error),
        }
    }
}

fn classify_http_status(status: http::StatusCode) -> Outcome {
    match status.as_u16() {
        502 | 503 | 429 => Outcome::RetryableFailure,
        504 | 408 => Outcome::Timeout,
        500..=599 => Outcome::NonRetryableFailure,
        _ => Outcome::Success,
    }
}

/// gRPC over HTTP/2: the `grpc-status` of a trailers-only response (how servers answer
/// errors without a body). UNAVAILABLE and RESOURCE_EXHAUSTED are retryable,
/// DEADLINE_EXCEEDED a timeout, UNKNOWN, INTERNAL and DATA_LOSS non-retryable failures, and
/// every other status (OK, NOT_FOUND, INVALID_ARGUMENT, …) a success: the endpoint answered.
/// A non-200 HTTP status is classified as [`HttpStatus`] does.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcStatus;

impl<B> Classify<http::Response<B>> for GrpcStatus {
    fn classify(&self, result: Result<&http::Response<B>, &BoxError>) -> Outcome {
        let response = match result {
            Ok(response) => response,
            Err(error) => return classify_error(error),
        };
        if response.status() != http::StatusCode::OK {
            return classify_http_status(response.status());
        }
        let code = response.headers().get("grpc-status").and_then(|v| v.to_str().ok()?.parse::<u8>().ok());
        match code {
            Some(14 | 8) => Outcome::RetryableFailure,
            Some(4) => Outcome::Timeout,
            Some(2 | 13 | 15) => Outcome::NonRetryableFailure,
            _ => Outcome::Success,
        }
    }
}

/// Classifies an error by what it (or anything in its `source` chain) is: an elapsed deadline
/// is a timeout; connection-level I/O errors are retryable; an open circuit breaker and an
/// exhausted deadline are not; anything else (transport errors of HTTP clients) is treated as
/// retryable, because application failures arrive as responses, not errors.
pub fn classify_error(error: &BoxError) -> Outcome {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error.as_ref());
    while let Some(error) = current {
        if error.is::<DeadlineExceeded>()
            || error.is::<tokio::time::error::Elapsed>()
            || error.is::<waggle_balance::balance::CallTimedOut>()
        {
            return Outcome::Timeout;
        }
        if error.is::<BreakerOpen>() {
            return Outcome::NonRetryableFailure;
        }
        if let Some(io) = error.downcast_ref::<io::Error>() {
            return match io.kind() {
                io::ErrorKind::TimedOut => Outcome::Timeout,
                _ => Outcome::RetryableFailure,
            };
        }
        current = error.source();
    }
    Outcome::RetryableFailure
}

/// A request's own say on whether it may be sent more than once, as an `http::Request`
/// extension (tonic copies a `tonic::Request`'s extensions there). It overrides the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idempotency {
    /// Safe to send twice (reads, upserts with a client-chosen id, …).
    Idempotent,
    /// Must not be repeated.
    NonIdempotent,
}

/// Decides whether a request may be retried or hedged. Implemented for closures
/// `Fn(&Req) -> bool`.
pub trait IdempotencyPolicy<Req>: Send + Sync + 'static {
    /// Whether `request` may be sent more than once.
    fn is_idempotent(&self, request: &Req) -> bool;
}

impl<Req, F> IdempotencyPolicy<Req> for F
where
    F: Fn(&Req) -> bool + Send + Sync + 'static,
{
    fn is_idempotent(&self, request: &Req) -> bool {
        self(request)
    }
}

/// HTTP semantics: an [`Idempotency`] extension if present, otherwise the method (GET, HEAD,
/// OPTIONS, TRACE, PUT and DELETE are idempotent; POST and PATCH are not). gRPC calls are
/// POSTs, so they are retried only when marked.
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpIdempotency;

impl<B> IdempotencyPolicy<http::Request<B>> for HttpIdempotency {
    fn is_idempotent(&self, request: &http::Request<B>) -> bool {
        match request.extensions().get::<Idempotency>() {
            Some(marker) => *marker == Idempotency::Idempotent,
            None => request.method().is_idempotent(),
        }
    }
}

/// Treats every request as idempotent (a read-only service).
#[derive(Clone, Copy, Debug, Default)]
pub struct AllIdempotent;

impl<Req> IdempotencyPolicy<Req> for AllIdempotent {
    fn is_idempotent(&self, _request: &Req) -> bool {
        true
    }
}

/// Treats no request as idempotent: nothing is retried or hedged.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoneIdempotent;

impl<Req> IdempotencyPolicy<Req> for NoneIdempotent {
    fn is_idempotent(&self, _request: &Req) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, grpc: Option<&str>) -> http::Response<()> {
        let mut builder = http::Response::builder().status(status);
        if let Some(code) = grpc {
            builder = builder.header("grpc-status", code);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn http_statuses() {
        let cases = [(200, Outcome::Success), (404, Outcome::Success), (429, Outcome::RetryableFailure)];
        let cases = cases.into_iter().chain([
            (500, Outcome::NonRetryableFailure),
            (502, Outcome::RetryableFailure),
            (503, Outcome::RetryableFailure),
            (504, Outcome::Timeout),
        ]);
        for (status, expected) in cases {
            assert_eq!(HttpStatus.classify(Ok(&response(status, None))), expected, "{status}");
        }
    }

    #[test]
    fn grpc_statuses() {
        let cases = [(None, Outcome::Success), (Some("0"), Outcome::Success), (Some("5"), Outcome::Success)];
        let cases = cases.into_iter().chain([
            (Some("14"), Outcome::RetryableFailure),
            (Some("4"), Outcome::Timeout),
            (Some("13"), Outcome::NonRetryableFailure),
        ]);
        for (code, expected) in cases {
            assert_eq!(GrpcStatus.classify(Ok(&response(200, code))), expected, "{code:?}");
        }
        assert_eq!(GrpcStatus.classify(Ok(&response(503, None))), Outcome::RetryableFailure);
    }

    #[test]
    fn errors_by_their_chain() {
        let refused: BoxError = Box::new(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(classify_error(&refused), Outcome::RetryableFailure);
        let timed_out: BoxError = Box::new(io::Error::from(io::ErrorKind::TimedOut));
        assert_eq!(classify_error(&timed_out), Outcome::Timeout);
        let deadline: BoxError = Box::new(DeadlineExceeded);
        assert_eq!(classify_error(&deadline), Outcome::Timeout);
        let open: BoxError = Box::new(BreakerOpen);
        assert_eq!(classify_error(&open), Outcome::NonRetryableFailure);
    }

    #[test]
    fn idempotency_by_method_and_marker() {
        let get = http::Request::get("/").body(()).unwrap();
        let mut post = http::Request::post("/").body(()).unwrap();
        assert!(HttpIdempotency.is_idempotent(&get));
        assert!(!HttpIdempotency.is_idempotent(&post));
        post.extensions_mut().insert(Idempotency::Idempotent);
        assert!(HttpIdempotency.is_idempotent(&post));
    }
}
