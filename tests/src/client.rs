//! A real WebSocket client (tokio-tungstenite) speaking the JSON protocol of `docs/PROTOCOL.md`.
//!
//! A background task (the "pump") owns the socket while the client is live: it reads every
//! message, which also makes tungstenite answer the server's WebSocket pings, as a real client
//! does, and it writes what the test sends. The test sees timestamped [`Event`]s.
//!
//! [`WsClient::go_silent`] stops the pump and parks the socket: nothing is read, no ping is
//! answered, nothing is sent, yet the TCP connection stays open (no FIN, no close frame). That is
//! a phone whose radio died, as the server sees it.
//!
//! The client records its last proof of life as the server sees it ([`WsClient::last_activity_ms`]):
//! the time of its last sent frame or of the last server ping it answered.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::time::{now_ms, parse_rfc3339};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How to open a connection.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// The bearer token; `None` sends none.
    pub token: Option<String>,
    /// Send the token as `?access_token=` instead of an `Authorization` header.
    pub token_in_query: bool,
    /// An `Origin` header (browsers send one).
    pub origin: Option<String>,
    /// Connect from this loopback address (e.g. 127.0.0.2) instead of the kernel's choice.
    pub source: Option<std::net::IpAddr>,
}

/// Why a connection was not opened.
#[derive(Debug)]
pub enum ConnectError {
    /// The server answered the upgrade with this HTTP status and body.
    Http(u16, String),
    /// Anything else (I/O, timeout, protocol).
    Other(String),
}

/// Something that happened on the connection.
#[derive(Debug, Clone)]
pub enum Event {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A close frame from the server: code and reason (`None`: a close frame without a code).
    Close(Option<(u16, String)>),
    /// The connection ended (after a close, at EOF or on an error); the reason.
    Ended(String),
}

/// How the server closed a connection.
#[derive(Debug, Clone)]
pub struct CloseInfo {
    /// The close code, `None` if the connection ended without a close frame with a code.
    pub code: Option<u16>,
    /// The close reason (or why the connection ended).
    pub reason: String,
    /// When the client saw it (epoch ms).
    pub at_ms: i64,
}

/// One user's entry in a `presence` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The user id.
    pub user: String,
    /// Online now.
    pub online: bool,
    /// Last seen, epoch ms (`None`: never seen).
    pub last_seen: Option<i64>,
    /// Last seen as sent (the fixed-width RFC 3339 string).
    pub last_seen_raw: Option<String>,
    /// `last_seen_approx` when present (the last seen is hidden from the asker).
    pub last_seen_approx: Option<String>,
}

impl Entry {
    /// Parses one entry of a `presence` frame's `users` array (or of `/v1/presence`).
    pub fn from_json(v: &Value) -> Entry {
        let raw = match &v["last_seen"] {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => panic!("last_seen is neither null nor a string: {other}"),
        };
        Entry {
            user: v["user"].as_str().unwrap_or_else(|| panic!("entry without user: {v}")).to_owned(),
            online: v["online"].as_bool().unwrap_or_else(|| panic!("entry without online: {v}")),
            last_seen: raw.as_deref().map(parse_rfc3339),
            last_seen_raw: raw,
            last_seen_approx: match v.get("last_seen_approx") {
                None => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => panic!("last_seen_approx is not a string: {other}"),
            },
        }
    }
}

enum Cmd {
    Send(Message, oneshot::Sender<Result<i64, String>>),
    Close(CloseFrame, oneshot::Sender<Result<i64, String>>),
    Silence,
}

/// A connected WebSocket client of one user.
pub struct WsClient {
    user: String,
    cmds: mpsc::UnboundedSender<Cmd>,
    events: mpsc::UnboundedReceiver<(i64, Event)>,
    pump: Option<JoinHandle<Option<Ws>>>,
    /// The socket of a silent client: open, never polled.
    parked: Option<Ws>,
    activity: Arc<AtomicI64>,
    next_id: u64,
}

impl WsClient {
    /// Opens `ws://addr/v1/ws` for `user` with `options`.
    pub async fn connect(
        addr: SocketAddr,
        user: &str,
        options: &ConnectOptions,
    ) -> Result<WsClient, ConnectError> {
        let mut url = format!("ws://{addr}/v1/ws");
        if let (Some(t), true) = (&options.token, options.token_in_query) {
            url.push_str(&format!("?access_token={t}"));
        }
        let mut req = url.into_client_request().map_err(|e| ConnectError::Other(e.to_string()))?;
        if let (Some(t), false) = (&options.token, options.token_in_query) {
            let v = HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|e| ConnectError::Other(e.to_string()))?;
            req.headers_mut().insert("authorization", v);
        }
        if let Some(o) = &options.origin {
            let v = HeaderValue::from_str(o).map_err(|e| ConnectError::Other(e.to_string()))?;
            req.headers_mut().insert("origin", v);
        }
        let connecting = async {
            match options.source {
                None => tokio_tungstenite::connect_async_with_config(req, None, true).await,
                Some(ip) => {
                    let socket = if ip.is_ipv4() {
                        tokio::net::TcpSocket::new_v4()
                    } else {
                        tokio::net::TcpSocket::new_v6()
                    }
                    .map_err(WsError::Io)?;
                    socket.bind(SocketAddr::new(ip, 0)).map_err(WsError::Io)?;
                    let stream = socket.connect(addr).await.map_err(WsError::Io)?;
                    let _ = stream.set_nodelay(true);
                    tokio_tungstenite::client_async_with_config(req, MaybeTlsStream::Plain(stream), None)
                        .await
                }
            }
        };
        let ws = match tokio::time::timeout(Duration::from_secs(5), connecting).await {
            Err(_) => return Err(ConnectError::Other("no handshake answer within 5 s".into())),
            Ok(Err(WsError::Http(resp))) => {
                let body = resp.body().as_deref().map(|b| String::from_utf8_lossy(b).into_owned());
                return Err(ConnectError::Http(resp.status().as_u16(), body.unwrap_or_default()));
            }
            Ok(Err(e)) => return Err(ConnectError::Other(e.to_string())),
            Ok(Ok((ws, _resp))) => ws,
        };
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let activity = Arc::new(AtomicI64::new(now_ms()));
        let pump = tokio::spawn(pump(ws, cmd_rx, ev_tx, activity.clone()));
        Ok(WsClient {
            user: user.to_owned(),
            cmds: cmd_tx,
            events: ev_rx,
            pump: Some(pump),
            parked: None,
            activity,
            next_id: 0,
        })
    }

    /// The user this connection authenticated as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The last proof of life the server can have seen from this client: its last sent frame or
    /// the last server ping it answered (epoch ms).
    pub fn last_activity_ms(&self) -> i64 {
        self.activity.load(Ordering::SeqCst)
    }

    /// The next event within `limit`, `None` on timeout or when nothing more can come.
    pub async fn next_event(&mut self, limit: Duration) -> Option<(i64, Event)> {
        tokio::time::timeout(limit, self.events.recv()).await.ok().flatten()
    }

    /// Sends a message; returns when it was handed to the socket (epoch ms), or why it failed.
    pub async fn try_send(&mut self, msg: Message) -> Result<i64, String> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(Cmd::Send(msg, tx)).map_err(|_| "connection task ended".to_owned())?;
        rx.await.map_err(|_| "connection task ended".to_owned())?
    }

    /// Sends a text message; panics if the connection is gone.
    pub async fn send_text(&mut self, text: impl Into<String>) -> i64 {
        let text = text.into();
        self.try_send(Message::text(text)).await.unwrap_or_else(|e| panic!("{}: send: {e}", self.user))
    }

    /// Sends a JSON frame.
    pub async fn send_json(&mut self, frame: Value) -> i64 {
        self.send_text(frame.to_string()).await
    }

    /// Sends a binary message.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> i64 {
        self.try_send(Message::binary(bytes)).await.unwrap_or_else(|e| panic!("{}: send: {e}", self.user))
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The next text frame within `limit`, parsed; panics on timeout, a close or a binary frame.
    pub async fn next_frame(&mut self, limit: Duration) -> Value {
        match self.next_event(limit).await {
            Some((_, Event::Text(t))) => serde_json::from_str(&t)
                .unwrap_or_else(|e| panic!("{}: server sent invalid JSON ({e}): {t}", self.user)),
            Some((_, other)) => panic!("{}: expected a text frame, got {other:?}", self.user),
            None => panic!("{}: no frame within {limit:?}", self.user),
        }
    }

    /// Waits for the text frame `matches` accepts, skipping others; panics after `limit` or on close.
    async fn frame_where(&mut self, what: &str, limit: Duration, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some((_, Event::Text(t))) => {
                    let v: Value = serde_json::from_str(&t)
                        .unwrap_or_else(|e| panic!("{}: server sent invalid JSON ({e}): {t}", self.user));
                    if matches(&v) {
                        return v;
                    }
                }
                Some((_, Event::Binary(_))) => {}
                Some((_, other)) => {
                    panic!("{}: connection ended while waiting for {what}: {other:?}", self.user)
                }
                None => panic!("{}: no {what} within {limit:?}", self.user),
            }
        }
    }

    /// Sends `{"type":"ping","seq":n}` and waits for its pong; returns the send time.
    pub async fn ping(&mut self) -> i64 {
        let seq = self.next_id();
        let sent = self.send_json(json!({"type": "ping", "seq": seq})).await;
        self.frame_where("pong", Duration::from_secs(5), |v| v["type"] == "pong" && v["seq"] == seq).await;
        sent
    }

    /// Sends a `query` for `users` and returns the answer, or the `error` frame answering it.
    pub async fn try_query(&mut self, users: &[&str]) -> Result<Vec<Entry>, Value> {
        let id = self.next_id();
        self.send_json(json!({"type": "query", "id": id, "users": users})).await;
        let v = self
            .frame_where("the answer to a query", Duration::from_secs(5), |v| {
                (v["type"] == "presence" || v["type"] == "error") && v["id"] == id
            })
            .await;
        if v["type"] == "error" {
            return Err(v);
        }
        let entries: Vec<Entry> =
            v["users"].as_array().expect("presence.users").iter().map(Entry::from_json).collect();
        let names: Vec<&str> = entries.iter().map(|e| e.user.as_str()).collect();
        assert_eq!(names, users, "presence answer lists the users asked, in order");
        Ok(entries)
    }

    /// Sends a `subscribe` for `users` and returns the snapshot, or the `error` frame answering it.
    /// (Frames before the answer are skipped: subscribe before expecting pushes.)
    pub async fn try_subscribe(&mut self, users: &[&str]) -> Result<Vec<Entry>, Value> {
        let id = self.next_id();
        self.send_json(json!({"type": "subscribe", "id": id, "users": users})).await;
        let v = self
            .frame_where("the answer to a subscribe", Duration::from_secs(5), |v| {
                (v["type"] == "presence" || v["type"] == "error") && v["id"] == id
            })
            .await;
        if v["type"] == "error" {
            return Err(v);
        }
        Ok(v["users"].as_array().expect("presence.users").iter().map(Entry::from_json).collect())
    }

    /// Subscribes to `users`; panics on an `error` answer.
    pub async fn subscribe(&mut self, users: &[&str]) -> Vec<Entry> {
        self.try_subscribe(users)
            .await
            .unwrap_or_else(|e| panic!("{}: subscribe {users:?} failed: {e}", self.user))
    }

    /// Sends an `unsubscribe` (no answer).
    pub async fn unsubscribe(&mut self, users: &[&str]) {
        self.send_json(json!({"type": "unsubscribe", "users": users})).await;
    }

    /// The next live `presence` frame (no `id`) within `limit`, with when it arrived (epoch ms);
    /// `None` if none came. Panics on any other frame or the end of the connection.
    pub async fn next_push(&mut self, limit: Duration) -> Option<(i64, Vec<Entry>)> {
        let (at, event) = self.next_event(limit).await?;
        let text = match event {
            Event::Text(t) => t,
            other => panic!("{}: expected a live presence frame, got {other:?}", self.user),
        };
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("invalid JSON ({e}): {text}"));
        assert!(
            v["type"] == "presence" && v["id"].is_null(),
            "{}: expected a live presence frame, got {v}",
            self.user
        );
        Some((at, v["users"].as_array().expect("presence.users").iter().map(Entry::from_json).collect()))
    }

    /// Queries `users`; panics on an `error` answer.
    pub async fn query(&mut self, users: &[&str]) -> Vec<Entry> {
        self.try_query(users).await.unwrap_or_else(|e| panic!("{}: query {users:?} failed: {e}", self.user))
    }

    /// Queries one user.
    pub async fn entry(&mut self, user: &str) -> Entry {
        self.query(&[user]).await.remove(0)
    }

    /// Queries `user` every 50 ms until `pred` accepts the entry; returns it and when it was seen.
    /// Panics after `limit` with the last entry.
    pub async fn wait_entry(
        &mut self,
        user: &str,
        what: &str,
        limit: Duration,
        pred: impl Fn(&Entry) -> bool,
    ) -> (Entry, i64) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let e = self.entry(user).await;
            let at = now_ms();
            if pred(&e) {
                return (e, at);
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("{}: {user} not {what} within {limit:?}; last answer {e:?}", self.user);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `user` is reported online.
    pub async fn wait_online(&mut self, user: &str) -> Entry {
        self.wait_entry(user, "online", Duration::from_secs(5), |e| e.online).await.0
    }

    /// Waits until `user` is reported offline; returns the entry and when it was first seen so.
    pub async fn wait_offline(&mut self, user: &str, limit: Duration) -> (Entry, i64) {
        self.wait_entry(user, "offline", limit, |e| !e.online).await
    }

    /// Waits for the server to close the connection (skipping any frames before it).
    pub async fn wait_close(&mut self, limit: Duration) -> CloseInfo {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some((_, Event::Text(_) | Event::Binary(_))) => {}
                Some((at, Event::Close(Some((code, reason))))) => {
                    return CloseInfo { code: Some(code), reason, at_ms: at }
                }
                Some((at, Event::Close(None))) => {
                    return CloseInfo { code: None, reason: String::new(), at_ms: at }
                }
                Some((at, Event::Ended(why))) => return CloseInfo { code: None, reason: why, at_ms: at },
                None => panic!("{}: connection not closed within {limit:?}", self.user),
            }
        }
    }

    /// Closes gracefully (close frame 1000) and waits for the server's answer. Returns the time the
    /// close frame was sent: the session's end as the server should record it.
    pub async fn close(mut self) -> i64 {
        let (tx, rx) = oneshot::channel();
        let frame = CloseFrame { code: CloseCode::Normal, reason: "bye".into() };
        self.cmds
            .send(Cmd::Close(frame, tx))
            .unwrap_or_else(|_| panic!("{}: connection task ended", self.user));
        let sent = rx.await.expect("pump answers").unwrap_or_else(|e| panic!("{}: close: {e}", self.user));
        let answer = self.wait_close(Duration::from_secs(5)).await;
        assert_eq!(
            answer.code,
            Some(1000),
            "{}: the server answers a close with 1000: {answer:?}",
            self.user
        );
        sent
    }

    /// Sends `{"type":"bye"}` and waits for the server's close (1000). Returns the send time.
    pub async fn bye(mut self) -> i64 {
        let sent = self.send_json(json!({"type": "bye"})).await;
        let answer = self.wait_close(Duration::from_secs(5)).await;
        assert_eq!(answer.code, Some(1000), "{}: bye is answered with close 1000: {answer:?}", self.user);
        sent
    }

    /// Goes silent: stops reading, answering pings and sending, but keeps the TCP connection open.
    /// Returns the last proof of life ([`WsClient::last_activity_ms`]).
    pub async fn go_silent(&mut self) -> i64 {
        let pump = self.pump.take().unwrap_or_else(|| panic!("{}: already silent", self.user));
        let _ = self.cmds.send(Cmd::Silence);
        self.parked = pump.await.expect("pump task");
        assert!(self.parked.is_some(), "{}: the connection ended before it went silent", self.user);
        self.last_activity_ms()
    }
}

impl Drop for WsClient {
    fn drop(&mut self) {
        if let Some(p) = self.pump.take() {
            p.abort();
        }
    }
}

/// Owns the socket while the client is live. Returns the socket when told to go silent.
async fn pump(
    mut ws: Ws,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    events: mpsc::UnboundedSender<(i64, Event)>,
    activity: Arc<AtomicI64>,
) -> Option<Ws> {
    let emit = |e: Event| {
        let _ = events.send((now_ms(), e));
    };
    loop {
        tokio::select! {
            // Socket first: every turn polls it, which also flushes a pong tungstenite queued in
            // answer to a ping, before a command (such as going silent) is taken.
            biased;
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => emit(Event::Text(t.as_str().to_owned())),
                Some(Ok(Message::Binary(b))) => emit(Event::Binary(b.to_vec())),
                // tungstenite queued the pong; the next turn's poll sends it, right away.
                Some(Ok(Message::Ping(_))) => {
                    activity.fetch_max(now_ms(), Ordering::SeqCst);
                }
                Some(Ok(Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(frame))) => {
                    emit(Event::Close(frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned()))));
                }
                Some(Err(WsError::ConnectionClosed)) | None => {
                    emit(Event::Ended("connection closed".into()));
                    return None;
                }
                Some(Err(e)) => {
                    emit(Event::Ended(e.to_string()));
                    return None;
                }
            },
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Send(msg, ack)) => {
                    let at = now_ms();
                    let r = ws.send(msg).await.map(|()| at).map_err(|e| e.to_string());
                    if r.is_ok() {
                        activity.fetch_max(at, Ordering::SeqCst);
                    }
                    let _ = ack.send(r);
                }
                Some(Cmd::Close(frame, ack)) => {
                    let at = now_ms();
                    let r = ws.close(Some(frame)).await.map(|()| at).map_err(|e| e.to_string());
                    let _ = ack.send(r);
                }
                Some(Cmd::Silence) => return Some(ws),
                None => return None,
            },
        }
    }
}
