//! In-band token refresh: `{"type":"auth","token":...}` on an open connection. Bob and Carol
//! connect with tokens that expire in a few seconds (`--jwt-leeway 0s`). Bob replaces his with a
//! longer one of his own: no answer, and his connection outlives the first token. Carol tries
//! another user's valid token and garbage: `bad_token` each time, and her old token stays in force,
//! so she is closed with 4001 at its expiry.

use std::time::Duration;

use presence_tests::{now_ms, Stack};
use serde_json::json;

#[tokio::test]
#[ignore = "needs the presence-server binary: run scripts/test"]
async fn token_refresh() {
    let stack = Stack::embedded("token_refresh");
    let server = stack.server("ws-a").arg("--jwt-leeway", "0s").start().await;
    let exp = now_ms() / 1000 + 3;
    // With no leeway the server refuses the token from `exp + 1` s on (`exp >= floor(now)`).
    let deadline_ms = (exp + 1) * 1000;
    let mut bob = server.connect_token("bob", &server.token_with_exp("bob", exp)).await;
    let mut carol = server.connect_token("carol", &server.token_with_exp("carol", exp)).await;

    // Carol: another user's valid token, then garbage.
    carol.send_json(json!({"type": "auth", "token": server.token("mallory")})).await;
    let err = carol.next_frame(Duration::from_secs(5)).await;
    assert_eq!(
        err,
        json!({"type": "error", "code": "bad_token", "message": "the token is for another user"})
    );
    carol.send_json(json!({"type": "auth", "token": "garbage"})).await;
    let err = carol.next_frame(Duration::from_secs(5)).await;
    assert_eq!(err["code"], "bad_token", "{err}");
    assert_eq!(err["message"], "invalid token: malformed", "{err}");
    carol.send_json(json!({"type": "auth"})).await;
    let err = carol.next_frame(Duration::from_secs(5)).await;
    assert_eq!(err["code"], "bad_frame", "an auth frame without a token: {err}");

    // Bob: his own new token. A success is silent: the next frame is the pong of a later ping.
    bob.send_json(json!({"type": "auth", "token": server.token("bob")})).await;
    bob.send_json(json!({"type": "ping", "seq": 1})).await;
    assert_eq!(bob.next_frame(Duration::from_secs(5)).await, json!({"type": "pong", "seq": 1}));

    // Carol's old token expires: token_expired, then close 4001.
    let err = carol.next_frame(Duration::from_secs(10)).await;
    let expired_at = now_ms();
    assert_eq!(
        err,
        json!({"type": "error", "code": "token_expired", "message": "the connection's token expired"})
    );
    assert!(expired_at >= deadline_ms, "closed at {expired_at}, before the token's end {deadline_ms}");
    let close = carol.wait_close(Duration::from_secs(5)).await;
    assert_eq!((close.code, close.reason.as_str()), (Some(4001), "token expired"));

    // Bob is still there, a second past the first token's end, and online.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(now_ms() > deadline_ms + 900);
    bob.send_json(json!({"type": "ping", "seq": 2})).await;
    assert_eq!(bob.next_frame(Duration::from_secs(5)).await, json!({"type": "pong", "seq": 2}));
    let entries = server.presence_http("alice", &["bob", "carol"]).await;
    assert_eq!((entries[0].online, entries[1].online), (true, false), "{entries:?}");
    assert_eq!(server.metric("presence_sessions_ended_total{reason=\"expired\"}").await, 1);
    bob.close().await;
}
