//! Privacy changes live across servers: Alice watches Bob on server B; Bob switches to `nobody`
//! on server A. Within 1 s of the PUT's answer, Alice is pushed Bob's hidden entry; when Bob
//! shows everyone again she is pushed the full entry. A watcher whose view did not change
//! (Bob himself) is pushed nothing.

use std::time::{Duration, Instant};

use presence_tests::Stack;
use serde_json::json;

#[tokio::test]
#[ignore = "needs redis-server and dynalite: run scripts/test"]
async fn privacy_live_revoke() {
    let stack = Stack::new("privacy_live_revoke").await;
    let (a, b) = tokio::join!(stack.server("ws-a").start(), stack.server("ws-b").start());
    let bob = a.connect("bob").await;
    let mut alice = b.connect("alice").await;
    alice.wait_online("bob").await;
    bob.close().await;
    let (seen, _) = alice.wait_offline("bob", Duration::from_secs(10)).await;
    let at = seen.last_seen.expect("bob was seen");
    let snapshot = alice.subscribe(&["bob"]).await;
    assert_eq!((snapshot[0].last_seen, snapshot[0].last_seen_approx.as_deref()), (Some(at), None));

    a.set_privacy("bob", json!({ "last_seen": "nobody" })).await;
    let answered = Instant::now();
    let (_, push) = alice.next_push(Duration::from_secs(1)).await.expect("the hidden entry within 1 s");
    assert!(answered.elapsed() <= Duration::from_secs(1));
    assert_eq!(
        (push[0].user.as_str(), push[0].online, push[0].last_seen, push[0].last_seen_approx.as_deref()),
        ("bob", false, None, Some("recently"))
    );

    a.set_privacy("bob", json!({ "last_seen": "everyone" })).await;
    let (_, push) = alice.next_push(Duration::from_secs(1)).await.expect("the full entry within 1 s");
    assert_eq!((push[0].last_seen, push[0].last_seen_approx.as_deref()), (Some(at), None));
    // The same settings again change no view: nothing is pushed.
    a.set_privacy("bob", json!({ "last_seen": "everyone" })).await;
    assert!(alice.next_push(Duration::from_millis(1_500)).await.is_none());
}
