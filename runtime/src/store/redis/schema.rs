//! The Redis key schema (public: operators read it with `redis-cli`; never change it).
//!
//! - `ws:{<user>}`: a hash, field = session id, value = the server id holding the session.
//!   Absent or empty = offline.
//! - `last_seen:{<user>}`: a string, RFC 3339 UTC with milliseconds, fixed width
//!   (`2024-01-15T09:42:00.000Z`), so string order is time order. Created only from a durable
//!   value (docs/STORES.md, "Cache fill").
//! - `last_seen_pending:{<user>}`: same format; session ends recorded while `last_seen:{<user>}`
//!   was absent (readers answer the maximum of both, and of DynamoDB when the cache is absent);
//!   deleted once the cache covers it.
//! - `ws_lease:{<user>}`: a hash beside `ws:{<user>}`, field = session id, value = the fencing
//!   token (decimal) of the server lease the session was registered under. Readers count a session
//!   online only while that lease is live.
//! - `read_view:{<user>}`: a string, what a reader needs of the three keys above in one value:
//!   `<token> <token>...|<last_seen>|<pending>` (the `ws_lease` tokens, then the two timestamps,
//!   each empty if absent or malformed), absent when all three are. Derived: every script that
//!   changes `ws_lease`, `last_seen` or `last_seen_pending` rewrites it last, in the same script,
//!   so it always equals their projection. Readers `MGET` it (docs/STORES.md, "Read view").
//!
//! Leases (docs/STORES.md, "Leases"; all under the `{presence}` hash tag, so one slot):
//!
//! - `leases:{presence}`: a sorted set, member = lease name `<server_id>#<token>`, score = expiry
//!   in Unix milliseconds by the Redis clock (`TIME`).
//! - `lease_renewed:{presence}`: a hash, lease name -> the holder's wall clock (Unix ms) at its
//!   last renewal: the last_seen the reaper records for the lease's sessions.
//! - `lease_claims:{presence}`: a hash, lease name -> `<claimer> <until ms>`, the reaper's claim.
//! - `lease_token:{presence}`: the token counter; never set below the Redis clock in ms, so tokens
//!   keep increasing across a restart that lost it.
//! - `sessions:{<server_id>#<token>}`: a set per lease, members `<user> <session>`: the index the
//!   reaper walks (user ids never contain a space).
//! - `presence:{<user>}`: the pub/sub channel of the user's change notices
//!   ([`crate::store::change_channel`]).
//!
//! The braces are literal Redis Cluster hash tags: the keys of one user live in the same slot, so
//! one script can touch them atomically, on a single node and on a cluster alike.

use presence_core::store::LeaseToken;
use presence_core::user::{SessionId, UserId};

/// The registry hash key of `user`: `ws:{<user>}`.
pub fn ws_key(user: &UserId) -> String {
    format!("ws:{{{user}}}")
}

/// The cached last_seen key of `user`: `last_seen:{<user>}`.
pub fn last_seen_key(user: &UserId) -> String {
    format!("last_seen:{{{user}}}")
}

/// The pending last_seen key of `user`: `last_seen_pending:{<user>}` (session ends recorded while
/// `last_seen:{<user>}` was absent).
pub fn pending_key(user: &UserId) -> String {
    format!("last_seen_pending:{{{user}}}")
}

/// The lease hash of `user`: `ws_lease:{<user>}` (session id -> lease token).
pub fn ws_lease_key(user: &UserId) -> String {
    format!("ws_lease:{{{user}}}")
}

/// The read view of `user`: `read_view:{<user>}` (derived from the lease hash and both last_seen
/// keys; see the module docs).
pub fn read_view_key(user: &UserId) -> String {
    format!("read_view:{{{user}}}")
}

/// The sorted set of leases (name -> expiry by the Redis clock).
pub const LEASES_KEY: &str = "leases:{presence}";
/// Lease name -> its holder's wall clock at its last renewal.
pub const LEASE_RENEWED_KEY: &str = "lease_renewed:{presence}";
/// Lease name -> the reaper's claim (`<claimer> <until ms>`).
pub const LEASE_CLAIMS_KEY: &str = "lease_claims:{presence}";
/// The lease token counter.
pub const LEASE_TOKEN_KEY: &str = "lease_token:{presence}";

/// The name of a server's lease: `<server_id>#<token>`.
pub fn lease_name(server_id: &str, token: LeaseToken) -> String {
    format!("{server_id}#{}", token.0)
}

/// The token of a lease name (after its last `#`).
pub(super) fn lease_token(name: &str) -> Option<LeaseToken> {
    name.rsplit_once('#')?.1.parse().ok().map(LeaseToken)
}

/// The session index of a lease: `sessions:{<lease name>}`.
pub fn lease_index_key(lease: &str) -> String {
    format!("sessions:{{{lease}}}")
}

/// A member of a lease's session index: `<user> <session>`.
pub(super) fn index_member(user: &UserId, session: &SessionId) -> String {
    format!("{user} {}", session.as_str())
}

/// A lease index member `<user> <session>`.
pub(super) fn parse_member(member: &str) -> Option<(UserId, SessionId)> {
    let (user, session) = member.split_once(' ')?;
    Some((UserId::new(user).ok()?, SessionId::new(session)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_use_hash_tags() {
        let bob = UserId::new("bob").unwrap();
        assert_eq!(ws_key(&bob), "ws:{bob}");
        assert_eq!(last_seen_key(&bob), "last_seen:{bob}");
        assert_eq!(ws_lease_key(&bob), "ws_lease:{bob}");
        let lease = lease_name("ws-1", LeaseToken(17));
        assert_eq!(lease, "ws-1#17");
        assert_eq!(lease_index_key(&lease), "sessions:{ws-1#17}");
        assert_eq!(lease_token("a#b#17"), Some(LeaseToken(17)));
        assert_eq!(parse_member("bob s-1.x.2"), Some((bob.clone(), SessionId::new("s-1.x.2"))));
        for key in [LEASES_KEY, LEASE_RENEWED_KEY, LEASE_CLAIMS_KEY, LEASE_TOKEN_KEY] {
            assert!(key.ends_with(":{presence}"));
        }
    }
}
