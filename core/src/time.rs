//! Time as the core sees it: handed in with every input, never read from the OS.
//!
//! Two clocks come in together ([`Now`]): a monotonic one for deadlines ([`MonoTime`]) and the wall
//! clock for the last_seen values users see ([`UnixMillis`]). Keeping them apart is what lets the
//! core survive wall-clock steps: deadlines never move when an operator (or NTP) steps the clock.

use std::fmt;
use std::time::Duration;

use time::format_description::FormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// A point on a monotonic clock, in nanoseconds since an origin chosen by the driver.
///
/// Only differences between two `MonoTime`s mean anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MonoTime(u64);

impl MonoTime {
    /// The driver's origin.
    pub const ZERO: MonoTime = MonoTime(0);

    /// A time `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        MonoTime(nanos)
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating at the far future.
    pub fn saturating_add(self, d: Duration) -> MonoTime {
        MonoTime(self.0.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
    }

    /// `self - earlier`, zero if `earlier` is later.
    pub fn since(self, earlier: MonoTime) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// A wall-clock instant: milliseconds since the Unix epoch, UTC. The unit of every stored last_seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMillis(pub i64);

/// RFC 3339 with exactly three fractional digits and a `Z`: fixed width, so string order is time order.
const RFC3339_MILLIS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// The first instant that formats as a fixed-width RFC 3339 string (`1970-01-01T00:00:00.000Z`).
pub const MIN_WIRE_MILLIS: i64 = 0;
/// The last instant that formats as a fixed-width RFC 3339 string (`9999-12-31T23:59:59.999Z`).
pub const MAX_WIRE_MILLIS: i64 = 253_402_300_799_999;

impl UnixMillis {
    /// Clamps into the range the wire format can represent (years 1970 to 9999).
    pub fn clamp_to_wire(self) -> UnixMillis {
        UnixMillis(self.0.clamp(MIN_WIRE_MILLIS, MAX_WIRE_MILLIS))
    }

    /// `self + d`, saturating.
    pub fn saturating_add(self, d: Duration) -> UnixMillis {
        UnixMillis(self.0.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
    }

    /// Formats as `2024-01-15T09:42:00.000Z` (values outside 1970..=9999 are clamped first).
    pub fn to_rfc3339(self) -> String {
        let ms = self.clamp_to_wire().0;
        let nanos = i128::from(ms) * 1_000_000;
        // In range by construction of the clamp above.
        match OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| t.format(RFC3339_MILLIS).ok())
        {
            Some(s) => s,
            None => String::from("1970-01-01T00:00:00.000Z"),
        }
    }

    /// Parses exactly the fixed-width form `to_rfc3339` writes; anything else is `None`.
    pub fn parse_rfc3339(s: &str) -> Option<UnixMillis> {
        if s.len() != 24 {
            return None;
        }
        let t = PrimitiveDateTime::parse(s, RFC3339_MILLIS).ok()?.assume_utc();
        let ms = t.unix_timestamp_nanos() / 1_000_000;
        let ms = i64::try_from(ms).ok()?;
        (MIN_WIRE_MILLIS..=MAX_WIRE_MILLIS).contains(&ms).then_some(UnixMillis(ms))
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// Both clocks, read once by the driver and handed in with an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, for deadlines.
    pub mono: MonoTime,
    /// Wall-clock time, for last_seen values. May jump in either direction.
    pub wall: UnixMillis,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_fixed_width_and_round_trips() {
        let t = UnixMillis(1_705_311_720_000);
        assert_eq!(t.to_rfc3339(), "2024-01-15T09:42:00.000Z");
        assert_eq!(UnixMillis::parse_rfc3339("2024-01-15T09:42:00.000Z"), Some(t));
        assert_eq!(UnixMillis(5).to_rfc3339(), "1970-01-01T00:00:00.005Z");
        assert_eq!(UnixMillis(-5).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(UnixMillis(i64::MAX).to_rfc3339(), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn rejects_other_forms() {
        for s in [
            "2024-01-15T09:42:00Z",
            "2024-01-15T09:42:00.000+00:00",
            "2024-01-15 09:42:00.000Z",
            "2024-13-15T09:42:00.000Z",
            "2024-01-15T09:42:00.0000Z",
            "",
        ] {
            assert_eq!(UnixMillis::parse_rfc3339(s), None, "{s}");
        }
    }
}
