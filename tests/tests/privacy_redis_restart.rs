//! Privacy settings and contacts live in the durable store, not in Redis: after Redis is killed
//! and restarted empty, and after both servers are killed and restarted, Bob's `contacts` setting and list still
//! decide what Alice (a contact) and Eve (a stranger) see. The feed's reconnect drops every
//! server's cache, so nothing stale is kept either.

use std::time::Duration;

use presence_tests::{eventually, Stack};
use serde_json::json;

#[tokio::test]
#[ignore = "needs redis-server and dynalite: run scripts/test"]
async fn privacy_redis_restart() {
    let mut stack = Stack::new("privacy_redis_restart").await;
    let (mut a, mut b) = tokio::join!(stack.server("ws-a").start(), stack.server("ws-b").start());
    a.set_privacy("bob", json!({ "last_seen": "contacts" })).await;
    a.set_contacts("bob", &["alice"]).await;
    a.connect("bob").await.close().await;
    let mut alice = b.connect("alice").await;
    let (seen, _) = alice.wait_offline("bob", Duration::from_secs(5)).await;
    assert!(seen.last_seen.is_some());
    drop(alice);

    stack.redis_server().kill9().await;
    stack.redis_server().restart_empty().await;
    a.kill9().await;
    b.kill9().await;
    a.restart().await;
    b.restart().await;
    let (a, b, raw) = (&a, &b, &seen.last_seen_raw);
    eventually("both servers to answer after the restarts", Duration::from_secs(15), || async move {
        let alice = b.try_presence_http("alice", &["bob"]).await;
        let eve = a.try_presence_http("eve", &["bob"]).await;
        if alice.status != 200 || eve.status != 200 {
            return Err(format!("{} {}", alice.body, eve.body));
        }
        let (alice, eve) = (&alice.json()["users"][0], &eve.json()["users"][0]);
        let want_alice = json!({ "user": "bob", "online": false, "last_seen": raw });
        let want_eve =
            json!({ "user": "bob", "online": false, "last_seen": null, "last_seen_approx": "recently" });
        if *alice == want_alice && *eve == want_eve {
            Ok(())
        } else {
            Err(format!("alice got {alice}, eve got {eve}"))
        }
    })
    .await;
}
