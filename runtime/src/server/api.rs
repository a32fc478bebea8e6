//! The JSON endpoints: `GET /v1/presence`, the privacy routes, `/readyz`, `/metrics` and the dev
//! token. The listener, the routing and the WebSocket upgrade are in the parent module.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use presence_core::frame::{ErrorCode, PresenceEntry};
use presence_core::user::UserId;
use tracing::debug;

use super::{authenticate, error_body, json, text, unauthorized, Body, Shared};
use crate::auth::query_param;
use crate::metrics::Live;
use crate::privacy::api as privacy_api;

/// The privacy routes (`crate::privacy::api`): authenticated, body bounded (413 beyond).
pub(super) async fn privacy(
    shared: &Shared,
    req: Request<Incoming>,
    whose: Option<String>,
    resource: privacy_api::Resource,
) -> Response<Body> {
    let grant = match authenticate(shared, &req) {
        Ok(g) => g,
        Err(reason) => return unauthorized(&reason),
    };
    let method = req.method().clone();
    let body = match Limited::new(req.into_body(), privacy_api::MAX_BODY_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            let msg = format!("the body exceeds {} bytes", privacy_api::MAX_BODY_BYTES);
            return json(StatusCode::PAYLOAD_TOO_LARGE, &error_body("too_large", &msg));
        }
        Err(_) => {
            return json(StatusCode::BAD_REQUEST, &error_body("bad_request", "could not read the body"))
        }
    };
    let (status, v) =
        privacy_api::handle(&shared.privacy, &grant, &method, whose.as_deref(), resource, &body).await;
    json(status, &v)
}

/// `GET /v1/presence?users=bob,carol`: the objects of a `presence` frame, as `{"users":[...]}`.
///
/// Lookups are paid from the asking user's budget, shared with its WebSocket connections; over
/// it: 429 with `Retry-After` (whole seconds, at least 1).
pub(super) async fn presence(shared: &Shared, req: &Request<Incoming>) -> Response<Body> {
    let (asker, read_all) = match authenticate(shared, req) {
        Ok(g) => (g.user, g.scopes.read_all),
        Err(reason) => return unauthorized(&reason),
    };
    let list = req.uri().query().and_then(|q| query_param(q, "users")).unwrap_or_default();
    let names: Vec<&str> = list.split(',').filter(|s| !s.is_empty()).collect();
    let max = shared.config.core.max_query_users;
    if names.len() > max {
        let msg = format!("at most {max} users per request");
        return json(StatusCode::BAD_REQUEST, &error_body(ErrorCode::TooManyUsers.as_str(), &msg));
    }
    let mut users = Vec::with_capacity(names.len());
    for name in names {
        match UserId::new(name) {
            Ok(u) => users.push(u),
            Err(e) => {
                let msg = format!("{name:?}: {e}");
                return json(StatusCode::BAD_REQUEST, &error_body(ErrorCode::InvalidUser.as_str(), &msg));
            }
        }
    }
    match shared.driver.lookup(asker, users, read_all).await {
        Ok(entries) => json(StatusCode::OK, &serde_json::json!({ "users": entries_json(&entries) })),
        Err(e) if e.code == ErrorCode::RateLimited => {
            let mut r = json(StatusCode::TOO_MANY_REQUESTS, &error_body(e.code.as_str(), &e.message));
            let secs = retry_after_secs(e.retry_after);
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            r
        }
        Err(e) => {
            let status = if e.code == ErrorCode::Unavailable {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::BAD_REQUEST
            };
            json(status, &error_body(e.code.as_str(), &e.message))
        }
    }
}

/// `Retry-After` in whole seconds: the wait rounded up, at least 1 (also when the wait is unknown:
/// queries in flight finish within a store timeout).
fn retry_after_secs(wait: Option<Duration>) -> u64 {
    wait.map_or(1, |d| d.as_nanos().div_ceil(1_000_000_000).max(1) as u64)
}

fn entries_json(entries: &[PresenceEntry]) -> Vec<serde_json::Value> {
    entries
        .iter()
        .map(|e| {
            let mut v = serde_json::json!({
                "user": e.user.as_str(),
                "online": e.online,
                "last_seen": e.last_seen.map(|t| t.to_rfc3339()),
            });
            // Only when the last seen is hidden: other entries read exactly as before privacy.
            if let Some(a) = e.last_seen_approx {
                v["last_seen_approx"] = a.as_str().into();
            }
            v
        })
        .collect()
}

pub(super) async fn readyz(shared: &Shared) -> Response<Body> {
    let Some((s, age)) = shared.status.get(&shared.driver).await else {
        return json(StatusCode::SERVICE_UNAVAILABLE, &error_body("shutting_down", "driver stopped"));
    };
    let r = s.readiness;
    let body = serde_json::json!({
        "ready": r.is_ready(),
        "accepting": r.accepting,
        "pending_writes": r.pending_writes,
        "max_pending_writes": r.max_pending_writes,
        "registry_failing": r.registry_failing,
        "durable_failing": r.durable_failing,
        "registry_backlog": s.registry_backlog,
        "connections": s.connections,
        "snapshot_age_ms": age.as_millis() as u64,
    });
    let status = if r.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    json(status, &body)
}

pub(super) async fn metrics(shared: &Shared) -> Response<Body> {
    let Some((s, snapshot_age)) = shared.status.get(&shared.driver).await else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "driver stopped\n");
    };
    let live = Live {
        connections: shared.active.load(Ordering::Relaxed),
        handshakes: shared.config.edge.max_handshakes - shared.handshakes.available_permits(),
        snapshot_age,
    };
    let body = shared.metrics.render(&s, &live);
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    r
}

/// `POST /v1/dev/token {"user":"bob"}` -> `{"token":"..."}`. Dev mode only.
pub(super) async fn dev_token(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let Ok(body) = Limited::new(req.into_body(), 4096).collect().await else {
        return json(StatusCode::BAD_REQUEST, &error_body("bad_request", "body too large or unreadable"));
    };
    let body = body.to_bytes();
    let user = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("user").and_then(|u| u.as_str()).map(str::to_owned));
    let Some(user) = user else {
        return json(StatusCode::BAD_REQUEST, &error_body("bad_request", r#"expected {"user":"<id>"}"#));
    };
    match UserId::new(&user) {
        Ok(u) => {
            debug!("dev token issued");
            let token = shared.config.auth.issue(&u, Duration::from_secs(24 * 3600));
            json(StatusCode::OK, &serde_json::json!({ "token": token }))
        }
        Err(e) => json(StatusCode::BAD_REQUEST, &error_body(ErrorCode::InvalidUser.as_str(), &e.to_string())),
    }
}
