//! The core's view of the wall clock: never goes backwards.
//!
//! The driver's wall clock may step back (NTP, an operator, a VM resume). If the core used it as is,
//! a session that ends after a backward step would record an older last_seen than one that ended
//! before it. Instead the core keeps an anchor (mono, wall) and reads the wall clock as
//! `max(input wall, anchor wall + mono elapsed since anchor)`: after a backward step time keeps
//! advancing at the monotonic rate from where it was, until the real wall clock catches up.

use crate::time::{MonoTime, Now, UnixMillis};

/// Monotone wall clock fed by the inputs' [`Now`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct WallClock {
    anchor: Option<(MonoTime, UnixMillis)>,
    mono: MonoTime,
}

impl WallClock {
    pub(crate) fn new() -> Self {
        WallClock { anchor: None, mono: MonoTime::ZERO }
    }

    /// Takes in the input's time; returns (monotonic now, wall now), both non-decreasing.
    pub(crate) fn observe(&mut self, now: Now) -> (MonoTime, UnixMillis) {
        // A monotonic clock that goes back is a driver bug; hold it still rather than trust it.
        self.mono = self.mono.max(now.mono);
        let wall = match self.anchor {
            None => now.wall,
            Some((m, w)) => {
                let est = w.saturating_add(self.mono.since(m));
                if now.wall > est {
                    now.wall
                } else {
                    return (self.mono, est);
                }
            }
        };
        self.anchor = Some((self.mono, wall));
        (self.mono, wall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(ms: u64, wall: i64) -> Now {
        Now { mono: MonoTime::from_nanos(ms * 1_000_000), wall: UnixMillis(wall) }
    }

    #[test]
    fn backward_step_keeps_advancing_at_monotonic_rate() {
        let mut c = WallClock::new();
        assert_eq!(c.observe(at(0, 10_000)).1, UnixMillis(10_000));
        assert_eq!(c.observe(at(100, 10_100)).1, UnixMillis(10_100));
        // Wall clock stepped back an hour.
        assert_eq!(c.observe(at(200, 10_200 - 3_600_000)).1, UnixMillis(10_200));
        assert_eq!(c.observe(at(300, 10_300 - 3_600_000)).1, UnixMillis(10_300));
        // A forward step is taken as is.
        assert_eq!(c.observe(at(400, 20_000)).1, UnixMillis(20_000));
        // Sub-millisecond inputs do not lose time.
        let mut ms = c.observe(at(400, 0)).1;
        for i in 1..=10u64 {
            let now = Now { mono: MonoTime::from_nanos(400_000_000 + i * 500_000), wall: UnixMillis(0) };
            ms = c.observe(now).1;
        }
        assert_eq!(ms, UnixMillis(20_005));
        let _ = Duration::ZERO;
    }
}
