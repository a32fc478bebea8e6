//! Wall-clock time as the product stores it, and waiting for a condition with a deadline.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use presence_core::time::UnixMillis;

/// Now, in Unix epoch milliseconds (the unit of every last_seen).
pub fn now_ms() -> i64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock before 1970");
    i64::try_from(d.as_millis()).expect("clock beyond i64 millis")
}

/// The fixed-width RFC 3339 form (`2024-01-15T09:42:00.000Z`) of `ms`.
pub fn rfc3339(ms: i64) -> String {
    UnixMillis(ms).to_rfc3339()
}

/// Parses the fixed-width RFC 3339 form; panics on anything else (the schema allows nothing else).
pub fn parse_rfc3339(s: &str) -> i64 {
    UnixMillis::parse_rfc3339(s).unwrap_or_else(|| panic!("not a fixed-width RFC 3339 time: {s:?}")).0
}

/// Polls `check` every 20 ms until it returns `Ok`, or panics after `limit` naming `what` and the
/// last `Err` (the state seen). Use instead of fixed sleeps.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(why) => why,
        };
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}; last state: {last}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts `actual` is within `tolerance` ms of `expected`, naming both in RFC 3339 on failure.
#[track_caller]
pub fn assert_close(what: &str, actual: i64, expected: i64, tolerance: i64) {
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: {} ({actual}) is {} ms from the expected {} ({expected}); tolerance {tolerance} ms",
        rfc3339(actual),
        actual - expected,
        rfc3339(expected),
    );
}
