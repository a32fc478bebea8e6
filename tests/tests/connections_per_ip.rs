//! `--max-connections-per-ip 3`: a fourth WebSocket from 127.0.0.1 is refused with HTTP 429
//! (`too_many_connections`) whatever its user, while a client from 127.0.0.2 still connects; a
//! closed connection gives its place back. Off by default (behind a load balancer every client
//! has the balancer's address): the harness's other tests open many connections from one address.

use std::net::IpAddr;
use std::time::Duration;

use presence_tests::client::{ConnectError, ConnectOptions};
use presence_tests::{eventually, PresenceServer, Stack};

async fn try_connect(
    server: &PresenceServer,
    user: &str,
    source: &str,
) -> Result<presence_tests::WsClient, (u16, String)> {
    let source: IpAddr = source.parse().expect("address");
    let options =
        ConnectOptions { token: Some(server.token(user)), source: Some(source), ..ConnectOptions::default() };
    match server.connect_with(user, &options).await {
        Ok(c) => Ok(c),
        Err(ConnectError::Http(status, body)) => Err((status, body)),
        Err(ConnectError::Other(e)) => panic!("{user} from {source}: expected an HTTP answer, got {e}"),
    }
}

#[tokio::test]
#[ignore = "needs the presence-server binary: run scripts/test"]
async fn connections_per_ip() {
    let stack = Stack::embedded("connections_per_ip");
    let server = stack.server("ws-a").arg("--max-connections-per-ip", "3").start().await;

    let mut held = Vec::new();
    for user in ["u1", "u2", "u3"] {
        held.push(try_connect(&server, user, "127.0.0.1").await.expect("within the limit"));
    }
    let (status, body) =
        try_connect(&server, "u4", "127.0.0.1").await.err().expect("a fourth from 127.0.0.1");
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).expect("JSON error body"),
        serde_json::json!({ "code": "too_many_connections", "message": "at most 3 connections from one address" })
    );
    assert_eq!(server.metric("presence_refused_connections_per_ip_total").await, 1);

    // Another address is counted apart.
    let mut other = try_connect(&server, "u4", "127.0.0.2").await.expect("from 127.0.0.2");
    assert!(other.entry("u1").await.online);

    // A closed connection gives its place back.
    held.pop().expect("one").close().await;
    let again = eventually("a place for 127.0.0.1", Duration::from_secs(3), || async {
        try_connect(&server, "u5", "127.0.0.1").await.map_err(|(s, b)| format!("{s} {b}"))
    })
    .await;
    held.push(again);
    assert_eq!(try_connect(&server, "u6", "127.0.0.1").await.err().map(|e| e.0), Some(429));
    for c in &mut held {
        c.ping().await;
    }
}
