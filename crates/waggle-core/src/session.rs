//! Sessions: leases that keep a client process's instances alive.

use std::{collections::BTreeSet, fmt, time::Duration};

use crate::{InstanceId, Revision, ServiceName, ValidationError, validate::limits};

/// Identifies a session: a random non-zero 64-bit number chosen by the proposer (the leader),
/// so ids are not reused even across a wiped or restored data dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SessionId(u64);

impl SessionId {
    /// The agent session: it owns instances registered without a session of their own (the
    /// Consul-compatible agent API). It is created by the first such registration, never
    /// expires and cannot be revoked; its instances stay until deregistered.
    pub const AGENT: SessionId = SessionId(u64::MAX);

    /// Wraps a raw id (as received over the wire).
    pub fn new(raw: u64) -> Self {
        SessionId(raw)
    }
    /// The raw id.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// A session's time to live: 1 s – 24 h, default 10 s, millisecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Ttl(u64);

impl Ttl {
    /// The default TTL, 10 s.
    pub const DEFAULT: Ttl = Ttl(10_000);
    /// The longest TTL, 24 h.
    pub const MAX: Ttl = Ttl(limits::MAX_TTL_MS);

    /// Validates a TTL given in milliseconds.
    pub fn from_millis(ms: u64) -> Result<Self, ValidationError> {
        if !(limits::MIN_TTL_MS..=limits::MAX_TTL_MS).contains(&ms) {
            return Err(ValidationError::new("ttl", format!("must be between 1s and 24h, got {}", humanize_ms(ms))));
        }
        Ok(Ttl(ms))
    }

    /// Validates a TTL given as a duration.
    pub fn from_duration(d: Duration) -> Result<Self, ValidationError> {
        Self::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// The TTL in milliseconds.
    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// The TTL as a duration.
    pub fn as_duration(self) -> Duration {
        Duration::from_millis(self.0)
    }
}

impl Default for Ttl {
    fn default() -> Self {
        Ttl::DEFAULT
    }
}

impl TryFrom<u64> for Ttl {
    type Error = ValidationError;
    fn try_from(ms: u64) -> Result<Self, Self::Error> {
        Ttl::from_millis(ms)
    }
}

impl From<Ttl> for u64 {
    fn from(t: Ttl) -> u64 {
        t.0
    }
}

fn humanize_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) { format!("{}s", ms / 1000) } else { format!("{ms}ms") }
}

/// A live session as the state machine records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Its id.
    pub id: SessionId,
    /// Its time to live; the leader expires it this long after the last keepalive.
    pub ttl: Ttl,
    /// The revision that created it.
    pub create_revision: Revision,
    /// The instances registered under it, removed together when it ends.
    pub instances: BTreeSet<(ServiceName, InstanceId)>,
    /// The keys bound to it, deleted when it ends.
    pub keys: BTreeSet<String>,
    /// The locks it holds or waits for, released when it ends.
    pub locks: BTreeSet<String>,
    /// Name, key behavior, lock-delay, expiry.
    pub options: SessionOptions,
}

/// What happens to the keys bound to a session when it ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum KeyBehavior {
    /// The keys are deleted (Waggle's default, Consul's `delete`).
    #[default]
    Delete,
    /// The keys stay, unbound from the session (Consul's default, `release`).
    Release,
}

/// The longest lock-delay a session may ask for (Consul's maximum, 60 s).
pub const MAX_LOCK_DELAY_MS: u64 = 60_000;

/// Most health checks one session may depend on.
pub const MAX_SESSION_CHECKS: usize = 32;

/// Longest session name, in bytes.
pub const MAX_SESSION_NAME: usize = 256;

/// How a session behaves besides its TTL; the defaults are Waggle's (no name, keys deleted,
/// no lock-delay, expires after its TTL).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SessionOptions {
    /// A label (Consul's `Name`).
    pub name: String,
    /// What happens to its keys when it ends.
    pub behavior: KeyBehavior,
    /// After it ends (expired, revoked or destroyed) while holding locks or keys, they cannot
    /// be taken again for this long (milliseconds, at most [`MAX_LOCK_DELAY_MS`]; 0: none):
    /// time for a paused ex-holder to notice before anyone else acts.
    pub lock_delay_ms: u64,
    /// Never expires: it lives until revoked (a Consul session created without a TTL).
    pub no_expiry: bool,
    /// Health checks the session depends on (Consul's `ServiceChecks`): it ends when one of them
    /// turns critical or is removed. Each must exist and not be critical when it is created.
    pub checks: Vec<String>,
}

impl SessionOptions {
    /// Checks the name and the lock-delay.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.name.len() > MAX_SESSION_NAME || self.name.chars().any(char::is_control) {
            let rule = format!("at most {MAX_SESSION_NAME} bytes without control characters");
            return Err(ValidationError::new("name", rule));
        }
        if self.checks.len() > MAX_SESSION_CHECKS {
            let rule = format!("at most {MAX_SESSION_CHECKS} checks, got {}", self.checks.len());
            return Err(ValidationError::new("checks", rule));
        }
        for check in &self.checks {
            crate::check::check_check_id("checks", check)?;
        }
        if self.lock_delay_ms > MAX_LOCK_DELAY_MS {
            let rule = format!("at most 60s, got {}", humanize_ms(self.lock_delay_ms));
            return Err(ValidationError::new("lock_delay", rule));
        }
        Ok(())
    }
}
