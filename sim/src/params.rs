//! The knobs of a run ([`Params`]), the bugs that can be planted on purpose ([`Plant`]), the
//! timing bounds the oracles use ([`bounds`]) and the epoch of virtual time ([`EPOCH_MS`]): the
//! constants every part of the simulation shares, in a module that depends on none of them.

use std::time::Duration;

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
/// stand-ins, (c) to (f) in the real core through its test-only
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
    /// (e) The core answers queries with the true entry, ignoring the asker's view.
    PrivacyIgnored,
    /// (f) The core re-evaluates no subscription when a user's settings change.
    NoPrivacyReeval,
}

impl Plant {
    /// Every planted bug, in the order of the issue.
    pub const ALL: [Plant; 6] = [
        Plant::UnconditionalDelete,
        Plant::PlainOverwrite,
        Plant::NoReregister,
        Plant::NoDurableRetry,
        Plant::PrivacyIgnored,
        Plant::NoPrivacyReeval,
    ];

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
            Plant::PrivacyIgnored => "privacy-ignored",
            Plant::NoPrivacyReeval => "no-privacy-reeval",
        }
    }

    /// The switch this bug sets in the core, if it is planted there.
    pub fn in_core(self) -> Option<presence_core::config::PlantedBug> {
        match self {
            Plant::NoReregister => Some(presence_core::config::PlantedBug::NoReregister),
            Plant::NoDurableRetry => Some(presence_core::config::PlantedBug::NoDurableRetry),
            Plant::PrivacyIgnored => Some(presence_core::config::PlantedBug::PrivacyIgnored),
            Plant::NoPrivacyReeval => Some(presence_core::config::PlantedBug::NoPrivacyReeval),
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
    /// Privacy: every server applies an answered settings change within this while the change
    /// feed works (docs/PRIVACY.md, "Propagation").
    pub const PRIVACY_PROPAGATION_MS: u64 = 1_000;
    /// The privacy cache's TTL in the sim (`--privacy-cache-ttl`, also the core's
    /// `privacy_refresh`): the backstop bound when a change's notice may have been lost.
    pub const PRIVACY_TTL_MS: u64 = 3_000;
    /// A push was computed by its server at most this long before it arrived (network latency).
    pub const PUSH_SLACK_MS: u64 = 200;
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
