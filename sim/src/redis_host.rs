//! The Redis host: a small RESP2 server speaking to the real `redis` client over turmoil TCP.
//!
//! It implements only what the runtime sends, with Redis semantics: `PING`, `CLIENT` (SETINFO),
//! `SELECT`, `INFO` (with a `run_id` that changes on every start), `HSET`, `HGET`, `HVALS`,
//! `HLEN`, `HDEL`, `GET`, `SET`, `DEL`, `SADD`, `SREM`, `SRANDMEMBER` (the first members in
//! order, so runs replay), `PUBLISH`, `SUBSCRIBE`/`UNSUBSCRIBE` (RESP2 subscriber mode, with its
//! `PING`), `SCRIPT LOAD|FLUSH`, `EVAL` and `EVALSHA`. Scripts are not interpreted: the ones the
//! runtime uses ([`SET_LAST_SEEN_LUA`], [`RECORD_LAST_SEEN_LUA`], [`END_SESSION_LUA`],
//! [`RENEW_LEASE_LUA`], [`CLAIM_REAP_LUA`], [`DROP_LEASE_LUA`], [`REAP_MARK_LUA`], [`REAP_LUA`]) are
//! recognised by their SHA-1 and executed natively, with the Redis clock (`TIME`) = true virtual
//! time; the script cache and the subscriptions are gone after a restart, as in Redis.
//!
//! All data lives in [`RedisState`], reset every time the host software starts: a crash or
//! bounce loses everything, like a Redis without persistence.
//!
//! The host also checks two invariants as commands arrive: I7 (a session's registry entry is
//! removed only by the server that owns it, or by a reaper once the lease it was registered under
//! has expired) and I5 for cached values (no `last_seen` beyond true time plus the maximum skew).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use presence_core::time::UnixMillis;
use presence_runtime::store::redis::{
    CLAIM_REAP_LUA, DROP_LEASE_LUA, END_SESSION_LUA, REAP_LUA, REAP_MARK_LUA, RECORD_LAST_SEEN_LUA,
    RENEW_LEASE_LUA, SET_LAST_SEEN_LUA,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::rng::mix3;
use crate::world::{bounds, lock, Plant, World, EPOCH_MS};

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
    scripts: BTreeSet<String>,
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

enum Reply {
    Simple(&'static str),
    Err(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

fn bulk(b: impl Into<Vec<u8>>) -> Reply {
    Reply::Bulk(Some(b.into()))
}

impl Reply {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Simple(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
            Reply::Err(s) => out.extend_from_slice(format!("-{s}\r\n").as_bytes()),
            Reply::Int(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
            Reply::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            Reply::Bulk(Some(b)) => {
                out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Array(items) => {
                out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                for i in items {
                    i.write(out);
                }
            }
        }
    }

    fn show(&self) -> String {
        match self {
            Reply::Simple(s) => format!("+{s}"),
            Reply::Err(s) => format!("-{}", s.split(' ').next().unwrap_or("")),
            Reply::Int(n) => format!(":{n}"),
            Reply::Bulk(None) => "nil".into(),
            Reply::Bulk(Some(b)) if b.len() > 40 => format!("${}", b.len()),
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Reply::Array(items) if items.len() > 6 => format!("[{} items]", items.len()),
            Reply::Array(items) => {
                format!("[{}]", items.iter().map(Reply::show).collect::<Vec<_>>().join(","))
            }
        }
    }
}

/// SHA-1 of a script body, lowercase hex (what `EVALSHA` names).
pub fn sha1_hex(body: &[u8]) -> String {
    sha1_smol::Sha1::from(body).digest().to_string()
}

/// The runtime's scripts the host executes natively, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Script {
    SetLastSeen,
    RecordLastSeen,
    EndSession,
    ReapMark,
    RenewLease,
    ClaimReap,
    DropLease,
    Reap,
}

/// The script whose SHA-1 is `sha` (the digests are computed once per process).
fn script_of(sha: &str) -> Option<Script> {
    static SHAS: std::sync::OnceLock<Vec<(String, Script)>> = std::sync::OnceLock::new();
    let shas = SHAS.get_or_init(|| {
        [
            (SET_LAST_SEEN_LUA, Script::SetLastSeen),
            (RECORD_LAST_SEEN_LUA, Script::RecordLastSeen),
            (END_SESSION_LUA, Script::EndSession),
            (REAP_MARK_LUA, Script::ReapMark),
            (RENEW_LEASE_LUA, Script::RenewLease),
            (CLAIM_REAP_LUA, Script::ClaimReap),
            (DROP_LEASE_LUA, Script::DropLease),
            (REAP_LUA, Script::Reap),
        ]
        .into_iter()
        .map(|(body, script)| (sha1_hex(body.as_bytes()), script))
        .collect()
    });
    shas.iter().find(|(s, _)| s == sha).map(|&(_, script)| script)
}

/// Also the reply of a script whose `redis.call` hits a key of the wrong type: Redis 7 passes the
/// call's error on with its own code (`-WRONGTYPE ... script: <sha>, on @user_script:<line>.`),
/// where Redis 6 said `-ERR Error running script (call to f_<sha>): ... WRONGTYPE ...`.
const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// `s` as Redis parses an integer (`string2ll`, as `INCR` does): an optional `-`, then digits
/// without a leading zero (`0` alone is fine), within i64. No `+`, no spaces, no `-0`.
fn redis_int(s: &[u8]) -> Option<i64> {
    let digits = s.strip_prefix(b"-").unwrap_or(s);
    let leading_zero = digits.first() == Some(&b'0') && s.len() > 1;
    if digits.is_empty() || leading_zero || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Whether `s` is the fixed-width timestamp the scripts' Lua pattern accepts.
fn well_formed(s: &[u8]) -> bool {
    const SHAPE: &[u8; 24] = b"dddd-dd-ddTdd:dd:dd.dddZ";
    s.len() == 24 && s.iter().zip(SHAPE).all(|(c, p)| if *p == b'd' { c.is_ascii_digit() } else { c == p })
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
            scripts: BTreeSet::new(),
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
    fn subscribe_cmd(&mut self, conn: u64, subscribe: bool, channels: &[Vec<u8>]) -> Vec<u8> {
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
    fn subscribed(&self, conn: u64) -> bool {
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

    fn get_str(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        match self.db.get(key) {
            None => Ok(None),
            Some(Val::Str(s)) => Ok(Some(s.clone())),
            Some(_) => Err(WRONGTYPE.into()),
        }
    }

    fn set_mut(&mut self, key: &[u8]) -> Result<&mut BTreeSet<Vec<u8>>, String> {
        match self.db.entry(key.to_vec()).or_insert_with(|| Val::Set(BTreeSet::new())) {
            Val::Set(s) => Ok(s),
            _ => Err(WRONGTYPE.into()),
        }
    }

    fn zset_mut(&mut self, key: &[u8]) -> Result<&mut BTreeMap<Vec<u8>, i64>, String> {
        match self.db.entry(key.to_vec()).or_insert_with(|| Val::ZSet(BTreeMap::new())) {
            Val::ZSet(z) => Ok(z),
            _ => Err(WRONGTYPE.into()),
        }
    }

    fn zscore(&self, key: &[u8], member: &[u8]) -> Result<Option<i64>, String> {
        match self.db.get(key) {
            None => Ok(None),
            Some(Val::ZSet(z)) => Ok(z.get(member).copied()),
            Some(_) => Err(WRONGTYPE.into()),
        }
    }

    fn hget(&self, key: &[u8], field: &[u8]) -> Result<Option<Vec<u8>>, String> {
        match self.db.get(key) {
            None => Ok(None),
            Some(Val::Hash(h)) => Ok(h.get(field).cloned()),
            Some(_) => Err(WRONGTYPE.into()),
        }
    }

    fn hash_mut(&mut self, key: &[u8]) -> Result<&mut BTreeMap<Vec<u8>, Vec<u8>>, String> {
        let v = self.db.entry(key.to_vec()).or_insert_with(|| Val::Hash(BTreeMap::new()));
        match v {
            Val::Hash(h) => Ok(h),
            _ => Err(WRONGTYPE.into()),
        }
    }

    /// Redis removes a hash, set or sorted set when its last element goes.
    fn drop_if_empty(&mut self, key: &[u8]) {
        let empty = match self.db.get(key) {
            Some(Val::Hash(h)) => h.is_empty(),
            Some(Val::Set(s)) => s.is_empty(),
            Some(Val::ZSet(z)) => z.is_empty(),
            _ => false,
        };
        if empty {
            self.db.remove(key);
        }
    }

    /// The max-register both scripts share. `Ok(1)` if it wrote.
    fn max_register(&mut self, w: &World, key: &[u8], ts: &[u8]) -> Result<i64, String> {
        if let Some(v) = UnixMillis::parse_rfc3339(&String::from_utf8_lossy(ts)) {
            let limit = EPOCH_MS + w.now() as i64 + bounds::MAX_SKEW_MS;
            if v.0 > limit {
                w.violation(format!(
                    "I5 redis last_seen write {} is {} ms beyond true time + max skew",
                    String::from_utf8_lossy(key),
                    v.0 - limit
                ));
            }
        }
        let cur = self.get_str(key)?;
        if let Some(cur) = cur {
            if well_formed(&cur) && cur.as_slice() >= ts {
                return Ok(0);
            }
        }
        self.db.insert(key.to_vec(), Val::Str(ts.to_vec()));
        Ok(1)
    }

    /// Removes `field` from hash `key` on behalf of `peer`, checking ownership (I7).
    fn owner_delete(&mut self, w: &World, peer: &str, key: &[u8], field: &[u8]) -> Result<i64, String> {
        let fields: Vec<Vec<u8>> = match self.db.get(key) {
            None => return Ok(0),
            Some(Val::Hash(h)) => match self.plant {
                Some(Plant::UnconditionalDelete) => h.keys().cloned().collect(),
                _ => h.contains_key(field).then(|| field.to_vec()).into_iter().collect(),
            },
            Some(_) => return Err(WRONGTYPE.into()),
        };
        let mut n = 0;
        if let Some(Val::Hash(h)) = self.db.get_mut(key) {
            for f in fields {
                if let Some(owner) = h.remove(&f) {
                    n += 1;
                    if owner != peer.as_bytes() {
                        w.violation(format!(
                            "I7 {peer} removed registry entry {} of {} owned by {}",
                            String::from_utf8_lossy(&f),
                            String::from_utf8_lossy(key),
                            String::from_utf8_lossy(&owner)
                        ));
                    }
                }
            }
        }
        self.drop_if_empty(key);
        Ok(n)
    }

    fn run_script(&mut self, w: &World, peer: &str, sha: &str, keys: &[Vec<u8>], args: &[Vec<u8>]) -> Reply {
        let need = |k: usize, a: usize| {
            (keys.len() < k || args.len() < a)
                .then(|| Reply::Err("ERR Error running script: missing KEYS/ARGV".into()))
        };
        let Some(script) = script_of(sha) else {
            return Reply::Err("ERR sim redis: unsupported script".into());
        };
        let result = match script {
            Script::SetLastSeen => {
                if let Some(e) = need(2, 1) {
                    return e;
                }
                self.set_last_seen(w, keys, &args[0])
            }
            Script::RecordLastSeen => {
                if let Some(e) = need(2, 1) {
                    return e;
                }
                self.record_end(w, peer, &keys[0], &keys[1], &args[0])
            }
            Script::EndSession => {
                if let Some(e) = need(4, 2) {
                    return e;
                }
                self.owner_delete(w, peer, &keys[0], &args[0])
                    .and_then(|_| self.hdel(&keys[2], &args[0]))
                    .and_then(|_| self.record_end(w, peer, &keys[1], &keys[3], &args[1]))
            }
            Script::ReapMark => {
                if let Some(e) = need(3, 3) {
                    return e;
                }
                match self.hget(&keys[0], &args[0]) {
                    Ok(t) if t.as_deref() == Some(args[1].as_slice()) => {
                        self.record_end(w, peer, &keys[1], &keys[2], &args[2]).map(|_| 1)
                    }
                    Ok(_) => Ok(0),
                    Err(e) => Err(e),
                }
            }
            Script::RenewLease => {
                if let Some(e) = need(3, 4) {
                    return e;
                }
                return self.renew_lease(w, keys, args).unwrap_or_else(Reply::Err);
            }
            Script::ClaimReap => {
                if let Some(e) = need(3, 3) {
                    return e;
                }
                return self.claim_reap(w, keys, args).unwrap_or_else(Reply::Err);
            }
            Script::DropLease => {
                if let Some(e) = need(3, 1) {
                    return e;
                }
                self.drop_lease(w, keys, &args[0])
            }
            Script::Reap => {
                if let Some(e) = need(2, 2) {
                    return e;
                }
                self.reap(w, peer, keys, args)
            }
        };
        match result {
            Ok(n) => Reply::Int(n),
            Err(e) => Reply::Err(e),
        }
    }

    /// The Redis clock (`TIME`) in Unix ms: true virtual time.
    fn clock_ms(w: &World) -> i64 {
        EPOCH_MS + w.now() as i64
    }

    fn hdel(&mut self, key: &[u8], field: &[u8]) -> Result<i64, String> {
        let n = match self.db.get_mut(key) {
            None => 0,
            Some(Val::Hash(h)) => i64::from(h.remove(field).is_some()),
            Some(_) => return Err(WRONGTYPE.into()),
        };
        self.drop_if_empty(key);
        Ok(n)
    }

    /// [`RENEW_LEASE_LUA`].
    fn renew_lease(&mut self, w: &World, keys: &[Vec<u8>], args: &[Vec<u8>]) -> Result<Reply, String> {
        let now = Self::clock_ms(w);
        let server = String::from_utf8_lossy(&args[0]).into_owned();
        let ttl: i64 =
            std::str::from_utf8(&args[2]).ok().and_then(|s| s.parse().ok()).ok_or("ERR bad ttl")?;
        let mut token = String::from_utf8_lossy(&args[1]).into_owned();
        let exp = if token.is_empty() {
            None
        } else {
            self.zscore(&keys[0], format!("{server}#{token}").as_bytes())?
        };
        if exp.is_none_or(|e| e <= now) {
            // `INCR`: the counter must hold a Redis integer (else the script fails, having written
            // nothing yet), and must not overflow.
            let cur = match self.get_str(&keys[2])? {
                None => 0,
                Some(v) => redis_int(&v).ok_or("ERR value is not an integer or out of range")?,
            };
            let n = cur.checked_add(1).ok_or("ERR increment or decrement would overflow")?.max(now);
            self.db.insert(keys[2].clone(), Val::Str(n.to_string().into_bytes()));
            token = n.to_string();
        }
        let name = format!("{server}#{token}").into_bytes();
        self.zset_mut(&keys[0])?.insert(name.clone(), now + ttl);
        self.hash_mut(&keys[1])?.insert(name, args[3].clone());
        let z = match self.db.get(&keys[0]) {
            Some(Val::ZSet(z)) => z.clone(),
            _ => BTreeMap::new(),
        };
        // ZRANGEBYSCORE order: by score, then member.
        let mut by_score: Vec<(i64, Vec<u8>)> = z.into_iter().map(|(m, s)| (s, m)).collect();
        by_score.sort();
        let live = by_score.iter().filter(|(sc, _)| *sc > now).map(|(_, m)| bulk(m.clone())).collect();
        let dead =
            by_score.iter().filter(|(sc, _)| *sc <= now).take(16).map(|(_, m)| bulk(m.clone())).collect();
        Ok(Reply::Array(vec![bulk(token), Reply::Array(live), Reply::Array(dead)]))
    }

    /// [`CLAIM_REAP_LUA`].
    fn claim_reap(&mut self, w: &World, keys: &[Vec<u8>], args: &[Vec<u8>]) -> Result<Reply, String> {
        let now = Self::clock_ms(w);
        if self.zscore(&keys[0], &args[0])?.is_none_or(|e| e > now) {
            return Ok(Reply::Bulk(None));
        }
        if let Some(claim) = self.hget(&keys[2], &args[0])? {
            // Lua: `string.match(claim, '^(.*) (%d+)$')` splits at the last space, and only if
            // ASCII digits alone follow it (no sign); `tonumber(untl)` is a double, so an `untl`
            // beyond i64 is just a large number. A claim of any other shape is no claim.
            if let Some(at) = claim.iter().rposition(|&b| b == b' ') {
                let (who, until) = (&claim[..at], &claim[at + 1..]);
                let until = (!until.is_empty() && until.iter().all(u8::is_ascii_digit))
                    .then(|| String::from_utf8_lossy(until).parse::<f64>().ok())
                    .flatten();
                if who != args[1].as_slice() && until.is_some_and(|u| u > now as f64) {
                    return Ok(Reply::Bulk(None));
                }
            }
        }
        let ttl: i64 =
            std::str::from_utf8(&args[2]).ok().and_then(|s| s.parse().ok()).ok_or("ERR bad ttl")?;
        let claim = format!("{} {}", String::from_utf8_lossy(&args[1]), now + ttl);
        self.hash_mut(&keys[2])?.insert(args[0].clone(), claim.into_bytes());
        Ok(bulk(self.hget(&keys[1], &args[0])?.unwrap_or_else(|| b"0".to_vec())))
    }

    /// [`DROP_LEASE_LUA`].
    fn drop_lease(&mut self, w: &World, keys: &[Vec<u8>], lease: &[u8]) -> Result<i64, String> {
        let now = Self::clock_ms(w);
        if self.zscore(&keys[0], lease)?.is_some_and(|e| e <= now) {
            if let Ok(z) = self.zset_mut(&keys[0]) {
                z.remove(lease);
            }
            self.drop_if_empty(&keys[0]);
            self.hdel(&keys[1], lease)?;
            self.hdel(&keys[2], lease)?;
        }
        Ok(1)
    }

    /// [`REAP_LUA`]: compare-and-delete on the fencing token. I7: the lease of the removed entry
    /// must have expired (the lease set holds it expired).
    fn reap(&mut self, w: &World, peer: &str, keys: &[Vec<u8>], args: &[Vec<u8>]) -> Result<i64, String> {
        if self.hget(&keys[1], &args[0])?.as_deref() != Some(args[1].as_slice()) {
            return Ok(0);
        }
        if let Some(owner) = self.hget(&keys[0], &args[0])? {
            let lease = [owner.as_slice(), b"#", &args[1]].concat();
            let expiry = self.zscore(b"leases:{presence}", &lease)?;
            if expiry.is_some_and(|e| e > Self::clock_ms(w)) {
                w.violation(format!(
                    "I7 {peer} reaped registry entry {} of {} under the live lease {}",
                    String::from_utf8_lossy(&args[0]),
                    String::from_utf8_lossy(&keys[0]),
                    String::from_utf8_lossy(&lease)
                ));
            }
        }
        self.hdel(&keys[0], &args[0])?;
        self.hdel(&keys[1], &args[0])?;
        Ok(1)
    }

    /// `record_end` of the scripts: into the cache if it holds a well-formed value, else into the
    /// pending key.
    fn record_end(
        &mut self,
        w: &World,
        peer: &str,
        cache: &[u8],
        pending: &[u8],
        ts: &[u8],
    ) -> Result<i64, String> {
        let present = self.get_str(cache)?;
        let key = if present.is_some_and(|c| well_formed(&c)) { cache } else { pending };
        let wrote = self.max_register(w, key, ts)?;
        if wrote == 1 {
            self.recorded.insert(key.to_vec(), (ts.to_vec(), peer.to_owned(), w.now()));
        }
        Ok(wrote)
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

    /// [`SET_LAST_SEEN_LUA`]: max-register of the cache, then drop a pending value it covers.
    fn set_last_seen(&mut self, w: &World, keys: &[Vec<u8>], ts: &[u8]) -> Result<i64, String> {
        let wrote = self.max_register(w, &keys[0], ts)?;
        let cache = self.get_str(&keys[0])?;
        let pending = self.get_str(&keys[1])?;
        if let Some(p) = pending {
            if !well_formed(&p) || cache.is_some_and(|c| p <= c) {
                self.db.remove(&keys[1]);
            }
        }
        Ok(wrote)
    }

    /// Runs one command (`argv`, not empty) as host `peer` sent it and returns the reply encoded
    /// as RESP2, the bytes a client reads. The entry point of the differential test against a real
    /// redis-server (`sim/tests/redis_differential.rs`); the simulator itself goes through
    /// [`redis_main`]. Nothing is traced; the live checks (I5, I7) still report to `w`. The Redis
    /// clock is `EPOCH_MS + w.now()`: outside turmoil, set it with `w.outer_now`.
    pub fn execute(&mut self, w: &World, peer: &str, argv: &[Vec<u8>]) -> Vec<u8> {
        assert!(!argv.is_empty(), "a command has at least its name");
        let mut out = Vec::new();
        self.command(w, peer, argv).write(&mut out);
        out
    }

    fn command(&mut self, w: &World, peer: &str, argv: &[Vec<u8>]) -> Reply {
        self.commands += 1;
        let name = String::from_utf8_lossy(&argv[0]).to_ascii_uppercase();
        let arity = |n: usize| argv.len() >= n;
        let wrong =
            || Reply::Err(format!("ERR wrong number of arguments for '{}' command", name.to_lowercase()));
        match name.as_str() {
            "PING" => Reply::Simple("PONG"),
            "CLIENT" | "SELECT" => Reply::Simple("OK"),
            "INFO" => {
                let body = format!("# Server\r\nredis_version:7.0.0-sim\r\nrun_id:{}\r\n", self.run_id);
                Reply::Bulk(Some(body.into_bytes()))
            }
            "HSET" if arity(4) && argv.len().is_multiple_of(2) => match self.hash_mut(&argv[1]) {
                Ok(h) => {
                    let mut added = 0;
                    for pair in argv[2..].chunks(2) {
                        if h.insert(pair[0].clone(), pair[1].clone()).is_none() {
                            added += 1;
                        }
                    }
                    Reply::Int(added)
                }
                Err(e) => Reply::Err(e),
            },
            "HLEN" if arity(2) => match self.db.get(&argv[1]) {
                None => Reply::Int(0),
                Some(Val::Hash(h)) => Reply::Int(h.len() as i64),
                Some(_) => Reply::Err(WRONGTYPE.into()),
            },
            "HGET" if arity(3) => match self.hget(&argv[1], &argv[2]) {
                Ok(v) => Reply::Bulk(v),
                Err(e) => Reply::Err(e),
            },
            "HVALS" if arity(2) => match self.db.get(&argv[1]) {
                None => Reply::Array(Vec::new()),
                Some(Val::Hash(h)) => {
                    // In value order, not field order: fields are session ids, which carry the
                    // boot id `serve()` draws from the OS, so field order could differ between two
                    // runs of a seed (two incarnations of one server). Redis fixes no order either.
                    let mut vals: Vec<&Vec<u8>> = h.values().collect();
                    vals.sort();
                    Reply::Array(vals.into_iter().map(|v| bulk(v.clone())).collect())
                }
                Some(_) => Reply::Err(WRONGTYPE.into()),
            },
            "HDEL" if arity(3) => {
                let res = match self.db.get_mut(&argv[1]) {
                    None => Reply::Int(0),
                    Some(Val::Hash(h)) => {
                        Reply::Int(argv[2..].iter().filter(|f| h.remove(*f).is_some()).count() as i64)
                    }
                    Some(_) => Reply::Err(WRONGTYPE.into()),
                };
                self.drop_if_empty(&argv[1]);
                res
            }
            "SADD" if arity(3) => match self.set_mut(&argv[1]) {
                Ok(set) => Reply::Int(argv[2..].iter().filter(|m| set.insert(m.to_vec())).count() as i64),
                Err(e) => Reply::Err(e),
            },
            "SREM" if arity(3) => {
                let res = match self.db.get_mut(&argv[1]) {
                    None => Reply::Int(0),
                    Some(Val::Set(set)) => {
                        Reply::Int(argv[2..].iter().filter(|m| set.remove(*m)).count() as i64)
                    }
                    Some(_) => Reply::Err(WRONGTYPE.into()),
                };
                self.drop_if_empty(&argv[1]);
                res
            }
            "PUBLISH" if argv.len() == 3 => Reply::Int(self.publish(&argv[1], &argv[2])),
            "SRANDMEMBER" if argv.len() == 3 => {
                let Some(n) = std::str::from_utf8(&argv[2]).ok().and_then(|s| s.parse::<usize>().ok()) else {
                    return Reply::Err("ERR value is not an integer or out of range".into());
                };
                match self.db.get(&argv[1]) {
                    None => Reply::Array(Vec::new()),
                    Some(Val::Set(set)) => {
                        Reply::Array(set.iter().take(n).map(|m| bulk(m.clone())).collect())
                    }
                    Some(_) => Reply::Err(WRONGTYPE.into()),
                }
            }
            "GET" if arity(2) => match self.get_str(&argv[1]) {
                Ok(v) => Reply::Bulk(v),
                Err(e) => Reply::Err(e),
            },
            // A key of another type reads as nil, as in Redis (MGET never fails on types).
            "MGET" if arity(2) => Reply::Array(
                argv[1..]
                    .iter()
                    .map(|k| match self.db.get(k) {
                        Some(Val::Str(s)) => bulk(s.clone()),
                        _ => Reply::Bulk(None),
                    })
                    .collect(),
            ),
            "SET" if arity(3) => {
                self.db.insert(argv[1].clone(), Val::Str(argv[2].clone()));
                Reply::Simple("OK")
            }
            "DEL" if arity(2) => {
                Reply::Int(argv[1..].iter().filter(|k| self.db.remove(*k).is_some()).count() as i64)
            }
            "SCRIPT" if arity(2) => match String::from_utf8_lossy(&argv[1]).to_ascii_uppercase().as_str() {
                "LOAD" if arity(3) => {
                    let sha = sha1_hex(&argv[2]);
                    self.scripts.insert(sha.clone());
                    Reply::Bulk(Some(sha.into_bytes()))
                }
                "FLUSH" => {
                    self.scripts.clear();
                    Reply::Simple("OK")
                }
                _ => Reply::Err("ERR unknown SCRIPT subcommand".into()),
            },
            "EVALSHA" | "EVAL" if arity(3) => {
                let sha = if name == "EVAL" {
                    let sha = sha1_hex(&argv[1]);
                    self.scripts.insert(sha.clone());
                    sha
                } else {
                    String::from_utf8_lossy(&argv[1]).to_ascii_lowercase()
                };
                if !self.scripts.contains(&sha) {
                    return Reply::Err("NOSCRIPT No matching script. Please use EVAL.".into());
                }
                let Some(nkeys) = std::str::from_utf8(&argv[2]).ok().and_then(|s| s.parse::<usize>().ok())
                else {
                    return Reply::Err("ERR value is not an integer or out of range".into());
                };
                if argv.len() < 3 + nkeys {
                    return Reply::Err("ERR Number of keys can't be greater than number of args".into());
                }
                let (keys, args) = argv[3..].split_at(nkeys);
                self.run_script(w, peer, &sha, keys, args)
            }
            "HSET" | "HLEN" | "HGET" | "HVALS" | "HDEL" | "GET" | "MGET" | "SET" | "DEL" | "SADD"
            | "SREM" | "SRANDMEMBER" | "PUBLISH" | "SCRIPT" | "EVALSHA" | "EVAL" => wrong(),
            _ => Reply::Err(format!("ERR unknown command '{}'", name.to_lowercase())),
        }
    }
}

/// Parses one RESP array of bulk strings from the front of `buf`: `Ok(Some((args, used)))`,
/// `Ok(None)` if incomplete, `Err` if malformed.
/// One parsed command (its arguments) and the bytes it used.
type Parsed = Option<(Vec<Vec<u8>>, usize)>;

fn parse(buf: &[u8]) -> Result<Parsed, ()> {
    fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let rest = buf.get(at..)?;
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        Some((&rest[..end], at + end + 2))
    }
    fn num(b: &[u8]) -> Result<i64, ()> {
        std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).ok_or(())
    }
    let Some((head, mut at)) = line(buf, 0) else { return Ok(None) };
    if head.first() != Some(&b'*') {
        return Err(());
    }
    let n = num(&head[1..])?;
    if !(1..=1024).contains(&n) {
        return Err(());
    }
    let mut args = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let Some((h, next)) = line(buf, at) else { return Ok(None) };
        if h.first() != Some(&b'$') {
            return Err(());
        }
        let len = num(&h[1..])?;
        if !(0..=1 << 20).contains(&len) {
            return Err(());
        }
        let len = len as usize;
        if buf.len() < next + len + 2 {
            return Ok(None);
        }
        args.push(buf[next..next + len].to_vec());
        at = next + len + 2;
    }
    Ok(Some((args, at)))
}

fn show_args(argv: &[Vec<u8>]) -> String {
    argv.iter()
        .map(
            |a| {
                if a.len() > 40 {
                    format!("<{}B>", a.len())
                } else {
                    String::from_utf8_lossy(a).into_owned()
                }
            },
        )
        .collect::<Vec<_>>()
        .join(" ")
}

/// The Redis host's software: a fresh, empty Redis on port 6379.
pub async fn redis_main(w: Arc<World>) -> turmoil::Result {
    let incarnation = {
        let mut st = lock(&w.redis);
        st.start();
        st.incarnation
    };
    w.trace(format!("redis start incarnation={incarnation}"));
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", 6379)).await?;
    loop {
        let (stream, addr) = listener.accept().await?;
        let peer = turmoil::reverse_lookup(addr.ip()).unwrap_or_else(|| addr.ip().to_string());
        let w = w.clone();
        tokio::spawn(async move {
            let _ = serve_conn(w, peer, stream).await;
        });
    }
}

async fn serve_conn(w: Arc<World>, peer: String, mut stream: turmoil::net::TcpStream) -> std::io::Result<()> {
    let (tx, mut pushes) = tokio::sync::mpsc::unbounded_channel();
    let conn = {
        let mut st = lock(&w.redis);
        st.next_conn += 1;
        let id = st.next_conn;
        st.outboxes.insert(id, tx);
        id
    };
    let result = serve_loop(&w, &peer, conn, &mut stream, &mut pushes).await;
    let mut st = lock(&w.redis);
    st.outboxes.remove(&conn);
    for set in st.subs.values_mut() {
        set.remove(&conn);
    }
    st.subs.retain(|_, s| !s.is_empty());
    result
}

async fn serve_loop(
    w: &Arc<World>,
    peer: &str,
    conn: u64,
    stream: &mut turmoil::net::TcpStream,
    pushes: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        // Published messages and commands, in a fixed order so runs replay.
        let n = tokio::select! {
            biased;
            Some(msg) = pushes.recv() => {
                stream.write_all(&msg).await?;
                continue;
            }
            n = stream.read(&mut chunk) => n?,
        };
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut out = Vec::new();
        loop {
            match parse(&buf) {
                Ok(Some((argv, used))) => {
                    buf.drain(..used);
                    let name = String::from_utf8_lossy(&argv[0]).to_ascii_uppercase();
                    let mut st = lock(&w.redis);
                    let reply = match name.as_str() {
                        "SUBSCRIBE" | "UNSUBSCRIBE" if argv.len() >= 2 => {
                            st.subscribe_cmd(conn, name == "SUBSCRIBE", &argv[1..])
                        }
                        // RESP2 subscriber mode answers PING with `[pong, ""]`.
                        "PING" if st.subscribed(conn) => {
                            let mut o = Vec::new();
                            Reply::Array(vec![bulk("pong"), bulk("")]).write(&mut o);
                            o
                        }
                        _ => {
                            let reply = st.command(w, peer, &argv);
                            let mut o = Vec::new();
                            reply.write(&mut o);
                            if name != "INFO" && name != "CLIENT" {
                                w.trace(format!("redis<{peer} {} -> {}", show_args(&argv), reply.show()));
                            }
                            o
                        }
                    };
                    drop(st);
                    out.extend_from_slice(&reply);
                }
                Ok(None) => break,
                Err(()) => {
                    let _ = stream.write_all(b"-ERR Protocol error\r\n").await;
                    return Ok(());
                }
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resp_arrays() {
        let b = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n";
        let (a, used) = parse(b).unwrap().unwrap();
        assert_eq!(a, vec![b"GET".to_vec(), b"k".to_vec()]);
        let (a, _) = parse(&b[used..]).unwrap().unwrap();
        assert_eq!(a, vec![b"PING".to_vec()]);
        assert!(parse(b"*2\r\n$3\r\nGE").unwrap().is_none());
        assert!(parse(b"+x\r\n").is_err());
    }

    #[test]
    fn integers_parse_as_in_redis() {
        assert_eq!(redis_int(b"0"), Some(0));
        assert_eq!(redis_int(b"-5"), Some(-5));
        assert_eq!(redis_int(b"9223372036854775807"), Some(i64::MAX));
        for bad in
            [&b""[..], b"-", b"-0", b"05", b"+5", b" 5", b"5 ", b"1e3", b"12abc", b"9223372036854775808"]
        {
            assert_eq!(redis_int(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn timestamp_shape() {
        assert!(well_formed(b"2024-01-15T09:42:00.000Z"));
        assert!(!well_formed(b"2024-01-15T09:42:00.000+"));
        assert!(!well_formed(b"yesterday"));
    }
}
