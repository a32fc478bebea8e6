//! Validated identifiers: user ids (public protocol) and session ids.

use std::fmt;
use std::sync::Arc;

/// Longest user id, in bytes.
pub const MAX_USER_ID_LEN: usize = 128;

/// A user id: 1 to 128 bytes of ASCII letters, digits and `_ . @ + - :`.
///
/// Cheap to clone (shared), so the core can keep it in several indexes without copying the bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(Arc<str>);

/// Why a string is not a valid [`UserId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidUserId {
    /// Zero bytes long.
    #[error("user id is empty")]
    Empty,
    /// Longer than [`MAX_USER_ID_LEN`].
    #[error("user id is longer than 128 bytes")]
    TooLong,
    /// Contains a byte outside the allowed set.
    #[error("user id may only contain ASCII letters, digits and _ . @ + - :")]
    BadChar,
}

/// Whether `b` may appear in a user id.
pub fn is_user_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'+' | b'-' | b':')
}

/// Checks `s` against the user id rules without allocating.
pub fn check_user_id(s: &[u8]) -> Result<(), InvalidUserId> {
    if s.is_empty() {
        return Err(InvalidUserId::Empty);
    }
    if s.len() > MAX_USER_ID_LEN {
        return Err(InvalidUserId::TooLong);
    }
    if !s.iter().all(|&b| is_user_id_byte(b)) {
        return Err(InvalidUserId::BadChar);
    }
    Ok(())
}

impl UserId {
    /// Validates and wraps `s`.
    pub fn new(s: &str) -> Result<UserId, InvalidUserId> {
        check_user_id(s.as_bytes())?;
        Ok(UserId(Arc::from(s)))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A session id, unique across all servers (the driver makes it, e.g. server id + counter).
///
/// It is the field name in the `ws:{user}` registry hash, so removing it can never touch another
/// session's entry.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct SessionId(pub Arc<str>);

impl SessionId {
    /// Wraps `s`.
    pub fn new(s: impl Into<Arc<str>>) -> SessionId {
        SessionId(s.into())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates() {
        assert!(UserId::new("bob").is_ok());
        assert!(UserId::new("a.b_c@d+e-f:g9").is_ok());
        assert_eq!(UserId::new(""), Err(InvalidUserId::Empty));
        assert_eq!(UserId::new("bob smith"), Err(InvalidUserId::BadChar));
        assert_eq!(UserId::new("bøb"), Err(InvalidUserId::BadChar));
        assert!(UserId::new(&"x".repeat(128)).is_ok());
        assert_eq!(UserId::new(&"x".repeat(129)), Err(InvalidUserId::TooLong));
    }
}
