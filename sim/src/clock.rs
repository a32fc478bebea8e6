//! A server's wall clock: the sim's virtual time, plus an offset the nemesis sets and steps.
//!
//! The offset stays within `±bounds::MAX_SKEW_MS` of true time. Stepping it moves the clock
//! forwards or backwards at once (an NTP step, an operator); the core's monotonic clock
//! (tokio's virtual `Instant`) is not affected, as on a real machine.

use std::sync::atomic::{AtomicI64, Ordering};

use presence_core::time::UnixMillis;
use presence_runtime::clock::WallClock;

use crate::params::EPOCH_MS;

/// One server's clock. Survives the server's crashes (it is the machine's clock).
#[derive(Debug)]
pub struct SimClock {
    offset_ms: AtomicI64,
    /// Largest offset ever set.
    max_offset: AtomicI64,
    /// Largest value ever returned (the oracle's bound on what the core may believe "now" is).
    max_returned: AtomicI64,
}

impl SimClock {
    pub(crate) fn new() -> SimClock {
        SimClock {
            offset_ms: AtomicI64::new(0),
            max_offset: AtomicI64::new(i64::MIN),
            max_returned: AtomicI64::new(i64::MIN),
        }
    }

    /// Sets the offset from true time.
    pub fn set_offset(&self, ms: i64) {
        self.offset_ms.store(ms, Ordering::Relaxed);
        self.max_offset.fetch_max(ms, Ordering::Relaxed);
    }

    /// The largest offset this clock ever had. After a backward step the core extrapolates from
    /// its last reading at the monotonic rate, so its "now" is at most true time + this.
    pub fn max_offset(&self) -> i64 {
        self.max_offset.load(Ordering::Relaxed)
    }

    /// The offset from true time.
    pub fn offset(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    /// The largest wall time this clock has returned.
    pub fn max_returned(&self) -> i64 {
        self.max_returned.load(Ordering::Relaxed)
    }
}

impl WallClock for SimClock {
    fn wall(&self) -> UnixMillis {
        let t = turmoil::sim_elapsed().unwrap_or_default().as_millis() as i64;
        let v = EPOCH_MS + t + self.offset();
        self.max_returned.fetch_max(v, Ordering::Relaxed);
        UnixMillis(v)
    }
}
