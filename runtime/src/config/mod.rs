//! Command line and environment: every flag is also a `PRESENCE_*` variable.
//!
//! The names of the flags and variables are public API (operators and tests use them) and never
//! change. Durations use humantime (`500ms`, `30s`, `2m`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::store::ReadFrom;

/// The presence server: "is Bob online, and if not, when was he last seen?"
#[derive(Debug, Parser)]
#[command(name = "presence-server", version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// A subcommand; without one, the server runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server flags.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a token for a user, signed with the server's secret.
    Token(TokenArgs),
    /// Ask a running server whether users are online and when they were last seen.
    Query(QueryArgs),
    /// Watch users: print their state, then every change, until Ctrl-C.
    Watch(WatchArgs),
}

/// `presence-server token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user id (the token's `sub`).
    #[arg(long)]
    pub user: String,
    /// The secret and the claims to sign with (`iss`, `aud` as the servers require).
    #[command(flatten)]
    pub jwt: JwtArgs,
    /// How long the token is valid.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// A service token's scopes, space-separated: `presence:admin` (any user's settings and
    /// contacts), `presence:read_all` (the true state, and no session). Without it, a user token.
    #[arg(long)]
    pub scope: Option<String>,
    /// Print `{"user":..,"token":..,"expires_at":..}` instead of the bare token.
    #[arg(long)]
    pub json: bool,
}

/// How the client subcommands reach a server and authenticate.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// The server: `ws://host:port` or `http://host:port` (the path may be `/v1/ws` or empty).
    #[arg(long, env = "PRESENCE_URL", default_value = "ws://127.0.0.1:8080")]
    pub url: String,
    /// A token to use as is. Without it, the client signs a one-hour token for `--as` with the
    /// deployment's secret (`--jwt-secret` or `--jwt-secret-file`), or else asks a dev-mode server
    /// for one.
    #[arg(long, env = "PRESENCE_TOKEN", hide_env_values = true, conflicts_with_all = ["jwt_secret", "jwt_secret_file"])]
    pub token: Option<String>,
    /// The deployment's secret and claims, to sign the client's own token.
    #[command(flatten)]
    pub jwt: JwtArgs,
    /// The identity to sign or fetch a token for (`watch` holds a session as this user).
    #[arg(long = "as", env = "PRESENCE_CLI_USER", default_value = "presence-cli")]
    pub as_user: String,
    /// Bound on connecting and on each answer.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// One JSON object per line instead of text for humans.
    #[arg(long)]
    pub json: bool,
}

/// `presence-server query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The users to ask about (at most 256).
    #[arg(required = true, num_args = 1..=256)]
    pub users: Vec<String>,
}

/// `presence-server watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The users to watch (at most 256).
    #[arg(required = true, num_args = 1..=256)]
    pub users: Vec<String>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of the server.
#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Address of the public listener (WebSocket, HTTP API, demo page; also `/readyz` and
    /// `/metrics` unless --admin-listen is given).
    #[arg(long, env = "PRESENCE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// A second listener for `/readyz`, `/metrics` and `/healthz` only (e.g. `127.0.0.1:9090`);
    /// when set, the public listener answers 404 for `/readyz` and `/metrics`.
    #[arg(long, env = "PRESENCE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// This server's id in the registry. Default: unique per process.
    #[arg(long, env = "PRESENCE_SERVER_ID")]
    pub server_id: Option<String>,
    /// Redis for the registry: `redis://host:port[/db]`, `redis+unix:///path`, or a cluster as
    /// `redis+cluster://host1:port,host2:port`. Default: in-process registry (one server only).
    #[arg(long, env = "PRESENCE_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Where presence reads take each user's state from in Redis: `view` (one `read_view:{u}` per
    /// user, kept by every script) or `keys` (the three keys it summarises). Run `keys` while a
    /// server of a version without read views still writes to the same Redis (docs/OPERATIONS.md).
    #[arg(long, env = "PRESENCE_REDIS_READ", value_enum, default_value = "view")]
    pub redis_read: ReadFrom,
    /// DynamoDB table for durable last_seen. Default: embedded store in --data-dir.
    #[arg(long, env = "PRESENCE_DYNAMODB_TABLE")]
    pub dynamodb_table: Option<String>,
    /// Endpoint override for a local DynamoDB-compatible server (e.g. http://127.0.0.1:8000).
    #[arg(long, env = "PRESENCE_DYNAMODB_ENDPOINT")]
    pub dynamodb_endpoint: Option<String>,
    /// Create the DynamoDB table (on-demand billing) if it does not exist.
    #[arg(long, env = "PRESENCE_CREATE_TABLE")]
    pub create_table: bool,
    /// Directory of the embedded durable store (used when no DynamoDB table is configured).
    #[arg(long, env = "PRESENCE_DATA_DIR", default_value = "presence-data")]
    pub data_dir: PathBuf,
    /// Token verification: the secret (without one, dev mode on loopback only) and the claims.
    #[command(flatten)]
    pub jwt: JwtArgs,
    /// Comma-separated allowed Origin values for browser connections (`*` = any). Default: same
    /// origin only. Requests without an Origin header (non-browser clients) are always allowed.
    #[arg(long, env = "PRESENCE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Idle time after which a connection is probed with a ping.
    #[arg(long, env = "PRESENCE_PING_INTERVAL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,
    /// Time without proof of life after which a connection is dead.
    #[arg(long, env = "PRESENCE_HEARTBEAT_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub heartbeat_timeout: Duration,
    /// Time for a socket to complete its HTTP request or WebSocket handshake.
    #[arg(long, env = "PRESENCE_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// Limits at the edge: sockets in the HTTP phase, sessions per user, connections per IP.
    #[command(flatten)]
    pub edge: EdgeArgs,
    /// Privacy: the default audience, the contact-list limit, the cache.
    #[command(flatten)]
    pub privacy: PrivacyArgs,
    /// Largest WebSocket message, in bytes; larger closes with 1009.
    #[arg(long, env = "PRESENCE_MAX_MESSAGE_SIZE", default_value_t = 65536)]
    pub max_message_size: usize,
    /// Most WebSocket connections per process; more are closed with 1013.
    #[arg(long, env = "PRESENCE_MAX_CONNECTIONS", default_value_t = 19_000)]
    pub max_connections: usize,
    /// Inbound frames per second per connection (sustained); past the burst: close 1008.
    #[arg(long, env = "PRESENCE_FRAME_RATE", default_value_t = 20)]
    pub frame_rate: u32,
    /// Inbound frame burst per connection.
    #[arg(long, env = "PRESENCE_FRAME_BURST", default_value_t = 100)]
    pub frame_burst: u32,
    /// User lookups per second per user (sustained), shared by all of the user's connections on
    /// this server and `GET /v1/presence`; past the burst: `rate_limited` / HTTP 429.
    #[arg(long, env = "PRESENCE_LOOKUP_RATE", default_value_t = 100)]
    pub lookup_rate: u32,
    /// User lookup burst per user.
    #[arg(long, env = "PRESENCE_LOOKUP_BURST", default_value_t = 1_000)]
    pub lookup_burst: u32,
    /// Tolerance (whole seconds) for tokens past their `exp`, at the handshake and on live
    /// connections (which are closed with 4001 once it has passed too).
    #[arg(long, env = "PRESENCE_JWT_LEEWAY", default_value = "30s", value_parser = humantime::parse_duration)]
    pub jwt_leeway: Duration,
    /// Cap on pending last_seen writes; at the cap new sessions are refused (1013).
    #[arg(long, env = "PRESENCE_MAX_PENDING_WRITES", default_value_t = 100_000)]
    pub max_pending_writes: usize,
    /// last_seen values further than this in the future (another server's clock) are clamped.
    #[arg(long, env = "PRESENCE_MAX_CLOCK_SKEW", default_value = "5s", value_parser = humantime::parse_duration)]
    pub max_clock_skew: Duration,
    /// Timeout of one store operation.
    #[arg(long, env = "PRESENCE_STORE_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub store_timeout: Duration,
    /// Longest delay between retries of a failed store write (exponential backoff from 100 ms,
    /// with jitter). Bounds how long a recovered store waits for the backlog to resume.
    #[arg(long, env = "PRESENCE_RETRY_MAX", default_value = "10s", value_parser = humantime::parse_duration)]
    pub retry_max: Duration,
    /// Lifetime of this server's lease in the registry. A server that cannot renew it for this long
    /// is presumed dead: its users read as offline and a live server reaps their sessions
    /// (records last_seen = its last renewal). Ghost-online bound after a crash: TTL + renewal
    /// interval; after a user's last proof of life: heartbeat timeout + TTL + renewal interval.
    #[arg(long, env = "PRESENCE_LEASE_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,
    /// How often the lease is renewed (and dead servers looked for); the last_seen recorded for a
    /// crashed server's users is at most this much before the crash. At most half the TTL.
    #[arg(long, env = "PRESENCE_LEASE_RENEW_INTERVAL", default_value = "3s", value_parser = humantime::parse_duration)]
    pub lease_renew_interval: Duration,
    /// Most users one connection may watch with `subscribe`; past it the request gets
    /// `too_many_users`.
    #[arg(long, env = "PRESENCE_MAX_WATCHED_USERS", default_value_t = 1_000)]
    pub max_watched_users: usize,
    /// Most distinct users this server watches for all its connections together; a `subscribe`
    /// that would pass it gets `too_many_users`.
    #[arg(long, env = "PRESENCE_MAX_WATCHED_USERS_TOTAL", default_value_t = 1_000_000)]
    pub max_watched_users_total: usize,
    /// A watched user whose last session ends is pushed as offline only if not back within this
    /// (no offline/online flapping on a quick reconnect); `0s` pushes at once.
    #[arg(long, env = "PRESENCE_OFFLINE_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub offline_grace: Duration,
    /// On SIGTERM/SIGINT, how long to keep flushing pending writes before exiting.
    #[arg(long, env = "PRESENCE_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
    /// Log format.
    #[arg(long, env = "PRESENCE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// The HS256 secret and the claims tokens must carry, shared by the server and the subcommands.
#[derive(Debug, Args, Clone, Default)]
pub struct JwtArgs {
    /// HS256 secret of the tokens, at least 32 bytes (RFC 7518, 3.2). With neither this nor
    /// --jwt-secret-file the server runs in dev mode (loopback only); an empty value is refused.
    #[arg(long, env = "PRESENCE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// A file holding the HS256 secret (one trailing newline is stripped), so that it appears
    /// neither in `ps` nor in the environment. Same 32-byte minimum; not together with --jwt-secret.
    #[arg(long, env = "PRESENCE_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// When set, tokens must carry this `iss`; tokens issued here carry it.
    #[arg(long, env = "PRESENCE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// When set, tokens must carry this `aud`; tokens issued here carry it. Without it, tokens
    /// that carry an `aud` are refused.
    #[arg(long, env = "PRESENCE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

impl JwtArgs {
    /// The secret from --jwt-secret or --jwt-secret-file, checked; `None` if neither is set (an
    /// empty `PRESENCE_JWT_SECRET` counts as set, and is refused as too short).
    pub fn secret(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        let (secret, flag) = match (&self.jwt_secret, &self.jwt_secret_file) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => return Err(ConfigError::SecretTwice),
            (Some(s), None) => (s.clone().into_bytes(), "--jwt-secret (PRESENCE_JWT_SECRET)"),
            (None, Some(path)) => {
                let mut bytes = std::fs::read(path)
                    .map_err(|e| ConfigError::SecretFile { path: path.clone(), reason: e.to_string() })?;
                // Editors and `echo` end files with a newline; it is not part of the secret.
                if bytes.last() == Some(&b'\n') {
                    bytes.pop();
                    if bytes.last() == Some(&b'\r') {
                        bytes.pop();
                    }
                }
                (bytes, "--jwt-secret-file (PRESENCE_JWT_SECRET_FILE)")
            }
        };
        if secret.len() < crate::auth::MIN_SECRET_BYTES {
            return Err(ConfigError::SecretTooShort { flag, len: secret.len() });
        }
        Ok(Some(secret))
    }

    /// The `iss` and `aud` rules; empty values are refused.
    pub fn claim_rules(&self) -> Result<crate::auth::ClaimRules, ConfigError> {
        for (flag, v) in [("--jwt-issuer", &self.jwt_issuer), ("--jwt-audience", &self.jwt_audience)] {
            if v.as_deref() == Some("") {
                return Err(ConfigError::Empty(flag));
            }
        }
        Ok(crate::auth::ClaimRules { issuer: self.jwt_issuer.clone(), audience: self.jwt_audience.clone() })
    }

    /// The verifier and issuer for these flags, or `None` in dev mode (no secret given).
    pub fn auth(&self) -> Result<Option<crate::auth::Auth>, ConfigError> {
        let rules = self.claim_rules()?;
        Ok(self.secret()?.map(|s| crate::auth::Auth::with_rules(&s, rules)))
    }
}

/// Privacy (docs/PRIVACY.md): defaults, limits, where contact lists live, the cache.
#[derive(Debug, Args, Clone)]
pub struct PrivacyArgs {
    /// Who sees the last seen (and, by default, the online state) of a user who never set it:
    /// `everyone` (today's behaviour), `contacts` or `nobody`.
    #[arg(long, env = "PRESENCE_DEFAULT_PRIVACY", value_enum, default_value = "everyone")]
    pub default_privacy: DefaultPrivacy,
    /// Most ids in one user's contact list.
    #[arg(long, env = "PRESENCE_MAX_CONTACTS", default_value_t = presence_core::privacy::DEFAULT_MAX_CONTACTS)]
    pub max_contacts: usize,
    /// DynamoDB table of contact lists. Default: `<--dynamodb-table>_contacts`.
    #[arg(long, env = "PRESENCE_DYNAMODB_CONTACTS_TABLE")]
    pub dynamodb_contacts_table: Option<String>,
    /// How long this server may use cached settings and contacts without a change notice, and how
    /// often each subscription's privacy is read again: the bound for a change whose notice was
    /// never sent (its server could not reach Redis, or died right after the write).
    #[arg(long, env = "PRESENCE_PRIVACY_CACHE_TTL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub privacy_cache_ttl: Duration,
}

/// `--default-privacy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DefaultPrivacy {
    /// Everyone may see.
    Everyone,
    /// Only the user's contacts.
    Contacts,
    /// No one.
    Nobody,
}

impl DefaultPrivacy {
    /// The audience it stands for.
    pub fn audience(self) -> presence_core::privacy::LastSeenAudience {
        use presence_core::privacy::LastSeenAudience as A;
        match self {
            DefaultPrivacy::Everyone => A::Everyone,
            DefaultPrivacy::Contacts => A::Contacts,
            DefaultPrivacy::Nobody => A::Nobody,
        }
    }
}

/// Limits at the edge of the server, applied before a WebSocket opens.
#[derive(Debug, Args, Clone)]
pub struct EdgeArgs {
    /// Most sockets at once still in the HTTP phase (request or upgrade not finished); sockets
    /// accepted beyond it are closed at once, so slow clients cannot use up the file descriptors.
    #[arg(long, env = "PRESENCE_MAX_HANDSHAKES", default_value_t = 1_024)]
    pub max_handshakes: usize,
    /// Most WebSocket sessions of one user on this server (devices on other servers are not
    /// counted); the next upgrade is refused with HTTP 429.
    #[arg(long, env = "PRESENCE_MAX_SESSIONS_PER_USER", default_value_t = 16)]
    pub max_sessions_per_user: usize,
    /// Most WebSocket connections from one client IP address; more are refused with HTTP 429.
    /// 0 = no limit (behind a load balancer every client has the balancer's address).
    #[arg(long, env = "PRESENCE_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,
}

/// A configuration the server refuses to start with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// No secret, and not bound to loopback: dev tokens there would let anyone be anyone.
    #[error(
        "no --jwt-secret (PRESENCE_JWT_SECRET) or --jwt-secret-file given and --listen {0} is not a \
         loopback address; dev mode (generated secret, /v1/dev/token) is only allowed on loopback"
    )]
    SecretRequired(SocketAddr),
    /// A secret shorter than [`crate::auth::MIN_SECRET_BYTES`] (an empty one included).
    #[error(
        "{flag} is {len} bytes; an HS256 secret must be at least 32 bytes (256 bits, RFC 7518 \
         section 3.2). Generate one with: openssl rand -hex 32"
    )]
    SecretTooShort {
        /// The flag (and variable) the secret came from.
        flag: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// Both --jwt-secret and --jwt-secret-file are set: which one is meant is not clear.
    #[error(
        "both --jwt-secret (PRESENCE_JWT_SECRET) and --jwt-secret-file (PRESENCE_JWT_SECRET_FILE) \
         are set; give one"
    )]
    SecretTwice,
    /// The secret file cannot be read.
    #[error("--jwt-secret-file {}: cannot read it: {reason}", .path.display())]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// A setting that is empty where a value is needed.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// A timing combination that cannot work.
    #[error("--heartbeat-timeout ({timeout:?}) must be longer than --ping-interval ({ping:?})")]
    Heartbeat {
        /// The ping interval.
        ping: Duration,
        /// The timeout.
        timeout: Duration,
    },
    /// A limit that is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// The lease would expire between two renewals that each take a moment.
    #[error("--lease-renew-interval ({renew:?}) must be at most half of --lease-ttl ({ttl:?})")]
    Lease {
        /// The renewal interval.
        renew: Duration,
        /// The TTL.
        ttl: Duration,
    },
}

impl ServeArgs {
    /// Checks the combination of flags.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.jwt.auth()?.is_none() && !self.listen.ip().is_loopback() {
            return Err(ConfigError::SecretRequired(self.listen));
        }
        if self.heartbeat_timeout <= self.ping_interval {
            return Err(ConfigError::Heartbeat { ping: self.ping_interval, timeout: self.heartbeat_timeout });
        }
        if self.retry_max.is_zero() {
            return Err(ConfigError::Zero("--retry-max"));
        }
        if self.lease_renew_interval.is_zero() {
            return Err(ConfigError::Zero("--lease-renew-interval"));
        }
        if self.lease_renew_interval * 2 > self.lease_ttl {
            return Err(ConfigError::Lease { renew: self.lease_renew_interval, ttl: self.lease_ttl });
        }
        for (name, v) in [
            ("--max-connections", self.max_connections),
            ("--max-pending-writes", self.max_pending_writes),
            ("--max-message-size", self.max_message_size),
            ("--max-watched-users", self.max_watched_users),
            ("--max-watched-users-total", self.max_watched_users_total),
            ("--frame-rate", self.frame_rate as usize),
            ("--frame-burst", self.frame_burst as usize),
            ("--max-handshakes", self.edge.max_handshakes),
            ("--max-sessions-per-user", self.edge.max_sessions_per_user),
            ("--lookup-rate", self.lookup_rate as usize),
            ("--lookup-burst", self.lookup_burst as usize),
            ("--max-contacts", self.privacy.max_contacts),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        Ok(())
    }

    /// The core's configuration from these flags.
    pub fn core_config(&self) -> presence_core::Config {
        let limits =
            presence_core::frame::Limits { max_frame_bytes: self.max_message_size, ..Default::default() };
        presence_core::Config {
            ping_interval: self.ping_interval,
            heartbeat_timeout: self.heartbeat_timeout,
            max_pending_writes: self.max_pending_writes,
            max_clock_skew: self.max_clock_skew,
            retry_max: self.retry_max,
            frame_rate: self.frame_rate,
            // Each connection's task enforces the flags' limit (`crate::ws`); the core's own check
            // is a backstop that frames bunched up on their way to the driver cannot trip.
            frame_burst: self.frame_burst.saturating_mul(2),
            lookup_rate: self.lookup_rate,
            lookup_burst: self.lookup_burst,
            lease_ttl: self.lease_ttl,
            lease_renew_interval: self.lease_renew_interval,
            max_watched_users: self.max_watched_users,
            max_watched_users_total: self.max_watched_users_total,
            presence_grace: self.offline_grace,
            privacy_refresh: self.privacy.privacy_cache_ttl,
            limits,
            ..presence_core::Config::default()
        }
    }
}

#[cfg(test)]
mod tests;
