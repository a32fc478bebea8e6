//! The Redis host's software: a fresh, empty Redis on port 6379 of the `redis` turmoil host,
//! speaking RESP2 to the real `redis` client over turmoil TCP. Each connection reads commands,
//! runs them on the run's [`crate::redis_host::RedisState`] and writes the replies; messages
//! published to a subscribed connection are written as they come. Every command but `INFO` and
//! `CLIENT` is traced with its reply.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::redis_host::resp::{bulk, parse, show_args, Reply};
use crate::world::{lock, World};

/// The Redis host's software: a fresh, empty Redis on port 6379.
pub async fn redis_main(w: Arc<World>) -> turmoil::Result {
    let incarnation = {
        let mut st = lock(&w.redis);
        st.start();
        st.incarnation
    };
    w.trace(format!("redis start incarnation={incarnation}"));
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", 6379)).await?;
    loop {
        let (stream, addr) = listener.accept().await?;
        let peer = turmoil::reverse_lookup(addr.ip()).unwrap_or_else(|| addr.ip().to_string());
        let w = w.clone();
        tokio::spawn(async move {
            let _ = serve_conn(w, peer, stream).await;
        });
    }
}

async fn serve_conn(w: Arc<World>, peer: String, mut stream: turmoil::net::TcpStream) -> std::io::Result<()> {
    let (tx, mut pushes) = tokio::sync::mpsc::unbounded_channel();
    let conn = lock(&w.redis).open_conn(tx);
    let result = serve_loop(&w, &peer, conn, &mut stream, &mut pushes).await;
    lock(&w.redis).close_conn(conn);
    result
}

async fn serve_loop(
    w: &Arc<World>,
    peer: &str,
    conn: u64,
    stream: &mut turmoil::net::TcpStream,
    pushes: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        // Published messages and commands, in a fixed order so runs replay.
        let n = tokio::select! {
            biased;
            Some(msg) = pushes.recv() => {
                stream.write_all(&msg).await?;
                continue;
            }
            n = stream.read(&mut chunk) => n?,
        };
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut out = Vec::new();
        loop {
            match parse(&buf) {
                Ok(Some((argv, used))) => {
                    buf.drain(..used);
                    let name = String::from_utf8_lossy(&argv[0]).to_ascii_uppercase();
                    let mut st = lock(&w.redis);
                    let reply = match name.as_str() {
                        "SUBSCRIBE" | "UNSUBSCRIBE" if argv.len() >= 2 => {
                            st.subscribe_cmd(conn, name == "SUBSCRIBE", &argv[1..])
                        }
                        // RESP2 subscriber mode answers PING with `[pong, ""]`.
                        "PING" if st.subscribed(conn) => {
                            let mut o = Vec::new();
                            Reply::Array(vec![bulk("pong"), bulk("")]).write(&mut o);
                            o
                        }
                        _ => {
                            let reply = st.command(&**w, peer, &argv);
                            let mut o = Vec::new();
                            reply.write(&mut o);
                            if name != "INFO" && name != "CLIENT" {
                                w.trace(format!("redis<{peer} {} -> {}", show_args(&argv), reply.show()));
                            }
                            o
                        }
                    };
                    drop(st);
                    out.extend_from_slice(&reply);
                }
                Ok(None) => break,
                Err(()) => {
                    let _ = stream.write_all(b"-ERR Protocol error\r\n").await;
                    return Ok(());
                }
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
        }
    }
}
