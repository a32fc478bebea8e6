//! Token buckets on the monotonic clock: per-connection frame and lookup budgets.

use crate::time::MonoTime;

/// A token bucket holding up to `burst` tokens, refilled at `rate` tokens per second.
/// Kept in micro-tokens so refills of a few nanoseconds are not lost to rounding.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TokenBucket {
    micro_tokens: u64,
    last: MonoTime,
}

const MICRO: u64 = 1_000_000;

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn full(burst: u32, now: MonoTime) -> Self {
        TokenBucket { micro_tokens: u64::from(burst) * MICRO, last: now }
    }

    /// Takes `n` tokens if there are that many; returns whether it did.
    pub(crate) fn try_take(&mut self, n: u64, rate: u32, burst: u32, now: MonoTime) -> bool {
        let elapsed_ns = u128::from(now.since(self.last).as_nanos() as u64);
        // rate tokens/s = rate * 1e6 micro-tokens per 1e9 ns = rate / 1000 micro-tokens per ns.
        let refill = elapsed_ns * u128::from(rate) / 1_000;
        let cap = u128::from(burst) * u128::from(MICRO);
        let tokens = (u128::from(self.micro_tokens) + refill).min(cap);
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
}
