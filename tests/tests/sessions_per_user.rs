//! Per-user sessions: with the default `--max-sessions-per-user` (16), one user's 17th WebSocket
//! on this server is refused with HTTP 429 (`too_many_sessions`, JSON like every other error)
//! before the WebSocket opens, while another user still connects. The place is given back exactly
//! when a session's connection ends: after a close, and after a silent client is dropped at the
//! heartbeat timeout.

use std::time::Duration;

use presence_tests::client::{ConnectError, ConnectOptions};
use presence_tests::{eventually, PresenceServer, Stack};

async fn try_connect(server: &PresenceServer, user: &str) -> Result<presence_tests::WsClient, (u16, String)> {
    let options = ConnectOptions { token: Some(server.token(user)), ..ConnectOptions::default() };
    match server.connect_with(user, &options).await {
        Ok(c) => Ok(c),
        Err(ConnectError::Http(status, body)) => Err((status, body)),
        Err(ConnectError::Other(e)) => panic!("{user}: expected an HTTP answer, got {e}"),
    }
}

#[tokio::test]
#[ignore = "needs the presence-server binary: run scripts/test"]
async fn sessions_per_user() {
    let stack = Stack::embedded("sessions_per_user");
    let server = stack.server("ws-a").start().await;

    let mut bobs = Vec::new();
    for _ in 0..16 {
        bobs.push(server.connect("bob").await);
    }
    let (status, body) =
        try_connect(&server, "bob").await.err().expect("the 17th session of bob was accepted");
    assert_eq!(status, 429, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
    assert_eq!(
        body,
        serde_json::json!({
            "code": "too_many_sessions",
            "message": "at most 16 sessions of one user on this server"
        })
    );
    assert_eq!(server.metric("presence_refused_sessions_per_user_total").await, 1);
    assert_eq!(server.metric("presence_sessions_live").await, 16, "the refused one never opened");

    // Another user is not affected, and sees bob online.
    let mut alice = server.connect("alice").await;
    assert!(alice.entry("bob").await.online);

    // A closed session gives its place back at once; the next upgrade takes it.
    bobs.pop().expect("a bob").close().await;
    let again = eventually("bob's 16th place to be free again", Duration::from_secs(3), || async {
        try_connect(&server, "bob").await.map_err(|(s, b)| format!("{s} {b}"))
    })
    .await;
    bobs.push(again);
    assert_eq!(try_connect(&server, "bob").await.err().map(|e| e.0), Some(429), "full again");

    // A silent client ends at the heartbeat timeout (1 s here); its place is given back then.
    // (Kept open, and unread, until the end of the test: no FIN, no close frame.)
    let mut silent = bobs.pop().expect("a bob");
    silent.go_silent().await;
    let again = eventually("the silent session's place to be free", Duration::from_secs(5), || async {
        try_connect(&server, "bob").await.map_err(|(s, b)| format!("{s} {b}"))
    })
    .await;
    bobs.push(again);
    assert_eq!(try_connect(&server, "bob").await.err().map(|e| e.0), Some(429), "full again");
    for b in &mut bobs {
        b.ping().await;
    }
    alice.ping().await;
    drop(silent);
}
