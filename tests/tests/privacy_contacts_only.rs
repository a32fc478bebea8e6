//! Privacy, contacts only: Bob shows his last seen to his contacts. Alice, in his list, sees the
//! exact time and his online state; Eve, a stranger, sees `"recently"` and never `online: true`,
//! over the WebSocket and over HTTP, on the other server than the one that took the setting.

use std::time::Duration;

use presence_tests::Stack;
use serde_json::json;

#[tokio::test]
#[ignore = "needs redis-server and dynalite: run scripts/test"]
async fn privacy_contacts_only() {
    let stack = Stack::new("privacy_contacts_only").await;
    let (a, b) = tokio::join!(stack.server("ws-a").start(), stack.server("ws-b").start());
    let set = a.set_privacy("bob", json!({ "last_seen": "contacts" })).await;
    assert_eq!(set, json!({ "last_seen": "contacts", "online": "same_as_last_seen", "except": [] }));
    a.set_contacts("bob", &["alice"]).await;

    // Bob was seen a moment ago.
    let bob = a.connect("bob").await;
    let mut alice = b.connect("alice").await;
    alice.wait_online("bob").await;
    bob.close().await;
    let (seen, _) = alice.wait_offline("bob", Duration::from_secs(10)).await;
    assert!(seen.last_seen.is_some(), "{seen:?}");
    assert_eq!(seen.last_seen_approx, None, "a contact sees the exact time: {seen:?}");

    let mut eve = b.connect("eve").await;
    let got = eve.query(&["bob"]).await;
    assert_eq!(
        (got[0].online, got[0].last_seen, got[0].last_seen_approx.as_deref()),
        (false, None, Some("recently"))
    );
    let http = b.presence_http("eve", &["bob"]).await;
    assert_eq!(
        (http[0].online, http[0].last_seen, http[0].last_seen_approx.as_deref()),
        (false, None, Some("recently"))
    );
    let http = b.presence_http("alice", &["bob"]).await;
    assert_eq!((http[0].last_seen, http[0].last_seen_approx.as_deref()), (seen.last_seen, None));

    // Bob comes back: Alice sees him online, Eve still sees exactly what she saw.
    let _bob = a.connect("bob").await;
    alice.wait_online("bob").await;
    let got = eve.query(&["bob"]).await;
    assert_eq!(
        (got[0].online, got[0].last_seen, got[0].last_seen_approx.as_deref()),
        (false, None, Some("recently"))
    );
}
