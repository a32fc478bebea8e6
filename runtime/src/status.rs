//! The snapshot of the core behind `/readyz` and `/metrics`.
//!
//! Both routes need no token, so their cost must not grow with the request rate: a snapshot asks
//! the driver (one message, and the core reads its counters and sessions), and is then reused by
//! every request for [`crate::server::ServerConfig::status_refresh`] (one second in the binary).
//! One refresh runs at a time; requests arriving meanwhile wait for it instead of asking again.
//! Answers say how old their snapshot is (`snapshot_age_ms`, `presence_status_snapshot_age_seconds`).

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::driver::{DriverHandle, Status};

/// The last snapshot and when it was taken.
#[derive(Debug)]
pub(crate) struct StatusCache {
    refresh: Duration,
    last: Mutex<Option<(Instant, Status)>>,
}

impl StatusCache {
    /// Snapshots are reused for `refresh` (zero: a new one for every request).
    pub(crate) fn new(refresh: Duration) -> StatusCache {
        StatusCache { refresh, last: Mutex::new(None) }
    }

    /// A snapshot at most `refresh` old and its age, or `None` once the driver has stopped.
    pub(crate) async fn get(&self, driver: &DriverHandle) -> Option<(Status, Duration)> {
        let mut last = self.last.lock().await;
        if let Some((at, status)) = &*last {
            let age = at.elapsed();
            if age < self.refresh {
                return Some((status.clone(), age));
            }
        }
        let status = driver.status().await?;
        *last = Some((Instant::now(), status.clone()));
        Some((status, Duration::ZERO))
    }
}
