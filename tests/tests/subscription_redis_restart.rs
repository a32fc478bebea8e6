//! Subscriptions across a Redis restart: Alice on B watches Bob, online on A. Redis is killed and
//! restarted empty, and Bob leaves while it is down. The change notice is lost with Redis, but when
//! B's change feed reconnects it reads every watched user again: Alice is pushed Bob's offline.

use std::time::Duration;

use presence_tests::Stack;

#[tokio::test]
#[ignore = "needs redis-server and dynalite: run scripts/test"]
async fn subscription_redis_restart() {
    let mut stack = Stack::new("subscription_redis_restart").await;
    let (a, b) = tokio::join!(stack.server("ws-a").start(), stack.server("ws-b").start());
    let bob = a.connect("bob").await;
    let mut alice = b.connect("alice").await;
    alice.wait_online("bob").await;
    assert!(alice.subscribe(&["bob"]).await[0].online);

    stack.redis_server().kill9().await;
    bob.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.redis_server().restart_empty().await;

    let (_, push) =
        alice.next_push(Duration::from_secs(10)).await.expect("bob's offline pushed after the restart");
    assert_eq!((push[0].user.as_str(), push[0].online), ("bob", false), "{push:?}");
}
