//! `/readyz` and `/metrics` need no token, so their cost must not follow the request rate: under
//! about 2,000 `/readyz` requests a second for two seconds (4,000 in all, from 32 clients), the
//! driver takes at most one snapshot of the core per second (`presence_status_snapshots_total`),
//! and every answer is a correct 200 with its snapshot's age under a second.

use std::time::{Duration, Instant};

use presence_tests::{http, Stack};

const REQUESTS: usize = 4_000;
const CLIENTS: usize = 32;
/// The pace: 2,000 requests a second in all.
const PER_CLIENT_INTERVAL: Duration = Duration::from_micros(1_000_000 * CLIENTS as u64 / 2_000);

#[tokio::test]
#[ignore = "needs the presence-server binary: run scripts/test"]
async fn status_snapshot() {
    let stack = Stack::embedded("status_snapshot");
    let server = stack.server("ws-a").start().await;
    let mut bob = server.connect("bob").await;
    // A round trip through the driver: the core holds bob's session before the next snapshot.
    bob.ping().await;
    // /readyz may still answer from a snapshot taken before bob connected (the harness's start-up
    // probe): it is at most a second old, so within a few seconds one shows him.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = http::get(server.addr(), "/readyz").await.expect("/readyz answered");
        if r.json()["connections"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz never showed bob's connection: {}", r.json());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = server.metric("presence_status_snapshots_total").await;

    let started = Instant::now();
    let addr = server.addr();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(PER_CLIENT_INTERVAL);
                let mut answers = Vec::with_capacity(REQUESTS / CLIENTS);
                for _ in 0..REQUESTS / CLIENTS {
                    tick.tick().await;
                    answers.push(http::get(addr, "/readyz").await);
                }
                answers
            })
        })
        .collect();
    let mut answered = 0;
    for c in clients {
        for r in c.await.expect("client task") {
            let r = r.expect("/readyz answered");
            let body = r.json();
            assert_eq!(
                (r.status, &body["ready"], &body["connections"]),
                (200, &true.into(), &1.into()),
                "{body}"
            );
            assert!(body["snapshot_age_ms"].as_u64().expect("snapshot_age_ms") < 1_000, "{body}");
            answered += 1;
        }
    }
    let elapsed = started.elapsed();
    let after = server.metric("presence_status_snapshots_total").await;
    eprintln!(
        "{answered} /readyz answers in {elapsed:?} ({:.0}/s); {} snapshots of the core",
        answered as f64 / elapsed.as_secs_f64(),
        after - before
    );
    assert_eq!(answered, REQUESTS);
    // One per started second of the run, plus the one the final `metric` asked for.
    let bound = elapsed.as_secs() + 2;
    assert!(after - before <= bound, "{} snapshots for {REQUESTS} requests in {elapsed:?}", after - before);
}
