//! The embedded defaults: what `cargo run` uses when no Redis and no DynamoDB are configured.
//!
//! - [`MemoryRegistry`] plays Redis: per user a map session id -> server id, a cached last_seen
//!   and a pending one, with the same semantics as the Lua scripts (owner-only removal,
//!   max-register, the cache created only from durable values). It starts empty, like a Redis
//!   that lost its data, while the durable store keeps its values: the same cache-fill rule
//!   applies.
//!   It lives in this process, so it can never lose its data while the process runs:
//!   [`RegistryStore::restarts`] never changes. One process is the only server, so its lease
//!   (token 1) is always live and there is never anything to reap. Change notices for
//!   subscriptions are sent in process.
//! - [`RedbDurable`] plays DynamoDB: a [`redb`] file `<data_dir>/presence.redb` with one table
//!   `last_seen: user_id -> i64 epoch millis`. Every write is a max-register (read, compare,
//!   insert) inside a write transaction, so it is atomic against concurrent writers, and its commit
//!   is durable (fsync'd) before the op reports success: last_seen survives a crash or restart of
//!   the process. One thread makes every last_seen write and commits the writes that queued up
//!   meanwhile together (group commit, `super::redb_writer`): a burst of session ends pays one
//!   fsync per batch, not one per end. The same file holds the privacy tables
//!   ([`RedbDurable::privacy`], `crate::privacy::redb`), created here at open.
//!
//! redb's API is blocking, so each read runs on tokio's blocking pool (`spawn_blocking`), each
//! write on the writer thread, and the async side only waits for it, bounded by the op timeout.
//! A timed-out op keeps running (on the pool, or queued on the writer thread) and may still
//! commit; that is the documented meaning of [`StoreError::Timeout`] ("may or may not have been
//! applied").

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use presence_core::store::{
    DurableOp, LeaseToken, LeaseView, RegistryEntry, RegistryOp, StoreError, StoreOutput,
};
use presence_core::time::UnixMillis;
use presence_core::user::UserId;
use redb::{Database, ReadableDatabase, TableDefinition};
use tokio::sync::{mpsc, watch};

use super::redb_writer::Writer;
use super::{with_timeout, DurableStore, Notice, RegistryStore, StoreFuture};
use crate::privacy::redb::RedbPrivacy;

/// One user's registry state, mirroring the Redis keys.
#[derive(Default)]
struct UserState {
    /// `ws:{user}` and `ws_lease:{user}` in one: (session id, lease token), sorted by session id
    /// (so inspection output is ordered). The server id of every session is the registry's own,
    /// and the two Redis hashes always change together here, so neither is stored per session.
    /// A sorted `Vec`, not a map: a user has a handful of sessions, and this is per connection
    /// memory (a `BTreeMap` node alone is over 500 bytes; BENCHMARKS.md, idle memory).
    sessions: Vec<(Box<str>, LeaseToken)>,
    /// `last_seen:{user}`, already clamped to the wire range like the Redis string is. Created
    /// only from durable values, like the Redis cache (docs/STORES.md, "Cache fill").
    last_seen: Option<UnixMillis>,
    /// `last_seen_pending:{user}`: session ends recorded while `last_seen` was absent.
    pending: Option<UnixMillis>,
}

/// In-process registry with the Redis executor's semantics. The default when no Redis is set.
///
/// Every op completes synchronously under a mutex, so it can neither hang nor fail.
pub struct MemoryRegistry {
    /// The value stored for each session this process registers (like `ws:{u}`'s hash values).
    server_id: Arc<str>,
    /// All users with any state. Entries whose hash and last_seen are both empty are removed so
    /// the map stays bounded by the users that were ever seen (like Redis keys).
    users: Mutex<HashMap<UserId, UserState>>,
    /// Kept alive (never sent on) so receivers never observe a closed channel.
    restarts: watch::Sender<u64>,
    /// Watched users: a change to one of them is announced on `notices`.
    watched: Mutex<HashSet<UserId>>,
    notices: mpsc::UnboundedSender<Notice>,
    notices_rx: Mutex<Option<mpsc::UnboundedReceiver<Notice>>>,
}

impl MemoryRegistry {
    /// A new, empty registry. `server_id` is the value stored under each registered session.
    pub fn new(server_id: impl Into<Arc<str>>) -> MemoryRegistry {
        let (notices, rx) = mpsc::unbounded_channel();
        MemoryRegistry {
            server_id: server_id.into(),
            users: Mutex::new(HashMap::new()),
            restarts: watch::Sender::new(0),
            watched: Mutex::new(HashSet::new()),
            notices,
            notices_rx: Mutex::new(Some(rx)),
        }
    }

    /// The sessions registered for `user` (session id, server id), in session id order:
    /// the equivalent of `HGETALL ws:{user}`, for tests and debugging endpoints.
    pub fn sessions(&self, user: &UserId) -> Vec<(String, String)> {
        self.lock()
            .get(user)
            .map(|u| u.sessions.iter().map(|(s, _)| (s.to_string(), self.server_id.to_string())).collect())
            .unwrap_or_default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<UserId, UserState>> {
        // A panic while holding the lock cannot leave a half-applied op behind (each op is a
        // couple of map operations), so a poisoned lock is safe to keep using.
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Announces a change of `user` if it is watched (after the op is applied, like a PUBLISH
    /// after the script).
    fn announce(&self, user: &UserId) {
        if self.watched.lock().unwrap_or_else(|e| e.into_inner()).contains(user) {
            let _ = self.notices.send(Notice::Changed(user.clone()));
        }
    }

    /// Applies one op; the whole semantics of the registry in one place.
    fn apply(&self, op: RegistryOp) -> StoreOutput {
        let mut users = self.lock();
        match op {
            RegistryOp::Register { user, session, token } => {
                let sessions = &mut users.entry(user).or_default().sessions;
                match sessions.binary_search_by(|(s, _)| (**s).cmp(session.as_str())) {
                    Ok(i) => sessions[i].1 = token,
                    Err(i) => {
                        // Most users have one session: room for exactly that, not the 4 a
                        // growing Vec starts with (later growth stays amortized).
                        if sessions.is_empty() {
                            sessions.reserve_exact(1);
                        }
                        sessions.insert(i, (session.as_str().into(), token));
                    }
                }
                StoreOutput::Done
            }
            RegistryOp::EndSession { user, session, last_seen, .. } => {
                let state = users.entry(user.clone()).or_default();
                state.sessions.retain(|(s, _)| **s != *session.as_str());
                state.record_end(last_seen);
                StoreOutput::Done
            }
            RegistryOp::RecordLastSeen { user, last_seen } => {
                users.entry(user).or_default().record_end(last_seen);
                StoreOutput::Done
            }
            RegistryOp::RenewLease { .. } => StoreOutput::Lease(LeaseView {
                token: EMBEDDED_LEASE,
                live: vec![EMBEDDED_LEASE],
                expired: Vec::new(),
            }),
            // One server: no other lease ever expires, so there is never anything to reap.
            RegistryOp::ClaimReap { .. } => StoreOutput::Reap(None),
            RegistryOp::MarkReaped { .. } | RegistryOp::Reap { .. } => StoreOutput::Done,
            RegistryOp::SetLastSeen { user, last_seen } => {
                let state = users.entry(user).or_default();
                max_register(&mut state.last_seen, last_seen);
                if state.pending.is_some_and(|p| Some(p) <= state.last_seen) {
                    state.pending = None;
                }
                StoreOutput::Done
            }
            RegistryOp::Read { users: wanted } => StoreOutput::Registry(
                wanted
                    .iter()
                    .map(|u| match users.get(u) {
                        Some(state) => RegistryEntry {
                            leases: state.sessions.iter().map(|(_, token)| *token).collect(),
                            last_seen: state.last_seen,
                            pending: state.pending,
                        },
                        None => RegistryEntry { leases: Vec::new(), last_seen: None, pending: None },
                    })
                    .collect(),
            ),
        }
    }
}

impl UserState {
    /// A session end: into the cache if present, else into the pending value.
    fn record_end(&mut self, value: UnixMillis) {
        if self.last_seen.is_some() {
            max_register(&mut self.last_seen, value);
        } else {
            max_register(&mut self.pending, value);
        }
    }
}

/// The lease of the only server of an embedded registry.
const EMBEDDED_LEASE: LeaseToken = LeaseToken(1);

/// `slot = max(slot, new)`, with the value clamped to what the Redis string can represent, so the
/// embedded registry answers exactly what Redis would.
fn max_register(slot: &mut Option<UnixMillis>, new: UnixMillis) {
    let new = new.clamp_to_wire();
    if slot.is_none_or(|old| old < new) {
        *slot = Some(new);
    }
}

impl RegistryStore for MemoryRegistry {
    fn execute(&self, op: RegistryOp) -> StoreFuture {
        let changed = match &op {
            RegistryOp::Register { user, .. } | RegistryOp::EndSession { user, .. } => vec![user.clone()],
            RegistryOp::Reap { sessions, .. } => sessions.iter().map(|s| s.0.clone()).collect(),
            _ => Vec::new(),
        };
        let out = self.apply(op);
        for user in &changed {
            self.announce(user);
        }
        Box::pin(async move { Ok(out) })
    }

    fn watch(&self, user: &UserId) {
        self.watched.lock().unwrap_or_else(|e| e.into_inner()).insert(user.clone());
        // In effect at once: read the user once, as after any subscription.
        let _ = self.notices.send(Notice::Changed(user.clone()));
    }

    fn announce_privacy(&self, _user: &UserId) -> StoreFuture {
        // One process: the API that took the change tells its own driver directly.
        Box::pin(std::future::ready(Ok(StoreOutput::Done)))
    }

    fn unwatch(&self, user: &UserId) {
        self.watched.lock().unwrap_or_else(|e| e.into_inner()).remove(user);
    }

    fn notices(&self) -> Option<mpsc::UnboundedReceiver<Notice>> {
        self.notices_rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn restarts(&self) -> watch::Receiver<u64> {
        self.restarts.subscribe()
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

/// The redb table: user id -> last_seen in Unix epoch milliseconds.
const LAST_SEEN: TableDefinition<'static, &str, i64> = TableDefinition::new("last_seen");

/// The file name inside the data directory.
pub const REDB_FILE_NAME: &str = "presence.redb";

/// Why [`RedbDurable::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The thread that makes the file's last_seen writes could not be started.
    #[error("cannot start the writer thread for {path}: {source}")]
    Writer {
        /// The database file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// redb could not open or initialise the file (already open by another process, corrupt,
    /// unreadable, ...).
    #[error("cannot open {path}: {source}")]
    Redb {
        /// The database file.
        path: PathBuf,
        /// redb's error.
        source: redb::Error,
    },
}

/// Durable last_seen store in a local redb file. The default when no DynamoDB is set.
///
/// One process at a time: redb locks the file, so a second open of the same file (by another
/// process, or this one before the first handle is dropped) fails with
/// [`OpenError::Redb`] (`DatabaseAlreadyOpen`).
pub struct RedbDurable {
    /// Shared with the blocking tasks and the writer thread; the file closes when the last clone
    /// drops.
    db: Arc<Database>,
    /// The thread that makes every last_seen write (group commit). Dropping it joins the thread.
    writer: Writer,
    /// Bound on each op, including the wait for a blocking-pool thread or the writer thread.
    op_timeout: Duration,
}

impl RedbDurable {
    /// Default bound on each op.
    pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(2);

    /// Opens (creating if needed) `<data_dir>/presence.redb`, creating `data_dir` too.
    ///
    /// Blocking (file I/O): call it at startup, or from `spawn_blocking`.
    pub fn open(data_dir: &Path) -> Result<RedbDurable, OpenError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|source| OpenError::CreateDir { path: data_dir.to_owned(), source })?;
        RedbDurable::open_file(&data_dir.join(REDB_FILE_NAME))
    }

    /// Opens (creating if needed) the redb file at `path`.
    pub fn open_file(path: &Path) -> Result<RedbDurable, OpenError> {
        let wrap = |source: redb::Error| OpenError::Redb { path: path.to_owned(), source };
        let db = Database::create(path).map_err(|e| wrap(e.into()))?;
        // Create the table up front so reads of a fresh file find it (a read transaction cannot
        // create tables).
        (|| -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            txn.open_table(LAST_SEEN)?;
            crate::privacy::redb::create_tables(&txn)?;
            txn.commit()?;
            Ok(())
        })()
        .map_err(wrap)?;
        let db = Arc::new(db);
        let writer = Writer::start(Arc::clone(&db), LAST_SEEN)
            .map_err(|source| OpenError::Writer { path: path.to_owned(), source })?;
        Ok(RedbDurable { db, writer, op_timeout: RedbDurable::DEFAULT_OP_TIMEOUT })
    }

    /// Sets the bound on each op (default [`RedbDurable::DEFAULT_OP_TIMEOUT`]).
    pub fn with_op_timeout(mut self, op_timeout: Duration) -> RedbDurable {
        self.op_timeout = op_timeout;
        self
    }

    /// The privacy backend in the same file (redb allows one open per file, so it shares this
    /// database), with the same op timeout.
    pub fn privacy(&self) -> RedbPrivacy {
        RedbPrivacy::new(Arc::clone(&self.db), self.op_timeout)
    }
}

/// Reads all users from one read snapshot, in request order.
fn redb_read(db: &Database, users: &[UserId]) -> Result<Vec<Option<UnixMillis>>, redb::Error> {
    let txn = db.begin_read()?;
    let table = txn.open_table(LAST_SEEN)?;
    users.iter().map(|u| Ok(table.get(u.as_str())?.map(|v| UnixMillis(v.value())))).collect()
}

impl DurableStore for RedbDurable {
    fn execute(&self, op: DurableOp) -> StoreFuture {
        let limit = self.op_timeout;
        let users = match op {
            DurableOp::Write { user, last_seen } => {
                // Queued now, so writes apply in the order they were issued.
                let outcome = self.writer.write(user, last_seen);
                return Box::pin(with_timeout(limit, async move {
                    match outcome.await {
                        Ok(Ok(true)) => Ok(StoreOutput::Done),
                        Ok(Ok(false)) => Ok(StoreOutput::Superseded),
                        Ok(Err(e)) => Err(StoreError::Unavailable(e)),
                        Err(_) => Err(StoreError::Unavailable("redb: the writer thread stopped".into())),
                    }
                }));
            }
            DurableOp::Read { users } => users,
        };
        let db = Arc::clone(&self.db);
        Box::pin(with_timeout(limit, async move {
            let task = tokio::task::spawn_blocking(move || redb_read(&db, &users).map(StoreOutput::Durable));
            match task.await {
                Ok(Ok(out)) => Ok(out),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "redb operation failed");
                    Err(StoreError::Unavailable(format!("redb: {e}")))
                }
                // A panic inside redb (or the runtime shutting down): report, never propagate.
                Err(e) => Err(StoreError::Unavailable(format!("redb task failed: {e}"))),
            }
        }))
    }

    fn kind(&self) -> &'static str {
        "redb"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TempDir;
    use presence_core::user::SessionId;

    fn user(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    /// An entry with `sessions` sessions under the embedded lease, a cached and a pending value.
    fn entry(sessions: usize, last_seen: Option<i64>) -> RegistryEntry {
        pending_entry(sessions, last_seen, None)
    }

    fn pending_entry(sessions: usize, last_seen: Option<i64>, pending: Option<i64>) -> RegistryEntry {
        RegistryEntry {
            leases: vec![EMBEDDED_LEASE; sessions],
            last_seen: last_seen.map(UnixMillis),
            pending: pending.map(UnixMillis),
        }
    }

    async fn read(reg: &MemoryRegistry, users: &[&str]) -> Vec<RegistryEntry> {
        let op = RegistryOp::Read { users: users.iter().map(|u| user(u)).collect() };
        match reg.execute(op).await.unwrap() {
            StoreOutput::Registry(v) => v,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn memory_end_session_removes_only_that_session() {
        let reg = MemoryRegistry::new("srv-1");
        for s in ["s1", "s2"] {
            let op =
                RegistryOp::Register { user: user("bob"), session: SessionId::new(s), token: EMBEDDED_LEASE };
            assert_eq!(reg.execute(op).await, Ok(StoreOutput::Done));
        }
        assert_eq!(read(&reg, &["bob"]).await, vec![entry(2, None)]);

        let end = RegistryOp::EndSession {
            user: user("bob"),
            session: SessionId::new("s1"),
            last_seen: UnixMillis(1_000),
            token: None,
        };
        assert_eq!(reg.execute(end.clone()).await, Ok(StoreOutput::Done));
        assert_eq!(reg.sessions(&user("bob")), vec![("s2".to_owned(), "srv-1".to_owned())]);
        // No cached value yet: the end goes to the pending value (the cache is created only from
        // durable values).
        assert_eq!(read(&reg, &["bob"]).await, vec![pending_entry(1, None, Some(1_000))]);

        // Idempotent, and ending the last session makes the user offline.
        assert_eq!(reg.execute(end).await, Ok(StoreOutput::Done));
        let end2 = RegistryOp::EndSession {
            user: user("bob"),
            session: SessionId::new("s2"),
            last_seen: UnixMillis(2_000),
            token: None,
        };
        assert_eq!(reg.execute(end2).await, Ok(StoreOutput::Done));
        assert_eq!(read(&reg, &["bob"]).await, vec![pending_entry(0, None, Some(2_000))]);

        // A durable value fills the cache; the pending value goes once the cache covers it, and
        // ends go to the cache from then on.
        let set = |t: i64| RegistryOp::SetLastSeen { user: user("bob"), last_seen: UnixMillis(t) };
        reg.execute(set(1_500)).await.unwrap();
        assert_eq!(read(&reg, &["bob"]).await, vec![pending_entry(0, Some(1_500), Some(2_000))]);
        reg.execute(set(2_000)).await.unwrap();
        assert_eq!(read(&reg, &["bob"]).await, vec![entry(0, Some(2_000))]);
        let end3 = RegistryOp::EndSession {
            user: user("bob"),
            session: SessionId::new("s3"),
            last_seen: UnixMillis(3_000),
            token: None,
        };
        reg.execute(end3).await.unwrap();
        assert_eq!(read(&reg, &["bob"]).await, vec![entry(0, Some(3_000))]);
    }

    #[tokio::test]
    async fn memory_record_last_seen_goes_where_a_session_end_goes() {
        let reg = MemoryRegistry::new("srv-1");
        let record = |t: i64| RegistryOp::RecordLastSeen { user: user("bob"), last_seen: UnixMillis(t) };
        reg.execute(record(2_000)).await.unwrap();
        reg.execute(record(1_000)).await.unwrap();
        assert_eq!(read(&reg, &["bob"]).await, vec![pending_entry(0, None, Some(2_000))]);
        let set = RegistryOp::SetLastSeen { user: user("bob"), last_seen: UnixMillis(1_500) };
        reg.execute(set).await.unwrap();
        reg.execute(record(3_000)).await.unwrap();
        assert_eq!(read(&reg, &["bob"]).await, vec![pending_entry(0, Some(3_000), Some(2_000))]);
    }

    #[tokio::test]
    async fn memory_last_seen_never_regresses_and_read_keeps_order() {
        let reg = MemoryRegistry::new("srv-1");
        let set = |u: &str, t: i64| RegistryOp::SetLastSeen { user: user(u), last_seen: UnixMillis(t) };
        reg.execute(set("bob", 5_000)).await.unwrap();
        reg.execute(set("bob", 4_000)).await.unwrap();
        // An older EndSession removes the field but must not lower last_seen either.
        reg.execute(RegistryOp::EndSession {
            user: user("bob"),
            session: SessionId::new("gone"),
            last_seen: UnixMillis(3_000),
            token: None,
        })
        .await
        .unwrap();
        reg.execute(set("amy", 7)).await.unwrap();
        // Values outside the wire range are clamped exactly as the Redis string would be.
        reg.execute(set("neg", -5)).await.unwrap();

        assert_eq!(
            read(&reg, &["carl", "bob", "amy", "bob", "neg"]).await,
            vec![
                entry(0, None),
                entry(0, Some(5_000)),
                entry(0, Some(7)),
                entry(0, Some(5_000)),
                entry(0, Some(0)),
            ]
        );
        assert_eq!(*reg.restarts().borrow(), 0);
    }

    async fn durable_read(db: &RedbDurable, users: &[&str]) -> Vec<Option<i64>> {
        let op = DurableOp::Read { users: users.iter().map(|u| user(u)).collect() };
        match db.execute(op).await.unwrap() {
            StoreOutput::Durable(v) => v.into_iter().map(|o| o.map(|t| t.0)).collect(),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Writes; returns whether the value was applied (`Done`) rather than superseded.
    async fn durable_write(db: &RedbDurable, u: &str, t: i64) -> bool {
        let op = DurableOp::Write { user: user(u), last_seen: UnixMillis(t) };
        match db.execute(op).await {
            Ok(StoreOutput::Done) => true,
            Ok(StoreOutput::Superseded) => false,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn redb_max_register_and_persistence_across_reopen() {
        let dir = TempDir::new("redb-persist");
        {
            let db = RedbDurable::open(dir.path()).unwrap();
            assert_eq!(durable_read(&db, &["bob"]).await, vec![None]);
            assert!(durable_write(&db, "bob", 2_000).await);
            assert!(!durable_write(&db, "bob", 1_000).await, "older: refused, still success");
            assert!(durable_write(&db, "amy", 10).await);
            assert_eq!(durable_read(&db, &["bob", "zed", "amy"]).await, vec![Some(2_000), None, Some(10)]);
            // The file is locked while open.
            assert!(matches!(RedbDurable::open(dir.path()), Err(OpenError::Redb { .. })));
        }
        // Reopen: the values survived closing the file, and the max-register still holds.
        let db = RedbDurable::open(dir.path()).unwrap();
        assert!(dir.path().join(REDB_FILE_NAME).is_file());
        assert!(!durable_write(&db, "bob", 1_500).await, "older value: superseded");
        assert_eq!(durable_read(&db, &["amy", "bob"]).await, vec![Some(10), Some(2_000)]);
        assert!(durable_write(&db, "bob", 2_001).await);
        assert_eq!(durable_read(&db, &["bob"]).await, vec![Some(2_001)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redb_concurrent_writes_keep_the_max() {
        let dir = TempDir::new("redb-concurrent");
        let db = Arc::new(RedbDurable::open(dir.path()).unwrap());
        let tasks: Vec<_> = (0..50i64)
            .map(|i| {
                let db = Arc::clone(&db);
                // Interleave high and low values so the max is not simply the last write.
                let t = if i % 2 == 0 { 1_000 + i } else { 1_000 - i };
                tokio::spawn(async move { durable_write(&db, "bob", t).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(durable_read(&db, &["bob"]).await, vec![Some(1_048)]);
    }

    #[tokio::test]
    async fn redb_writes_issued_together_apply_in_order_each_with_its_outcome() {
        let dir = TempDir::new("redb-group");
        let db = RedbDurable::open(dir.path()).unwrap();
        let writes = [("bob", 10), ("bob", 5), ("carol", 7), ("bob", 20), ("bob", 20), ("carol", 3)];
        // Each write is queued when `execute` is called, so they apply in this order whether the
        // writer thread takes them in one batch or several; order decides each outcome.
        let pending: Vec<_> = writes
            .iter()
            .map(|&(u, t)| db.execute(DurableOp::Write { user: user(u), last_seen: UnixMillis(t) }))
            .collect();
        let mut outcomes = Vec::new();
        for p in pending {
            outcomes.push(p.await.unwrap());
        }
        use StoreOutput::{Done, Superseded};
        assert_eq!(outcomes, vec![Done, Superseded, Done, Done, Superseded, Superseded]);
        assert_eq!(durable_read(&db, &["bob", "carol"]).await, vec![Some(20), Some(7)]);
        // Dropping the store joins the writer thread, so the file can be opened again at once.
        drop(db);
        let db = RedbDurable::open(dir.path()).unwrap();
        assert_eq!(durable_read(&db, &["bob", "carol"]).await, vec![Some(20), Some(7)]);
    }
}
