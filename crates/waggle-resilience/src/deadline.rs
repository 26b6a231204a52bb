//! Deadlines: a per-call timeout that becomes a deadline carried by the request, propagated
//! to the server in a header, and consulted by retries, hedges and back-offs.
//!
//! The deadline lives in the request's extensions as a [`Deadline`]. [`Timeout`] sets it
//! (keeping an earlier one a caller already set), writes the remaining time into a header, and
//! fails the call with [`DeadlineExceeded`] when it passes. On the server side,
//! [`Deadline::from_headers`] reads what a client sent.
//!
//! | protocol | header | format |
//! |---|---|---|
//! | gRPC | `grpc-timeout` | the gRPC spec's: at most 8 digits and a unit (`250m`) |
//! | HTTP | `x-waggle-timeout-ms` | remaining milliseconds (`250`) |

use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderValue;
use tokio::time::Instant;
use tower::{BoxError, Layer, Service};

use crate::BoxFuture;
pub use crate::error::DeadlineExceeded;

/// The HTTP header carrying the remaining time in milliseconds.
pub const HTTP_TIMEOUT_HEADER: &str = "x-waggle-timeout-ms";
/// The gRPC header carrying the remaining time.
pub const GRPC_TIMEOUT_HEADER: &str = "grpc-timeout";

/// When a request must be answered by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        let now = Instant::now();
        // A timeout too large to represent means "no deadline to speak of": a century.
        let far = Duration::from_secs(100 * 365 * 24 * 3600);
        Deadline(now.checked_add(timeout.min(far)).unwrap_or(now + Duration::from_secs(24 * 3600)))
    }

    /// Time left (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Whether there is less than `needed` left.
    pub fn cannot_fit(&self, needed: Duration) -> bool {
        self.remaining() < needed
    }

    /// Reads a deadline a client propagated: `grpc-timeout` or `x-waggle-timeout-ms`.
    /// Malformed values are ignored (no deadline rather than a wrong one).
    pub fn from_headers(headers: &http::HeaderMap) -> Option<Self> {
        let grpc = headers.get(GRPC_TIMEOUT_HEADER).and_then(|v| parse_grpc_timeout(v.to_str().ok()?));
        let http = headers
            .get(HTTP_TIMEOUT_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis);
        grpc.or(http).map(Deadline::after)
    }

    /// The deadline of `request`, if it has one.
    pub fn of<B>(request: &http::Request<B>) -> Option<Self> {
        request.extensions().get::<Deadline>().copied()
    }
}

/// Parses a gRPC timeout: 1–8 digits and a unit `H M S m u n`.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Formats `remaining` for `grpc-timeout`: milliseconds when they fit in 8 digits, else
/// seconds, else hours.
fn format_grpc_timeout(remaining: Duration) -> String {
    let millis = remaining.as_millis();
    if millis < 100_000_000 {
        return format!("{}m", millis.max(1));
    }
    let secs = remaining.as_secs();
    if secs < 100_000_000 { format!("{secs}S") } else { format!("{}H", (secs / 3600).min(99_999_999)) }
}

/// Rewrites the deadline header of a request about to be sent again (a retry, a hedge) with
/// the time it has left now, so the server never believes it has longer than the client
/// will wait. Only touches a header the request already carries.
pub fn refresh_header<B>(request: &mut http::Request<B>) {
    let Some(deadline) = Deadline::of(request) else { return };
    let remaining = deadline.remaining();
    let headers = request.headers_mut();
    if headers.contains_key(GRPC_TIMEOUT_HEADER)
        && let Ok(value) = HeaderValue::from_str(&format_grpc_timeout(remaining))
    {
        headers.insert(GRPC_TIMEOUT_HEADER, value);
    }
    if headers.contains_key(HTTP_TIMEOUT_HEADER) {
        headers.insert(HTTP_TIMEOUT_HEADER, HeaderValue::from(remaining.as_millis().max(1) as u64));
    }
}

/// Which header [`Timeout`] writes the remaining time into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Propagation {
    /// `grpc-timeout`.
    Grpc,
    /// `x-waggle-timeout-ms`.
    Http,
    /// None: the deadline stays local.
    Local,
}

/// Enforces a per-call timeout as a deadline (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    timeout: Duration,
    propagation: Propagation,
}

impl<S> Timeout<S> {
    /// Wraps `inner` with `timeout` per call.
    pub fn new(inner: S, timeout: Duration, propagation: Propagation) -> Self {
        Timeout { inner, timeout, propagation }
    }
}

/// Builds [`Timeout`]s.
#[derive(Clone, Copy, Debug)]
pub struct TimeoutLayer {
    timeout: Duration,
    propagation: Propagation,
}

impl TimeoutLayer {
    /// A layer applying `timeout` per call and propagating it as `propagation` says.
    pub fn new(timeout: Duration, propagation: Propagation) -> Self {
        TimeoutLayer { timeout, propagation }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout::new(inner, self.timeout, self.propagation)
    }
}

impl<S, B> Service<http::Request<B>> for Timeout<S>
where
    S: Service<http::Request<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    /// The inner service's readiness. A balancer that may have no endpoint yet should wait
    /// inside the call instead (`WhenEmpty::WaitInCall`), where the deadline bounds it.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The earliest of: this layer's timeout, a deadline already in the request, and one
        // the caller put in the headers (tonic's `Request::set_timeout` writes grpc-timeout).
        let own = Deadline::after(self.timeout);
        // A deadline already in the extensions was set by an outer layer, which folded in the
        // caller's header then; only a request without one needs its headers read.
        let earlier = Deadline::of(&request).or_else(|| Deadline::from_headers(request.headers()));
        let deadline = earlier.map_or(own, |earlier| earlier.min(own));
        request.extensions_mut().insert(deadline);
        let remaining = deadline.remaining();
        if remaining.is_zero() {
            return Box::pin(std::future::ready(Err(DeadlineExceeded.into())));
        }
        let header = match self.propagation {
            Propagation::Grpc => Some((GRPC_TIMEOUT_HEADER, format_grpc_timeout(remaining))),
            Propagation::Http => Some((HTTP_TIMEOUT_HEADER, remaining.as_millis().max(1).to_string())),
            Propagation::Local => None,
        };
        if let Some((name, value)) = header
            && let Ok(value) = HeaderValue::from_str(&value)
        {
            request.headers_mut().insert(name, value);
        }
        let call = self.inner.call(request);
        let started = Instant::now();
        Box::pin(async move {
            let result = match tokio::time::timeout_at(deadline.0, call).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(DeadlineExceeded.into()),
            };
            crate::telemetry::request(outcome_for_metrics(&result), started.elapsed());
            result
        })
    }
}

/// The outcome the request counter is labelled with: errors by what they are, answers as
/// successes (the timeout layer knows no protocol; the classifier-driven layers count the rest).
fn outcome_for_metrics<T>(result: &Result<T, BoxError>) -> crate::Outcome {
    match result {
        Ok(_) => crate::Outcome::Success,
        Err(error) => crate::classify::classify_error(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_round_trip() {
        for (text, duration) in [("250m", 250), ("3S", 3_000), ("1M", 60_000), ("2H", 7_200_000)] {
            assert_eq!(parse_grpc_timeout(text), Some(Duration::from_millis(duration)), "{text}");
        }
        assert_eq!(parse_grpc_timeout("123456789m"), None, "at most 8 digits");
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("+5m"), None);
        assert_eq!(format_grpc_timeout(Duration::from_millis(250)), "250m");
        assert_eq!(format_grpc_timeout(Duration::from_secs(200_000)), "200000S");
    }
}
