//! Every HTTP answer carries `Cache-Control: no-store` (presence is personal and changes by the
//! second: no shared or browser cache may keep it) and `X-Content-Type-Options: nosniff`: the
//! API's 200s and its errors, health, readiness and metrics. The demo page keeps its own
//! `Cache-Control: no-cache` (revalidate) with `nosniff`.

use presence_tests::{http, Stack};

type Headers<'a> = &'a [(&'a str, &'a str)];

#[tokio::test]
#[ignore = "needs the presence-server binary: run scripts/test"]
async fn response_headers() {
    let stack = Stack::embedded("response_headers");
    let server = stack.server("ws-a").start().await;
    let auth = format!("Bearer {}", server.token("alice"));
    let with_token: &[(&str, &str)] = &[("Authorization", &auth)];
    let cases: [(&str, Headers, u16); 7] = [
        ("/v1/presence?users=bob", with_token, 200),
        ("/v1/presence?users=bob", &[], 401),
        ("/v1/presence?users=not%20a%20user", with_token, 400),
        ("/healthz", &[], 200),
        ("/readyz", &[], 200),
        ("/metrics", &[], 200),
        ("/no/such/route", &[], 404),
    ];
    for (path, headers, status) in cases {
        let r = http::request(server.addr(), "GET", path, headers).await.expect("http");
        assert_eq!(r.status, status, "{path}: {}", r.body);
        assert_eq!(
            (r.header("cache-control"), r.header("x-content-type-options")),
            (Some("no-store"), Some("nosniff")),
            "{path} ({status}): {:?}",
            r.headers
        );
    }
    let r = server.get("/").await;
    assert_eq!(
        (r.status, r.header("cache-control"), r.header("x-content-type-options")),
        (200, Some("no-cache"), Some("nosniff"))
    );
    // The refused upgrade too.
    let r = http::request(server.addr(), "GET", "/v1/ws", &[]).await.expect("http");
    assert_eq!((r.status, r.header("cache-control")), (401, Some("no-store")));
}
