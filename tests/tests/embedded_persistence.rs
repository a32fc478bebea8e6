//! Scenario 9, the embedded default persists: a server without Redis or DynamoDB flags keeps
//! last_seen in its `--data-dir`. Bob connects and closes; the server is restarted on the same
//! data directory (after SIGTERM, and again after kill -9 once its writes were acknowledged);
//! a query shows Bob's last_seen unchanged, to the millisecond.

use std::time::Duration;

use presence_tests::scenarios::assert_recorded_at;
use presence_tests::{eventually, Stack};

#[tokio::test]
#[ignore = "needs the presence-server binary: run scripts/test"]
async fn embedded_persistence() {
    let stack = Stack::embedded("embedded_persistence");
    let mut server = stack.server("solo").start().await;

    let mut alice = server.connect("alice").await;
    let closed_at = server.connect("bob").await.close().await;
    let (seen, _) = alice.wait_offline("bob", Duration::from_secs(3)).await;
    let last_seen = seen.last_seen.expect("bob's last_seen");
    assert_recorded_at("bob's last_seen", last_seen, closed_at);

    // Graceful restart.
    let status = server.terminate(Duration::from_secs(8)).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
    drop(alice);
    server.restart().await;
    let mut alice = server.connect("alice").await;
    assert_eq!(alice.entry("bob").await, seen, "bob after a graceful restart");

    // Crash after the write was acknowledged (/readyz pending_writes = 0).
    let closed_at = server.connect("bob").await.close().await;
    let (seen, _) = alice.wait_offline("bob", Duration::from_secs(3)).await;
    let second = seen.last_seen.expect("bob's last_seen");
    assert_recorded_at("bob's second last_seen", second, closed_at);
    assert!(second > last_seen);
    eventually("the embedded write to be acknowledged", Duration::from_secs(3), || {
        let server = &server;
        async move {
            let (_, body) = server.readyz().await;
            if body["pending_writes"] == 0 {
                Ok(())
            } else {
                Err(body.to_string())
            }
        }
    })
    .await;
    server.kill9().await;
    drop(alice);
    server.restart().await;
    let mut alice = server.connect("alice").await;
    assert_eq!(alice.entry("bob").await, seen, "bob after kill -9 and a restart");
    let http = server.presence_http("alice", &["bob"]).await;
    assert_eq!(http, vec![seen]);
}
