//! Token buckets on the monotonic clock: the core's per-user lookup budgets and per-connection
//! frame backstop, and the runtime's per-connection frame rate (checked in each connection's task).

use std::time::Duration;

use crate::time::MonoTime;

/// A token bucket holding up to `burst` tokens, refilled at `rate` tokens per second.
/// Kept in micro-tokens so refills of a few nanoseconds are not lost to rounding. The rate and
/// burst are passed to each call (they live in the configuration, not in every bucket).
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    micro_tokens: u64,
    last: MonoTime,
}

const MICRO: u64 = 1_000_000;

impl TokenBucket {
    /// A full bucket.
    pub fn full(burst: u32, now: MonoTime) -> Self {
        TokenBucket { micro_tokens: u64::from(burst) * MICRO, last: now }
    }

    /// The micro-tokens held at `now` (refilled, capped at the burst), without changing the bucket.
    fn level(&self, rate: u32, burst: u32, now: MonoTime) -> u128 {
        let elapsed_ns = now.since(self.last).as_nanos();
        // rate tokens/s = rate * 1e6 micro-tokens per 1e9 ns = rate / 1000 micro-tokens per ns.
        let refill = elapsed_ns.saturating_mul(u128::from(rate)) / 1_000;
        let cap = u128::from(burst) * u128::from(MICRO);
        (u128::from(self.micro_tokens) + refill).min(cap)
    }

    /// Takes `n` tokens if there are that many; returns whether it did.
    pub fn try_take(&mut self, n: u64, rate: u32, burst: u32, now: MonoTime) -> bool {
        let tokens = self.level(rate, burst, now);
        self.last = self.last.max(now);
        let need = u128::from(n) * u128::from(MICRO);
        if tokens >= need {
            self.micro_tokens = (tokens - need) as u64;
            true
        } else {
            self.micro_tokens = tokens as u64;
            false
        }
    }

    /// How long from `now` until `n` tokens are there (zero if they are now). `n` above the
    /// burst is counted as the burst (a full bucket is the most there ever is). Rounded up to
    /// the nanosecond; `Duration::MAX` at rate zero.
    pub fn wait_for(&self, n: u64, rate: u32, burst: u32, now: MonoTime) -> Duration {
        let have = self.level(rate, burst, now);
        let need = u128::from(n.min(u64::from(burst))) * u128::from(MICRO);
        if have >= need {
            return Duration::ZERO;
        }
        if rate == 0 {
            return Duration::MAX;
        }
        let ns = ((need - have) * 1_000).div_ceil(u128::from(rate));
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// When the bucket will be full again (at or before `now` if it is).
    pub fn full_at(&self, rate: u32, burst: u32, now: MonoTime) -> MonoTime {
        let now = self.last.max(now);
        now.saturating_add(self.wait_for(u64::from(burst), rate, burst, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let t0 = MonoTime::ZERO;
        let mut b = TokenBucket::full(3, t0);
        assert!(b.try_take(1, 10, 3, t0));
        assert!(b.try_take(2, 10, 3, t0));
        assert!(!b.try_take(1, 10, 3, t0));
        // 10/s: one token per 100 ms.
        let t = MonoTime::from_nanos(99_000_000);
        assert!(!b.try_take(1, 10, 3, t));
        let t = MonoTime::from_nanos(100_000_000);
        assert!(b.try_take(1, 10, 3, t));
        // Never more than the burst.
        let t = MonoTime::from_nanos(100_000_000_000);
        assert!(b.try_take(3, 10, 3, t));
        assert!(!b.try_take(1, 10, 3, t));
    }

    #[test]
    fn wait_and_full_at() {
        let t0 = MonoTime::ZERO;
        let mut b = TokenBucket::full(10, t0);
        assert_eq!(b.wait_for(10, 4, 10, t0), Duration::ZERO);
        assert!(b.try_take(10, 4, 10, t0));
        // 4/s: 250 ms a token.
        assert_eq!(b.wait_for(1, 4, 10, t0), Duration::from_millis(250));
        assert_eq!(b.wait_for(3, 4, 10, MonoTime::from_nanos(100_000_000)), Duration::from_millis(650));
        // More than the burst waits for a full bucket.
        assert_eq!(b.wait_for(50, 4, 10, t0), Duration::from_millis(2_500));
        assert_eq!(b.full_at(4, 10, t0), MonoTime::from_nanos(2_500_000_000));
        assert_eq!(b.wait_for(1, 0, 10, t0), Duration::MAX);
    }
}
