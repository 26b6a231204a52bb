//! SDK settings.

use std::time::Duration;

use waggle_core::Ttl;

/// How a [`Client`](crate::Client) behaves. Plain data with documented defaults.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The session TTL (default 10 s). Keepalives are sent every TTL/3.
    pub session_ttl: Ttl,
    /// Timeout for establishing a connection (default 2 s).
    pub connect_timeout: Duration,
    /// Timeout for unary calls (default 5 s).
    pub request_timeout: Duration,
    /// First reconnect back-off (default 100 ms); doubles up to `backoff_max`, full jitter.
    pub backoff_base: Duration,
    /// Longest reconnect back-off (default 2 s).
    pub backoff_max: Duration,
    /// Seed for back-off jitter (default: from the OS). Set it to make tests reproducible.
    pub seed: Option<u64>,
    /// Lock-delay (default 0, at most 60 s): when this client's session ends (it expires, or
    /// the client closes) while holding locks, nobody else is granted them for this long —
    /// time for a paused holder to notice it lost them before anyone else acts.
    pub lock_delay: Duration,
    /// The ACL token (its secret) every call carries, as `x-consul-token` (default: none, the
    /// server's anonymous token). Never logged.
    pub token: Option<String>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            session_ttl: Ttl::DEFAULT,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            seed: None,
            lock_delay: Duration::ZERO,
            token: None,
        }
    }
}

impl ClientConfig {
    /// Checks the settings the server would refuse (so a session is never refused over and
    /// over in the background).
    pub fn validate(&self) -> Result<(), waggle_core::ValidationError> {
        if let Some(token) = &self.token
            && http::HeaderValue::from_str(token).is_err()
        {
            return Err(waggle_core::ValidationError::new("token", "must be printable ASCII"));
        }
        if self.lock_delay > Duration::from_millis(waggle_core::MAX_LOCK_DELAY_MS) {
            let rule = format!("at most 60s, got {:?}", self.lock_delay);
            return Err(waggle_core::ValidationError::new("lock_delay", rule));
        }
        Ok(())
    }

    /// The lock-delay in whole milliseconds, rounded up (a non-zero delay never becomes 0).
    pub(crate) fn lock_delay_ms(&self) -> u64 {
        u64::try_from(self.lock_delay.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)
    }

    pub(crate) fn backoff(&self) -> crate::Backoff {
        crate::Backoff::new(self.backoff_base, self.backoff_max, self.seed)
    }
}
