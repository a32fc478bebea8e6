//! The bare baseline: a tokio-tungstenite echo server with the presence server's WebSocket
//! configuration (`presence_bench::server_ws_config`), sending a WebSocket ping on each connection
//! every `--ping-interval-ms` (as the presence server probes idle connections), echoing data frames.
//! No HTTP routing, no authentication, no presence: what the WebSocket layer alone costs.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use presence_bench::server_ws_config;
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
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen).await.expect("bind");
    eprintln!("echo listening on {}", listener.local_addr().unwrap());
    let ping = Duration::from_millis(args.ping_interval_ms);
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
