//! The presence state machine: one instance per WS server.
//!
//! Shape (after quinn-proto and str0m): feed an [`Input`] with [`Presence::handle`], then drain
//! [`Presence::poll_effect`] until it returns `None`, then sleep until [`Presence::poll_timeout`]
//! (or the next input) and feed [`Input::Timeout`]. Nothing here reads a clock, touches a socket or
//! draws randomness of its own: the same inputs give the same effects, byte for byte.
//!
//! Submodules: `conn` (connections, heartbeat, frames), `writes` (registry and durable writes with
//! retries and coalescing), `query` (presence reads with the durable fallback), `lease` (this
//! server's lease, the lease view readers filter with, and the reaper of dead servers' sessions),
//! `watch` (subscriptions: live `presence` pushes, the grace against flapping), `budget` (per-user
//! lookup budgets shared by all of a user's connections and its HTTP lookups).

mod budget;
mod conn;
pub(crate) mod io;
mod lease;
mod query;
mod watch;
mod writes;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rustc_hash::FxHashMap;

use crate::clock::WallClock;
use crate::config::Config;
use crate::store::{EffectId, StoreError, StoreOp, StoreOutput};
use crate::time::{MonoTime, Now, UnixMillis};
use crate::user::UserId;

pub use io::{
    close_code, ConnId, Effect, EndReason, Input, LookupError, LookupId, OutMessage, Readiness, Scopes,
    Stats, TokenGrant,
};

use budget::Budgets;
use conn::Conn;
use lease::Lease;
use query::QueryState;
use watch::Watches;
use writes::{DurableWrite, RetryKey, Session, Sid};

/// The presence logic of one WS server. See the module docs for the calling contract.
#[derive(Debug)]
pub struct Presence {
    config: Config,
    /// Retry jitter and the reaper's pick among expired leases; seeded by the caller so runs
    /// replay exactly.
    rng: ChaCha8Rng,
    clock: WallClock,
    /// Time of the input being handled (monotonic, and the never-decreasing wall clock).
    now: MonoTime,
    wall: UnixMillis,
    next_effect: u64,
    next_sid: u64,
    /// Live connections. Looked up on every frame, so hashed with FxHash (the keys are ids the
    /// driver assigns, not attacker-chosen); never iterated into an output without sorting.
    /// Boxed: a hash table keeps up to half its buckets empty, and an empty bucket then costs 16
    /// bytes instead of a `Conn`'s ~200 (idle memory per connection, BENCHMARKS.md).
    conns: FxHashMap<ConnId, Box<Conn>>,
    /// One heartbeat check per connection, (when, conn). Re-armed lazily when it fires, so a frame
    /// costs a hash lookup and two stores, not a tree update.
    timers: BTreeSet<(MonoTime, ConnId)>,
    /// Token expiry deadlines, (when, conn), one per connection whose token expires.
    expiries: BTreeSet<(MonoTime, ConnId)>,
    /// Per-user lookup budgets.
    budgets: Budgets,
    /// Sessions this server owns in the registry: live ones, and ended ones until their end is
    /// acknowledged by the registry.
    sessions: BTreeMap<Sid, Session>,
    /// Per user: live local sessions and the highest last_seen this server asked to record.
    users: HashMap<UserId, UserState>,
    /// Pending durable (DynamoDB) writes, one per user, coalesced to the newest value.
    durable: BTreeMap<UserId, DurableWrite>,
    /// Work ready to be issued (dirty sessions and users).
    dirty_sessions: BTreeSet<Sid>,
    dirty_durable: BTreeSet<UserId>,
    /// Failed writes waiting for their backoff to expire.
    retries: BTreeSet<(MonoTime, RetryKey)>,
    /// What each in-flight store operation was for.
    in_flight: FxHashMap<EffectId, InFlight>,
    /// Ended sessions whose registry end is not yet acknowledged (part of the pending-write count).
    ending_sessions: usize,
    /// Bumped on every registry restart; results of operations issued before are not trusted.
    registry_epoch: u64,
    registry_failing: bool,
    durable_failing: bool,
    /// When a registry / durable-store operation last failed: a failing flag nothing has
    /// confirmed or cleared for `retry_max` is stale (an idle server has nothing to retry).
    registry_failed_at: MonoTime,
    durable_failed_at: MonoTime,
    shutting_down: bool,
    /// Our lease, the view of everyone's, and the reaper.
    lease: Lease,
    /// Subscriptions.
    watches: Watches,
    effects: VecDeque<Effect>,
    stats: Stats,
}

/// What the core remembers about a user while it has local sessions or pending writes.
#[derive(Debug, Default)]
pub(super) struct UserState {
    /// Live local sessions.
    live: u32,
    /// Entries in `sessions` plus one if a durable write is pending: the state is dropped at zero.
    refs: u32,
    /// Highest last_seen this server asked to record; values asked later are never lower.
    pub(super) max_recorded: Option<UnixMillis>,
}

/// What a store operation in flight was for.
#[derive(Debug)]
enum InFlight {
    /// Register (`end == false`) or end of a session, issued in this registry epoch.
    Session { sid: Sid, epoch: u64, end: bool },
    /// Durable write for this user.
    Durable(UserId),
    /// Registry backfill after a cache miss: best effort, the durable store still has the value.
    Backfill,
    /// A query waiting for the privacy read of its asker and targets.
    QueryPrivacy(Box<QueryState>),
    /// A query waiting for the registry read.
    QueryRegistry(Box<QueryState>),
    /// A query waiting for the durable read of the users the registry had no last_seen for.
    QueryDurable(Box<QueryState>, Vec<usize>),
    /// Our lease renewal, sent at this time.
    RenewLease { sent: MonoTime },
    /// A subscription's privacy re-read after a settings change (`watch.rs`).
    WatchPrivacy { conn: ConnId, targets: Vec<UserId> },
    /// The reaper's claim of an expired lease (and its next batch).
    ReapClaim,
    /// The reaper's registry record of its batch's last_seen.
    ReapMark,
    /// The reaper's removal of its batch's entries.
    ReapRemove,
}

impl Presence {
    /// A new state machine. `seed` drives its only randomness: the retry jitter, and which
    /// expired lease the reaper claims next.
    pub fn new(config: Config, seed: u64) -> Self {
        Presence {
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            clock: WallClock::new(),
            now: MonoTime::ZERO,
            wall: UnixMillis(0),
            next_effect: 0,
            next_sid: 0,
            conns: FxHashMap::default(),
            timers: BTreeSet::new(),
            expiries: BTreeSet::new(),
            budgets: Budgets::default(),
            sessions: BTreeMap::new(),
            users: HashMap::new(),
            durable: BTreeMap::new(),
            dirty_sessions: BTreeSet::new(),
            dirty_durable: BTreeSet::new(),
            retries: BTreeSet::new(),
            in_flight: FxHashMap::default(),
            ending_sessions: 0,
            registry_epoch: 0,
            registry_failing: false,
            durable_failing: false,
            registry_failed_at: MonoTime::ZERO,
            durable_failed_at: MonoTime::ZERO,
            shutting_down: false,
            lease: Lease::default(),
            watches: Watches::default(),
            effects: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Feeds one input that happened at `now`. Drain [`Presence::poll_effect`] afterwards.
    pub fn handle(&mut self, now: Now, input: Input<'_>) {
        let (mono, wall) = self.clock.observe(now);
        self.now = mono;
        self.wall = wall;
        match input {
            Input::Open { conn, user, session, expires, scopes } => {
                self.on_open(conn, user, session, expires, scopes)
            }
            Input::Message { conn, encoding, payload } => self.on_message(conn, encoding, payload),
            Input::Alive { conn, at } => self.on_alive(conn, at),
            Input::Closed { conn, graceful } => self.on_closed(conn, graceful),
            Input::PolicyClosed { conn } => self.on_policy_closed(conn),
            Input::TokenChecked { conn, result } => self.on_token_checked(conn, result),
            Input::Lookup { lookup, user, users, read_all } => {
                self.start_lookup(lookup, user, users, read_all)
            }
            Input::Timeout => {}
            Input::StoreDone { id, result } => self.on_store_done(id, result),
            Input::RegistryRestarted => self.on_registry_restarted(),
            Input::Shutdown => self.on_shutdown(),
            Input::Changed { user } => self.on_changed(user),
            Input::Resync => self.on_resync(),
            Input::PrivacyChanged { user } => {
                #[cfg(feature = "planted-bugs")]
                if self.config.planted_bug == Some(crate::config::PlantedBug::NoPrivacyReeval) {
                    return;
                }
                self.on_privacy_changed(&user)
            }
        }
        // Deadlines are checked on every input, not only on `Timeout`: a driver that wakes late
        // still gets the same decisions, and a late `Timeout` is never required for progress.
        self.fire_timers();
        self.issue_writes();
    }

    /// The next effect to execute, or `None` when all are drained.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// When to feed [`Input::Timeout`] next (monotonic), or `None` if nothing is scheduled.
    pub fn poll_timeout(&self) -> Option<MonoTime> {
        let hb = self.timers.first().map(|(t, _)| *t);
        let retry = self.retries.first().map(|(t, _)| *t);
        let grace = self.watches.grace.first().map(|(t, _)| *t);
        let privacy = self.watches.privacy_retry.first().map(|(t, _)| *t);
        let expiry = self.expiries.first().map(|(t, _)| *t);
        let sweep = self.budgets.sweep.first().map(|(t, _)| *t);
        [hb, retry, grace, privacy, expiry, sweep, self.lease_deadline()].into_iter().flatten().min()
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Readiness for `/readyz`.
    pub fn readiness(&self) -> Readiness {
        Readiness {
            accepting: !self.shutting_down && !self.at_capacity(),
            pending_writes: self.pending_writes(),
            max_pending_writes: self.config.max_pending_writes,
            registry_failing: self.registry_failing && self.recent(self.registry_failed_at),
            durable_failing: self.durable_failing && self.recent(self.durable_failed_at),
        }
    }

    /// Pending last_seen writes: ended sessions not yet acknowledged by the registry plus users
    /// whose durable write is not yet acknowledged.
    pub fn pending_writes(&self) -> usize {
        self.ending_sessions + self.durable.len()
    }

    /// Live sessions whose registration the registry has not acknowledged yet (failing store,
    /// or just after a registry restart). O(sessions): for metrics and tests, not hot paths.
    pub fn registry_backlog(&self) -> usize {
        self.sessions.values().filter(|s| s.is_unregistered()).count()
    }

    /// Live connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Nothing left to do: no connection, no pending write, no store operation in flight.
    /// The driver's shutdown waits for this (up to its deadline).
    pub fn is_idle(&self) -> bool {
        self.conns.is_empty()
            && self.sessions.is_empty()
            && self.durable.is_empty()
            && self.in_flight.is_empty()
    }

    /// Whether the user has a live session on this server.
    pub fn is_locally_online(&self, user: &UserId) -> bool {
        self.users.get(user).is_some_and(|u| u.live > 0)
    }

    /// Whether a failure at `at` is recent enough to still say a store is failing: a failing store
    /// with work pending fails again within `retry_max` (the longest retry delay).
    fn recent(&self, at: MonoTime) -> bool {
        self.now < at.saturating_add(self.config.retry_max)
    }

    fn at_capacity(&self) -> bool {
        self.pending_writes() >= self.config.max_pending_writes
    }

    fn next_effect_id(&mut self) -> EffectId {
        self.next_effect += 1;
        EffectId(self.next_effect)
    }

    fn emit_store(&mut self, op: StoreOp, what: InFlight) -> EffectId {
        let id = self.next_effect_id();
        self.emit_store_as(id, op, what);
        id
    }

    /// [`Presence::emit_store`] with an id taken before (for state that records its own id).
    fn emit_store_as(&mut self, id: EffectId, op: StoreOp, what: InFlight) {
        self.in_flight.insert(id, what);
        self.effects.push_back(Effect::Store { id, op });
    }

    /// Raises a user's recorded maximum and returns the value to record: never below a value this
    /// server already asked to record for the user.
    fn record_value(&mut self, user: &UserId, candidate: UnixMillis) -> UnixMillis {
        let state = self.users.entry(user.clone()).or_default();
        let v = state.max_recorded.map_or(candidate, |m| m.max(candidate));
        state.max_recorded = Some(v);
        v
    }

    fn user_ref(&mut self, user: &UserId) {
        self.users.entry(user.clone()).or_default().refs += 1;
    }

    fn user_unref(&mut self, user: &UserId) {
        if let Some(state) = self.users.get_mut(user) {
            state.refs = state.refs.saturating_sub(1);
            if state.refs == 0 && state.live == 0 {
                self.users.remove(user);
            }
        }
    }

    /// Routes a store result to the part of the machine that issued the op (the in-flight table
    /// says which), then refreshes the readiness flags' time on a failure.
    pub(super) fn on_store_done(&mut self, id: EffectId, result: Result<StoreOutput, StoreError>) {
        let Some(what) = self.in_flight.remove(&id) else {
            return;
        };
        let failed = result.is_err();
        match what {
            InFlight::Session { sid, epoch, end } => {
                self.registry_failing = result.is_err();
                self.session_done(sid, epoch, end, result.is_ok());
            }
            InFlight::Durable(user) => self.durable_done(user, result),
            InFlight::Backfill => self.registry_failing = result.is_err(),
            InFlight::QueryPrivacy(q) => self.query_privacy_done(*q, result),
            InFlight::WatchPrivacy { conn, targets } => self.watch_privacy_done(conn, id, targets, result),
            InFlight::QueryRegistry(q) => {
                self.registry_failing = result.is_err();
                self.query_registry_done(*q, result);
            }
            InFlight::QueryDurable(q, missing) => {
                self.durable_failing = result.is_err();
                self.query_durable_done(*q, missing, result);
            }
            InFlight::RenewLease { sent } => self.lease_renewed(sent, result),
            InFlight::ReapClaim => self.reap_claimed(result),
            InFlight::ReapMark => self.reap_marked(result),
            InFlight::ReapRemove => self.reap_removed(result),
        }
        // The handlers set the failing flags; a failure refreshes their time (`readiness`).
        if failed {
            if self.registry_failing {
                self.registry_failed_at = self.now;
            }
            if self.durable_failing {
                self.durable_failed_at = self.now;
            }
        }
    }

    fn fire_timers(&mut self) {
        while let Some(&(at, conn)) = self.timers.first() {
            if at > self.now {
                break;
            }
            self.timers.pop_first();
            self.check_heartbeat(conn);
        }
        while let Some(&(at, conn)) = self.expiries.first() {
            if at > self.now {
                break;
            }
            self.expiries.pop_first();
            self.check_expiry(conn, at);
        }
        while let Some(&(at, ref user)) = self.budgets.sweep.first() {
            if at > self.now {
                break;
            }
            let user = user.clone();
            self.budgets.sweep.pop_first();
            self.sweep_due(&user);
        }
        while let Some(&(at, ref key)) = self.retries.first() {
            if at > self.now {
                break;
            }
            let key = key.clone();
            self.retries.pop_first();
            self.retry_due(key);
        }
        while let Some(&(at, ref user)) = self.watches.grace.first() {
            if at > self.now {
                break;
            }
            let user = user.clone();
            self.watches.grace.pop_first();
            self.grace_due(user);
        }
        while let Some(&(at, conn)) = self.watches.privacy_retry.first() {
            if at > self.now {
                break;
            }
            self.watches.privacy_retry.pop_first();
            self.privacy_retry_due(conn);
        }
        self.lease_tick();
    }
}

#[cfg(test)]
mod tests;
