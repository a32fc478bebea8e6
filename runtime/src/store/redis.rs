//! The registry on Redis: one node over any byte stream ([`RedisRegistry`]) or Redis Cluster
//! ([`RedisClusterRegistry`]).
//!
//! # Schema (public: operators read it with `redis-cli`; never change it)
//!
//! - `ws:{<user>}`: a hash, field = session id, value = the server id holding the session.
//!   Absent or empty = offline.
//! - `last_seen:{<user>}`: a string, RFC 3339 UTC with milliseconds, fixed width
//!   (`2024-01-15T09:42:00.000Z`), so string order is time order. Created only from a durable
//!   value (docs/STORES.md, "Cache fill").
//! - `last_seen_pending:{<user>}`: same format; session ends recorded while `last_seen:{<user>}`
//!   was absent (readers answer the maximum of both, and of DynamoDB when the cache is absent);
//!   deleted once the cache covers it.
//! - `ws_lease:{<user>}`: a hash beside `ws:{<user>}`, field = session id, value = the fencing
//!   token (decimal) of the server lease the session was registered under. Readers count a session
//!   online only while that lease is live.
//!
//! Leases (docs/STORES.md, "Leases"; all under the `{presence}` hash tag, so one slot):
//!
//! - `leases:{presence}`: a sorted set, member = lease name `<server_id>#<token>`, score = expiry
//!   in Unix milliseconds by the Redis clock (`TIME`).
//! - `lease_renewed:{presence}`: a hash, lease name -> the holder's wall clock (Unix ms) at its
//!   last renewal: the last_seen the reaper records for the lease's sessions.
//! - `lease_claims:{presence}`: a hash, lease name -> `<claimer> <until ms>`, the reaper's claim.
//! - `lease_token:{presence}`: the token counter; never set below the Redis clock in ms, so tokens
//!   keep increasing across a restart that lost it.
//! - `sessions:{<server_id>#<token>}`: a set per lease, members `<user> <session>`: the index the
//!   reaper walks (user ids never contain a space).
//!
//! The braces are literal Redis Cluster hash tags: the keys of one user live in the same slot, so
//! one script can touch them atomically, on a single node and on a cluster alike.
//!
//! # Operations
//!
//! | op                        | Redis                                                             |
//! |---------------------------|-------------------------------------------------------------------|
//! | `Register`                | one pipeline `SADD sessions:{lease}`, `HSET ws_lease:{u}`, `HSET ws:{u}`, `PUBLISH presence:{u}` (cluster: the `SADD` first, on its own) |
//! | `EndSession`              | script [`END_SESSION_LUA`]: `HDEL` both hashes + record the end, then `SREM sessions:{lease}` |
//! | `SetLastSeen`             | script [`SET_LAST_SEEN_LUA`]                                      |
//! | `RecordLastSeen`          | script [`RECORD_LAST_SEEN_LUA`]                                   |
//! | `Read` (single node)      | one pipeline: `HVALS ws_lease:{u}` per user, then one `MGET` of every `last_seen:{u}` and `last_seen_pending:{u}` |
//! | `Read` (cluster)          | one such pipeline per user (same slot), all in parallel           |
//! | `RenewLease`              | script [`RENEW_LEASE_LUA`]                                        |
//! | `ClaimReap`               | script [`CLAIM_REAP_LUA`], `SRANDMEMBER sessions:{lease}`, `HGET ws_lease:{u}` per session; or [`DROP_LEASE_LUA`] when the index is empty |
//! | `MarkReaped`              | script [`REAP_MARK_LUA`] per session (in parallel)                |
//! | `Reap`                    | script [`REAP_LUA`] per held session (in parallel), then `SREM sessions:{lease}` |
//!
//! Scripts run with `EVALSHA`; after a Redis restart (or `SCRIPT FLUSH`) the script cache is empty
//! and Redis answers `NOSCRIPT`, on which [`redis::Script::invoke_async`] loads the script and
//! retries once, transparently.
//!
//! The max-register writes only when `last_seen:{u}` is absent, is not a well-formed fixed-width
//! timestamp (an unparseable value reads as absent, so overwriting it loses nothing), or is older
//! than the new value. Redis compares the strings in Lua; both sides have the same fixed shape and
//! differ only in digits, so the comparison is time order under any collation locale.
//!
//! A cluster pipeline must stay within one slot, hence the per-user pipelines on a cluster; the
//! cluster connection multiplexes them, so a read of N users costs about one round trip per node.
//!
//! # Connection and restarts (single node)
//!
//! The executor owns its reconnect loop (a background "supervisor" task) and runs over any
//! [`AsyncStream`] a [`RedisConnector`] hands it: TCP or a Unix socket in production
//! ([`TcpConnector`]), a simulated stream in the simulator. On connect it reads `INFO server`
//! `run_id`. From then on:
//!
//! - an op that sees an I/O or protocol error marks the connection broken, and the supervisor
//!   drops it and reconnects with exponential backoff (with a per-server deterministic jitter, so a
//!   fleet does not reconnect in lockstep, and the simulator stays reproducible);
//! - an op that times out, and a periodic health check (every
//!   [`RedisConfig::health_check_interval`]), re-read `run_id`; no answer within the op timeout
//!   means the connection is hung (a partition does not always reset TCP) and it is replaced;
//! - while disconnected, ops fail at once with [`StoreError::Unavailable`]: they never wait for
//!   the reconnect, so they can never hang.
//!
//! **The restart generation is bumped on every reconnection** (every successful connect after the
//! first), and when the health check sees a new `run_id` on the same connection (a proxy that
//! failed over). We cannot know whether the data survived a lost connection (a restarted Redis
//! without persistence has lost it; a network blip has not), and re-registering live sessions is
//! idempotent and cheap, so we assume the worst. A server that does not implement `INFO` (a test
//! double) is accepted: run_id is then unknown and only reconnections count.
//!
//! # Redis Cluster
//!
//! URL form: `redis+cluster://[user:password@]host1:port1,host2:port2,...` (seed nodes; the rest of
//! the topology is discovered). It uses [`redis::cluster_async::ClusterConnection`], which manages
//! its own per-node TCP connections, redirects and reconnects, so it does not run over a custom
//! [`RedisConnector`]. Restart detection is therefore coarser and documented as a limitation: the
//! generation is bumped (a) when an op or health check failed with a connection-level error or a
//! timeout and a later health check succeeds, and (b) when the set of `run_id`s reported by
//! `INFO server` across all nodes changes (a node restarted, failed over or was replaced). A node
//! that restarts and comes back between two health checks without any op failing in between is
//! still caught by (b). The bump can come before the crate has reconnected to every node: the
//! re-registrations it triggers may then fail for a moment, and the core retries them like any
//! failed write.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeSet;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use presence_core::store::{
    LeaseToken, LeaseView, ReapBatch, RegistryEntry, RegistryOp, StoreError, StoreOutput,
};
use presence_core::time::UnixMillis;
use presence_core::user::{SessionId, UserId};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo,
    RedisConnectionInfo, RedisError, RedisResult, Script, Value,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use super::changes::ChangeFeed;
use super::{change_channel, Notice, RegistryStore, StoreFuture};

// ---------------------------------------------------------------------------------------------
// Schema and scripts
// ---------------------------------------------------------------------------------------------

/// The registry hash key of `user`: `ws:{<user>}`.
pub fn ws_key(user: &UserId) -> String {
    format!("ws:{{{user}}}")
}

/// The cached last_seen key of `user`: `last_seen:{<user>}`.
pub fn last_seen_key(user: &UserId) -> String {
    format!("last_seen:{{{user}}}")
}

/// The pending last_seen key of `user`: `last_seen_pending:{<user>}` (session ends recorded while
/// `last_seen:{<user>}` was absent).
pub fn pending_key(user: &UserId) -> String {
    format!("last_seen_pending:{{{user}}}")
}

/// The lease hash of `user`: `ws_lease:{<user>}` (session id -> lease token).
pub fn ws_lease_key(user: &UserId) -> String {
    format!("ws_lease:{{{user}}}")
}

/// The sorted set of leases (name -> expiry by the Redis clock).
pub const LEASES_KEY: &str = "leases:{presence}";
/// Lease name -> its holder's wall clock at its last renewal.
pub const LEASE_RENEWED_KEY: &str = "lease_renewed:{presence}";
/// Lease name -> the reaper's claim (`<claimer> <until ms>`).
pub const LEASE_CLAIMS_KEY: &str = "lease_claims:{presence}";
/// The lease token counter.
pub const LEASE_TOKEN_KEY: &str = "lease_token:{presence}";

/// The name of a server's lease: `<server_id>#<token>`.
pub fn lease_name(server_id: &str, token: LeaseToken) -> String {
    format!("{server_id}#{}", token.0)
}

/// The token of a lease name (after its last `#`).
fn lease_token(name: &str) -> Option<LeaseToken> {
    name.rsplit_once('#')?.1.parse().ok().map(LeaseToken)
}

/// The session index of a lease: `sessions:{<lease name>}`.
pub fn lease_index_key(lease: &str) -> String {
    format!("sessions:{{{lease}}}")
}

/// A member of a lease's session index: `<user> <session>`.
fn index_member(user: &UserId, session: &SessionId) -> String {
    format!("{user} {}", session.as_str())
}

/// Lua helpers shared by the scripts. `wf(v)`: `v` is a well-formed fixed-width timestamp (a
/// malformed value reads as absent, so overwriting it loses nothing). `max_into(key, ts)`: the
/// max-register, creating the key; 1 if it wrote. `record_end(cache, pending, ts)`: a session
/// end's value goes into the cache if the cache is present, else into the pending key (an absent
/// cache may be below DynamoDB's value, so it is only ever created from a durable value).
macro_rules! lua_helpers {
    () => {
        concat!(
            "local function wf(v)\n",
            "  return v and string.len(v) == 24 and ",
            "string.find(v, '^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$') ~= nil\n",
            "end\n",
            "local function max_into(key, ts)\n",
            "  local cur = redis.call('GET', key)\n",
            "  if wf(cur) and cur >= ts then return 0 end\n",
            "  redis.call('SET', key, ts)\n",
            "  return 1\n",
            "end\n",
            "local function record_end(cache, pending, ts)\n",
            "  if wf(redis.call('GET', cache)) then return max_into(cache, ts) end\n",
            "  return max_into(pending, ts)\n",
            "end\n",
        )
    };
}

/// `SetLastSeen`: `KEYS[1]` = `last_seen:{u}`, `KEYS[2]` = `last_seen_pending:{u}`, `ARGV[1]` =
/// the fixed-width timestamp (a durable value). Max-register of the cache, creating it; then the
/// pending value is dropped if the cache covers it. Returns 1 if the cache was written.
///
/// Public so a test double (the simulator's Redis) can recognise it by its SHA-1.
pub const SET_LAST_SEEN_LUA: &str = concat!(
    lua_helpers!(),
    "local wrote = max_into(KEYS[1], ARGV[1])\n",
    "local p = redis.call('GET', KEYS[2])\n",
    "if p and ((not wf(p)) or p <= redis.call('GET', KEYS[1])) then redis.call('DEL', KEYS[2]) end\n",
    "return wrote\n",
);

/// `EndSession`: `KEYS[1]` = `ws:{u}`, `KEYS[2]` = `last_seen:{u}`, `KEYS[3]` = `ws_lease:{u}`,
/// `KEYS[4]` = `last_seen_pending:{u}`, `ARGV[1]` = session id, `ARGV[2]` = the fixed-width
/// timestamp. `HDEL` of this session's fields only, then `record_end`, atomically (one script, one
/// slot; docs/STORES.md, "Cache fill").
pub const END_SESSION_LUA: &str = concat!(
    lua_helpers!(),
    "redis.call('HDEL', KEYS[1], ARGV[1])\n",
    "redis.call('HDEL', KEYS[3], ARGV[1])\n",
    "return record_end(KEYS[2], KEYS[4], ARGV[2])\n",
);

/// `RecordLastSeen`: `KEYS[1]` = `last_seen:{u}`, `KEYS[2]` = `last_seen_pending:{u}`, `ARGV[1]` =
/// the fixed-width timestamp (a value not yet durable). `record_end` alone: the cache if present,
/// else the pending key. Returns 1 if it wrote.
pub const RECORD_LAST_SEEN_LUA: &str =
    concat!(lua_helpers!(), "return record_end(KEYS[1], KEYS[2], ARGV[1])\n");

/// `MarkReaped`, per session: `KEYS[1]` = `ws_lease:{u}`, `KEYS[2]` = `last_seen:{u}`,
/// `KEYS[3]` = `last_seen_pending:{u}`; `ARGV[1]` = session, `ARGV[2]` = the dead lease's token,
/// `ARGV[3]` = the fixed-width timestamp of its last renewal. If the session is still held under
/// that lease, `record_end` its value and return 1; else 0.
pub const REAP_MARK_LUA: &str = concat!(
    lua_helpers!(),
    "if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end\n",
    "record_end(KEYS[2], KEYS[3], ARGV[3])\n",
    "return 1\n",
);

/// The Redis clock in Unix milliseconds, as a Lua local `now`.
macro_rules! redis_now_lua {
    () => {
        "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    };
}

/// `RenewLease`: `KEYS` = leases, lease_renewed, lease_token; `ARGV[1]` = server id, `ARGV[2]` =
/// the token held (or empty), `ARGV[3]` = TTL ms, `ARGV[4]` = the server's wall clock (ms).
/// Extends the lease if it is live; otherwise issues a new token (never below the clock in ms) and
/// lease. Returns `{token, live lease names, up to 16 expired lease names}`.
pub const RENEW_LEASE_LUA: &str = concat!(
    redis_now_lua!(),
    "local token = ARGV[2]\n",
    "local exp = nil\n",
    "if token ~= '' then exp = redis.call('ZSCORE', KEYS[1], ARGV[1] .. '#' .. token) end\n",
    "if (not exp) or tonumber(exp) <= now then\n",
    "  local n = redis.call('INCR', KEYS[3])\n",
    "  if n < now then n = now; redis.call('SET', KEYS[3], string.format('%d', n)) end\n",
    "  token = string.format('%d', n)\n",
    "end\n",
    "local name = ARGV[1] .. '#' .. token\n",
    "redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), name)\n",
    "redis.call('HSET', KEYS[2], name, ARGV[4])\n",
    "local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')\n",
    "local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 16)\n",
    "return {token, live, dead}\n",
);

/// `ClaimReap`, first step: `KEYS` = leases, lease_renewed, lease_claims; `ARGV[1]` = the expired
/// lease, `ARGV[2]` = the claimer (our server id), `ARGV[3]` = claim TTL ms. Claims the lease if it
/// is still expired and unclaimed (or the claim expired, or is ours). Returns its last renewal
/// (wall ms, as a string), or nil when it is not ours to reap.
pub const CLAIM_REAP_LUA: &str = concat!(
    redis_now_lua!(),
    "local exp = redis.call('ZSCORE', KEYS[1], ARGV[1])\n",
    "if (not exp) or tonumber(exp) > now then return false end\n",
    "local claim = redis.call('HGET', KEYS[3], ARGV[1])\n",
    "if claim then\n",
    "  local who, untl = string.match(claim, '^(.*) (%d+)$')\n",
    "  if who and who ~= ARGV[2] and tonumber(untl) > now then return false end\n",
    "end\n",
    "redis.call('HSET', KEYS[3], ARGV[1], ARGV[2] .. ' ' .. string.format('%d', now + tonumber(ARGV[3])))\n",
    "return redis.call('HGET', KEYS[2], ARGV[1]) or '0'\n",
);

/// `ClaimReap` on an empty index: `KEYS` = leases, lease_renewed, lease_claims; `ARGV[1]` = the
/// lease. Forgets it if it is still expired (an expired lease is never renewed, so this is only a
/// guard against a clock step).
pub const DROP_LEASE_LUA: &str = concat!(
    redis_now_lua!(),
    "local exp = redis.call('ZSCORE', KEYS[1], ARGV[1])\n",
    "if exp and tonumber(exp) <= now then\n",
    "  redis.call('ZREM', KEYS[1], ARGV[1])\n",
    "  redis.call('HDEL', KEYS[2], ARGV[1])\n",
    "  redis.call('HDEL', KEYS[3], ARGV[1])\n",
    "end\n",
    "return 1\n",
);

/// `Reap`, per held session: `KEYS[1]` = `ws:{u}`, `KEYS[2]` = `ws_lease:{u}`; `ARGV[1]` =
/// session, `ARGV[2]` = the dead lease's token. Compare-and-delete on the fencing token.
pub const REAP_LUA: &str = concat!(
    "if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end\n",
    "redis.call('HDEL', KEYS[1], ARGV[1])\n",
    "redis.call('HDEL', KEYS[2], ARGV[1])\n",
    "return 1\n",
);

/// The compiled scripts (`Script` precomputes the SHA-1 `EVALSHA` needs).
struct Scripts {
    set_last_seen: Script,
    record_last_seen: Script,
    end_session: Script,
    reap_mark: Script,
    renew: Script,
    claim: Script,
    drop_lease: Script,
    reap: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            set_last_seen: Script::new(SET_LAST_SEEN_LUA),
            record_last_seen: Script::new(RECORD_LAST_SEEN_LUA),
            end_session: Script::new(END_SESSION_LUA),
            reap_mark: Script::new(REAP_MARK_LUA),
            renew: Script::new(RENEW_LEASE_LUA),
            claim: Script::new(CLAIM_REAP_LUA),
            drop_lease: Script::new(DROP_LEASE_LUA),
            reap: Script::new(REAP_LUA),
        }
    }
}

/// Single node: one pipeline for the whole batch. Cluster: one pipeline per user (a cluster
/// pipeline may not span slots), run concurrently.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Topology {
    Single,
    Cluster,
}

/// Runs one op on `conn`. Shared by both executors; the caller applies the timeout.
async fn run_op<C>(
    mut conn: C,
    scripts: &Scripts,
    server_id: &str,
    op: RegistryOp,
    topology: Topology,
) -> RedisResult<StoreOutput>
where
    C: ConnectionLike + Clone + Send + 'static,
{
    match op {
        RegistryOp::Register { user, session, token } => {
            // Index first: a server that dies between the two leaves an index entry with no
            // registration (the reaper skips it), never a registration the reaper cannot find. A
            // single node runs a pipeline in order, so it goes in the same round trip; on a
            // cluster the index lives in another slot.
            let mut sadd = redis::cmd("SADD");
            sadd.arg(lease_index_key(&lease_name(server_id, token))).arg(index_member(&user, &session));
            let mut pipe = redis::pipe();
            match topology {
                Topology::Single => {
                    pipe.add_command(sadd).ignore();
                }
                Topology::Cluster => sadd.query_async::<()>(&mut conn).await?,
            }
            // The lease before the server id: readers look at `ws_lease` only.
            pipe.cmd("HSET")
                .arg(ws_lease_key(&user))
                .arg(session.as_str())
                .arg(token.0)
                .ignore()
                .cmd("HSET")
                .arg(ws_key(&user))
                .arg(session.as_str())
                .arg(server_id)
                .ignore()
                .cmd("PUBLISH")
                .arg(change_channel(&user))
                .arg("")
                .ignore()
                .query_async::<()>(&mut conn)
                .await?;
            Ok(StoreOutput::Done)
        }
        RegistryOp::EndSession { user, session, last_seen, token } => {
            scripts
                .end_session
                .key(ws_key(&user))
                .key(last_seen_key(&user))
                .key(ws_lease_key(&user))
                .key(pending_key(&user))
                .arg(session.as_str())
                .arg(last_seen.to_rfc3339())
                .invoke_async::<i64>(&mut conn)
                .await?;
            // Then the index, and the change notice (after the change, so a watcher that reads on
            // it sees the change).
            let mut srem = None;
            if let Some(token) = token {
                let mut cmd = redis::cmd("SREM");
                cmd.arg(lease_index_key(&lease_name(server_id, token))).arg(index_member(&user, &session));
                srem = Some(cmd);
            }
            then_publish(&mut conn, topology, srem, std::slice::from_ref(&user)).await?;
            Ok(StoreOutput::Done)
        }
        RegistryOp::RenewLease { token, ttl, wall } => {
            let reply = scripts
                .renew
                .key(LEASES_KEY)
                .key(LEASE_RENEWED_KEY)
                .key(LEASE_TOKEN_KEY)
                .arg(server_id)
                .arg(token.map(|t| t.0.to_string()).unwrap_or_default())
                .arg(ttl.as_millis() as u64)
                .arg(wall.0)
                .invoke_async::<(String, Vec<String>, Vec<String>)>(&mut conn)
                .await?;
            parse_lease_view(reply)
        }
        RegistryOp::ClaimReap { lease, ttl, batch, ceiling } => {
            let renewed = scripts
                .claim
                .key(LEASES_KEY)
                .key(LEASE_RENEWED_KEY)
                .key(LEASE_CLAIMS_KEY)
                .arg(&lease)
                .arg(server_id)
                .arg(ttl.as_millis() as u64)
                .invoke_async::<Option<i64>>(&mut conn)
                .await?;
            let (Some(renewed), Some(token)) = (renewed, lease_token(&lease)) else {
                return Ok(StoreOutput::Reap(None));
            };
            // A dead server's clock may have been ahead of ours: never record past our now.
            let last_seen = UnixMillis(renewed).min(ceiling);
            let members = redis::cmd("SRANDMEMBER")
                .arg(lease_index_key(&lease))
                .arg(batch.max(1))
                .query_async::<Vec<String>>(&mut conn)
                .await?;
            if members.is_empty() {
                scripts
                    .drop_lease
                    .key(LEASES_KEY)
                    .key(LEASE_RENEWED_KEY)
                    .key(LEASE_CLAIMS_KEY)
                    .arg(&lease)
                    .invoke_async::<i64>(&mut conn)
                    .await?;
                return Ok(StoreOutput::Reap(None));
            }
            // Sorted, so the batch (and what is done with it) does not depend on the set's order.
            let mut sessions: Vec<(UserId, SessionId)> =
                members.iter().filter_map(|m| parse_member(m)).collect();
            sessions.sort();
            let held = sessions.iter().map(|(user, session)| {
                let mut conn = conn.clone();
                let cmd = redis::cmd("HGET").arg(ws_lease_key(user)).arg(session.as_str()).clone();
                async move { cmd.query_async::<Option<u64>>(&mut conn).await }
            });
            let held = futures_util::future::try_join_all(held).await?;
            let sessions = sessions
                .into_iter()
                .zip(held)
                .map(|((user, session), t)| (user, session, t == Some(token.0)))
                .collect();
            let stray = members.iter().filter(|m| parse_member(m).is_none()).count();
            if stray > 0 {
                tracing::warn!(%lease, stray, "unparseable members in a lease index: left alone");
            }
            Ok(StoreOutput::Reap(Some(ReapBatch { token, last_seen, sessions })))
        }
        RegistryOp::MarkReaped { token, last_seen, sessions } => {
            let ts = last_seen.to_rfc3339();
            let marks = sessions.iter().map(|(user, session)| {
                let mut conn = conn.clone();
                let mut call = scripts.reap_mark.prepare_invoke();
                call.key(ws_lease_key(user)).key(last_seen_key(user)).key(pending_key(user));
                call.arg(session.as_str()).arg(token.0).arg(&ts);
                async move { call.invoke_async::<i64>(&mut conn).await }
            });
            futures_util::future::try_join_all(marks).await?;
            Ok(StoreOutput::Done)
        }
        RegistryOp::Reap { lease, token, sessions } => {
            let reaps = sessions.iter().filter(|s| s.2).map(|(user, session, _)| {
                let mut conn = conn.clone();
                let mut call = scripts.reap.prepare_invoke();
                call.key(ws_key(user)).key(ws_lease_key(user));
                call.arg(session.as_str()).arg(token.0);
                async move { call.invoke_async::<i64>(&mut conn).await }
            });
            futures_util::future::try_join_all(reaps).await?;
            if sessions.is_empty() {
                return Ok(StoreOutput::Done);
            }
            let mut srem = redis::cmd("SREM");
            srem.arg(lease_index_key(&lease));
            for (user, session, _) in &sessions {
                srem.arg(index_member(user, session));
            }
            let held: BTreeSet<UserId> = sessions.iter().filter(|s| s.2).map(|s| s.0.clone()).collect();
            let held: Vec<UserId> = held.into_iter().collect();
            then_publish(&mut conn, topology, Some(srem), &held).await?;
            Ok(StoreOutput::Done)
        }
        RegistryOp::SetLastSeen { user, last_seen } => {
            scripts
                .set_last_seen
                .key(last_seen_key(&user))
                .key(pending_key(&user))
                .arg(last_seen.to_rfc3339())
                .invoke_async::<i64>(&mut conn)
                .await?;
            Ok(StoreOutput::Done)
        }
        RegistryOp::RecordLastSeen { user, last_seen } => {
            scripts
                .record_last_seen
                .key(last_seen_key(&user))
                .key(pending_key(&user))
                .arg(last_seen.to_rfc3339())
                .invoke_async::<i64>(&mut conn)
                .await?;
            Ok(StoreOutput::Done)
        }
        RegistryOp::Read { users } => {
            if users.is_empty() {
                return Ok(StoreOutput::Registry(Vec::new()));
            }
            let values = match topology {
                // One round trip and 101 commands for 100 users: each user's `HVALS`, then one
                // `MGET` of every last_seen and pending key (a single node serves any keys).
                // Fewer commands is what the read path's throughput is made of (BENCHMARKS.md).
                Topology::Single => {
                    let mut pipe = redis::pipe();
                    for user in &users {
                        pipe.cmd("HVALS").arg(ws_lease_key(user));
                    }
                    let mut mget = redis::cmd("MGET");
                    for user in &users {
                        mget.arg(last_seen_key(user)).arg(pending_key(user));
                    }
                    pipe.add_command(mget);
                    let mut replies = pipe.query_async::<Vec<Value>>(&mut conn).await?;
                    let strings = match replies.pop() {
                        Some(Value::Array(v)) if v.len() == users.len() * 2 => v,
                        other => {
                            return Err(RedisError::from((
                                ErrorKind::UnexpectedReturnType,
                                "registry read: bad MGET reply",
                                format!("{other:?}"),
                            )))
                        }
                    };
                    let mut strings = strings.into_iter();
                    let mut values = Vec::with_capacity(users.len() * 3);
                    for tokens in replies {
                        values.push(tokens);
                        values.extend(strings.by_ref().take(2));
                    }
                    values
                }
                // A cluster spreads users over slots: one pipeline per user (its keys share a slot).
                Topology::Cluster => {
                    let reads = users.iter().map(|user| {
                        let mut conn = conn.clone();
                        let mut pipe = redis::pipe();
                        pipe.cmd("HVALS").arg(ws_lease_key(user));
                        pipe.cmd("GET").arg(last_seen_key(user));
                        pipe.cmd("GET").arg(pending_key(user));
                        async move { pipe.query_async::<Vec<Value>>(&mut conn).await }
                    });
                    futures_util::future::try_join_all(reads).await?.into_iter().flatten().collect()
                }
            };
            if values.len() != users.len() * 3 {
                return Err(RedisError::from((
                    ErrorKind::UnexpectedReturnType,
                    "registry read: wrong number of replies",
                    format!("expected {}, got {}", users.len() * 3, values.len()),
                )));
            }
            let entries = users
                .iter()
                .zip(values.chunks_exact(3))
                .map(|(user, r)| parse_entry(user, &r[0], &r[1], &r[2]))
                .collect::<RedisResult<Vec<_>>>()?;
            Ok(StoreOutput::Registry(entries))
        }
    }
}

/// The renewal script's reply: `{token, live names, expired names}`.
fn parse_lease_view((token, live, expired): (String, Vec<String>, Vec<String>)) -> RedisResult<StoreOutput> {
    let bad = |what: &str, v: &str| {
        RedisError::from((
            ErrorKind::UnexpectedReturnType,
            "lease renewal: bad reply",
            format!("{what}: {v:?}"),
        ))
    };
    let token = LeaseToken(token.parse().map_err(|_| bad("token", &token))?);
    let live =
        live.iter().map(|n| lease_token(n).ok_or_else(|| bad("lease name", n))).collect::<Result<_, _>>()?;
    Ok(StoreOutput::Lease(LeaseView { token, live, expired }))
}

/// A lease index member `<user> <session>`.
fn parse_member(member: &str) -> Option<(UserId, SessionId)> {
    let (user, session) = member.split_once(' ')?;
    Some((UserId::new(user).ok()?, SessionId::new(session)))
}

/// Runs `first` (if any), then `PUBLISH presence:{u}` for each user: one pipeline on a single
/// node; on a cluster, separate commands (a cluster pipeline must stay in one slot, and each
/// channel is in its user's slot).
async fn then_publish<C>(
    conn: &mut C,
    topology: Topology,
    first: Option<redis::Cmd>,
    users: &[UserId],
) -> RedisResult<()>
where
    C: ConnectionLike + Clone + Send + 'static,
{
    let publish = |user: &UserId| redis::cmd("PUBLISH").arg(change_channel(user)).arg("").clone();
    match topology {
        Topology::Single => {
            let mut pipe = redis::pipe();
            if let Some(cmd) = first {
                pipe.add_command(cmd).ignore();
            }
            for user in users {
                pipe.add_command(publish(user)).ignore();
            }
            pipe.query_async::<()>(conn).await
        }
        Topology::Cluster => {
            if let Some(cmd) = first {
                cmd.query_async::<()>(conn).await?;
            }
            let sends = users.iter().map(|user| {
                let mut conn = conn.clone();
                let cmd = publish(user);
                async move { cmd.query_async::<()>(&mut conn).await }
            });
            futures_util::future::try_join_all(sends).await.map(|_| ())
        }
    }
}

/// Turns the `HVALS ws_lease` and two `GET` replies of one user into an entry.
///
/// A wrong `HVALS` reply, or a token that is not a number, is an error (something else owns the
/// key: do not guess "offline"); a `last_seen` that is not a fixed-width timestamp is logged and
/// reported as absent, so the core falls back to the durable store and the backfill overwrites it.
fn parse_entry(
    user: &UserId,
    tokens: &Value,
    last_seen: &Value,
    pending: &Value,
) -> RedisResult<RegistryEntry> {
    let wrong = |what: String| {
        RedisError::from((ErrorKind::UnexpectedReturnType, "registry read: bad ws_lease reply", what))
    };
    let leases = match tokens {
        Value::Array(items) | Value::Set(items) => items
            .iter()
            .map(|v| match redis::from_redis_value_ref::<u64>(v) {
                Ok(t) => Ok(LeaseToken(t)),
                Err(_) => Err(wrong(format!("{}: {v:?}", ws_lease_key(user)))),
            })
            .collect::<RedisResult<Vec<_>>>()?,
        other => return Err(wrong(format!("{}: {other:?}", ws_lease_key(user)))),
    };
    let last_seen = parse_timestamp(|| last_seen_key(user), last_seen);
    let pending = parse_timestamp(|| pending_key(user), pending);
    Ok(RegistryEntry { leases, last_seen, pending })
}

/// A `GET` of a timestamp key: `None` if absent, or (logged) if not a fixed-width timestamp.
/// `key` names it only in that log line (no key is formatted on the read path's hot loop).
fn parse_timestamp(key: impl FnOnce() -> String, v: &Value) -> Option<UnixMillis> {
    let parsed = match v {
        Value::Nil => return None,
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok().and_then(UnixMillis::parse_rfc3339),
        Value::SimpleString(s) | Value::VerbatimString { text: s, .. } => UnixMillis::parse_rfc3339(s),
        _ => None,
    };
    if parsed.is_none() {
        tracing::warn!(key = %key(), value = ?v, "unparseable timestamp in redis: treated as absent");
    }
    parsed
}

/// How a failed command maps to the core's error, and whether the connection is now suspect.
fn classify(e: &RedisError) -> (StoreError, bool) {
    // I/O errors, dropped connections and protocol desyncs (`Parse`) all mean the byte stream can
    // no longer be trusted; server errors (`OOM`, `BUSY`, `WRONGTYPE`, ...) leave it usable.
    let broken = e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error();
    let err =
        if e.is_timeout() { StoreError::Timeout } else { StoreError::Unavailable(format!("redis: {e}")) };
    (err, broken)
}

/// Extracts every `run_id:` line of an `INFO server` reply (one per node on a cluster), sorted.
fn run_ids(reply: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        let text = match v {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            Value::SimpleString(s) => s.clone(),
            Value::VerbatimString { text, .. } => text.clone(),
            Value::Array(items) | Value::Set(items) => {
                items.iter().for_each(|i| walk(i, out));
                return;
            }
            Value::Map(pairs) => {
                pairs.iter().for_each(|(_, v)| walk(v, out));
                return;
            }
            _ => return,
        };
        out.extend(text.lines().filter_map(|l| l.strip_prefix("run_id:")).map(|id| id.trim().to_owned()));
    }
    let mut out = Vec::new();
    walk(reply, &mut out);
    out.sort();
    out
}

/// Reads the run ids. `Ok(None)` when the server does not support `INFO` (a test double): the
/// connection works, only the restart check is unavailable.
async fn read_run_ids<C: ConnectionLike + Send>(conn: &mut C) -> RedisResult<Option<Vec<String>>> {
    match redis::cmd("INFO").arg("server").query_async::<Value>(conn).await {
        Ok(v) => {
            let ids = run_ids(&v);
            Ok((!ids.is_empty()).then_some(ids))
        }
        Err(e) if matches!(e.kind(), ErrorKind::Server(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration and URLs
// ---------------------------------------------------------------------------------------------

/// Settings shared by both Redis executors.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// Stored as the value of each session this server registers (`HSET ws:{u} <session> <id>`),
    /// so an operator can see which server holds a session.
    pub server_id: String,
    /// Bound on every op, from call to answer (default 2 s). A late answer is
    /// [`StoreError::Timeout`].
    pub op_timeout: Duration,
    /// Bound on opening a connection, including the handshake (default 2 s).
    pub connect_timeout: Duration,
    /// First reconnect delay (default 50 ms); doubles per failed attempt.
    pub reconnect_backoff_min: Duration,
    /// Largest reconnect delay (default 2 s).
    pub reconnect_backoff_max: Duration,
    /// How often an idle connection is checked (`INFO server`: liveness and run_id; default 5 s).
    pub health_check_interval: Duration,
}

impl RedisConfig {
    /// Defaults for everything but the server id.
    pub fn new(server_id: impl Into<String>) -> RedisConfig {
        RedisConfig {
            server_id: server_id.into(),
            op_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            reconnect_backoff_min: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(2),
            health_check_interval: Duration::from_secs(5),
        }
    }

    /// The delay before reconnect attempt `attempt` (0-based): exponential, capped, with a jitter
    /// of up to -50% derived from the server id and the attempt (deterministic, no RNG, yet
    /// different servers spread out).
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .reconnect_backoff_min
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.reconnect_backoff_max);
        let mut h = DefaultHasher::new();
        (&self.server_id, attempt).hash(&mut h);
        let frac = (h.finish() % 1000) as u32; // 0..1000
        base - base.mul_f64(f64::from(frac) / 2000.0)
    }
}

/// Where a Redis URL points.
#[derive(Clone, Debug)]
pub enum RedisTarget {
    /// `redis://[user:password@]host:port[/db]`, or a Unix socket:
    /// `redis+unix:///path/to/redis.sock[?db=N]` (also `unix://`).
    Single(ConnectionInfo),
    /// `redis+cluster://[user:password@]host1:port1,host2:port2,...`: seed nodes of a cluster.
    Cluster(Vec<ConnectionInfo>),
}

/// The URL scheme that selects Redis Cluster.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// Why a Redis URL was rejected.
#[derive(Debug, thiserror::Error)]
pub enum RedisUrlError {
    /// The redis crate could not parse it (bad scheme, host, port or db).
    #[error("invalid redis url: {0}")]
    Invalid(String),
    /// A `redis+cluster://` URL without any host.
    #[error("redis+cluster url lists no nodes")]
    NoClusterNodes,
    /// TLS (`rediss://`) or another transport this build does not support.
    #[error("unsupported redis address (TLS is not enabled in this build): {0}")]
    Unsupported(String),
    /// A cluster URL where a single node is expected, or the reverse.
    #[error("{0}")]
    WrongTopology(&'static str),
}

impl RedisTarget {
    /// Parses a Redis URL (see the variants for the accepted forms).
    ///
    /// Credentials are kept in the result but never logged.
    pub fn parse(url: &str) -> Result<RedisTarget, RedisUrlError> {
        if let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) {
            // Split "user:pass@" off the host list: a password may itself contain '@' or ',',
            // so the last '@' before the first '/' ends the credentials.
            let rest = rest.split('/').next().unwrap_or("");
            let (auth, hosts) = match rest.rfind('@') {
                Some(i) => (&rest[..=i], &rest[i + 1..]),
                None => ("", rest),
            };
            let nodes = hosts
                .split(',')
                .filter(|h| !h.trim().is_empty())
                .map(|h| {
                    format!("redis://{auth}{}", h.trim())
                        .into_connection_info()
                        .map_err(|e| RedisUrlError::Invalid(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if nodes.is_empty() {
                return Err(RedisUrlError::NoClusterNodes);
            }
            for n in &nodes {
                check_addr(n.addr())?;
            }
            return Ok(RedisTarget::Cluster(nodes));
        }
        let info = url.into_connection_info().map_err(|e| RedisUrlError::Invalid(e.to_string()))?;
        check_addr(info.addr())?;
        Ok(RedisTarget::Single(info))
    }
}

fn check_addr(addr: &ConnectionAddr) -> Result<(), RedisUrlError> {
    match addr {
        ConnectionAddr::Tcp(..) => Ok(()),
        #[cfg(unix)]
        ConnectionAddr::Unix(..) => Ok(()),
        other => Err(RedisUrlError::Unsupported(other.to_string())),
    }
}

/// Opens the right executor for `url`: [`RedisClusterRegistry`] for `redis+cluster://`,
/// [`RedisRegistry`] over TCP or a Unix socket otherwise.
///
/// Returns at once: connecting happens in the background (see [`RedisRegistry::wait_connected`]).
/// Must be called inside a tokio runtime.
pub fn open_redis(url: &str, config: RedisConfig) -> Result<Arc<dyn RegistryStore>, RedisUrlError> {
    Ok(match RedisTarget::parse(url)? {
        RedisTarget::Single(info) => Arc::new(RedisRegistry::for_target(&info, config)?),
        RedisTarget::Cluster(nodes) => Arc::new(RedisClusterRegistry::new(nodes, config)?),
    })
}

// ---------------------------------------------------------------------------------------------
// Streams and connectors
// ---------------------------------------------------------------------------------------------

/// A byte stream Redis can run over: TCP, a Unix socket, a simulated stream, ...
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncStream for T {}

/// What [`RedisConnector::connect`] returns.
pub type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<Box<dyn AsyncStream>>> + Send + 'static>>;

/// Opens a fresh byte stream to the Redis server; called by the reconnect loop for every attempt.
///
/// The executor bounds each call with [`RedisConfig::connect_timeout`], so an implementation need
/// not (but may) time out by itself.
pub trait RedisConnector: Send + Sync + 'static {
    /// Opens a new stream.
    fn connect(&self) -> ConnectFuture;
}

/// Connects over TCP (`redis://host:port`) or a Unix socket (`redis+unix:///path`).
#[derive(Clone, Debug)]
pub struct TcpConnector {
    addr: ConnectionAddr,
}

impl TcpConnector {
    /// A TCP connector to `host:port`.
    pub fn tcp(host: impl Into<String>, port: u16) -> TcpConnector {
        TcpConnector { addr: ConnectionAddr::Tcp(host.into(), port) }
    }

    /// The connector for a parsed URL's address (TCP or Unix socket; TLS is rejected).
    pub fn for_addr(addr: &ConnectionAddr) -> Result<TcpConnector, RedisUrlError> {
        check_addr(addr)?;
        Ok(TcpConnector { addr: addr.clone() })
    }
}

impl RedisConnector for TcpConnector {
    fn connect(&self) -> ConnectFuture {
        let addr = self.addr.clone();
        Box::pin(async move {
            match addr {
                ConnectionAddr::Tcp(host, port) => {
                    let s = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                    // Requests are small and latency-bound: do not let Nagle batch them.
                    s.set_nodelay(true)?;
                    Ok(Box::new(s) as Box<dyn AsyncStream>)
                }
                #[cfg(unix)]
                ConnectionAddr::Unix(path) => {
                    let s = tokio::net::UnixStream::connect(path).await?;
                    Ok(Box::new(s) as Box<dyn AsyncStream>)
                }
                other => Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("unsupported redis address {other}"),
                )),
            }
        })
    }
}

/// Aborts a spawned task when dropped, so no background task outlives its owner.
/// Connects to each of several nodes in turn (the cluster's seed nodes, for the change feed).
struct SeedRotation {
    nodes: Vec<TcpConnector>,
    next: std::sync::atomic::AtomicUsize,
}

impl SeedRotation {
    fn new(nodes: Vec<TcpConnector>) -> SeedRotation {
        SeedRotation { nodes, next: std::sync::atomic::AtomicUsize::new(0) }
    }
}

impl RedisConnector for SeedRotation {
    fn connect(&self) -> ConnectFuture {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.nodes.len();
        self.nodes[i].connect()
    }
}

pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// Single node
// ---------------------------------------------------------------------------------------------

/// The registry on one Redis node, over a stream from a [`RedisConnector`], with its own
/// reconnect loop. See the module docs for the restart policy.
///
/// Dropping it stops the background task and closes the connection.
pub struct RedisRegistry {
    inner: Arc<Single>,
    changes: ChangeFeed,
    _supervisor: AbortOnDrop,
}

/// State shared by the executor's ops and its supervisor task.
struct Single {
    config: RedisConfig,
    scripts: Scripts,
    /// The connection ops use, `None` while (re)connecting. A std mutex: held only to clone or
    /// swap, never across an await.
    live: Mutex<Option<Live>>,
    /// Ops wake the supervisor: the connection broke, or an op timed out (probe it).
    events: Notify,
    /// Set with `events` when an op timed out: the supervisor health-checks the connection.
    probe: AtomicBool,
    /// The restart generation (see [`RegistryStore::restarts`]).
    restarts: watch::Sender<u64>,
    /// Whether a connection is up, for readiness and [`RedisRegistry::wait_connected`].
    connected: watch::Sender<bool>,
}

/// One established connection. `epoch` tells connections apart, so an op that fails on an old
/// connection cannot tear down its replacement.
struct Live {
    conn: MultiplexedConnection,
    epoch: u64,
}

impl Single {
    fn current(&self) -> Option<(MultiplexedConnection, u64)> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.as_ref().map(|l| (l.conn.clone(), l.epoch))
    }

    fn is_current(&self, epoch: u64) -> bool {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.as_ref().is_some_and(|l| l.epoch == epoch)
    }

    /// Withdraws connection `epoch` (if it is still the live one) and wakes the supervisor.
    fn mark_broken(&self, epoch: u64) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if live.as_ref().is_some_and(|l| l.epoch == epoch) {
            *live = None;
            drop(live);
            self.connected.send_replace(false);
            self.events.notify_one();
        }
    }

    fn request_probe(&self) {
        self.probe.store(true, Ordering::Relaxed);
        self.events.notify_one();
    }
}

impl RedisRegistry {
    /// A registry on the single node of `url` (`redis://...` or `redis+unix://...`), connecting
    /// over TCP or the Unix socket. Use [`open_redis`] to also accept cluster URLs.
    ///
    /// Returns at once and connects in the background. Must be called inside a tokio runtime.
    pub fn from_url(url: &str, config: RedisConfig) -> Result<RedisRegistry, RedisUrlError> {
        match RedisTarget::parse(url)? {
            RedisTarget::Single(info) => RedisRegistry::for_target(&info, config),
            RedisTarget::Cluster(_) => Err(RedisUrlError::WrongTopology(
                "a redis+cluster:// url needs RedisClusterRegistry (or open_redis)",
            )),
        }
    }

    fn for_target(info: &ConnectionInfo, config: RedisConfig) -> Result<RedisRegistry, RedisUrlError> {
        let connector = TcpConnector::for_addr(info.addr())?;
        Ok(RedisRegistry::with_connector(Arc::new(connector), info.redis_settings().clone(), config))
    }

    /// A registry over streams from `connector`; `redis` holds the handshake settings (database,
    /// credentials, protocol; `RedisConnectionInfo::default()` is db 0, no auth, RESP2).
    ///
    /// Returns at once and connects in the background. Must be called inside a tokio runtime.
    pub fn with_connector(
        connector: Arc<dyn RedisConnector>,
        redis: RedisConnectionInfo,
        config: RedisConfig,
    ) -> RedisRegistry {
        let config_clone = config.clone();
        let inner = Arc::new(Single {
            config,
            scripts: Scripts::new(),
            live: Mutex::new(None),
            events: Notify::new(),
            probe: AtomicBool::new(false),
            restarts: watch::Sender::new(0),
            connected: watch::Sender::new(false),
        });
        let changes = ChangeFeed::single(Arc::clone(&connector), redis.clone(), config_clone);
        let task = tokio::spawn(supervise_single(Arc::clone(&inner), connector, redis));
        RedisRegistry { inner, changes, _supervisor: AbortOnDrop(task) }
    }

    /// Whether a connection is currently up (for readiness probes).
    pub fn is_connected(&self) -> bool {
        *self.inner.connected.borrow()
    }

    /// Waits up to `limit` for a connection; `true` if connected.
    pub async fn wait_connected(&self, limit: Duration) -> bool {
        wait_true(self.inner.connected.subscribe(), limit).await
    }
}

async fn wait_true(mut rx: watch::Receiver<bool>, limit: Duration) -> bool {
    tokio::time::timeout(limit, rx.wait_for(|c| *c)).await.is_ok_and(|r| r.is_ok())
}

impl RegistryStore for RedisRegistry {
    fn execute(&self, op: RegistryOp) -> StoreFuture {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let Some((conn, epoch)) = inner.current() else {
                return Err(StoreError::Unavailable("redis: not connected (reconnecting)".into()));
            };
            let run = run_op(conn, &inner.scripts, &inner.config.server_id, op, Topology::Single);
            match tokio::time::timeout(inner.config.op_timeout, run).await {
                Ok(Ok(out)) => Ok(out),
                Ok(Err(e)) => {
                    let (err, broken) = classify(&e);
                    if broken {
                        tracing::warn!(error = %e, "redis connection failed; reconnecting");
                        inner.mark_broken(epoch);
                    }
                    Err(err)
                }
                Err(_) => {
                    inner.request_probe();
                    Err(StoreError::Timeout)
                }
            }
        })
    }

    fn restarts(&self) -> watch::Receiver<u64> {
        self.inner.restarts.subscribe()
    }

    fn watch(&self, user: &UserId) {
        self.changes.watch(user);
    }

    fn unwatch(&self, user: &UserId) {
        self.changes.unwatch(user);
    }

    fn notices(&self) -> Option<mpsc::UnboundedReceiver<Notice>> {
        self.changes.notices()
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

/// Opens one connection: stream, handshake, driver task, run_id.
async fn connect_single(
    connector: &dyn RedisConnector,
    redis: &RedisConnectionInfo,
    config: &RedisConfig,
) -> Result<(MultiplexedConnection, AbortOnDrop, Option<Vec<String>>), String> {
    let limit = config.connect_timeout;
    let stream = tokio::time::timeout(limit, connector.connect())
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
    // Our own timeouts bound every op; the crate's default 500 ms response timeout would only add
    // a second, shorter deadline.
    let cfg = AsyncConnectionConfig::new().set_response_timeout(None).set_connection_timeout(None);
    let (mut conn, driver) =
        tokio::time::timeout(limit, MultiplexedConnection::new_with_config(redis, stream, cfg))
            .await
            .map_err(|_| "handshake timed out".to_owned())?
            .map_err(|e| format!("handshake: {e}"))?;
    // The driver moves bytes between the socket and the connection handles: it must run before
    // any command can complete. It ends when the socket closes.
    let driver = AbortOnDrop(tokio::spawn(driver));
    let ids = tokio::time::timeout(config.op_timeout, read_run_ids(&mut conn))
        .await
        .map_err(|_| "INFO server timed out".to_owned())?
        .map_err(|e| format!("INFO server: {e}"))?;
    Ok((conn, driver, ids))
}

/// Health check: `Ok(ids)` if the connection answered in time.
async fn health_check(
    conn: &mut MultiplexedConnection,
    limit: Duration,
) -> Result<Option<Vec<String>>, String> {
    match tokio::time::timeout(limit, read_run_ids(conn)).await {
        Ok(Ok(ids)) => Ok(ids),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within the op timeout".to_owned()),
    }
}

/// The reconnect loop: connect (with backoff), publish, watch, tear down, repeat. Runs until the
/// registry is dropped.
async fn supervise_single(
    inner: Arc<Single>,
    connector: Arc<dyn RedisConnector>,
    redis: RedisConnectionInfo,
) {
    let config = inner.config.clone();
    let mut attempt: u32 = 0;
    let mut epoch: u64 = 0;
    let mut ever_connected = false;
    let mut last_ids: Option<Vec<String>> = None;
    loop {
        let (conn, mut driver, ids) = match connect_single(&*connector, &redis, &config).await {
            Ok(c) => c,
            Err(e) => {
                let delay = config.backoff(attempt);
                // Warn on the first failure of an outage and then now and again, not every 50 ms.
                if attempt.is_multiple_of(20) {
                    tracing::warn!(error = %e, attempt, ?delay, "redis connect failed; retrying");
                } else {
                    tracing::debug!(error = %e, attempt, ?delay, "redis connect failed; retrying");
                }
                attempt = attempt.saturating_add(1);
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        attempt = 0;
        epoch += 1;
        *inner.live.lock().unwrap_or_else(|e| e.into_inner()) = Some(Live { conn: conn.clone(), epoch });
        inner.connected.send_replace(true);
        if ever_connected {
            // Publish first, then bump: the re-registrations the bump triggers find a connection.
            let run_id_changed = ids.is_none() || last_ids.is_none() || ids != last_ids;
            tracing::warn!(
                run_id_changed,
                "redis reconnected; assuming its data may be lost (restart generation bumped)"
            );
            inner.restarts.send_modify(|g| *g += 1);
        } else {
            tracing::info!("redis connected");
        }
        ever_connected = true;
        if ids.is_some() {
            last_ids = ids;
        }

        // Watch the connection until it breaks.
        let mut tick = tokio::time::interval(config.health_check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate; we just checked
        let mut conn = conn;
        loop {
            let check = tokio::select! {
                // Fixed polling order, so the simulation replays runs exactly.
                biased;
                _ = &mut driver.0 => {
                    tracing::warn!("redis connection closed");
                    break;
                }
                _ = inner.events.notified() => {
                    if !inner.is_current(epoch) {
                        break; // an op marked it broken
                    }
                    inner.probe.swap(false, Ordering::Relaxed)
                }
                _ = tick.tick() => true,
            };
            if !check {
                continue;
            }
            match health_check(&mut conn, config.op_timeout).await {
                Ok(Some(ids)) if last_ids.as_ref().is_some_and(|old| *old != ids) => {
                    tracing::warn!("redis run_id changed without a reconnect (restart generation bumped)");
                    last_ids = Some(ids);
                    inner.restarts.send_modify(|g| *g += 1);
                }
                Ok(Some(ids)) => last_ids = Some(ids),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "redis health check failed; reconnecting");
                    break;
                }
            }
        }
        inner.mark_broken(epoch);
        drop(driver); // aborts the driver task, closing the socket
    }
}

// ---------------------------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------------------------

/// The registry on a Redis Cluster (`redis+cluster://h1:p1,h2:p2`). See the module docs for how
/// restarts are detected and the limitation that comes with the crate-managed connections.
///
/// Dropping it stops the background task and closes the connections.
pub struct RedisClusterRegistry {
    inner: Arc<Cluster>,
    changes: ChangeFeed,
    _supervisor: AbortOnDrop,
}

struct Cluster {
    config: RedisConfig,
    scripts: Scripts,
    /// `None` until the first successful connection; the crate reconnects it by itself after.
    conn: Mutex<Option<ClusterConnection>>,
    /// An op failed in a way that may mean a node was lost (connection error, timeout).
    suspect: AtomicBool,
    /// Ops wake the supervisor for an early health check.
    events: Notify,
    restarts: watch::Sender<u64>,
    /// The last health check (or first connect) succeeded.
    connected: watch::Sender<bool>,
}

impl RedisClusterRegistry {
    /// A registry on the cluster whose seed nodes are `nodes` (see [`RedisTarget::Cluster`]).
    ///
    /// Returns at once and connects in the background. Must be called inside a tokio runtime.
    pub fn new(
        nodes: Vec<ConnectionInfo>,
        config: RedisConfig,
    ) -> Result<RedisClusterRegistry, RedisUrlError> {
        if nodes.is_empty() {
            return Err(RedisUrlError::NoClusterNodes);
        }
        // Change notices use plain pub/sub, which a cluster broadcasts to every node: one
        // subscriber connection to any seed node hears every user's channel.
        let seeds = nodes.iter().map(|n| TcpConnector::for_addr(n.addr())).collect::<Result<Vec<_>, _>>()?;
        let feed_info = nodes[0].redis_settings().clone();
        let changes = ChangeFeed::single(Arc::new(SeedRotation::new(seeds)), feed_info, config.clone());
        let client = ClusterClient::builder(nodes)
            .connection_timeout(config.connect_timeout)
            .response_timeout(config.op_timeout)
            .build()
            .map_err(|e| RedisUrlError::Invalid(e.to_string()))?;
        let inner = Arc::new(Cluster {
            config,
            scripts: Scripts::new(),
            conn: Mutex::new(None),
            suspect: AtomicBool::new(false),
            events: Notify::new(),
            restarts: watch::Sender::new(0),
            connected: watch::Sender::new(false),
        });
        let task = tokio::spawn(supervise_cluster(Arc::clone(&inner), client));
        Ok(RedisClusterRegistry { inner, changes, _supervisor: AbortOnDrop(task) })
    }

    /// A registry on the cluster of a `redis+cluster://` URL.
    pub fn from_url(url: &str, config: RedisConfig) -> Result<RedisClusterRegistry, RedisUrlError> {
        match RedisTarget::parse(url)? {
            RedisTarget::Cluster(nodes) => RedisClusterRegistry::new(nodes, config),
            RedisTarget::Single(_) => {
                Err(RedisUrlError::WrongTopology("RedisClusterRegistry needs a redis+cluster:// url"))
            }
        }
    }

    /// Whether the cluster answered the last health check (for readiness probes).
    pub fn is_connected(&self) -> bool {
        *self.inner.connected.borrow()
    }

    /// Waits up to `limit` for a working connection; `true` if connected.
    pub async fn wait_connected(&self, limit: Duration) -> bool {
        wait_true(self.inner.connected.subscribe(), limit).await
    }
}

impl RegistryStore for RedisClusterRegistry {
    fn execute(&self, op: RegistryOp) -> StoreFuture {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let conn = inner.conn.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let Some(conn) = conn else {
                return Err(StoreError::Unavailable("redis cluster: not connected yet".into()));
            };
            let run = run_op(conn, &inner.scripts, &inner.config.server_id, op, Topology::Cluster);
            match tokio::time::timeout(inner.config.op_timeout, run).await {
                Ok(Ok(out)) => Ok(out),
                Ok(Err(e)) => {
                    let (err, broken) = classify(&e);
                    if broken || e.is_cluster_error() {
                        tracing::warn!(error = %e, "redis cluster op failed");
                        inner.suspect.store(true, Ordering::Relaxed);
                        inner.events.notify_one();
                    }
                    Err(err)
                }
                Err(_) => {
                    inner.suspect.store(true, Ordering::Relaxed);
                    inner.events.notify_one();
                    Err(StoreError::Timeout)
                }
            }
        })
    }

    fn restarts(&self) -> watch::Receiver<u64> {
        self.inner.restarts.subscribe()
    }

    fn watch(&self, user: &UserId) {
        self.changes.watch(user);
    }

    fn unwatch(&self, user: &UserId) {
        self.changes.unwatch(user);
    }

    fn notices(&self) -> Option<mpsc::UnboundedReceiver<Notice>> {
        self.changes.notices()
    }

    fn kind(&self) -> &'static str {
        "redis-cluster"
    }
}

/// Connects (with backoff) once, then health-checks forever; bumps the generation per the
/// module docs.
async fn supervise_cluster(inner: Arc<Cluster>, client: ClusterClient) {
    let config = inner.config.clone();
    let mut attempt: u32 = 0;
    let mut conn = loop {
        match tokio::time::timeout(config.connect_timeout, client.get_async_connection()).await {
            Ok(Ok(c)) => break c,
            Ok(Err(e)) => {
                if attempt.is_multiple_of(20) {
                    tracing::warn!(error = %e, attempt, "redis cluster connect failed; retrying");
                }
            }
            Err(_) => {
                if attempt.is_multiple_of(20) {
                    tracing::warn!(attempt, "redis cluster connect timed out; retrying");
                }
            }
        }
        tokio::time::sleep(config.backoff(attempt)).await;
        attempt = attempt.saturating_add(1);
    };
    let mut last_ids = match tokio::time::timeout(config.op_timeout, read_run_ids(&mut conn)).await {
        Ok(Ok(ids)) => ids,
        _ => {
            inner.suspect.store(true, Ordering::Relaxed);
            None
        }
    };
    *inner.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
    inner.connected.send_replace(true);
    tracing::info!("redis cluster connected");

    let mut tick = tokio::time::interval(config.health_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            biased;
            _ = tick.tick() => {}
            _ = inner.events.notified() => {}
        }
        match tokio::time::timeout(config.op_timeout, read_run_ids(&mut conn)).await {
            Ok(Ok(ids)) => {
                inner.connected.send_replace(true);
                let changed = ids.is_some() && last_ids.is_some() && ids != last_ids;
                let recovered = inner.suspect.swap(false, Ordering::Relaxed);
                if changed || recovered {
                    tracing::warn!(
                        run_ids_changed = changed,
                        recovered,
                        "redis cluster may have lost data (restart generation bumped)"
                    );
                    inner.restarts.send_modify(|g| *g += 1);
                }
                if ids.is_some() {
                    last_ids = ids;
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis cluster health check failed");
                inner.suspect.store(true, Ordering::Relaxed);
                inner.connected.send_replace(false);
            }
            Err(_) => {
                tracing::warn!("redis cluster health check timed out");
                inner.suspect.store(true, Ordering::Relaxed);
                inner.connected.send_replace(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_use_hash_tags() {
        let bob = UserId::new("bob").unwrap();
        assert_eq!(ws_key(&bob), "ws:{bob}");
        assert_eq!(last_seen_key(&bob), "last_seen:{bob}");
        assert_eq!(ws_lease_key(&bob), "ws_lease:{bob}");
        let lease = lease_name("ws-1", LeaseToken(17));
        assert_eq!(lease, "ws-1#17");
        assert_eq!(lease_index_key(&lease), "sessions:{ws-1#17}");
        assert_eq!(lease_token("a#b#17"), Some(LeaseToken(17)));
        assert_eq!(parse_member("bob s-1.x.2"), Some((bob.clone(), SessionId::new("s-1.x.2"))));
        for key in [LEASES_KEY, LEASE_RENEWED_KEY, LEASE_CLAIMS_KEY, LEASE_TOKEN_KEY] {
            assert!(key.ends_with(":{presence}"));
        }
    }

    #[test]
    fn scripts_are_what_we_think() {
        assert!(END_SESSION_LUA
            .contains("redis.call('HDEL', KEYS[1], ARGV[1])\nredis.call('HDEL', KEYS[3], ARGV[1])\n"));
        assert!(END_SESSION_LUA.ends_with("return record_end(KEYS[2], KEYS[4], ARGV[2])\n"));
        assert!(RECORD_LAST_SEEN_LUA.ends_with("end\nreturn record_end(KEYS[1], KEYS[2], ARGV[1])\n"));
        assert!(SET_LAST_SEEN_LUA.contains("local wrote = max_into(KEYS[1], ARGV[1])"));
        assert!(REAP_LUA.starts_with("if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end"));
    }

    #[test]
    fn parses_urls() {
        assert!(matches!(
            RedisTarget::parse("redis://127.0.0.1:6379/2").unwrap(),
            RedisTarget::Single(i) if i.redis_settings().db() == 2
        ));
        assert!(matches!(RedisTarget::parse("redis+unix:///tmp/r.sock").unwrap(), RedisTarget::Single(_)));
        match RedisTarget::parse("redis+cluster://u:p@ss@h1:7000,h2:7001").unwrap() {
            RedisTarget::Cluster(nodes) => {
                assert_eq!(nodes.len(), 2);
                assert_eq!(nodes[1].addr(), &ConnectionAddr::Tcp("h2".into(), 7001));
                assert_eq!(nodes[0].redis_settings().password(), Some("p@ss"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(RedisTarget::parse("redis+cluster://"), Err(RedisUrlError::NoClusterNodes)));
        assert!(RedisTarget::parse("http://x").is_err());
    }

    #[test]
    fn parses_entries() {
        let bob = UserId::new("bob").unwrap();
        let ts = Value::BulkString(b"2024-01-15T09:42:00.000Z".to_vec());
        assert_eq!(
            parse_entry(&bob, &Value::Array(vec![Value::BulkString(b"17".to_vec())]), &ts, &Value::Nil)
                .unwrap(),
            RegistryEntry {
                leases: vec![LeaseToken(17)],
                last_seen: Some(UnixMillis(1_705_311_720_000)),
                pending: None
            }
        );
        let garbage = Value::BulkString(b"yesterday".to_vec());
        assert_eq!(
            parse_entry(&bob, &Value::Array(vec![]), &garbage, &ts).unwrap(),
            RegistryEntry { leases: vec![], last_seen: None, pending: Some(UnixMillis(1_705_311_720_000)) }
        );
        assert!(parse_entry(&bob, &Value::Nil, &Value::Nil, &Value::Nil).is_err());
        let not_a_token = Value::Array(vec![Value::BulkString(b"ws-1".to_vec())]);
        assert!(parse_entry(&bob, &not_a_token, &Value::Nil, &Value::Nil).is_err());
    }

    #[test]
    fn extracts_run_ids() {
        let single = Value::BulkString(b"# Server\r\nredis_version:7.0\r\nrun_id:abc\r\n".to_vec());
        assert_eq!(run_ids(&single), vec!["abc".to_owned()]);
        let cluster = Value::Map(vec![
            (Value::BulkString(b"n2".to_vec()), Value::BulkString(b"run_id:zz\r\n".to_vec())),
            (Value::BulkString(b"n1".to_vec()), Value::BulkString(b"run_id:aa\r\n".to_vec())),
        ]);
        assert_eq!(run_ids(&cluster), vec!["aa".to_owned(), "zz".to_owned()]);
    }

    #[test]
    fn backoff_grows_caps_and_jitters_deterministically() {
        let c = RedisConfig::new("srv-1");
        for a in 0..30 {
            let d = c.backoff(a);
            let cap = c.reconnect_backoff_min.saturating_mul(1 << a.min(16)).min(c.reconnect_backoff_max);
            assert!(d <= cap && d >= cap / 2, "{a}: {d:?}");
            assert_eq!(d, c.backoff(a));
        }
    }
}
