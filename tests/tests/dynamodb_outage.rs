//! Scenario 6, DynamoDB outage: the DynamoDB-compatible server (dynalite) is killed for 10 s
//! while users disconnect, then restarted with its data directory. Meanwhile the writes are
//! retried and `/readyz` reports the backlog (503, `pending_writes`); reads of cached values stay
//! correct from Redis (for users whose privacy settings the server has cached), and a read that needs DynamoDB (no cached value) is "unavailable", never
//! "offline, never seen" and never a value that may be below the durable one. Afterwards
//! every last_seen is in DynamoDB, equal to the one in Redis: nothing lost.

use std::time::Duration;

use presence_tests::scenarios::assert_recorded_at;
use presence_tests::{eventually, now_ms, Stack};

const OUTAGE: Duration = Duration::from_secs(10);
/// The core's longest retry delay (`retry_max`, 10 s) plus a margin: the next retry after the
/// outage ends comes at most this late.
const RECOVERY_BOUND: Duration = Duration::from_secs(13);

#[tokio::test]
#[ignore = "needs redis-server and dynalite: run scripts/test"]
async fn dynamodb_outage() {
    let mut stack = Stack::new("dynamodb_outage").await;
    let redis = stack.redis_probe();
    let dynamo = stack.dynamo_probe();
    let (a, b) = tokio::join!(stack.server("ws-a").start(), stack.server("ws-b").start());

    let users = ["u1", "u2", "u3", "u4"];
    // Each user has been seen before, so Redis already caches a last_seen for them when the
    // outage starts (the common case in steady state).
    for u in users {
        a.connect(u).await.close().await;
    }
    for u in users {
        eventually("the cached last_seen", Duration::from_secs(5), || {
            let redis = &redis;
            async move { redis.last_seen(u).await.ok_or_else(|| "not cached yet".to_owned()) }
        })
        .await;
    }
    let mut clients = Vec::new();
    for u in users {
        clients.push(a.connect(u).await);
    }
    // A user seen for the first time, who leaves during the outage: nothing cached to raise.
    let newcomer = a.connect("newbie").await;
    redis.wait_sessions_on("newbie", &["ws-a"], Duration::from_secs(5)).await;
    let mut alice = b.connect("alice").await;
    for u in users {
        redis.wait_sessions_on(u, &["ws-a"], Duration::from_secs(5)).await;
    }
    // Privacy settings live in DynamoDB and are cached per server (docs/PRIVACY.md): a viewer's
    // first read of a user needs DynamoDB, and without it fails closed. Alice has asked about
    // them before, as a chat app's contact list does, so the outage finds them cached.
    alice.query(&users).await;

    stack.dynalite().kill9().await;
    let outage_started = tokio::time::Instant::now();

    let mut closed = Vec::new();
    for c in clients {
        closed.push(c.close().await);
    }
    newcomer.close().await;

    // The backlog is visible: one pending durable write per user, not ready.
    let body = eventually("A's /readyz to report the backlog", Duration::from_secs(5), || {
        let a = &a;
        async move {
            let (status, body) = a.readyz().await;
            if status == 503 && body["pending_writes"] == users.len() + 1 && body["durable_failing"] == true {
                Ok(body)
            } else {
                Err(format!("{status} {body}"))
            }
        }
    })
    .await;
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(a.healthz().await, 200, "still alive while DynamoDB is down");

    // Reads of users with a cached last_seen are served from Redis, exact values.
    let seen = alice.query(&users).await;
    for ((e, &closed_at), u) in seen.iter().zip(&closed).zip(users) {
        assert!(!e.online, "{e:?}");
        assert_recorded_at(u, e.last_seen.expect("last_seen from Redis"), closed_at);
        redis.wait_last_seen(u, &e.last_seen_raw, Duration::from_secs(3)).await;
    }
    // A user Redis knows nothing about needs DynamoDB: the answer is unknown, not "never seen".
    let err = alice.try_query(&["zed"]).await.expect_err("zed's presence cannot be known now");
    assert_eq!(err["code"], "unavailable", "{err}");
    // The newcomer's end is in Redis (`last_seen_pending`), but with no cached value DynamoDB may
    // hold a newer one (Redis may have lost it), so this answer is unknown too.
    let err = alice.try_query(&["newbie"]).await.expect_err("newbie's last_seen cannot be known now");
    assert_eq!(err["code"], "unavailable", "{err}");

    tokio::time::sleep(OUTAGE.saturating_sub(outage_started.elapsed())).await;
    let (status, body) = a.readyz().await;
    assert_eq!((status, &body["pending_writes"]), (503, &serde_json::json!(users.len() + 1)), "{body}");
    stack.dynalite().restart().await;
    let restarted = now_ms();

    eventually("A's backlog to drain", RECOVERY_BOUND, || {
        let a = &a;
        async move {
            let (status, body) = a.readyz().await;
            if status == 200 && body["pending_writes"] == 0 {
                Ok(())
            } else {
                Err(format!("{status} {body}"))
            }
        }
    })
    .await;
    eprintln!("backlog drained {} ms after dynalite came back", now_ms() - restarted);

    for (e, u) in seen.iter().zip(users) {
        assert_eq!(dynamo.last_seen(u).await, e.last_seen, "DynamoDB last_seen of {u}");
    }
    assert_eq!(dynamo.last_seen("zed").await, None);
    let newbie = alice.entry("newbie").await;
    assert_eq!(dynamo.last_seen("newbie").await, newbie.last_seen, "the newcomer's last_seen is durable");
    assert!(newbie.last_seen.is_some() && !newbie.online, "{newbie:?}");
    assert_eq!(alice.query(&users).await, seen, "answers after the outage");
}
