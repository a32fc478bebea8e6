//! A Redis restart while a durable write is still retrying: Redis gets the value again (I1).
//!
//! Bob's last_seen `X1` is durable. DynamoDB goes down; Bob comes back and leaves again at `X2`,
//! which only Redis and server A (retrying its durable write) know. Then Redis restarts empty.
//! Server A records `X2` in Redis again as soon as it sees the restart (`last_seen_pending:{bob}`,
//! since the cache is gone), so when DynamoDB returns, still holding `X1`, readers answer `X2`, not
//! the older `X1` (I1: last_seen never goes back). Then A's write lands: both stores hold `X2`.

use std::time::Duration;

use presence_tests::scenarios::assert_recorded_at;
use presence_tests::{eventually, rfc3339, Stack};

/// Redis reconnect (backoff capped at 2 s) plus one script call bounded by the store timeout.
const RERECORD_BOUND: Duration = Duration::from_secs(5);

#[tokio::test]
#[ignore = "needs redis-server and dynalite: run scripts/test"]
async fn redis_restart_pending_write() {
    let mut stack = Stack::new("redis_restart_pending_write").await;
    let redis = stack.redis_probe();
    let dynamo = stack.dynamo_probe();
    // A's retries back off (100 ms doubling, up to 60 s here): once DynamoDB is back, its next
    // retry is seconds away, the window in which readers would fall back to DynamoDB's older value.
    let (a, b) =
        tokio::join!(stack.server("ws-a").arg("--retry-max", "60s").start(), stack.server("ws-b").start());
    let mut alice = b.connect("alice").await;

    let x1 = a.connect("bob").await.close().await;
    let (e, _) = alice.wait_offline("bob", Duration::from_secs(3)).await;
    let x1_ls = e.last_seen.expect("bob's first last_seen");
    assert_recorded_at("bob", x1_ls, x1);
    dynamo.wait_last_seen("bob", x1_ls, Duration::from_secs(3)).await;

    stack.dynalite().kill9().await;
    let bob = a.connect("bob").await;
    redis.wait_sessions_on("bob", &["ws-a"], Duration::from_secs(5)).await;
    let x2 = bob.close().await;
    let (e, _) = alice.wait_offline("bob", Duration::from_secs(3)).await;
    let x2_ls = e.last_seen.expect("bob's second last_seen");
    assert_recorded_at("bob", x2_ls, x2);
    assert!(x2_ls > x1_ls, "{} > {}", rfc3339(x2_ls), rfc3339(x1_ls));
    // Let A's backoff grow past a second (five failed attempts: 100 + 200 + 400 + 800 ms at
    // least), so the window after DynamoDB's return is real.
    eventually("A's durable write to fail five times", Duration::from_secs(10), || {
        let a = &a;
        async move {
            match a.metric("presence_store_retries_total").await {
                n if n >= 5 => Ok(()),
                n => Err(format!("{n} retries")),
            }
        }
    })
    .await;

    stack.redis_server().kill9().await;
    stack.redis_server().restart_empty().await;
    // A records X2 again; the cache is gone, so it goes to the pending key.
    redis.wait_pending("bob", &Some(rfc3339(x2_ls)), RERECORD_BOUND).await;
    assert_eq!(redis.last_seen("bob").await, None, "the cache is only ever created from a durable value");
    // With no cache, an answer needs DynamoDB too (it may hold a newer value): unknown for now.
    let err = alice.try_query(&["bob"]).await.expect_err("bob's last_seen cannot be known now");
    assert_eq!(err["code"], "unavailable", "{err}");

    stack.dynalite().restart().await;
    // DynamoDB answers X1 now, but the answer is the max with the pending X2 (B's DynamoDB client
    // may take a moment to reconnect: until then the answer is `unavailable`).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let e = loop {
        match alice.try_query(&["bob"]).await {
            Ok(mut v) => break v.remove(0),
            Err(e) if tokio::time::Instant::now() < deadline => {
                assert_eq!(e["code"], "unavailable", "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no answer for bob 5 s after DynamoDB came back: {e}"),
        }
    };
    assert_eq!((e.online, e.last_seen), (false, Some(x2_ls)), "{e:?}");

    // A's retry lands within its backoff cap; then both stores hold X2.
    dynamo.wait_last_seen("bob", x2_ls, Duration::from_secs(65)).await;
    redis.wait_last_seen("bob", &Some(rfc3339(x2_ls)), Duration::from_secs(5)).await;
    redis.wait_pending("bob", &None, Duration::from_secs(5)).await;
    assert_eq!(alice.entry("bob").await.last_seen, Some(x2_ls));
}
