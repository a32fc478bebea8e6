//! Group commit for the embedded durable store ([`super::RedbDurable`]): one thread owns every
//! last_seen write to the redb file and commits, in one write transaction, the writes that arrive
//! within [`LINGER`] of the batch's first one.
//!
//! Why: redb runs one write transaction at a time, and each commit is an fsync. With a transaction
//! per session end, a burst of ends (short connections churning, a mass disconnect) parks a
//! blocking-pool thread per end on redb's write lock and pays one fsync per end. Batched, the
//! burst pays one fsync per batch.
//!
//! Why linger rather than take only what queued during the previous commit: a commit here takes
//! a few hundred microseconds, so at 17,000 ends/s that rule made about 1,350 fsyncs a second
//! (`perf stat -e syscalls:sys_enter_fdatasync` on the churn load). Each fsync is a virtual disk's
//! doorbell (a VM exit) and a wake of this thread; together they cost the churn benchmark about a
//! quarter of its rate (BENCHMARKS.md, churn). Lingering makes it about 80 a second.
//!
//! What does not change: each write is still a max-register, applied in the order the writes were
//! queued, and each reports success only once the commit that holds it is durable. A batch that
//! fails to commit fails every write in it (none of them is durable, and the core retries each).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use presence_core::time::UnixMillis;
use presence_core::user::UserId;
use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

/// The most writes one transaction takes; more wait for the next one. Bounds a transaction's
/// memory and how long one fsync holds back the writes queued behind it.
const MAX_BATCH: usize = 1024;

/// How long a batch waits, after its first write arrives, for more before it commits. It adds at
/// most this much to a write's time to durable, and nothing to what readers see: the registry's
/// record of a session end does not wait for the durable write.
const LINGER: Duration = Duration::from_millis(10);

/// The outcome of one write: whether it was applied (`false`: an equal or newer value was
/// stored), or why its batch did not commit.
pub(super) type WriteResult = Result<bool, String>;

/// One queued write and where its outcome goes.
struct Job {
    user: UserId,
    last_seen: UnixMillis,
    reply: oneshot::Sender<WriteResult>,
}

/// The handle of the writer thread. Dropping it lets the thread finish the writes already queued,
/// then joins it, so the file is closed once the store is dropped (redb allows one open per file).
pub(super) struct Writer {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread over `table` of `db`.
    pub(super) fn start(
        db: Arc<Database>,
        table: TableDefinition<'static, &'static str, i64>,
    ) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new().name("redb-writer".into()).spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                let until = Instant::now() + LINGER;
                while batch.len() < MAX_BATCH {
                    // Disconnected (the store dropped) ends the wait too: the batch commits now.
                    match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                // A panic inside redb fails this batch, not every later write.
                let outcome = catch_unwind(AssertUnwindSafe(|| commit(&db, table, &batch)));
                let outcome = match outcome {
                    Ok(Ok(applied)) => Ok(applied),
                    Ok(Err(e)) => Err(format!("redb: {e}")),
                    Err(_) => Err("redb: the write transaction panicked".to_owned()),
                };
                match outcome {
                    Ok(applied) => {
                        for (job, applied) in batch.into_iter().zip(applied) {
                            let _ = job.reply.send(Ok(applied));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, writes = batch.len(), "redb write batch failed");
                        for job in batch {
                            let _ = job.reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        })?;
        Ok(Writer { tx: Some(tx), thread: Some(thread) })
    }

    /// Queues a max-register write of `last_seen` for `user`, now (so writes apply in the order of
    /// the calls); the receiver gets its outcome once its batch is committed. If the thread is
    /// gone, the receiver reports the sender dropped.
    pub(super) fn write(&self, user: UserId, last_seen: UnixMillis) -> oneshot::Receiver<WriteResult> {
        let (reply, rx) = oneshot::channel();
        if let Some(tx) = &self.tx {
            let _ = tx.send(Job { user, last_seen, reply });
        }
        rx
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writes of `batch`, in order, in one write transaction: whether each was applied. Commits
/// only if one was (nothing to persist: no fsync).
fn commit(
    db: &Database,
    table: TableDefinition<'static, &'static str, i64>,
    batch: &[Job],
) -> Result<Vec<bool>, redb::Error> {
    let txn = db.begin_write()?;
    let applied = {
        let mut table = txn.open_table(table)?;
        let mut applied = Vec::with_capacity(batch.len());
        for job in batch {
            let current = table.get(job.user.as_str())?.map(|v| v.value());
            let newer = current.is_none_or(|old| old < job.last_seen.0);
            if newer {
                table.insert(job.user.as_str(), job.last_seen.0)?;
            }
            applied.push(newer);
        }
        applied
    };
    if applied.contains(&true) {
        txn.commit()?;
    } else {
        txn.abort()?;
    }
    Ok(applied)
}
