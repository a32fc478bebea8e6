//! The bare baseline: a tokio-tungstenite echo server with the presence server's WebSocket
//! configuration (`presence_bench::server_ws_config`), sending a WebSocket ping on each connection
//! every `--ping-interval-ms` (as the presence server probes idle connections), echoing data frames.
//! No HTTP routing, no authentication, no presence: what the WebSocket layer alone costs.
//!
//! With `--answer-queries` it answers each `query` frame as the presence server would if every
//! user were online and no store, privacy rule or core stood in between: the JSON request parsed,
//! a `presence` answer of one entry per user serialized (PROTOCOL.md, section 2). The read path's
//! ceiling on this machine: what the WebSocket and JSON work alone, with the same load generator
//! on the same cores, can answer.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use presence_bench::server_ws_config;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Ping every connection this often; 0 = never.
    #[arg(long, default_value_t = 15_000)]
    ping_interval_ms: u64,
    /// Answer `query` frames with a `presence` answer (every user online) instead of echoing.
    #[arg(long)]
    answer_queries: bool,
}

/// A `query` frame's fields that the answer needs.
#[derive(Deserialize)]
struct Query<'a> {
    id: u64,
    #[serde(borrow)]
    users: Vec<&'a str>,
}

/// A `presence` answer, fields in the server's order (`type` first, then `id`).
#[derive(Serialize)]
struct Answer<'a> {
    r#type: &'static str,
    id: u64,
    users: Vec<Entry<'a>>,
}

/// One user's entry of an answer.
#[derive(Serialize)]
struct Entry<'a> {
    user: &'a str,
    online: bool,
    last_seen: Option<&'a str>,
}

/// The answer to `text` if it is a query (ids that need JSON escapes do not occur in the bench).
fn answer(text: &str) -> Option<String> {
    let q: Query = serde_json::from_str(text).ok()?;
    let users = q.users.iter().map(|&user| Entry { user, online: true, last_seen: None }).collect();
    serde_json::to_string(&Answer { r#type: "presence", id: q.id, users }).ok()
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen).await.expect("bind");
    eprintln!("echo listening on {}", listener.local_addr().unwrap());
    let ping = Duration::from_millis(args.ping_interval_ms);
    let answer_queries = args.answer_queries;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(Ok(mut ws)) = tokio::time::timeout(
                Duration::from_secs(10),
                tokio_tungstenite::accept_async_with_config(stream, Some(server_ws_config())),
            )
            .await
            else {
                return;
            };
            let period = if ping.is_zero() { Duration::from_secs(86_400 * 365) } else { ping };
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    m = ws.next() => match m {
                        Some(Ok(Message::Text(t))) if answer_queries => {
                            let Some(a) = answer(t.as_str()) else { break };
                            if ws.send(Message::text(a)).await.is_err() { break; }
                        }
                        Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                            if ws.send(m).await.is_err() { break; }
                        }
                        Some(Ok(Message::Close(_))) => {
                            // tungstenite queued the Close reply; flush it.
                            let _ = ws.flush().await;
                            break;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break,
                    },
                    _ = tick.tick(), if !ping.is_zero() => {
                        if ws.send(Message::Ping(Default::default())).await.is_err() { break; }
                    }
                }
            }
        });
    }
}
