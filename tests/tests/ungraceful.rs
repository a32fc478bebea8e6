//! Scenario 2, ungraceful end: Bob's client goes silent without a FIN (stops reading and answering
//! pings; the TCP connection stays open). After the heartbeat timeout (1 s here) Bob is offline
//! with last_seen = his last proof of life (his last frame or pong), not the detection time.

use std::time::Duration;

use presence_tests::scenarios::{assert_recorded_at, TOLERANCE_MS};
use presence_tests::{eventually, now_ms, Stack};

/// The servers' `--heartbeat-timeout` (harness default).
const HEARTBEAT_TIMEOUT_MS: i64 = 1000;

#[tokio::test]
#[ignore = "needs redis-server and dynalite: run scripts/test"]
async fn ungraceful() {
    let stack = Stack::new("ungraceful").await;
    let redis = stack.redis_probe();
    let dynamo = stack.dynamo_probe();
    let (a, b) = tokio::join!(stack.server("ws-a").start(), stack.server("ws-b").start());

    let connected = now_ms();
    let mut bob = a.connect("bob").await;
    let mut alice = b.connect("alice").await;
    redis.wait_sessions_on("bob", &["ws-a"], Duration::from_secs(5)).await;

    // An idle client that answers the server's pings stays online past the heartbeat timeout.
    eventually(
        "Bob to answer server pings for longer than the heartbeat timeout",
        Duration::from_secs(4),
        || {
            let answered = bob.last_activity_ms();
            async move {
                if answered >= connected + HEARTBEAT_TIMEOUT_MS + 200 {
                    Ok(())
                } else {
                    Err(format!("last answered ping {} ms after connecting", answered - connected))
                }
            }
        },
    )
    .await;
    assert!(alice.entry("bob").await.online, "an idle but answering client is online");

    // A last frame, then silence: the radio died.
    bob.ping().await;
    let last_proof = bob.go_silent().await;

    let (seen, detected) = alice.wait_offline("bob", Duration::from_secs(4)).await;
    let last_seen = seen.last_seen.unwrap_or_else(|| panic!("offline without last_seen: {seen:?}"));
    assert_recorded_at("Bob's last_seen = his last proof of life", last_seen, last_proof);
    // Not the detection time: Bob was reported offline only a heartbeat timeout later, and soon
    // after it (bounded ghost).
    let late = detected - last_seen;
    assert!(
        late >= HEARTBEAT_TIMEOUT_MS - TOLERANCE_MS,
        "Bob was reported offline {late} ms after his last proof of life, before the heartbeat timeout"
    );
    assert!(late <= HEARTBEAT_TIMEOUT_MS + 500, "offline detected {late} ms after the last proof of life");

    assert!(!redis.ws_key_exists("bob").await, "ws:{{bob}} is gone: {:?}", redis.sessions("bob").await);
    redis.wait_last_seen("bob", &seen.last_seen_raw, Duration::from_secs(3)).await;
    dynamo.wait_last_seen("bob", last_seen, Duration::from_secs(3)).await;
}
