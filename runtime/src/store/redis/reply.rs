//! Reading Redis's replies: registry entries, the lease renewal, `INFO server` run ids, the
//! `INFO memory` eviction policy, and how an error maps to the core's [`StoreError`].

use presence_core::store::{LeaseToken, LeaseView, RegistryEntry, StoreError, StoreOutput};
use presence_core::time::UnixMillis;
use presence_core::user::UserId;
use redis::aio::ConnectionLike;
use redis::{ErrorKind, RedisError, RedisResult, Value};

use super::schema::{last_seen_key, lease_token, pending_key, read_view_key, ws_lease_key};

/// The renewal script's reply: `{token, live names, expired names}`.
pub(super) fn parse_lease_view(
    (token, live, expired): (String, Vec<String>, Vec<String>),
) -> RedisResult<StoreOutput> {
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

/// Turns the `HVALS ws_lease` and two `GET` replies of one user into an entry.
///
/// A wrong `HVALS` reply, or a token that is not a number, is an error (something else owns the
/// key: do not guess "offline"); a `last_seen` that is not a fixed-width timestamp is logged and
/// reported as absent, so the core falls back to the durable store and the backfill overwrites it.
pub(super) fn parse_entry(
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

/// Turns a `read_view:{u}` reply into an entry; `None` when the view is absent (the caller reads
/// the keys). A view that is not `<tokens>|<timestamp or empty>|<timestamp or empty>` with numeric
/// tokens is an error, as a wrong `ws_lease` reply is (something else wrote it: do not guess).
pub(super) fn parse_view(user: &UserId, view: &Value) -> RedisResult<Option<RegistryEntry>> {
    let wrong = |what: &dyn std::fmt::Debug| {
        RedisError::from((
            ErrorKind::UnexpectedReturnType,
            "registry read: bad read view",
            format!("{}: {what:?}", read_view_key(user)),
        ))
    };
    let text = match view {
        Value::Nil => return Ok(None),
        Value::BulkString(bytes) => std::str::from_utf8(bytes).map_err(|_| wrong(view))?,
        Value::SimpleString(s) => s.as_str(),
        other => return Err(wrong(other)),
    };
    let mut parts = text.splitn(3, '|');
    let (Some(tokens), Some(last_seen), Some(pending)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(wrong(&text));
    };
    let leases = tokens
        .split(' ')
        .filter(|t| !t.is_empty())
        .map(|t| t.parse().map(LeaseToken).map_err(|_| wrong(&text)))
        .collect::<RedisResult<Vec<_>>>()?;
    // As from the keys: a timestamp of the right shape that is no date reads as absent (logged).
    let stamp = |v: &str| {
        if v.is_empty() {
            return None;
        }
        let parsed = UnixMillis::parse_rfc3339(v);
        if parsed.is_none() {
            warn_unparseable(&read_view_key(user), &v);
        }
        parsed
    };
    Ok(Some(RegistryEntry { leases, last_seen: stamp(last_seen), pending: stamp(pending) }))
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
        warn_unparseable(&key(), v);
    }
    parsed
}

fn warn_unparseable(key: &str, value: &dyn std::fmt::Debug) {
    tracing::warn!(key, value = ?value, "unparseable timestamp in redis: treated as absent");
}

/// How a failed command maps to the core's error, and whether the connection is now suspect.
pub(super) fn classify(e: &RedisError) -> (StoreError, bool) {
    // I/O errors, dropped connections and protocol desyncs (`Parse`) all mean the byte stream can
    // no longer be trusted; server errors (`OOM`, `BUSY`, `WRONGTYPE`, ...) leave it usable.
    let broken = e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error();
    let err =
        if e.is_timeout() { StoreError::Timeout } else { StoreError::Unavailable(format!("redis: {e}")) };
    (err, broken)
}

/// Extracts every `run_id:` line of an `INFO server` reply (one per node on a cluster), sorted.
pub(super) fn run_ids(reply: &Value) -> Vec<String> {
    info_values(reply, "run_id")
}

/// The values of `field` in an `INFO` reply (one node's text, or a cluster's map of them), sorted.
fn info_values(reply: &Value, field: &str) -> Vec<String> {
    fn walk(v: &Value, prefix: &str, out: &mut Vec<String>) {
        let text = match v {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            Value::SimpleString(s) => s.clone(),
            Value::VerbatimString { text, .. } => text.clone(),
            Value::Array(items) | Value::Set(items) => {
                items.iter().for_each(|i| walk(i, prefix, out));
                return;
            }
            Value::Map(pairs) => {
                pairs.iter().for_each(|(_, v)| walk(v, prefix, out));
                return;
            }
            _ => return,
        };
        out.extend(text.lines().filter_map(|l| l.strip_prefix(prefix)).map(|v| v.trim().to_owned()));
    }
    let mut out = Vec::new();
    walk(reply, &format!("{field}:"), &mut out);
    out.sort();
    out
}

/// The eviction policies (`maxmemory_policy`) other than `noeviction` among the nodes' `INFO
/// memory` replies, each once. Any other policy may evict a session entry, a lease or a pending
/// last_seen under memory pressure (docs/OPERATIONS.md, "Redis"). Empty when every node keeps
/// `noeviction`, or when the reply names no policy (a test double, a proxy that hides it).
pub(super) fn evicting_policies(reply: &Value) -> Vec<String> {
    let mut policies = info_values(reply, "maxmemory_policy");
    policies.retain(|p| p != "noeviction");
    policies.dedup();
    policies
}

/// Reads the nodes' eviction policy at connect and warns if any node may evict our keys. Never
/// fails the connection: the check is advice to the operator, and a Redis that hides `INFO
/// memory` still serves.
pub(super) async fn warn_if_evicting<C: ConnectionLike + Send>(conn: &mut C, limit: std::time::Duration) {
    match tokio::time::timeout(limit, redis::cmd("INFO").arg("memory").query_async::<Value>(conn)).await {
        Ok(Ok(v)) => {
            let policies = evicting_policies(&v);
            if !policies.is_empty() {
                tracing::warn!(
                    policies = %policies.join(","),
                    "redis may evict presence keys (sessions, leases, pending last_seen) under memory \
                     pressure: set maxmemory-policy noeviction (docs/OPERATIONS.md)"
                );
            }
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "redis INFO memory failed; eviction policy not checked"),
        Err(_) => tracing::debug!("redis INFO memory timed out; eviction policy not checked"),
    }
}

/// Reads the run ids. `Ok(None)` when the server does not support `INFO` (a test double): the
/// connection works, only the restart check is unavailable.
pub(super) async fn read_run_ids<C: ConnectionLike + Send>(conn: &mut C) -> RedisResult<Option<Vec<String>>> {
    match redis::cmd("INFO").arg("server").query_async::<Value>(conn).await {
        Ok(v) => {
            let ids = run_ids(&v);
            Ok((!ids.is_empty()).then_some(ids))
        }
        Err(e) if matches!(e.kind(), ErrorKind::Server(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn finds_evicting_policies() {
        let node = |p: &str| {
            Value::BulkString(format!("# Memory\r\nmaxmemory:0\r\nmaxmemory_policy:{p}\r\n").into_bytes())
        };
        assert_eq!(evicting_policies(&node("noeviction")), Vec::<String>::new());
        assert_eq!(evicting_policies(&node("allkeys-lru")), vec!["allkeys-lru".to_owned()]);
        let cluster = Value::Map(vec![
            (Value::BulkString(b"n1".to_vec()), node("volatile-ttl")),
            (Value::BulkString(b"n2".to_vec()), node("noeviction")),
            (Value::BulkString(b"n3".to_vec()), node("volatile-ttl")),
        ]);
        assert_eq!(evicting_policies(&cluster), vec!["volatile-ttl".to_owned()]);
        // No policy in the reply (the simulator's Redis): nothing to warn about.
        assert_eq!(
            evicting_policies(&Value::BulkString(b"# Server\r\nrun_id:x\r\n".to_vec())),
            Vec::<String>::new()
        );
    }
}
