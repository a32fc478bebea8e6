//! Simulated users: each device is a turmoil host running a real tokio-tungstenite client against a
//! server's `/v1/ws`, with a real token. Devices connect to a random server, heartbeat (app pings,
//! and automatic pongs whenever they read), query other users, and end sessions in every way a phone
//! does: `bye`, a Close frame, a dropped TCP connection, or silence without a FIN (the socket is kept
//! open and never touched again). A device that gets no answer for `CLIENT_DEAD_MS` drops the
//! connection and reconnects, usually to another server.
//!
//! In the quiet phase each device picks a final state: online (keep one healthy connection) or
//! offline (end its session and stay away).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use presence_core::close_code;
use presence_core::codec;
use presence_core::frame::{Encoding, Frame, Limits, PresenceEntry};
use presence_core::user::UserId;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::model::{Answer, Conn, ConnIx, End, Push, Shown};
use crate::rng::Rng;
use crate::world::{bounds, lock, World};

type Ws = WebSocketStream<turmoil::net::TcpStream>;

/// What a device does on the quiet phase.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Chaos,
    Online,
    Offline,
}

struct Device {
    w: Arc<World>,
    name: String,
    user: usize,
    token: String,
    rng: Rng,
    target: Target,
    /// Silent connections: kept open, never touched (dropping them would send a FIN).
    zombies: Vec<Ws>,
    next_id: u64,
}

/// A request in flight on a connection: (is_query, send time).
type Pending = BTreeMap<u64, (bool, u64)>;

/// The device host's software.
pub async fn device_main(w: Arc<World>, user: usize, index: usize) -> turmoil::Result {
    let users = w.users();
    let name = format!("{}d{index}", users[user]);
    let uid = UserId::new(&users[user]).map_err(|e| e.to_string())?;
    let token = w.auth.issue(&uid, Duration::from_secs(30 * 24 * 3600));
    let rng = Rng::new(w.subseed(0xDE1, (user * 16 + index) as u64));
    let mut d = Device { w, name, user, token, rng, target: Target::Chaos, zombies: Vec::new(), next_id: 0 };
    d.run().await;
    Ok(())
}

impl Device {
    fn now(&self) -> u64 {
        self.w.now()
    }

    fn update_target(&mut self) {
        if self.target == Target::Chaos && self.w.is_quiet() {
            self.target = if self.rng.chance(0.6) { Target::Online } else { Target::Offline };
            let t = if self.target == Target::Online { "online" } else { "offline" };
            self.w.trace(format!("{} quiet target {t}", self.name));
        }
    }

    /// No new connections this close to the end: the final state must settle.
    fn may_connect(&self) -> bool {
        let p = &self.w.params;
        !self.w.is_over() && self.now() + 8_000 < p.chaos_ms + p.quiet_ms
    }

    async fn run(&mut self) {
        loop {
            self.update_target();
            let idle = match self.target {
                Target::Online => self.rng.range(50, 400),
                _ => self.rng.range(200, 4_000),
            };
            tokio::time::sleep(Duration::from_millis(idle)).await;
            self.update_target();
            if self.target == Target::Offline || !self.may_connect() {
                if self.w.is_over() {
                    std::future::pending::<()>().await;
                }
                continue;
            }
            let server = self.rng.pick(self.w.params.servers);
            self.session(server).await;
        }
    }

    fn conn_mut<R>(&self, c: ConnIx, f: impl FnOnce(&mut Conn) -> R) -> R {
        f(&mut lock(&self.w.model).conns[c])
    }

    fn end(&self, c: ConnIx, how: End) {
        let t = self.now();
        self.conn_mut(c, |conn| {
            if conn.end.is_none() {
                conn.end = Some((how, t));
            }
        });
        self.w.trace(format!("{} c{c} end {how:?}", self.name));
    }

    async fn session(&mut self, server: usize) {
        let w = self.w.clone();
        let t0 = self.now();
        let srv = World::server_name(server);
        let c = self.new_conn(server, t0);
        w.trace(format!("{} c{c} connect {srv}", self.name));
        let token = self.token.clone();
        let connect = async move {
            let stream =
                turmoil::net::TcpStream::connect((srv.as_str(), 8080)).await.map_err(|e| e.to_string())?;
            let mut req =
                format!("ws://{srv}:8080/v1/ws").into_client_request().map_err(|e| e.to_string())?;
            let auth = format!("Bearer {token}").parse().map_err(|_| "header".to_string())?;
            req.headers_mut().insert("authorization", auth);
            tokio_tungstenite::client_async(req, stream).await.map_err(|e| e.to_string())
        };
        let mut ws = match tokio::time::timeout(Duration::from_millis(2_000), connect).await {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => {
                w.trace(format!("{} c{c} handshake failed: {e}", self.name));
                self.end(c, End::HandshakeFailed);
                return;
            }
            Err(_) => {
                w.trace(format!("{} c{c} handshake timed out", self.name));
                self.end(c, End::HandshakeFailed);
                return;
            }
        };
        let t_open = self.now();
        self.conn_mut(c, |conn| {
            conn.t_open = Some(t_open);
            conn.last_touch = t_open;
            // The upgrade request reached the server: proof of life at the attempt.
            conn.last_acked_send = Some(t0);
        });
        w.trace(format!("{} c{c} open", self.name));

        let mut pending: Pending = BTreeMap::new();
        // Half the connections watch every other user (a chat list): a snapshot, then pushes.
        if self.rng.chance(0.5) && !self.subscribe(c, &mut ws, &mut pending).await {
            self.end(c, End::ServerClosed);
            return;
        }
        let lifetime = self.rng.range(1_000, 15_000);
        let end_at = t_open + lifetime;
        let mut next_act = t_open + self.rng.range(100, 1_000);
        loop {
            self.update_target();
            let now = self.now();
            self.conn_mut(c, |conn| conn.last_touch = now);
            if let Some((_, (_, sent))) = pending.iter().min_by_key(|(_, (_, s))| *s) {
                if now.saturating_sub(*sent) >= bounds::CLIENT_DEAD_MS {
                    w.trace(format!("{} c{c} no answer for {} ms: dropping", self.name, now - sent));
                    self.end(c, End::DeadDetected);
                    return;
                }
            }
            let finish = match self.target {
                Target::Offline => true,
                Target::Online => false,
                Target::Chaos => now >= end_at,
            };
            if finish {
                self.finish(c, ws, &mut pending).await;
                return;
            }
            let wait = next_act.saturating_sub(now);
            tokio::select! {
                biased;
                msg = ws.next() => {
                    if !self.on_message(c, server, msg, &mut pending) {
                        self.end(c, End::ServerClosed);
                        return;
                    }
                }
                () = tokio::time::sleep(Duration::from_millis(wait)) => {
                    next_act = self.now() + self.rng.range(300, 1_500);
                    if !self.act(c, &mut ws, &mut pending).await {
                        self.end(c, End::ServerClosed);
                        return;
                    }
                }
            }
        }
    }

    /// A new connection attempt of this device to `server` at `t0`, in the model.
    fn new_conn(&self, server: usize, t0: u64) -> ConnIx {
        let mut m = lock(&self.w.model);
        m.conns.push(Conn {
            user: self.user,
            device: self.name.clone(),
            server,
            incarnation: self.w.incarnation(server),
            t_attempt: t0,
            t_open: None,
            last_touch: t0,
            last_acked_send: None,
            end: None,
            subscribed: None,
            view: BTreeMap::new(),
        });
        m.conns.len() - 1
    }

    /// Subscribes to every other user. False if the connection failed.
    async fn subscribe(&mut self, c: ConnIx, ws: &mut Ws, pending: &mut Pending) -> bool {
        self.next_id += 1;
        let id = self.next_id;
        let users: Vec<UserId> = self
            .w
            .users()
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != self.user)
            .map(|(_, u)| UserId::new(u).expect("valid user"))
            .collect();
        self.conn_mut(c, |conn| conn.subscribed = Some(id));
        pending.insert(id, (true, self.now()));
        self.w.trace(format!("{} c{c} send #{id} subscribe", self.name));
        let text = codec::encode_json(&Frame::Subscribe { id: Some(id), users });
        matches!(
            tokio::time::timeout(Duration::from_millis(1_000), ws.send(Message::text(text))).await,
            Ok(Ok(()))
        )
    }

    /// Sends a ping or a query. False if the connection failed.
    async fn act(&mut self, c: ConnIx, ws: &mut Ws, pending: &mut Pending) -> bool {
        self.next_id += 1;
        let id = self.next_id;
        let users = self.w.users();
        let (frame, is_query, what) = if self.rng.chance(0.55) {
            (Frame::Ping { seq: Some(id) }, false, "ping".to_owned())
        } else {
            let mut ask = Vec::new();
            for (i, u) in users.iter().enumerate() {
                if i != self.user && self.rng.chance(0.6) {
                    ask.push(UserId::new(u).expect("valid user"));
                }
            }
            if ask.is_empty() {
                ask.push(UserId::new(&users[(self.user + 1) % users.len()]).expect("valid user"));
            }
            let names: Vec<&str> = ask.iter().map(|u| u.as_str()).collect();
            let what = format!("query {}", names.join(","));
            (Frame::Query { id: Some(id), users: ask }, true, what)
        };
        let t = self.now();
        pending.insert(id, (is_query, t));
        self.w.trace(format!("{} c{c} send #{id} {what}", self.name));
        let text = codec::encode_json(&frame);
        matches!(
            tokio::time::timeout(Duration::from_millis(1_000), ws.send(Message::text(text))).await,
            Ok(Ok(()))
        )
    }

    /// Handles what the socket gave. False if the connection is over.
    fn on_message(
        &mut self,
        c: ConnIx,
        server: usize,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
        pending: &mut Pending,
    ) -> bool {
        let text = match msg {
            Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
            Some(Ok(Message::Close(f))) => {
                let code = f.map(|f| u16::from(f.code)).unwrap_or(0);
                self.w.trace(format!("{} c{c} server close {code}", self.name));
                return false;
            }
            Some(Ok(_)) => return true,
            Some(Err(e)) => {
                self.w.trace(format!("{} c{c} error: {e}", self.name));
                return false;
            }
            None => {
                self.w.trace(format!("{} c{c} eof", self.name));
                return false;
            }
        };
        let now = self.now();
        let frame = match codec::decode(text.as_bytes(), Encoding::Json, &Limits::default()) {
            Ok(f) => f,
            Err(e) => {
                self.w.violation(format!("{} got an undecodable frame {text:?}: {e}", self.name));
                return true;
            }
        };
        let (id, answer) = match frame {
            Frame::Pong { seq } => (seq, None),
            Frame::Presence { id, users } => (id, Some(users)),
            Frame::Error { id, code, message } => {
                *lock(&self.w.model).errors.entry(code.as_str().to_owned()).or_default() += 1;
                self.w.trace(format!(
                    "{} c{c} recv #{} error {} {message}",
                    self.name,
                    id.unwrap_or(0),
                    code.as_str()
                ));
                (id, None)
            }
            other => {
                self.w.violation(format!("{} got an unexpected frame {other:?}", self.name));
                return true;
            }
        };
        if let (None, Some(entries)) = (id, &answer) {
            self.on_push(c, entries, &text);
            return true;
        }
        let Some((_, sent)) = id.and_then(|id| pending.remove(&id)) else {
            self.w.violation(format!("{} got an answer to no request: {text}", self.name));
            return true;
        };
        self.conn_mut(c, |conn| {
            conn.last_acked_send = Some(conn.last_acked_send.map_or(sent, |s| s.max(sent)));
        });
        match answer {
            None => self.w.trace(format!("{} c{c} recv #{} pong", self.name, id.unwrap_or(0))),
            Some(entries) => self.on_answer(c, server, id, sent, now, entries),
        }
        true
    }

    /// A live update for a watcher (a frame with no request id): the connection's view changes.
    fn on_push(&mut self, c: ConnIx, entries: &[PresenceEntry], text: &str) {
        let now = self.now();
        let mut m = lock(&self.w.model);
        m.pushes += 1;
        let subscribed = m.conns[c].subscribed.is_some();
        let mut traced = Vec::new();
        for e in entries {
            let Some(u) = m.user_ix(e.user.as_str()) else { continue };
            let shown = shown_of(e);
            let before = m.conns[c].view.insert(u, shown);
            m.push_log.push(Push { conn: c, t: now, user: u, shown, before });
            traced.push(trace_entry(e));
        }
        drop(m);
        if !subscribed {
            self.w.violation(format!("{} c{c} got a push without subscribing: {text}", self.name));
        }
        self.w.trace(format!("{} c{c} push {}", self.name, traced.join(" ")));
    }

    /// The answer to request `id`, sent at `sent`, received at `now`: recorded for the oracles.
    fn on_answer(
        &mut self,
        c: ConnIx,
        server: usize,
        id: Option<u64>,
        sent: u64,
        now: u64,
        entries: Vec<PresenceEntry>,
    ) {
        let mut m = lock(&self.w.model);
        let traced: Vec<String> = entries.iter().map(trace_entry).collect();
        let (mut out, mut hidden) = (Vec::new(), Vec::new());
        let snapshot = id.is_some() && m.conns[c].subscribed == id;
        for e in &entries {
            let Some(u) = m.user_ix(e.user.as_str()) else { continue };
            let shown = shown_of(e);
            match shown {
                (online, ls, None) => out.push((u, online, ls)),
                _ => hidden.push((u, shown)),
            }
            // The subscription's snapshot: what the server will push changes against.
            if snapshot {
                m.conns[c].view.insert(u, shown);
            }
        }
        // The reader's core may extrapolate past its clock's readings after a backward step, but
        // never beyond true time + the largest offset its clock ever had.
        let clock = &self.w.clocks[server];
        let reader_max_wall = clock
            .max_returned()
            .max((crate::world::EPOCH_MS + now as i64).saturating_add(clock.max_offset()));
        let answer =
            Answer { conn: c, server, t_sent: sent, t_recv: now, reader_max_wall, entries: out, hidden };
        m.answers.push(answer);
        drop(m);
        self.w.trace(format!("{} c{c} recv #{} presence {}", self.name, id.unwrap_or(0), traced.join(" ")));
    }

    /// Ends a live session in one of the ways a client does.
    async fn finish(&mut self, c: ConnIx, mut ws: Ws, pending: &mut Pending) {
        let roll = self.rng.range(0, 100);
        match roll {
            0..=44 => {
                let bye = roll < 30;
                let t_sent = self.now();
                self.w.trace(format!("{} c{c} {}", self.name, if bye { "send bye" } else { "send close" }));
                let sent = if bye {
                    ws.send(Message::text(codec::encode_json(&Frame::Bye))).await
                } else {
                    ws.close(None).await
                };
                let mut acked = false;
                if sent.is_ok() {
                    let wait = async {
                        loop {
                            match ws.next().await {
                                // The answer to our close: no code (the echo of our Close frame) or
                                // 1000 (after `bye`). A server that closed on its own (1001: the
                                // heartbeat declared the connection dead, its Close crossing ours)
                                // or just went away (EOF) never proved it read our close.
                                Some(Ok(Message::Close(f))) => {
                                    return f.is_none_or(|f| u16::from(f.code) == close_code::NORMAL)
                                }
                                None => return false,
                                Some(Ok(Message::Text(t))) => {
                                    // An answer still in flight: keep it.
                                    let msg = Some(Ok(Message::Text(t)));
                                    let server = lock(&self.w.model).conns[c].server;
                                    self.on_message(c, server, msg, pending);
                                }
                                Some(Ok(_)) => {}
                                Some(Err(_)) => return false,
                            }
                        }
                    };
                    acked = tokio::time::timeout(Duration::from_millis(1_500), wait).await.unwrap_or(false);
                }
                if acked {
                    // The server read the close: proof of life at its send time.
                    self.conn_mut(c, |conn| {
                        conn.last_acked_send = Some(conn.last_acked_send.map_or(t_sent, |s| s.max(t_sent)))
                    });
                }
                self.end(c, if acked { End::CloseAcked } else { End::CloseUnacked });
            }
            45..=64 => {
                drop(ws);
                self.end(c, End::Dropped);
            }
            _ => {
                self.zombies.push(ws);
                self.end(c, End::Silent);
            }
        }
    }
}

/// The probe host: asks every server's `/readyz` now and then (I8, and pending writes after the
/// quiet phase for I6).
pub async fn probe_main(w: Arc<World>) -> turmoil::Result {
    loop {
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        if w.is_over() {
            std::future::pending::<()>().await;
        }
        for s in 0..w.params.servers {
            let got = tokio::time::timeout(Duration::from_millis(1_000), readyz(s)).await;
            let t = w.now();
            let sample = match got {
                Ok(Ok(v)) => crate::world::Ready {
                    t,
                    server: s,
                    pending: v.get("pending_writes").and_then(|p| p.as_u64()),
                    max_pending: v.get("max_pending_writes").and_then(|p| p.as_u64()).unwrap_or(0),
                    ready: v.get("ready").and_then(|p| p.as_bool()).unwrap_or(false),
                },
                _ => crate::world::Ready { t, server: s, pending: None, max_pending: 0, ready: false },
            };
            lock(&w.readyz).push(sample);
        }
    }
}

async fn readyz(s: usize) -> Result<serde_json::Value, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let srv = World::server_name(s);
    let mut stream =
        turmoil::net::TcpStream::connect((srv.as_str(), 8080)).await.map_err(|e| e.to_string())?;
    let req = format!("GET /readyz HTTP/1.1\r\nHost: {srv}:8080\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    stream.read_to_end(&mut body).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&body);
    let json = text.split("\r\n\r\n").nth(1).ok_or("no body")?;
    serde_json::from_str(json).map_err(|e| e.to_string())
}

/// An entry as the model keeps it.
fn shown_of(e: &PresenceEntry) -> Shown {
    (e.online, e.last_seen.map(|v| v.0), e.last_seen_approx)
}

/// An entry in the trace: `user:on|off:<last_seen ms>|-`, or `user:on|off:~<bucket>` when the
/// privacy rule hid the exact last_seen.
fn trace_entry(e: &PresenceEntry) -> String {
    let state = if e.online { "on" } else { "off" };
    match (e.last_seen, e.last_seen_approx) {
        (_, Some(a)) => format!("{}:{state}:~{}", e.user.as_str(), a.as_str()),
        (ls, None) => {
            format!("{}:{state}:{}", e.user.as_str(), ls.map_or("-".to_owned(), |v| v.0.to_string()))
        }
    }
}
