//! The Redis host's state: a small Redis, enough for what the runtime sends, with Redis
//! semantics (`commands`), and the registry's real Lua scripts run by an embedded Lua 5.1
//! (`lua`), as Redis runs them; the Redis clock (`TIME`) is true virtual time. Its software, the
//! RESP server on turmoil TCP, is [`crate::redis_server`].
//!
//! Commands: `PING`, `CLIENT` (SETINFO), `SELECT`, `INFO` (with a `run_id` that changes on every
//! start), `TIME`, `HSET`, `HGET`, `HVALS`, `HLEN`, `HDEL`, `GET`, `MGET`, `SET`, `DEL`, `INCR`,
//! `SADD`, `SREM`, `SRANDMEMBER` (the first members in order, so runs replay), `ZADD`, `ZSCORE`,
//! `ZREM`, `ZRANGEBYSCORE`, `PUBLISH`, `SUBSCRIBE`/`UNSUBSCRIBE` (RESP2 subscriber mode, with its
//! `PING`), `SCRIPT LOAD|FLUSH`, `EVAL` and `EVALSHA`. The script cache and the subscriptions are
//! gone after a restart, as in Redis.
//!
//! All data lives in [`RedisState`], reset every time the host software starts: a crash or
//! bounce loses everything, like a Redis without persistence.
//!
//! The host also checks two invariants as the registry's scripts run: I7 (a session's registry
//! entry is removed only by the server that owns it, or by a reaper once the lease it was
//! registered under has expired) and I5 for cached values (no `last_seen` beyond true time plus
//! the maximum skew).

mod commands;
mod lua;
pub(crate) mod resp;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use presence_core::time::UnixMillis;

use crate::params::Plant;
use crate::rng::mix3;
use crate::witness::Witness;
use resp::{bulk, Reply};

/// A Redis value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Val {
    /// A string.
    Str(Vec<u8>),
    /// A hash.
    Hash(BTreeMap<Vec<u8>, Vec<u8>>),
    /// A set.
    Set(BTreeSet<Vec<u8>>),
    /// A sorted set: member -> score (integer scores are all the runtime uses).
    ZSet(BTreeMap<Vec<u8>, i64>),
}

/// The Redis host's memory (lost on every restart).
#[derive(Clone, Debug)]
pub struct RedisState {
    seed: u64,
    plant: Option<Plant>,
    /// Starts so far.
    pub incarnation: u64,
    /// Whether the host runs.
    pub up: bool,
    /// `INFO server` run_id of this incarnation.
    pub run_id: String,
    /// The keyspace.
    pub db: BTreeMap<Vec<u8>, Val>,
    /// The script cache: SHA-1 -> text.
    scripts: BTreeMap<String, Arc<[u8]>>,
    /// Commands served (all incarnations).
    pub commands: u64,
    /// Per last_seen key, the last value a session end, a reaper's mark or a re-record (values
    /// not yet durable) wrote there: the value, the writer (`srv<N>`) and the true time. Evidence
    /// for the oracle when such a value never became durable because its writer crashed.
    recorded: BTreeMap<Vec<u8>, (Vec<u8>, String, u64)>,
    /// Pub/sub: channel -> subscribed connections, and each connection's outbound queue.
    subs: BTreeMap<Vec<u8>, BTreeSet<u64>>,
    outboxes: BTreeMap<u64, tokio::sync::mpsc::UnboundedSender<Vec<u8>>>,
    next_conn: u64,
}

impl RedisState {
    pub(crate) fn new(seed: u64, plant: Option<Plant>) -> RedisState {
        RedisState {
            seed,
            plant,
            incarnation: 0,
            up: false,
            run_id: String::new(),
            db: BTreeMap::new(),
            scripts: BTreeMap::new(),
            commands: 0,
            recorded: BTreeMap::new(),
            subs: BTreeMap::new(),
            outboxes: BTreeMap::new(),
            next_conn: 0,
        }
    }

    /// A restart: everything is gone, a new run_id.
    pub(crate) fn start(&mut self) {
        self.incarnation += 1;
        self.up = true;
        self.run_id =
            format!("{:016x}{:016x}{:08x}", mix3(self.seed, 0x4ED15, self.incarnation), self.incarnation, 0);
        self.db.clear();
        self.recorded.clear();
        self.scripts.clear();
        self.subs.clear();
        self.outboxes.clear();
    }

    /// A crash: the data is gone at once.
    pub(crate) fn crash(&mut self) {
        self.up = false;
        self.db.clear();
        self.scripts.clear();
        self.subs.clear();
        self.outboxes.clear();
    }

    /// `SUBSCRIBE` / `UNSUBSCRIBE` of connection `conn` (RESP2 subscriber mode): one reply per
    /// channel, `[kind, channel, count of this connection's channels]`.
    pub(crate) fn subscribe_cmd(&mut self, conn: u64, subscribe: bool, channels: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for ch in channels {
            if subscribe {
                self.subs.entry(ch.clone()).or_default().insert(conn);
            } else if let Some(set) = self.subs.get_mut(ch) {
                set.remove(&conn);
                if set.is_empty() {
                    self.subs.remove(ch);
                }
            }
            let count = self.subs.values().filter(|s| s.contains(&conn)).count() as i64;
            let kind = if subscribe { "subscribe" } else { "unsubscribe" };
            Reply::Array(vec![bulk(kind), bulk(ch.clone()), Reply::Int(count)]).write(&mut out);
        }
        out
    }

    /// Whether connection `conn` is in subscriber mode.
    pub(crate) fn subscribed(&self, conn: u64) -> bool {
        self.subs.values().any(|s| s.contains(&conn))
    }

    /// `PUBLISH`: delivers `[message, channel, payload]` to every subscriber; the count.
    fn publish(&mut self, channel: &[u8], payload: &[u8]) -> i64 {
        let Some(conns) = self.subs.get(channel) else { return 0 };
        let mut msg = Vec::new();
        Reply::Array(vec![bulk("message"), bulk(channel.to_vec()), bulk(payload.to_vec())]).write(&mut msg);
        let mut n = 0;
        for c in conns {
            if let Some(tx) = self.outboxes.get(c) {
                if tx.send(msg.clone()).is_ok() {
                    n += 1;
                }
            }
        }
        n
    }

    /// `HLEN ws:{user} > 0`.
    pub fn online(&self, user: &str) -> bool {
        matches!(self.db.get(format!("ws:{{{user}}}").as_bytes()), Some(Val::Hash(h)) if !h.is_empty())
    }

    /// The registry fields of `user`.
    pub fn sessions(&self, user: &str) -> Vec<(String, String)> {
        match self.db.get(format!("ws:{{{user}}}").as_bytes()) {
            Some(Val::Hash(h)) => h
                .iter()
                .map(|(k, v)| {
                    (String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned())
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// What the registry answers for `user`'s last_seen: the larger of `last_seen:{user}` and
    /// `last_seen_pending:{user}`, parsed.
    pub fn last_seen(&self, user: &str) -> Option<i64> {
        let get = |key: String| match self.db.get(key.as_bytes()) {
            Some(Val::Str(s)) => UnixMillis::parse_rfc3339(&String::from_utf8_lossy(s)).map(|v| v.0),
            _ => None,
        };
        get(format!("last_seen:{{{user}}}")).max(get(format!("last_seen_pending:{{{user}}}")))
    }

    /// Who recorded `user`'s answered last_seen `value` (a value not yet durable when written),
    /// and when: `(writer, true time)`, if a session end, a reaper's mark or a re-record put that
    /// exact value in `last_seen:{user}` or `last_seen_pending:{user}` in this incarnation.
    pub fn recorder(&self, user: &str, value: i64) -> Option<(&str, u64)> {
        [format!("last_seen:{{{user}}}"), format!("last_seen_pending:{{{user}}}")].iter().find_map(|key| {
            let (ts, peer, t) = self.recorded.get(key.as_bytes())?;
            let still_there = self.db.get(key.as_bytes()).is_some_and(|v| v == &Val::Str(ts.clone()));
            let parsed = UnixMillis::parse_rfc3339(&String::from_utf8_lossy(ts))?;
            (still_there && parsed.0 == value).then_some((peer.as_str(), *t))
        })
    }

    /// Runs one command (`argv`, not empty) as host `peer` sent it and returns the reply encoded
    /// as RESP2, the bytes a client reads. The entry point of the differential test against a real
    /// redis-server (`sim/tests/redis_differential.rs`); the simulator itself goes through
    /// [`crate::redis_server::redis_main`]. Nothing is traced; the live checks (I5, I7) still
    /// report to `w`. The Redis clock is `EPOCH_MS + w.now()`: outside turmoil, set it with
    /// `w.outer_now`.
    pub fn execute<W: Witness>(&mut self, w: &W, peer: &str, argv: &[Vec<u8>]) -> Vec<u8> {
        assert!(!argv.is_empty(), "a command has at least its name");
        let mut out = Vec::new();
        self.command(w, peer, argv).write(&mut out);
        out
    }

    /// One command from a client (counted in [`RedisState::commands`]).
    pub(crate) fn command(&mut self, w: &dyn Witness, peer: &str, argv: &[Vec<u8>]) -> Reply {
        self.commands += 1;
        let name = String::from_utf8_lossy(&argv[0]).to_ascii_uppercase();
        self.dispatch(w, peer, None, &name, argv)
    }

    /// A new client connection: its id, and where messages published to it go.
    pub(crate) fn open_conn(&mut self, outbox: tokio::sync::mpsc::UnboundedSender<Vec<u8>>) -> u64 {
        self.next_conn += 1;
        let id = self.next_conn;
        self.outboxes.insert(id, outbox);
        id
    }

    /// Connection `conn` closed: its outbox and subscriptions go.
    pub(crate) fn close_conn(&mut self, conn: u64) {
        self.outboxes.remove(&conn);
        for set in self.subs.values_mut() {
            set.remove(&conn);
        }
        self.subs.retain(|_, s| !s.is_empty());
    }
}
