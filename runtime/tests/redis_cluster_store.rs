//! The Redis Cluster registry executor against a real cluster.
//!
//! `#[ignore]`d so a plain `cargo test` stays green; run with `--include-ignored` and
//! `PRESENCE_TEST_REDIS_CLUSTER_URL=redis+cluster://127.0.0.1:7000,127.0.0.1:7001,...`.
//! A three-node cluster on one machine:
//!
//! ```text
//! for p in 7000 7001 7002; do
//!   mkdir -p /tmp/rc/$p && (cd /tmp/rc/$p && redis-server --port $p --cluster-enabled yes \
//!     --cluster-config-file nodes.conf --save '' --appendonly no --daemonize yes)
//! done
//! redis-cli --cluster create 127.0.0.1:7000 127.0.0.1:7001 127.0.0.1:7002 --cluster-yes
//! ```
//!
//! (A one-node cluster also works: `redis-cli -p 7000 cluster addslotsrange 0 16383`.)

use std::collections::BTreeMap;
use std::time::Duration;

use presence_core::store::{LeaseToken, RegistryEntry, RegistryOp, StoreOutput};
use presence_core::time::UnixMillis;
use presence_core::user::{SessionId, UserId};
use presence_runtime::store::redis::{last_seen_key, pending_key, ws_key, ws_lease_key};
use presence_runtime::store::{
    change_channel, open_redis, Notice, RedisClusterRegistry, RedisConfig, RegistryStore,
};
use redis::AsyncCommands;

const NEEDS: &str = "PRESENCE_TEST_REDIS_CLUSTER_URL is not set: this test needs a Redis Cluster, e.g. \
                     PRESENCE_TEST_REDIS_CLUSTER_URL=redis+cluster://127.0.0.1:7000,127.0.0.1:7001 \
                     (see this file's docs; run it via scripts/test)";

const T0: i64 = 1_705_311_720_000;
/// The lease the registrations of the first part are made under.
const TOKEN: LeaseToken = LeaseToken(5);

fn cluster_url() -> String {
    std::env::var("PRESENCE_TEST_REDIS_CLUSTER_URL").unwrap_or_else(|_| panic!("{NEEDS}"))
}

async fn ok(reg: &dyn RegistryStore, op: RegistryOp) {
    assert_eq!(reg.execute(op).await, Ok(StoreOutput::Done));
}

#[tokio::test]
#[ignore = "needs a redis cluster: run via scripts/test"]
async fn cluster_ops_work_across_slots() {
    let url = cluster_url();
    let reg = RedisClusterRegistry::from_url(&url, RedisConfig::new("srv-c")).unwrap();
    assert!(reg.wait_connected(Duration::from_secs(10)).await, "no cluster at {url}");
    assert_eq!(reg.kind(), "redis-cluster");
    let tag = format!("{}-{}", std::process::id(), T0);
    // Enough users that they spread over every node's slots.
    let users: Vec<UserId> = (0..60).map(|i| UserId::new(&format!("c{i}-{tag}")).unwrap()).collect();

    for (i, u) in users.iter().enumerate() {
        let session = |s: &str| SessionId::new(s);
        ok(&reg, RegistryOp::Register { user: u.clone(), session: session("s1"), token: TOKEN }).await;
        ok(&reg, RegistryOp::Register { user: u.clone(), session: session("s2"), token: TOKEN }).await;
        // A cached value for the ends to raise (an end never creates the key).
        ok(&reg, RegistryOp::SetLastSeen { user: u.clone(), last_seen: UnixMillis(T0 - 10) }).await;
        if i % 2 == 0 {
            // End one of two sessions, then try to lower last_seen: refused.
            let end = RegistryOp::EndSession {
                user: u.clone(),
                session: session("s1"),
                last_seen: UnixMillis(T0 + i as i64),
                token: Some(TOKEN),
            };
            ok(&reg, end).await;
            let older = RegistryOp::SetLastSeen { user: u.clone(), last_seen: UnixMillis(T0 - 1) };
            ok(&reg, older).await;
        } else {
            for s in ["s1", "s2"] {
                let end = RegistryOp::EndSession {
                    user: u.clone(),
                    session: session(s),
                    last_seen: UnixMillis(T0),
                    token: Some(TOKEN),
                };
                ok(&reg, end).await;
            }
        }
    }

    let mut wanted: Vec<UserId> = users.iter().rev().cloned().collect();
    wanted.push(users[0].clone());
    let got = match reg.execute(RegistryOp::Read { users: wanted.clone() }).await {
        Ok(StoreOutput::Registry(v)) => v,
        other => panic!("unexpected {other:?}"),
    };
    let expect = |u: &UserId| {
        let i = users.iter().position(|x| x == u).unwrap();
        if i % 2 == 0 {
            RegistryEntry { leases: vec![TOKEN], last_seen: Some(UnixMillis(T0 + i as i64)), pending: None }
        } else {
            RegistryEntry { leases: vec![], last_seen: Some(UnixMillis(T0)), pending: None }
        }
    };
    assert_eq!(got, wanted.iter().map(expect).collect::<Vec<_>>());

    // The stored schema, read with a plain cluster connection.
    let client = redis::cluster::ClusterClient::new(vec![url
        .strip_prefix("redis+cluster://")
        .unwrap()
        .split(',')
        .map(|h| format!("redis://{h}"))
        .next()
        .unwrap()])
    .unwrap();
    let mut admin = client.get_async_connection().await.unwrap();
    let hash: BTreeMap<String, String> = admin.hgetall(ws_key(&users[0])).await.unwrap();
    assert_eq!(hash, BTreeMap::from([("s2".to_owned(), "srv-c".to_owned())]));
    let stored: String = admin.get(last_seen_key(&users[0])).await.unwrap();
    assert_eq!(stored, "2024-01-15T09:42:00.000Z");

    // Scripts survive SCRIPT FLUSH on every node.
    let _: redis::Value = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut admin).await.unwrap();
    ok(&reg, RegistryOp::SetLastSeen { user: users[1].clone(), last_seen: UnixMillis(T0 + 99) }).await;

    // Leases across slots: a dead server's sessions (user slots), its index (its own slot) and the
    // lease keys (the `{presence}` slot), reaped from another server.
    let dead = RedisClusterRegistry::from_url(&url, RedisConfig::new(format!("dead-{tag}"))).unwrap();
    assert!(dead.wait_connected(Duration::from_secs(10)).await);
    let renew = |token, ttl| RegistryOp::RenewLease { token, ttl, wall: UnixMillis(T0) };
    let td = match dead.execute(renew(None, Duration::from_millis(300))).await {
        Ok(StoreOutput::Lease(v)) => v.token,
        other => panic!("unexpected {other:?}"),
    };
    for u in &users[..10] {
        ok(&dead, RegistryOp::Register { user: u.clone(), session: SessionId::new("d1"), token: td }).await;
    }
    tokio::time::sleep(Duration::from_millis(450)).await;
    let name = format!("dead-{tag}#{}", td.0);
    match reg.execute(renew(None, Duration::from_secs(10))).await {
        Ok(StoreOutput::Lease(v)) => assert!(v.expired.contains(&name), "{name} not in {:?}", v.expired),
        other => panic!("unexpected {other:?}"),
    }
    let claim = RegistryOp::ClaimReap {
        lease: name.clone(),
        ttl: Duration::from_secs(5),
        batch: 100,
        ceiling: UnixMillis(T0 + 60_000),
    };
    let batch = match reg.execute(claim.clone()).await {
        Ok(StoreOutput::Reap(Some(b))) => b,
        other => panic!("unexpected {other:?}"),
    };
    let mut want: Vec<_> = users[..10].iter().map(|u| (u.clone(), SessionId::new("d1"), true)).collect();
    want.sort();
    assert_eq!(batch.sessions, want);
    let held = want.iter().map(|(u, s, _)| (u.clone(), s.clone())).collect();
    ok(&reg, RegistryOp::MarkReaped { token: td, last_seen: batch.last_seen, sessions: held }).await;
    let reap = RegistryOp::Reap { lease: name, token: td, sessions: want };
    ok(&reg, reap).await;
    let got = match reg.execute(RegistryOp::Read { users: users[..10].to_vec() }).await {
        Ok(StoreOutput::Registry(v)) => v,
        other => panic!("unexpected {other:?}"),
    };
    assert!(got.iter().all(|e| !e.leases.contains(&td)), "{got:?}");
    assert_eq!(reg.execute(claim).await, Ok(StoreOutput::Reap(None)));

    for u in &users {
        let _: () = admin.del(&[ws_key(u), last_seen_key(u), ws_lease_key(u), pending_key(u)]).await.unwrap();
    }
    assert_eq!(*reg.restarts().borrow(), 0, "no restart while nothing failed");
}

#[tokio::test]
#[ignore = "needs a redis cluster: run via scripts/test"]
async fn open_redis_picks_the_cluster_executor() {
    let reg = open_redis(&cluster_url(), RedisConfig::new("srv-c")).unwrap();
    assert_eq!(reg.kind(), "redis-cluster");
}

/// The next notice, within `limit`.
async fn next_notice(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Notice>, limit: Duration) -> Notice {
    tokio::time::timeout(limit, rx.recv()).await.expect("a notice in time").expect("the feed is running")
}

/// A plain connection to each node of the cluster (from the URL's seed list, which scripts/test
/// makes the whole cluster).
async fn node_connections(url: &str) -> Vec<redis::aio::MultiplexedConnection> {
    let mut conns = Vec::new();
    for node in url.trim_start_matches("redis+cluster://").split(',') {
        let client = redis::Client::open(format!("redis://{node}")).unwrap();
        conns.push(client.get_multiplexed_async_connection().await.unwrap());
    }
    conns
}

/// Which of `conns` owns `key`'s slot: the one node that answers instead of redirecting.
async fn owner_of(conns: &mut [redis::aio::MultiplexedConnection], key: &str) -> usize {
    let mut owners = Vec::new();
    for (i, c) in conns.iter_mut().enumerate() {
        if redis::cmd("EXISTS").arg(key).query_async::<i64>(c).await.is_ok() {
            owners.push(i);
        }
    }
    assert_eq!(owners.len(), 1, "exactly one node owns {key}'s slot: {owners:?}");
    owners[0]
}

/// `PUBSUB SHARDNUMSUB channel` (sharded subscribers) and `PUBSUB NUMSUB channel` (plain) on one node.
async fn subscribers(c: &mut redis::aio::MultiplexedConnection, channel: &str) -> (i64, i64) {
    let count = |reply: Vec<redis::Value>| match reply.get(1) {
        Some(redis::Value::Int(n)) => *n,
        other => panic!("PUBSUB reply {other:?}"),
    };
    let sharded = redis::cmd("PUBSUB").arg("SHARDNUMSUB").arg(channel).query_async(c).await.unwrap();
    let plain = redis::cmd("PUBSUB").arg("NUMSUB").arg(channel).query_async(c).await.unwrap();
    (count(sharded), count(plain))
}

/// Change notices use sharded pub/sub (`SSUBSCRIBE` / `SPUBLISH`): each watched user's channel is
/// subscribed on the node that owns the user's slot and on no other, and a `Register` there, or a
/// privacy announcement, reaches the watcher. A plain `PUBLISH` would not reach a shard-channel
/// subscriber, so the notices arriving also shows they are `SPUBLISH`ed.
#[tokio::test]
#[ignore = "needs a redis cluster: run via scripts/test"]
async fn change_notices_reach_the_watcher_through_the_slot_owner() {
    let url = cluster_url();
    let reg = RedisClusterRegistry::from_url(&url, RedisConfig::new("srv-feed")).unwrap();
    assert!(reg.wait_connected(Duration::from_secs(10)).await, "no cluster at {url}");
    let mut notices = reg.notices().expect("the notices, once");
    // The privacy channel's confirmation: whatever was cached before may be stale.
    assert_eq!(next_notice(&mut notices, Duration::from_secs(10)).await, Notice::Resync);

    let tag = format!("{}-feed", std::process::id());
    let users: Vec<UserId> = (0..12).map(|i| UserId::new(&format!("w{i}-{tag}")).unwrap()).collect();
    for u in &users {
        reg.watch(u);
    }
    // Each subscription, once in effect, asks for a read of its user (a change made before it
    // took effect is read too).
    let mut confirmed = std::collections::BTreeSet::new();
    while confirmed.len() < users.len() {
        match next_notice(&mut notices, Duration::from_secs(10)).await {
            Notice::Changed(u) => assert!(confirmed.insert(u.clone()), "{u} confirmed twice"),
            other => panic!("unexpected {other:?}"),
        }
    }

    let mut nodes = node_connections(&url).await;
    let mut owners = std::collections::BTreeSet::new();
    for u in &users {
        let channel = change_channel(u);
        let owner = owner_of(&mut nodes, &ws_key(u)).await;
        owners.insert(owner);
        for (i, node) in nodes.iter_mut().enumerate() {
            let expected = if i == owner { (1, 0) } else { (0, 0) };
            assert_eq!(subscribers(node, &channel).await, expected, "{channel} on node {i} (owner {owner})");
        }
    }
    assert!(owners.len() > 1, "the users should spread over several nodes: {owners:?}");

    for u in &users {
        ok(&reg, RegistryOp::Register { user: u.clone(), session: SessionId::new("s1"), token: TOKEN }).await;
        assert_eq!(next_notice(&mut notices, Duration::from_secs(5)).await, Notice::Changed(u.clone()));
    }
    assert_eq!(reg.announce_privacy(&users[0]).await, Ok(StoreOutput::Done));
    assert_eq!(
        next_notice(&mut notices, Duration::from_secs(5)).await,
        Notice::PrivacyChanged(users[0].clone())
    );

    // Unwatching takes the subscription off its shard.
    let (u, channel) = (&users[0], change_channel(&users[0]));
    reg.unwatch(u);
    let owner = owner_of(&mut nodes, &ws_key(u)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while subscribers(&mut nodes[owner], &channel).await != (0, 0) {
        assert!(tokio::time::Instant::now() < deadline, "{channel} still subscribed after unwatch");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Leave nothing behind: end the sessions (which empties the lease's index), then delete the
    // users' keys on their owners.
    for u in &users {
        let end = RegistryOp::EndSession {
            user: u.clone(),
            session: SessionId::new("s1"),
            last_seen: UnixMillis(T0),
            token: Some(TOKEN),
        };
        ok(&reg, end).await;
        let owner = owner_of(&mut nodes, &ws_key(u)).await;
        let keys = [ws_key(u), ws_lease_key(u), last_seen_key(u), pending_key(u)];
        let _: () = nodes[owner].del(&keys).await.unwrap();
    }
}
