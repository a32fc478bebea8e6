//! Fairness under a flood (a benchmark-style test): 200 connections of 200 users flood the server at
//! their frame limit (`--frame-rate 20 --frame-burst 100`: a burst of 50, then 19 messages a second,
//! half WebSocket pings, half JSON `ping` frames, for the whole run), while a victim connection,
//! with the harness's 1 s heartbeat timeout, only answers the server's WebSocket pings. A watcher
//! asks for the victim's presence every 250 ms for 30 s: it must be online at every answer. Then
//! the victim says `bye`: its last_seen must be its real close time, between the moment the `bye`
//! was sent and the moment the client saw the server's close (both read from the same machine's
//! clock, in the milliseconds the server records). One more connection that goes past the limit is
//! closed with 1008 by its own connection task, and none of the 200 flooders is.
//!
//! The machine has 2 cores and 20,000 file descriptors per process: 203 connections are far from
//! either limit; the flood is about 4,000 messages a second into one server.

use std::time::Duration;

use presence_tests::{rfc3339, Stack, WsClient};
use serde_json::json;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

const FLOODERS: usize = 200;
const RUN: Duration = Duration::from_secs(30);

#[tokio::test]
#[ignore = "needs the presence-server binary: run scripts/test"]
async fn ping_flood() {
    let stack = Stack::embedded("ping_flood");
    let server = stack.server("ws-a").arg("--frame-rate", "20").arg("--frame-burst", "100").start().await;
    let mut victim = server.connect("victim").await;
    let mut watcher = server.connect("watcher").await;
    assert!(watcher.entry("victim").await.online);

    let mut flooders = Vec::with_capacity(FLOODERS);
    for i in 0..FLOODERS {
        flooders.push(server.connect(&format!("flood-{i}")).await);
    }
    let stop = Instant::now() + RUN;
    let tasks: Vec<_> = flooders.into_iter().map(|c| tokio::spawn(flood(c, stop))).collect();

    // One connection over the limit: closed by its own task with 1008.
    let mut greedy = server.connect("greedy").await;
    for _ in 0..150 {
        if greedy.try_send(Message::Ping(Default::default())).await.is_err() {
            break;
        }
    }
    let close = greedy.wait_close(Duration::from_secs(5)).await;
    assert_eq!((close.code, close.reason.as_str()), (Some(1008), "frame rate limit exceeded"));

    let mut answers = 0;
    while Instant::now() < stop {
        let e = watcher.entry("victim").await;
        assert!(e.online, "the victim read as offline after {answers} answers: {e:?}");
        answers += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut sent = 0;
    for t in tasks {
        sent += t.await.expect("flooder");
    }
    println!("{sent} flood messages sent in {RUN:?}; the victim was online in all {answers} answers");
    assert!(answers >= 100, "only {answers} answers in {RUN:?}");
    assert_eq!(server.metric("presence_frame_rate_closes_total").await, 1, "only the greedy connection");
    assert_eq!(server.metric("presence_sessions_ended_total{reason=\"timeout\"}").await, 0);

    let bye_at = victim.send_json(json!({"type": "bye"})).await;
    let close = victim.wait_close(Duration::from_secs(5)).await;
    assert_eq!(close.code, Some(1000), "{close:?}");
    let (entry, _) = watcher.wait_offline("victim", Duration::from_secs(5)).await;
    let last_seen = entry.last_seen.expect("the victim has a last_seen");
    // Granularity: both sides read milliseconds; the server's never-decreasing clock
    // (`core/src/clock.rs`) may run up to 1 ms ahead of a fresh read (seen once: +1 ms).
    assert!(
        (bye_at..=close.at_ms + 1).contains(&last_seen),
        "last_seen {} is not the close time: bye sent at {}, close seen at {}",
        rfc3339(last_seen),
        rfc3339(bye_at),
        rfc3339(close.at_ms)
    );
    println!(
        "victim: bye at {bye_at}, last_seen +{} ms, close seen +{} ms",
        last_seen - bye_at,
        close.at_ms - bye_at
    );
}

/// Floods until `stop`: a burst of 50 messages, then 19 a second (the limit is 20 a second with a
/// burst of 100), alternating WebSocket pings and JSON `ping` frames. Returns how many it sent;
/// panics if the server closed the connection.
async fn flood(mut c: WsClient, stop: Instant) -> u64 {
    for n in 0..50 {
        flood_one(&mut c, n).await;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / 19));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut n = 50;
    while Instant::now() < stop {
        tick.tick().await;
        flood_one(&mut c, n).await;
        n += 1;
    }
    n
}

async fn flood_one(c: &mut WsClient, n: u64) {
    let msg = if n.is_multiple_of(2) {
        Message::Ping(Default::default())
    } else {
        Message::text(json!({"type": "ping", "seq": n}).to_string())
    };
    if let Err(e) = c.try_send(msg).await {
        panic!("{}: the server closed a flooder at its limit: {e}", c.user());
    }
}
