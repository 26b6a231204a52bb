//! The retry budget (Finagle's): retries and hedges may add at most a share of the traffic,
//! plus a small floor so a quiet service can still retry.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Shared by every layer that sends extra requests. Within a sliding window (10 s by
/// default) extra requests may total `ratio × requests + min_per_sec × window` (20 % and 10/s
/// by default). Cheap to clone; clones share the account.
#[derive(Clone, Debug)]
pub struct RetryBudget {
    inner: Arc<Mutex<Account>>,
    ratio: f64,
    floor: f64,
}

/// Counts in one-second buckets over the window.
#[derive(Debug)]
struct Account {
    buckets: Vec<(u64, u64)>,
    /// The second (since `origin`) of `buckets[current]`.
    current_second: u64,
    current: usize,
    origin: Instant,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::new(0.2, 10.0, Duration::from_secs(10))
    }
}

impl RetryBudget {
    /// Extra requests may be `ratio` (in `[0, 1000]`) of requests plus `min_per_sec` per second,
    /// counted over `window` (1–60 s, whole seconds).
    pub fn new(ratio: f64, min_per_sec: f64, window: Duration) -> Self {
        let seconds = window.as_secs().clamp(1, 60) as usize;
        let ratio = if ratio.is_finite() { ratio.clamp(0.0, 1000.0) } else { 0.2 };
        let min_per_sec = if min_per_sec.is_finite() { min_per_sec.max(0.0) } else { 10.0 };
        let account = Account { buckets: vec![(0, 0); seconds], current_second: 0, current: 0, origin: Instant::now() };
        RetryBudget { inner: Arc::new(Mutex::new(account)), ratio, floor: min_per_sec * seconds as f64 }
    }

    /// Records an original request (call once per request, by the outermost layer).
    pub fn deposit(&self) {
        self.with_account(|account| account.buckets[account.current].0 += 1);
    }

    /// Takes one extra request from the budget; `false` if it is spent.
    pub fn try_withdraw(&self) -> bool {
        self.with_account(|account| {
            let allowed = self.allows(account);
            if allowed {
                account.buckets[account.current].1 += 1;
            }
            allowed
        })
    }

    /// Whether an extra request would be granted now, without taking it (a retry checks
    /// before its back-off and withdraws after, so a call cancelled while waiting costs the
    /// budget nothing).
    pub fn has_room(&self) -> bool {
        self.with_account(|account| self.allows(account))
    }

    fn allows(&self, account: &Account) -> bool {
        let (requests, extras) = account.buckets.iter().fold((0u64, 0u64), |(r, e), (dr, de)| (r + dr, e + de));
        (extras as f64) < self.ratio * requests as f64 + self.floor
    }

    /// (requests, extra requests) in the current window.
    pub fn counts(&self) -> (u64, u64) {
        self.with_account(|account| account.buckets.iter().fold((0, 0), |(r, e), (dr, de)| (r + dr, e + de)))
    }

    fn with_account<T>(&self, f: impl FnOnce(&mut Account) -> T) -> T {
        // A panic while holding the lock leaves plain counters behind: keep using them.
        let mut account = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        account.advance(Instant::now());
        f(&mut account)
    }
}

impl Account {
    /// Moves the current bucket to `now`'s second, clearing the seconds that passed.
    fn advance(&mut self, now: Instant) {
        let second = now.saturating_duration_since(self.origin).as_secs();
        let passed = second.saturating_sub(self.current_second).min(self.buckets.len() as u64);
        for _ in 0..passed {
            self.current = (self.current + 1) % self.buckets.len();
            self.buckets[self.current] = (0, 0);
        }
        self.current_second = self.current_second.max(second);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn extra_requests_are_capped_at_the_ratio_plus_the_floor() {
        let budget = RetryBudget::new(0.2, 1.0, Duration::from_secs(10));
        for _ in 0..100 {
            budget.deposit();
        }
        // 20 % of 100 plus 1/s × 10 s.
        let granted = (0..100).filter(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 30);
        // The window slides: after 10 s the old requests and retries no longer count.
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(budget.counts(), (0, 0));
        assert_eq!((0..100).filter(|_| budget.try_withdraw()).count(), 10, "the floor alone");
    }
}
