//! Scenario 8, security at the edge: missing, expired, forged and `alg: none` tokens get 401; a
//! disallowed Origin gets 403; an oversized message closes with 1009; a flood of frames closes
//! with 1008; garbage frames get an `error` frame (`bad_frame`) and the connection keeps working;
//! a socket that never completes its request is dropped after the handshake timeout. The server
//! stays healthy throughout.
//!
//! Stores do not matter here: the server runs with the embedded defaults.

use std::time::{Duration, Instant};

use presence_tests::client::{ConnectError, ConnectOptions};
use presence_tests::{http, token, PresenceServer, Stack};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = presence_tests::stack::SECRET;
const ALLOWED_ORIGIN: &str = "https://chat.example";

async fn assert_healthy(server: &mut PresenceServer) {
    server.assert_running();
    assert_eq!(server.healthz().await, 200, "/healthz");
}

async fn refused(server: &PresenceServer, options: ConnectOptions) -> (u16, String) {
    match server.connect_with("bob", &options).await {
        Err(ConnectError::Http(status, body)) => (status, body),
        Err(ConnectError::Other(e)) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("connection accepted with {options:?}"),
    }
}

fn with_token(token: String) -> ConnectOptions {
    ConnectOptions { token: Some(token), ..ConnectOptions::default() }
}

#[tokio::test]
#[ignore = "needs the presence-server binary: run scripts/test"]
async fn security() {
    let stack = Stack::embedded("security");
    let mut server = stack
        .server("ws-a")
        .arg("--allowed-origins", ALLOWED_ORIGIN)
        .arg("--frame-rate", "5")
        .arg("--frame-burst", "10")
        .arg("--handshake-timeout", "500ms")
        .start()
        .await;

    // Tokens: 401 for all bad ones, on the WebSocket and on the HTTP API.
    let bad_tokens = [
        ("missing", None),
        ("expired", Some(token::expired(SECRET, "bob"))),
        ("forged", Some(token::forged("bob"))),
        ("alg none", Some(token::alg_none("bob"))),
    ];
    for (what, t) in &bad_tokens {
        let options = ConnectOptions { token: t.clone(), ..ConnectOptions::default() };
        let (status, body) = refused(&server, options).await;
        assert_eq!(status, 401, "{what} token on /v1/ws: {body}");
        let in_query = ConnectOptions { token: t.clone(), token_in_query: true, ..ConnectOptions::default() };
        assert_eq!(refused(&server, in_query).await.0, 401, "{what} token as access_token");
        let headers: Vec<(&str, String)> =
            t.iter().map(|t| ("Authorization", format!("Bearer {t}"))).collect();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = http::request(server.addr(), "GET", "/v1/presence?users=bob", &headers).await.expect("http");
        assert_eq!(r.status, 401, "{what} token on /v1/presence: {}", r.body);
    }
    // A good token works, as a header or as access_token.
    let mut ok = server.connect("bob").await;
    ok.ping().await;
    let in_query = ConnectOptions {
        token: Some(server.token("bob")),
        token_in_query: true,
        ..ConnectOptions::default()
    };
    server.connect_with("bob", &in_query).await.expect("token as access_token").ping().await;
    assert_healthy(&mut server).await;

    // Origin: a browser page from elsewhere is refused; the allowed one is not.
    let evil =
        ConnectOptions { origin: Some("https://evil.example".into()), ..with_token(server.token("bob")) };
    let (status, body) = refused(&server, evil).await;
    assert_eq!(status, 403, "disallowed Origin: {body}");
    let good = ConnectOptions { origin: Some(ALLOWED_ORIGIN.into()), ..with_token(server.token("bob")) };
    server.connect_with("bob", &good).await.expect("allowed Origin").ping().await;
    assert_healthy(&mut server).await;

    // Garbage gets `bad_frame` errors, and the connection keeps working.
    let mut c = server.connect("carol").await;
    c.send_text("this is not json").await;
    let e = c.next_frame(Duration::from_secs(2)).await;
    assert_eq!((&e["type"], &e["code"]), (&json!("error"), &json!("bad_frame")), "{e}");
    c.send_json(json!({"type": "pong", "seq": 1})).await;
    let e = c.next_frame(Duration::from_secs(2)).await;
    assert_eq!((&e["type"], &e["code"]), (&json!("error"), &json!("bad_frame")), "{e}");
    c.send_json(json!({"type": "query", "id": 5, "users": ["not a user id"]})).await;
    let e = c.next_frame(Duration::from_secs(2)).await;
    assert_eq!(
        (&e["type"], &e["id"], &e["code"]),
        (&json!("error"), &json!(5), &json!("invalid_user")),
        "{e}"
    );
    c.send_binary(vec![0xff, 0x00]).await;
    match c.next_event(Duration::from_secs(2)).await {
        // Binary error frame: tag 0x08, no id, code 0x00 (bad_frame).
        Some((_, presence_tests::client::Event::Binary(b))) => {
            assert_eq!(&b[..3], &[0x08, 0x00, 0x00], "{b:?}")
        }
        other => panic!("expected a binary error frame, got {other:?}"),
    }
    c.ping().await;
    assert!(!c.entry("bob").await.user.is_empty());
    assert_healthy(&mut server).await;

    // An oversized message (one byte over the 64 KiB frame limit) closes with 1009.
    let mut big = server.connect("dave").await;
    let _ = big.try_send(tokio_tungstenite::tungstenite::Message::text("x".repeat(65_537))).await;
    let close = big.wait_close(Duration::from_secs(3)).await;
    assert_eq!(close.code, Some(1009), "{close:?}");
    assert_healthy(&mut server).await;

    // A flood (burst 10, 5/s here) closes with 1008.
    let mut flood = server.connect("erin").await;
    for seq in 0..40 {
        let frame = json!({"type": "ping", "seq": seq}).to_string();
        if flood.try_send(tokio_tungstenite::tungstenite::Message::text(frame)).await.is_err() {
            break;
        }
    }
    let close = flood.wait_close(Duration::from_secs(3)).await;
    assert_eq!(close.code, Some(1008), "{close:?}");
    assert_healthy(&mut server).await;

    // Sockets that never finish their request are dropped after --handshake-timeout (500 ms).
    for (what, sent) in
        [("a silent socket", &b""[..]), ("a half-sent request", &b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n"[..])]
    {
        let started = Instant::now();
        let mut s = tokio::net::TcpStream::connect(server.addr()).await.expect("connect");
        s.write_all(sent).await.expect("write");
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await;
        let elapsed = started.elapsed();
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "{what}: expected the server to drop it, got {read:?}");
        assert!(
            elapsed >= Duration::from_millis(450) && elapsed <= Duration::from_millis(1500),
            "{what} dropped after {elapsed:?}, expected about 500 ms"
        );
    }
    assert_healthy(&mut server).await;

    // Still serving: the first connection works, the server is ready.
    ok.ping().await;
    let (status, body) = server.readyz().await;
    assert_eq!(status, 200, "{body}");
}
