//! The store operations the core asks for, and what comes back.
//!
//! Two stores: the *registry* (Redis in production: the `ws:{user}` session hash and the cached
//! `last_seen:{user}`) and the *durable* store (DynamoDB's `users` table: the source of truth).
//! Every operation carries an [`EffectId`]; the driver executes it and feeds the result back with
//! `Input::StoreDone`, so retries and coalescing are decided inside the deterministic core.
//! Schema and semantics each executor must honour: `ARCHITECTURE.md` and `docs/STORES.md`.

use crate::time::UnixMillis;
use crate::user::{SessionId, UserId};

/// Identifies one store operation; results come back with the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EffectId(pub u64);

/// An operation on the registry (Redis).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryOp {
    /// `HSET ws:{user} <session> <server_id>`. Idempotent.
    Register {
        /// Whose session.
        user: UserId,
        /// The hash field.
        session: SessionId,
    },
    /// In one atomic step: `HDEL ws:{user} <session>` (only this session's field, so never another
    /// session's entry) and the max-register `last_seen:{user} = max(old, last_seen)`. Idempotent.
    /// After a registry data loss the value may be below the durable one: the core raises the cache
    /// to the durable value once the durable store answers (`SetLastSeen`).
    EndSession {
        /// Whose session.
        user: UserId,
        /// The hash field to remove.
        session: SessionId,
        /// The session's last_seen.
        last_seen: UnixMillis,
    },
    /// Max-register `last_seen:{user} = max(old, last_seen)` with a durable value: a backfill after
    /// a cache miss, the value of an applied durable write, or the durable value read back after a
    /// superseded one.
    SetLastSeen {
        /// Whose value.
        user: UserId,
        /// The value read from the durable store.
        last_seen: UnixMillis,
    },
    /// For each user, in one round trip: is `ws:{user}` non-empty, and `last_seen:{user}`.
    /// Answered with [`StoreOutput::Registry`], one entry per user, same order.
    Read {
        /// The users, at most `Config::max_query_users`.
        users: Vec<UserId>,
    },
}

/// An operation on the durable store (DynamoDB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DurableOp {
    /// Conditional max-register write: `SET last_seen = :ts IF attribute_not_exists OR last_seen < :ts`.
    /// Answered with [`StoreOutput::Done`] when applied and [`StoreOutput::Superseded`] when the
    /// condition failed (an equal or newer value is already stored): both are success.
    Write {
        /// Whose value.
        user: UserId,
        /// The new last_seen.
        last_seen: UnixMillis,
    },
    /// Strongly consistent reads of `last_seen` for these users. Answered with
    /// [`StoreOutput::Durable`], one entry per user, same order.
    Read {
        /// The users.
        users: Vec<UserId>,
    },
}

/// A store operation as the core emits it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// For the registry executor.
    Registry(RegistryOp),
    /// For the durable executor.
    Durable(DurableOp),
}

/// One user's state in the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistryEntry {
    /// `ws:{user}` holds at least one session.
    pub online: bool,
    /// `last_seen:{user}`, `None` when absent (never set, or lost in a restart).
    pub last_seen: Option<UnixMillis>,
}

/// A successful result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOutput {
    /// A write completed (for a durable write: it was applied).
    Done,
    /// A durable write was not applied because the stored value is equal or newer: success, and
    /// the stored value is not this one.
    Superseded,
    /// Answer to `RegistryOp::Read`.
    Registry(Vec<RegistryEntry>),
    /// Answer to `DurableOp::Read`.
    Durable(Vec<Option<UnixMillis>>),
}

/// A failed store operation. The core retries writes; reads fail the request (`unavailable`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Could not reach the store or it answered with an error.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store asked us to slow down (DynamoDB throttling).
    #[error("store throttled the request")]
    Throttled,
    /// No answer within the executor's deadline; the operation may or may not have been applied.
    #[error("store operation timed out")]
    Timeout,
}
