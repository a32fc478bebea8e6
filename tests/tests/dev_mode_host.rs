//! Dev mode against DNS rebinding: a dev-mode server (no secret) answers only requests whose Host
//! is `localhost`, `127.0.0.1` or `[::1]`, with or without a port. A page on a foreign name that
//! resolves to 127.0.0.1 gets 403 on every route, the dev token above all. A server with a secret
//! has no such check (it serves its public name).

use presence_tests::{http, Stack};

#[tokio::test]
#[ignore = "needs the presence-server binary: run scripts/test"]
async fn dev_mode_host() {
    let stack = Stack::embedded("dev_mode_host");
    let (dev, prod) =
        tokio::join!(stack.server("dev").without("--jwt-secret").start(), stack.server("prod").start());
    let (dev_addr, port) = (dev.addr(), dev.addr().port());
    let token_req = |host: String| async move {
        let body = r#"{"user":"bob"}"#;
        let len = body.len().to_string();
        let headers =
            [("Host", host.as_str()), ("Content-Type", "application/json"), ("Content-Length", len.as_str())];
        http::request_with_body(dev_addr, "POST", "/v1/dev/token", &headers, body).await.expect("http")
    };

    for host in [
        "evil.example".to_owned(),
        format!("evil.example:{port}"),
        format!("127.0.0.2:{port}"),
        format!("localhost.evil.example:{port}"),
    ] {
        let r = token_req(host.clone()).await;
        assert_eq!(r.status, 403, "Host {host}: {}", r.body);
        assert_eq!(
            r.json(),
            serde_json::json!({
                "code": "forbidden",
                "message": "dev mode serves only Host localhost, 127.0.0.1 or [::1]"
            }),
            "Host {host}"
        );
        for path in ["/", "/healthz", "/v1/presence?users=bob"] {
            let r = http::request(dev.addr(), "GET", path, &[("Host", &host)]).await.expect("http");
            assert_eq!(r.status, 403, "Host {host} {path}: {}", r.body);
        }
    }
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "localhost".to_owned(),
    ] {
        let r = token_req(host.clone()).await;
        assert_eq!(r.status, 200, "Host {host}: {}", r.body);
        assert!(r.json()["token"].as_str().is_some_and(|t| t.split('.').count() == 3), "{}", r.body);
        let r = http::request(dev.addr(), "GET", "/", &[("Host", &host)]).await.expect("http");
        assert_eq!(r.status, 200, "Host {host} /");
    }
    assert_eq!(dev.metric("presence_refused_host_total").await, 4 * 4);

    // With a secret there are no dev tokens, and the public name is served.
    let r = http::request(prod.addr(), "GET", "/healthz", &[("Host", "presence.chat.example")])
        .await
        .expect("http");
    assert_eq!(r.status, 200, "{}", r.body);
}
