//! What goes into the state machine ([`Input`]) and what comes out ([`Effect`]).

use std::time::Duration;

use crate::frame::{Encoding, ErrorCode, PresenceEntry, Token};
use crate::store::{EffectId, StoreError, StoreOp, StoreOutput};
use crate::time::{MonoTime, UnixMillis};
use crate::user::{SessionId, UserId};

/// A connection, named by the driver. Ids must not be reused within one core's lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// A lookup from outside any connection (the HTTP API), named by the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LookupId(pub u64);

/// Something that happened, fed to [`crate::Presence::handle`] with the time it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// A WebSocket connection completed its handshake with an authenticated user.
    Open {
        /// The driver's name for the connection.
        conn: ConnId,
        /// The user, from a verified token (never from a frame).
        user: UserId,
        /// A session id unique across all servers.
        session: SessionId,
        /// When the token stops being valid, on the wall clock: its `exp` plus the leeway the
        /// verifier allowed (the first instant it would refuse the token). `None`: never. The core
        /// turns it into a monotonic deadline once, at this input (`expires - now.wall` from
        /// `now.mono`), so a later wall-clock step does not move it.
        expires: Option<UnixMillis>,
        /// The token's scopes: a service token ([`Scopes::service`]) opens a connection that
        /// registers no session (a service is never online and has no last_seen).
        scopes: Scopes,
    },
    /// A data message arrived: text (JSON) or binary.
    Message {
        /// Which connection.
        conn: ConnId,
        /// Text message = JSON, binary message = binary encoding.
        encoding: Encoding,
        /// The payload.
        payload: &'a [u8],
    },
    /// Proof of life without data: a WebSocket pong (or ping) arrived at `at`. The runtime may
    /// hand these in late and in batches, as long as each comes before the connection's next
    /// input and before its heartbeat deadline (`at` + the timeout): `at` is the last proof of
    /// life an ungraceful end records. An `at` after now counts as now; one older than the proof
    /// held changes nothing.
    Alive {
        /// Which connection.
        conn: ConnId,
        /// When the proof arrived (monotonic, on the clock of `Now::mono`).
        at: MonoTime,
    },
    /// The connection ended. `graceful`: a Close frame or an orderly TCP FIN; otherwise an I/O
    /// error or reset, and last_seen is the last proof of life rather than now.
    Closed {
        /// Which connection.
        conn: ConnId,
        /// Whether the peer ended it in an orderly way.
        graceful: bool,
    },
    /// The connection's own task closed it for breaking a per-connection limit (frame rate,
    /// message size) before the frame reached the core: the session ends now, like a
    /// server-initiated close ([`EndReason::Policy`]).
    PolicyClosed {
        /// Which connection.
        conn: ConnId,
    },
    /// The runtime's verdict on the token of an `auth` frame ([`Effect::VerifyToken`]).
    TokenChecked {
        /// Which connection sent it.
        conn: ConnId,
        /// The verified token's user and expiry, or why it did not verify: sent as is as the
        /// `bad_token` error's message (so it must not contain the token).
        result: Result<TokenGrant, String>,
    },
    /// Presence of these users, asked from outside any connection (validated and authenticated
    /// by the driver; rate-limited here, against `user`'s budget). Answered with
    /// [`Effect::LookupDone`].
    Lookup {
        /// Correlates the answer.
        lookup: LookupId,
        /// Who asks (from a verified token): whose lookup budget pays, and whose view is answered.
        user: UserId,
        /// The users (at most `Config::max_query_users`).
        users: Vec<UserId>,
        /// The asker's token has `presence:read_all`: the true state, without a privacy read.
        read_all: bool,
    },
    /// Time passed (the deadline from `poll_timeout` was reached, or any wake-up).
    Timeout,
    /// A store operation finished.
    StoreDone {
        /// The id from [`Effect::Store`].
        id: EffectId,
        /// Its result.
        result: Result<StoreOutput, StoreError>,
    },
    /// The registry (Redis) may have lost its data (restart, failover, reconnect): register every
    /// live session again and re-send pending session ends.
    RegistryRestarted,
    /// The server is shutting down: close every connection with 1001 and record their last_seen.
    Shutdown,
    /// A change notice for a watched user (Redis pub/sub, or the embedded registry): its presence
    /// may have changed. A hint only: the core reads the user again.
    Changed {
        /// Whose presence may have changed.
        user: UserId,
    },
    /// Change notices may have been lost (the change channel reconnected): every watched user is
    /// read again and differences are pushed, and every subscription's privacy is read again
    /// (the driver has dropped its privacy cache).
    Resync,
    /// `user`'s privacy settings or contact list changed (a notice on the change feed, or this
    /// server's own API): the driver has dropped what it cached of `user`; every subscription
    /// with `user` on either side reads its privacy again and is pushed what its view now shows.
    PrivacyChanged {
        /// Whose settings or contacts changed.
        user: UserId,
    },
}

/// What a verified token may do beyond being its user (its `scope` claim, docs/PRIVACY.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Scopes {
    /// A service token (its `scope` holds a `presence:` scope): its connections register no
    /// session.
    pub service: bool,
    /// `presence:read_all`: queries and subscriptions answer the true state.
    pub read_all: bool,
    /// `presence:admin`: may read and set any user's settings and contacts (HTTP only).
    pub admin: bool,
}

/// WebSocket close codes the core uses (RFC 6455 section 7.4.1).
pub mod close_code {
    /// Normal closure: after `bye`.
    pub const NORMAL: u16 = 1000;
    /// Going away: server shutdown, or a connection declared dead by the heartbeat.
    pub const GOING_AWAY: u16 = 1001;
    /// Policy violation: the frame rate limit was exceeded.
    pub const POLICY: u16 = 1008;
    /// Message too big.
    pub const TOO_BIG: u16 = 1009;
    /// Try again later: at connection or pending-write capacity, or shutting down.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The connection's token expired (sent after an `error` frame with `token_expired`).
    /// In the 4000-4999 range RFC 6455 leaves to applications.
    pub const TOKEN_EXPIRED: u16 = 4001;
}

/// A token the runtime verified (signature, claims, `sub`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenGrant {
    /// Its subject.
    pub user: UserId,
    /// As in [`Input::Open`]: the first wall-clock instant it is no longer valid; `None`: never.
    pub expires: Option<UnixMillis>,
    /// Its scopes. An `auth` frame must keep the connection's scopes (a different set is
    /// refused with `bad_token`).
    pub scopes: Scopes,
}

/// Why a lookup ([`Input::Lookup`]) got no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupError {
    /// The protocol's error code.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
    /// For `rate_limited`: how long until the same request would be within budget.
    pub retry_after: Option<Duration>,
}

/// A message for the driver to send on a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutMessage {
    /// A WebSocket text message (JSON).
    Text(String),
    /// A WebSocket binary message.
    Binary(Vec<u8>),
}

/// Something the driver must do, drained with [`crate::Presence::poll_effect`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Send a message on a connection.
    Send {
        /// Which connection.
        conn: ConnId,
        /// What to send.
        message: OutMessage,
    },
    /// Close the connection with this code (best effort) and drop it. The core has already ended
    /// its session; it emits nothing more for this connection and ignores later inputs about it.
    Close {
        /// Which connection.
        conn: ConnId,
        /// WebSocket close code ([`close_code`]).
        code: u16,
        /// Short reason for the close frame.
        reason: &'static str,
    },
    /// The answer to [`Input::Lookup`]: one entry per user in order, or why there is none.
    LookupDone {
        /// From the input.
        lookup: LookupId,
        /// The presence entries, or why there are none.
        result: Result<Vec<PresenceEntry>, LookupError>,
    },
    /// Verify this token (an `auth` frame's) and answer with [`Input::TokenChecked`]. Identity
    /// is the runtime's business: the core only compares the verified user with the connection's.
    VerifyToken {
        /// Which connection sent it.
        conn: ConnId,
        /// The token (its `Debug` is redacted).
        token: Token,
    },
    /// Start receiving change notices for this user ([`Input::Changed`]): its first watcher. Once
    /// the subscription is in place, feed one `Changed` for the user: a change made between the
    /// subscriber's snapshot and the subscription taking effect is then read too.
    Watch {
        /// Whose changes.
        user: UserId,
    },
    /// Stop receiving change notices for this user: its last watcher left.
    Unwatch {
        /// Whose changes.
        user: UserId,
    },
    /// Execute a store operation and report back with [`Input::StoreDone`].
    Store {
        /// Correlates the result.
        id: EffectId,
        /// What to do.
        op: StoreOp,
    },
}

/// Why a session ended (for metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EndReason {
    /// `bye`, a Close frame or a FIN.
    Close,
    /// Heartbeat timeout.
    Timeout,
    /// Connection error or reset.
    Abrupt,
    /// Closed by the server for a policy breach (rate, size).
    Policy,
    /// Server shutdown.
    Shutdown,
    /// The connection's token expired (close 4001).
    Expired,
}

impl EndReason {
    /// Every reason, for metrics export.
    pub const ALL: [EndReason; 6] = [
        EndReason::Close,
        EndReason::Timeout,
        EndReason::Abrupt,
        EndReason::Policy,
        EndReason::Shutdown,
        EndReason::Expired,
    ];

    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Close => "close",
            EndReason::Timeout => "timeout",
            EndReason::Abrupt => "abrupt",
            EndReason::Policy => "policy",
            EndReason::Shutdown => "shutdown",
            EndReason::Expired => "expired",
        }
    }
}

/// Counters for metrics; only ever increase.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Sessions opened.
    pub sessions_opened: u64,
    /// Sessions ended, indexed like [`EndReason::ALL`].
    pub sessions_ended: [u64; 6],
    /// Connections refused at the pending-write cap or during shutdown.
    pub sessions_refused: u64,
    /// Store operations that failed and were scheduled again.
    pub store_retries: u64,
    /// Registry operations that failed.
    pub registry_failures: u64,
    /// Durable-store operations that failed.
    pub durable_failures: u64,
    /// Queries answered (including with an error).
    pub queries: u64,
    /// `error` frames sent.
    pub errors_sent: u64,
    /// Registry restarts seen.
    pub registry_restarts: u64,
    /// Leases granted to this server (the first, and one after each loss).
    pub leases_granted: u64,
    /// Times this server could not renew its lease for a whole TTL and assumed it lost.
    pub leases_lost: u64,
    /// Sessions of dead servers this server reaped (last_seen recorded, entry removed).
    pub sessions_reaped: u64,
    /// Live `presence` frames pushed to watchers.
    pub pushes: u64,
    /// Requests (queries, snapshots, HTTP lookups) refused for the asking user's lookup budget or
    /// its queries in flight (`rate_limited`).
    pub lookups_refused: u64,
}

/// Whether the server should receive traffic (`/readyz`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// New sessions are accepted (under the pending-write cap, not shutting down).
    pub accepting: bool,
    /// Pending last_seen writes (see `Config::max_pending_writes`).
    pub pending_writes: usize,
    /// The cap.
    pub max_pending_writes: usize,
    /// The last registry operation failed.
    pub registry_failing: bool,
    /// The last durable-store operation failed.
    pub durable_failing: bool,
}

impl Readiness {
    /// Ready = accepting and both stores answering.
    pub fn is_ready(&self) -> bool {
        self.accepting && !self.registry_failing && !self.durable_failing
    }
}
