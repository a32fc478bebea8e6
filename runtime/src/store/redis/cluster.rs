//! The registry on a Redis Cluster ([`RedisClusterRegistry`]): the `redis` crate's cluster
//! connection, which manages its own per-node connections, redirects and reconnects; restart
//! detection by health checks (the policy and its limitation are in the module docs of [`super`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use presence_core::store::{RegistryOp, StoreError, StoreOutput};
use presence_core::user::UserId;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::ConnectionInfo;
use tokio::sync::{mpsc, watch, Notify};

use super::changes::ChangeFeed;
use super::config::{check_addr, RedisConfig, RedisTarget, RedisUrlError};
use super::connect::AbortOnDrop;
use super::ops::{publish_privacy, run_op, Topology};
use super::reply::{classify, read_run_ids, warn_if_evicting};
use super::single::wait_true;
use crate::store::{Notice, RegistryStore, StoreFuture};

/// The registry on a Redis Cluster (`redis+cluster://h1:p1,h2:p2`). See the module docs for how
/// restarts are detected and the limitation that comes with the crate-managed connections.
///
/// Dropping it stops the background task and closes the connections.
pub struct RedisClusterRegistry {
    inner: Arc<Cluster>,
    changes: ChangeFeed,
    _supervisor: AbortOnDrop,
}

struct Cluster {
    config: RedisConfig,
    /// `None` until the first successful connection; the crate reconnects it by itself after.
    conn: Mutex<Option<ClusterConnection>>,
    /// An op failed in a way that may mean a node was lost (connection error, timeout).
    suspect: AtomicBool,
    /// Ops wake the supervisor for an early health check.
    events: Notify,
    restarts: watch::Sender<u64>,
    /// The last health check (or first connect) succeeded.
    connected: watch::Sender<bool>,
}

impl RedisClusterRegistry {
    /// A registry on the cluster whose seed nodes are `nodes` (see [`RedisTarget::Cluster`]).
    ///
    /// Returns at once and connects in the background. Must be called inside a tokio runtime.
    pub fn new(
        nodes: Vec<ConnectionInfo>,
        config: RedisConfig,
    ) -> Result<RedisClusterRegistry, RedisUrlError> {
        if nodes.is_empty() {
            return Err(RedisUrlError::NoClusterNodes);
        }
        for node in &nodes {
            check_addr(node.addr())?;
        }
        // Change notices use sharded pub/sub: the feed reaches each channel's shard (sharded.rs).
        let changes = ChangeFeed::cluster(nodes.clone(), config.clone());
        let client = ClusterClient::builder(nodes)
            .connection_timeout(config.connect_timeout)
            .response_timeout(config.op_timeout)
            .build()
            .map_err(|e| RedisUrlError::Invalid(e.to_string()))?;
        let inner = Arc::new(Cluster {
            config,
            conn: Mutex::new(None),
            suspect: AtomicBool::new(false),
            events: Notify::new(),
            restarts: watch::Sender::new(0),
            connected: watch::Sender::new(false),
        });
        let task = tokio::spawn(supervise_cluster(Arc::clone(&inner), client));
        Ok(RedisClusterRegistry { inner, changes, _supervisor: AbortOnDrop(task) })
    }

    /// A registry on the cluster of a `redis+cluster://` URL.
    pub fn from_url(url: &str, config: RedisConfig) -> Result<RedisClusterRegistry, RedisUrlError> {
        match RedisTarget::parse(url)? {
            RedisTarget::Cluster(nodes) => RedisClusterRegistry::new(nodes, config),
            RedisTarget::Single(_) => {
                Err(RedisUrlError::WrongTopology("RedisClusterRegistry needs a redis+cluster:// url"))
            }
        }
    }

    /// Whether the cluster answered the last health check. For tests and diagnostics: `/readyz`
    /// answers from the core's readiness (its view of the registry's recent results), not from this.
    pub fn is_connected(&self) -> bool {
        *self.inner.connected.borrow()
    }

    /// Waits up to `limit` for a working connection; `true` if connected.
    pub async fn wait_connected(&self, limit: Duration) -> bool {
        wait_true(self.inner.connected.subscribe(), limit).await
    }
}

impl RedisClusterRegistry {
    /// Runs one operation on the current connection, bounded by the op timeout; a failure that
    /// means the connection is broken starts its replacement.
    fn run<F, Fut>(&self, f: F) -> StoreFuture
    where
        F: FnOnce(ClusterConnection) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = redis::RedisResult<StoreOutput>> + Send,
    {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let conn = inner.conn.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let Some(conn) = conn else {
                return Err(StoreError::Unavailable("redis cluster: not connected yet".into()));
            };
            let run = f(conn);
            match tokio::time::timeout(inner.config.op_timeout, run).await {
                Ok(Ok(out)) => Ok(out),
                Ok(Err(e)) => {
                    let (err, broken) = classify(&e);
                    if broken || e.is_cluster_error() {
                        tracing::warn!(error = %e, "redis cluster op failed");
                        inner.suspect.store(true, Ordering::Relaxed);
                        inner.events.notify_one();
                    }
                    Err(err)
                }
                Err(_) => {
                    inner.suspect.store(true, Ordering::Relaxed);
                    inner.events.notify_one();
                    Err(StoreError::Timeout)
                }
            }
        })
    }
}

impl RegistryStore for RedisClusterRegistry {
    fn execute(&self, op: RegistryOp) -> StoreFuture {
        let (server_id, read_from) = (self.inner.config.server_id.clone(), self.inner.config.read_from);
        self.run(move |conn| async move { run_op(conn, &server_id, op, Topology::Cluster, read_from).await })
    }

    fn announce_privacy(&self, user: &UserId) -> StoreFuture {
        let user = user.clone();
        self.run(move |mut conn| async move { publish_privacy(&mut conn, Topology::Cluster, &user).await })
    }

    fn restarts(&self) -> watch::Receiver<u64> {
        self.inner.restarts.subscribe()
    }

    fn watch(&self, user: &UserId) {
        self.changes.watch(user);
    }

    fn unwatch(&self, user: &UserId) {
        self.changes.unwatch(user);
    }

    fn notices(&self) -> Option<mpsc::UnboundedReceiver<Notice>> {
        self.changes.notices()
    }

    fn kind(&self) -> &'static str {
        "redis-cluster"
    }
}

/// A first connection to the cluster, retried with backoff until it succeeds (the crate reconnects
/// by itself after that). `who` names the caller in the logs, which repeat every 20 attempts.
pub(super) async fn connect_cluster(
    client: &ClusterClient,
    config: &RedisConfig,
    who: &str,
) -> ClusterConnection {
    let mut attempt: u32 = 0;
    loop {
        match tokio::time::timeout(config.connect_timeout, client.get_async_connection()).await {
            Ok(Ok(c)) => return c,
            Ok(Err(e)) => {
                if attempt.is_multiple_of(20) {
                    tracing::warn!(error = %e, attempt, "{who}: cluster connect failed; retrying");
                }
            }
            Err(_) => {
                if attempt.is_multiple_of(20) {
                    tracing::warn!(attempt, "{who}: cluster connect timed out; retrying");
                }
            }
        }
        tokio::time::sleep(config.backoff(attempt)).await;
        attempt = attempt.saturating_add(1);
    }
}

/// Connects (with backoff) once, then health-checks forever; bumps the generation per the
/// module docs.
async fn supervise_cluster(inner: Arc<Cluster>, client: ClusterClient) {
    let config = inner.config.clone();
    let mut conn = connect_cluster(&client, &config, "redis cluster").await;
    let mut last_ids = match tokio::time::timeout(config.op_timeout, read_run_ids(&mut conn)).await {
        Ok(Ok(ids)) => ids,
        _ => {
            inner.suspect.store(true, Ordering::Relaxed);
            None
        }
    };
    warn_if_evicting(&mut conn, config.op_timeout).await;
    *inner.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
    inner.connected.send_replace(true);
    tracing::info!("redis cluster connected");

    let mut tick = tokio::time::interval(config.health_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            biased;
            _ = tick.tick() => {}
            _ = inner.events.notified() => {}
        }
        match tokio::time::timeout(config.op_timeout, read_run_ids(&mut conn)).await {
            Ok(Ok(ids)) => {
                inner.connected.send_replace(true);
                let changed = ids.is_some() && last_ids.is_some() && ids != last_ids;
                let recovered = inner.suspect.swap(false, Ordering::Relaxed);
                if changed || recovered {
                    tracing::warn!(
                        run_ids_changed = changed,
                        recovered,
                        "redis cluster may have lost data (restart generation bumped)"
                    );
                    inner.restarts.send_modify(|g| *g += 1);
                }
                if ids.is_some() {
                    last_ids = ids;
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis cluster health check failed");
                inner.suspect.store(true, Ordering::Relaxed);
                inner.connected.send_replace(false);
            }
            Err(_) => {
                tracing::warn!("redis cluster health check timed out");
                inner.suspect.store(true, Ordering::Relaxed);
                inner.connected.send_replace(false);
            }
        }
    }
}
