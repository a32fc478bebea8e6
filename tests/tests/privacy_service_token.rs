//! Service tokens: a token whose `scope` holds `presence:read_all` answers the true state over
//! HTTP and the WebSocket, even of a user who shows nobody, and its connection registers no
//! session (the service is never online, never gets a last_seen). `presence:admin` reads and sets
//! any user's settings and contacts through `/v1/users/{user}/...`; without it those routes are
//! 403, and a user token cannot use them.

use presence_tests::Stack;
use serde_json::json;

#[tokio::test]
#[ignore = "needs redis-server and dynalite: run scripts/test"]
async fn privacy_service_token() {
    let stack = Stack::new("privacy_service_token").await;
    let (a, b) = tokio::join!(stack.server("ws-a").start(), stack.server("ws-b").start());
    let admin = a.service_token("presence:admin");
    let reader = b.service_token("presence:read_all");

    // The backend imports Bob's settings and address book.
    let put = a.api(&admin, "PUT", "/v1/users/bob/privacy", r#"{"last_seen":"nobody"}"#).await;
    assert_eq!(put.status, 200, "{}", put.body);
    let put = a.api(&admin, "PUT", "/v1/users/bob/contacts", r#"{"contacts":["zoe","alice","alice"]}"#).await;
    assert_eq!((put.status, put.json()), (200, json!({ "contacts": ["alice", "zoe"] })));
    let got = a.api(&admin, "GET", "/v1/users/bob/privacy", "").await;
    assert_eq!(got.json(), json!({ "last_seen": "nobody", "online": "same_as_last_seen", "except": [] }));
    let got = b.api(&b.token("bob"), "GET", "/v1/me/contacts", "").await;
    assert_eq!(got.json(), json!({ "contacts": ["alice", "zoe"] }));

    // Without the scope: 403; a user token is not an admin.
    for token in [reader.clone(), a.token("alice")] {
        let r = a.api(&token, "GET", "/v1/users/bob/privacy", "").await;
        assert_eq!((r.status, r.json()["code"].as_str()), (403, Some("forbidden")), "{}", r.body);
    }

    // read_all sees Bob online though he shows nobody.
    let _bob = a.connect("bob").await;
    let mut stranger = b.connect("stranger").await;
    assert!(!stranger.query(&["bob"]).await[0].online);
    let auth = format!("Bearer {reader}");
    let r =
        presence_tests::http::request(b.addr(), "GET", "/v1/presence?users=bob", &[("Authorization", &auth)])
            .await
            .unwrap();
    assert_eq!(r.json()["users"][0]["online"], true, "{}", r.body);
    let mut service = b.connect_token("backend", &reader).await;
    let got = service.query(&["bob"]).await;
    assert!(got[0].online && got[0].last_seen_approx.is_none(), "{got:?}");
    // The service registered no session: nobody sees "backend" online.
    let probe = a.presence_http("probe", &["backend"]).await;
    assert_eq!((probe[0].online, probe[0].last_seen), (false, None));
    service.close().await;
    let probe = a.presence_http("probe", &["backend"]).await;
    assert_eq!((probe[0].online, probe[0].last_seen), (false, None), "a service never gets a last_seen");
}
