//! HS256 tokens as any client library would make them (`sub` = user id, `exp` = expiry), plus the
//! bad ones the security scenario needs. Built from the public contract, not the server's code.

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

fn sign(secret: &str, user: &str, exp: i64) -> String {
    signed(secret, &serde_json::json!({ "sub": user, "exp": exp }))
}

/// A token with exactly these claims (e.g. `nbf`, `iss`, `aud`), signed with `secret`.
pub fn signed(secret: &str, claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes()))
        .expect("HS256 signing")
}

/// Now, in seconds since the epoch (the unit of `exp` and `nbf`).
pub fn now_secs() -> i64 {
    crate::time::now_ms() / 1000
}

/// A token for `user` that expires at `exp` (Unix seconds).
pub fn with_exp(secret: &str, user: &str, exp: i64) -> String {
    sign(secret, user, exp)
}

/// A valid token for `user`, for one hour.
pub fn valid(secret: &str, user: &str) -> String {
    sign(secret, user, now_secs() + 3600)
}

/// A service token for `sub` with these space-separated scopes, for one hour.
pub fn service(secret: &str, sub: &str, scope: &str) -> String {
    signed(secret, &serde_json::json!({ "sub": sub, "exp": now_secs() + 3600, "scope": scope }))
}

/// A token that expired an hour ago (well past any leeway).
pub fn expired(secret: &str, user: &str) -> String {
    sign(secret, user, now_secs() - 3600)
}

/// A well-formed token signed with another secret.
pub fn forged(user: &str) -> String {
    sign("not-the-servers-secret", user, now_secs() + 3600)
}

/// A well-formed token signed with the empty key (what a server started with
/// `PRESENCE_JWT_SECRET=` would have accepted).
pub fn empty_key(user: &str) -> String {
    sign("", user, now_secs() + 3600)
}

/// An unsigned token (`"alg":"none"`, empty signature).
pub fn alg_none(user: &str) -> String {
    let b64 = |s: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let header = b64(r#"{"alg":"none","typ":"JWT"}"#.to_owned());
    let payload = b64(serde_json::json!({ "sub": user, "exp": now_secs() + 3600 }).to_string());
    format!("{header}.{payload}.")
}
