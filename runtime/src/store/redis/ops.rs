//! The registry operations on Redis, one function each, shared by both executors (the caller
//! applies the op timeout). What each sends is listed in the module docs of [`super`].

use std::collections::BTreeSet;

use presence_core::store::{LeaseToken, ReapBatch, RegistryEntry, RegistryOp, StoreOutput};
use presence_core::time::UnixMillis;
use presence_core::user::{SessionId, UserId};
use redis::aio::ConnectionLike;
use redis::{ErrorKind, RedisError, RedisResult, Value};

use super::config::ReadFrom;
use super::reply::{parse_entry, parse_lease_view, parse_view};
use super::schema::{
    index_member, last_seen_key, lease_index_key, lease_name, lease_token, parse_member, pending_key,
    read_view_key, ws_key, ws_lease_key, LEASES_KEY, LEASE_CLAIMS_KEY, LEASE_RENEWED_KEY, LEASE_TOKEN_KEY,
};
use super::scripts::RegistryScript;
use crate::store::{change_channel, PRIVACY_CHANNEL};

/// Single node: one pipeline for the whole batch. Cluster: one pipeline per user (a cluster
/// pipeline may not span slots), run concurrently.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Topology {
    Single,
    Cluster,
}

/// The connection an op runs on: cloned for every command sent concurrently.
pub(super) trait Conn: ConnectionLike + Clone + Send + 'static {}

impl<C: ConnectionLike + Clone + Send + 'static> Conn for C {}

/// Runs one op on `conn`, as server `server_id`; `Read` takes users' state from `read_from`.
pub(super) async fn run_op<C: Conn>(
    mut conn: C,
    server_id: &str,
    op: RegistryOp,
    topology: Topology,
    read_from: ReadFrom,
) -> RedisResult<StoreOutput> {
    let c = &mut conn;
    match op {
        RegistryOp::Register { user, session, token } => {
            register(c, topology, server_id, &user, &session, token).await
        }
        RegistryOp::EndSession { user, session, last_seen, token } => {
            end_session(c, topology, server_id, &user, &session, last_seen, token).await
        }
        RegistryOp::RenewLease { token, ttl, wall } => renew_lease(c, server_id, token, ttl, wall).await,
        RegistryOp::ClaimReap { lease, ttl, batch, ceiling } => {
            claim_reap(c, server_id, &lease, ttl, batch, ceiling).await
        }
        RegistryOp::MarkReaped { token, last_seen, sessions } => {
            mark_reaped(c, token, last_seen, &sessions).await
        }
        RegistryOp::Reap { lease, token, sessions } => reap(c, topology, &lease, token, &sessions).await,
        RegistryOp::SetLastSeen { user, last_seen } => {
            last_seen_script(c, RegistryScript::SetLastSeen, &user, last_seen).await
        }
        RegistryOp::RecordLastSeen { user, last_seen } => {
            last_seen_script(c, RegistryScript::RecordLastSeen, &user, last_seen).await
        }
        RegistryOp::Read { users } => Ok(StoreOutput::Registry(match read_from {
            ReadFrom::View => read_views(c, topology, &users).await?,
            ReadFrom::Keys => read_keys(c, topology, &users).await?,
        })),
    }
}

/// `Register`: the lease index, then the lease hash, the server hash and the read view (one
/// script), then the change notice.
async fn register<C: Conn>(
    conn: &mut C,
    topology: Topology,
    server_id: &str,
    user: &UserId,
    session: &SessionId,
    token: LeaseToken,
) -> RedisResult<StoreOutput> {
    // Index first: a server that dies between the two leaves an index entry with no
    // registration (the reaper skips it), never a registration the reaper cannot find. A
    // single node runs a pipeline in order, so it goes in the same round trip; on a
    // cluster the index lives in another slot.
    let mut sadd = redis::cmd("SADD");
    sadd.arg(lease_index_key(&lease_name(server_id, token))).arg(index_member(user, session));
    let mut pipe = redis::pipe();
    match topology {
        Topology::Single => {
            pipe.add_command(sadd).ignore();
        }
        Topology::Cluster => sadd.query_async::<()>(conn).await?,
    }
    // Both hashes and the read view in one script. `EVAL` with the text, not `EVALSHA`: a
    // `NOSCRIPT` inside a pipeline would fail the registration after the index was added.
    pipe.cmd("EVAL")
        .arg(RegistryScript::Register.source())
        .arg(5)
        .arg(ws_lease_key(user))
        .arg(ws_key(user))
        .arg(last_seen_key(user))
        .arg(pending_key(user))
        .arg(read_view_key(user))
        .arg(session.as_str())
        .arg(token.0)
        .arg(server_id)
        .ignore()
        .add_command(publish(topology, &change_channel(user), ""))
        .ignore()
        .query_async::<()>(conn)
        .await?;
    Ok(StoreOutput::Done)
}

/// `EndSession`: the script, then the lease index and the change notice.
async fn end_session<C: Conn>(
    conn: &mut C,
    topology: Topology,
    server_id: &str,
    user: &UserId,
    session: &SessionId,
    last_seen: UnixMillis,
    token: Option<LeaseToken>,
) -> RedisResult<StoreOutput> {
    RegistryScript::EndSession
        .script()
        .key(ws_key(user))
        .key(last_seen_key(user))
        .key(ws_lease_key(user))
        .key(pending_key(user))
        .key(read_view_key(user))
        .arg(session.as_str())
        .arg(last_seen.to_rfc3339())
        .invoke_async::<i64>(conn)
        .await?;
    // Then the index, and the change notice (after the change, so a watcher that reads on
    // it sees the change).
    let srem = token.map(|token| {
        let mut cmd = redis::cmd("SREM");
        cmd.arg(lease_index_key(&lease_name(server_id, token))).arg(index_member(user, session));
        cmd
    });
    then_publish(conn, topology, srem, std::slice::from_ref(user)).await?;
    Ok(StoreOutput::Done)
}

/// `RenewLease`: the renewal script; its reply is this server's view of the leases.
async fn renew_lease<C: Conn>(
    conn: &mut C,
    server_id: &str,
    token: Option<LeaseToken>,
    ttl: std::time::Duration,
    wall: UnixMillis,
) -> RedisResult<StoreOutput> {
    let reply = RegistryScript::RenewLease
        .script()
        .key(LEASES_KEY)
        .key(LEASE_RENEWED_KEY)
        .key(LEASE_TOKEN_KEY)
        .arg(server_id)
        .arg(token.map(|t| t.0.to_string()).unwrap_or_default())
        .arg(ttl.as_millis() as u64)
        .arg(wall.0)
        .invoke_async::<(String, Vec<String>, Vec<String>)>(conn)
        .await?;
    parse_lease_view(reply)
}

/// `ClaimReap`: claim the expired lease; if it is ours, a batch of its index and which of those
/// sessions are still held under it (or forget the lease when its index is empty).
async fn claim_reap<C: Conn>(
    conn: &mut C,
    server_id: &str,
    lease: &str,
    ttl: std::time::Duration,
    batch: usize,
    ceiling: UnixMillis,
) -> RedisResult<StoreOutput> {
    let renewed = RegistryScript::ClaimReap
        .script()
        .key(LEASES_KEY)
        .key(LEASE_RENEWED_KEY)
        .key(LEASE_CLAIMS_KEY)
        .arg(lease)
        .arg(server_id)
        .arg(ttl.as_millis() as u64)
        .invoke_async::<Option<i64>>(conn)
        .await?;
    let (Some(renewed), Some(token)) = (renewed, lease_token(lease)) else {
        return Ok(StoreOutput::Reap(None));
    };
    // A dead server's clock may have been ahead of ours: never record past our now.
    let last_seen = UnixMillis(renewed).min(ceiling);
    let members = redis::cmd("SRANDMEMBER")
        .arg(lease_index_key(lease))
        .arg(batch.max(1))
        .query_async::<Vec<String>>(conn)
        .await?;
    if members.is_empty() {
        RegistryScript::DropLease
            .script()
            .key(LEASES_KEY)
            .key(LEASE_RENEWED_KEY)
            .key(LEASE_CLAIMS_KEY)
            .arg(lease)
            .invoke_async::<i64>(conn)
            .await?;
        return Ok(StoreOutput::Reap(None));
    }
    // Sorted, so the batch (and what is done with it) does not depend on the set's order.
    let mut sessions: Vec<(UserId, SessionId)> = members.iter().filter_map(|m| parse_member(m)).collect();
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

/// `MarkReaped`: the mark script per session, in parallel.
async fn mark_reaped<C: Conn>(
    conn: &mut C,
    token: LeaseToken,
    last_seen: UnixMillis,
    sessions: &[(UserId, SessionId)],
) -> RedisResult<StoreOutput> {
    let ts = last_seen.to_rfc3339();
    let marks = sessions.iter().map(|(user, session)| {
        let mut conn = conn.clone();
        let mut call = RegistryScript::ReapMark.script().prepare_invoke();
        call.key(ws_lease_key(user)).key(last_seen_key(user)).key(pending_key(user)).key(read_view_key(user));
        call.arg(session.as_str()).arg(token.0).arg(&ts);
        async move { call.invoke_async::<i64>(&mut conn).await }
    });
    futures_util::future::try_join_all(marks).await?;
    Ok(StoreOutput::Done)
}

/// `Reap`: compare-and-delete per held session, in parallel; then the index and the notices.
async fn reap<C: Conn>(
    conn: &mut C,
    topology: Topology,
    lease: &str,
    token: LeaseToken,
    sessions: &[(UserId, SessionId, bool)],
) -> RedisResult<StoreOutput> {
    let reaps = sessions.iter().filter(|s| s.2).map(|(user, session, _)| {
        let mut conn = conn.clone();
        let mut call = RegistryScript::Reap.script().prepare_invoke();
        call.key(ws_key(user)).key(ws_lease_key(user));
        call.key(last_seen_key(user)).key(pending_key(user)).key(read_view_key(user));
        call.arg(session.as_str()).arg(token.0);
        async move { call.invoke_async::<i64>(&mut conn).await }
    });
    futures_util::future::try_join_all(reaps).await?;
    if sessions.is_empty() {
        return Ok(StoreOutput::Done);
    }
    let mut srem = redis::cmd("SREM");
    srem.arg(lease_index_key(lease));
    for (user, session, _) in sessions {
        srem.arg(index_member(user, session));
    }
    let held: BTreeSet<UserId> = sessions.iter().filter(|s| s.2).map(|s| s.0.clone()).collect();
    let held: Vec<UserId> = held.into_iter().collect();
    then_publish(conn, topology, Some(srem), &held).await?;
    Ok(StoreOutput::Done)
}

/// `SetLastSeen` or `RecordLastSeen`: the script on the user's two last_seen keys (and its view).
async fn last_seen_script<C: Conn>(
    conn: &mut C,
    script: RegistryScript,
    user: &UserId,
    last_seen: UnixMillis,
) -> RedisResult<StoreOutput> {
    script
        .script()
        .key(last_seen_key(user))
        .key(pending_key(user))
        .key(ws_lease_key(user))
        .key(read_view_key(user))
        .arg(last_seen.to_rfc3339())
        .invoke_async::<i64>(conn)
        .await?;
    Ok(StoreOutput::Done)
}

/// `Read` from the views: one `MGET` of every user's `read_view:{u}` on a single node (one
/// command and one reply per user, where the keys cost 101 commands and three replies per user:
/// BENCHMARKS.md); on a cluster one `GET` per user, in parallel. A user without a view (nothing
/// recorded, or state written before the views existed) is read from the keys
/// ([`read_keys`]), so an absent view never hides a value. Entries in the request's order.
async fn read_views<C: Conn>(
    conn: &mut C,
    topology: Topology,
    users: &[UserId],
) -> RedisResult<Vec<RegistryEntry>> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let views = match topology {
        Topology::Single => {
            let mut mget = redis::cmd("MGET");
            for user in users {
                mget.arg(read_view_key(user));
            }
            mget.query_async::<Vec<Value>>(conn).await?
        }
        Topology::Cluster => {
            let gets = users.iter().map(|user| {
                let mut conn = conn.clone();
                let get = redis::cmd("GET").arg(read_view_key(user)).clone();
                async move { get.query_async::<Value>(&mut conn).await }
            });
            futures_util::future::try_join_all(gets).await?
        }
    };
    if views.len() != users.len() {
        return Err(RedisError::from((
            ErrorKind::UnexpectedReturnType,
            "registry read: wrong number of views",
            format!("expected {}, got {}", users.len(), views.len()),
        )));
    }
    let mut entries = users
        .iter()
        .zip(&views)
        .map(|(user, view)| parse_view(user, view))
        .collect::<RedisResult<Vec<_>>>()?;
    let absent: Vec<usize> = (0..users.len()).filter(|&i| entries[i].is_none()).collect();
    if !absent.is_empty() {
        let missing: Vec<UserId> = absent.iter().map(|&i| users[i].clone()).collect();
        for (i, entry) in absent.into_iter().zip(read_keys(conn, topology, &missing).await?) {
            entries[i] = Some(entry);
        }
    }
    Ok(entries.into_iter().flatten().collect())
}

/// `Read` from the keys: per user the `HVALS ws_lease:{u}` and the two last_seen strings, as
/// entries in the request's order.
async fn read_keys<C: Conn>(
    conn: &mut C,
    topology: Topology,
    users: &[UserId],
) -> RedisResult<Vec<RegistryEntry>> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let values = match topology {
        Topology::Single => read_single(conn, users).await?,
        Topology::Cluster => read_cluster(conn, users).await?,
    };
    if values.len() != users.len() * 3 {
        return Err(RedisError::from((
            ErrorKind::UnexpectedReturnType,
            "registry read: wrong number of replies",
            format!("expected {}, got {}", users.len() * 3, values.len()),
        )));
    }
    users.iter().zip(values.chunks_exact(3)).map(|(user, r)| parse_entry(user, &r[0], &r[1], &r[2])).collect()
}

/// One round trip and 101 commands for 100 users: each user's `HVALS`, then one `MGET` of every
/// last_seen and pending key (a single node serves any keys). Fewer commands is what the read
/// path's throughput is made of (BENCHMARKS.md). The replies, three per user.
async fn read_single<C: Conn>(conn: &mut C, users: &[UserId]) -> RedisResult<Vec<Value>> {
    let mut pipe = redis::pipe();
    for user in users {
        pipe.cmd("HVALS").arg(ws_lease_key(user));
    }
    let mut mget = redis::cmd("MGET");
    for user in users {
        mget.arg(last_seen_key(user)).arg(pending_key(user));
    }
    pipe.add_command(mget);
    let mut replies = pipe.query_async::<Vec<Value>>(conn).await?;
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
    Ok(values)
}

/// A cluster spreads users over slots: one pipeline per user (its keys share a slot), all in
/// parallel. The replies, three per user.
async fn read_cluster<C: Conn>(conn: &mut C, users: &[UserId]) -> RedisResult<Vec<Value>> {
    let reads = users.iter().map(|user| {
        let mut conn = conn.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("HVALS").arg(ws_lease_key(user));
        pipe.cmd("GET").arg(last_seen_key(user));
        pipe.cmd("GET").arg(pending_key(user));
        async move { pipe.query_async::<Vec<Value>>(&mut conn).await }
    });
    Ok(futures_util::future::try_join_all(reads).await?.into_iter().flatten().collect())
}

/// The publish command of a topology: plain `PUBLISH` on a single node; `SPUBLISH` on a cluster,
/// where it stays on the shard that owns the channel's slot instead of crossing the cluster bus to
/// every node (the feed subscribes with `SSUBSCRIBE`, sharded.rs).
fn publish(topology: Topology, channel: &str, message: &str) -> redis::Cmd {
    let name = match topology {
        Topology::Single => "PUBLISH",
        Topology::Cluster => "SPUBLISH",
    };
    redis::cmd(name).arg(channel).arg(message).clone()
}

/// `PUBLISH presence:privacy <user>` (`SPUBLISH` on a cluster): `user`'s privacy settings or
/// contacts changed. One channel for every user: every server's caches may hold anyone's
/// settings, and changes are rare.
pub(super) async fn publish_privacy<C: Conn>(
    conn: &mut C,
    topology: Topology,
    user: &UserId,
) -> RedisResult<StoreOutput> {
    publish(topology, PRIVACY_CHANNEL, user.as_str()).query_async::<()>(conn).await?;
    Ok(StoreOutput::Done)
}

/// Runs `first` (if any), then `PUBLISH presence:{u}` (cluster: `SPUBLISH`) for each user: one
/// pipeline on a single node; on a cluster, separate commands (a cluster pipeline must stay in one
/// slot, and each channel is in its user's slot).
async fn then_publish<C: Conn>(
    conn: &mut C,
    topology: Topology,
    first: Option<redis::Cmd>,
    users: &[UserId],
) -> RedisResult<()> {
    let notice = |user: &UserId| publish(topology, &change_channel(user), "");
    match topology {
        Topology::Single => {
            let mut pipe = redis::pipe();
            if let Some(cmd) = first {
                pipe.add_command(cmd).ignore();
            }
            for user in users {
                pipe.add_command(notice(user)).ignore();
            }
            pipe.query_async::<()>(conn).await
        }
        Topology::Cluster => {
            if let Some(cmd) = first {
                cmd.query_async::<()>(conn).await?;
            }
            let sends = users.iter().map(|user| {
                let mut conn = conn.clone();
                let cmd = notice(user);
                async move { cmd.query_async::<()>(&mut conn).await }
            });
            futures_util::future::try_join_all(sends).await.map(|_| ())
        }
    }
}
