//! What the stand-ins (the Redis host's state, the DynamoDB stand-in) need from the run they are
//! part of: its virtual clock, its trace and its log of live violations ([`Witness`], which the
//! run's [`crate::world::World`] implements), so that they do not depend on the world that owns them.

use std::sync::{Arc, Mutex, MutexGuard};

/// The run as a stand-in sees it.
pub trait Witness: Send + Sync {
    /// Virtual milliseconds since the start of the run.
    fn now(&self) -> u64;
    /// Appends a line to the run's trace.
    fn trace(&self, line: &str);
    /// Records an invariant violation found while the run goes on.
    fn violation(&self, what: String);
}

impl<T: Witness + ?Sized> Witness for Arc<T> {
    fn now(&self) -> u64 {
        (**self).now()
    }

    fn trace(&self, line: &str) {
        (**self).trace(line)
    }

    fn violation(&self, what: String) {
        (**self).violation(what)
    }
}

/// Locks, ignoring poison (a panicking host is reported as a violation anyway).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
