//! The state every simulated host shares: parameters, the trace, the reference model, the fault log,
//! the Redis host's data, the DynamoDB stand-in and the servers' clocks.
//!
//! Everything runs on one thread (turmoil steps hosts one after another), so plain `std` mutexes
//! are enough; they exist only because the runtime's traits want `Send + Sync`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use presence_runtime::auth::Auth;

use crate::clock::SimClock;
use crate::dynamo::SimDynamo;
use crate::model::Model;
use crate::redis_host::RedisState;
use crate::trace::Trace;

/// The wall-clock instant of virtual time zero (2024-01-15T06:26:40Z), in Unix milliseconds.
pub const EPOCH_MS: i64 = 1_705_300_000_000;

/// The knobs of one run. [`Params::default`] is what the runner and the tests use.
#[derive(Clone, Debug)]
pub struct Params {
    /// WS server hosts (`srv0`, `srv1`, ...).
    pub servers: usize,
    /// Devices per user; user `i` is `u<i>`, its devices are hosts `u<i>d<j>`.
    pub devices_per_user: Vec<usize>,
    /// Length of the phase with faults, in virtual milliseconds.
    pub chaos_ms: u64,
    /// Length of the fault-free phase at the end, in virtual milliseconds.
    pub quiet_ms: u64,
    /// turmoil tick: each step runs every host for this long, and the network delivers
    /// messages only between steps, so one-way latencies are rounded up to whole ticks. Timers
    /// inside a host still fire at their own times. 5 ms by default (the cost of a run is
    /// almost all turmoil's per-step, per-host work); `--tick-ms 1` for full latency resolution
    /// (docs/SIMULATION.md, "Speed").
    pub tick: Duration,
    /// Planted bug (to prove the oracles bite); `None` in real runs.
    pub plant: Option<Plant>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            servers: 3,
            devices_per_user: vec![2, 2, 1, 1],
            chaos_ms: 30_000,
            quiet_ms: 22_000,
            tick: Duration::from_millis(5),
            plant: None,
        }
    }
}

/// A bug planted on purpose, to check that the oracles catch it: (a) and (b) in the sim's
/// stand-ins, (c) and (d) in the real core through its test-only
/// [`presence_core::Config::planted_bug`] switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plant {
    /// (a) The Redis host's `END_SESSION` script deletes the whole `ws:{u}` hash (no
    /// compare-and-delete).
    UnconditionalDelete,
    /// (b) The DynamoDB stand-in overwrites `last_seen` instead of keeping the maximum.
    PlainOverwrite,
    /// (c) The core never registers its live sessions again after the registry may have lost
    /// them (a Redis restart seen by the executor, or a new lease).
    NoReregister,
    /// (d) The core drops a failed durable write instead of retrying it.
    NoDurableRetry,
}

impl Plant {
    /// Every planted bug, in the order of the issue.
    pub const ALL: [Plant; 4] =
        [Plant::UnconditionalDelete, Plant::PlainOverwrite, Plant::NoReregister, Plant::NoDurableRetry];

    /// Parses the command-line spelling.
    pub fn parse(s: &str) -> Option<Plant> {
        Plant::ALL.into_iter().find(|p| p.name() == s)
    }

    /// The command-line spelling.
    pub fn name(self) -> &'static str {
        match self {
            Plant::UnconditionalDelete => "unconditional-delete",
            Plant::PlainOverwrite => "plain-overwrite",
            Plant::NoReregister => "no-reregister",
            Plant::NoDurableRetry => "no-durable-retry",
        }
    }

    /// The switch this bug sets in the core, if it is planted there.
    pub fn in_core(self) -> Option<presence_core::config::PlantedBug> {
        match self {
            Plant::NoReregister => Some(presence_core::config::PlantedBug::NoReregister),
            Plant::NoDurableRetry => Some(presence_core::config::PlantedBug::NoDurableRetry),
            Plant::UnconditionalDelete | Plant::PlainOverwrite => None,
        }
    }
}

/// Timing bounds of the runtime as configured in the sim; the oracles use them.
pub mod bounds {
    /// Core heartbeat: probe after this long without proof of life.
    pub const PING_INTERVAL_MS: u64 = 2_000;
    /// Core heartbeat: dead after this long without proof of life.
    pub const HEARTBEAT_TIMEOUT_MS: u64 = 4_000;
    /// Core retry backoff cap.
    pub const RETRY_MAX_MS: u64 = 2_000;
    /// Redis op timeout (also connect timeout).
    pub const REDIS_OP_TIMEOUT_MS: u64 = 500;
    /// Redis health-check interval.
    pub const REDIS_HEALTH_MS: u64 = 1_000;
    /// DynamoDB stand-in op timeout.
    pub const DYNAMO_OP_TIMEOUT_MS: u64 = 1_000;
    /// Largest wall-clock offset of any server from true time (and the core's `max_clock_skew`).
    pub const MAX_SKEW_MS: i64 = 5_000;
    /// A session opened this long before a query is registered (healthy registry path).
    pub const REGISTER_GRACE_MS: u64 = 1_000;
    /// After a fault on a server's path to Redis heals (or Redis restarts), the server has
    /// reconnected, re-registered its live sessions and flushed its pending ends within this.
    pub const REDIS_RECOVER_MS: u64 = 6_000;
    /// A session whose client stopped talking at `t` is ended in the registry by
    /// `t + HEARTBEAT_TIMEOUT + GHOST_SLACK` (healthy registry path, live server).
    pub const GHOST_SLACK_MS: u64 = 1_500;
    /// Client side: a request unanswered for this long means the connection is dead.
    pub const CLIENT_DEAD_MS: u64 = 3_000;
    /// Server lease time to live (by the Redis clock).
    pub const LEASE_TTL_MS: u64 = 3_000;
    /// Server lease renewal interval (and the reaper's pace).
    pub const LEASE_RENEW_MS: u64 = 1_000;
    /// After a lease expires, its sessions are reaped (claimed, written durably, removed) within
    /// this: the next renewal of a live server plus the store round trips and a retry.
    pub const REAP_SLACK_MS: u64 = 3_000;
    /// Watchers: a watched user's offline is pushed only if not back within this.
    pub const OFFLINE_GRACE_MS: u64 = 1_000;
    /// A session's end is durable (DynamoDB holds its last proof of life, within the skew) within
    /// this of the later of: its client going quiet + heartbeat timeout + ghost slack (the server
    /// has ended it), and the end of any DynamoDB fault window meanwhile. One call hanging to its
    /// timeout, the next retry (backoff at most `RETRY_MAX`; a user's durable write can also wait
    /// one registry refresh: a Redis timeout, then its retry), and the write.
    pub const DURABLE_RECOVER_MS: u64 = DYNAMO_OP_TIMEOUT_MS + RETRY_MAX_MS + REDIS_OP_TIMEOUT_MS + 500;
    /// A session on a server that crashed at `tc` reads as offline from `tc + CRASH_GHOST_MS`:
    /// the lease expires by `tc + TTL`, and readers see it expired at their next renewal.
    pub const CRASH_GHOST_MS: u64 = LEASE_TTL_MS + LEASE_RENEW_MS + GHOST_SLACK_MS;
}

/// One WS server's lifecycle as the sim sees it.
#[derive(Debug, Default)]
pub struct ServerLife {
    /// Times (virtual ms) the server's software was started; index = incarnation.
    pub starts: Vec<u64>,
    /// Times it crashed.
    pub crashes: Vec<u64>,
    /// Whether it runs now.
    pub up: bool,
}

/// A `/readyz` sample.
#[derive(Clone, Debug)]
pub struct Ready {
    /// Virtual time of the answer.
    pub t: u64,
    /// Which server.
    pub server: usize,
    /// `pending_writes`, or `None` if the probe failed.
    pub pending: Option<u64>,
    /// `max_pending_writes`.
    pub max_pending: u64,
    /// `ready`.
    pub ready: bool,
}

/// Shared state of one run.
pub struct World {
    /// The run's seed.
    pub seed: u64,
    /// Its parameters.
    pub params: Params,
    /// Token signing.
    pub auth: Auth,
    /// What happened, in order.
    pub trace: Mutex<Trace>,
    /// Reference model of the clients' sessions, and every answer they got.
    pub model: Mutex<Model>,
    /// The Redis host's state (data dies with the host).
    pub redis: Mutex<RedisState>,
    /// The DynamoDB stand-in (data survives everything).
    pub dynamo: SimDynamo,
    /// Each server's wall clock.
    pub clocks: Vec<Arc<SimClock>>,
    /// Each server's lifecycle.
    pub servers: Mutex<Vec<ServerLife>>,
    /// Set when the quiet phase starts.
    pub quiet: AtomicBool,
    /// Violations found on the fly (by the stand-ins).
    pub live_violations: Mutex<Vec<String>>,
    /// `/readyz` samples.
    pub readyz: Mutex<Vec<Ready>>,
    /// The run has ended: hosts stop doing new things.
    pub over: AtomicBool,
    /// Last virtual time the control loop saw (for code outside any host).
    pub outer_now: AtomicU64,
}

/// Locks, ignoring poison (a panicking host is reported as a violation anyway).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl World {
    /// The world of `seed`.
    pub fn new(seed: u64, params: Params) -> Arc<World> {
        let users: Vec<String> = (0..params.devices_per_user.len()).map(|i| format!("u{i}")).collect();
        let clocks = (0..params.servers).map(|_| Arc::new(SimClock::new())).collect();
        let servers = (0..params.servers).map(|_| ServerLife::default()).collect();
        Arc::new(World {
            seed,
            auth: Auth::new(b"presence-sim-secret"),
            trace: Mutex::new(Trace::default()),
            model: Mutex::new(Model::new(users)),
            redis: Mutex::new(RedisState::new(seed, params.plant)),
            dynamo: SimDynamo::new(seed, params.plant),
            clocks,
            servers: Mutex::new(servers),
            quiet: AtomicBool::new(false),
            live_violations: Mutex::new(Vec::new()),
            readyz: Mutex::new(Vec::new()),
            over: AtomicBool::new(false),
            outer_now: AtomicU64::new(0),
            params,
        })
    }

    /// Virtual milliseconds since the start of the run (inside a host: the host's own view,
    /// which includes progress within the current tick).
    pub fn now(&self) -> u64 {
        match turmoil::sim_elapsed() {
            Some(d) => d.as_millis() as u64,
            None => self.outer_now.load(Ordering::Relaxed),
        }
    }

    /// Appends a line to the trace, stamped with the virtual time.
    pub fn trace(&self, line: impl AsRef<str>) {
        let t = self.now();
        lock(&self.trace).push(t, line.as_ref());
    }

    /// Records a violation found while the run goes on.
    pub fn violation(&self, what: String) {
        let t = self.now();
        self.trace(format!("VIOLATION {what}"));
        lock(&self.live_violations).push(format!("t={t}ms {what}"));
    }

    /// User names, in order.
    pub fn users(&self) -> Vec<String> {
        lock(&self.model).users.clone()
    }

    /// Server host name of index `i`.
    pub fn server_name(i: usize) -> String {
        format!("srv{i}")
    }

    /// The current incarnation of server `i` (number of starts - 1).
    pub fn incarnation(&self, i: usize) -> usize {
        lock(&self.servers)[i].starts.len().saturating_sub(1)
    }

    /// Whether the quiet phase has begun.
    pub fn is_quiet(&self) -> bool {
        self.quiet.load(Ordering::Relaxed)
    }

    /// Whether the run is over.
    pub fn is_over(&self) -> bool {
        self.over.load(Ordering::Relaxed)
    }

    /// Seeds derived from the run's seed for a named purpose.
    pub fn subseed(&self, purpose: u64, index: u64) -> u64 {
        crate::rng::mix3(self.seed, purpose, index)
    }
}

/// A sorted map helper used in reports.
pub type Counts = BTreeMap<&'static str, u64>;
