//! The registry on Redis: one node over any byte stream ([`RedisRegistry`]) or Redis Cluster
//! ([`RedisClusterRegistry`]).
//!
//! | module      | holds                                                                        |
//! |-------------|------------------------------------------------------------------------------|
//! | [`schema`]  | the key schema (public: operators read it with `redis-cli`; never change it)  |
//! | [`scripts`] | the Lua scripts (`scripts/*.lua`) and [`RegistryScript`], the one enum naming them |
//! | `ops`       | each registry operation as the commands it sends, shared by both executors   |
//! | `reply`     | reading replies: entries, the lease view, run ids; errors to [`StoreError`]   |
//! | [`config`]  | [`RedisConfig`] and the URL forms ([`RedisTarget`])                          |
//! | [`connect`] | byte streams and connectors ([`RedisConnector`], [`TcpConnector`])           |
//! | `single`    | the single-node executor: its reconnect loop and restart detection           |
//! | `cluster`   | the cluster executor: the crate's cluster connection, health checks          |
//! | `changes`   | the change feed: a pub/sub subscriber per executor, for subscriptions        |
//!
//! # Operations
//!
//! | op                        | Redis                                                             |
//! |---------------------------|-------------------------------------------------------------------|
//! | `Register`                | one pipeline `SADD sessions:{lease}`, `EVAL` of [`RegistryScript::Register`] (`HSET ws_lease:{u}`, `HSET ws:{u}`, the read view), `PUBLISH presence:{u}` (cluster: the `SADD` first, on its own, then `SPUBLISH`) |
//! | `EndSession`              | script [`RegistryScript::EndSession`]: `HDEL` both hashes + record the end, then `SREM sessions:{lease}` |
//! | `SetLastSeen`             | script [`RegistryScript::SetLastSeen`]                                 |
//! | `RecordLastSeen`          | script [`RegistryScript::RecordLastSeen`]                                 |
//! | `Read` (single node)      | one `MGET` of every `read_view:{u}`; for users without one, one pipeline: `HVALS ws_lease:{u}` per user, then one `MGET` of every `last_seen:{u}` and `last_seen_pending:{u}` (only that with `ReadFrom::Keys`) |
//! | `Read` (cluster)          | one `GET read_view:{u}` per user; for users without one, a pipeline of the three per user (same slot); all in parallel |
//! | `RenewLease`              | script [`RegistryScript::RenewLease`]                                 |
//! | `ClaimReap`               | script [`RegistryScript::ClaimReap`], `SRANDMEMBER sessions:{lease}`, `HGET ws_lease:{u}` per session; or [`RegistryScript::DropLease`] when the index is empty |
//! | `MarkReaped`              | script [`RegistryScript::ReapMark`] per session (in parallel)                |
//! | `Reap`                    | script [`RegistryScript::Reap`] per held session (in parallel), then `SREM sessions:{lease}` |
//!
//! Scripts run with `EVALSHA`; after a Redis restart (or `SCRIPT FLUSH`) the script cache is empty
//! and Redis answers `NOSCRIPT`, on which [`redis::Script::invoke_async`] loads the script and
//! retries once, transparently.
//!
//! The max-register writes only when `last_seen:{u}` is absent, is not a well-formed fixed-width
//! timestamp (an unparseable value reads as absent, so overwriting it loses nothing), or is older
//! than the new value ([`scripts`]).
//!
//! A cluster pipeline must stay within one slot, hence the per-user pipelines on a cluster; the
//! cluster connection multiplexes them, so a read of N users costs about one round trip per node.
//!
//! # Connection and restarts (single node)
//!
//! The executor owns its reconnect loop (a background "supervisor" task) and runs over any
//! [`AsyncStream`] a [`RedisConnector`] hands it: TCP or a Unix socket in production
//! ([`TcpConnector`]), a simulated stream in the simulator. On connect it reads `INFO server`
//! `run_id`. From then on:
//!
//! - an op that sees an I/O or protocol error marks the connection broken, and the supervisor
//!   drops it and reconnects with exponential backoff (with a per-server deterministic jitter, so a
//!   fleet does not reconnect in lockstep, and the simulator stays reproducible);
//! - an op that times out, and a periodic health check (every
//!   [`RedisConfig::health_check_interval`]), re-read `run_id`; no answer within the op timeout
//!   means the connection is hung (a partition does not always reset TCP) and it is replaced;
//! - while disconnected, ops fail at once with [`StoreError::Unavailable`]: they never wait for
//!   the reconnect, so they can never hang.
//!
//! **The restart generation is bumped on every reconnection** (every successful connect after the
//! first), and when the health check sees a new `run_id` on the same connection (a proxy that
//! failed over). We cannot know whether the data survived a lost connection (a restarted Redis
//! without persistence has lost it; a network blip has not), and re-registering live sessions is
//! idempotent and cheap, so we assume the worst. A server that does not implement `INFO` (a test
//! double) is accepted: run_id is then unknown and only reconnections count.
//!
//! # Redis Cluster
//!
//! URL form: `redis+cluster://[user:password@]host1:port1,host2:port2,...` (seed nodes; the rest of
//! the topology is discovered). It uses [`redis::cluster_async::ClusterConnection`], which manages
//! its own per-node TCP connections, redirects and reconnects, so it does not run over a custom
//! [`RedisConnector`]. Restart detection is therefore coarser and documented as a limitation: the
//! generation is bumped (a) when an op or health check failed with a connection-level error or a
//! timeout and a later health check succeeds, and (b) when the set of `run_id`s reported by
//! `INFO server` across all nodes changes (a node restarted, failed over or was replaced). A node
//! that restarts and comes back between two health checks without any op failing in between is
//! still caught by (b). The bump can come before the crate has reconnected to every node: the
//! re-registrations it triggers may then fail for a moment, and the core retries them like any
//! failed write.

use std::sync::Arc;

#[cfg(doc)]
use presence_core::store::StoreError;

mod changes;
mod cluster;
pub mod config;
pub mod connect;
mod ops;
mod reply;
pub mod schema;
pub mod scripts;
mod sharded;
mod single;

pub use self::cluster::RedisClusterRegistry;
pub use self::config::{ReadFrom, RedisConfig, RedisTarget, RedisUrlError, CLUSTER_SCHEME};
pub use self::connect::{AsyncStream, ConnectFuture, RedisConnector, TcpConnector};
pub use self::schema::{
    last_seen_key, lease_index_key, lease_name, pending_key, read_view_key, ws_key, ws_lease_key, LEASES_KEY,
    LEASE_CLAIMS_KEY, LEASE_RENEWED_KEY, LEASE_TOKEN_KEY,
};
pub use self::scripts::RegistryScript;
pub use self::single::RedisRegistry;
use super::RegistryStore;

/// Opens the right executor for `url`: [`RedisClusterRegistry`] for `redis+cluster://`,
/// [`RedisRegistry`] over TCP or a Unix socket otherwise.
///
/// Returns at once: connecting happens in the background (see [`RedisRegistry::wait_connected`]).
/// Must be called inside a tokio runtime.
pub fn open_redis(url: &str, config: RedisConfig) -> Result<Arc<dyn RegistryStore>, RedisUrlError> {
    Ok(match RedisTarget::parse(url)? {
        RedisTarget::Single(info) => Arc::new(RedisRegistry::for_target(&info, config)?),
        RedisTarget::Cluster(nodes) => Arc::new(RedisClusterRegistry::new(nodes, config)?),
    })
}
