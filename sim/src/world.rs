//! The state every simulated host shares: parameters, the trace, the reference model, the fault log,
//! the Redis host's data, the DynamoDB stand-in and the servers' clocks.
//!
//! Everything runs on one thread (turmoil steps hosts one after another), so plain `std` mutexes
//! are enough; they exist only because the runtime's traits want `Send + Sync`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use presence_runtime::auth::Auth;

use crate::clock::SimClock;
use crate::dynamo::SimDynamo;
use crate::model::Model;
pub use crate::params::{bounds, Params, Plant, EPOCH_MS};
use crate::redis_host::RedisState;
use crate::trace::Trace;
pub use crate::witness::lock;
use crate::witness::Witness;

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
    /// Privacy settings and contacts (durable like the DynamoDB stand-in; shared by the servers).
    pub privacy: presence_runtime::privacy::MemoryPrivacy,
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
            privacy: presence_runtime::privacy::MemoryPrivacy::new().with_whole_lists(whole_lists(seed)),
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

impl Witness for World {
    fn now(&self) -> u64 {
        World::now(self)
    }

    fn trace(&self, line: &str) {
        World::trace(self, line)
    }

    fn violation(&self, what: String) {
        World::violation(self, what)
    }
}

/// A sorted map helper used in reports.
pub type Counts = BTreeMap<&'static str, u64>;

/// How long a contact list the privacy store returns whole, by seed (the seed's other draws are
/// untouched): every list asked member by member, lists of at most one contact whole (both
/// cache paths in one run), or every list whole.
fn whole_lists(seed: u64) -> Option<usize> {
    [None, Some(1), Some(presence_runtime::privacy::WHOLE_LIST_MAX)][(seed % 3) as usize]
}
