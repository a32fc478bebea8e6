//! The registry on one Redis node ([`RedisRegistry`]), over any byte stream a
//! [`RedisConnector`] opens, with its own reconnect loop and restart detection (the policy is in
//! the module docs of [`super`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use presence_core::store::{RegistryOp, StoreError, StoreOutput};
use presence_core::user::UserId;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionInfo, RedisConnectionInfo};
use tokio::sync::{mpsc, watch, Notify};

use super::changes::ChangeFeed;
use super::config::{RedisConfig, RedisTarget, RedisUrlError};
use super::connect::{AbortOnDrop, RedisConnector, TcpConnector};
use super::ops::{publish_privacy, run_op, Topology};
use super::reply::{classify, read_run_ids, warn_if_evicting};
use crate::store::{Notice, RegistryStore, StoreFuture};

/// The registry on one Redis node, over a stream from a [`RedisConnector`], with its own
/// reconnect loop. See the module docs for the restart policy.
///
/// Dropping it stops the background task and closes the connection.
pub struct RedisRegistry {
    inner: Arc<Single>,
    changes: ChangeFeed,
    _supervisor: AbortOnDrop,
}

/// State shared by the executor's ops and its supervisor task.
struct Single {
    config: RedisConfig,
    /// The connection ops use, `None` while (re)connecting. A std mutex: held only to clone or
    /// swap, never across an await.
    live: Mutex<Option<Live>>,
    /// Ops wake the supervisor: the connection broke, or an op timed out (probe it).
    events: Notify,
    /// Set with `events` when an op timed out: the supervisor health-checks the connection.
    probe: AtomicBool,
    /// The restart generation (see [`RegistryStore::restarts`]).
    restarts: watch::Sender<u64>,
    /// Whether a connection is up, for readiness and [`RedisRegistry::wait_connected`].
    connected: watch::Sender<bool>,
}

/// One established connection. `epoch` tells connections apart, so an op that fails on an old
/// connection cannot tear down its replacement.
struct Live {
    conn: MultiplexedConnection,
    epoch: u64,
}

impl Single {
    fn current(&self) -> Option<(MultiplexedConnection, u64)> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.as_ref().map(|l| (l.conn.clone(), l.epoch))
    }

    fn is_current(&self, epoch: u64) -> bool {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.as_ref().is_some_and(|l| l.epoch == epoch)
    }

    /// Withdraws connection `epoch` (if it is still the live one) and wakes the supervisor.
    fn mark_broken(&self, epoch: u64) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if live.as_ref().is_some_and(|l| l.epoch == epoch) {
            *live = None;
            drop(live);
            self.connected.send_replace(false);
            self.events.notify_one();
        }
    }

    fn request_probe(&self) {
        self.probe.store(true, Ordering::Relaxed);
        self.events.notify_one();
    }
}

impl RedisRegistry {
    /// A registry on the single node of `url` (`redis://...` or `redis+unix://...`), connecting
    /// over TCP or the Unix socket. Use [`open_redis`](super::open_redis) to also accept cluster URLs.
    ///
    /// Returns at once and connects in the background. Must be called inside a tokio runtime.
    pub fn from_url(url: &str, config: RedisConfig) -> Result<RedisRegistry, RedisUrlError> {
        match RedisTarget::parse(url)? {
            RedisTarget::Single(info) => RedisRegistry::for_target(&info, config),
            RedisTarget::Cluster(_) => Err(RedisUrlError::WrongTopology(
                "a redis+cluster:// url needs RedisClusterRegistry (or open_redis)",
            )),
        }
    }

    pub(super) fn for_target(
        info: &ConnectionInfo,
        config: RedisConfig,
    ) -> Result<RedisRegistry, RedisUrlError> {
        let connector = TcpConnector::for_addr(info.addr())?;
        Ok(RedisRegistry::with_connector(Arc::new(connector), info.redis_settings().clone(), config))
    }

    /// A registry over streams from `connector`; `redis` holds the handshake settings (database,
    /// credentials, protocol; `RedisConnectionInfo::default()` is db 0, no auth, RESP2).
    ///
    /// Returns at once and connects in the background. Must be called inside a tokio runtime.
    pub fn with_connector(
        connector: Arc<dyn RedisConnector>,
        redis: RedisConnectionInfo,
        config: RedisConfig,
    ) -> RedisRegistry {
        let config_clone = config.clone();
        let inner = Arc::new(Single {
            config,
            live: Mutex::new(None),
            events: Notify::new(),
            probe: AtomicBool::new(false),
            restarts: watch::Sender::new(0),
            connected: watch::Sender::new(false),
        });
        let changes = ChangeFeed::single(Arc::clone(&connector), redis.clone(), config_clone);
        let task = tokio::spawn(supervise_single(Arc::clone(&inner), connector, redis));
        RedisRegistry { inner, changes, _supervisor: AbortOnDrop(task) }
    }

    /// Whether a connection is currently up. For tests and diagnostics: `/readyz` answers from
    /// the core's readiness (its view of the registry's recent results), not from this.
    pub fn is_connected(&self) -> bool {
        *self.inner.connected.borrow()
    }

    /// Waits up to `limit` for a connection; `true` if connected.
    pub async fn wait_connected(&self, limit: Duration) -> bool {
        wait_true(self.inner.connected.subscribe(), limit).await
    }
}

/// Waits up to `limit` for `rx` to read `true`.
pub(super) async fn wait_true(mut rx: watch::Receiver<bool>, limit: Duration) -> bool {
    tokio::time::timeout(limit, rx.wait_for(|c| *c)).await.is_ok_and(|r| r.is_ok())
}

impl RedisRegistry {
    /// Runs one operation on the current connection, bounded by the op timeout; a failure that
    /// means the connection is broken starts its replacement.
    fn run<F, Fut>(&self, f: F) -> StoreFuture
    where
        F: FnOnce(MultiplexedConnection) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = redis::RedisResult<StoreOutput>> + Send,
    {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let Some((conn, epoch)) = inner.current() else {
                return Err(StoreError::Unavailable("redis: not connected (reconnecting)".into()));
            };
            let run = f(conn);
            match tokio::time::timeout(inner.config.op_timeout, run).await {
                Ok(Ok(out)) => Ok(out),
                Ok(Err(e)) => {
                    let (err, broken) = classify(&e);
                    if broken {
                        tracing::warn!(error = %e, "redis connection failed; reconnecting");
                        inner.mark_broken(epoch);
                    }
                    Err(err)
                }
                Err(_) => {
                    inner.request_probe();
                    Err(StoreError::Timeout)
                }
            }
        })
    }
}

impl RegistryStore for RedisRegistry {
    fn execute(&self, op: RegistryOp) -> StoreFuture {
        let (server_id, read_from) = (self.inner.config.server_id.clone(), self.inner.config.read_from);
        self.run(move |conn| async move { run_op(conn, &server_id, op, Topology::Single, read_from).await })
    }

    fn announce_privacy(&self, user: &UserId) -> StoreFuture {
        let user = user.clone();
        self.run(move |mut conn| async move { publish_privacy(&mut conn, Topology::Single, &user).await })
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
        "redis"
    }
}

/// Opens one connection: stream, handshake, driver task, run_id.
async fn connect_single(
    connector: &dyn RedisConnector,
    redis: &RedisConnectionInfo,
    config: &RedisConfig,
) -> Result<(MultiplexedConnection, AbortOnDrop, Option<Vec<String>>), String> {
    let limit = config.connect_timeout;
    let stream = tokio::time::timeout(limit, connector.connect())
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
    // Our own timeouts bound every op; the crate's default 500 ms response timeout would only add
    // a second, shorter deadline.
    let cfg = AsyncConnectionConfig::new().set_response_timeout(None).set_connection_timeout(None);
    let (mut conn, driver) =
        tokio::time::timeout(limit, MultiplexedConnection::new_with_config(redis, stream, cfg))
            .await
            .map_err(|_| "handshake timed out".to_owned())?
            .map_err(|e| format!("handshake: {e}"))?;
    // The driver moves bytes between the socket and the connection handles: it must run before
    // any command can complete. It ends when the socket closes.
    let driver = AbortOnDrop(tokio::spawn(driver));
    let ids = tokio::time::timeout(config.op_timeout, read_run_ids(&mut conn))
        .await
        .map_err(|_| "INFO server timed out".to_owned())?
        .map_err(|e| format!("INFO server: {e}"))?;
    warn_if_evicting(&mut conn, config.op_timeout).await;
    Ok((conn, driver, ids))
}

/// Health check: `Ok(ids)` if the connection answered in time.
async fn health_check(
    conn: &mut MultiplexedConnection,
    limit: Duration,
) -> Result<Option<Vec<String>>, String> {
    match tokio::time::timeout(limit, read_run_ids(conn)).await {
        Ok(Ok(ids)) => Ok(ids),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within the op timeout".to_owned()),
    }
}

/// The reconnect loop: connect (with backoff), publish, watch, tear down, repeat. Runs until the
/// registry is dropped.
async fn supervise_single(
    inner: Arc<Single>,
    connector: Arc<dyn RedisConnector>,
    redis: RedisConnectionInfo,
) {
    let config = inner.config.clone();
    let mut attempt: u32 = 0;
    let mut epoch: u64 = 0;
    let mut ever_connected = false;
    let mut last_ids: Option<Vec<String>> = None;
    loop {
        let (conn, driver, ids) = match connect_single(&*connector, &redis, &config).await {
            Ok(c) => c,
            Err(e) => {
                let delay = config.backoff(attempt);
                // Warn on the first failure of an outage and then now and again, not every 50 ms.
                if attempt.is_multiple_of(20) {
                    tracing::warn!(error = %e, attempt, ?delay, "redis connect failed; retrying");
                } else {
                    tracing::debug!(error = %e, attempt, ?delay, "redis connect failed; retrying");
                }
                attempt = attempt.saturating_add(1);
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        attempt = 0;
        epoch += 1;
        *inner.live.lock().unwrap_or_else(|e| e.into_inner()) = Some(Live { conn: conn.clone(), epoch });
        inner.connected.send_replace(true);
        if ever_connected {
            // Publish first, then bump: the re-registrations the bump triggers find a connection.
            let run_id_changed = ids.is_none() || last_ids.is_none() || ids != last_ids;
            tracing::warn!(
                run_id_changed,
                "redis reconnected; assuming its data may be lost (restart generation bumped)"
            );
            inner.restarts.send_modify(|g| *g += 1);
        } else {
            tracing::info!("redis connected");
        }
        ever_connected = true;
        if ids.is_some() {
            last_ids = ids;
        }
        watch_connection(&inner, conn, driver, epoch, &mut last_ids).await;
    }
}

/// Watches connection `epoch` until it breaks (its socket closed, an op marked it broken, or a
/// health check failed), bumping the generation if its run_id changes meanwhile; then withdraws
/// it and closes the socket.
async fn watch_connection(
    inner: &Single,
    mut conn: MultiplexedConnection,
    mut driver: AbortOnDrop,
    epoch: u64,
    last_ids: &mut Option<Vec<String>>,
) {
    let config = &inner.config;
    let mut tick = tokio::time::interval(config.health_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; we just checked
    loop {
        let check = tokio::select! {
            // Fixed polling order, so the simulation replays runs exactly.
            biased;
            _ = &mut driver.0 => {
                tracing::warn!("redis connection closed");
                break;
            }
            _ = inner.events.notified() => {
                if !inner.is_current(epoch) {
                    break; // an op marked it broken
                }
                inner.probe.swap(false, Ordering::Relaxed)
            }
            _ = tick.tick() => true,
        };
        if !check {
            continue;
        }
        match health_check(&mut conn, config.op_timeout).await {
            Ok(Some(ids)) if last_ids.as_ref().is_some_and(|old| *old != ids) => {
                tracing::warn!("redis run_id changed without a reconnect (restart generation bumped)");
                *last_ids = Some(ids);
                inner.restarts.send_modify(|g| *g += 1);
            }
            Ok(Some(ids)) => *last_ids = Some(ids),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "redis health check failed; reconnecting");
                break;
            }
        }
    }
    inner.mark_broken(epoch);
    drop(driver); // aborts the driver task, closing the socket
}
