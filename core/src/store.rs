//! The store operations the core asks for, and what comes back.
//!
//! Two stores: the *registry* (Redis in production: the `ws:{user}` session hash, the cached
//! `last_seen:{user}` and `last_seen_pending:{user}`) and the *durable* store (DynamoDB's `users`
//! table: the source of truth).
//!
//! The cache rule (docs/STORES.md, "Cache fill"): `last_seen:{user}`, when present, is at least
//! the durable value as of when it was created (it is created only from durable values, and only
//! raised after). A session end that finds it absent (a new user, or a registry that lost its
//! data) must not create it (its value may be below the durable one) and goes to
//! `last_seen_pending:{user}` instead. Readers answer max(cache, pending), and when the cache is
//! absent also the durable value.
//! Every operation carries an [`EffectId`]; the driver executes it and feeds the result back with
//! `Input::StoreDone`, so retries and coalescing are decided inside the deterministic core.
//! Schema and semantics each executor must honour: `ARCHITECTURE.md` and `docs/STORES.md`.

use crate::time::UnixMillis;
use crate::user::{SessionId, UserId};

/// A server incarnation's fencing token: issued by the registry when a server takes a lease, unique
/// and increasing (a counter that never goes below the registry's clock in milliseconds, so it
/// keeps increasing across a registry restart). Every registry entry carries the token of the lease
/// it was written under; readers count an entry only while that lease is live, and the reaper
/// removes an entry only if it still carries the dead lease's token (docs/STORES.md, "Leases").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseToken(pub u64);

/// Identifies one store operation; results come back with the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EffectId(pub u64);

/// An operation on the registry (Redis).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryOp {
    /// `SADD sessions:{<incarnation>} "<user> <session>"` (the lease's session index, for the
    /// reaper), then `HSET ws:{user} <session> <server_id>` and `HSET ws_lease:{user} <session>
    /// <token>` in one script. Idempotent.
    Register {
        /// Whose session.
        user: UserId,
        /// The hash field.
        session: SessionId,
        /// The lease this registration is made under.
        token: LeaseToken,
    },
    /// In one atomic step: `HDEL ws:{user} <session>` and `HDEL ws_lease:{user} <session>` (only
    /// this session's fields, so never another session's entry) and the max-register of
    /// `last_seen:{user}` if it exists, else of `last_seen_pending:{user}`; then, if `token` is
    /// set, `SREM` the session from that lease's index. Idempotent.
    EndSession {
        /// Whose session.
        user: UserId,
        /// The hash field to remove.
        session: SessionId,
        /// The session's last_seen.
        last_seen: UnixMillis,
        /// The lease the session was last registered under (whose index lists it), if any.
        token: Option<LeaseToken>,
    },
    /// Max-register `last_seen:{user} = max(old, last_seen)` with a durable value (a backfill after
    /// a cache miss, the value of an applied durable write, or the durable value read back after a
    /// superseded one), creating it if absent; then delete `last_seen_pending:{user}` if the cache
    /// now covers it. One script.
    SetLastSeen {
        /// Whose value.
        user: UserId,
        /// The value read from the durable store.
        last_seen: UnixMillis,
    },
    /// Record a value not yet durable as a session end does (the max-register of
    /// `last_seen:{user}` if it exists, else of `last_seen_pending:{user}`): after the registry lost
    /// its data, so readers do not fall back to an older durable value while the durable write is
    /// still retrying. One script. Idempotent.
    RecordLastSeen {
        /// Whose value.
        user: UserId,
        /// The value (not yet acknowledged by the durable store).
        last_seen: UnixMillis,
    },
    /// For each user: the lease tokens of `ws_lease:{user}`, `last_seen:{user}` and
    /// `last_seen_pending:{user}` (on Redis, read from the summary `read_view:{user}` that the
    /// writes keep; docs/STORES.md). Answered with [`StoreOutput::Registry`], one entry per user,
    /// same order.
    Read {
        /// The users, at most `Config::max_query_users`.
        users: Vec<UserId>,
    },
    /// Take or renew this server's lease, using the registry's clock: if `token`'s lease is live,
    /// extend it to now + `ttl`; otherwise (never held, expired, or lost with the registry's data)
    /// issue a new token and lease. Records `wall` as the lease's last renewal (what the reaper
    /// records as last_seen if this server dies). Answered with [`StoreOutput::Lease`].
    RenewLease {
        /// The lease this server holds, if any.
        token: Option<LeaseToken>,
        /// Lease time to live.
        ttl: std::time::Duration,
        /// This server's wall clock now.
        wall: UnixMillis,
    },
    /// Claim the reaping of the expired lease `lease` for `ttl` (granted if unclaimed, if the
    /// claim expired, or if it is ours) and read up to `batch` sessions from its index, each with
    /// whether `ws_lease:{user}` still holds it under that lease. When the index is empty, drop
    /// the lease and its index. Answered with [`StoreOutput::Reap`].
    ClaimReap {
        /// The expired lease (as named in [`LeaseView::expired`]).
        lease: String,
        /// How long the claim holds.
        ttl: std::time::Duration,
        /// Most sessions to return.
        batch: usize,
        /// Our wall clock now: the recorded value is the lease's last renewal, but never later
        /// than this (a dead server's clock may have been ahead).
        ceiling: UnixMillis,
    },
    /// For each session (one the claim found held), in one script on the user's keys: if
    /// `ws_lease:{user}` still holds it under `token`, record `last_seen` like a session end does
    /// (`last_seen:{user}` if present, else `last_seen_pending:{user}`), so readers see it before
    /// the durable write lands. Idempotent.
    MarkReaped {
        /// The expired lease's token.
        token: LeaseToken,
        /// The value to record (the lease's last renewal, at most the reaper's now).
        last_seen: UnixMillis,
        /// The sessions.
        sessions: Vec<(UserId, SessionId)>,
    },
    /// For each session the claim found held (its last_seen is now durable): remove it (`ws` and
    /// `ws_lease`, one script) if `ws_lease:{user}` still holds it under `token` (a session
    /// registered again under a newer lease is left alone). Then `SREM` every session of the batch
    /// from the lease's index. Idempotent.
    Reap {
        /// The expired lease.
        lease: String,
        /// Its token.
        token: LeaseToken,
        /// The sessions of this batch: (user, session, held when claimed).
        sessions: Vec<(UserId, SessionId, bool)>,
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

/// A read of privacy settings and contact memberships (docs/PRIVACY.md), for the privacy
/// executor (a per-server cache over the durable store).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrivacyOp {
    /// The settings of `viewer` and of each target, and for each target the two memberships the
    /// rule needs (viewer in the target's list, target in the viewer's). Answered with
    /// [`StoreOutput::Privacy`], one entry per target, same order.
    Read {
        /// Who asks (a user; services with `presence:read_all` never need a read).
        viewer: UserId,
        /// Whom it asks about.
        targets: Vec<UserId>,
    },
}

/// A store operation as the core emits it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// For the registry executor.
    Registry(RegistryOp),
    /// For the durable executor.
    Durable(DurableOp),
    /// For the privacy executor.
    Privacy(PrivacyOp),
}

/// One user's state in the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryEntry {
    /// The lease tokens of the user's registered sessions (`HVALS ws_lease:{user}`); the core
    /// counts a session online only while its lease is live.
    pub leases: Vec<LeaseToken>,
    /// `last_seen:{user}`, `None` when absent (never set, or lost in a restart): then the durable
    /// store decides.
    pub last_seen: Option<UnixMillis>,
    /// `last_seen_pending:{user}`: session ends recorded while the cache was absent.
    pub pending: Option<UnixMillis>,
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
    /// Answer to `RegistryOp::RenewLease`.
    Lease(LeaseView),
    /// Answer to `PrivacyOp::Read`.
    Privacy(crate::privacy::PrivacyAnswer),
    /// Answer to `RegistryOp::ClaimReap`: `None` when there is nothing (more) for us to reap (the
    /// lease is claimed by another server, is live again, or its index is empty and it was dropped).
    Reap(Option<ReapBatch>),
}

/// The registry's answer to a lease renewal: our lease, and every other lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    /// Our lease's token: the one we sent if it was still live, else a new one.
    pub token: LeaseToken,
    /// Tokens of the live leases (ours included).
    pub live: Vec<LeaseToken>,
    /// Expired leases not yet reaped, by name (the reaper claims them by this name).
    pub expired: Vec<String>,
}

/// A batch of sessions of an expired lease, for the reaper.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReapBatch {
    /// The expired lease's token.
    pub token: LeaseToken,
    /// Its last renewal by its holder (wall clock): the last time its sessions are known live.
    pub last_seen: UnixMillis,
    /// Sessions from its index: (user, session, still registered under this lease).
    pub sessions: Vec<(UserId, SessionId, bool)>,
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
