//! The executors' settings ([`RedisConfig`]) and the Redis URL forms ([`RedisTarget`]).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

#[cfg(doc)]
use presence_core::store::StoreError;

/// Settings shared by both Redis executors.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// Stored as the value of each session this server registers (`HSET ws:{u} <session> <id>`),
    /// so an operator can see which server holds a session.
    pub server_id: String,
    /// Bound on every op, from call to answer (default 2 s). A late answer is
    /// [`StoreError::Timeout`].
    pub op_timeout: Duration,
    /// Bound on opening a connection, including the handshake (default 2 s).
    pub connect_timeout: Duration,
    /// First reconnect delay (default 50 ms); doubles per failed attempt.
    pub reconnect_backoff_min: Duration,
    /// Largest reconnect delay (default 2 s).
    pub reconnect_backoff_max: Duration,
    /// How often an idle connection is checked (`INFO server`: liveness and run_id; default 5 s).
    pub health_check_interval: Duration,
    /// Where a presence read takes each user's state from (default: the read view).
    pub read_from: ReadFrom,
}

/// Where a presence read (`RegistryOp::Read`) takes each user's state from: the values of
/// `--redis-read` (`view`, `keys`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadFrom {
    /// `read_view:{u}`, one value per user, which every script keeps equal to the keys (a user
    /// without one is read from the keys). Needs every server that writes to this Redis to keep
    /// the views (this version and later): see docs/OPERATIONS.md, "Upgrading to the read view".
    #[default]
    View,
    /// `ws_lease:{u}`, `last_seen:{u}` and `last_seen_pending:{u}` themselves: what servers did
    /// before the read view, and what to run while an older server still writes to this Redis.
    Keys,
}

impl RedisConfig {
    /// Defaults for everything but the server id.
    pub fn new(server_id: impl Into<String>) -> RedisConfig {
        RedisConfig {
            server_id: server_id.into(),
            op_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            reconnect_backoff_min: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(2),
            health_check_interval: Duration::from_secs(5),
            read_from: ReadFrom::View,
        }
    }

    /// The delay before reconnect attempt `attempt` (0-based): exponential, capped, with a jitter
    /// of up to -50% derived from the server id and the attempt (deterministic, no RNG, yet
    /// different servers spread out).
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .reconnect_backoff_min
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.reconnect_backoff_max);
        let mut h = DefaultHasher::new();
        (&self.server_id, attempt).hash(&mut h);
        let frac = (h.finish() % 1000) as u32; // 0..1000
        base - base.mul_f64(f64::from(frac) / 2000.0)
    }
}

/// Where a Redis URL points.
#[derive(Clone, Debug)]
pub enum RedisTarget {
    /// `redis://[user:password@]host:port[/db]`, or a Unix socket:
    /// `redis+unix:///path/to/redis.sock[?db=N]` (also `unix://`).
    Single(ConnectionInfo),
    /// `redis+cluster://[user:password@]host1:port1,host2:port2,...`: seed nodes of a cluster.
    Cluster(Vec<ConnectionInfo>),
}

/// The URL scheme that selects Redis Cluster.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// Why a Redis URL was rejected.
#[derive(Debug, thiserror::Error)]
pub enum RedisUrlError {
    /// The redis crate could not parse it (bad scheme, host, port or db).
    #[error("invalid redis url: {0}")]
    Invalid(String),
    /// A `redis+cluster://` URL without any host.
    #[error("redis+cluster url lists no nodes")]
    NoClusterNodes,
    /// TLS (`rediss://`) or another transport this build does not support.
    #[error("unsupported redis address (TLS is not enabled in this build): {0}")]
    Unsupported(String),
    /// A cluster URL where a single node is expected, or the reverse.
    #[error("{0}")]
    WrongTopology(&'static str),
}

impl RedisTarget {
    /// Parses a Redis URL (see the variants for the accepted forms).
    ///
    /// Credentials are kept in the result but never logged.
    pub fn parse(url: &str) -> Result<RedisTarget, RedisUrlError> {
        if let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) {
            // Split "user:pass@" off the host list: a password may itself contain '@' or ',',
            // so the last '@' before the first '/' ends the credentials.
            let rest = rest.split('/').next().unwrap_or("");
            let (auth, hosts) = match rest.rfind('@') {
                Some(i) => (&rest[..=i], &rest[i + 1..]),
                None => ("", rest),
            };
            let nodes = hosts
                .split(',')
                .filter(|h| !h.trim().is_empty())
                .map(|h| {
                    format!("redis://{auth}{}", h.trim())
                        .into_connection_info()
                        .map_err(|e| RedisUrlError::Invalid(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if nodes.is_empty() {
                return Err(RedisUrlError::NoClusterNodes);
            }
            for n in &nodes {
                check_addr(n.addr())?;
            }
            return Ok(RedisTarget::Cluster(nodes));
        }
        let info = url.into_connection_info().map_err(|e| RedisUrlError::Invalid(e.to_string()))?;
        check_addr(info.addr())?;
        Ok(RedisTarget::Single(info))
    }
}

/// Accepts the transports this build can open: TCP, and Unix sockets on Unix.
pub(super) fn check_addr(addr: &ConnectionAddr) -> Result<(), RedisUrlError> {
    match addr {
        ConnectionAddr::Tcp(..) => Ok(()),
        #[cfg(unix)]
        ConnectionAddr::Unix(..) => Ok(()),
        other => Err(RedisUrlError::Unsupported(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert!(matches!(
            RedisTarget::parse("redis://127.0.0.1:6379/2").unwrap(),
            RedisTarget::Single(i) if i.redis_settings().db() == 2
        ));
        assert!(matches!(RedisTarget::parse("redis+unix:///tmp/r.sock").unwrap(), RedisTarget::Single(_)));
        match RedisTarget::parse("redis+cluster://u:p@ss@h1:7000,h2:7001").unwrap() {
            RedisTarget::Cluster(nodes) => {
                assert_eq!(nodes.len(), 2);
                assert_eq!(nodes[1].addr(), &ConnectionAddr::Tcp("h2".into(), 7001));
                assert_eq!(nodes[0].redis_settings().password(), Some("p@ss"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(RedisTarget::parse("redis+cluster://"), Err(RedisUrlError::NoClusterNodes)));
        assert!(RedisTarget::parse("http://x").is_err());
    }

    #[test]
    fn backoff_grows_caps_and_jitters_deterministically() {
        let c = RedisConfig::new("srv-1");
        for a in 0..30 {
            let d = c.backoff(a);
            let cap = c.reconnect_backoff_min.saturating_mul(1 << a.min(16)).min(c.reconnect_backoff_max);
            assert!(d <= cap && d >= cap / 2, "{a}: {d:?}");
            assert_eq!(d, c.backoff(a));
        }
    }
}
