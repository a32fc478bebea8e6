//! Scenario 5, Redis restart: `kill -9` redis-server and, a second later, restart it empty on the
//! same port.
//!
//! - Live sessions are registered again within [`REREGISTER_BOUND`]: each server's Redis executor
//!   sees its connection drop, reconnects with exponential backoff (50 ms doubling, capped at 2 s),
//!   bumps its restart generation on the reconnect, and the core re-registers every live session
//!   (one `HSET` each, bounded by `--store-timeout`, 1 s here). Bound = backoff cap + one op.
//! - last_seen reads fall back to DynamoDB and refill Redis (`last_seen:{u}` reappears).
//! - No value regresses: every answer after the restart equals the one before.
//! - A session that ended while Redis was down gets its end (last_seen = its close time) once
//!   Redis is back, and is not registered again; meanwhile queries answer `unavailable`.
//! - Session ends after the restart work (the scripts are loaded again after `NOSCRIPT`).

use std::time::Duration;

use presence_tests::scenarios::assert_recorded_at;
use presence_tests::{eventually, now_ms, rfc3339, Stack};

const REREGISTER_BOUND: Duration = Duration::from_secs(3);
/// A session end that failed during the outage is retried with the core's backoff (100 ms
/// doubling, capped at 10 s); after a one-second outage the next retry is due within a few seconds.
const ERIN_BOUND: Duration = Duration::from_secs(12);

#[tokio::test]
#[ignore = "needs redis-server and dynalite: run scripts/test"]
async fn redis_restart() {
    let mut stack = Stack::new("redis_restart").await;
    let redis = stack.redis_probe();
    let dynamo = stack.dynamo_probe();
    let (a, b) = tokio::join!(stack.server("ws-a").start(), stack.server("ws-b").start());

    // Dave was seen and left; Bob was seen, left, and is back; Carol and Alice are online.
    let dave_closed = a.connect("dave").await.close().await;
    let bob_closed = a.connect("bob").await.close().await;
    let mut alice = b.connect("alice").await;
    let (dave_ls, _) = alice.wait_offline("dave", Duration::from_secs(3)).await;
    let (bob_ls, _) = alice.wait_offline("bob", Duration::from_secs(3)).await;
    let dave_ls = dave_ls.last_seen.expect("dave's last_seen");
    let bob_ls = bob_ls.last_seen.expect("bob's last_seen");
    assert_recorded_at("dave", dave_ls, dave_closed);
    assert_recorded_at("bob", bob_ls, bob_closed);
    dynamo.wait_last_seen("dave", dave_ls, Duration::from_secs(3)).await;
    dynamo.wait_last_seen("bob", bob_ls, Duration::from_secs(3)).await;
    let _bob = a.connect("bob").await;
    let carol = b.connect("carol").await;
    redis.wait_sessions_on("bob", &["ws-a"], Duration::from_secs(5)).await;
    redis.wait_sessions_on("carol", &["ws-b"], Duration::from_secs(5)).await;
    let users = ["bob", "carol", "dave"];
    let before = alice.query(&users).await;
    assert_eq!(
        before.iter().map(|e| (e.online, e.last_seen)).collect::<Vec<_>>(),
        vec![(true, Some(bob_ls)), (true, None), (false, Some(dave_ls))],
        "{before:?}"
    );

    let erin = a.connect("erin").await;
    redis.wait_sessions_on("erin", &["ws-a"], Duration::from_secs(5)).await;

    // The outage: Redis is gone for about a second, and Erin leaves meanwhile.
    stack.redis_server().kill9().await;
    let erin_closed = erin.close().await;
    // While the registry is down, presence is unknown, never "offline".
    let err = alice.try_query(&["bob"]).await.expect_err("no answer without the registry");
    assert_eq!(err["code"], "unavailable", "{err}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stack.redis_server().restart_empty().await;
    let restarted = now_ms();
    // Nothing but the servers writes to it now; a query would backfill, and none ran yet.
    assert_eq!(redis.last_seen("dave").await, None, "the restarted Redis is empty");

    // Live sessions come back, on their own servers.
    for (user, server) in [("bob", "ws-a"), ("carol", "ws-b"), ("alice", "ws-b")] {
        redis.wait_sessions_on(user, &[server], REREGISTER_BOUND).await;
    }
    let registered = now_ms() - restarted;
    assert!(registered <= REREGISTER_BOUND.as_millis() as i64, "re-registered after {registered} ms");
    eprintln!("live sessions re-registered {registered} ms after the restart");

    // Reads fall back to DynamoDB; nothing regressed.
    let after = alice.query(&users).await;
    assert_eq!(after, before, "answers after the Redis restart");
    // ... and refill Redis.
    for (user, ls) in [("dave", dave_ls), ("bob", bob_ls)] {
        let redis = &redis;
        eventually(&format!("last_seen:{{{user}}} refilled"), Duration::from_secs(3), || async move {
            match redis.try_last_seen(user).await? {
                Some(v) if v == rfc3339(ls) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
    assert_eq!(redis.last_seen("carol").await, None, "carol was never seen");

    // Erin's end, retried after the outage, lands as her close time; she is not re-registered.
    let erin_ls = eventually("Erin's end to reach the new Redis", ERIN_BOUND, || {
        let redis = &redis;
        async move { redis.try_last_seen("erin").await?.ok_or_else(|| "no last_seen:{erin} yet".to_owned()) }
    })
    .await;
    eprintln!("Erin's end reached Redis {} ms after the restart", now_ms() - restarted);
    let erin_ls = presence_tests::time::parse_rfc3339(&erin_ls);
    assert_recorded_at("Erin, who left during the outage", erin_ls, erin_closed);
    assert!(!redis.ws_key_exists("erin").await, "Erin's ended session was registered again");
    dynamo.wait_last_seen("erin", erin_ls, Duration::from_secs(3)).await;
    let seen = alice.entry("erin").await;
    assert_eq!((seen.online, seen.last_seen), (false, Some(erin_ls)), "{seen:?}");

    // Session ends work against the new Redis.
    let carol_closed = carol.close().await;
    let (seen, _) = alice.wait_offline("carol", Duration::from_secs(3)).await;
    let carol_ls = seen.last_seen.expect("carol's last_seen");
    assert_recorded_at("carol after the restart", carol_ls, carol_closed);
    assert!(!redis.ws_key_exists("carol").await);
    redis.wait_last_seen("carol", &seen.last_seen_raw, Duration::from_secs(3)).await;
    dynamo.wait_last_seen("carol", carol_ls, Duration::from_secs(3)).await;

    for server in [&a, &b] {
        let (status, body) = server.readyz().await;
        assert_eq!(status, 200, "{} ready after the restart: {body}", server.id());
        assert_eq!(body["registry_backlog"], 0, "{body}");
    }
}
