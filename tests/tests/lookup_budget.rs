//! Per-user lookup budgets: one user's 3 connections and its `GET /v1/presence` requests share one
//! token bucket (`--lookup-rate 20 --lookup-burst 100` here). All four ask as fast as they are
//! answered, 10 distinct users a request, for 3 s: the lookups answered in total stay within
//! burst + rate x elapsed; the rest get `rate_limited` on the WebSocket and 429 with a
//! `Retry-After` of whole seconds (at least 1) over HTTP, after which the same request succeeds.
//! Another user's budget is untouched.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use presence_tests::{PresenceServer, Stack, WsClient};
use tokio::time::Instant;

const RATE: u64 = 20;
const BURST: u64 = 100;
const USERS: [&str; 10] = ["u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "u9"];

#[tokio::test]
#[ignore = "needs the presence-server binary: run scripts/test"]
async fn lookup_budget() {
    let stack = Stack::embedded("lookup_budget");
    let server = Arc::new(
        stack
            .server("ws-a")
            .arg("--lookup-rate", &RATE.to_string())
            .arg("--lookup-burst", &BURST.to_string())
            .start()
            .await,
    );
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(server.connect("alice").await);
    }
    let answered = Arc::new(AtomicU64::new(0));
    let refused_ws = Arc::new(AtomicU64::new(0));
    let refused_http = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let stop = started + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for c in conns {
        tasks.push(tokio::spawn(ws_asker(c, stop, answered.clone(), refused_ws.clone())));
    }
    tasks.push(tokio::spawn(http_asker(server.clone(), stop, answered.clone(), refused_http.clone())));
    let mut conns = Vec::new();
    for t in tasks {
        if let Some(c) = t.await.expect("asker") {
            conns.push(c);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let answered = answered.load(Ordering::SeqCst);
    let bound = BURST as f64 + RATE as f64 * elapsed;
    println!(
        "answered {answered} lookups in {elapsed:.2} s (bound {bound:.0}); refused: {} ws, {} http",
        refused_ws.load(Ordering::SeqCst),
        refused_http.load(Ordering::SeqCst)
    );
    assert!(
        answered as f64 <= bound,
        "{answered} lookups answered, more than burst + rate x elapsed = {bound:.1}"
    );
    // The budget was the limit, not the askers: every one of them was refused at some point,
    // and the burst was answered in full before the first refusal could happen.
    assert!(answered >= BURST, "only {answered} answered");
    assert!(refused_ws.load(Ordering::SeqCst) > 0 && refused_http.load(Ordering::SeqCst) > 0);

    // Bob's budget is his own.
    let mut bob = server.connect("bob").await;
    assert_eq!(bob.query(&USERS).await.len(), USERS.len());

    // Empty alice's bucket with one connection, then HTTP: 429 with a Retry-After that is enough.
    let c = &mut conns[0];
    while c.try_query(&USERS).await.is_ok() {}
    let r = server.try_presence_http("alice", &USERS).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["code"], "rate_limited");
    let retry = retry_after(&r);
    assert!((1..=1).contains(&retry), "10 lookups at 20/s need 0.5 s at most, rounded up to 1 s: {retry}");
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(server.presence_http("alice", &USERS).await.len(), USERS.len());
    assert!(server.metric("presence_lookups_refused_total").await >= 3);
}

fn retry_after(r: &presence_tests::http::Response) -> u64 {
    let v = r
        .headers
        .iter()
        .find(|(k, _)| k == "retry-after")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("429 without Retry-After: {:?}", r.headers));
    v.parse().unwrap_or_else(|_| panic!("Retry-After is not whole seconds: {v:?}"))
}

async fn ws_asker(
    mut c: WsClient,
    stop: Instant,
    answered: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
) -> Option<WsClient> {
    while Instant::now() < stop {
        match c.try_query(&USERS).await {
            Ok(entries) => {
                answered.fetch_add(entries.len() as u64, Ordering::SeqCst);
            }
            Err(e) => {
                assert_eq!(e["code"], "rate_limited", "{e}");
                refused.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    Some(c)
}

async fn http_asker(
    server: Arc<PresenceServer>,
    stop: Instant,
    answered: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
) -> Option<WsClient> {
    while Instant::now() < stop {
        let r = server.try_presence_http("alice", &USERS).await;
        match r.status {
            200 => {
                let n = r.json()["users"].as_array().expect("users").len();
                answered.fetch_add(n as u64, Ordering::SeqCst);
            }
            429 => {
                assert!(retry_after(&r) >= 1);
                refused.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("GET /v1/presence answered {other}: {}", r.body),
        }
    }
    None
}
