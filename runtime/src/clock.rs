//! Clocks the server reads, behind a trait so the simulation can skew and step them.
//!
//! Monotonic time is `tokio::time::Instant` (virtual under turmoil); the wall clock comes from a
//! [`WallClock`]. Nothing else in the runtime reads the time of day.

use presence_core::time::{MonoTime, Now, UnixMillis};
use tokio::time::Instant;

/// The time of day, in Unix milliseconds.
pub trait WallClock: Send + Sync + 'static {
    /// Now, on the wall clock.
    fn wall(&self) -> UnixMillis;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn wall(&self) -> UnixMillis {
        let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        UnixMillis(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// Converts between tokio instants and the core's [`MonoTime`] (nanoseconds since `origin`).
#[derive(Debug, Clone, Copy)]
pub struct MonoOrigin(Instant);

impl MonoOrigin {
    /// Anchors the core's monotonic time at this instant.
    pub fn now() -> Self {
        MonoOrigin(Instant::now())
    }

    /// The core's view of `at`.
    pub fn mono(&self, at: Instant) -> MonoTime {
        MonoTime::from_nanos(
            u64::try_from(at.saturating_duration_since(self.0).as_nanos()).unwrap_or(u64::MAX),
        )
    }

    /// The tokio instant of a core deadline.
    pub fn instant(&self, t: MonoTime) -> Instant {
        self.0 + std::time::Duration::from_nanos(t.as_nanos())
    }

    /// Reads both clocks.
    pub fn read(&self, wall: &dyn WallClock) -> Now {
        Now { mono: self.mono(Instant::now()), wall: wall.wall() }
    }
}
