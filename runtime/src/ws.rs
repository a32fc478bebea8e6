//! One WebSocket connection: its socket on one side, the driver on the other.
//!
//! The task reads messages and forwards them to the driver (data frames; pongs and pings go into the
//! driver's batch of proofs of life, `crate::proofs`), writes what the driver puts in its outbox,
//! and pings the client when it has been quiet for the ping interval (the heartbeat's probe; the
//! core owns the deadline). It decides nothing about presence; it only reports how the connection
//! ended: a Close frame or EOF is graceful, an I/O error is not.
//!
//! Per-connection limits are enforced here, before anything reaches the one driver that all
//! connections share: every inbound message (data, ping and pong alike) takes a token from the
//! connection's frame bucket (`--frame-rate` / `--frame-burst`), and tungstenite refuses messages
//! over `--max-message-size` while reading them. Past either, the task closes the connection
//! itself (1008 "frame rate limit exceeded", 1009 "message too big") and tells the driver the
//! session ended for a policy breach (last_seen = now). A flooding client thus costs the driver
//! nothing beyond its allowance, and cannot queue work ahead of other clients' proofs of life.

use std::time::Duration;

use futures_util::future::Either;
use futures_util::{FutureExt, SinkExt, StreamExt};
use presence_core::frame::Encoding;
use presence_core::ratelimit::TokenBucket;
use presence_core::time::{MonoTime, UnixMillis};
use presence_core::user::{SessionId, UserId};
use presence_core::{close_code, ConnId, OutMessage};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, Instrument};

use crate::driver::{DriverHandle, Outbound, ToDriver, OUTBOX};
use crate::metrics::Metrics;
use crate::proofs;

/// Per-connection WebSocket limits.
#[derive(Debug, Clone)]
pub struct WsLimits {
    /// Largest message (and frame) accepted; larger closes with 1009.
    pub max_message_size: usize,
    /// tungstenite's read buffer (its default of 128 KiB per connection is far too much here).
    pub read_buffer_size: usize,
    /// Bytes buffered before a write is flushed.
    pub write_buffer_size: usize,
    /// Most bytes buffered for writing; past it the connection fails.
    pub max_write_buffer_size: usize,
    /// A write that cannot complete in this time (the client stopped reading) ends the connection.
    pub write_timeout: Duration,
    /// Sustained inbound messages per second (data, ping and pong); past the burst: close 1008.
    pub frame_rate: u32,
    /// Inbound message burst.
    pub frame_burst: u32,
}

impl Default for WsLimits {
    fn default() -> Self {
        WsLimits {
            max_message_size: presence_core::frame::MAX_FRAME_BYTES,
            read_buffer_size: 4 * 1024,
            write_buffer_size: 0,
            max_write_buffer_size: 128 * 1024,
            write_timeout: Duration::from_secs(10),
            frame_rate: 20,
            frame_burst: 100,
        }
    }
}

impl WsLimits {
    fn config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_size)
            .write_buffer_size(self.write_buffer_size)
            .max_write_buffer_size(self.max_write_buffer_size.max(self.write_buffer_size + 1))
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size))
    }
}

/// Who the connection is.
pub(crate) struct ConnContext {
    pub(crate) conn: ConnId,
    pub(crate) user: UserId,
    pub(crate) session: SessionId,
    /// When the token stops being valid (`presence_core::Input::Open`).
    pub(crate) expires: Option<UnixMillis>,
    /// The token's scopes (a service connection registers no session).
    pub(crate) scopes: presence_core::Scopes,
    pub(crate) driver: DriverHandle,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) limits: WsLimits,
    /// The heartbeat's probe: ping once the connection has been quiet this long
    /// (`presence_core::Config::ping_interval`; the core owns the deadline).
    pub(crate) ping_interval: Duration,
}

/// Runs the connection to its end. `refuse`: over the connection limit, close with 1013 at once.
///
/// This future, and the connection's task around it, live as long as the connection, and an
/// `async fn` is as large as all the locals its stages keep across their awaits. So it is a chain
/// of futures (`then` holds one stage at a time), and inside `serve` everything but the loop is a
/// boxed future of its own, allocated while it runs; about 4.8 KiB per idle connection before
/// (BENCHMARKS.md, idle memory).
pub(crate) fn run<Io: AsyncRead + AsyncWrite + Unpin + Send>(
    io: Io,
    ctx: ConnContext,
    refuse: bool,
) -> impl std::future::Future<Output = ()> + Send {
    let config = ctx.limits.config();
    WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).then(move |ws| {
        if refuse {
            Either::Left(refuse_conn(ws, ctx.limits))
        } else {
            let span = tracing::debug_span!("conn", id = ctx.conn.0);
            Either::Right(serve(ws, ctx).instrument(span))
        }
    })
}

async fn refuse_conn<Io: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocketStream<Io>, limits: WsLimits) {
    let _ = close(&mut ws, close_code::TRY_AGAIN_LATER, "server at connection limit", &limits).await;
}

/// Registers the connection with the driver; its outbox, or `None` if the driver has stopped.
async fn announce(ctx: &ConnContext) -> Option<futures_channel::mpsc::Receiver<Outbound>> {
    // futures' bounded channel, not tokio's: tokio's allocates a block of 32 slots up front, about
    // 1 KiB for every idle connection; this one allocates per queued message. Capacity is
    // `buffer + 1` (one per sender), so OUTBOX in all.
    let (outbox, rx) = futures_channel::mpsc::channel(OUTBOX - 1);
    let open = ToDriver::Open {
        conn: ctx.conn,
        user: ctx.user.clone(),
        session: ctx.session.clone(),
        expires: ctx.expires,
        scopes: ctx.scopes,
        outbox,
    };
    ctx.driver.send(open).await.then_some(rx)
}

async fn serve<Io: AsyncRead + AsyncWrite + Unpin + Send>(mut ws: WebSocketStream<Io>, ctx: ConnContext) {
    let conn = ctx.conn;
    // Every stage but the loop is boxed (see `run`).
    let Some(mut rx) = Box::pin(announce(&ctx)).await else {
        Box::pin(close(&mut ws, close_code::GOING_AWAY, "server shutting down", &ctx.limits)).await;
        return;
    };
    debug!("open");
    let started = tokio::time::Instant::now();
    let mut state = Inbound {
        started,
        frames: TokenBucket::full(ctx.limits.frame_burst, MonoTime::ZERO),
        proof: proofs::Slot::default(),
    };
    // The heartbeat's probe runs here, not in the driver, and its pong goes into the driver's
    // batch of proofs (crate::proofs), so a ping costs what it costs a bare echo server. One ping
    // per quiet spell: once `ping_interval` has passed since the last inbound message, and not
    // again until the client sends something. The timer is re-armed lazily, when it fires, so
    // traffic does not touch the timer wheel.
    let mut quiet_since = started;
    let mut pinged = false;
    let probe = tokio::time::sleep(ctx.ping_interval);
    tokio::pin!(probe);
    // `Some(graceful)` once the connection ended on the client's side (or by an I/O error);
    // `None` when the server closed it (the core already knows).
    let ended: Option<bool> = loop {
        let step = tokio::select! {
            // Fixed polling order, the server's own messages first (a client flooding frames
            // cannot delay its close), and the simulation replays runs exactly (tokio's random
            // branch choice is not seeded).
            biased;
            // The handlers are boxed too (allocated per event, freed at once).
            out = rx.next() => Box::pin(outbound(&mut ws, out, &ctx.limits)).await,
            () = &mut probe, if !pinged => {
                let due = quiet_since + ctx.ping_interval;
                if tokio::time::Instant::now() >= due {
                    pinged = true;
                    Box::pin(ping(&mut ws, &ctx.limits)).await
                } else {
                    probe.as_mut().reset(due);
                    Step::Continue
                }
            }
            msg = ws.next() => {
                let now = tokio::time::Instant::now();
                quiet_since = now;
                pinged = false;
                Box::pin(inbound(&mut ws, msg, &ctx, &mut state, now)).await
            }
        };
        match step {
            Step::Continue => {}
            Step::End(ended) => break ended,
            Step::Done => return,
        }
    };
    if let Some(graceful) = ended {
        debug!(graceful, "closed by client");
        Box::pin(async {
            // Tell the core first: the close time is the last_seen.
            ctx.driver.send(ToDriver::Closed { conn, graceful }).await;
            // Flush tungstenite's automatic reply to the client's Close frame, briefly.
            let _ = tokio::time::timeout(Duration::from_millis(200), ws.flush()).await;
        })
        .await;
    }
}

/// What the connection's task keeps between inbound messages.
struct Inbound {
    /// When the task started: the origin of `frames`' clock.
    started: tokio::time::Instant,
    /// The frame-rate bucket (`--frame-rate`, `--frame-burst`).
    frames: TokenBucket,
    /// This connection's place in the driver's batch of proofs of life.
    proof: proofs::Slot,
}

/// What the connection's loop does after one event.
enum Step {
    /// Keep serving.
    Continue,
    /// The loop ends: `Some(graceful)` ended by the client (or an I/O error), `None` by the server.
    End(Option<bool>),
    /// The task ends here: the connection was closed and the driver told (a policy close).
    Done,
}

/// Writes one message of the outbox (or the server's close) to the socket.
async fn outbound<Io: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<Io>,
    out: Option<Outbound>,
    limits: &WsLimits,
) -> Step {
    match out {
        Some(Outbound::Message(m)) => {
            let msg = match m {
                OutMessage::Text(t) => Message::text(t),
                OutMessage::Binary(b) => Message::binary(b),
            };
            if send(ws, msg, limits).await {
                Step::Continue
            } else {
                Step::End(Some(false))
            }
        }
        Some(Outbound::Close(code, reason)) => {
            let _ = close(ws, code, reason, limits).await;
            Step::End(None)
        }
        // The driver dropped us (too slow to read, or it stopped): it already ended the session.
        None => {
            let _ = close(ws, close_code::GOING_AWAY, "connection closed by server", limits).await;
            Step::End(None)
        }
    }
}

/// Sends the heartbeat's probe.
async fn ping<Io: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<Io>, limits: &WsLimits) -> Step {
    if send(ws, Message::Ping(Default::default()), limits).await {
        Step::Continue
    } else {
        Step::End(Some(false))
    }
}

/// Handles one message from the client: the frame rate (pings and pongs included) is checked
/// here, in the connection's own task, before anything reaches the shared driver.
async fn inbound<Io: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<Io>,
    msg: Option<Result<Message, WsError>>,
    ctx: &ConnContext,
    state: &mut Inbound,
    now: tokio::time::Instant,
) -> Step {
    let conn = ctx.conn;
    let at = MonoTime::from_nanos(u64::try_from((now - state.started).as_nanos()).unwrap_or(u64::MAX));
    let frames = &mut state.frames;
    let counted =
        matches!(msg, Some(Ok(Message::Text(_) | Message::Binary(_) | Message::Ping(_) | Message::Pong(_))));
    if counted && !frames.try_take(1, ctx.limits.frame_rate, ctx.limits.frame_burst, at) {
        ctx.metrics.frame_rate_closes.inc();
        let _ = close(ws, close_code::POLICY, "frame rate limit exceeded", &ctx.limits).await;
        ctx.driver.send(ToDriver::PolicyClosed { conn }).await;
        return Step::Done;
    }
    match msg {
        Some(Ok(Message::Text(t))) => {
            let payload = t.as_bytes().to_vec();
            ctx.driver.send(ToDriver::Message { conn, encoding: Encoding::Json, payload }).await;
        }
        Some(Ok(Message::Binary(b))) => {
            let payload = b.to_vec();
            ctx.driver.send(ToDriver::Message { conn, encoding: Encoding::Binary, payload }).await;
        }
        // tungstenite answers pings itself; both directions prove the peer is alive. Recorded
        // for the driver's next batch, not sent: no wake-up per pong (crate::proofs).
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
            ctx.driver.proof_of_life(conn, now, &mut state.proof)
        }
        Some(Ok(Message::Close(_))) | None => return Step::End(Some(true)),
        Some(Ok(Message::Frame(_))) => {}
        Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
            ctx.metrics.oversized_messages.inc();
            let _ = close(ws, close_code::TOO_BIG, "message too big", &ctx.limits).await;
            // Server-initiated for a live client: its last_seen is now.
            ctx.driver.send(ToDriver::PolicyClosed { conn }).await;
            return Step::Done;
        }
        Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => return Step::End(Some(true)),
        Some(Err(e)) => {
            debug!(error = %e, "connection failed");
            return Step::End(Some(false));
        }
    }
    Step::Continue
}

async fn send<Io: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<Io>,
    msg: Message,
    l: &WsLimits,
) -> bool {
    matches!(tokio::time::timeout(l.write_timeout, ws.send(msg)).await, Ok(Ok(())))
}

async fn close<Io: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<Io>,
    code: u16,
    reason: &'static str,
    l: &WsLimits,
) -> bool {
    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
    let ok = send(ws, Message::Close(Some(frame)), l).await;
    // Give the client a moment to answer the close (so it sees a clean close), but never wait long.
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    ok
}
