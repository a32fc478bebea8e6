//! No flapping: with `--offline-grace 1s`, Bob closing and coming back within the grace shows
//! Alice (watching from another server) nothing at all; Bob leaving for good is pushed as offline
//! once the grace has passed, with the last_seen of his close.

use std::time::Duration;

use presence_tests::scenarios::assert_recorded_at;
use presence_tests::Stack;

const GRACE_MS: i64 = 1_000;

#[tokio::test]
#[ignore = "needs redis-server and dynalite: run scripts/test"]
async fn subscription_grace() {
    let stack = Stack::new("subscription_grace").await;
    let grace = format!("{GRACE_MS}ms");
    let (a, b) = tokio::join!(
        stack.server("ws-a").arg("--offline-grace", &grace).start(),
        stack.server("ws-b").arg("--offline-grace", &grace).start()
    );
    let bob = a.connect("bob").await;
    let mut alice = b.connect("alice").await;
    alice.wait_online("bob").await;
    assert!(alice.subscribe(&["bob"]).await[0].online);

    // A quick reconnect (a network switch): nothing at all for Alice.
    bob.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bob = a.connect("bob").await;
    let quiet = Duration::from_millis(GRACE_MS as u64 + 700);
    assert_eq!(alice.next_push(quiet).await, None, "a reconnect within the grace must not flap");

    // Gone for good: offline after the grace, with the close time.
    let closed = bob.close().await;
    let (at, push) = alice.next_push(Duration::from_secs(4)).await.expect("offline pushed after the grace");
    assert!(!push[0].online, "{push:?}");
    assert_recorded_at("the pushed last_seen", push[0].last_seen.expect("last_seen"), closed);
    assert!(
        at - closed >= GRACE_MS - 50,
        "pushed {} ms after the close, before the grace ran out",
        at - closed
    );
}
