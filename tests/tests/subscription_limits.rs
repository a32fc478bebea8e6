//! Subscription limits and cleanup: past `--max-watched-users` a `subscribe` gets `too_many_users`
//! and watches nothing more; one server subscribes once per watched user however many clients
//! watch it (`presence_watched_users`); unsubscribing and disconnecting release everything (the
//! gauge returns to zero).

use std::time::Duration;

use presence_tests::{eventually, Stack};

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
    eventually("u3 released", Duration::from_secs(2), || {
        let b = &b;
        async move {
            match b.metric("presence_watched_users").await {
                2 => Ok(()),
                n => Err(format!("{n} watched")),
            }
        }
    })
    .await;
    alice.close().await;
    carol.close().await;
    eventually("every subscription released", Duration::from_secs(2), || {
        let b = &b;
        async move {
            match b.metric("presence_watched_users").await {
                0 => Ok(()),
                n => Err(format!("{n} watched")),
            }
        }
    })
    .await;
}
