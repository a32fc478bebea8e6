//! Detection latency across two servers, and its floor: Redis pub/sub on the same Redis.
//!
//! - graceful: a watcher on server B subscribes to user `d0`; `d0` connects to server A and closes
//!   (a WebSocket Close). The figure is the time from just before the Close is sent to the offline
//!   push reaching the watcher (servers run with `--offline-grace 0s`). `--rounds` times.
//! - ungraceful: `--silent-users` users connect to A and at once stop reading and writing, keeping
//!   the TCP connection open (no FIN, like a dead phone). The figure is the time from the moment
//!   they went silent (their last possible proof of life) to their offline push on B; the goal is
//!   the heartbeat timeout + 1 s.
//! - baseline: `PUBLISH` on one Redis connection to a `SUBSCRIBE`r on another, `--rounds` times:
//!   the floor of any cross-server notification that goes through Redis.
//!
//! Prints one JSON line: `{"graceful":{p50_us,p99_us,max_us},"ungraceful":{...},"pubsub":{...}}`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use presence_bench::{server_ws_config, token};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

#[derive(Debug, Parser)]
struct Args {
    /// Server A (where the watched users connect).
    #[arg(long)]
    a: SocketAddr,
    /// Server B (where the watcher is).
    #[arg(long)]
    b: SocketAddr,
    /// HS256 secret of both servers.
    #[arg(long)]
    secret: String,
    /// The Redis both servers use (for the pub/sub baseline).
    #[arg(long)]
    redis_url: String,
    /// Graceful rounds (and pub/sub baseline rounds).
    #[arg(long, default_value_t = 200)]
    rounds: usize,
    /// Users that go silent at once for the ungraceful figure.
    #[arg(long, default_value_t = 20)]
    silent_users: usize,
}

type Ws = WebSocketStream<TcpStream>;

async fn open(addr: SocketAddr, secret: &str, user: &str) -> Ws {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let url = format!("ws://{addr}/v1/ws?access_token={}", token(secret, user));
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(server_ws_config()))
        .await
        .expect("WebSocket handshake");
    ws
}

/// Waits for a live `presence` push for `user` with `online == want`; returns when it arrived.
async fn push(watcher: &mut Ws, user: &str, want: bool) -> Instant {
    let wait = async {
        while let Some(m) = watcher.next().await {
            if let Ok(Message::Text(t)) = m {
                let v: Value = serde_json::from_str(t.as_str()).expect("JSON frame");
                if v["type"] == "presence" && v.get("id").is_none() {
                    let e = &v["users"][0];
                    if e["user"] == user && e["online"] == want {
                        return Instant::now();
                    }
                }
            }
        }
        panic!("watcher's connection ended");
    };
    tokio::time::timeout(Duration::from_secs(120), wait).await.expect("push within 120 s")
}

async fn subscribe(watcher: &mut Ws, users: &[String]) {
    let frame = serde_json::json!({"type":"subscribe","id":1,"users":users}).to_string();
    watcher.send(Message::text(frame)).await.expect("send subscribe");
    loop {
        let m = watcher.next().await.expect("snapshot").expect("snapshot");
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(t.as_str()).expect("JSON frame");
            assert_eq!(v["type"], "presence", "subscribe failed: {v}");
            if v["id"] == 1 {
                return;
            }
        }
    }
}

fn summary(h: &Histogram<u64>) -> Value {
    serde_json::json!({"n":h.len(),"p50_us":h.value_at_quantile(0.5),"p99_us":h.value_at_quantile(0.99),"max_us":h.max()})
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

async fn graceful(args: &Args) -> Histogram<u64> {
    let mut watcher = open(args.b, &args.secret, "watcher").await;
    subscribe(&mut watcher, &["d0".to_owned()]).await;
    let mut h = histogram();
    for _ in 0..args.rounds {
        let mut d = open(args.a, &args.secret, "d0").await;
        push(&mut watcher, "d0", true).await;
        let t0 = Instant::now();
        d.close(None).await.expect("send close");
        let t1 = push(&mut watcher, "d0", false).await;
        h.record((t1 - t0).as_micros().max(1) as u64).expect("record");
        while let Some(Ok(_)) = d.next().await {}
    }
    h
}

async fn ungraceful(args: &Args) -> Histogram<u64> {
    let users: Vec<String> = (0..args.silent_users).map(|i| format!("s{i}")).collect();
    let mut watcher = open(args.b, &args.secret, "watcher-silent").await;
    subscribe(&mut watcher, &users).await;
    let mut held = Vec::new();
    for u in &users {
        held.push(open(args.a, &args.secret, u).await);
        push(&mut watcher, u, true).await;
    }
    // From here nobody polls `held`: no reads (so no pong), no writes, no FIN.
    let silent = Instant::now();
    let mut h = histogram();
    let mut left: Vec<String> = users.clone();
    let deadline = tokio::time::sleep(Duration::from_secs(300));
    tokio::pin!(deadline);
    while !left.is_empty() {
        let m = tokio::select! {
            m = watcher.next() => m,
            () = &mut deadline => panic!("ungraceful: {} users still online after 300 s", left.len()),
        };
        let Some(Ok(Message::Text(t))) = m else { continue };
        let v: Value = serde_json::from_str(t.as_str()).expect("JSON frame");
        if v["type"] != "presence" || v.get("id").is_some() {
            continue;
        }
        for e in v["users"].as_array().into_iter().flatten() {
            if e["online"] == false {
                if let Some(pos) = left.iter().position(|u| e["user"] == u.as_str()) {
                    left.swap_remove(pos);
                    h.record(silent.elapsed().as_micros().max(1) as u64).expect("record");
                }
            }
        }
    }
    drop(held);
    h
}

async fn pubsub(args: &Args) -> Histogram<u64> {
    let client = redis::Client::open(args.redis_url.as_str()).expect("redis url");
    let mut publisher = client.get_multiplexed_async_connection().await.expect("redis connection");
    let mut sub = client.get_async_pubsub().await.expect("redis pubsub connection");
    sub.subscribe("bench:detect").await.expect("SUBSCRIBE");
    let mut messages = sub.on_message();
    let mut h = histogram();
    for i in 0..args.rounds {
        let t0 = Instant::now();
        let _: i64 = redis::cmd("PUBLISH")
            .arg("bench:detect")
            .arg(i)
            .query_async(&mut publisher)
            .await
            .expect("PUBLISH");
        messages.next().await.expect("message");
        h.record(t0.elapsed().as_micros().max(1) as u64).expect("record");
    }
    h
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let p = pubsub(&args).await;
    let g = graceful(&args).await;
    let u = ungraceful(&args).await;
    println!("{}", serde_json::json!({"graceful":summary(&g),"ungraceful":summary(&u),"pubsub":summary(&p)}));
}
