//! The privacy API's errors, each with its status and JSON code: 401 without a valid token, 400
//! `bad_request` (not JSON, not an object, an unknown member or value), 400 `invalid_user`, 400
//! `too_many_users` past `--max-contacts` (for PUT and for a PATCH that would pass it, which then
//! changes nothing), 413 for a body over 2 MiB, 405 for another method, and 404 for another path.

use presence_tests::Stack;
use serde_json::json;

#[tokio::test]
#[ignore = "needs redis-server and dynalite: run scripts/test"]
async fn privacy_http_errors() {
    let stack = Stack::new("privacy_http_errors").await;
    let a = stack.server("ws-a").arg("--max-contacts", "3").start().await;
    let bob = a.token("bob");
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        ("PUT", "/v1/me/privacy", "not json".into(), 400, "bad_request"),
        ("PUT", "/v1/me/privacy", "[]".into(), 400, "bad_request"),
        ("PUT", "/v1/me/privacy", r#"{"last_seen":"friends"}"#.into(), 400, "bad_request"),
        ("PUT", "/v1/me/privacy", r#"{"lastseen":"nobody"}"#.into(), 400, "bad_request"),
        ("PUT", "/v1/me/privacy", r#"{"except":["ok","bad id"]}"#.into(), 400, "invalid_user"),
        ("PUT", "/v1/me/contacts", r#"{"contacts":["a","b","c","d"]}"#.into(), 400, "too_many_users"),
        ("PUT", "/v1/me/contacts", r#"{"contacts":"a"}"#.into(), 400, "bad_request"),
        (
            "PUT",
            "/v1/me/contacts",
            format!(r#"{{"contacts":["{}"]}}"#, "x".repeat(2 * 1024 * 1024)),
            413,
            "too_large",
        ),
        ("DELETE", "/v1/me/contacts", String::new(), 405, "method_not_allowed"),
        ("PATCH", "/v1/me/privacy", "{}".into(), 405, "method_not_allowed"),
        ("GET", "/v1/users/bad%20id/privacy", String::new(), 403, "forbidden"),
        ("GET", "/v1/me/nothing", String::new(), 404, "not_found"),
    ];
    for (method, path, body, status, code) in cases {
        let r = a.api(&bob, method, path, &body).await;
        assert_eq!(
            (r.status, r.json()["code"].as_str()),
            (status, Some(code)),
            "{method} {path}: {}",
            r.body
        );
    }
    let r = a.api("not-a-token", "GET", "/v1/me/privacy", "").await;
    assert_eq!((r.status, r.json()["code"].as_str()), (401, Some("unauthorized")));
    // An admin naming an invalid user id.
    let admin = a.service_token("presence:admin");
    let r = a.api(&admin, "GET", "/v1/users/bad%20id/privacy", "").await;
    assert_eq!((r.status, r.json()["code"].as_str()), (400, Some("invalid_user")), "{}", r.body);

    // A PATCH over the limit changes nothing; one within it applies add, then remove.
    a.set_contacts("bob", &["a", "b"]).await;
    let r = a.api(&bob, "PATCH", "/v1/me/contacts", r#"{"add":["c","d"]}"#).await;
    assert_eq!((r.status, r.json()["code"].as_str()), (400, Some("too_many_users")), "{}", r.body);
    let r = a.api(&bob, "GET", "/v1/me/contacts", "").await;
    assert_eq!(r.json(), json!({ "contacts": ["a", "b"] }));
    let r = a.api(&bob, "PATCH", "/v1/me/contacts", r#"{"add":["c","d"],"remove":["a","d"]}"#).await;
    assert_eq!((r.status, r.json()), (200, json!({ "contacts": ["b", "c"] })), "{}", r.body);
    // Defaults for a user who never set anything.
    let r = a.api(&a.token("newcomer"), "GET", "/v1/me/privacy", "").await;
    assert_eq!(r.json(), json!({ "last_seen": "everyone", "online": "same_as_last_seen", "except": [] }));
}
