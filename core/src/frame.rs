//! The frames of the public wire protocol (version 1), independent of their encoding.
//!
//! One enum covers both directions so that clients (tests, the CLI) and the server share the codec
//! (`crate::codec`), and a fuzzer can check that every frame survives both encodings. Which
//! frames a server accepts from a client is the state machine's business, not the codec's.

use crate::time::UnixMillis;
use crate::user::UserId;

/// Most users in one `query`, `subscribe`, `unsubscribe` or `presence` frame.
pub const MAX_USERS_PER_FRAME: usize = 256;
/// Largest frame the codec accepts by default, in bytes (the runtime's max message size).
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Longest `message` of an `error` frame, in bytes.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;
/// Longest `token` of an `auth` frame, in bytes (an HS256 JWT with the claims the server reads is
/// a few hundred bytes).
pub const MAX_TOKEN_BYTES: usize = 4096;

/// A protocol frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Client to server: application-level heartbeat; answered with `Pong` echoing `seq`.
    Ping {
        /// Echoed in the pong.
        seq: Option<u64>,
    },
    /// Server to client: the answer to `Ping`.
    Pong {
        /// The ping's `seq`.
        seq: Option<u64>,
    },
    /// Client to server: "is each of these users online, and when were they last seen?"
    Query {
        /// Request id, echoed in the answer.
        id: Option<u64>,
        /// The users asked about.
        users: Vec<UserId>,
    },
    /// Client to server: a query plus live updates for these users.
    Subscribe {
        /// Request id, echoed in the snapshot.
        id: Option<u64>,
        /// The users to watch.
        users: Vec<UserId>,
    },
    /// Client to server: stop watching these users.
    Unsubscribe {
        /// Request id, echoed in an error if there is one.
        id: Option<u64>,
        /// The users to stop watching.
        users: Vec<UserId>,
    },
    /// Client to server: graceful end of the session; the server records last_seen and closes (1000).
    Bye,
    /// Client to server: replace the connection's token (before it expires). The new token must
    /// verify and name the same user; otherwise an `error` with `bad_token` and the old token
    /// stays in force. A success is not answered.
    Auth {
        /// The new token (at most [`MAX_TOKEN_BYTES`]).
        token: Token,
    },
    /// Server to client: presence of some users (a query answer, a snapshot, or a live change).
    Presence {
        /// The request id this answers; `None` for unsolicited updates.
        id: Option<u64>,
        /// One entry per user.
        users: Vec<PresenceEntry>,
    },
    /// Server to client: a request failed; the connection stays usable.
    Error {
        /// The request id, when the request had one.
        id: Option<u64>,
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable detail (at most [`MAX_ERROR_MESSAGE_BYTES`]).
        message: String,
    },
}

/// A bearer token as it travels in an `auth` frame. Its `Debug` form never shows the token, so
/// frames and effects can be logged safely.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token(<{} bytes redacted>)", self.0.len())
    }
}

/// One user's presence as the protocol reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceEntry {
    /// Whose presence this is.
    pub user: UserId,
    /// Whether any session of the user is live.
    pub online: bool,
    /// The latest recorded session end, if any (`None` also when the viewer may not see it).
    pub last_seen: Option<UnixMillis>,
    /// `last_seen_approx`: the coarse bucket shown instead of a last seen the viewer may not see
    /// (docs/PRIVACY.md); `None` whenever the last seen is shown, and for a user never seen.
    pub last_seen_approx: Option<Approx>,
}

impl PresenceEntry {
    /// An entry with nothing hidden.
    pub fn new(user: UserId, online: bool, last_seen: Option<UnixMillis>) -> PresenceEntry {
        PresenceEntry { user, online, last_seen, last_seen_approx: None }
    }
}

/// The coarse bucket shown instead of a hidden last seen (`last_seen_approx`). The bounds are in
/// `crate::privacy` ([`crate::privacy::approx_of`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Approx {
    /// Online now, or seen within 3 days.
    Recently,
    /// Seen within 7 days.
    WithinWeek,
    /// Seen within 30 days.
    WithinMonth,
    /// Seen longer ago.
    LongAgo,
}

impl Approx {
    /// Every bucket, in the order of their binary codes (0, 1, 2, 3).
    pub const ALL: [Approx; 4] = [Approx::Recently, Approx::WithinWeek, Approx::WithinMonth, Approx::LongAgo];

    /// The JSON name (`"recently"`, `"within_week"`, `"within_month"`, `"long_ago"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Approx::Recently => "recently",
            Approx::WithinWeek => "within_week",
            Approx::WithinMonth => "within_month",
            Approx::LongAgo => "long_ago",
        }
    }

    /// The bucket a JSON name stands for.
    pub fn parse(s: &str) -> Option<Approx> {
        Approx::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The binary encoding's byte (docs/PROTOCOL.md).
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The bucket of a binary code.
    pub fn from_code(code: u8) -> Option<Approx> {
        Approx::ALL.get(usize::from(code)).copied()
    }
}

/// The `code` of an `error` frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorCode {
    /// The frame could not be decoded, or is not one a client may send.
    BadFrame,
    /// A user id breaks the user id rules.
    InvalidUser,
    /// More users than the per-frame or per-connection limit.
    TooManyUsers,
    /// The user is over its lookup budget (shared by all of its connections on this server and
    /// the HTTP API), or has too many queries in flight; retry later.
    RateLimited,
    /// A store needed for the answer is unavailable; the answer is unknown, not "offline".
    Unavailable,
    /// An `auth` frame's token did not verify or names another user; the old token stays.
    BadToken,
    /// The connection's token expired; the server closes the connection with 4001 right after.
    TokenExpired,
}

impl ErrorCode {
    /// Every code, in wire order.
    pub const ALL: [ErrorCode; 7] = [
        ErrorCode::BadFrame,
        ErrorCode::InvalidUser,
        ErrorCode::TooManyUsers,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::BadToken,
        ErrorCode::TokenExpired,
    ];

    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::InvalidUser => "invalid_user",
            ErrorCode::TooManyUsers => "too_many_users",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::BadToken => "bad_token",
            ErrorCode::TokenExpired => "token_expired",
        }
    }

    /// Parses the JSON spelling.
    pub fn from_str_opt(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// How a frame travels: a WebSocket text message (JSON) or binary message (compact encoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// JSON text, `docs/PROTOCOL.md` section 2.
    Json,
    /// Compact binary, `docs/PROTOCOL.md` section 3.
    Binary,
}

/// Bounds the decoder enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted input, in bytes.
    pub max_frame_bytes: usize,
    /// Most user ids (or presence entries) in one frame.
    pub max_users: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_frame_bytes: MAX_FRAME_BYTES, max_users: MAX_USERS_PER_FRAME }
    }
}

/// Why bytes did not decode to a frame, plus the request id when it could still be read
/// (so the `error` frame can echo it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct DecodeError {
    /// What was wrong.
    pub kind: DecodeErrorKind,
    /// The request's `id`, if it was readable before the error.
    pub id: Option<u64>,
}

/// What was wrong with an input frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    /// Input longer than `Limits::max_frame_bytes`; nothing was parsed.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    Oversized {
        /// Input length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not well-formed: bad JSON or binary layout, a field of the wrong type, a missing field.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    /// The `type` (or binary tag) names no frame.
    #[error("unknown frame type")]
    UnknownType,
    /// A user id breaks the rules.
    #[error("invalid user id at index {index}: {reason}")]
    InvalidUser {
        /// Position in the `users` list.
        index: usize,
        /// Which rule.
        reason: crate::user::InvalidUserId,
    },
    /// More users than `Limits::max_users`.
    #[error("{count} users exceed the limit of {max}")]
    TooManyUsers {
        /// How many were sent (binary: the declared count).
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Bytes left after a complete frame.
    #[error("trailing bytes after the frame")]
    TrailingBytes,
}

impl DecodeError {
    /// The `error` frame code a client gets for this failure.
    pub fn code(&self) -> ErrorCode {
        match self.kind {
            DecodeErrorKind::InvalidUser { .. } => ErrorCode::InvalidUser,
            DecodeErrorKind::TooManyUsers { .. } => ErrorCode::TooManyUsers,
            _ => ErrorCode::BadFrame,
        }
    }
}
