//! `--admin-listen`: `/readyz`, `/metrics` and `/healthz` are served on the second listener, and
//! only those; the public listener answers 404 for `/readyz` and `/metrics` but keeps `/healthz`
//! (for load balancers), the WebSocket and the HTTP API.

use presence_tests::{http, Stack};

#[tokio::test]
#[ignore = "needs the presence-server binary: run scripts/test"]
async fn admin_listener() {
    let stack = Stack::embedded("admin_listener");
    let server = stack.server("ws-a").arg("--admin-listen", "127.0.0.1:0").start().await;
    let admin = server.admin_addr().expect("the admin listener's address");
    assert_ne!(admin, server.addr());
    let mut bob = server.connect("bob").await;
    bob.ping().await;

    // The admin listener: health, readiness and metrics.
    let r = http::get(admin, "/healthz").await.expect("admin /healthz");
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    let r = http::get(admin, "/readyz").await.expect("admin /readyz");
    assert_eq!((r.status, &r.json()["ready"]), (200, &true.into()), "{}", r.body);
    let r = http::get(admin, "/metrics").await.expect("admin /metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.lines().any(|l| l == "presence_connections 1"), "{}", r.body);
    // ... and nothing else.
    for path in ["/", "/v1/presence?users=bob", "/v1/ws", "/demo/app.js"] {
        let r = http::get(admin, path).await.expect("admin");
        assert_eq!((r.status, &r.json()["code"]), (404, &"not_found".into()), "admin {path}: {}", r.body);
    }

    // The public listener: no /readyz or /metrics; everything else as before.
    for path in ["/readyz", "/metrics"] {
        let r = server.get(path).await;
        assert_eq!((r.status, &r.json()["code"]), (404, &"not_found".into()), "public {path}: {}", r.body);
    }
    assert_eq!(server.healthz().await, 200);
    let alice = server.presence_http("alice", &["bob"]).await;
    assert!(alice[0].online, "{alice:?}");
    let (status, body) = server.readyz().await;
    assert_eq!(status, 200, "the harness reads readiness from the admin listener: {body}");
}
