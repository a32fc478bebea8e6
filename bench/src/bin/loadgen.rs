//! WebSocket load generator for the presence server (and the echo baseline).
//!
//! Opens `--connections` authenticated WebSocket connections from one source address (bind before
//! connect, so several processes on 127.0.0.2, 127.0.0.3, ... get past loopback's ~28k ephemeral
//! ports per source address), keeps them alive (reading answers the server's pings), optionally runs
//! batch queries or a connect/close churn loop, then holds the connections until `--hold-secs` pass
//! or the process is killed (which drops them all at once).
//!
//! Reports JSON lines on stdout: `{"event":"connected",...}` once every connection is up (or failed),
//! `{"event":"query",...}` / `{"event":"churn",...}` after those phases, `{"event":"done"}` at exit.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use presence_bench::{server_ws_config, token};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

#[derive(Debug, Parser, Clone)]
struct Args {
    /// Server address.
    #[arg(long)]
    addr: SocketAddr,
    /// Local source address to bind before connecting.
    #[arg(long, default_value = "127.0.0.1")]
    source: IpAddr,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Users are `{prefix}{i}` for i in start..start+connections.
    #[arg(long, default_value = "u")]
    user_prefix: String,
    #[arg(long, default_value_t = 0)]
    user_start: usize,
    /// HS256 secret; without it no token is sent (echo baseline).
    #[arg(long, env = "BENCH_JWT_SECRET")]
    secret: Option<String>,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
    /// Paces the connect phase: at most this many handshakes started per second (0: as fast as
    /// `connect_concurrency` allows). The idle-connection benchmark opens both servers' connections
    /// at the same pace, so that their pings are spread over time the same way.
    #[arg(long, default_value_t = 0)]
    connect_rate: u64,
    /// Time limit for the connect phase.
    #[arg(long, default_value_t = 300)]
    connect_timeout_secs: u64,
    /// After the phases, hold the connections this long, then exit (a kill drops them sooner).
    #[arg(long, default_value_t = 600)]
    hold_secs: u64,
    /// Query phase: this many of the connections each run queries.
    #[arg(long, default_value_t = 0)]
    query_conns: usize,
    /// Query phase length.
    #[arg(long, default_value_t = 10)]
    query_secs: u64,
    /// Users per query: `{query_prefix}{j}` for j in 0..query_users.
    #[arg(long, default_value_t = 100)]
    query_users: usize,
    #[arg(long, default_value = "u")]
    query_prefix: String,
    /// Per connection, at least this long between the starts of two queries (the server's lookup
    /// budget is 100 users/s per connection); 0 = closed loop.
    #[arg(long, default_value_t = 1000)]
    query_interval_ms: u64,
    /// Churn phase (instead of holding connections): for this long, `churn_concurrency` loops each
    /// connect + handshake + close, as fast as they can.
    #[arg(long, default_value_t = 0)]
    churn_secs: u64,
    #[arg(long, default_value_t = 32)]
    churn_concurrency: usize,
}

type Ws = WebSocketStream<TcpStream>;

async fn open(args: &Args, user: &str) -> Result<Ws, String> {
    let sock = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    sock.bind(SocketAddr::new(args.source, 0)).map_err(|e| format!("bind {}: {e}", args.source))?;
    let stream = sock.connect(args.addr).await.map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let url = match &args.secret {
        Some(s) => format!("ws://{}/v1/ws?access_token={}", args.addr, token(s, user)),
        None => format!("ws://{}/v1/ws", args.addr),
    };
    let (ws, _resp) = tokio_tungstenite::client_async_with_config(url, stream, Some(server_ws_config()))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok(ws)
}

/// Reads until the connection ends (reading is what answers pings). Returns when it closes.
async fn idle(ws: &mut Ws, closed: &AtomicU64) {
    while let Some(m) = ws.next().await {
        match m {
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    closed.fetch_add(1, Ordering::Relaxed);
}

struct QueryResult {
    hist: Histogram<u64>,
    ok: u64,
    rate_limited: u64,
    other_errors: u64,
}

/// The `id` member of a server frame, found without parsing the rest.
fn frame_id(t: &str) -> Option<u64> {
    let rest = t.split(r#""id":"#).nth(1)?;
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

async fn query_loop(ws: &mut Ws, args: &Args, deadline: Instant, offset: Duration) -> QueryResult {
    // Spread the connections' first queries over one interval, so they do not all fire at once.
    tokio::time::sleep(offset).await;
    let users: Vec<String> = (0..args.query_users).map(|j| format!("{}{j}", args.query_prefix)).collect();
    let users_json = serde_json::to_string(&users).unwrap();
    let mut r = QueryResult {
        hist: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
        ok: 0,
        rate_limited: 0,
        other_errors: 0,
    };
    let mut id: u64 = 0;
    let interval = Duration::from_millis(args.query_interval_ms);
    while Instant::now() < deadline {
        let started = Instant::now();
        id += 1;
        let frame = format!(r#"{{"type":"query","id":{id},"users":{users_json}}}"#);
        if ws.send(Message::text(frame)).await.is_err() {
            r.other_errors += 1;
            break;
        }
        // Wait for the answer with this id.
        let answer = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(m) = ws.next().await {
                match m {
                    Ok(Message::Text(t)) => {
                        // Servers write `type` first, then `id` (PROTOCOL.md 2.1): read just those,
                        // so the load generator does not spend its CPU parsing 100-entry answers.
                        let t = t.as_str();
                        if frame_id(t) != Some(id) {
                            continue;
                        }
                        if t.starts_with(r#"{"type":"presence""#) {
                            return Some(Ok(()));
                        }
                        let code =
                            t.split(r#""code":""#).nth(1).and_then(|r| r.split('"').next()).unwrap_or("?");
                        return Some(Err(code.to_owned()));
                    }
                    Ok(Message::Close(_)) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
            None
        })
        .await;
        match answer {
            Ok(Some(Ok(()))) => {
                r.ok += 1;
                let _ = r.hist.record(started.elapsed().as_micros().max(1) as u64);
            }
            Ok(Some(Err(code))) if code == "rate_limited" => r.rate_limited += 1,
            Ok(Some(Err(_))) => r.other_errors += 1,
            Ok(None) | Err(_) => {
                r.other_errors += 1;
                break;
            }
        }
        let next = started + interval;
        if next > Instant::now() {
            tokio::time::sleep_until(next.into()).await;
        }
    }
    r
}

async fn churn(args: Arc<Args>) {
    let deadline = Instant::now() + Duration::from_secs(args.churn_secs);
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.churn_concurrency {
        let (args, done, failed) = (args.clone(), done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0usize;
            while Instant::now() < deadline {
                let user = format!("{}{}", args.user_prefix, args.user_start + w * 1_000_000 + i);
                i += 1;
                match open(&args, &user).await {
                    Ok(mut ws) => {
                        // Graceful end: Close, then wait for the peer's Close / EOF.
                        let _ = ws.close(None).await;
                        let _ = tokio::time::timeout(Duration::from_secs(5), async {
                            while let Some(Ok(_)) = ws.next().await {}
                        })
                        .await;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = started.elapsed().as_secs_f64();
    let d = done.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({"event":"churn","source":args.source.to_string(),"completed":d,"failed":failed.load(Ordering::Relaxed),"secs":secs,"per_sec":d as f64 / secs})
    );
}

#[tokio::main]
async fn main() {
    let args = Arc::new(Args::parse());
    if args.churn_secs > 0 {
        churn(args).await;
        println!("{}", serde_json::json!({"event":"done"}));
        return;
    }
    let sem = Arc::new(Semaphore::new(args.connect_concurrency));
    let closed = Arc::new(AtomicU64::new(0));
    let (conn_tx, mut conn_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let (q_tx, mut q_rx) = mpsc::unbounded_channel::<QueryResult>();
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    for i in 0..args.connections {
        let (args, sem, closed, conn_tx, q_tx, mut go_rx) =
            (args.clone(), sem.clone(), closed.clone(), conn_tx.clone(), q_tx.clone(), go_rx.clone());
        tokio::spawn(async move {
            let user = format!("{}{}", args.user_prefix, args.user_start + i);
            if args.connect_rate > 0 {
                let at = started + Duration::from_secs_f64(i as f64 / args.connect_rate as f64);
                tokio::time::sleep_until(at.into()).await;
            }
            let permit = sem.acquire_owned().await.unwrap();
            let ws = open(&args, &user).await;
            drop(permit);
            let mut ws = match ws {
                Ok(ws) => {
                    let _ = conn_tx.send(Ok(()));
                    ws
                }
                Err(e) => {
                    let _ = conn_tx.send(Err(e));
                    return;
                }
            };
            drop(conn_tx);
            if i < args.query_conns {
                // Keep answering pings until every connection is up, then query.
                loop {
                    tokio::select! {
                        r = go_rx.changed() => { if r.is_err() || *go_rx.borrow() { break; } }
                        m = ws.next() => match m { Some(Ok(Message::Close(_))) | Some(Err(_)) | None => { closed.fetch_add(1, Ordering::Relaxed); return; } _ => {} },
                    }
                }
                let deadline = Instant::now() + Duration::from_secs(args.query_secs);
                let offset = Duration::from_millis((i as u64 * 7919) % args.query_interval_ms.max(1));
                let r = query_loop(&mut ws, &args, deadline, offset).await;
                let _ = q_tx.send(r);
            }
            drop(q_tx);
            idle(&mut ws, &closed).await;
        });
    }
    drop(conn_tx);
    drop(q_tx);
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut first_error: Option<String> = None;
    let connect_deadline = tokio::time::sleep(Duration::from_secs(args.connect_timeout_secs));
    tokio::pin!(connect_deadline);
    while ok + failed < args.connections as u64 {
        tokio::select! {
            r = conn_rx.recv() => match r {
                Some(Ok(())) => ok += 1,
                Some(Err(e)) => { failed += 1; first_error.get_or_insert(e); }
                None => break,
            },
            _ = &mut connect_deadline => break,
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"event":"connected","source":args.source.to_string(),"ok":ok,"failed":failed,
            "first_error":first_error,"secs":secs,"per_sec":ok as f64 / secs.max(1e-9),
            "closed_so_far":closed.load(Ordering::Relaxed)})
    );
    if args.query_conns > 0 {
        let q_started = Instant::now();
        let _ = go_tx.send(true);
        let mut hist: Histogram<u64> = Histogram::new_with_bounds(1, 60_000_000, 3).unwrap();
        let (mut qok, mut rl, mut other, mut n) = (0u64, 0u64, 0u64, 0usize);
        let limit = tokio::time::sleep(Duration::from_secs(args.query_secs + 20));
        tokio::pin!(limit);
        while n < args.query_conns.min(ok as usize) {
            tokio::select! {
                r = q_rx.recv() => match r {
                    Some(r) => { hist.add(&r.hist).unwrap(); qok += r.ok; rl += r.rate_limited; other += r.other_errors; n += 1; }
                    None => break,
                },
                _ = &mut limit => break,
            }
        }
        let secs = q_started.elapsed().as_secs_f64().max(args.query_secs as f64);
        println!(
            "{}",
            serde_json::json!({"event":"query","source":args.source.to_string(),"conns":n,"users_per_query":args.query_users,
                "ok":qok,"rate_limited":rl,"errors":other,"secs":secs,"per_sec":qok as f64 / secs,
                "p50_us":hist.value_at_quantile(0.5),"p99_us":hist.value_at_quantile(0.99),"max_us":hist.max()})
        );
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(args.hold_secs)) => {}
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    println!("{}", serde_json::json!({"event":"done","closed_by_peer":closed.load(Ordering::Relaxed)}));
    std::process::exit(0);
}
