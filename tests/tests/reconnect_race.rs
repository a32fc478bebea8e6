//! Scenario 3, reconnect race: Bob's phone goes silent on server A and reconnects through server B
//! before A's heartbeat timeout fires. Alice (on A) never sees him offline, and A's timeout
//! removes only its own session from `ws:{bob}` (compare-and-delete by session id), recording the
//! silent connection's last proof of life.

use std::time::Duration;

use presence_tests::scenarios::{assert_recorded_at, TOLERANCE_MS};
use presence_tests::time::parse_rfc3339;
use presence_tests::{now_ms, Stack};

const HEARTBEAT_TIMEOUT_MS: i64 = 1000;

#[tokio::test]
#[ignore = "needs redis-server and dynalite: run scripts/test"]
async fn reconnect_race() {
    let stack = Stack::new("reconnect_race").await;
    let redis = stack.redis_probe();
    let dynamo = stack.dynamo_probe();
    let (a, b) = tokio::join!(stack.server("ws-a").start(), stack.server("ws-b").start());

    let mut alice = a.connect("alice").await;
    let mut old = a.connect("bob").await;
    redis.wait_sessions_on("bob", &["ws-a"], Duration::from_secs(5)).await;
    assert!(alice.entry("bob").await.online);

    old.ping().await;
    let last_proof = old.go_silent().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _new = b.connect("bob").await;
    redis.wait_sessions_on("bob", &["ws-a", "ws-b"], Duration::from_secs(2)).await;
    assert!(
        now_ms() < last_proof + HEARTBEAT_TIMEOUT_MS,
        "the race did not happen: B registered Bob only after A's timeout was due"
    );

    // Alice watches until A's timeout has removed A's session, and a while after.
    let mut answers = 0;
    let mut a_removed_at = None;
    loop {
        let seen = alice.entry("bob").await;
        answers += 1;
        assert!(seen.online, "Alice saw Bob offline during the reconnect (answer {answers}): {seen:?}");
        let sessions = redis.sessions("bob").await;
        assert!(sessions.values().any(|s| s == "ws-b"), "B's registration was removed: {sessions:?}");
        if a_removed_at.is_none() && sessions.values().all(|s| s == "ws-b") {
            a_removed_at = Some(now_ms());
        }
        match a_removed_at {
            Some(at) if now_ms() > at + 500 => break,
            None if now_ms() > last_proof + 4000 => panic!("A never ended the silent session: {sessions:?}"),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a_removed_at = a_removed_at.expect("A's session removed");

    let sessions = redis.sessions("bob").await;
    assert_eq!(sessions.len(), 1, "only B's session is left: {sessions:?}");
    assert_eq!(sessions.values().next().map(String::as_str), Some("ws-b"));

    // A recorded the silent connection's last proof of life, a heartbeat timeout before it acted.
    let raw = redis.last_seen("bob").await.expect("last_seen:{bob} written by A's timeout");
    let last_seen = parse_rfc3339(&raw);
    assert_recorded_at("last_seen of the silent session", last_seen, last_proof);
    assert!(a_removed_at - last_seen >= HEARTBEAT_TIMEOUT_MS - TOLERANCE_MS);
    dynamo.wait_last_seen("bob", last_seen, Duration::from_secs(3)).await;

    let seen = alice.entry("bob").await;
    assert!(seen.online, "{seen:?}");
    assert_eq!(seen.last_seen, Some(last_seen), "{seen:?}");
    assert!(answers >= 10, "Alice watched the whole race ({answers} answers)");
}
