//! Live presence across servers: Alice on server B subscribes to Bob; Bob connects to server A,
//! then closes. Alice gets the snapshot (with her request id), then a pushed `online`, then a
//! pushed `offline` carrying Bob's new last_seen, through Redis pub/sub. Also measures the push
//! latency (Bob's close sent on A to Alice's frame on B; `--offline-grace 0s` here) over repeated
//! rounds and prints p50/p99 (`RUST_TEST_NOCAPTURE=1 scripts/test -p presence-tests --test
//! subscription_push`); a measurement, not an assertion.

use std::time::Duration;

use presence_tests::scenarios::assert_recorded_at;
use presence_tests::Stack;

const ROUNDS: usize = 200;

#[tokio::test]
#[ignore = "needs redis-server and dynalite: run scripts/test"]
async fn subscription_push() {
    let stack = Stack::new("subscription_push").await;
    let (a, b) = tokio::join!(stack.server("ws-a").start(), stack.server("ws-b").start());
    let mut alice = b.connect("alice").await;

    let snapshot = alice.subscribe(&["bob"]).await;
    assert_eq!(snapshot.len(), 1);
    assert!(!snapshot[0].online && snapshot[0].last_seen.is_none(), "{snapshot:?}");

    let bob = a.connect("bob").await;
    let (_, push) = alice.next_push(Duration::from_secs(3)).await.expect("bob online pushed");
    assert_eq!((push[0].user.as_str(), push[0].online), ("bob", true), "{push:?}");

    let closed = bob.close().await;
    let (_, push) = alice.next_push(Duration::from_secs(3)).await.expect("bob offline pushed");
    assert_eq!((push[0].user.as_str(), push[0].online), ("bob", false), "{push:?}");
    assert_recorded_at("the pushed last_seen", push[0].last_seen.expect("last_seen"), closed);
    assert_eq!(alice.next_push(Duration::from_millis(300)).await, None, "nothing else");

    // Latency: Bob's close on A to Alice's push on B.
    let mut latencies = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let bob = a.connect("bob").await;
        alice.next_push(Duration::from_secs(3)).await.expect("online pushed");
        let closed = bob.close().await;
        let (at, push) = alice.next_push(Duration::from_secs(3)).await.expect("offline pushed");
        assert!(!push[0].online);
        latencies.push(at - closed);
    }
    latencies.sort_unstable();
    let p = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    eprintln!(
        "subscription_push: close on A -> push on B over {ROUNDS} rounds: p50 {} ms, p99 {} ms, max {} ms",
        p(0.50),
        p(0.99),
        latencies[latencies.len() - 1]
    );
}
