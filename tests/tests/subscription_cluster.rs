//! Live presence on Redis Cluster: Alice on B watches Bob and Carol (users whose keys live on
//! different masters); they connect to A and leave; Alice is pushed each change. The change
//! notices use sharded pub/sub: B's feed subscribes to each user's channel on the master that owns
//! the user's slot, and A's `SPUBLISH` goes to that master only.

use std::time::Duration;

use presence_tests::Stack;

#[tokio::test]
#[ignore = "needs redis-server, redis-cli and dynalite: run scripts/test"]
async fn subscription_cluster() {
    let stack = Stack::with_cluster("subscription_cluster").await;
    let (a, b) = tokio::join!(stack.server("ws-a").start(), stack.server("ws-b").start());
    let mut alice = b.connect("alice").await;
    let users = ["bob", "carol", "dave", "erin"];
    for e in alice.subscribe(&users).await {
        assert!(!e.online, "{e:?}");
    }
    for user in users {
        let client = a.connect(user).await;
        let (_, push) = alice.next_push(Duration::from_secs(3)).await.expect("online pushed");
        assert_eq!((push[0].user.as_str(), push[0].online), (user, true), "{push:?}");
        client.close().await;
        let (_, push) = alice.next_push(Duration::from_secs(3)).await.expect("offline pushed");
        assert_eq!((push[0].user.as_str(), push[0].online), (user, false), "{push:?}");
        assert!(push[0].last_seen.is_some(), "{push:?}");
    }
}
