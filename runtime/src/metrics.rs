//! Prometheus metrics in the text exposition format.
//!
//! The core keeps its own counters (`presence_core::Stats`), read with the driver's status
//! snapshot; the runtime adds what only it sees: store latency, HTTP refusals, slow consumers.
//! The format is simple enough that a small renderer is clearer than a metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use presence_core::{EndReason, Readiness, Stats};

/// A snapshot of the core for `/readyz` and `/metrics`.
#[derive(Debug, Clone)]
pub struct Status {
    /// Counters.
    pub stats: Stats,
    /// Readiness.
    pub readiness: Readiness,
    /// Live connections the core knows.
    pub connections: usize,
    /// Live sessions not yet acknowledged by the registry.
    pub registry_backlog: usize,
    /// Store operations running now.
    pub store_ops_in_flight: usize,
    /// Users watched by at least one connection (one change-channel subscription each).
    pub watched_users: usize,
    /// Users holding a lookup-budget entry in the core.
    pub lookup_budgets: usize,
}

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds (seconds) of the store latency histogram buckets.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
    errors: u64,
}

/// What the listener knows now, rendered beside the snapshot of the core.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// Open WebSocket connections.
    pub connections: usize,
    /// Sockets in the HTTP phase (holding a handshake permit).
    pub handshakes: usize,
    /// Age of the core's snapshot.
    pub snapshot_age: Duration,
}

/// Everything the runtime counts.
#[derive(Debug, Default)]
pub struct Metrics {
    /// WebSocket upgrades accepted.
    pub ws_accepted: Counter,
    /// Requests refused with 401.
    pub refused_unauthorized: Counter,
    /// Requests refused with 403 (Origin).
    pub refused_origin: Counter,
    /// Connections refused at the connection limit (1013).
    pub refused_capacity: Counter,
    /// Sockets dropped for not finishing the handshake in time.
    pub handshake_timeouts: Counter,
    /// Connections closed because they did not read their messages.
    pub slow_consumers: Counter,
    /// Connections closed for a message over the size limit (1009).
    pub oversized_messages: Counter,
    /// Sockets closed as soon as they were accepted: `--max-handshakes` sockets were in the HTTP phase.
    pub handshakes_refused: Counter,
    /// WebSocket upgrades refused with 429 at `--max-sessions-per-user`.
    pub refused_sessions_per_user: Counter,
    /// WebSocket upgrades refused with 429 at `--max-connections-per-ip`.
    pub refused_connections_per_ip: Counter,
    /// Requests refused with 403 in dev mode for a Host other than the loopback names.
    pub refused_host: Counter,
    /// Snapshots of the core the driver took for `/readyz` and `/metrics` (at most one per
    /// refresh interval, whatever the request rate).
    pub status_snapshots: Counter,
    /// Connections closed by their own task for exceeding the frame rate (1008).
    pub frame_rate_closes: Counter,
    /// Users named in registry reads (each distinct user of a request once).
    pub registry_users_read: Counter,
    /// Privacy reads answered from the cache alone, without a store task (the others are in the
    /// store histogram as `store="privacy"`).
    pub privacy_reads_cached: Counter,
    /// Cached privacy entries re-read ahead of their TTL.
    pub privacy_refreshes: Counter,
    in_flight: AtomicU64,
    /// (store, op) -> latency histogram.
    stores: Mutex<BTreeMap<(&'static str, &'static str), Histogram>>,
}

impl Metrics {
    pub(crate) fn store_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn store_finished(&self, store: &'static str, op: &'static str, took: Duration, ok: bool) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        let h = stores.entry((store, op)).or_default();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
        if !ok {
            h.errors += 1;
        }
    }

    pub(crate) fn store_ops_in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed) as usize
    }

    /// Renders every metric, with the core's from `status` and the listener's from `live`.
    pub fn render(&self, status: &Status, live: &Live) -> String {
        let mut out = String::with_capacity(4096);
        for (name, help, v) in Metrics::gauges(status, live) {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        for (name, help, v) in self.counters(&status.stats) {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        let s = &status.stats;
        let name = "presence_status_snapshot_age_seconds";
        let _ = writeln!(out, "# HELP {name} Age of the snapshot these core metrics come from.");
        let _ = writeln!(out, "# TYPE {name} gauge\n{name} {:.3}", live.snapshot_age.as_secs_f64());
        let _ = writeln!(out, "# HELP presence_sessions_ended_total Sessions ended, by reason.");
        let _ = writeln!(out, "# TYPE presence_sessions_ended_total counter");
        for reason in EndReason::ALL {
            let v = s.sessions_ended[reason as usize];
            let _ = writeln!(out, "presence_sessions_ended_total{{reason=\"{}\"}} {v}", reason.as_str());
        }
        let stores = self.stores.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let name = "presence_store_op_seconds";
        let _ = writeln!(out, "# HELP {name} Store operation latency.\n# TYPE {name} histogram");
        for ((store, op), h) in &stores {
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{store=\"{store}\",op=\"{op}\",le=\"{le}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(out, "{name}_bucket{{store=\"{store}\",op=\"{op}\",le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum{{store=\"{store}\",op=\"{op}\"}} {}", h.sum);
            let _ = writeln!(out, "{name}_count{{store=\"{store}\",op=\"{op}\"}} {}", h.count);
        }
        let _ = writeln!(out, "# HELP presence_store_op_errors_total Failed store operations.");
        let _ = writeln!(out, "# TYPE presence_store_op_errors_total counter");
        for ((store, op), h) in &stores {
            let _ =
                writeln!(out, "presence_store_op_errors_total{{store=\"{store}\",op=\"{op}\"}} {}", h.errors);
        }
        out
    }

    /// The gauges, in the order they are rendered: (name, help, value).
    fn gauges(status: &Status, live: &Live) -> Vec<(&'static str, &'static str, u64)> {
        let r = &status.readiness;
        vec![
            ("presence_connections", "Open WebSocket connections.", live.connections as u64),
            (
                "presence_handshakes",
                "Sockets in the HTTP phase (request or upgrade not finished).",
                live.handshakes as u64,
            ),
            ("presence_sessions_live", "Sessions the core holds as live.", status.connections as u64),
            (
                "presence_pending_writes",
                "Pending last_seen writes (registry ends + durable writes).",
                r.pending_writes as u64,
            ),
            ("presence_pending_writes_max", "Cap on pending last_seen writes.", r.max_pending_writes as u64),
            (
                "presence_registry_backlog",
                "Live sessions not yet registered.",
                status.registry_backlog as u64,
            ),
            ("presence_store_ops_in_flight", "Store operations running.", status.store_ops_in_flight as u64),
            (
                "presence_watched_users",
                "Users watched by this server's connections (one change-channel subscription each).",
                status.watched_users as u64,
            ),
            ("presence_ready", "1 when /readyz answers 200.", u64::from(r.is_ready())),
            (
                "presence_lookup_budgets",
                "Users holding a lookup-budget entry (requests in flight or a bucket not yet full).",
                status.lookup_budgets as u64,
            ),
        ]
    }

    /// The counters of the core and of the runtime, in the order they are rendered.
    fn counters(&self, s: &Stats) -> Vec<(&'static str, &'static str, u64)> {
        vec![
            ("presence_sessions_opened_total", "Sessions opened.", s.sessions_opened),
            ("presence_sessions_refused_total", "Sessions refused (pending-write cap, shutdown).", s.sessions_refused),
            ("presence_store_retries_total", "Failed store writes scheduled again.", s.store_retries),
            ("presence_registry_failures_total", "Failed registry operations.", s.registry_failures),
            ("presence_durable_failures_total", "Failed durable-store operations.", s.durable_failures),
            ("presence_registry_restarts_total", "Registry restarts seen.", s.registry_restarts),
            ("presence_leases_granted_total", "Server leases granted (first, and after each loss).", s.leases_granted),
            ("presence_leases_lost_total", "Leases given up after a TTL without renewal.", s.leases_lost),
            ("presence_sessions_reaped_total", "Sessions of dead servers reaped here.", s.sessions_reaped),
            ("presence_pushes_total", "Live presence frames pushed to watchers.", s.pushes),
            ("presence_queries_total", "Presence queries answered.", s.queries),
            ("presence_error_frames_total", "error frames sent.", s.errors_sent),
            ("presence_ws_accepted_total", "WebSocket upgrades accepted.", self.ws_accepted.get()),
            ("presence_refused_unauthorized_total", "Requests refused with 401.", self.refused_unauthorized.get()),
            ("presence_refused_origin_total", "Requests refused with 403.", self.refused_origin.get()),
            ("presence_refused_capacity_total", "Connections refused at the limit.", self.refused_capacity.get()),
            ("presence_handshake_timeouts_total", "Handshakes not finished in time.", self.handshake_timeouts.get()),
            ("presence_slow_consumers_total", "Connections closed for not reading.", self.slow_consumers.get()),
            ("presence_oversized_messages_total", "Messages over the size limit.", self.oversized_messages.get()),
            ("presence_frame_rate_closes_total", "Connections closed by their own task for exceeding the frame rate (1008).", self.frame_rate_closes.get()),
            ("presence_registry_users_read_total", "Users named in registry reads (a user repeated in one request counts once).", self.registry_users_read.get()),
            ("presence_privacy_reads_cached_total", "Privacy reads answered from the cache alone (the others: store=\"privacy\" in the store histogram).", self.privacy_reads_cached.get()),
            ("presence_privacy_refreshes_total", "Cached privacy entries (users) re-read from the store ahead of their TTL, in the background.", self.privacy_refreshes.get()),
            ("presence_lookups_refused_total", "Requests refused for the asking user's lookup budget or queries in flight (rate_limited, 429).", s.lookups_refused),
            ("presence_handshakes_refused_total", "Sockets closed at once at --max-handshakes.", self.handshakes_refused.get()),
            ("presence_refused_sessions_per_user_total", "Upgrades refused with 429 at --max-sessions-per-user.", self.refused_sessions_per_user.get()),
            ("presence_refused_connections_per_ip_total", "Upgrades refused with 429 at --max-connections-per-ip.", self.refused_connections_per_ip.get()),
            ("presence_refused_host_total", "Requests refused with 403 for their Host (dev mode).", self.refused_host.get()),
            ("presence_status_snapshots_total", "Snapshots of the core taken for /readyz and /metrics.", self.status_snapshots.get()),
        ]
    }
}
