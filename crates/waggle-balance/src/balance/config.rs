//! The cross-cutting knobs of [`Balance`](super::Balance): ejection, zones, slow start,
//! subsets and what to do with no endpoint. Each is a plain value with documented defaults;
//! setters clamp out-of-range values into range rather than fail.

use std::sync::Arc;
use std::time::Duration;

use crate::Endpoint;

/// When an endpoint is ejected and for how long.
#[derive(Clone, Debug)]
pub struct Ejection {
    pub(crate) consecutive_failures: u32,
    pub(crate) failure_rate: Option<FailureRate>,
    pub(crate) base: Duration,
    pub(crate) max: Duration,
    pub(crate) growth: Growth,
    pub(crate) max_ejected_share: f64,
}

/// Ejection on a failure rate: at least `threshold` of the responses in a `window` failed,
/// out of at least `min_calls`.
#[derive(Clone, Copy, Debug)]
pub struct FailureRate {
    pub(crate) threshold: f64,
    pub(crate) min_calls: u32,
    pub(crate) window: Duration,
}

impl FailureRate {
    /// Ejects at `threshold` (in `(0, 1]`) failed responses within `window` (at least 1 ms),
    /// once at least `min_calls` (at least 1) were seen.
    pub fn new(threshold: f64, min_calls: u32, window: Duration) -> Self {
        let threshold = if threshold.is_finite() && threshold > 0.0 { threshold.min(1.0) } else { 0.5 };
        FailureRate { threshold, min_calls: min_calls.max(1), window: window.max(Duration::from_millis(1)) }
    }
}

/// How the back-off grows with each ejection in a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Growth {
    /// base × 2^(n-1): quick to retry a blip, quick to back off a dead endpoint.
    Doubling,
    /// base × n (Envoy's outlier detection).
    Linear,
}

impl Default for Ejection {
    /// Eject after 5 consecutive failed responses (Envoy's default), back off 1 s, doubling
    /// with every ejection in a row, capped at 5 min; no failure-rate rule; no cap on the
    /// share of endpoints ejected by response failures (the panic threshold still applies).
    fn default() -> Self {
        Ejection {
            consecutive_failures: 5,
            failure_rate: None,
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
            growth: Growth::Doubling,
            max_ejected_share: 1.0,
        }
    }
}

impl Ejection {
    /// Envoy's outlier detection: 5 consecutive failures, or 50 % of at least 20 responses
    /// within 10 s; back-off 30 s × ejections in a row, capped at 300 s; at most 10 % of the
    /// endpoints ejected for response failures at a time (see [`max_ejected_share`](Self::max_ejected_share)).
    pub fn outlier_detection() -> Self {
        Ejection {
            consecutive_failures: 5,
            failure_rate: Some(FailureRate::new(0.5, 20, Duration::from_secs(10))),
            base: Duration::from_secs(30),
            max: Duration::from_secs(300),
            growth: Growth::Linear,
            max_ejected_share: 0.1,
        }
    }

    /// Ejects after `n` failed responses in a row (at least 1). Endpoints whose service fails
    /// to become ready are ejected at once.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = n.max(1);
        self
    }

    /// Also ejects on a failure rate (`None` turns the rule off).
    pub fn failure_rate(mut self, rate: Option<FailureRate>) -> Self {
        self.failure_rate = rate;
        self
    }

    /// The first back-off (at least 1 ms).
    pub fn base(mut self, base: Duration) -> Self {
        self.base = base.max(Duration::from_millis(1));
        self.max = self.max.max(self.base);
        self
    }

    /// The longest back-off (at least the base).
    pub fn max(mut self, max: Duration) -> Self {
        self.max = max.max(self.base);
        self
    }

    /// How the back-off grows.
    pub fn growth(mut self, growth: Growth) -> Self {
        self.growth = growth;
        self
    }

    /// At most this share of the endpoints (in `[0, 1]`) may be ejected for failed responses
    /// at once. The rule: with n endpoints, up to `max(1, ⌊share × n⌋)` may be ejected, except
    /// that a lone endpoint is never ejected for its responses (no one could take its load).
    /// Endpoints that cannot even become ready are always ejected.
    pub fn max_ejected_share(mut self, share: f64) -> Self {
        self.max_ejected_share = if share.is_finite() { share.clamp(0.0, 1.0) } else { 0.1 };
        self
    }

    /// How many of `n` endpoints may be ejected for failed responses at once.
    pub(crate) fn max_ejected(&self, n: usize) -> usize {
        if n <= 1 { 0 } else { ((self.max_ejected_share * n as f64).floor() as usize).max(1) }
    }

    /// The back-off of the `n`-th ejection in a row.
    pub(crate) fn backoff(&self, n: u32) -> Duration {
        let n = n.max(1);
        let grown = match self.growth {
            Growth::Doubling => self.base.saturating_mul(1u32 << (n - 1).min(20)),
            Growth::Linear => self.base.saturating_mul(n),
        };
        grown.min(self.max)
    }
}

/// Locality preference: keep traffic in the local zone while it is healthy and not
/// overloaded, spill to the other zones otherwise.
///
/// * **Unhealthy**: like Envoy's priority levels, each zone's health is
///   `min(1, overprovisioning × healthy / total)`; the local zone takes its health's worth of
///   traffic and the others the rest, up to their own health, normalised when the total is
///   below 1. With the default factor 1.4 the local zone keeps everything until more than
///   ~29 % of its endpoints are ejected, then spills in proportion; a dead local zone sends
///   everything away. In panic mode (see [`Builder::panic_threshold`](super::Builder::panic_threshold))
///   there is no preference: traffic spreads over every endpoint.
/// * **Overloaded**: a request spills when the local zone's requests in flight per unit of
///   weight are at least 1 and more than `overload_factor` times the other zones'.
#[derive(Clone, Debug)]
pub struct ZoneAware {
    pub(crate) local: Arc<str>,
    pub(crate) overprovisioning: f64,
    pub(crate) overload_factor: Option<f64>,
}

impl ZoneAware {
    /// Prefers endpoints in zone `local`; overprovisioning 1.4, overload factor 2.
    pub fn new(local: impl Into<Arc<str>>) -> Self {
        ZoneAware { local: local.into(), overprovisioning: 1.4, overload_factor: Some(2.0) }
    }

    /// Sets the overprovisioning factor (at least 1).
    pub fn overprovisioning(mut self, factor: f64) -> Self {
        self.overprovisioning = if factor.is_finite() { factor.max(1.0) } else { 1.4 };
        self
    }

    /// Sets the overload factor (at least 1), or `None` to spill only on health.
    pub fn overload_factor(mut self, factor: Option<f64>) -> Self {
        self.overload_factor = factor.map(|f| if f.is_finite() { f.max(1.0) } else { 2.0 });
        self
    }
}

/// Slow start: a newly ready endpoint's weight ramps up over `window` as
/// `weight × max(min_weight, (elapsed / window)^(1 / aggression))` (Envoy's curve): 1.0 is
/// linear, larger values ramp faster at first. Applies to endpoints added and endpoints back
/// from ejection; consistent-hash policies keep full weights.
#[derive(Clone, Debug)]
pub struct SlowStart {
    pub(crate) window: Duration,
    pub(crate) aggression: f64,
    pub(crate) min_weight: f64,
}

impl SlowStart {
    /// A linear ramp over `window`, starting at 10 % of the weight.
    pub fn new(window: Duration) -> Self {
        SlowStart { window: window.max(Duration::from_millis(1)), aggression: 1.0, min_weight: 0.1 }
    }

    /// Sets the curve's aggression (> 0; 1.0 is linear).
    pub fn aggression(mut self, aggression: f64) -> Self {
        self.aggression = if aggression.is_finite() && aggression > 0.0 { aggression } else { 1.0 };
        self
    }

    /// Sets the starting share of the weight, in `[0.01, 1]`.
    pub fn min_weight(mut self, share: f64) -> Self {
        self.min_weight = if share.is_finite() { share.clamp(0.01, 1.0) } else { 0.1 };
        self
    }

    /// The weight multiplier `elapsed` after the endpoint became ready.
    pub fn factor(&self, elapsed: Duration) -> f64 {
        if elapsed >= self.window {
            return 1.0;
        }
        let time = elapsed.as_secs_f64() / self.window.as_secs_f64();
        time.powf(1.0 / self.aggression).max(self.min_weight)
    }
}

/// Which endpoints a subset contains: those carrying every listed tag and metadata pair.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    tags: Vec<String>,
    metadata: Vec<(String, String)>,
}

impl Selector {
    /// A selector matching every endpoint; narrow it with [`tag`](Self::tag) and
    /// [`metadata`](Self::metadata).
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires `tag`.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Requires metadata `key` = `value` (for example `version` = `v2`).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// Whether `endpoint` is in the subset.
    pub fn matches<S>(&self, endpoint: &Endpoint<S>) -> bool {
        self.tags.iter().all(|t| endpoint.has_tag(t))
            && self.metadata.iter().all(|(k, v)| endpoint.get_metadata(k) == Some(v.as_str()))
    }
}

/// What a subset balancer does when no endpoint matches its selector.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fallback {
    /// Balance over every endpoint (a canary subset that falls back to the main fleet).
    AnyEndpoint,
    /// Balance over another subset (for example `version=stable`); if that is empty too,
    /// there is no endpoint.
    Subset(Selector),
    /// No endpoint: requests wait or fail as [`WhenEmpty`] says.
    NoEndpoint,
}

/// A subset: the selector and its declared fallback.
#[derive(Clone, Debug)]
pub struct Subset {
    pub(crate) selector: Selector,
    pub(crate) fallback: Fallback,
}

impl Subset {
    /// Balances over endpoints matching `selector`, and over `fallback` when none match.
    pub fn new(selector: Selector, fallback: Fallback) -> Self {
        Subset { selector, fallback }
    }
}

/// What requests do while the balancer has no endpoint to send them to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WhenEmpty {
    /// `poll_ready` stays pending until an endpoint is ready (tower's behaviour; put a timeout
    /// in front).
    #[default]
    Wait,
    /// `poll_ready` is ready and the call fails at once with
    /// [`NoEndpoints`](super::error::NoEndpoints).
    Fail,
    /// `poll_ready` is always ready; a call made while there is no endpoint waits for one
    /// inside its response future, so a timeout around the call bounds the wait (what the
    /// SDK's service client uses).
    WaitInCall,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_curves() {
        let linear = SlowStart::new(Duration::from_secs(100));
        assert_eq!(linear.factor(Duration::ZERO), 0.1);
        assert_eq!(linear.factor(Duration::from_secs(50)), 0.5);
        assert_eq!(linear.factor(Duration::from_secs(100)), 1.0);
        let aggressive = SlowStart::new(Duration::from_secs(100)).aggression(2.0);
        assert!((aggressive.factor(Duration::from_secs(25)) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let ejection = Ejection::default().base(Duration::from_secs(1)).max(Duration::from_secs(10));
        let backoffs: Vec<u64> = (1..=6).map(|n| ejection.backoff(n).as_secs()).collect();
        assert_eq!(backoffs, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn envoy_backoff_is_linear_and_the_share_rule_holds() {
        let ejection = Ejection::outlier_detection();
        let backoffs: Vec<u64> = (1..=12).map(|n| ejection.backoff(n).as_secs()).collect();
        assert_eq!(backoffs, [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]);
        assert_eq!([1, 2, 9, 10, 25, 100].map(|n| ejection.max_ejected(n)), [0, 1, 1, 1, 2, 10]);
    }

    #[test]
    fn selectors_need_every_tag_and_pair() {
        let endpoint = Endpoint::new(()).tag("canary").metadata("version", "v2");
        assert!(Selector::new().matches(&endpoint));
        assert!(Selector::new().metadata("version", "v2").tag("canary").matches(&endpoint));
        assert!(!Selector::new().metadata("version", "v1").matches(&endpoint));
        assert!(!Selector::new().tag("stable").matches(&endpoint));
    }
}
