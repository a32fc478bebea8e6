//! Identity at the edge: HS256 JWTs whose `sub` is the user id.
//!
//! The only way a connection gets a user is a token verified here; no frame can name its sender.
//! Tokens are never logged: errors carry only the reason.
//!
//! Checked by jsonwebtoken's [`Validation`]: the HS256 signature, `exp` (required), `nbf` (when
//! present), `sub` (required), and `iss` / `aud` when the deployment names them ([`ClaimRules`];
//! both then required). All times allow a leeway for clock differences with the issuer ([`DEFAULT_LEEWAY`], `--jwt-leeway`). A
//! token that carries an `aud` is refused by a server that names no audience (RFC 7519, 4.1.3:
//! a recipient that does not identify itself with the audience must reject it).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use presence_core::time::UnixMillis;
use presence_core::user::UserId;
use presence_core::{Scopes, TokenGrant};
use serde::{Deserialize, Serialize};

/// Shortest HS256 secret accepted, in bytes: RFC 7518, section 3.2 requires a key at least as
/// long as the hash output (256 bits). Shorter ones can be guessed offline from one token.
pub const MIN_SECRET_BYTES: usize = 32;

/// The claims the `token` subcommand (and the CLI client) writes.
#[derive(Debug, Serialize)]
struct IssuedClaims<'a> {
    sub: &'a str,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
}

/// The claims the server reads itself (the user, and `exp` for the connection's deadline); the
/// others are checked by [`Validation`].
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    /// OAuth's space-separated scopes (RFC 8693, 4.2): [`SCOPE_ADMIN`], [`SCOPE_READ_ALL`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
}

/// The scope of a service token that may read and set any user's settings and contacts.
pub const SCOPE_ADMIN: &str = "presence:admin";
/// The scope of a service token whose queries and subscriptions answer the true state.
pub const SCOPE_READ_ALL: &str = "presence:read_all";

/// The scopes of a `scope` claim. Unknown scopes are ignored (a token may carry the app's own);
/// a token with either of ours is a service token.
pub fn parse_scopes(scope: Option<&str>) -> Scopes {
    let mut s = Scopes::default();
    for word in scope.unwrap_or("").split_ascii_whitespace() {
        match word {
            SCOPE_ADMIN => s.admin = true,
            SCOPE_READ_ALL => s.read_all = true,
            _ => {}
        }
    }
    s.service = s.admin || s.read_all;
    s
}

/// The optional claims a deployment requires (`--jwt-issuer`, `--jwt-audience`). When one is
/// set, tokens must carry that claim with exactly this value; tokens issued here carry it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimRules {
    /// The required `iss`.
    pub issuer: Option<String>,
    /// The required `aud` (one of the token's audiences).
    pub audience: Option<String>,
}

/// Why a request was not authenticated (HTTP 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header and no `access_token` parameter.
    #[error("missing bearer token")]
    Missing,
    /// Expired, not yet valid, forged, malformed, wrong algorithm (including `alg: none`), without
    /// `exp`, or with the wrong (or no) `iss` or `aud`.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Signature fine but `sub` is not a valid user id.
    #[error("token subject is not a valid user id")]
    BadSubject,
}

/// Verifies and issues tokens with one shared secret.
#[derive(Clone)]
pub struct Auth {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
    rules: ClaimRules,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Auth {{ secret: <redacted>, rules: {:?} }}", self.rules)
    }
}

/// The default tolerance for clock differences between the token issuer and this server
/// (`--jwt-leeway`).
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

impl Auth {
    /// An authenticator for HS256 tokens signed with `secret`, requiring no `iss` or `aud`, with
    /// [`DEFAULT_LEEWAY`]. The length of `secret` is checked where it is configured
    /// ([`MIN_SECRET_BYTES`]).
    pub fn new(secret: &[u8]) -> Auth {
        Auth::with_rules(secret, ClaimRules::default())
    }

    /// An authenticator for HS256 tokens signed with `secret` that requires `rules`.
    pub fn with_rules(secret: &[u8], rules: ClaimRules) -> Auth {
        let mut validation = Validation::new(Algorithm::HS256);
        let mut required = vec!["exp", "sub"];
        validation.validate_nbf = true;
        if let Some(iss) = &rules.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        if let Some(aud) = &rules.audience {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        // Tolerate small clock differences between the token issuer and this server.
        validation.leeway = DEFAULT_LEEWAY.as_secs();
        Auth {
            decoding: DecodingKey::from_secret(secret),
            encoding: EncodingKey::from_secret(secret),
            validation,
            rules,
        }
    }

    /// The same authenticator accepting tokens up to `leeway` (whole seconds) past their `exp`.
    pub fn with_leeway(mut self, leeway: Duration) -> Auth {
        self.validation.leeway = leeway.as_secs();
        self
    }

    /// Verifies `token` and returns its user.
    pub fn verify(&self, token: &str) -> Result<UserId, AuthError> {
        self.verify_grant(token).map(|g| g.user)
    }

    /// Verifies `token` and returns its user and the first wall-clock instant at which this
    /// verifier would refuse it: `exp` is checked as `exp >= now - leeway` in whole seconds
    /// (`now` rounded down), so a token is accepted until `exp + leeway + 1` s. A live
    /// connection is closed (4001) at that instant.
    pub fn verify_grant(&self, token: &str) -> Result<TokenGrant, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| AuthError::Invalid(e.kind_description()))?;
        let user = UserId::new(&data.claims.sub).map_err(|_| AuthError::BadSubject)?;
        let end_secs = data.claims.exp.saturating_add(self.validation.leeway).saturating_add(1);
        let expires = i64::try_from(end_secs).ok().and_then(|s| s.checked_mul(1_000)).map(UnixMillis);
        let scopes = parse_scopes(data.claims.scope.as_deref());
        Ok(TokenGrant { user, expires, scopes })
    }

    /// Issues a token for `user`, valid for `ttl` from now, with this deployment's `iss` and `aud`.
    pub fn issue(&self, user: &UserId, ttl: Duration) -> String {
        self.issue_with_scope(user, ttl, None)
    }

    /// [`Auth::issue`] with a `scope` claim (a service token: `"presence:admin presence:read_all"`).
    pub fn issue_with_scope(&self, user: &UserId, ttl: Duration, scope: Option<&str>) -> String {
        let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default() + ttl;
        let claims = IssuedClaims {
            sub: user.as_str(),
            exp: exp.as_secs(),
            iss: self.rules.issuer.as_deref(),
            aud: self.rules.audience.as_deref(),
            scope,
        };
        // HS256 signing with an in-memory key cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).unwrap_or_default()
    }

    /// Finds the token in an `Authorization` header value or the request's query string.
    pub fn token_from<'a>(authorization: Option<&'a str>, query: Option<&'a str>) -> Option<String> {
        if let Some(v) = authorization {
            if let Some(t) = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")) {
                return Some(t.trim().to_owned());
            }
        }
        query_param(query?, "access_token")
    }
}

/// A short description of a jsonwebtoken error, without the token.
trait KindDescription {
    fn kind_description(&self) -> String;
}

impl KindDescription for jsonwebtoken::errors::Error {
    fn kind_description(&self) -> String {
        use jsonwebtoken::errors::ErrorKind;
        match self.kind() {
            ErrorKind::ExpiredSignature => "expired".into(),
            ErrorKind::ImmatureSignature => "not yet valid (nbf)".into(),
            ErrorKind::InvalidIssuer => "wrong issuer".into(),
            ErrorKind::InvalidAudience => "wrong audience".into(),
            ErrorKind::InvalidSignature => "bad signature".into(),
            ErrorKind::InvalidAlgorithm => "algorithm not allowed".into(),
            ErrorKind::MissingRequiredClaim(c) => format!("missing claim {c}"),
            _ => "malformed".into(),
        }
    }
}

/// The percent-decoded value of `name` in a query string.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// A random 256-bit secret, hex-encoded, for dev mode.
pub fn generate_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    const SECRET: &[u8] = b"unit-test-secret-of-32-bytes-min";

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    fn sign(key: &[u8], claims: serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(key)).unwrap()
    }

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn issues_and_verifies() {
        let auth = Auth::new(SECRET);
        let bob = UserId::new("bob").unwrap();
        let t = auth.issue(&bob, Duration::from_secs(60));
        assert_eq!(auth.verify(&t), Ok(bob));
    }

    #[test]
    fn refuses_forged_expired_none_and_bad_subject() {
        let auth = Auth::new(SECRET);
        let bob = UserId::new("bob").unwrap();
        let forged = Auth::new(b"another-secret-of-at-least-32-bytes").issue(&bob, Duration::from_secs(60));
        assert_eq!(auth.verify(&forged), Err(AuthError::Invalid("bad signature".into())));
        let empty_key = sign(b"", serde_json::json!({ "sub": "bob", "exp": now() + 60 }));
        assert_eq!(auth.verify(&empty_key), Err(AuthError::Invalid("bad signature".into())));

        let expired = sign(SECRET, serde_json::json!({ "sub": "bob", "exp": 1_000 }));
        assert_eq!(auth.verify(&expired), Err(AuthError::Invalid("expired".into())));

        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(r#"{"sub":"bob","exp":99999999999}"#)
        );
        assert!(matches!(auth.verify(&none), Err(AuthError::Invalid(_))));

        let bad = sign(SECRET, serde_json::json!({ "sub": "bob smith", "exp": 99_999_999_999u64 }));
        assert_eq!(auth.verify(&bad), Err(AuthError::BadSubject));
        assert!(matches!(auth.verify("garbage"), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn honours_nbf_with_the_leeway() {
        let auth = Auth::new(SECRET);
        let later = sign(SECRET, serde_json::json!({ "sub": "bob", "exp": now() + 600, "nbf": now() + 120 }));
        assert_eq!(auth.verify(&later), Err(AuthError::Invalid("not yet valid (nbf)".into())));
        let within = sign(SECRET, serde_json::json!({ "sub": "bob", "exp": now() + 600, "nbf": now() + 10 }));
        assert_eq!(auth.verify(&within).map(|u| u.as_str().to_owned()), Ok("bob".to_owned()));
    }

    #[test]
    fn requires_the_configured_issuer_and_audience() {
        let rules =
            ClaimRules { issuer: Some("https://id.example".into()), audience: Some("presence".into()) };
        let auth = Auth::with_rules(SECRET, rules);
        let exp = now() + 600;
        let claims = |iss: Option<&str>, aud: Option<serde_json::Value>| {
            let mut c = serde_json::json!({ "sub": "bob", "exp": exp });
            if let Some(iss) = iss {
                c["iss"] = iss.into();
            }
            if let Some(aud) = aud {
                c["aud"] = aud;
            }
            sign(SECRET, c)
        };
        let ok = claims(Some("https://id.example"), Some("presence".into()));
        assert!(auth.verify(&ok).is_ok());
        let several = claims(Some("https://id.example"), Some(serde_json::json!(["other", "presence"])));
        assert!(auth.verify(&several).is_ok());
        let cases = [
            (claims(Some("https://evil.example"), Some("presence".into())), "wrong issuer"),
            (claims(Some("https://id.example"), Some("other".into())), "wrong audience"),
            (claims(None, Some("presence".into())), "missing claim iss"),
            (claims(Some("https://id.example"), None), "missing claim aud"),
        ];
        for (token, why) in cases {
            assert_eq!(auth.verify(&token), Err(AuthError::Invalid(why.into())), "{why}");
        }
        // Issued tokens carry both.
        let bob = UserId::new("bob").unwrap();
        assert_eq!(auth.verify(&auth.issue(&bob, Duration::from_secs(60))), Ok(bob.clone()));
        // A server naming no audience refuses tokens meant for one (RFC 7519, 4.1.3).
        let plain = Auth::new(SECRET);
        assert_eq!(plain.verify(&ok), Err(AuthError::Invalid("wrong audience".into())));
        assert!(
            plain.verify(&claims(Some("anyone"), None)).is_ok(),
            "iss is not checked when not configured"
        );
    }

    #[test]
    fn grant_expires_when_the_verifier_would_refuse_the_token() {
        let claims = Claims { sub: "bob".into(), exp: 4_000_000_000, scope: None };
        let key = EncodingKey::from_secret(b"secret");
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
        let grant = Auth::new(b"secret").verify_grant(&token).unwrap();
        assert_eq!(grant.user, UserId::new("bob").unwrap());
        assert_eq!(grant.expires, Some(UnixMillis((4_000_000_000 + 30 + 1) * 1_000)));
        let grant = Auth::new(b"secret").with_leeway(Duration::ZERO).verify_grant(&token).unwrap();
        assert_eq!(grant.expires, Some(UnixMillis((4_000_000_000 + 1) * 1_000)));
        // Leeway zero: a token whose exp passed is refused at once.
        let claims = Claims {
            sub: "bob".into(),
            exp: SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() - 2,
            scope: None,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
        let strict = Auth::new(b"secret").with_leeway(Duration::ZERO);
        assert_eq!(strict.verify(&token), Err(AuthError::Invalid("expired".into())));
        assert!(Auth::new(b"secret").verify(&token).is_ok());
    }

    #[test]
    fn reads_the_service_scopes() {
        let auth = Auth::new(SECRET);
        let svc = UserId::new("backend").unwrap();
        let ttl = Duration::from_secs(60);
        let both = auth.issue_with_scope(&svc, ttl, Some("presence:admin openid presence:read_all"));
        let g = auth.verify_grant(&both).unwrap();
        assert_eq!(g.scopes, Scopes { service: true, read_all: true, admin: true });
        let admin = auth.verify_grant(&auth.issue_with_scope(&svc, ttl, Some("presence:admin"))).unwrap();
        assert_eq!(admin.scopes, Scopes { service: true, read_all: false, admin: true });
        // Someone else's scopes make no service token; no scope claim is a user token.
        let other = auth.verify_grant(&auth.issue_with_scope(&svc, ttl, Some("openid profile"))).unwrap();
        assert_eq!(other.scopes, Scopes::default());
        assert_eq!(auth.verify_grant(&auth.issue(&svc, ttl)).unwrap().scopes, Scopes::default());
    }

    #[test]
    fn finds_the_token() {
        assert_eq!(Auth::token_from(Some("Bearer abc"), None), Some("abc".into()));
        assert_eq!(Auth::token_from(None, Some("x=1&access_token=a%2Eb")), Some("a.b".into()));
        assert_eq!(Auth::token_from(Some("Basic xyz"), Some("y=2")), None);
    }
}
