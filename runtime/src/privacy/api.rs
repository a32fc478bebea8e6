//! The HTTP API of privacy settings and contact lists (docs/PRIVACY.md, "Setting it"):
//!
//! | route | methods | who |
//! |---|---|---|
//! | `/v1/me/privacy` | GET, PUT | the token's user |
//! | `/v1/me/contacts` | GET, PUT, PATCH | the token's user |
//! | `/v1/users/{user}/privacy` | GET, PUT | a service token with `presence:admin` |
//! | `/v1/users/{user}/contacts` | GET, PUT, PATCH | a service token with `presence:admin` |
//!
//! A change is written to the durable store first (whole or not at all: 503 `unavailable` says it
//! did not land), then this server drops what it cached of the user and re-evaluates its
//! subscriptions, and the change is announced on the change feed so every other server does the
//! same; only then is it answered. An announcement that cannot be sent (Redis down) does not undo
//! the change: other servers then apply it when their cache entries expire (`--privacy-cache-ttl`)
//! or when their feed reconnects, whichever is first.

use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, StatusCode};
use presence_core::user::UserId;
use presence_core::TokenGrant;
use serde_json::{json, Value};
use tracing::warn;

use super::json::{
    contacts_from_json, contacts_to_json, patch_from_json, settings_from_json, settings_to_json, BodyError,
};
use super::{ContactsError, PrivacyCache};
use crate::driver::{DriverHandle, ToDriver};
use crate::store::RegistryStore;

/// Largest request body accepted (413 beyond): a list of 10,000 ids of 128 bytes is ~1.4 MB.
pub(crate) const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Attempts at announcing a change before answering without it.
const ANNOUNCE_ATTEMPTS: u32 = 3;

/// What the privacy routes need.
pub(crate) struct PrivacyApi {
    pub(crate) cache: Arc<PrivacyCache>,
    pub(crate) registry: Arc<dyn RegistryStore>,
    pub(crate) driver: DriverHandle,
    pub(crate) max_contacts: usize,
}

/// Which list of a user a route names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resource {
    /// The settings object.
    Privacy,
    /// The contact list.
    Contacts,
}

/// A privacy route: whose (`None`: the token's user) and which resource; `None` if the path is
/// not one (404). The user id is checked by [`handle`].
pub(crate) fn route(path: &str) -> Option<(Option<&str>, Resource)> {
    let resource = |r: &str| match r {
        "privacy" => Some(Resource::Privacy),
        "contacts" => Some(Resource::Contacts),
        _ => None,
    };
    if let Some(r) = path.strip_prefix("/v1/me/") {
        return Some((None, resource(r)?));
    }
    let rest = path.strip_prefix("/v1/users/")?;
    let (user, r) = rest.split_once('/')?;
    Some((Some(user), resource(r)?))
}

/// An answer: status and JSON body.
pub(crate) type Answer = (StatusCode, Value);

fn error(status: StatusCode, code: &str, message: &str) -> Answer {
    (status, json!({ "code": code, "message": message }))
}

fn bad_body(e: &BodyError) -> Answer {
    error(StatusCode::BAD_REQUEST, e.code(), &e.to_string())
}

fn unavailable(e: &impl std::fmt::Display) -> Answer {
    error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &format!("not changed: {e}"))
}

/// Serves one privacy request by `grant` (already authenticated) for `whose` (`None`: the
/// token's user). `body` is the request body, at most [`MAX_BODY_BYTES`].
pub(crate) async fn handle(
    api: &PrivacyApi,
    grant: &TokenGrant,
    method: &Method,
    whose: Option<&str>,
    resource: Resource,
    body: &[u8],
) -> Answer {
    let user = match whose {
        None => grant.user.clone(),
        Some(_) if !grant.scopes.admin => {
            return error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this route needs a token with scope presence:admin",
            )
        }
        Some(name) => match UserId::new(name) {
            Ok(u) => u,
            Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_user", &format!("{name:?}: {e}")),
        },
    };
    let parse = || -> Result<Value, Answer> {
        serde_json::from_slice(body)
            .map_err(|e| error(StatusCode::BAD_REQUEST, "bad_request", &format!("invalid JSON: {e}")))
    };
    match (resource, method) {
        (Resource::Privacy, &Method::GET) => get_settings(api, user).await,
        (Resource::Privacy, &Method::PUT) => match parse() {
            Ok(v) => put_settings(api, user, &v).await,
            Err(a) => a,
        },
        (Resource::Contacts, &Method::GET) => get_contacts(api, user).await,
        (Resource::Contacts, &Method::PUT) => match parse() {
            Ok(v) => put_contacts(api, user, &v).await,
            Err(a) => a,
        },
        (Resource::Contacts, &Method::PATCH) => match parse() {
            Ok(v) => patch_contacts(api, user, &v).await,
            Err(a) => a,
        },
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "not a method of this route"),
    }
}

async fn get_settings(api: &PrivacyApi, user: UserId) -> Answer {
    match api.cache.backend().read_users(vec![user]).await {
        Ok(mut stored) => {
            let settings =
                stored.pop().and_then(|s| s.settings).unwrap_or_else(|| api.cache.default_settings());
            (StatusCode::OK, settings_to_json(&settings))
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &e.to_string()),
    }
}

async fn put_settings(api: &PrivacyApi, user: UserId, body: &Value) -> Answer {
    let settings = match settings_from_json(body, api.cache.default_settings().last_seen) {
        Ok(s) => s,
        Err(e) => return bad_body(&e),
    };
    if let Err(e) = api.cache.backend().put_settings(user.clone(), settings.clone()).await {
        return unavailable(&e);
    }
    changed(api, &user).await;
    (StatusCode::OK, settings_to_json(&settings))
}

async fn get_contacts(api: &PrivacyApi, user: UserId) -> Answer {
    match api.cache.backend().contacts(user).await {
        Ok(list) => (StatusCode::OK, contacts_to_json(&list)),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &e.to_string()),
    }
}

async fn put_contacts(api: &PrivacyApi, user: UserId, body: &Value) -> Answer {
    let contacts = match contacts_from_json(body, api.max_contacts) {
        Ok(c) => c,
        Err(e) => return bad_body(&e),
    };
    let answer: Vec<UserId> = contacts.iter().cloned().collect();
    if let Err(e) = api.cache.backend().put_contacts(user.clone(), contacts).await {
        return contacts_error(&e);
    }
    changed(api, &user).await;
    (StatusCode::OK, contacts_to_json(&answer))
}

async fn patch_contacts(api: &PrivacyApi, user: UserId, body: &Value) -> Answer {
    let (add, remove) = match patch_from_json(body, api.max_contacts) {
        Ok(p) => p,
        Err(e) => return bad_body(&e),
    };
    if let Err(e) = api.cache.backend().patch_contacts(user.clone(), add, remove, api.max_contacts).await {
        return contacts_error(&e);
    }
    changed(api, &user).await;
    get_contacts(api, user).await
}

fn contacts_error(e: &ContactsError) -> Answer {
    match e {
        ContactsError::TooMany { .. } => error(StatusCode::BAD_REQUEST, "too_many_users", &e.to_string()),
        ContactsError::Store(e) => unavailable(e),
    }
}

/// After a change landed: this server drops its cache of `user` and re-evaluates (through the
/// driver), and every other server is told.
async fn changed(api: &PrivacyApi, user: &UserId) {
    api.cache.invalidate(user);
    api.driver.send(ToDriver::PrivacyChanged(user.clone())).await;
    for attempt in 1..=ANNOUNCE_ATTEMPTS {
        match api.registry.announce_privacy(user).await {
            Ok(_) => return,
            Err(e) if attempt == ANNOUNCE_ATTEMPTS => {
                warn!(error = %e, "privacy change not announced; other servers apply it when their cache expires");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await,
        }
    }
}
