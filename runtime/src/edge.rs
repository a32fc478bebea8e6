//! Limits at the edge: what a socket may hold before (and while) it is a WebSocket session.
//!
//! These checks run in the listener, before anything reaches the driver:
//!
//! - sockets still in the HTTP phase are bounded by `--max-handshakes` (the listener holds a
//!   semaphore permit per socket until its request is answered, upgraded or dropped; a socket
//!   accepted without a free permit is closed at once, so slow clients cannot use up the process's
//!   file descriptors);
//! - WebSocket sessions per user (`--max-sessions-per-user`) and per client IP address
//!   (`--max-connections-per-ip`) are counted in `Counts`; the upgrade that would go past the
//!   cap is answered with HTTP 429 before the WebSocket opens;
//! - in dev mode, only requests whose `Host` names the loopback interface are served
//!   (`is_loopback_host`): a page on another site that a DNS-rebinding attack points at
//!   127.0.0.1 sends its own host name, and must not get dev tokens.
//!
//! Counts are per server: a user's sessions on other servers are not seen here.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// The limits of [`crate::server::ServerConfig::edge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeLimits {
    /// Most sockets at once in the HTTP phase; more are closed as soon as they are accepted.
    pub max_handshakes: usize,
    /// Most WebSocket sessions of one user on this server; more are refused with HTTP 429.
    pub max_sessions_per_user: usize,
    /// Most WebSocket connections from one IP address; more are refused with HTTP 429. 0 = no limit.
    pub max_connections_per_ip: usize,
}

impl Default for EdgeLimits {
    /// The defaults of the command line.
    fn default() -> Self {
        EdgeLimits { max_handshakes: 1_024, max_sessions_per_user: 16, max_connections_per_ip: 0 }
    }
}

/// Open sessions per key (a user, a client address), each held by a [`Slot`].
#[derive(Debug)]
pub(crate) struct Counts<K: Hash + Eq + Clone> {
    /// Keys with at least one slot; a key leaves the map with its last slot, so the map holds at
    /// most one entry per open session.
    open: Mutex<HashMap<K, usize>>,
    max: usize,
}

impl<K: Hash + Eq + Clone> Counts<K> {
    /// At most `max` slots per key.
    pub(crate) fn new(max: usize) -> Arc<Counts<K>> {
        Arc::new(Counts { open: Mutex::new(HashMap::new()), max })
    }

    /// A slot for `key`, or `None` if `key` already holds `max`.
    pub(crate) fn try_acquire(self: &Arc<Self>, key: &K) -> Option<Slot<K>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot { counts: self.clone(), key: key.clone() })
    }

    /// Slots `key` holds now.
    #[cfg(test)]
    fn held(&self, key: &K) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).get(key).copied().unwrap_or(0)
    }

    fn release(&self, key: &K) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                open.remove(key);
            }
        }
    }
}

/// One held place in a [`Counts`]; dropping it gives the place back, however the session ended
/// (close, error, panic of its task).
#[derive(Debug)]
pub(crate) struct Slot<K: Hash + Eq + Clone> {
    counts: Arc<Counts<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        self.counts.release(&self.key);
    }
}

/// Whether a `Host` header value names the loopback interface: `localhost`, `127.0.0.1` or
/// `[::1]`, with or without a port. Nothing else is served in dev mode.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inside, port)) => (inside, port),
            None => return false,
        }
    } else {
        host.split_at(host.find(':').unwrap_or(host.len()))
    };
    let port_ok = match port.strip_prefix(':') {
        Some(p) => !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()),
        None => port.is_empty(),
    };
    port_ok && (name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1" || name == "::1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_key_and_releases_on_drop() {
        let counts = Counts::<&str>::new(2);
        let a1 = counts.try_acquire(&"a").expect("first");
        let a2 = counts.try_acquire(&"a").expect("second");
        assert!(counts.try_acquire(&"a").is_none(), "third of a");
        let b = counts.try_acquire(&"b").expect("b is counted apart");
        drop(a1);
        assert_eq!(counts.held(&"a"), 1);
        let a3 = counts.try_acquire(&"a").expect("a place was given back");
        drop((a2, a3, b));
        assert_eq!((counts.held(&"a"), counts.held(&"b")), (0, 0));
        assert!(counts.open.lock().unwrap().is_empty(), "no entry left for keys without sessions");
    }

    #[test]
    fn a_panicking_holder_gives_its_slot_back() {
        let counts = Counts::<u8>::new(1);
        let slot = counts.try_acquire(&1).expect("slot");
        let r = std::thread::spawn(move || {
            let _slot = slot;
            panic!("session task failed");
        })
        .join();
        assert!(r.is_err());
        assert_eq!(counts.held(&1), 0);
    }

    #[test]
    fn loopback_hosts() {
        for ok in ["localhost", "LocalHost:8080", "127.0.0.1", "127.0.0.1:1", "[::1]", "[::1]:8080"] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.2",
            "127.0.0.1.nip.io",
            "127.0.0.1:",
            "127.0.0.1:80x",
            "localhost:8080:1",
            "[::1",
            "[::2]:80",
            "::1",
            "[::1]8080",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }
}
