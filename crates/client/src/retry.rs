//! How the client retries: exponential backoff with full jitter, within a total time budget.

use std::time::Duration;

use rand::RngExt;

/// How the client retries a request that failed in a way that may pass (see [`Client`](crate::Client)
/// for which requests are retried, and on which failures).
///
/// The n-th retry (from 0) waits a random time between zero and `min(cap, base · 2ⁿ)` ("full jitter"),
/// or at least the server's `Retry-After` when it sent one. No retry starts once `max_elapsed` has
/// passed since the first attempt, or would start after it: the last error is returned instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The total time budget for one call, retries included. Zero: never retry.
    pub max_elapsed: Duration,
    /// The first retry's largest delay.
    pub base: Duration,
    /// The largest delay of any retry.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    /// 30 s in all, delays from 100 ms doubling up to 5 s.
    fn default() -> Self {
        RetryPolicy {
            max_elapsed: Duration::from_secs(30),
            base: Duration::from_millis(100),
            cap: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// Never retry: every failure is returned at once.
    pub fn none() -> Self {
        RetryPolicy {
            max_elapsed: Duration::ZERO,
            ..RetryPolicy::default()
        }
    }

    /// The delay before retry number `n` (0-based): a random part of `min(cap, base · 2ⁿ)`, or the
    /// server's `retry_after` plus a little jitter when it gave one.
    pub fn delay(&self, n: u32, retry_after: Option<Duration>) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(2u32.saturating_pow(n.min(31)))
            .min(self.cap);
        match retry_after {
            // Honour the server's word, spreading the retries of many clients over one base delay.
            Some(ra) => ra + jitter(self.base.min(self.cap)),
            None => jitter(ceiling),
        }
    }
}

/// A uniformly random duration in `[0, max]`.
pub(crate) fn jitter(max: Duration) -> Duration {
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::rng().random_range(0..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_up_to_the_cap_and_honour_retry_after() {
        let p = RetryPolicy::default();
        for _ in 0..100 {
            assert!(p.delay(0, None) <= Duration::from_millis(100));
            assert!(p.delay(3, None) <= Duration::from_millis(800));
            assert!(p.delay(40, None) <= Duration::from_secs(5));
            let d = p.delay(0, Some(Duration::from_secs(2)));
            assert!(d >= Duration::from_secs(2) && d <= Duration::from_millis(2100));
        }
    }
}
