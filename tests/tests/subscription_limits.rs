//! Subscription limits and cleanup: past `--max-watched-users` a `subscribe` gets `too_many_users`
//! and watches nothing more; one server subscribes once per watched user however many clients
//! watch it (`presence_watched_users`); unsubscribing and disconnecting release everything (the
//! gauge returns to zero).

use std::time::Duration;

use presence_tests::{eventually, PresenceServer, Stack};

#[tokio::test]
#[ignore = "needs redis-server and dynalite: run scripts/test"]
async fn subscription_limits() {
    let stack = Stack::new("subscription_limits").await;
    let b = stack.server("ws-b").arg("--max-watched-users", "3").start().await;
    let mut alice = b.connect("alice").await;
    let mut carol = b.connect("carol").await;

    alice.subscribe(&["u1", "u2", "u3"]).await;
    let err = alice.try_subscribe(&["u4"]).await.expect_err("a fourth user is past the limit");
    assert_eq!(err["code"], "too_many_users", "{err}");
    // Already watched users do not count twice.
    alice.subscribe(&["u1"]).await;
    carol.subscribe(&["u1", "u2"]).await;
    assert_eq!(b.metric("presence_watched_users").await, 3);

    alice.unsubscribe(&["u3"]).await;
    wait_watched(&b, 2).await;
    alice.close().await;
    carol.close().await;
    wait_watched(&b, 0).await;
}

/// Waits until the server's `presence_watched_users` gauge reads `n`.
async fn wait_watched(server: &PresenceServer, n: u64) {
    eventually(&format!("{n} watched users"), Duration::from_secs(2), || async move {
        match server.metric("presence_watched_users").await {
            got if got == n => Ok(()),
            got => Err(format!("{got} watched")),
        }
    })
    .await;
}
