//! The listener: HTTP routes and the WebSocket upgrade, on any byte stream.
//!
//! One port serves everything (`docs/OPERATIONS.md` lists the routes), unless an admin listener
//! is given: then `/readyz` and `/metrics` are served there only. Each accepted socket gets a
//! hyper HTTP/1.1 connection, bounded by the handshake timeout (a socket that does not finish a
//! request, or an upgrade, in time is dropped) and by the edge limits of [`crate::edge`]. A
//! `GET /v1/ws` with a valid token becomes a WebSocket handled by [`crate::ws`]. Every answer
//! carries `Cache-Control: no-store` (unless it sets its own) and `X-Content-Type-Options: nosniff`.
//! The code is generic over [`Listener`] so the simulation runs it over turmoil's network.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use presence_core::user::UserId;
use presence_core::TokenGrant;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use crate::auth::Auth;
use crate::clock::WallClock;
use crate::driver::{Driver, DriverConfig, DriverHandle, Stores};
use crate::edge::{self, Counts, EdgeLimits, Slot};
use crate::metrics::Metrics;
use crate::privacy::api::{self as privacy_api, PrivacyApi};
use crate::status::StatusCache;
use crate::ws::{self, WsLimits};

mod api;
use api::{dev_token, metrics, presence, privacy, readyz};

/// A source of connections: TCP in production, turmoil in the simulation.
pub trait Listener: Send + 'static {
    /// The byte stream of one connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Waits for the next connection.
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Io>> + Send;
    /// The client's IP address (for `--max-connections-per-ip`); `None` if the transport has none.
    fn peer_ip(_io: &Self::Io) -> Option<IpAddr> {
        None
    }
}

impl Listener for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;

    async fn accept(&mut self) -> io::Result<Self::Io> {
        let (stream, _) = tokio::net::TcpListener::accept(self).await?;
        // Presence frames are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    fn peer_ip(io: &Self::Io) -> Option<IpAddr> {
        // An IPv4 client of a dual-stack listener is the same client as on an IPv4 listener.
        io.peer_addr().ok().map(|a| a.ip().to_canonical())
    }
}

/// Sockets the admin listener serves at once (it is meant for loopback or a private network;
/// this only keeps a misbehaving scraper from holding descriptors).
const ADMIN_MAX_SOCKETS: usize = 64;

/// Everything the server needs besides its listener and stores.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// This server's id: the value of its entries in the registry.
    pub server_id: String,
    /// The core's tunables.
    pub core: presence_core::Config,
    /// The driver's tunables.
    pub driver: DriverConfig,
    /// Token verification.
    pub auth: Auth,
    /// Serve `POST /v1/dev/token` (dev mode only: loopback and a generated secret).
    pub dev_tokens: bool,
    /// Allowed `Origin` values; `None` = same origin only (Origin host = Host header); `*` = any.
    pub allowed_origins: Option<Vec<String>>,
    /// Time for a socket to finish its HTTP request or WebSocket upgrade.
    pub handshake_timeout: Duration,
    /// Most WebSocket connections at once; more are closed with 1013.
    pub max_connections: usize,
    /// WebSocket buffer and message limits.
    pub ws: WsLimits,
    /// Handshakes, sessions per user and connections per IP.
    pub edge: EdgeLimits,
    /// How long one snapshot of the core serves `/readyz` and `/metrics` (zero: every request
    /// takes its own, as the simulation does).
    pub status_refresh: Duration,
    /// Most ids in one user's contact list (`--max-contacts`).
    pub max_contacts: usize,
}

/// State shared by every connection's handlers.
struct Shared {
    config: ServerConfig,
    driver: DriverHandle,
    metrics: Arc<Metrics>,
    /// Open WebSocket connections (for the connection limit).
    active: AtomicUsize,
    next_conn: AtomicU64,
    /// Distinguishes this process's session ids from those of an earlier run with the same id.
    boot: String,
    /// Permits for sockets in the HTTP phase (`EdgeLimits::max_handshakes`).
    handshakes: Arc<Semaphore>,
    /// WebSocket sessions per user on this server.
    per_user: Arc<Counts<UserId>>,
    /// WebSocket connections per client address (`None`: no limit).
    per_ip: Option<Arc<Counts<IpAddr>>>,
    /// The snapshot behind `/readyz` and `/metrics`.
    status: StatusCache,
    /// `/readyz` and `/metrics` are on the public listener (no admin listener).
    public_health: bool,
    /// The privacy routes.
    privacy: PrivacyApi,
}

/// Runs the server until `shutdown` resolves, then closes every connection with 1001, records every
/// last_seen and flushes pending writes (bounded by `DriverConfig::shutdown_timeout`).
/// Returns true if everything was flushed.
pub async fn serve<L: Listener>(
    listener: L,
    config: ServerConfig,
    stores: Stores,
    clock: Arc<dyn WallClock>,
    shutdown: impl Future<Output = ()> + Send,
) -> bool {
    serve_with_admin(listener, None::<L>, config, stores, clock, shutdown).await
}

/// [`serve`], with `/readyz`, `/metrics` and `/healthz` on a second listener `admin` when given
/// (and then not on the public one: 404 there).
pub async fn serve_with_admin<L: Listener, A: Listener>(
    mut listener: L,
    mut admin: Option<A>,
    config: ServerConfig,
    stores: Stores,
    clock: Arc<dyn WallClock>,
    shutdown: impl Future<Output = ()> + Send,
) -> bool {
    let metrics = Arc::new(Metrics::default());
    let (privacy_cache, registry) = (stores.privacy.clone(), stores.registry.clone());
    let (driver, handle) = Driver::new(
        config.core.clone(),
        config.driver.clone(),
        stores,
        config.auth.clone(),
        clock,
        metrics.clone(),
    );
    let driver = tokio::spawn(driver.run());
    let boot = format!("{:08x}", rand::random::<u32>());
    let limits = config.edge.clone();
    let limits_contacts = config.max_contacts;
    let shared = Arc::new(Shared {
        status: StatusCache::new(config.status_refresh),
        config,
        driver: handle.clone(),
        metrics,
        active: AtomicUsize::new(0),
        next_conn: AtomicU64::new(0),
        boot,
        handshakes: Arc::new(Semaphore::new(limits.max_handshakes)),
        per_user: Counts::new(limits.max_sessions_per_user),
        per_ip: (limits.max_connections_per_ip > 0).then(|| Counts::new(limits.max_connections_per_ip)),
        public_health: admin.is_none(),
        privacy: PrivacyApi {
            cache: privacy_cache,
            registry,
            driver: handle.clone(),
            max_contacts: limits_contacts,
        },
    });
    let admin_sockets = Arc::new(Semaphore::new(ADMIN_MAX_SOCKETS));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            // Fixed polling order: the simulation replays runs exactly (tokio's random branch
            // choice is not seeded).
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(io) => {
                    // A socket beyond the handshake limit is closed now (dropped), before it
                    // costs more than its descriptor for this instant.
                    match shared.handshakes.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let peer = L::peer_ip(&io);
                            tokio::spawn(serve_http(shared.clone(), io, peer, permit, Side::Public));
                        }
                        Err(_) => shared.metrics.handshakes_refused.inc(),
                    }
                }
                Err(e) => {
                    // Out of file descriptors, mostly: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            accepted = accept_opt(&mut admin) => match accepted {
                Ok(io) => {
                    if let Ok(permit) = admin_sockets.clone().try_acquire_owned() {
                        tokio::spawn(serve_http(shared.clone(), io, None, permit, Side::Admin));
                    }
                }
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    drop(admin);
    handle.send(crate::driver::ToDriver::Shutdown).await;
    drop(handle);
    drop(shared);
    driver.await.unwrap_or(false)
}

/// The next connection of the admin listener, or never without one.
async fn accept_opt<A: Listener>(admin: &mut Option<A>) -> io::Result<A::Io> {
    match admin {
        Some(a) => a.accept().await,
        None => std::future::pending().await,
    }
}

/// Which listener a socket came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Everything (with `/readyz` and `/metrics` only without an admin listener).
    Public,
    /// `/readyz`, `/metrics`, `/healthz` only.
    Admin,
}

/// Serves one socket's HTTP phase. `permit` is its handshake slot: held until the connection's
/// requests are done, it was upgraded, or it was dropped at the handshake timeout.
async fn serve_http<Io: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    shared: Arc<Shared>,
    io: Io,
    peer: Option<IpAddr>,
    permit: OwnedSemaphorePermit,
    side: Side,
) {
    let svc_shared = shared.clone();
    let service = hyper::service::service_fn(move |req| route(svc_shared.clone(), req, peer, side));
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(16 * 1024)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    match tokio::time::timeout(shared.config.handshake_timeout, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(error = %e, "http connection ended with an error"),
        Err(_) => shared.metrics.handshake_timeouts.inc(),
    }
    drop(permit);
}

type Body = Full<Bytes>;

async fn route(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: Option<IpAddr>,
    side: Side,
) -> Result<Response<Body>, Infallible> {
    let mut resp = if shared.config.dev_tokens && !host_allowed_in_dev_mode(&req) {
        // DNS rebinding: a foreign page resolved to 127.0.0.1 still sends its own Host.
        shared.metrics.refused_host.inc();
        json(
            StatusCode::FORBIDDEN,
            &error_body("forbidden", "dev mode serves only Host localhost, 127.0.0.1 or [::1]"),
        )
    } else {
        match side {
            Side::Public => route_public(&shared, req, peer).await,
            Side::Admin => route_admin(&shared, &req).await,
        }
    };
    let h = resp.headers_mut();
    // Presence is personal and changes by the second: no cache may keep an answer.
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    h.entry(header::X_CONTENT_TYPE_OPTIONS).or_insert(HeaderValue::from_static("nosniff"));
    Ok(resp)
}

async fn route_public(shared: &Arc<Shared>, req: Request<Incoming>, peer: Option<IpAddr>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/v1/ws") => upgrade(shared, req, peer),
        (&Method::GET, "/v1/presence") => presence(shared, &req).await,
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") if shared.public_health => readyz(shared).await,
        (&Method::GET, "/metrics") if shared.public_health => metrics(shared).await,
        (&Method::POST, "/v1/dev/token") if shared.config.dev_tokens => dev_token(shared, req).await,
        (&Method::GET, p) if p == "/" || p.starts_with("/demo") => demo(shared, p),
        (_, p) => match privacy_api::route(p) {
            Some((whose, resource)) => privacy(shared, req, whose.map(str::to_owned), resource).await,
            None => not_found(),
        },
    }
}

async fn route_admin(shared: &Shared, req: &Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => readyz(shared).await,
        (&Method::GET, "/metrics") => metrics(shared).await,
        _ => not_found(),
    }
}

fn not_found() -> Response<Body> {
    json(StatusCode::NOT_FOUND, &error_body("not_found", "no such route"))
}

fn host_allowed_in_dev_mode(req: &Request<Incoming>) -> bool {
    req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).is_some_and(edge::is_loopback_host)
}

/// The demo page and its files (`crate::demo`); 404 for other paths under `/demo`.
fn demo(shared: &Shared, path: &str) -> Response<Body> {
    crate::demo::response(path, shared.config.dev_tokens).unwrap_or_else(not_found)
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error_body(code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({ "code": code, "message": message })
}

/// The user of a request (and when its token expires), from its bearer token or `access_token`
/// parameter; `Err` is the 401 reason.
fn authenticate(shared: &Shared, req: &Request<Incoming>) -> Result<TokenGrant, String> {
    let authz = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let verified = match Auth::token_from(authz, req.uri().query()) {
        None => Err("missing bearer token".to_owned()),
        Some(token) => shared.config.auth.verify_grant(&token).map_err(|e| e.to_string()),
    };
    if verified.is_err() {
        shared.metrics.refused_unauthorized.inc();
    }
    verified
}

fn unauthorized(reason: &str) -> Response<Body> {
    json(StatusCode::UNAUTHORIZED, &error_body("unauthorized", reason))
}

fn origin_allowed(shared: &Shared, req: &Request<Incoming>) -> bool {
    // No Origin header: not a browser; browsers always send it on WebSocket upgrades.
    let Some(origin) = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    match &shared.config.allowed_origins {
        Some(list) => list.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin)),
        None => {
            let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
            let authority = origin.split_once("://").map_or("", |(_, a)| a);
            !host.is_empty() && authority.eq_ignore_ascii_case(host)
        }
    }
}

fn header_has_token(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn upgrade(shared: &Arc<Shared>, mut req: Request<Incoming>, peer: Option<IpAddr>) -> Response<Body> {
    let grant = match authenticate(shared, &req) {
        Ok(g) => g,
        Err(reason) => return unauthorized(&reason),
    };
    if !origin_allowed(shared, &req) {
        shared.metrics.refused_origin.inc();
        return json(StatusCode::FORBIDDEN, &error_body("forbidden", "origin not allowed"));
    }
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).map(|k| k.as_bytes().to_vec());
    let version_ok = req.headers().get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13");
    let (Some(key), true, true, true) = (
        key,
        version_ok,
        header_has_token(&req, header::UPGRADE, "websocket"),
        header_has_token(&req, header::CONNECTION, "upgrade"),
    ) else {
        return json(
            StatusCode::BAD_REQUEST,
            &error_body("bad_request", "not a WebSocket version 13 upgrade"),
        );
    };
    // Both places are taken before the 101 and held by the session's task: released exactly when
    // its connection ends, however it ends.
    let ip_slot = match (&shared.per_ip, peer) {
        (Some(counts), Some(ip)) => match counts.try_acquire(&ip) {
            Some(slot) => Some(slot),
            None => {
                shared.metrics.refused_connections_per_ip.inc();
                let msg = format!(
                    "at most {} connections from one address",
                    shared.config.edge.max_connections_per_ip
                );
                return json(StatusCode::TOO_MANY_REQUESTS, &error_body("too_many_connections", &msg));
            }
        },
        _ => None,
    };
    let Some(user_slot) = shared.per_user.try_acquire(&grant.user) else {
        shared.metrics.refused_sessions_per_user.inc();
        let msg = format!(
            "at most {} sessions of one user on this server",
            shared.config.edge.max_sessions_per_user
        );
        return json(StatusCode::TOO_MANY_REQUESTS, &error_body("too_many_sessions", &msg));
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let shared = shared.clone();
    tokio::spawn(async move {
        let _slots: (Slot<UserId>, Option<Slot<IpAddr>>) = (user_slot, ip_slot);
        match on_upgrade.await {
            Ok(upgraded) => {
                let n = shared.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
                let session = format!("{}.{}.{n}", shared.config.server_id, shared.boot);
                let over = shared.active.fetch_add(1, Ordering::AcqRel) >= shared.config.max_connections;
                if over {
                    shared.metrics.refused_capacity.inc();
                } else {
                    shared.metrics.ws_accepted.inc();
                }
                let ctx = ws::ConnContext {
                    conn: presence_core::ConnId(n),
                    user: grant.user,
                    expires: grant.expires,
                    scopes: grant.scopes,
                    session: presence_core::user::SessionId::new(session),
                    driver: shared.driver.clone(),
                    metrics: shared.metrics.clone(),
                    limits: shared.config.ws.clone(),
                    ping_interval: shared.config.core.ping_interval,
                };
                // Boxed: this task lives as long as the connection, and its future would otherwise
                // keep room for the upgrade's state beside the connection's.
                Box::pin(ws::run(TokioIo::new(upgraded), ctx, over)).await;
                shared.active.fetch_sub(1, Ordering::AcqRel);
            }
            Err(e) => debug!(error = %e, "upgrade failed"),
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}
