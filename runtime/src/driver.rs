//! The driver: the one task that owns the core.
//!
//! Everything that happens (a connection opening, a frame, a pong, a close, a store result, a
//! registry restart, a deadline) arrives here as a message, is fed to the core with the time it was
//! handled, and the core's effects are executed: frames go to the connection's outbox, store
//! operations are spawned on their executor and their results come back to this loop. One owner
//! means no locks around presence state, and the order of inputs is the order the core sees.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use presence_core::frame::{Encoding, ErrorCode, PresenceEntry};
use presence_core::store::{EffectId, RegistryOp, StoreError, StoreOp, StoreOutput};
use presence_core::time::{MonoTime, UnixMillis};
use presence_core::user::{SessionId, UserId};
use presence_core::{ConnId, Effect, Input, LookupError, LookupId, OutMessage, Presence, Scopes};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use crate::auth::Auth;
use crate::clock::{MonoOrigin, WallClock};
use crate::metrics::Metrics;
use crate::privacy::PrivacyCache;
use crate::proofs::{self, Proofs};
use crate::store::{DurableStore, Notice, RegistryStore};

/// What a connection task is told to do.
#[derive(Debug)]
pub enum Outbound {
    /// Send this message.
    Message(OutMessage),
    /// Send a close frame with this code and reason, then stop.
    Close(u16, &'static str),
}

/// Messages to the driver.
#[derive(Debug)]
pub(crate) enum ToDriver {
    Open {
        conn: ConnId,
        user: UserId,
        session: SessionId,
        expires: Option<UnixMillis>,
        scopes: Scopes,
        outbox: futures_channel::mpsc::Sender<Outbound>,
    },
    Message {
        conn: ConnId,
        encoding: Encoding,
        payload: Vec<u8>,
    },
    Closed {
        conn: ConnId,
        graceful: bool,
    },
    /// The connection's task closed it for breaking its frame rate or message size.
    PolicyClosed {
        conn: ConnId,
    },
    Lookup {
        user: UserId,
        users: Vec<UserId>,
        read_all: bool,
        reply: oneshot::Sender<LookupResult>,
    },
    /// `user`'s privacy settings or contacts changed (this server's API took the change).
    PrivacyChanged(UserId),
    Status(oneshot::Sender<Status>),
    Shutdown,
}

/// The answer to a lookup: presence entries, or why there are none.
pub(crate) type LookupResult = Result<Vec<PresenceEntry>, LookupError>;

/// A store result on its way back to the driver.
struct StoreDone {
    id: EffectId,
    result: Result<StoreOutput, StoreError>,
}

// `Status` lives with its reader, `metrics`, so the two modules do not import each other.
pub use crate::metrics::Status;

/// Tunables of the driver itself (the core's are in `presence_core::Config`).
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Registry operations running at once; more wait for a slot.
    pub registry_concurrency: usize,
    /// Durable-store operations running at once; more wait for a slot.
    pub durable_concurrency: usize,
    /// After shutdown starts, how long to keep flushing pending writes before giving up.
    pub shutdown_timeout: Duration,
    /// Seed for the core's retry jitter.
    pub seed: u64,
}

/// The stores a driver runs against.
#[derive(Clone)]
pub struct Stores {
    /// The registry (Redis, or in-process).
    pub registry: Arc<dyn RegistryStore>,
    /// The durable store (DynamoDB, or redb).
    pub durable: Arc<dyn DurableStore>,
    /// Privacy settings and contacts, through this server's cache.
    pub privacy: Arc<PrivacyCache>,
}

/// A cloneable handle to the driver.
#[derive(Clone, Debug)]
pub(crate) struct DriverHandle {
    tx: mpsc::Sender<ToDriver>,
    proofs: Arc<Proofs>,
    origin: MonoOrigin,
}

impl DriverHandle {
    /// Records that `conn` proved alive at `at` (a pong or a ping), for the driver to take in its
    /// next batch ([`crate::proofs`]): no message, no wake-up.
    pub(crate) fn proof_of_life(&self, conn: ConnId, at: Instant, slot: &mut proofs::Slot) {
        self.proofs.record(conn, self.origin.mono(at), slot);
    }

    /// Sends a message; false if the driver has stopped.
    pub(crate) async fn send(&self, msg: ToDriver) -> bool {
        self.tx.send(msg).await.is_ok()
    }

    /// A snapshot of the core, or `None` if the driver has stopped.
    pub(crate) async fn status(&self) -> Option<Status> {
        let (tx, rx) = oneshot::channel();
        self.send(ToDriver::Status(tx)).await.then_some(())?;
        rx.await.ok()
    }

    /// Presence of `users` from outside any connection, asked by `user` (whose budget pays; the
    /// answer is `user`'s view unless `read_all`).
    pub(crate) async fn lookup(&self, user: UserId, users: Vec<UserId>, read_all: bool) -> LookupResult {
        let (reply, rx) = oneshot::channel();
        let down = || LookupError {
            code: ErrorCode::Unavailable,
            message: "server is shutting down".to_owned(),
            retry_after: None,
        };
        if !self.send(ToDriver::Lookup { user, users, read_all, reply }).await {
            return Err(down());
        }
        rx.await.unwrap_or_else(|_| Err(down()))
    }
}

/// Inbound queue length: connection tasks wait (and stop reading their sockets) when it is full.
const INBOX: usize = 8_192;
/// Messages queued for one connection; a client that does not read falls behind and is closed.
pub(crate) const OUTBOX: usize = 64;

pub(crate) struct Driver {
    core: Presence,
    /// Verifies the tokens of `auth` frames ([`Effect::VerifyToken`]).
    auth: Auth,
    origin: MonoOrigin,
    /// Proofs of life recorded by the connection tasks, and the buffer their batch is taken into.
    proofs: Arc<Proofs>,
    proof_batch: Vec<(ConnId, MonoTime)>,
    clock: Arc<dyn WallClock>,
    stores: Stores,
    registry_slots: Arc<Semaphore>,
    durable_slots: Arc<Semaphore>,
    /// Privacy reads (mostly cache hits) never wait behind a durable-write backlog.
    privacy_slots: Arc<Semaphore>,
    outboxes: HashMap<ConnId, futures_channel::mpsc::Sender<Outbound>>,
    lookups: HashMap<LookupId, oneshot::Sender<LookupResult>>,
    next_lookup: u64,
    inbox: mpsc::Receiver<ToDriver>,
    done_tx: mpsc::UnboundedSender<StoreDone>,
    done_rx: mpsc::UnboundedReceiver<StoreDone>,
    restarts: watch::Receiver<u64>,
    /// Change notices for watched users (`None` once the registry dropped its sender).
    notices: Option<mpsc::UnboundedReceiver<Notice>>,
    metrics: Arc<Metrics>,
    config: DriverConfig,
    shutdown_deadline: Option<Instant>,
}

impl Driver {
    /// A driver and its handle. Run it with [`Driver::run`].
    pub(crate) fn new(
        core: presence_core::Config,
        config: DriverConfig,
        stores: Stores,
        auth: Auth,
        clock: Arc<dyn WallClock>,
        metrics: Arc<Metrics>,
    ) -> (Driver, DriverHandle) {
        let (tx, inbox) = mpsc::channel(INBOX);
        // Unbounded is safe here: store operations in flight are bounded by the core (pending-write
        // cap, queries per connection), and so are their results.
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let mut restarts = stores.registry.restarts();
        restarts.mark_unchanged();
        let notices = stores.registry.notices();
        let origin = MonoOrigin::now();
        let proofs = Arc::new(Proofs::default());
        let driver = Driver {
            core: Presence::new(core, config.seed),
            auth,
            origin,
            proofs: Arc::clone(&proofs),
            proof_batch: Vec::new(),
            clock,
            registry_slots: Arc::new(Semaphore::new(config.registry_concurrency)),
            durable_slots: Arc::new(Semaphore::new(config.durable_concurrency)),
            privacy_slots: Arc::new(Semaphore::new(config.durable_concurrency)),
            stores,
            outboxes: HashMap::new(),
            lookups: HashMap::new(),
            next_lookup: 0,
            inbox,
            done_tx,
            done_rx,
            restarts,
            notices,
            metrics,
            config,
            shutdown_deadline: None,
        };
        (driver, DriverHandle { tx, proofs, origin })
    }

    /// Runs until shutdown has flushed every pending write (or its deadline passed), or every
    /// handle is gone. Returns whether everything was flushed.
    pub(crate) async fn run(mut self) -> bool {
        // One timer for the next deadline, moved only when the deadline moves: a fresh
        // `sleep_until` per turn would register and drop a timer entry for every input.
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        loop {
            let deadline = self.next_deadline();
            if deadline != armed {
                if let Some(at) = deadline {
                    timer.as_mut().reset(at);
                }
                armed = deadline;
            }
            tokio::select! {
                // Store results first: they free capacity and finish queries.
                biased;
                Some(done) = self.done_rx.recv() => {
                    self.feed(Input::StoreDone { id: done.id, result: done.result });
                }
                changed = self.restarts.changed() => match changed {
                    Ok(()) => {
                        warn!(generation = *self.restarts.borrow_and_update(), "registry may have lost its data; registering live sessions again");
                        self.feed(Input::RegistryRestarted);
                    }
                    // The executor is gone; nothing more will change.
                    Err(_) => self.restarts = watch::channel(0).1,
                },
                notice = recv_opt(&mut self.notices) => match notice {
                    Some(Notice::Changed(user)) => self.feed(Input::Changed { user }),
                    Some(Notice::PrivacyChanged(user)) => self.privacy_changed(user),
                    Some(Notice::Resync) => {
                        // Privacy notices may be among the lost: nothing cached may be kept.
                        self.stores.privacy.invalidate_all();
                        self.feed(Input::Resync);
                    }
                    None => self.notices = None,
                },
                msg = self.inbox.recv() => match msg {
                    Some(msg) => self.on_message(msg),
                    None => {
                        if self.shutdown_deadline.is_none() {
                            self.start_shutdown();
                        }
                    }
                },
                () = &mut timer, if armed.is_some() => {
                    // Fired: armed again next turn, even for the same instant.
                    armed = None;
                    self.feed(Input::Timeout);
                }
            }
            if let Some(limit) = self.shutdown_deadline {
                if self.core.is_idle() {
                    info!("shutdown: every last_seen recorded");
                    return true;
                }
                if Instant::now() >= limit {
                    let pending = self.core.pending_writes();
                    warn!(pending, "shutdown deadline passed with writes pending");
                    return false;
                }
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let core = self.core.poll_timeout().map(|t| self.origin.instant(t));
        match (core, self.shutdown_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_message(&mut self, msg: ToDriver) {
        match msg {
            ToDriver::Open { conn, user, session, expires, scopes, outbox } => {
                self.outboxes.insert(conn, outbox);
                self.feed(Input::Open { conn, user, session, expires, scopes });
            }
            ToDriver::Message { conn, encoding, payload } => {
                self.feed(Input::Message { conn, encoding, payload: &payload })
            }
            ToDriver::Closed { conn, graceful } => {
                self.outboxes.remove(&conn);
                self.feed(Input::Closed { conn, graceful });
            }
            ToDriver::PolicyClosed { conn } => {
                self.outboxes.remove(&conn);
                self.feed(Input::PolicyClosed { conn });
            }
            ToDriver::Lookup { user, users, read_all, reply } => {
                self.next_lookup += 1;
                let lookup = LookupId(self.next_lookup);
                self.lookups.insert(lookup, reply);
                self.feed(Input::Lookup { lookup, user, users, read_all });
            }
            ToDriver::PrivacyChanged(user) => self.privacy_changed(user),
            ToDriver::Status(reply) => {
                self.metrics.status_snapshots.inc();
                let _ = reply.send(self.status());
            }
            ToDriver::Shutdown => self.start_shutdown(),
        }
    }

    /// Drops what the cache holds of `user`, then lets the core re-read what depends on it (in
    /// this order: the core's reads must not be answered from the old entries).
    fn privacy_changed(&mut self, user: UserId) {
        self.stores.privacy.invalidate(&user);
        self.feed(Input::PrivacyChanged { user });
    }

    fn start_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        info!(connections = self.core.connections(), "shutdown: closing connections and recording last_seen");
        self.shutdown_deadline = Some(Instant::now() + self.config.shutdown_timeout);
        self.feed(Input::Shutdown);
    }

    fn status(&self) -> Status {
        Status {
            stats: self.core.stats().clone(),
            readiness: self.core.readiness(),
            connections: self.core.connections(),
            registry_backlog: self.core.registry_backlog(),
            store_ops_in_flight: self.metrics.store_ops_in_flight(),
            watched_users: self.core.watched_users(),
            lookup_budgets: self.core.budget_entries(),
        }
    }

    /// Feeds one input, then executes every effect it produced.
    /// Feeds one input, after the proofs of life recorded since the last one: so a connection's
    /// proofs always reach the core before its next input (its `Closed` above all), and before
    /// any heartbeat check (a `Timeout`).
    fn feed(&mut self, input: Input<'_>) {
        self.proofs.take(&mut self.proof_batch);
        if !self.proof_batch.is_empty() {
            let batch = std::mem::take(&mut self.proof_batch);
            for &(conn, at) in &batch {
                self.feed_one(Input::Alive { conn, at });
            }
            self.proof_batch = batch;
        }
        self.feed_one(input);
    }

    fn feed_one(&mut self, input: Input<'_>) {
        let now = self.origin.read(&*self.clock);
        self.core.handle(now, input);
        while let Some(effect) = self.core.poll_effect() {
            self.execute(effect);
        }
    }

    fn execute(&mut self, effect: Effect) {
        match effect {
            Effect::Send { conn, message } => self.send_to_conn(conn, Outbound::Message(message)),
            Effect::Close { conn, code, reason } => {
                self.send_to_conn(conn, Outbound::Close(code, reason));
                // The core has forgotten the connection; so do we.
                self.outboxes.remove(&conn);
            }
            Effect::LookupDone { lookup, result } => {
                if let Some(reply) = self.lookups.remove(&lookup) {
                    let _ = reply.send(result);
                }
            }
            Effect::VerifyToken { conn, token } => {
                // An HMAC over a few hundred bytes: cheap enough to do inline, and each
                // connection's frame rate bounds how often it can ask.
                let result = self.auth.verify_grant(&token.0).map_err(|e| e.to_string());
                self.feed(Input::TokenChecked { conn, result });
            }
            // Most privacy reads are answered by the cache alone: then inline, as for tokens,
            // instead of a task and a trip through the store-results channel per query.
            Effect::Store { id, op: StoreOp::Privacy(op) } => match self.stores.privacy.read_cached(&op) {
                Some((answer, due)) => {
                    self.metrics.privacy_reads_cached.inc();
                    if !due.is_empty() {
                        // Entries near their TTL: re-read in the background, so that the queries
                        // of the moment they would expire do not all miss at once. Under the
                        // privacy reads' concurrency bound, like every privacy store read.
                        self.metrics.privacy_refreshes.add(due.len() as u64);
                        let (cache, slots) = (self.stores.privacy.clone(), self.privacy_slots.clone());
                        tokio::spawn(async move {
                            if let Ok(_slot) = slots.acquire_owned().await {
                                cache.refresh(due).await;
                            }
                        });
                    }
                    self.feed(Input::StoreDone { id, result: Ok(StoreOutput::Privacy(answer)) });
                }
                None => self.spawn_store(id, StoreOp::Privacy(op)),
            },
            Effect::Store { id, op } => self.spawn_store(id, op),
            Effect::Watch { user } => self.stores.registry.watch(&user),
            Effect::Unwatch { user } => self.stores.registry.unwatch(&user),
        }
    }

    fn send_to_conn(&mut self, conn: ConnId, out: Outbound) {
        let Some(outbox) = self.outboxes.get_mut(&conn) else { return };
        match outbox.try_send(out) {
            Ok(()) => {}
            // The client does not read fast enough to keep OUTBOX messages: end its session now
            // and drop the sender, which tells the task to close the socket.
            Err(e) if e.is_full() => {
                debug!(conn = conn.0, "client too slow; closing");
                self.metrics.slow_consumers.inc();
                self.outboxes.remove(&conn);
                self.feed(Input::Closed { conn, graceful: false });
            }
            // The task has ended; its own `Closed` message (with how it ended) is on its way.
            Err(_) => {
                self.outboxes.remove(&conn);
            }
        }
    }

    fn spawn_store(&self, id: EffectId, op: StoreOp) {
        let done = self.done_tx.clone();
        let metrics = self.metrics.clone();
        let (label, slots) = match &op {
            StoreOp::Registry(_) => (self.stores.registry.kind(), self.registry_slots.clone()),
            StoreOp::Durable(_) => (self.stores.durable.kind(), self.durable_slots.clone()),
            StoreOp::Privacy(_) => ("privacy", self.privacy_slots.clone()),
        };
        let kind = op_kind(&op);
        if let StoreOp::Registry(RegistryOp::Read { users }) = &op {
            metrics.registry_users_read.add(users.len() as u64);
        }
        let (registry, durable) = (self.stores.registry.clone(), self.stores.durable.clone());
        let privacy = self.stores.privacy.clone();
        let span = tracing::debug_span!("store", id = id.0, store = label, op = kind);
        metrics.store_started();
        tokio::spawn(
            async move {
                // A closed semaphore never happens (we never close it); treat it like a free slot.
                let _slot = slots.acquire_owned().await.ok();
                let started = Instant::now();
                let result = match op {
                    StoreOp::Registry(op) => registry.execute(op).await,
                    StoreOp::Durable(op) => durable.execute(op).await,
                    StoreOp::Privacy(op) => privacy.execute(op).await,
                };
                metrics.store_finished(label, kind, started.elapsed(), result.is_ok());
                if let Err(e) = &result {
                    debug!(error = %e, "store operation failed");
                }
                let _ = done.send(StoreDone { id, result });
            }
            .instrument(span),
        );
    }
}

fn op_kind(op: &StoreOp) -> &'static str {
    use presence_core::store::{DurableOp, RegistryOp};
    match op {
        StoreOp::Registry(RegistryOp::Register { .. }) => "register",
        StoreOp::Registry(RegistryOp::EndSession { .. }) => "end_session",
        StoreOp::Registry(RegistryOp::SetLastSeen { .. }) => "set_last_seen",
        StoreOp::Registry(RegistryOp::RecordLastSeen { .. }) => "record_last_seen",
        StoreOp::Registry(RegistryOp::Read { .. }) => "read",
        StoreOp::Registry(RegistryOp::RenewLease { .. }) => "renew_lease",
        StoreOp::Registry(RegistryOp::ClaimReap { .. }) => "claim_reap",
        StoreOp::Registry(RegistryOp::MarkReaped { .. }) => "mark_reaped",
        StoreOp::Registry(RegistryOp::Reap { .. }) => "reap",
        StoreOp::Durable(DurableOp::Write { .. }) => "write",
        StoreOp::Durable(DurableOp::Read { .. }) => "read",
        StoreOp::Privacy(_) => "read",
    }
}

/// The next notice, or never if there is no notice channel.
async fn recv_opt(rx: &mut Option<mpsc::UnboundedReceiver<Notice>>) -> Option<Notice> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
