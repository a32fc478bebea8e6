//! The embedded default keeps privacy settings and contacts in its `--data-dir` (the same redb
//! file as last_seen): after a restart, Bob's `nobody` still hides him from Alice, and his
//! contact list reads back sorted.

use presence_tests::Stack;
use serde_json::json;

#[tokio::test]
#[ignore = "needs the presence-server binary: run scripts/test"]
async fn privacy_embedded() {
    let stack = Stack::embedded("privacy_embedded");
    let mut server = stack.server("solo").start().await;
    server.set_privacy("bob", json!({ "last_seen": "nobody", "online": "everyone" })).await;
    server.set_contacts("bob", &["zed", "alice"]).await;
    server.connect("bob").await.close().await;

    let status = server.terminate(std::time::Duration::from_secs(8)).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
    server.restart().await;
    let got = server.api(&server.token("bob"), "GET", "/v1/me/privacy", "").await;
    assert_eq!(got.json(), json!({ "last_seen": "nobody", "online": "everyone", "except": [] }));
    let got = server.api(&server.token("bob"), "GET", "/v1/me/contacts", "").await;
    assert_eq!(got.json(), json!({ "contacts": ["alice", "zed"] }));
    let entry = server.presence_http("alice", &["bob"]).await;
    assert_eq!(
        (entry[0].online, entry[0].last_seen, entry[0].last_seen_approx.as_deref()),
        (false, None, Some("recently"))
    );
    // Online is shown to everyone: Bob online is visible, his last seen still is not.
    let _bob = server.connect("bob").await;
    let entry = server.presence_http("alice", &["bob"]).await;
    assert_eq!(
        (entry[0].online, entry[0].last_seen, entry[0].last_seen_approx.as_deref()),
        (true, None, Some("recently"))
    );
}
