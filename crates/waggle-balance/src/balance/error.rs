//! Errors the balancer itself produces; errors of the endpoints' services pass through as
//! they are (boxed).

use std::fmt;

/// No endpoint can take the request: discovery has none ready, or a subset with the
/// [`NoEndpoint`](super::Fallback::NoEndpoint) fallback matched none, and the balancer was
/// built with [`WhenEmpty::Fail`](super::WhenEmpty::Fail). Also returned when every attempt
/// to find a ready endpoint failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoEndpoints;

impl fmt::Display for NoEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no endpoint available")
    }
}

impl std::error::Error for NoEndpoints {}

/// The picked endpoint's service did not become ready in time (on every attempt). The
/// endpoint is ejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotReady {
    /// How long the request waited for it.
    pub waited: std::time::Duration,
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "endpoint not ready within {:?}", self.waited)
    }
}

impl std::error::Error for NotReady {}

/// The endpoint did not answer within the balancer's call timeout
/// ([`Builder::call_timeout`](super::Builder::call_timeout)); it counts as the endpoint's
/// failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallTimedOut {
    /// The call timeout.
    pub timeout: std::time::Duration,
}

impl fmt::Display for CallTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "endpoint did not answer within {:?}", self.timeout)
    }
}

impl std::error::Error for CallTimedOut {}

/// The balancer's background worker has stopped — every [`Balance`](super::Balance) clone was
/// dropped, or its runtime shut down — so the handle can no longer reach it, and a balancer
/// without endpoints will never get any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closed;

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the balancer has stopped")
    }
}

impl std::error::Error for Closed {}
