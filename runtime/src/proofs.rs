//! Proofs of life from the connection tasks, batched for the driver.
//!
//! A pong (or a client's ping) proves its connection alive, but the core only needs to hear of it
//! before the connection's next input and before its heartbeat deadline, 30 s on by default
//! (`presence_core::Input::Alive`). Sending each one through the driver's channel would wake the
//! driver once per connection and ping interval, which is most of what an idle connection costs.
//! So a connection task records the proof here, with the time it arrived, and moves on; the driver
//! takes the whole batch whenever it wakes for anything else, before it handles that (a
//! connection's `Closed` therefore always comes after its proofs), and at the latest at each
//! heartbeat check, which the core puts on a grid (`Config::heartbeat_check_step`) so that one
//! wake-up serves many connections.
//!
//! Bounded: a connection holds at most one entry per batch (a later proof overwrites its earlier
//! one in place), so a batch never holds more entries than there are connections.

use std::sync::Mutex;

use presence_core::time::MonoTime;
use presence_core::ConnId;

/// The batch shared by the connection tasks and the driver.
#[derive(Debug, Default)]
pub(crate) struct Proofs {
    batch: Mutex<Batch>,
}

#[derive(Debug, Default)]
struct Batch {
    /// Bumped each time the driver takes the batch: a connection's slot from an older batch is
    /// void.
    generation: u64,
    entries: Vec<(ConnId, MonoTime)>,
}

/// A connection's place in the current batch, kept by its task.
#[derive(Debug, Default)]
pub(crate) struct Slot(Option<(u64, usize)>);

impl Proofs {
    /// Records that `conn` proved alive at `at`.
    pub(crate) fn record(&self, conn: ConnId, at: MonoTime, slot: &mut Slot) {
        let mut b = self.batch.lock().unwrap_or_else(|e| e.into_inner());
        match slot.0 {
            Some((generation, i)) if generation == b.generation => b.entries[i].1 = at,
            _ => {
                slot.0 = Some((b.generation, b.entries.len()));
                b.entries.push((conn, at));
            }
        }
    }

    /// Moves the batch into `into` (cleared first) and starts a new one.
    pub(crate) fn take(&self, into: &mut Vec<(ConnId, MonoTime)>) {
        into.clear();
        let mut b = self.batch.lock().unwrap_or_else(|e| e.into_inner());
        if b.entries.is_empty() {
            return;
        }
        b.generation += 1;
        std::mem::swap(&mut b.entries, into);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> MonoTime {
        MonoTime::from_nanos(ms * 1_000_000)
    }

    #[test]
    fn a_connection_holds_one_entry_per_batch_with_its_latest_proof() {
        let proofs = Proofs::default();
        let (mut a, mut b) = (Slot::default(), Slot::default());
        proofs.record(ConnId(1), at(10), &mut a);
        proofs.record(ConnId(2), at(11), &mut b);
        proofs.record(ConnId(1), at(12), &mut a);
        let mut out = Vec::new();
        proofs.take(&mut out);
        assert_eq!(out, vec![(ConnId(1), at(12)), (ConnId(2), at(11))]);
        // A new batch: the old slots are void.
        proofs.record(ConnId(2), at(20), &mut b);
        proofs.record(ConnId(1), at(21), &mut a);
        proofs.take(&mut out);
        assert_eq!(out, vec![(ConnId(2), at(20)), (ConnId(1), at(21))]);
        proofs.take(&mut out);
        assert_eq!(out, vec![]);
        // An empty take starts no new batch: a slot taken before it still holds.
        proofs.record(ConnId(1), at(30), &mut a);
        proofs.take(&mut out);
        proofs.take(&mut out);
        proofs.record(ConnId(1), at(31), &mut a);
        proofs.record(ConnId(1), at(32), &mut a);
        proofs.take(&mut out);
        assert_eq!(out, vec![(ConnId(1), at(32))]);
    }
}
