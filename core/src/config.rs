//! Tunables of the state machine, with the defaults the README documents.

use std::time::Duration;

use crate::frame::Limits;

/// Configuration of one [`crate::Presence`] instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// A connection with no proof of life for this long is sent a probe (WebSocket ping). Default
    /// 15 s. The probe is the runtime's: each connection's task runs this timer itself and reports
    /// the answers as [`crate::Input::Alive`] (batched, with their arrival times); the core owns
    /// only the deadline (`heartbeat_timeout`).
    pub ping_interval: Duration,
    /// A connection with no proof of life for this long is dead: its session ends ungracefully with
    /// last_seen = its last proof of life. Default 30 s.
    pub heartbeat_timeout: Duration,
    /// Heartbeat deadlines are checked on a grid of this step (of monotonic time from zero): the
    /// checks of all connections due within one step fall on one instant and cost the runtime one
    /// wake-up, where exact deadlines would wake it once per connection and ping interval. A dead
    /// connection is closed up to this long after its deadline; its last_seen is its last proof
    /// of life all the same. Zero: each at its exact deadline. Default 250 ms.
    pub heartbeat_check_step: Duration,
    /// Most users in one query (default 256; at most [`crate::frame::MAX_USERS_PER_FRAME`]).
    pub max_query_users: usize,
    /// Cap on pending last_seen writes (sessions whose end is not yet in the registry, plus users
    /// whose durable write is not yet acknowledged). At the cap the server refuses new sessions
    /// (close 1013) instead of dropping a write. Sessions live at that moment may still end, each
    /// adding at most one registry end and one durable write, so the set is bounded by this cap
    /// plus twice the connection limit. Default 100,000.
    pub max_pending_writes: usize,
    /// last_seen values read from the stores more than this far in this server's future (another
    /// server's clock was ahead) are clamped to now + this bound in answers. Default 5 s.
    pub max_clock_skew: Duration,
    /// First retry delay of a failed store write. Default 100 ms.
    pub retry_base: Duration,
    /// Longest retry delay (before jitter). Default 10 s.
    pub retry_max: Duration,
    /// Sustained inbound data frames per second per connection; past the burst the connection is
    /// closed with 1008. Default 20/s. The runtime enforces its own limit (pings and pongs
    /// included) in each connection's task, before a frame reaches the core; it sets this check
    /// looser (twice the burst), as a backstop that frames queued on their way cannot trip.
    pub frame_rate: u32,
    /// Burst of inbound frames per connection. Default 100.
    pub frame_burst: u32,
    /// Sustained user lookups (distinct users named in queries, subscribe snapshots and HTTP
    /// lookups) per second per user, shared by all of the user's connections on this server and
    /// the HTTP API; past the burst the request gets `rate_limited`. Default 100/s.
    pub lookup_rate: u32,
    /// Burst of user lookups per user. Default 1,000.
    pub lookup_burst: u32,
    /// Most requests of one user (over all its connections and the HTTP API) waiting for the
    /// stores at once; more get `rate_limited`. Default 8.
    pub max_queries_in_flight: u32,
    /// Lifetime of this server's lease in the registry (by the registry's clock). A server that
    /// could not renew it for this long is presumed dead: its sessions read as offline and are
    /// reaped. Default 10 s.
    pub lease_ttl: Duration,
    /// How often the lease is renewed (and the view of other servers' leases refreshed; the reaper
    /// looks for expired leases at the same pace). Must be well under `lease_ttl`. Default 3 s.
    pub lease_renew_interval: Duration,
    /// Sessions of a dead server reaped per registry round trip. Default 256.
    pub reap_batch: usize,
    /// Most users one connection may watch (`subscribe`); past it, `too_many_users`. Default 1,000.
    pub max_watched_users: usize,
    /// Most distinct users this server watches for all its connections together (one
    /// change-channel subscription each); a `subscribe` that would pass it gets `too_many_users`.
    /// Default 1,000,000.
    pub max_watched_users_total: usize,
    /// A watched user whose last session ends is shown offline only if not back within this; a
    /// quick reconnect shows watchers nothing. Default 5 s (zero: no grace).
    pub presence_grace: Duration,
    /// Each subscription's privacy is read again at least this often, notice or not: the bound on
    /// a watcher's stale view when a change's notice was lost (its server could not announce it).
    /// The server sets it to `--privacy-cache-ttl`. Default 60 s.
    pub privacy_refresh: Duration,
    /// Decoder bounds (frame size, users per frame).
    pub limits: Limits,
    /// Test only: a bug planted on purpose, so the deterministic simulation (`presence-sim
    /// --plant ...`) can prove its oracles catch it. Exists only with the `planted-bugs` feature,
    /// which only `presence-sim` enables: the server binary is built without it.
    #[cfg(feature = "planted-bugs")]
    pub planted_bug: Option<PlantedBug>,
}

/// Test only: the bugs [`Config::planted_bug`] can plant in the core (docs/SIMULATION.md,
/// "Planted bugs"). Only with the `planted-bugs` feature.
#[cfg(feature = "planted-bugs")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// Live sessions are never registered again once the registry may have lost them (a registry
    /// restart, a new lease).
    NoReregister,
    /// A failed durable write is dropped instead of retried.
    NoDurableRetry,
    /// Answers to queries show the true entry, whatever the asker's view.
    PrivacyIgnored,
    /// A settings change (`Input::PrivacyChanged`) re-evaluates no subscription.
    NoPrivacyReeval,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ping_interval: Duration::from_secs(15),
            heartbeat_timeout: Duration::from_secs(30),
            heartbeat_check_step: Duration::from_millis(250),
            max_query_users: crate::frame::MAX_USERS_PER_FRAME,
            max_pending_writes: 100_000,
            max_clock_skew: Duration::from_secs(5),
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
            frame_rate: 20,
            frame_burst: 100,
            lookup_rate: 100,
            lookup_burst: 1_000,
            max_queries_in_flight: 8,
            lease_ttl: Duration::from_secs(10),
            lease_renew_interval: Duration::from_secs(3),
            reap_batch: 256,
            max_watched_users: 1_000,
            max_watched_users_total: 1_000_000,
            presence_grace: Duration::from_secs(5),
            privacy_refresh: Duration::from_secs(60),
            limits: Limits::default(),
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }
}
