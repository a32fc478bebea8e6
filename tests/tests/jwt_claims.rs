//! Claims: with `--jwt-issuer` and `--jwt-audience` a token must carry exactly that `iss` and an
//! `aud` naming this service, on the WebSocket and on the HTTP API; `nbf` in the future (past the
//! 30 s leeway) is refused, within the leeway accepted; `presence-server token` with the same
//! flags signs tokens the server accepts. A server without `--jwt-audience` refuses tokens that
//! name an audience (RFC 7519, 4.1.3).

use presence_tests::client::{ConnectError, ConnectOptions};
use presence_tests::stack::SECRET;
use presence_tests::token::{now_secs, signed};
use presence_tests::{cli, http, PresenceServer, Stack};
use serde_json::{json, Value};

const ISS: &str = "https://id.chat.example";
const AUD: &str = "presence";

/// The HTTP status and the 401 message for `token` on `/v1/ws`, then the status on `/v1/presence`.
async fn answer(server: &PresenceServer, token: &str) -> (u16, String, u16) {
    let options = ConnectOptions { token: Some(token.to_owned()), ..ConnectOptions::default() };
    let (ws, msg) = match server.connect_with("bob", &options).await {
        Ok(mut c) => {
            c.ping().await;
            (101, String::new())
        }
        Err(ConnectError::Http(status, body)) => {
            let v: Value = serde_json::from_str(&body).expect("JSON error body");
            (status, v["message"].as_str().unwrap_or_default().to_owned())
        }
        Err(ConnectError::Other(e)) => panic!("expected an HTTP answer, got {e}"),
    };
    let auth = format!("Bearer {token}");
    let r = http::request(server.addr(), "GET", "/v1/presence?users=alice", &[("Authorization", &auth)])
        .await
        .expect("http");
    (ws, msg, r.status)
}

#[tokio::test]
#[ignore = "needs the presence-server binary: run scripts/test"]
async fn jwt_claims() {
    let stack = Stack::embedded("jwt_claims");
    let (strict, plain) = tokio::join!(
        stack.server("ws-a").arg("--jwt-issuer", ISS).arg("--jwt-audience", AUD).start(),
        stack.server("ws-b").start()
    );
    let exp = now_secs() + 3600;
    let with = |extra: Value| {
        let mut claims = json!({ "sub": "bob", "exp": exp });
        claims.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
        signed(SECRET, &claims)
    };

    let cases = [
        ("iss and aud", with(json!({ "iss": ISS, "aud": AUD })), (101, "", 200)),
        ("aud among several", with(json!({ "iss": ISS, "aud": ["mail", AUD] })), (101, "", 200)),
        (
            "wrong iss",
            with(json!({ "iss": "https://evil.example", "aud": AUD })),
            (401, "invalid token: wrong issuer", 401),
        ),
        ("no iss", with(json!({ "aud": AUD })), (401, "invalid token: missing claim iss", 401)),
        (
            "wrong aud",
            with(json!({ "iss": ISS, "aud": "mail" })),
            (401, "invalid token: wrong audience", 401),
        ),
        ("no aud", with(json!({ "iss": ISS })), (401, "invalid token: missing claim aud", 401)),
        (
            "nbf in an hour",
            with(json!({ "iss": ISS, "aud": AUD, "nbf": now_secs() + 3600 })),
            (401, "invalid token: not yet valid (nbf)", 401),
        ),
        (
            "nbf within the leeway",
            with(json!({ "iss": ISS, "aud": AUD, "nbf": now_secs() + 10 })),
            (101, "", 200),
        ),
        ("nbf past", with(json!({ "iss": ISS, "aud": AUD, "nbf": now_secs() - 60 })), (101, "", 200)),
    ];
    for (what, token, (ws, msg, api)) in &cases {
        assert_eq!(answer(&strict, token).await, (*ws, msg.to_string(), *api), "{what}");
    }

    // The server without claim rules: iss is not checked, nbf is, a named audience is refused.
    let plain_cases = [
        ("any iss", with(json!({ "iss": "anyone" })), (101, "", 200)),
        (
            "nbf in an hour",
            with(json!({ "nbf": now_secs() + 3600 })),
            (401, "invalid token: not yet valid (nbf)", 401),
        ),
        ("an aud", with(json!({ "aud": AUD })), (401, "invalid token: wrong audience", 401)),
    ];
    for (what, token, (ws, msg, api)) in &plain_cases {
        assert_eq!(answer(&plain, token).await, (*ws, msg.to_string(), *api), "{what} (no rules)");
    }

    // `presence-server token` with the same flags (or variables) signs what the server requires.
    let out = cli::run(&[
        "token",
        "--user",
        "bob",
        "--jwt-secret",
        SECRET,
        "--jwt-issuer",
        ISS,
        "--jwt-audience",
        AUD,
    ])
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(answer(&strict, out.stdout.trim()).await, (101, String::new(), 200));
    let out = cli::run_with_env(
        &["token", "--user", "bob", "--jwt-secret", SECRET],
        &[("PRESENCE_JWT_ISSUER", ISS), ("PRESENCE_JWT_AUDIENCE", AUD)],
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(answer(&strict, out.stdout.trim()).await, (101, String::new(), 200));
    // Without them the token lacks the claims.
    let out = cli::run(&["token", "--user", "bob", "--jwt-secret", SECRET]).await;
    assert_eq!(answer(&strict, out.stdout.trim()).await.0, 401);

    // The query subcommand signs its own token with them too.
    let url = format!("ws://{}", strict.addr());
    let out = cli::run(&[
        "query",
        "--url",
        &url,
        "--jwt-secret",
        SECRET,
        "--jwt-issuer",
        ISS,
        "--jwt-audience",
        AUD,
        "--json",
        "carol",
    ])
    .await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "{\"user\":\"carol\",\"online\":false,\"last_seen\":null}\n"),
        "{out:?}"
    );
}
