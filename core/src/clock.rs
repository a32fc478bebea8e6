//! The core's view of the wall clock: never goes backwards.
//!
//! The driver's wall clock may step back (NTP, an operator, a VM resume). If the core used it as is,
//! a session that ends after a backward step would record an older last_seen than one that ended
//! before it. Instead the core keeps an anchor (mono, wall): an input wall not behind the last
//! value given out is taken as is (and becomes the anchor); one behind it (a backward step) gives
//! `anchor wall + mono elapsed since anchor` instead, so time keeps advancing at the monotonic rate
//! from where it was until the real wall clock catches up.
//!
//! Why "not behind the last value" rather than "not behind the estimate": the two readings of an
//! input are taken one after the other, so a thread preempted between them anchors a wall that
//! is ahead of its monotonic reading; an estimate from that anchor runs ahead of the real clock by
//! the preemption, for as long as the process lives (a last_seen 11 ms after the close was seen
//! under load). Comparing with the last value given out keeps the output never-decreasing without
//! carrying such an offset.

use crate::time::{MonoTime, Now, UnixMillis};

/// Monotone wall clock fed by the inputs' [`Now`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct WallClock {
    anchor: Option<(MonoTime, UnixMillis)>,
    mono: MonoTime,
    /// The last wall value given out.
    last: UnixMillis,
}

impl WallClock {
    pub(crate) fn new() -> Self {
        WallClock { anchor: None, mono: MonoTime::ZERO, last: UnixMillis(i64::MIN) }
    }

    /// Takes in the input's time; returns (monotonic now, wall now), both non-decreasing.
    pub(crate) fn observe(&mut self, now: Now) -> (MonoTime, UnixMillis) {
        // A monotonic clock that goes back is a driver bug; hold it still rather than trust it.
        self.mono = self.mono.max(now.mono);
        let wall = match self.anchor {
            None => now.wall,
            Some((m, w)) => {
                if now.wall >= self.last {
                    now.wall
                } else {
                    let est = w.saturating_add(self.mono.since(m)).max(self.last);
                    self.last = est;
                    return (self.mono, est);
                }
            }
        };
        self.anchor = Some((self.mono, wall));
        self.last = wall;
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
    fn an_anchor_read_late_adds_no_offset() {
        let mut c = WallClock::new();
        // Preempted between the two reads: the wall is 11 ms ahead of the monotonic reading.
        assert_eq!(c.observe(at(0, 10_011)).1, UnixMillis(10_011));
        // Later readings are the real clock, not anchor + elapsed (10_111).
        assert_eq!(c.observe(at(100, 10_100)).1, UnixMillis(10_100));
        assert_eq!(c.observe(at(200, 10_200)).1, UnixMillis(10_200));
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
