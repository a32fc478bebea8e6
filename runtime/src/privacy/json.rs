//! The JSON of the privacy API (docs/PRIVACY.md): the settings object, `{"contacts":[...]}` and
//! `{"add":[...],"remove":[...]}`, parsed and checked. The backends store settings as this same
//! JSON text, so what an operator reads in the store is what the API shows.

use std::collections::BTreeSet;

use presence_core::privacy::{LastSeenAudience, OnlineAudience, Settings, MAX_EXCEPT};
use presence_core::user::UserId;
use serde_json::{json, Map, Value};

/// Why a body was refused (HTTP 400, with this code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not the expected JSON shape (`bad_request`).
    #[error("{0}")]
    BadRequest(String),
    /// A user id that is not valid (`invalid_user`).
    #[error("{0}")]
    InvalidUser(String),
    /// Over a list limit (`too_many_users`).
    #[error("{0}")]
    TooMany(String),
}

impl BodyError {
    /// The error code of the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            BodyError::BadRequest(_) => "bad_request",
            BodyError::InvalidUser(_) => "invalid_user",
            BodyError::TooMany(_) => "too_many_users",
        }
    }
}

/// The settings object as the API answers it (every member present, `except` sorted).
pub fn settings_to_json(s: &Settings) -> Value {
    let except: Vec<&str> = s.except.iter().map(|u| u.as_str()).collect();
    json!({ "last_seen": s.last_seen.as_str(), "online": s.online.as_str(), "except": except })
}

/// A settings object from a PUT body: missing members take their defaults (`last_seen`: the
/// server's `--default-privacy`, `online`: `same_as_last_seen`, `except`: empty); unknown
/// members are refused, so a typo does not silently leave a setting at its default.
pub fn settings_from_json(v: &Value, default: LastSeenAudience) -> Result<Settings, BodyError> {
    let obj = object(v)?;
    if let Some(k) = obj.keys().find(|k| !["last_seen", "online", "except"].contains(&k.as_str())) {
        return Err(BodyError::BadRequest(format!("unknown member {k:?}")));
    }
    let mut settings = Settings::default_with(default);
    if let Some(v) = obj.get("last_seen") {
        settings.last_seen = v.as_str().and_then(LastSeenAudience::parse).ok_or_else(|| {
            BodyError::BadRequest(r#""last_seen" must be "everyone", "contacts" or "nobody""#.to_owned())
        })?;
    }
    if let Some(v) = obj.get("online") {
        settings.online = v.as_str().and_then(OnlineAudience::parse).ok_or_else(|| {
            BodyError::BadRequest(r#""online" must be "everyone" or "same_as_last_seen""#.to_owned())
        })?;
    }
    if let Some(v) = obj.get("except") {
        settings.except = user_set(v, "except", MAX_EXCEPT)?;
    }
    Ok(settings)
}

/// `{"contacts":[...]}` (a PUT body), at most `max` distinct ids.
pub fn contacts_from_json(v: &Value, max: usize) -> Result<BTreeSet<UserId>, BodyError> {
    let obj = object(v)?;
    if let Some(k) = obj.keys().find(|k| k.as_str() != "contacts") {
        return Err(BodyError::BadRequest(format!("unknown member {k:?}")));
    }
    let list =
        obj.get("contacts").ok_or_else(|| BodyError::BadRequest(r#"missing "contacts""#.to_owned()))?;
    user_set(list, "contacts", max)
}

/// `{"add":[...],"remove":[...]}` (a PATCH body; either may be missing), each at most `max`.
pub fn patch_from_json(v: &Value, max: usize) -> Result<(BTreeSet<UserId>, BTreeSet<UserId>), BodyError> {
    let obj = object(v)?;
    if let Some(k) = obj.keys().find(|k| !["add", "remove"].contains(&k.as_str())) {
        return Err(BodyError::BadRequest(format!("unknown member {k:?}")));
    }
    let get = |name: &str| obj.get(name).map_or(Ok(BTreeSet::new()), |v| user_set(v, name, max));
    Ok((get("add")?, get("remove")?))
}

/// `{"contacts":[...]}` as the API answers it.
pub fn contacts_to_json(contacts: &[UserId]) -> Value {
    json!({ "contacts": contacts.iter().map(|u| u.as_str()).collect::<Vec<_>>() })
}

fn object(v: &Value) -> Result<&Map<String, Value>, BodyError> {
    v.as_object().ok_or_else(|| BodyError::BadRequest("the body must be a JSON object".to_owned()))
}

/// An array of user ids as a set (repeats collapse), at most `max` distinct ones.
fn user_set(v: &Value, name: &str, max: usize) -> Result<BTreeSet<UserId>, BodyError> {
    let items = v.as_array().ok_or_else(|| BodyError::BadRequest(format!("{name:?} must be an array")))?;
    // Checked before parsing so a huge array costs nothing more than its bytes (already bounded).
    if items.len() > max.saturating_mul(2) {
        return Err(BodyError::TooMany(format!("{name:?} holds at most {max} users")));
    }
    let mut set = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let s =
            item.as_str().ok_or_else(|| BodyError::InvalidUser(format!("{name}[{i}] is not a string")))?;
        let user = UserId::new(s).map_err(|e| BodyError::InvalidUser(format!("{name}[{i}]: {e}")))?;
        set.insert(user);
    }
    if set.len() > max {
        return Err(BodyError::TooMany(format!("{name:?} holds at most {max} users ({} given)", set.len())));
    }
    Ok(set)
}

/// Stored settings text (the API's JSON) back to settings; `None` if it does not parse. A backend
/// reports that as `StoreError::Unavailable` (fail closed: never the defaults, which may show more).
pub fn settings_from_stored(text: &str) -> Option<Settings> {
    let v: Value = serde_json::from_str(text).ok()?;
    // Stored settings always carry every member, so the default here is never used.
    settings_from_json(&v, LastSeenAudience::Nobody).ok()
}

/// Settings as stored (the API's JSON, compact).
pub fn settings_to_stored(s: &Settings) -> String {
    settings_to_json(s).to_string()
}
