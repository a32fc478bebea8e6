//! Scenario 7, graceful shutdown: SIGTERM to a server with connected users. Each user gets close
//! 1001 (going away), every last_seen (the shutdown time) is recorded in Redis and DynamoDB, the
//! sessions are removed from the registry, and the process exits with code 0.

use std::time::Duration;

use presence_tests::{now_ms, Stack};

#[tokio::test]
#[ignore = "needs redis-server and dynalite: run scripts/test"]
async fn graceful_shutdown() {
    let stack = Stack::new("graceful_shutdown").await;
    let redis = stack.redis_probe();
    let dynamo = stack.dynamo_probe();
    let (mut a, b) = tokio::join!(stack.server("ws-a").start(), stack.server("ws-b").start());

    let users = ["u1", "u2", "u3"];
    let mut clients = Vec::new();
    for u in users {
        clients.push(a.connect(u).await);
    }
    let mut alice = b.connect("alice").await;
    for u in users {
        redis.wait_sessions_on(u, &["ws-a"], Duration::from_secs(5)).await;
    }

    let term_at = now_ms();
    a.assert_running();
    let (status, closes) = tokio::join!(a.terminate(Duration::from_secs(8)), async {
        let mut closes = Vec::new();
        for c in &mut clients {
            closes.push(c.wait_close(Duration::from_secs(5)).await);
        }
        closes
    });
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status:?}");

    let seen = alice.query(&users).await;
    for ((u, close), e) in users.iter().zip(&closes).zip(&seen) {
        assert_eq!(close.code, Some(1001), "{u} is told the server is going away: {close:?}");
        // The shutdown time: after the signal, before the close frame arrived.
        let raw = redis.last_seen(u).await.unwrap_or_else(|| panic!("last_seen:{{{u}}} recorded"));
        let ls = presence_tests::time::parse_rfc3339(&raw);
        assert!(term_at <= ls && ls <= close.at_ms, "{u}: last_seen {raw} outside [SIGTERM, close received]");
        assert!(!redis.ws_key_exists(u).await, "ws:{{{u}}} removed");
        // The process exited 0 only after flushing: no polling needed.
        assert_eq!(dynamo.last_seen(u).await, Some(ls), "DynamoDB last_seen of {u}");
        assert!(!e.online, "{e:?}");
        assert_eq!(e.last_seen, Some(ls), "{e:?}");
    }
}
