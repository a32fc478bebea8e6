//! The command-line client behind `presence-server query` and `presence-server watch`.
//!
//! Operators poke at a running deployment without writing code. The client speaks the public API
//! like any app would:
//!
//! - `query` asks `GET /v1/presence?users=...` on the server's one port. That lookup opens no
//!   session, so asking never makes the client's own identity show as online or records a
//!   last_seen for it.
//! - `watch` opens a WebSocket session on `/v1/ws`, sends one `subscribe` and reports the snapshot
//!   and every pushed change until the server closes the connection or the caller stops it. The
//!   session is a real one: the identity it runs as shows as online while it watches. The server
//!   closes a connection whose token expired (4001), so `watch` replaces its token in band (an
//!   `auth` frame) well before that: a token it signs itself (1 h) every 30 minutes, a dev token
//!   (24 h) every hour. A token given with `--token` cannot be renewed: that `watch` ends with the
//!   server's 4001 close once the token (plus the server's leeway) expires.
//!
//! Where the token comes from, first match wins ([`TokenSource`]): a token given as is; a token
//! the client signs for its identity with the deployment's secret; or, from a dev-mode server, one
//! from its `POST /v1/dev/token`. Tokens travel in the `Authorization` header, never in a URL.
//!
//! Every failure is a [`ClientError`] with a message that says what to do and an exit code that
//! scripts can branch on ([`ClientError::exit_code`]).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use presence_core::codec;
use presence_core::frame::{ErrorCode, Frame, Limits, PresenceEntry};
use presence_core::time::UnixMillis;
use presence_core::user::UserId;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use url::Url;

use crate::auth::Auth;

/// Largest HTTP answer the client reads (a `presence` answer of 256 users is about 20 KiB).
const MAX_HTTP_BODY: usize = 1024 * 1024;
/// Lifetime of a token the client signs itself: long enough for one command, short if it leaks.
const SELF_SIGNED_TTL: Duration = Duration::from_secs(3600);
/// How often `watch` replaces a token it signs itself: at half its lifetime.
const SELF_SIGNED_REFRESH: Duration = Duration::from_secs(1800);
/// How often `watch` fetches a fresh dev token (a dev-mode server issues them for 24 h).
const DEV_TOKEN_REFRESH: Duration = Duration::from_secs(3600);

/// Why a client command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The `--url` is not a server address this client can use.
    #[error("bad --url {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A user id breaks the protocol's user id rules.
    #[error("invalid user {user:?}: {reason}")]
    InvalidUser {
        /// The id as given.
        user: String,
        /// The rule it breaks.
        reason: String,
    },
    /// No TCP connection to the server (refused, unresolvable, or no answer in time).
    #[error("cannot reach {addr}: {reason}")]
    Unreachable {
        /// `host:port`.
        addr: String,
        /// The operating system's reason.
        reason: String,
    },
    /// The server refused the token (HTTP 401).
    #[error("the server refused the token: {reason}")]
    TokenRefused {
        /// The server's reason (expired, bad signature, ...).
        reason: String,
    },
    /// No token was given and the server does not issue dev tokens.
    #[error(
        "no token: the server does not issue dev tokens (it runs with a --jwt-secret); \
         pass --token, or --jwt-secret with the deployment's secret"
    )]
    NoDevToken,
    /// The server answered with an HTTP status the client does not expect.
    #[error("the server answered HTTP {status}: {body}")]
    Http {
        /// The status code.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// The server answered a request with an `error` (a store is unavailable, a limit, ...).
    #[error("the server answered {}: {message}", .code.as_str())]
    Refused {
        /// The protocol's error code.
        code: ErrorCode,
        /// The server's detail.
        message: String,
    },
    /// The server closed the WebSocket.
    #[error("the server closed the connection ({code}{})", if .reason.is_empty() { String::new() } else { format!(": {}", .reason) })]
    Closed {
        /// The close code (1006 when the connection dropped without one).
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// No answer within `--timeout`.
    #[error("no answer from the server within {0:?}")]
    Timeout(Duration),
    /// The server sent something that is not the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The process exit code: 2 usage, 3 token refused or missing, 4 server unreachable, closed or
    /// silent, 5 the server answered with an error (e.g. `unavailable`), 1 anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::BadUrl { .. } | ClientError::InvalidUser { .. } => 2,
            ClientError::TokenRefused { .. } | ClientError::NoDevToken => 3,
            ClientError::Unreachable { .. } | ClientError::Closed { .. } | ClientError::Timeout(_) => 4,
            ClientError::Refused { .. } => 5,
            ClientError::Http { .. } | ClientError::Protocol(_) => 1,
        }
    }
}

/// Where the client gets its token.
#[derive(Clone)]
pub enum TokenSource {
    /// A token given as is.
    Given(String),
    /// Sign one for this user with the deployment's HS256 secret (and its `iss` and `aud`).
    Sign {
        /// The signer (boxed: it holds both keys and the validation rules).
        auth: Box<Auth>,
        /// The identity to sign for.
        user: UserId,
    },
    /// Ask a dev-mode server's `POST /v1/dev/token` for one for this user.
    Dev(UserId),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Given(_) => f.write_str("Given(<redacted>)"),
            TokenSource::Sign { user, .. } => write!(f, "Sign {{ user: {user}, secret: <redacted> }}"),
            TokenSource::Dev(user) => write!(f, "Dev({user})"),
        }
    }
}

/// A server to talk to and how.
#[derive(Debug, Clone)]
pub struct Client {
    /// `host:port` of the server.
    addr: String,
    /// The WebSocket endpoint (`ws://host:port/v1/ws`).
    ws_url: Url,
    token: TokenSource,
    timeout: Duration,
}

/// What `watch` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The state of every watched user when the subscription started.
    Snapshot(Vec<PresenceEntry>),
    /// A watched user went online or offline (or, while offline, got a newer last_seen).
    Change(PresenceEntry),
}

impl Client {
    /// A client for the server at `url`: `ws://host:port` or `http://host:port`, with or without
    /// the `/v1/ws` path. `timeout` bounds connecting and each request (not the wait between
    /// pushes of `watch`).
    pub fn new(url: &str, token: TokenSource, timeout: Duration) -> Result<Client, ClientError> {
        let bad = |reason: &str| ClientError::BadUrl { url: url.to_owned(), reason: reason.to_owned() };
        let parsed = Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        match parsed.scheme() {
            "ws" | "http" => {}
            "wss" | "https" => {
                return Err(bad("TLS is not supported by this client; connect to a server's own port"))
            }
            _ => return Err(bad("expected ws://host:port or http://host:port")),
        }
        if !matches!(parsed.path(), "" | "/" | "/v1/ws") {
            return Err(bad("the path must be empty or /v1/ws"));
        }
        let host = parsed.host_str().ok_or_else(|| bad("no host"))?;
        let port = parsed.port_or_known_default().ok_or_else(|| bad("no port"))?;
        let addr = format!("{host}:{port}");
        let ws_url = Url::parse(&format!("ws://{addr}/v1/ws")).map_err(|e| bad(&e.to_string()))?;
        Ok(Client { addr, ws_url, token, timeout })
    }

    /// The presence of `users` now (`GET /v1/presence`; opens no session).
    pub async fn query(&self, users: &[UserId]) -> Result<Vec<PresenceEntry>, ClientError> {
        let token = self.token().await?;
        let list: Vec<&str> = users.iter().map(UserId::as_str).collect();
        // Form-encoded: user ids may hold `+` (a space in a query string), `@` and `:`.
        let encoded: String = url::form_urlencoded::byte_serialize(list.join(",").as_bytes()).collect();
        let path = format!("/v1/presence?users={encoded}");
        let (status, body) = self.http(Method::GET, &path, Some(&token), Bytes::new()).await?;
        match status {
            StatusCode::OK => parse_users_body(&body),
            StatusCode::UNAUTHORIZED => Err(ClientError::TokenRefused { reason: error_message(&body) }),
            _ => Err(error_frame(&body).unwrap_or_else(|| http_error(status, &body))),
        }
    }

    /// Subscribes to `users` and calls `on_event` with the snapshot, then with every change, until
    /// the server closes the connection (an error) or `stop` resolves (then it says `bye`, so the
    /// session ends gracefully, and returns `Ok`).
    pub async fn watch(
        &self,
        users: &[UserId],
        stop: impl std::future::Future<Output = ()>,
        mut on_event: impl FnMut(WatchEvent),
    ) -> Result<(), ClientError> {
        let mut ws = self.connect_ws().await?;

        const ID: u64 = 1;
        let subscribe = Frame::Subscribe { id: Some(ID), users: users.to_vec() };
        ws.send(Message::text(codec::encode_json(&subscribe)))
            .await
            .map_err(|e| ClientError::Protocol(format!("sending subscribe: {e}")))?;
        // Never a hung watch: the snapshot must come within the timeout, and afterwards an
        // application ping sent after every quiet `timeout` must be answered within another, so a server that went
        // silent (no FIN: a partition, a dead host) is noticed, not waited on forever.
        let mut snapshot_seen = false;
        let mut answer_due = Some(Instant::now() + self.timeout);
        let mut next_probe = Instant::now() + self.timeout;
        let mut refresh_at = self.refresh_interval().map(|d| Instant::now() + d);
        tokio::pin!(stop);
        loop {
            let next = tokio::select! {
                // Fixed order: a stop wins over anything else that is ready.
                biased;
                () = &mut stop => {
                    // Best effort: the session ends gracefully if the server hears the bye.
                    let _ = ws.send(Message::text(codec::encode_json(&Frame::Bye))).await;
                    let _ = tokio::time::timeout(self.timeout, ws.close(None)).await;
                    return Ok(());
                }
                () = sleep_until_opt(answer_due) => return Err(ClientError::Timeout(self.timeout)),
                () = sleep_until_opt(refresh_at) => {
                    // A success is not answered; a refusal comes back as a `bad_token` error.
                    let auth = Frame::Auth { token: presence_core::frame::Token(self.token().await?) };
                    if let Err(e) = ws.send(Message::text(codec::encode_json(&auth))).await {
                        return Err(ClientError::Closed { code: 1006, reason: e.to_string() });
                    }
                    refresh_at = self.refresh_interval().map(|d| Instant::now() + d);
                    continue;
                }
                () = tokio::time::sleep_until(next_probe), if answer_due.is_none() => {
                    let ping = Message::text(codec::encode_json(&Frame::Ping { seq: None }));
                    if let Err(e) = ws.send(ping).await {
                        return Err(ClientError::Closed { code: 1006, reason: e.to_string() });
                    }
                    answer_due = Some(Instant::now() + self.timeout);
                    next_probe = Instant::now() + self.timeout;
                    continue;
                }
                next = ws.next() => next,
            };
            let msg = match next {
                None => return Err(ClientError::Closed { code: 1006, reason: String::new() }),
                Some(Err(e)) => return Err(ClientError::Closed { code: 1006, reason: e.to_string() }),
                Some(Ok(m)) => m,
            };
            let frame = match msg {
                Message::Text(t) => decode(t.as_bytes())?,
                Message::Close(c) => {
                    let (code, reason) =
                        c.map_or((1005, String::new()), |c| (u16::from(c.code), c.reason.to_string()));
                    return Err(ClientError::Closed { code, reason });
                }
                Message::Binary(_) => {
                    return Err(ClientError::Protocol("unexpected binary message".to_owned()))
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            match frame {
                Frame::Presence { id: Some(ID), users } => {
                    snapshot_seen = true;
                    answer_due = None;
                    on_event(WatchEvent::Snapshot(users));
                }
                Frame::Pong { .. } if snapshot_seen => answer_due = None,
                Frame::Pong { .. } => {}
                Frame::Presence { id: None, users } => {
                    users.into_iter().for_each(|e| on_event(WatchEvent::Change(e)))
                }
                Frame::Error { code, message, .. } => return Err(ClientError::Refused { code, message }),
                other => return Err(ClientError::Protocol(format!("unexpected frame {other:?}"))),
            }
        }
    }

    /// Opens the WebSocket with this client's token in the `Authorization` header.
    async fn connect_ws(
        &self,
    ) -> Result<
        tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
        ClientError,
    > {
        let token = self.token().await?;
        let mut request =
            self.ws_url.as_str().into_client_request().map_err(|e| ClientError::Protocol(e.to_string()))?;
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| ClientError::Protocol("the token is not a valid header value".to_owned()))?;
        request.headers_mut().insert(hyper::header::AUTHORIZATION, bearer);
        let (ws, _) = self.timed(tokio_tungstenite::connect_async(request)).await?.map_err(|e| match e {
            tungstenite::Error::Io(e) => self.unreachable(&e),
            tungstenite::Error::Http(resp) => {
                let body = resp.body().as_deref().unwrap_or_default();
                match resp.status() {
                    StatusCode::UNAUTHORIZED => ClientError::TokenRefused { reason: error_message(body) },
                    status => http_error(status, body),
                }
            }
            e => ClientError::Protocol(format!("WebSocket handshake: {e}")),
        })?;
        Ok(ws)
    }

    /// How often `watch` replaces its token in band; `None` for a token given as is (it cannot).
    fn refresh_interval(&self) -> Option<Duration> {
        match self.token {
            TokenSource::Given(_) => None,
            TokenSource::Sign { .. } => Some(SELF_SIGNED_REFRESH),
            TokenSource::Dev(_) => Some(DEV_TOKEN_REFRESH),
        }
    }

    /// The token to send, fetching or signing one if needed.
    async fn token(&self) -> Result<String, ClientError> {
        match &self.token {
            TokenSource::Given(t) => Ok(t.clone()),
            TokenSource::Sign { auth, user } => Ok(auth.issue(user, SELF_SIGNED_TTL)),
            TokenSource::Dev(user) => {
                let body = serde_json::json!({ "user": user.as_str() }).to_string();
                let (status, body) =
                    self.http(Method::POST, "/v1/dev/token", None, Bytes::from(body)).await?;
                match status {
                    StatusCode::OK => serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v.get("token")?.as_str().map(str::to_owned))
                        .ok_or_else(|| ClientError::Protocol("dev token answer without a token".to_owned())),
                    // A presence server without dev tokens answers its own `not_found` error;
                    // anything else (a proxy, another service) is reported as it is.
                    StatusCode::NOT_FOUND if error_body(&body).is_some_and(|e| e.code == "not_found") => {
                        Err(ClientError::NoDevToken)
                    }
                    _ => Err(http_error(status, &body)),
                }
            }
        }
    }

    /// One HTTP/1.1 request on a fresh connection; the answer's status and body (at most
    /// [`MAX_HTTP_BODY`]), all within the timeout.
    async fn http(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let exchange = async {
            let stream = TcpStream::connect(&self.addr).await.map_err(|e| self.unreachable(&e))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| ClientError::Protocol(format!("HTTP handshake: {e}")))?;
            let conn = tokio::spawn(conn);
            let mut req = Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, &self.addr)
                .header(hyper::header::CONTENT_TYPE, "application/json");
            if let Some(t) = token {
                req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
            }
            let req = req.body(Full::new(body)).map_err(|e| ClientError::Protocol(e.to_string()))?;
            let resp =
                sender.send_request(req).await.map_err(|e| ClientError::Protocol(format!("HTTP: {e}")))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_HTTP_BODY)
                .collect()
                .await
                .map_err(|e| ClientError::Protocol(format!("reading the answer: {e}")))?
                .to_bytes();
            conn.abort();
            Ok((status, body))
        };
        self.timed(exchange).await?
    }

    async fn timed<T>(&self, f: impl std::future::Future<Output = T>) -> Result<T, ClientError> {
        tokio::time::timeout(self.timeout, f).await.map_err(|_| ClientError::Timeout(self.timeout))
    }

    fn unreachable(&self, e: &std::io::Error) -> ClientError {
        ClientError::Unreachable { addr: self.addr.clone(), reason: e.to_string() }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Parses user ids given on the command line.
pub fn user_ids(names: &[String]) -> Result<Vec<UserId>, ClientError> {
    names
        .iter()
        .map(|n| {
            UserId::new(n).map_err(|e| ClientError::InvalidUser { user: n.clone(), reason: e.to_string() })
        })
        .collect()
}

/// `{"users":[...]}` of `GET /v1/presence`, entries as in a `presence` frame.
fn parse_users_body(body: &[u8]) -> Result<Vec<PresenceEntry>, ClientError> {
    // The entries have the frame's shape: decode them as one with the shared codec.
    let users: serde_json::Value = serde_json::from_slice(body)
        .ok()
        .and_then(|mut v: serde_json::Value| v.get_mut("users").map(serde_json::Value::take))
        .ok_or_else(|| ClientError::Protocol("presence answer without users".to_owned()))?;
    let frame = serde_json::json!({ "type": "presence", "users": users }).to_string();
    match decode(frame.as_bytes())? {
        Frame::Presence { users, .. } => Ok(users),
        other => Err(ClientError::Protocol(format!("unexpected {other:?}"))),
    }
}

fn decode(bytes: &[u8]) -> Result<Frame, ClientError> {
    codec::json::decode(bytes, &Limits::default())
        .map_err(|e| ClientError::Protocol(format!("undecodable frame: {e}")))
}

/// The server's HTTP error body, `{"code": ..., "message": ...}`.
#[derive(serde::Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

fn error_body(body: &[u8]) -> Option<ErrorBody> {
    serde_json::from_slice(body).ok()
}

/// The `message` of an error body, or the body itself.
fn error_message(body: &[u8]) -> String {
    error_body(body).map_or_else(|| snippet(body), |e| e.message)
}

/// An error body whose code is a protocol error code.
fn error_frame(body: &[u8]) -> Option<ClientError> {
    let e = error_body(body)?;
    Some(ClientError::Refused { code: ErrorCode::from_str_opt(&e.code)?, message: e.message })
}

fn http_error(status: StatusCode, body: &[u8]) -> ClientError {
    ClientError::Http { status: status.as_u16(), body: snippet(body) }
}

fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s: String = s.trim().chars().take(200).collect();
    if s.is_empty() {
        "(empty body)".to_owned()
    } else {
        s
    }
}

/// One entry for humans: `bob  online`, `carol  offline, last seen 2026-11-28 01:42:07 UTC (12 min
/// ago)`, `dave  offline, never seen`. `width` pads the user column; `now` is for the age.
pub fn format_entry(entry: &PresenceEntry, width: usize, now: UnixMillis) -> String {
    let user = entry.user.as_str();
    let state = match (entry.online, entry.last_seen) {
        (true, _) => "online".to_owned(),
        (false, None) => "offline, never seen".to_owned(),
        (false, Some(t)) => format!("offline, last seen {} ({})", human_time(t), age(now, t)),
    };
    format!("{user:<width$}  {state}")
}

/// One entry for scripts: the protocol's entry object, plus `event` for `watch`.
pub fn entry_json(entry: &PresenceEntry, event: Option<&str>) -> String {
    let mut v = serde_json::Map::new();
    if let Some(e) = event {
        v.insert("event".into(), e.into());
    }
    v.insert("user".into(), entry.user.as_str().into());
    v.insert("online".into(), entry.online.into());
    v.insert("last_seen".into(), entry.last_seen.map(|t| t.to_rfc3339()).into());
    serde_json::Value::Object(v).to_string()
}

/// `2026-11-28 01:42:07 UTC`.
pub fn human_time(t: UnixMillis) -> String {
    let s = t.to_rfc3339();
    format!("{} {} UTC", &s[..10], &s[11..19])
}

/// `just now`, `42 s ago`, `12 min ago`, `3 h 5 min ago`, `2 days ago`, `in the future`.
pub fn age(now: UnixMillis, t: UnixMillis) -> String {
    let ms = now.0 - t.0;
    if ms < -1000 {
        return "in the future".to_owned();
    }
    let s = ms.max(0) / 1000;
    match s {
        0 => "just now".to_owned(),
        1..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h {} min ago", s / 3600, s % 3600 / 60),
        _ => format!("{} days ago", s / 86_400),
    }
}
