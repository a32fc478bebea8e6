//! Scenario bodies that run against more than one deployment: a single Redis node
//! (`tests/seed_scenario.rs`, `tests/several_devices.rs`) and a Redis Cluster
//! (`tests/redis_cluster.rs`). Each takes a [`Stack`] with Redis and dynalite.

use std::time::Duration;

use crate::time::assert_close;
use crate::Stack;

/// How far a recorded last_seen may be from the moment the client acted (the bound).
pub const TOLERANCE_MS: i64 = 50;

/// Asserts `last_seen` was recorded at the client's action `acted_at` (epoch ms): not before it
/// (the server reads its clock after the frame arrives) and at most [`TOLERANCE_MS`] after it.
#[track_caller]
pub fn assert_recorded_at(what: &str, last_seen: i64, acted_at: i64) {
    assert!(
        last_seen >= acted_at,
        "{what}: last_seen {} is before the client's action at {}",
        crate::rfc3339(last_seen),
        crate::rfc3339(acted_at)
    );
    assert_close(what, last_seen, acted_at, TOLERANCE_MS);
}

/// The seed scenario. Bob on server A, Alice on server B. Bob closes gracefully; Alice's query on
/// B reports him offline with last_seen = his close time (within 50 ms); `ws:{bob}` is gone;
/// `last_seen:{bob}` in Redis and `last_seen` in DynamoDB hold that same instant.
pub async fn seed(stack: &Stack) {
    let redis = stack.redis_probe();
    let dynamo = stack.dynamo_probe();
    let (a, b) = tokio::join!(stack.server("ws-a").start(), stack.server("ws-b").start());

    let bob = a.connect("bob").await;
    let mut alice = b.connect("alice").await;

    // Registered on A: the seed's `ws:bob -> ws_server_3`, one field per session.
    let sessions = redis.wait_sessions_on("bob", &["ws-a"], Duration::from_secs(5)).await;
    assert_eq!(sessions.len(), 1);
    let seen = alice.entry("bob").await;
    assert!(seen.online, "Alice sees Bob online: {seen:?}");
    assert_eq!(seen.last_seen, None, "Bob was never seen before: {seen:?}");
    assert_eq!(redis.last_seen("bob").await, None);

    let closed_at = bob.close().await;

    let (seen, _) = alice.wait_offline("bob", Duration::from_secs(3)).await;
    let last_seen = seen.last_seen.unwrap_or_else(|| panic!("offline without last_seen: {seen:?}"));
    assert_recorded_at("Bob's last_seen (query on B)", last_seen, closed_at);
    assert!(!redis.ws_key_exists("bob").await, "ws:{{bob}} is gone: {:?}", redis.sessions("bob").await);
    redis.wait_last_seen("bob", &seen.last_seen_raw, Duration::from_secs(3)).await;
    dynamo.wait_last_seen("bob", last_seen, Duration::from_secs(3)).await;

    // Both servers agree, over HTTP as well.
    let http = a.presence_http("alice", &["bob"]).await;
    assert_eq!(http[0], seen, "GET /v1/presence on A");
}

/// Several devices. Bob on A (phone) and B (laptop); Alice on A. The phone closes: Bob is still
/// online, with last_seen = the phone's close. The laptop closes: offline, last_seen = the
/// laptop's close, in both stores.
pub async fn several_devices(stack: &Stack) {
    let redis = stack.redis_probe();
    let dynamo = stack.dynamo_probe();
    let (a, b) = tokio::join!(stack.server("ws-a").start(), stack.server("ws-b").start());

    let mut alice = a.connect("alice").await;
    let phone = a.connect("bob").await;
    let laptop = b.connect("bob").await;
    redis.wait_sessions_on("bob", &["ws-a", "ws-b"], Duration::from_secs(5)).await;
    assert!(alice.entry("bob").await.online);

    let phone_closed = phone.close().await;
    // The phone's session is removed, the laptop's stays.
    redis.wait_sessions_on("bob", &["ws-b"], Duration::from_secs(3)).await;
    let first = alice.entry("bob").await;
    assert!(first.online, "Bob is still online on his laptop: {first:?}");
    let first_ls = first.last_seen.unwrap_or_else(|| panic!("the phone's end is recorded: {first:?}"));
    assert_recorded_at("last_seen after the phone closed", first_ls, phone_closed);
    redis.wait_last_seen("bob", &first.last_seen_raw, Duration::from_secs(3)).await;
    dynamo.wait_last_seen("bob", first_ls, Duration::from_secs(3)).await;

    let laptop_closed = laptop.close().await;
    let (last, _) = alice.wait_offline("bob", Duration::from_secs(3)).await;
    let last_ls = last.last_seen.unwrap_or_else(|| panic!("offline without last_seen: {last:?}"));
    assert_recorded_at("last_seen after the laptop closed", last_ls, laptop_closed);
    assert!(last_ls > first_ls);
    assert!(!redis.ws_key_exists("bob").await, "ws:{{bob}} is gone");
    redis.wait_last_seen("bob", &last.last_seen_raw, Duration::from_secs(3)).await;
    dynamo.wait_last_seen("bob", last_ls, Duration::from_secs(3)).await;
}
