//! Fidelity of the simulator's Redis host (`sim/src/redis_host/`, which runs the registry's real Lua scripts): a differential test against a
//! real redis-server (docs/SIMULATION.md, "Fidelity of the Redis host").
//!
//! `in_sim_redis_matches_real_redis` generates seeded random command sequences over a small key
//! space shaped like the real schema, sends each command to a real redis-server and to the in-sim
//! host ([`RedisState::execute`]), and compares every reply; at the end of each sequence it compares
//! the whole keyspace the sequence left behind. The sequences mix the runtime's own operations
//! (its scripts, sent as `redis::Script` sends them: `EVALSHA`, and on `NOSCRIPT` a `SCRIPT LOAD`
//! and `EVALSHA` again; sometimes `EVAL` of the full text or a bare `EVALSHA`) with plain commands
//! on any key, so keys hold garbage and the wrong types.
//!
//! ```text
//! redis-server --port 6392 --save '' --appendonly no --daemonize yes
//! PRESENCE_TEST_REDIS_URL=redis://127.0.0.1:6392 \
//!     cargo test -p presence-sim --test redis_differential -- --include-ignored --nocapture
//! redis-cli -p 6392 shutdown nosave
//! ```
//!
//! `PRESENCE_REDIS_DIFF_CASES` (default 400) and `PRESENCE_REDIS_DIFF_SEED` (default 1) widen or
//! move the search; the default is a fixed, reproducible set. proptest shrinks a failing sequence
//! and prints it with the transcript of the minimal one.
//!
//! `embedded_registry_matches_real_redis` (module `embedded`) checks the other native copy of the
//! registry's meaning, the embedded registry, the same way, op by op against the production
//! executor on the real server.
//!
//! The other tests are fixed sequences of the cases where the host once answered otherwise than
//! Redis, run against the in-sim host alone (no server needed): they assert the replies real
//! Redis 7.0 gave.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use presence_runtime::store::redis::RegistryScript as Script;
use presence_sim::redis_host::{RedisState, Val};
use presence_sim::world::{lock, World, EPOCH_MS};
use presence_sim::Params;
use proptest::prelude::*;

#[path = "redis_differential/embedded.rs"]
mod embedded;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use redis::{ConnectionLike, Value};

/// The real redis-server is shared by the tests of this binary, which the test harness runs in
/// parallel: each flushes the script cache and counts NOSCRIPT replies, so they take turns.
static REAL_REDIS: std::sync::Mutex<()> = std::sync::Mutex::new(());

const NEEDS: &str = "PRESENCE_TEST_REDIS_URL is not set: this test needs a real redis-server, \
                     e.g. PRESENCE_TEST_REDIS_URL=redis://127.0.0.1:6392 (run it via scripts/test)";

// ---------------------------------------------------------------------------------------------
// The command space
// ---------------------------------------------------------------------------------------------

const USERS: u8 = 3;
const SESSIONS: u8 = 4;
const SERVERS: u8 = 2;

/// Well-formed fixed-width timestamps (what the runtime writes), close together so that the
/// max-register's comparisons go both ways and tie. The last has the shape but is no date: the
/// scripts only check the shape.
const TIMESTAMPS: &[&str] = &[
    "2024-01-15T09:42:00.000Z",
    "2024-01-15T09:42:00.001Z",
    "2024-01-15T09:41:59.999Z",
    "2023-12-31T23:59:59.999Z",
    "2024-01-15T10:00:00.000Z",
    "9999-99-99T99:99:99.999Z",
];

/// Not the fixed-width shape (ASCII only: Lua compares strings with `strcoll`, and the server's
/// collation locale is not the test's business).
const GARBAGE: &[&str] = &[
    "",
    "yesterday",
    "2024-01-15T09:42:00Z",
    "2024-01-15T09:42:00.000+",
    "2024-01-15 09:42:00.000Z",
    "2024-01-15T09:42:00.000Z ",
    "2024-01-15T09:42:00.0000Z",
    "ZZZZ-01-15T09:42:00.000Z",
];

/// Numbers and near-numbers, for the token counter (`INCR` parses strictly) and the lease hashes.
/// Nothing above 2^53 but i64::MAX: Lua numbers are doubles, and the counter never gets there.
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "42",
    "-5",
    "+5",
    "05",
    " 5",
    "12abc",
    "1e3",
    "-0",
    "9999999999999",
    "9223372036854775807",
    "1705300000000",
];

/// Token literals, beside the tokens the renewals issued.
const TOKEN_LITS: &[&str] = &["1", "42", "0", "x", ""];

/// Lease TTLs (ms): 0 is expired at once; 1-5 ms expire between two commands, or not (both sides
/// run on the real server's clock, so the comparison is exact either way).
const RENEW_TTLS: &[u64] = &[0, 1, 2, 5, 3_600_000, 7_200_000];
const CLAIM_TTLS: &[u64] = &[0, 1, 3_600_000];
/// The holder's wall clock the renewal records.
const WALLS: &[&str] = &["1705300000123", "1705300004000", "0"];
/// Count of the `SRANDMEMBER`s: 0, or more than any set here can hold (a sequence has at most 45
/// operations of at most 3 members): the reply is then the whole set, in an order real Redis does
/// not fix, so it is compared as a set.
const WHOLE_SET: u64 = 1_000;
const SRAND_COUNTS: &[u64] = &[0, WHOLE_SET];

/// A lease token: the `i`-th one the renewals of this sequence issued (resolved when the command is
/// sent, so later commands name leases that exist), or a literal.
#[derive(Clone, Copy, Debug)]
enum Tok {
    Issued(u8),
    Lit(u8),
}

/// A key of the schema (users, servers and the `{presence}` keys carry the run's prefix).
#[derive(Clone, Copy, Debug)]
enum K {
    Ws(u8),
    WsLease(u8),
    LastSeen(u8),
    Pending(u8),
    /// `read_view:{u}`.
    View(u8),
    /// `sessions:{<server>#<token>}`.
    Index(u8, Tok),
    Leases,
    Renewed,
    Claims,
    Counter,
}

/// A value (or hash field, or set member).
#[derive(Clone, Copy, Debug)]
enum V {
    Ts(u8),
    Garbage(u8),
    Num(u8),
    Tok(Tok),
    Server(u8),
    Session(u8),
    /// A lease index member `<user> <session>`.
    Member(u8, u8),
    /// A lease name `<server>#<token>`.
    Lease(u8, Tok),
    /// A reaper's claim `<claimer> <until ms>`, well-formed or not.
    Claim(u8),
}
const CLAIMS: u8 = 7;

/// How a script is sent.
#[derive(Clone, Copy, Debug)]
enum How {
    /// As `redis::Script::invoke` (the runtime): `EVALSHA`; on `NOSCRIPT`, `SCRIPT LOAD` and again.
    Invoke,
    /// `EVAL` of the full text.
    Eval,
    /// A bare `EVALSHA` (`NOSCRIPT` unless loaded).
    EvalSha,
}

/// One step of a sequence: an operation of the runtime's Redis executor (one or more commands,
/// as `runtime/src/store/redis.rs` `run_op` sends them), or one plain command.
#[derive(Clone, Debug)]
enum Op {
    Register {
        u: u8,
        s: u8,
        srv: u8,
        tok: Tok,
    },
    EndSession {
        u: u8,
        s: u8,
        ts: V,
        srv: u8,
        tok: Option<Tok>,
        how: How,
    },
    SetLastSeen {
        u: u8,
        ts: V,
        how: How,
    },
    RecordLastSeen {
        u: u8,
        ts: V,
        how: How,
    },
    Read {
        users: Vec<u8>,
    },
    Renew {
        srv: u8,
        tok: Option<Tok>,
        ttl: u8,
        wall: u8,
        how: How,
    },
    /// `n` fresh leases expired at once (a fleet restarting): more than the 16 expired leases a
    /// renewal lists.
    RenewBurst {
        srv: u8,
        n: u8,
    },
    Claim {
        srv: u8,
        tok: Tok,
        claimer: u8,
        ttl: u8,
        how: How,
    },
    Drop {
        srv: u8,
        tok: Tok,
        how: How,
    },
    MarkReaped {
        u: u8,
        s: u8,
        tok: Tok,
        ts: V,
        how: How,
    },
    Reap {
        u: u8,
        s: u8,
        srv: u8,
        tok: Tok,
        how: How,
    },
    /// Another reaper's claim on a lease, well-formed or not (`HSET lease_claims`).
    PutClaim {
        srv: u8,
        tok: Tok,
        claim: u8,
    },
    Set(K, V),
    Get(K),
    Hset(K, Vec<(V, V)>),
    Hget(K, V),
    Hvals(K),
    Hlen(K),
    Hdel(K, Vec<V>),
    Sadd(K, Vec<V>),
    Srem(K, Vec<V>),
    Srandmember(K, u8),
    Del(Vec<K>),
    ScriptLoad(u8),
    ScriptFlush,
    Ping,
}

/// The test's view of the runtime's scripts.
trait ScriptExt: Sized {
    fn body(self) -> &'static str;
    fn sha(self) -> String;
    fn timed(self) -> bool;
    fn by_sha(sha: &[u8]) -> Option<Self>;
    fn by_body(body: &[u8]) -> Option<Self>;
}

impl ScriptExt for Script {
    fn body(self) -> &'static str {
        self.source()
    }

    fn sha(self) -> String {
        self.sha1().to_owned()
    }

    /// Reads the Redis clock (`TIME`).
    fn timed(self) -> bool {
        self.reads_clock()
    }

    fn by_sha(sha: &[u8]) -> Option<Script> {
        Script::by_sha1(&String::from_utf8_lossy(sha))
    }

    fn by_body(body: &[u8]) -> Option<Script> {
        Script::ALL.into_iter().find(|s| s.source().as_bytes() == body)
    }
}

fn tok() -> BoxedStrategy<Tok> {
    prop_oneof![
        4 => (0u8..4).prop_map(Tok::Issued),
        1 => (0..TOKEN_LITS.len() as u8).prop_map(Tok::Lit),
    ]
    .boxed()
}

/// A timestamp argument: nearly always well-formed (the runtime only sends those).
fn ts() -> BoxedStrategy<V> {
    prop_oneof![
        8 => (0..TIMESTAMPS.len() as u8).prop_map(V::Ts),
        1 => (0..GARBAGE.len() as u8).prop_map(V::Garbage),
    ]
    .boxed()
}

fn value() -> BoxedStrategy<V> {
    prop_oneof![
        3 => (0..TIMESTAMPS.len() as u8).prop_map(V::Ts),
        2 => (0..GARBAGE.len() as u8).prop_map(V::Garbage),
        2 => (0..NUMBERS.len() as u8).prop_map(V::Num),
        2 => tok().prop_map(V::Tok),
        1 => (0..SERVERS).prop_map(V::Server),
        1 => (0..SESSIONS).prop_map(V::Session),
        2 => (0..USERS, 0..SESSIONS).prop_map(|(u, s)| V::Member(u, s)),
        1 => (0..SERVERS, tok()).prop_map(|(s, t)| V::Lease(s, t)),
        2 => (0..CLAIMS).prop_map(V::Claim),
    ]
    .boxed()
}

/// A hash field: mostly a session or a lease name, the fields the schema has.
fn field() -> BoxedStrategy<V> {
    prop_oneof![
        3 => (0..SESSIONS).prop_map(V::Session),
        3 => (0..SERVERS, tok()).prop_map(|(s, t)| V::Lease(s, t)),
        1 => value(),
    ]
    .boxed()
}

fn key() -> BoxedStrategy<K> {
    prop_oneof![
        (0..USERS).prop_map(K::Ws),
        (0..USERS).prop_map(K::WsLease),
        (0..USERS).prop_map(K::LastSeen),
        (0..USERS).prop_map(K::Pending),
        (0..USERS).prop_map(K::View),
        (0..SERVERS, tok()).prop_map(|(s, t)| K::Index(s, t)),
        Just(K::Leases),
        Just(K::Renewed),
        Just(K::Claims),
        Just(K::Counter),
    ]
    .boxed()
}

fn how() -> BoxedStrategy<How> {
    prop_oneof![6 => Just(How::Invoke), 2 => Just(How::Eval), 2 => Just(How::EvalSha)].boxed()
}

fn op() -> BoxedStrategy<Op> {
    let u = || 0..USERS;
    let s = || 0..SESSIONS;
    let srv = || 0..SERVERS;
    // `Ping` first: proptest shrinks a variant towards the first one, so the steps a failure
    // does not need end up as PINGs (left out of the printed sequence).
    prop_oneof![
        1 => Just(Op::Ping),
        6 => (u(), s(), srv(), tok()).prop_map(|(u, s, srv, tok)| Op::Register { u, s, srv, tok }),
        5 => (u(), s(), ts(), srv(), prop::option::weighted(0.8, tok()), how())
            .prop_map(|(u, s, ts, srv, tok, how)| Op::EndSession { u, s, ts, srv, tok, how }),
        3 => (u(), ts(), how()).prop_map(|(u, ts, how)| Op::SetLastSeen { u, ts, how }),
        2 => (u(), ts(), how()).prop_map(|(u, ts, how)| Op::RecordLastSeen { u, ts, how }),
        3 => prop::collection::vec(u(), 1..=3).prop_map(|users| Op::Read { users }),
        5 => (srv(), prop::option::weighted(0.6, tok()), 0..RENEW_TTLS.len() as u8, 0..WALLS.len() as u8, how())
            .prop_map(|(srv, tok, ttl, wall, how)| Op::Renew { srv, tok, ttl, wall, how }),
        1 => (srv(), 1u8..=18).prop_map(|(srv, n)| Op::RenewBurst { srv, n }),
        4 => (srv(), tok(), srv(), 0..CLAIM_TTLS.len() as u8, how())
            .prop_map(|(srv, tok, claimer, ttl, how)| Op::Claim { srv, tok, claimer, ttl, how }),
        2 => (srv(), tok(), how()).prop_map(|(srv, tok, how)| Op::Drop { srv, tok, how }),
        2 => (u(), s(), tok(), ts(), how())
            .prop_map(|(u, s, tok, ts, how)| Op::MarkReaped { u, s, tok, ts, how }),
        2 => (u(), s(), srv(), tok(), how()).prop_map(|(u, s, srv, tok, how)| Op::Reap { u, s, srv, tok, how }),
        2 => (srv(), tok(), 0..CLAIMS).prop_map(|(srv, tok, claim)| Op::PutClaim { srv, tok, claim }),
        2 => (key(), value()).prop_map(|(k, v)| Op::Set(k, v)),
        2 => key().prop_map(Op::Get),
        2 => (key(), prop::collection::vec((field(), value()), 1..=3)).prop_map(|(k, p)| Op::Hset(k, p)),
        1 => (key(), field()).prop_map(|(k, f)| Op::Hget(k, f)),
        1 => key().prop_map(Op::Hvals),
        1 => key().prop_map(Op::Hlen),
        1 => (key(), prop::collection::vec(field(), 1..=3)).prop_map(|(k, f)| Op::Hdel(k, f)),
        2 => (key(), prop::collection::vec(value(), 1..=3)).prop_map(|(k, m)| Op::Sadd(k, m)),
        1 => (key(), prop::collection::vec(value(), 1..=3)).prop_map(|(k, m)| Op::Srem(k, m)),
        1 => (key(), 0..SRAND_COUNTS.len() as u8).prop_map(|(k, c)| Op::Srandmember(k, c)),
        2 => prop::collection::vec(key(), 1..=2).prop_map(Op::Del),
        1 => (0..Script::ALL.len() as u8).prop_map(Op::ScriptLoad),
        1 => Just(Op::ScriptFlush),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

/// Every key of a run contains `run` (the users', servers' and `{presence}` keys' prefix), so the
/// run's keys are exactly those matching `*<run>-*`, and hash tags stay those of the schema.
struct Names {
    run: String,
}

impl Names {
    fn user(&self, u: u8) -> String {
        format!("{}-u{u}", self.run)
    }

    fn server(&self, s: u8) -> String {
        format!("{}-srv{s}", self.run)
    }

    fn session(&self, s: u8) -> String {
        format!("sess{s}")
    }

    fn pattern(&self) -> String {
        format!("*{}-*", self.run)
    }

    fn claim(&self, i: u8) -> String {
        let (s0, s1) = (self.server(0), self.server(1));
        match i % CLAIMS {
            0 => format!("{s0} 99999999999999"),  // held by srv0 until the year 5138
            1 => format!("{s1} 1"),               // expired long ago
            2 => format!("{s1} +99999999999999"), // not digits for Lua's %d+
            3 => format!("{s0} 99999999999999999999"), // beyond i64
            4 => "nospace".to_owned(),
            5 => format!("{s1} "),
            _ => format!("{s0} 12x"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------------

/// How a reply is compared.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Exact,
    /// An array whose order real Redis does not fix (`HVALS`, `SRANDMEMBER` of a whole set).
    Unordered,
}

/// The comparable form of a reply: errors by their first word (`-WRONGTYPE`), strings quoted.
fn canon(v: &Value, cmp: Cmp) -> String {
    match v {
        Value::Nil => "nil".to_owned(),
        Value::Int(n) => format!(":{n}"),
        Value::BulkString(b) => format!("{:?}", String::from_utf8_lossy(b)),
        Value::SimpleString(s) => format!("+{s}"),
        Value::Okay => "+OK".to_owned(),
        Value::ServerError(e) => format!("-{}", e.code()),
        Value::Array(items) => {
            let mut items: Vec<String> = items.iter().map(|i| canon(i, Cmp::Exact)).collect();
            if cmp == Cmp::Unordered {
                items.sort();
            }
            format!("[{}]", items.join(", "))
        }
        other => format!("unexpected {other:?}"),
    }
}

/// A reply in full, for the transcript.
fn full(v: &Value) -> String {
    match v {
        Value::ServerError(e) => format!("-{} {}", e.code(), e.details().unwrap_or("")),
        Value::Array(items) => format!("[{}]", items.iter().map(full).collect::<Vec<_>>().join(", ")),
        other => canon(other, Cmp::Exact),
    }
}

fn is_noscript(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.code() == "NOSCRIPT")
}

/// A command for the transcript: scripts by name.
fn show_cmd(argv: &[Vec<u8>]) -> String {
    let mut out = Vec::new();
    for (i, a) in argv.iter().enumerate() {
        let name = match i {
            1 if argv[0].eq_ignore_ascii_case(b"EVALSHA") => {
                Script::by_sha(a).map(|s| format!("<sha {s:?}>"))
            }
            1 if argv[0].eq_ignore_ascii_case(b"EVAL") => Script::by_body(a).map(|s| format!("<{s:?} text>")),
            2 if argv[0].eq_ignore_ascii_case(b"SCRIPT") => {
                Script::by_body(a).map(|s| format!("<{s:?} text>"))
            }
            _ => None,
        };
        out.push(name.unwrap_or_else(|| format!("{:?}", String::from_utf8_lossy(a))));
    }
    out.join(" ")
}

fn show_val(v: &Val) -> String {
    let s = |b: &Vec<u8>| format!("{:?}", String::from_utf8_lossy(b));
    match v {
        Val::Str(b) => s(b),
        Val::Hash(h) => format!(
            "hash{{{}}}",
            h.iter().map(|(k, v)| format!("{}: {}", s(k), s(v))).collect::<Vec<_>>().join(", ")
        ),
        Val::Set(m) => format!("set{{{}}}", m.iter().map(s).collect::<Vec<_>>().join(", ")),
        Val::ZSet(z) => format!(
            "zset{{{}}}",
            z.iter().map(|(k, v)| format!("{}: {v}", s(k))).collect::<Vec<_>>().join(", ")
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// The real server
// ---------------------------------------------------------------------------------------------

fn real_cmd(con: &mut redis::Connection, argv: &[Vec<u8>]) -> Value {
    let mut cmd = redis::cmd(&String::from_utf8_lossy(&argv[0]));
    for a in &argv[1..] {
        cmd.arg(a.as_slice());
    }
    // `req_command` hands error replies back as `Value::ServerError`; an `Err` is I/O.
    con.req_command(&cmd).unwrap_or_else(|e| panic!("redis-server: {}: {e}", show_cmd(argv)))
}

fn args(parts: &[&[u8]]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.to_vec()).collect()
}

fn bulk(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    }
}

fn array(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        other => panic!("expected an array, got {other:?}"),
    }
}

/// The server's clock (`TIME`): (Unix ms, microseconds into that ms).
fn real_time(con: &mut redis::Connection) -> (i64, i64) {
    let t = array(real_cmd(con, &args(&[b"TIME"])));
    let num = |v: &Value| -> i64 { String::from_utf8_lossy(&bulk(v).expect("TIME")).parse().expect("TIME") };
    let (s, us) = (num(&t[0]), num(&t[1]));
    (s * 1000 + us / 1000, us % 1000)
}

/// Every key of the run (`SCAN MATCH`).
fn real_keys(con: &mut redis::Connection, pattern: &str) -> BTreeSet<Vec<u8>> {
    let mut keys = BTreeSet::new();
    let mut cursor = b"0".to_vec();
    loop {
        let reply =
            array(real_cmd(con, &args(&[b"SCAN", &cursor, b"MATCH", pattern.as_bytes(), b"COUNT", b"1000"])));
        cursor = bulk(&reply[0]).expect("SCAN cursor");
        keys.extend(array(reply[1].clone()).iter().map(|k| bulk(k).expect("SCAN key")));
        if cursor == b"0" {
            return keys;
        }
    }
}

/// The run's keyspace on the real server, in the in-sim host's terms.
fn real_state(con: &mut redis::Connection, pattern: &str) -> BTreeMap<Vec<u8>, Val> {
    let mut state = BTreeMap::new();
    for key in real_keys(con, pattern) {
        let ty = real_cmd(con, &args(&[b"TYPE", &key]));
        let ty = String::from_utf8_lossy(&bulk(&ty).expect("TYPE")).into_owned();
        let items = |con: &mut redis::Connection, cmd: &[&[u8]]| -> Vec<Vec<u8>> {
            array(real_cmd(con, &args(cmd))).iter().map(|v| bulk(v).expect("member")).collect()
        };
        let val = match ty.as_str() {
            "string" => Val::Str(bulk(&real_cmd(con, &args(&[b"GET", &key]))).expect("GET")),
            "hash" => {
                let kv = items(con, &[b"HGETALL", &key]);
                Val::Hash(kv.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect())
            }
            "set" => Val::Set(items(con, &[b"SMEMBERS", &key]).into_iter().collect()),
            "zset" => {
                let kv = items(con, &[b"ZRANGE", &key, b"0", b"-1", b"WITHSCORES"]);
                Val::ZSet(
                    kv.chunks(2)
                        .map(|p| {
                            let score: f64 = String::from_utf8_lossy(&p[1]).parse().expect("score");
                            assert_eq!(score.fract(), 0.0, "the scripts only write integer scores");
                            (p[0].clone(), score as i64)
                        })
                        .collect(),
                )
            }
            other => {
                panic!("key {} has type {other}: the test never creates one", String::from_utf8_lossy(&key))
            }
        };
        state.insert(key, val);
    }
    state
}

/// Deletes the run's keys (`SCAN MATCH` + `DEL`).
fn wipe(con: &mut redis::Connection, pattern: &str) {
    for key in real_keys(con, pattern) {
        real_cmd(con, &[b"DEL".to_vec(), key]);
    }
}

/// Deletes the run's keys when the test ends, also when it fails, and checks that none is left.
struct Wipe {
    url: String,
    pattern: String,
}

impl Wipe {
    /// Deletes the keys matching the pattern; returns how many there were. Never panics (it runs
    /// while a failure unwinds).
    fn delete(&self) -> redis::RedisResult<usize> {
        let mut con = redis::Client::open(self.url.as_str())?.get_connection()?;
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&self.pattern)
                .arg("COUNT")
                .arg(1000)
                .query(&mut con)?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        for key in &keys {
            redis::cmd("DEL").arg(key).query::<i64>(&mut con)?;
        }
        Ok(keys.len())
    }
}

impl Drop for Wipe {
    fn drop(&mut self) {
        // Delete, then look again: the second pass must find nothing.
        let outcome = match self.delete().and_then(|_| self.delete()) {
            Ok(0) => return,
            Ok(n) => {
                format!("{n} keys matching {} were still on {} after deleting them", self.pattern, self.url)
            }
            Err(e) => format!("could not delete the keys matching {} on {}: {e}", self.pattern, self.url),
        };
        if std::thread::panicking() {
            eprintln!("{outcome}");
        } else {
            panic!("{outcome}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One sequence against both
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Stats {
    sequences: u64,
    commands: u64,
    timed: u64,
    /// Timed commands during which the server's clock crossed a millisecond.
    wide: u64,
    /// ... and whose millisecond only the keyspace told.
    by_state: u64,
    /// Error replies by code (both sides agreed on each).
    errors: BTreeMap<String, u64>,
}

struct Case<'a> {
    con: &'a mut redis::Connection,
    names: &'a Names,
    stats: &'a mut Stats,
    w: Arc<World>,
    /// Tokens the renewals issued, in order (`Tok::Issued`).
    issued: Vec<String>,
    transcript: Vec<String>,
}

impl Case<'_> {
    fn tok(&self, t: Tok) -> String {
        match t {
            Tok::Issued(i) if !self.issued.is_empty() => self.issued[i as usize % self.issued.len()].clone(),
            Tok::Issued(_) => "1".to_owned(),
            Tok::Lit(i) => TOKEN_LITS[i as usize].to_owned(),
        }
    }

    fn lease(&self, srv: u8, t: Tok) -> String {
        format!("{}#{}", self.names.server(srv), self.tok(t))
    }

    fn member(&self, u: u8, s: u8) -> String {
        format!("{} {}", self.names.user(u), self.names.session(s))
    }

    fn key(&self, k: K) -> String {
        let n = self.names;
        match k {
            K::Ws(u) => format!("ws:{{{}}}", n.user(u)),
            K::WsLease(u) => format!("ws_lease:{{{}}}", n.user(u)),
            K::LastSeen(u) => format!("last_seen:{{{}}}", n.user(u)),
            K::Pending(u) => format!("last_seen_pending:{{{}}}", n.user(u)),
            K::View(u) => format!("read_view:{{{}}}", n.user(u)),
            K::Index(s, t) => format!("sessions:{{{}}}", self.lease(s, t)),
            K::Leases => format!("{}-leases:{{presence}}", n.run),
            K::Renewed => format!("{}-lease_renewed:{{presence}}", n.run),
            K::Claims => format!("{}-lease_claims:{{presence}}", n.run),
            K::Counter => format!("{}-lease_token:{{presence}}", n.run),
        }
    }

    fn val(&self, v: V) -> String {
        match v {
            V::Ts(i) => TIMESTAMPS[i as usize].to_owned(),
            V::Garbage(i) => GARBAGE[i as usize].to_owned(),
            V::Num(i) => NUMBERS[i as usize].to_owned(),
            V::Tok(t) => self.tok(t),
            V::Server(s) => self.names.server(s),
            V::Session(s) => self.names.session(s),
            V::Member(u, s) => self.member(u, s),
            V::Lease(s, t) => self.lease(s, t),
            V::Claim(i) => self.names.claim(i),
        }
    }

    fn set_clock(&self, ms: i64) {
        self.w.outer_now.store((ms - EPOCH_MS) as u64, Ordering::Relaxed);
    }

    fn sim(&self, peer: &str, argv: &[Vec<u8>]) -> Value {
        let bytes = lock(&self.w.redis).execute(&self.w, peer, argv);
        redis::parse_redis_value(&bytes).expect("the in-sim host's reply parses as RESP")
    }

    fn diverged(&self, what: String) -> TestCaseError {
        let tail = self.transcript.len().saturating_sub(60);
        TestCaseError::fail(format!(
            "{what}\ntranscript (command -> real reply):\n  {}",
            self.transcript[tail..].join("\n  ")
        ))
    }

    /// Sends `argv` to both and compares the replies; returns the real one. A timed command (a
    /// script reading `TIME`) is sent early in a millisecond of the server's clock and bracketed
    /// by two `TIME`s; the in-sim host runs it at each millisecond in between (usually
    /// one), from the same state, and the run whose reply matches is kept. If several match with
    /// different resulting keyspaces, the real keyspace decides.
    fn exec(
        &mut self,
        peer: &str,
        argv: Vec<Vec<u8>>,
        cmp: Cmp,
        timed: bool,
    ) -> Result<Value, TestCaseError> {
        self.stats.commands += 1;
        let n = self.transcript.len() + 1;
        let count_error = |stats: &mut Stats, v: &Value| {
            if let Value::ServerError(e) = v {
                *stats.errors.entry(e.code().to_owned()).or_default() += 1;
            }
        };
        let shown = show_cmd(&argv);
        if !timed {
            let real = real_cmd(self.con, &argv);
            count_error(self.stats, &real);
            self.transcript.push(format!("#{n} {shown} -> {}", full(&real)));
            let sim = self.sim(peer, &argv);
            if canon(&sim, cmp) != canon(&real, cmp) {
                return Err(self.diverged(format!(
                    "divergence at #{n} {shown}\n  real:   {}\n  in-sim: {}",
                    full(&real),
                    full(&sim)
                )));
            }
            return Ok(real);
        }
        self.stats.timed += 1;
        // Start in the first 0.7 ms of a millisecond, so that the command most often runs within
        // it (a window of one millisecond: one run of the in-sim host).
        let before = loop {
            let (ms, us) = real_time(self.con);
            if us < 700 {
                break ms;
            }
            std::thread::sleep(Duration::from_micros((1000 - us) as u64 + 20));
        };
        let real = real_cmd(self.con, &argv);
        let (after, _) = real_time(self.con);
        count_error(self.stats, &real);
        self.transcript.push(format!("#{n} {shown} -> {} (server clock {before}..={after} ms)", full(&real)));
        assert!(after >= before && after - before < 5_000, "the server's clock jumped: {before} -> {after}");
        if after > before {
            self.stats.wide += 1;
        }
        let start = lock(&self.w.redis).clone();
        let mut first = None;
        let mut matching: Vec<RedisState> = Vec::new();
        for ms in before..=after {
            *lock(&self.w.redis) = start.clone();
            self.set_clock(ms);
            let sim = self.sim(peer, &argv);
            if canon(&sim, cmp) == canon(&real, cmp) {
                matching.push(lock(&self.w.redis).clone());
            }
            first.get_or_insert(sim);
        }
        let chosen = match matching.len() {
            0 => {
                return Err(self.diverged(format!(
                    "divergence at #{n} {shown}\n  real:   {}\n  in-sim: {} (at {before} ms)",
                    full(&real),
                    full(first.as_ref().expect("one run at least"))
                )))
            }
            _ if matching.iter().all(|m| m.db == matching[0].db) => matching.swap_remove(0),
            _ => {
                self.stats.by_state += 1;
                let state = real_state(self.con, &self.names.pattern());
                match matching.into_iter().find(|m| m.db == state) {
                    Some(m) => m,
                    None => {
                        return Err(self.diverged(format!(
                            "divergence at #{n} {shown}: same reply, but no run of the in-sim host at \
                             {before}..={after} ms leaves the real keyspace"
                        )))
                    }
                }
            }
        };
        *lock(&self.w.redis) = chosen;
        Ok(real)
    }

    fn plain(&mut self, parts: Vec<String>, cmp: Cmp) -> Result<Value, TestCaseError> {
        self.exec("diff", parts.into_iter().map(String::into_bytes).collect(), cmp, false)
    }

    /// Runs a script as `how` says.
    fn script(
        &mut self,
        peer: &str,
        sc: Script,
        how: How,
        keys: Vec<String>,
        argv: Vec<String>,
    ) -> Result<Value, TestCaseError> {
        let mut tail = vec![keys.len().to_string().into_bytes()];
        tail.extend(keys.into_iter().chain(argv).map(String::into_bytes));
        let evalsha = [vec![b"EVALSHA".to_vec(), sc.sha().into_bytes()], tail.clone()].concat();
        match how {
            How::Eval => {
                let eval = [vec![b"EVAL".to_vec(), sc.body().as_bytes().to_vec()], tail].concat();
                self.exec(peer, eval, Cmp::Exact, sc.timed())
            }
            How::EvalSha => self.exec(peer, evalsha, Cmp::Exact, sc.timed()),
            How::Invoke => {
                let reply = self.exec(peer, evalsha.clone(), Cmp::Exact, sc.timed())?;
                if !is_noscript(&reply) {
                    return Ok(reply);
                }
                let load = args(&[b"SCRIPT", b"LOAD", sc.body().as_bytes()]);
                self.exec(peer, load, Cmp::Exact, false)?;
                self.exec(peer, evalsha, Cmp::Exact, sc.timed())
            }
        }
    }

    /// The keys of `SetLastSeen` and `RecordLastSeen`: the cache, the pending value, the lease
    /// hash and the view.
    fn last_seen_keys(&self, u: u8) -> Vec<String> {
        vec![self.key(K::LastSeen(u)), self.key(K::Pending(u)), self.key(K::WsLease(u)), self.key(K::View(u))]
    }

    /// The change notice the runtime publishes after a registry change (`PUBLISH presence:{u}`;
    /// nobody subscribes to the run's channels, so real Redis answers 0 too).
    fn publish(&mut self, u: u8) -> Result<Value, TestCaseError> {
        self.plain(
            vec!["PUBLISH".into(), format!("presence:{{{}}}", self.names.user(u)), String::new()],
            Cmp::Exact,
        )
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let n = self.names;
        match *op {
            Op::Register { u, s, srv, tok } => {
                let (t, server) = (self.tok(tok), n.server(srv));
                // One pipeline: the index, the script (always `EVAL` of its text), the notice.
                self.plain(vec!["SADD".into(), self.key(K::Index(srv, tok)), self.member(u, s)], Cmp::Exact)?;
                let keys = vec![
                    self.key(K::WsLease(u)),
                    self.key(K::Ws(u)),
                    self.key(K::LastSeen(u)),
                    self.key(K::Pending(u)),
                    self.key(K::View(u)),
                ];
                self.script(
                    &server,
                    Script::Register,
                    How::Eval,
                    keys,
                    vec![n.session(s), t, server.clone()],
                )?;
                self.publish(u)?;
            }
            Op::EndSession { u, s, ts, srv, tok, how } => {
                let keys = vec![
                    self.key(K::Ws(u)),
                    self.key(K::LastSeen(u)),
                    self.key(K::WsLease(u)),
                    self.key(K::Pending(u)),
                    self.key(K::View(u)),
                ];
                let server = n.server(srv);
                let reply =
                    self.script(&server, Script::EndSession, how, keys, vec![n.session(s), self.val(ts)])?;
                // The runtime stops at an error; else the index and the change notice follow.
                if !matches!(reply, Value::Int(_)) {
                    return Ok(());
                }
                if let Some(tok) = tok {
                    self.plain(
                        vec!["SREM".into(), self.key(K::Index(srv, tok)), self.member(u, s)],
                        Cmp::Exact,
                    )?;
                }
                self.publish(u)?;
            }
            Op::SetLastSeen { u, ts, how } => {
                let keys = self.last_seen_keys(u);
                self.script("diff", Script::SetLastSeen, how, keys, vec![self.val(ts)])?;
            }
            Op::RecordLastSeen { u, ts, how } => {
                let keys = self.last_seen_keys(u);
                self.script("diff", Script::RecordLastSeen, how, keys, vec![self.val(ts)])?;
            }
            Op::Read { ref users } => {
                // As the runtime reads a single node: one MGET of the users' views; for those
                // without one, each user's HVALS, then one MGET of every last_seen and pending
                // key, pipelined (a pipeline is the commands back to back).
                let mut views = vec!["MGET".to_owned()];
                views.extend(users.iter().map(|&u| self.key(K::View(u))));
                let absent: Vec<u8> = match self.plain(views, Cmp::Exact)? {
                    Value::Array(items) => {
                        users.iter().zip(&items).filter(|(_, v)| **v == Value::Nil).map(|(&u, _)| u).collect()
                    }
                    _ => return Ok(()),
                };
                if absent.is_empty() {
                    return Ok(());
                }
                let mut mget = vec!["MGET".to_owned()];
                for &u in &absent {
                    self.plain(vec!["HVALS".into(), self.key(K::WsLease(u))], Cmp::Unordered)?;
                    mget.push(self.key(K::LastSeen(u)));
                    mget.push(self.key(K::Pending(u)));
                }
                self.plain(mget, Cmp::Exact)?;
            }
            Op::Renew { srv, tok, ttl, wall, how } => {
                let keys = vec![self.key(K::Leases), self.key(K::Renewed), self.key(K::Counter)];
                let token = tok.map(|t| self.tok(t)).unwrap_or_default();
                let argv = vec![
                    n.server(srv),
                    token,
                    RENEW_TTLS[ttl as usize].to_string(),
                    WALLS[wall as usize].to_owned(),
                ];
                let reply = self.script(&n.server(srv), Script::RenewLease, how, keys, argv)?;
                if let Value::Array(items) = reply {
                    if let Some(t) = items.first().and_then(bulk) {
                        let t = String::from_utf8_lossy(&t).into_owned();
                        if !self.issued.contains(&t) {
                            self.issued.push(t);
                        }
                    }
                }
            }
            Op::RenewBurst { srv, n } => {
                for _ in 0..n {
                    self.apply(&Op::Renew { srv, tok: None, ttl: 0, wall: 0, how: How::Eval })?;
                }
            }
            Op::Claim { srv, tok, claimer, ttl, how } => {
                // `ClaimReap`: claim; if ours, a batch of the index, and which of them are still held.
                let keys = vec![self.key(K::Leases), self.key(K::Renewed), self.key(K::Claims)];
                let (lease, me) = (self.lease(srv, tok), n.server(claimer));
                let argv = vec![lease.clone(), me.clone(), CLAIM_TTLS[ttl as usize].to_string()];
                let renewed = self.script(&me, Script::ClaimReap, how, keys, argv)?;
                if bulk(&renewed).is_none() {
                    return Ok(());
                }
                let index = self.key(K::Index(srv, tok));
                let members =
                    self.plain(vec!["SRANDMEMBER".into(), index, WHOLE_SET.to_string()], Cmp::Unordered)?;
                let members: Vec<Vec<u8>> = match members {
                    Value::Array(items) => items.iter().filter_map(bulk).collect(),
                    _ => return Ok(()),
                };
                if members.is_empty() {
                    let keys = vec![self.key(K::Leases), self.key(K::Renewed), self.key(K::Claims)];
                    self.script(&me, Script::DropLease, how, keys, vec![lease])?;
                    return Ok(());
                }
                let mut held: Vec<(u8, u8)> = (0..USERS)
                    .flat_map(|u| (0..SESSIONS).map(move |s| (u, s)))
                    .filter(|&(u, s)| members.contains(&self.member(u, s).into_bytes()))
                    .collect();
                held.sort();
                for (u, s) in held {
                    self.plain(vec!["HGET".into(), self.key(K::WsLease(u)), n.session(s)], Cmp::Exact)?;
                }
            }
            Op::Drop { srv, tok, how } => {
                let keys = vec![self.key(K::Leases), self.key(K::Renewed), self.key(K::Claims)];
                let lease = self.lease(srv, tok);
                self.script(&n.server(srv), Script::DropLease, how, keys, vec![lease])?;
            }
            Op::MarkReaped { u, s, tok, ts, how } => {
                let keys = vec![
                    self.key(K::WsLease(u)),
                    self.key(K::LastSeen(u)),
                    self.key(K::Pending(u)),
                    self.key(K::View(u)),
                ];
                let argv = vec![n.session(s), self.tok(tok), self.val(ts)];
                self.script("diff", Script::ReapMark, how, keys, argv)?;
            }
            Op::Reap { u, s, srv, tok, how } => {
                let keys = vec![
                    self.key(K::Ws(u)),
                    self.key(K::WsLease(u)),
                    self.key(K::LastSeen(u)),
                    self.key(K::Pending(u)),
                    self.key(K::View(u)),
                ];
                let argv = vec![n.session(s), self.tok(tok)];
                let reply = self.script("diff", Script::Reap, how, keys, argv)?;
                if let Value::Int(_) = reply {
                    self.plain(
                        vec!["SREM".into(), self.key(K::Index(srv, tok)), self.member(u, s)],
                        Cmp::Exact,
                    )?;
                    self.publish(u)?;
                }
            }
            Op::PutClaim { srv, tok, claim } => {
                let c = vec!["HSET".into(), self.key(K::Claims), self.lease(srv, tok), n.claim(claim)];
                self.plain(c, Cmp::Exact)?;
            }
            Op::Set(k, v) => {
                self.plain(vec!["SET".into(), self.key(k), self.val(v)], Cmp::Exact)?;
            }
            Op::Get(k) => {
                self.plain(vec!["GET".into(), self.key(k)], Cmp::Exact)?;
                // MGET reads any other type as nil (the lease index is a sorted set).
                self.plain(vec!["MGET".into(), self.key(k), self.key(K::Leases)], Cmp::Exact)?;
            }
            Op::Hset(k, ref pairs) => {
                let mut c = vec!["HSET".into(), self.key(k)];
                for &(f, v) in pairs {
                    c.push(self.val(f));
                    c.push(self.val(v));
                }
                self.plain(c, Cmp::Exact)?;
            }
            Op::Hget(k, f) => {
                self.plain(vec!["HGET".into(), self.key(k), self.val(f)], Cmp::Exact)?;
            }
            Op::Hvals(k) => {
                self.plain(vec!["HVALS".into(), self.key(k)], Cmp::Unordered)?;
            }
            Op::Hlen(k) => {
                self.plain(vec!["HLEN".into(), self.key(k)], Cmp::Exact)?;
            }
            Op::Hdel(k, ref fields) => {
                let c = [vec!["HDEL".into(), self.key(k)], fields.iter().map(|&f| self.val(f)).collect()]
                    .concat();
                self.plain(c, Cmp::Exact)?;
            }
            Op::Sadd(k, ref members) => {
                let c = [vec!["SADD".into(), self.key(k)], members.iter().map(|&m| self.val(m)).collect()]
                    .concat();
                self.plain(c, Cmp::Exact)?;
            }
            Op::Srem(k, ref members) => {
                let c = [vec!["SREM".into(), self.key(k)], members.iter().map(|&m| self.val(m)).collect()]
                    .concat();
                self.plain(c, Cmp::Exact)?;
            }
            Op::Srandmember(k, c) => {
                let count = SRAND_COUNTS[c as usize].to_string();
                self.plain(vec!["SRANDMEMBER".into(), self.key(k), count], Cmp::Unordered)?;
            }
            Op::Del(ref keys) => {
                let c = [vec!["DEL".into()], keys.iter().map(|&k| self.key(k)).collect()].concat();
                self.plain(c, Cmp::Exact)?;
            }
            Op::ScriptLoad(i) => {
                let sc = Script::ALL[i as usize];
                self.exec("diff", args(&[b"SCRIPT", b"LOAD", sc.body().as_bytes()]), Cmp::Exact, false)?;
            }
            Op::ScriptFlush => {
                self.plain(vec!["SCRIPT".into(), "FLUSH".into()], Cmp::Exact)?;
            }
            Op::Ping => {
                self.plain(vec!["PING".into()], Cmp::Exact)?;
            }
        }
        Ok(())
    }

    /// After the sequence: the same keyspace on both sides.
    fn compare_state(&mut self) -> Result<(), TestCaseError> {
        let real = real_state(self.con, &self.names.pattern());
        let sim = lock(&self.w.redis).db.clone();
        if real == sim {
            return Ok(());
        }
        let keys: BTreeSet<&Vec<u8>> = real.keys().chain(sim.keys()).collect();
        let diff: Vec<String> = keys
            .into_iter()
            .filter(|k| real.get(*k) != sim.get(*k))
            .map(|k| {
                let show = |v: Option<&Val>| v.map(show_val).unwrap_or_else(|| "absent".to_owned());
                format!(
                    "{}: real {} / in-sim {}",
                    String::from_utf8_lossy(k),
                    show(real.get(k)),
                    show(sim.get(k))
                )
            })
            .collect();
        Err(self.diverged(format!("the keyspaces differ after the sequence:\n  {}", diff.join("\n  "))))
    }
}

/// Runs one sequence against a fresh in-sim host and the real server (emptied of the run's keys,
/// its script cache flushed so both start without scripts).
fn run_sequence(
    con: &mut redis::Connection,
    names: &Names,
    stats: &mut Stats,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    stats.sequences += 1;
    wipe(con, &names.pattern());
    let flushed = real_cmd(con, &args(&[b"SCRIPT", b"FLUSH"]));
    assert_eq!(flushed, Value::Okay, "SCRIPT FLUSH");
    let mut case = Case {
        con,
        names,
        stats,
        w: World::new(0, Params::default()),
        issued: Vec::new(),
        transcript: Vec::new(),
    };
    let (ms, _) = real_time(case.con);
    case.set_clock(ms);
    let result = ops.iter().try_for_each(|op| case.apply(op)).and_then(|()| case.compare_state());
    wipe(case.con, &names.pattern());
    result
}

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

#[test]
#[ignore = "needs redis-server: run via scripts/test"]
fn in_sim_redis_matches_real_redis() {
    let _turn = REAL_REDIS.lock().unwrap_or_else(|e| e.into_inner());
    let url = std::env::var("PRESENCE_TEST_REDIS_URL").unwrap_or_else(|_| panic!("{NEEDS}"));
    let cases = env_num("PRESENCE_REDIS_DIFF_CASES", 400) as u32;
    let seed = env_num("PRESENCE_REDIS_DIFF_SEED", 1);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let names = Names { run: format!("d{}x{}", std::process::id(), nanos % 1_000_000_000) };
    let _wipe = Wipe { url: url.clone(), pattern: names.pattern() };
    let mut con = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    let version = bulk(&real_cmd(&mut con, &args(&[b"INFO", b"server"])))
        .and_then(|b| {
            String::from_utf8_lossy(&b)
                .lines()
                .find_map(|l| l.strip_prefix("redis_version:").map(str::to_owned))
        })
        .unwrap_or_default();

    // The regressions first: their expected replies are what this server answers.
    for (name, regression) in REGRESSIONS {
        wipe(&mut con, &names.pattern());
        assert_eq!(real_cmd(&mut con, &args(&[b"SCRIPT", b"FLUSH"])), Value::Okay, "SCRIPT FLUSH");
        let got: Vec<String> = (regression.cmds)(&names.run)
            .iter()
            .map(|c| canon(&real_cmd(&mut con, &to_argv(c)), Cmp::Exact).replace(&names.run, "P"))
            .collect();
        wipe(&mut con, &names.pattern());
        assert_eq!(got, regression.expect, "regression {name}: redis-server {version} answers otherwise");
    }

    let mut config = Config::with_cases(cases);
    config.failure_persistence = None;
    // A failing sequence costs a few ms to replay: shrink it all the way.
    config.max_shrink_iters = 20_000;
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes));
    let con = RefCell::new(con);
    let stats = RefCell::new(Stats::default());
    let started = Instant::now();
    let strategy = prop::collection::vec(op(), 20..=45);
    let result = runner
        .run(&strategy, |ops| run_sequence(&mut con.borrow_mut(), &names, &mut stats.borrow_mut(), &ops));
    let s = stats.borrow();
    println!(
        "redis differential (redis-server {version}, seed {seed}): {} sequences, {} commands compared \
         ({} reading TIME, {} of them across a millisecond, {} decided by the keyspace; error replies {:?}) \
         in {:.1} s",
        s.sequences,
        s.commands,
        s.timed,
        s.wide,
        s.by_state,
        s.errors,
        started.elapsed().as_secs_f64()
    );
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, ops)) => {
            let ops: Vec<&Op> = ops.iter().filter(|op| !matches!(op, Op::Ping)).collect();
            panic!("{why}\nminimal sequence (PINGs left out): {ops:?}")
        }
        Err(TestError::Abort(why)) => panic!("aborted: {why}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Regressions: the divergences found, as fixed sequences
// ---------------------------------------------------------------------------------------------

/// A fixed sequence (built for a key prefix, so it also runs on a shared real server) and the
/// replies real Redis 7.0 gives, in [`canon`] form with the prefix shown as `P`. Clock-independent: timed scripts only run
/// where the clock cannot show (the token counter set far ahead, TTL 0).
struct Regression {
    cmds: fn(&str) -> Vec<Vec<String>>,
    expect: &'static [&'static str],
}

fn to_argv(c: &[String]) -> Vec<Vec<u8>> {
    c.iter().map(|a| a.clone().into_bytes()).collect()
}

fn c(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| (*p).to_owned()).collect()
}

/// `EVAL` of `body` as the runtime would `EVALSHA` it.
fn eval(body: &str, keys: &[&str], argv: &[&str]) -> Vec<String> {
    let mut v = c(&["EVAL", body, &keys.len().to_string()]);
    v.extend(keys.iter().chain(argv).map(|a| (*a).to_owned()));
    v
}

/// The schema's keys under prefix `p` (user `u`).
struct Keys {
    ws: String,
    ws_lease: String,
    last_seen: String,
    pending: String,
    view: String,
    leases: String,
    renewed: String,
    claims: String,
    counter: String,
    server: String,
}

fn keys(p: &str, u: u8) -> Keys {
    Keys {
        ws: format!("ws:{{{p}-u{u}}}"),
        ws_lease: format!("ws_lease:{{{p}-u{u}}}"),
        last_seen: format!("last_seen:{{{p}-u{u}}}"),
        pending: format!("last_seen_pending:{{{p}-u{u}}}"),
        view: format!("read_view:{{{p}-u{u}}}"),
        leases: format!("{p}-leases:{{presence}}"),
        renewed: format!("{p}-lease_renewed:{{presence}}"),
        claims: format!("{p}-lease_claims:{{presence}}"),
        counter: format!("{p}-lease_token:{{presence}}"),
        server: format!("{p}-srv0"),
    }
}

const TS0: &str = "2024-01-15T09:42:00.000Z";
const TS1: &str = "2024-01-15T09:42:00.001Z";

/// A script whose `redis.call` meets a key of the wrong type. Redis 7 answers with the call's own
/// code (`-WRONGTYPE ... script: <sha>, on @user_script:<line>.`), not `-ERR`. The writes made
/// before the failing call stay (Redis does not roll a script back).
const WRONGTYPE_IN_SCRIPT: Regression = Regression {
    cmds: |p| {
        let k = keys(p, 1);
        let end = |ts: &str| {
            eval(
                Script::EndSession.source(),
                &[&k.ws, &k.last_seen, &k.ws_lease, &k.pending, &k.view],
                &["sess0", ts],
            )
        };
        vec![
            // `ws:{u}` a set: the first HDEL fails.
            c(&["SADD", &k.ws, TS0]),
            end(TS0),
            c(&["DEL", &k.ws]),
            // `ws_lease:{u}` a string: the second HDEL fails, after the first removed its field.
            c(&["HSET", &k.ws, "sess0", &k.server]),
            c(&["SET", &k.ws_lease, "1"]),
            end(TS0),
            c(&["HLEN", &k.ws]),
            c(&["DEL", &k.ws_lease]),
            // The cache a hash: `record_end`'s GET fails.
            c(&["HSET", &k.last_seen, "f", TS0]),
            end(TS0),
            eval(Script::SetLastSeen.source(), &[&k.last_seen, &k.pending, &k.ws_lease, &k.view], &[TS0]),
            c(&["DEL", &k.last_seen]),
            // The pending key a set: SetLastSeen fails after writing the cache.
            c(&["SADD", &k.pending, TS0]),
            eval(Script::SetLastSeen.source(), &[&k.last_seen, &k.pending, &k.ws_lease, &k.view], &[TS1]),
            c(&["GET", &k.last_seen]),
            // A lease expired at once (the counter set far ahead, so the token is fixed), and
            // DropLease meeting `lease_renewed` of the wrong type after its ZREM.
            c(&["SET", &k.counter, "9999999999999"]),
            eval(
                Script::RenewLease.source(),
                &[&k.leases, &k.renewed, &k.counter],
                &[&k.server, "", "0", "1705300000123"],
            ),
            c(&["SET", &k.renewed, "x"]),
            eval(
                Script::DropLease.source(),
                &[&k.leases, &k.renewed, &k.claims],
                &[&format!("{}#10000000000000", k.server)],
            ),
            eval(
                Script::ClaimReap.source(),
                &[&k.leases, &k.renewed, &k.claims],
                &[&format!("{}#10000000000000", k.server), &k.server, "0"],
            ),
        ]
    },
    expect: &[
        ":1",
        "-WRONGTYPE",
        ":1",
        ":1",
        "+OK",
        "-WRONGTYPE",
        ":0",
        ":1",
        ":1",
        "-WRONGTYPE",
        "-WRONGTYPE",
        ":1",
        ":1",
        "-WRONGTYPE",
        "\"2024-01-15T09:42:00.001Z\"",
        "+OK",
        "[\"10000000000000\", [], [\"P-srv0#10000000000000\"]]",
        "+OK",
        "-WRONGTYPE",
        "nil",
    ],
};

/// The renewal's `INCR` of the token counter. Redis parses the counter strictly (no `+`, no
/// leading zero, no spaces, no `-0`) and fails the script on anything else, or on overflow,
/// before writing anything: no token is issued from a garbage counter.
const STRICT_TOKEN_COUNTER: Regression = Regression {
    cmds: |p| {
        let k = keys(p, 0);
        let renew = || {
            eval(
                Script::RenewLease.source(),
                &[&k.leases, &k.renewed, &k.counter],
                &[&k.server, "", "3600000", "1705300000123"],
            )
        };
        let mut v = Vec::new();
        for bad in [TS0, "+5", "05", " 5", "-0", "1e3", "9223372036854775807"] {
            v.push(c(&["SET", &k.counter, bad]));
            v.push(renew());
        }
        v.push(c(&["GET", &k.counter]));
        v.push(c(&["HLEN", &k.renewed]));
        v.push(c(&["SET", &k.counter, "9999999999999"]));
        v.push(renew());
        v.push(c(&["GET", &k.counter]));
        v
    },
    expect: &[
        "+OK",
        "-ERR",
        "+OK",
        "-ERR",
        "+OK",
        "-ERR",
        "+OK",
        "-ERR",
        "+OK",
        "-ERR",
        "+OK",
        "-ERR",
        "+OK",
        "-ERR",
        "\"9223372036854775807\"",
        ":0",
        "+OK",
        "[\"10000000000000\", [\"P-srv0#10000000000000\"], []]",
        "\"10000000000000\"",
    ],
};

/// Another reaper's claim as the `claim_reap` script reads it (`'^(.*) (%d+)$'`, then
/// `tonumber`). `srv1 +99999999999999` is no claim for Lua (`%d+` takes no sign);
/// `srv1 99999999999999999999` is a live claim for Lua (a double, beyond i64).
const CLAIM_SHAPES: Regression = Regression {
    cmds: |p| {
        let k = keys(p, 0);
        let lease = format!("{}#10000000000000", k.server);
        let other = format!("{p}-srv1");
        let mut v = vec![
            c(&["SET", &k.counter, "9999999999999"]),
            eval(
                Script::RenewLease.source(),
                &[&k.leases, &k.renewed, &k.counter],
                &[&k.server, "", "0", "1705300000123"],
            ),
        ];
        let claims = [
            format!("{other} +99999999999999"),
            format!("{other} 99999999999999999999"),
            format!("{other} 99999999999999"),
            format!("{other} 1"),
            format!("{other} "),
            format!("{other} 12x"),
            format!("{} 99999999999999", k.server),
            "nospace".to_owned(),
            format!("{other} 5 99999999999999"),
        ];
        for claim in &claims {
            v.push(c(&["HSET", &k.claims, &lease, claim]));
            v.push(eval(
                Script::ClaimReap.source(),
                &[&k.leases, &k.renewed, &k.claims],
                &[&lease, &k.server, "3600000"],
            ));
        }
        v
    },
    expect: &[
        "+OK",
        "[\"10000000000000\", [], [\"P-srv0#10000000000000\"]]",
        ":1",
        "\"1705300000123\"",
        ":0",
        "nil",
        ":0",
        "nil",
        ":0",
        "\"1705300000123\"",
        ":0",
        "\"1705300000123\"",
        ":0",
        "\"1705300000123\"",
        ":0",
        "\"1705300000123\"",
        ":0",
        "\"1705300000123\"",
        ":0",
        "nil",
    ],
};

const REGRESSIONS: &[(&str, Regression)] = &[
    ("WRONGTYPE_IN_SCRIPT", WRONGTYPE_IN_SCRIPT),
    ("STRICT_TOKEN_COUNTER", STRICT_TOKEN_COUNTER),
    ("CLAIM_SHAPES", CLAIM_SHAPES),
];

/// Runs a regression on a fresh in-sim host (prefix `P`) and checks the replies.
fn check_sim(regression: &Regression) {
    let w = World::new(0, Params::default());
    w.outer_now.store(1_000, Ordering::Relaxed);
    let got: Vec<String> = (regression.cmds)("P")
        .iter()
        .map(|c| {
            let bytes = lock(&w.redis).execute(&w, "regression", &to_argv(c));
            canon(&redis::parse_redis_value(&bytes).expect("RESP"), Cmp::Exact)
        })
        .collect();
    assert_eq!(got, regression.expect);
}

#[test]
fn regression_wrongtype_in_script() {
    check_sim(&WRONGTYPE_IN_SCRIPT);
}

#[test]
fn regression_strict_token_counter() {
    check_sim(&STRICT_TOKEN_COUNTER);
}

#[test]
fn regression_claim_shapes() {
    check_sim(&CLAIM_SHAPES);
}
