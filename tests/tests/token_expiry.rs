//! A token that expires on a live connection: with `--jwt-leeway 0s`, Bob's token (a few seconds
//! of lifetime) stops being valid at `exp + 1` s; the server sends `error` `token_expired` and
//! closes with 4001, and records Bob's last_seen as for a graceful close: the close time, in Redis,
//! in DynamoDB, and in Alice's answer on the same server.
//!
//! The bound on last_seen is exact up to the clocks' millisecond granularity: the server cannot
//! close before the token's end (its timer is the token's end on its monotonic clock, taken when it
//! verified the token), and it reads the close time before it sends the close frame, so the value
//! lies between the token's end and the moment Bob's client saw the close.

use std::time::Duration;

use presence_tests::{now_ms, rfc3339, Stack};
use serde_json::json;

#[tokio::test]
#[ignore = "needs redis-server and dynalite: run scripts/test"]
async fn token_expiry() {
    let stack = Stack::new("token_expiry").await;
    let redis = stack.redis_probe();
    let dynamo = stack.dynamo_probe();
    let server = stack.server("ws-a").arg("--jwt-leeway", "0s").start().await;
    let mut alice = server.connect("alice").await;
    let exp = now_ms() / 1000 + 2;
    let end_ms = (exp + 1) * 1000;
    let mut bob = server.connect_token("bob", &server.token_with_exp("bob", exp)).await;
    alice.wait_online("bob").await;

    let err = bob.next_frame(Duration::from_secs(10)).await;
    assert_eq!(
        err,
        json!({"type": "error", "code": "token_expired", "message": "the connection's token expired"})
    );
    let close = bob.wait_close(Duration::from_secs(5)).await;
    assert_eq!((close.code, close.reason.as_str()), (Some(4001), "token expired"));

    let (entry, _) = alice.wait_offline("bob", Duration::from_secs(5)).await;
    let last_seen = entry.last_seen.expect("bob has a last_seen");
    assert!(
        (end_ms..=close.at_ms).contains(&last_seen),
        "last_seen {} is not between the token's end {} and the close Bob saw at {}",
        rfc3339(last_seen),
        rfc3339(end_ms),
        rfc3339(close.at_ms)
    );
    println!(
        "token end {end_ms}, last_seen {last_seen} (+{} ms), close seen +{} ms",
        last_seen - end_ms,
        close.at_ms - end_ms
    );
    dynamo.wait_last_seen("bob", last_seen, Duration::from_secs(5)).await;
    redis.wait_last_seen("bob", &Some(rfc3339(last_seen)), Duration::from_secs(5)).await;
    assert!(redis.sessions("bob").await.is_empty());
    assert_eq!(server.metric("presence_sessions_ended_total{reason=\"expired\"}").await, 1);
    alice.close().await;
}
