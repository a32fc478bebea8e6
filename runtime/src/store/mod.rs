//! Store executors: run the core's [`RegistryOp`]s and [`DurableOp`]s against real stores.
//!
//! The core decides *what* to write and when to retry; an executor only runs one operation and
//! reports how it went. The driver holds executors behind `Arc<dyn RegistryStore>` /
//! `Arc<dyn DurableStore>`, so production, the embedded default and the simulator can swap them.
//!
//! | module       | role                                                                     |
//! |--------------|--------------------------------------------------------------------------|
//! | [`redis`]    | the registry on Redis (single node over any byte stream, or Redis Cluster), and its change feed for subscriptions |
//! | [`dynamo`]   | the durable store on DynamoDB (or a DynamoDB-compatible server)          |
//! | [`embedded`] | the zero-install defaults: in-process registry, `redb` file for last_seen |
//!
//! Contract every executor honours (the core's retry logic depends on it):
//!
//! - **Bounded.** A call never hangs: each one finishes within the executor's op timeout, and a
//!   call that did not finish in time is reported as [`StoreError::Timeout`] (it may or may not
//!   have been applied, which is fine: every op is idempotent).
//! - **Max-register.** `last_seen` writes never make a stored value go back in time, in either
//!   store, whatever order they arrive in (clock skew, retries, two servers racing).
//! - **Owner-only removal.** Ending a session removes only that session's field of the registry
//!   hash (the session id is the field name), never another device's or another server's entry.
//! - **Errors are not answers.** A failed read is an error, never "offline" or "never seen"; a value
//!   that exists but cannot be parsed is logged at `warn` and reported as absent.
//! - **Order.** Batch reads answer one entry per requested user, in the request's order
//!   (duplicates included).
//!
//! The public schema the Redis and DynamoDB executors write is described in each module's docs; it is
//! read by operators with `redis-cli` and the AWS CLI, so it never changes.

use std::future::Future;
use std::pin::Pin;

use presence_core::store::{DurableOp, RegistryOp, StoreError, StoreOutput};
use presence_core::user::UserId;
use tokio::sync::mpsc;

pub mod dynamo;
pub mod embedded;
mod redb_writer;
pub mod redis;

pub use self::dynamo::{DynamoConfig, DynamoDurable};
pub use self::embedded::{MemoryRegistry, OpenError, RedbDurable};
pub use self::redis::{
    open_redis, AsyncStream, ConnectFuture, ReadFrom, RedisClusterRegistry, RedisConfig, RedisConnector,
    RedisRegistry, RedisTarget, RedisUrlError, TcpConnector,
};

/// What an executor's `execute` returns: a boxed, `Send` future, so the traits stay object safe
/// and the driver can spawn each operation on its own task.
pub type StoreFuture = Pin<Box<dyn Future<Output = Result<StoreOutput, StoreError>> + Send + 'static>>;

/// Executes registry operations (the online hash and the cached last_seen).
pub trait RegistryStore: Send + Sync + 'static {
    /// Executes one op. Must never hang: each call is bounded by the executor's op timeout
    /// (-> [`StoreError::Timeout`]).
    ///
    /// The returned future owns everything it needs (`'static`): the driver may spawn it and drop
    /// its handle to the executor.
    fn execute(&self, op: RegistryOp) -> StoreFuture;

    /// A generation counter bumped every time the executor detects that the store may have lost
    /// its data (reconnected after a lost connection, or a new Redis `run_id`). The driver feeds
    /// `Input::RegistryRestarted` on every change, and the core re-registers its live sessions.
    ///
    /// The value starts at 0; only changes mean anything.
    fn restarts(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Short label for logs and metrics (`"redis"`, `"redis-cluster"`, `"memory"`).
    fn kind(&self) -> &'static str;

    /// Start delivering change notices for `user` (its first watcher on this server). Once the
    /// subscription is in place, a [`Notice::Changed`] for the user follows, so a change made
    /// before it took effect is read too. Never blocks; failures are retried by the executor.
    fn watch(&self, user: &UserId);

    /// Stop delivering change notices for `user` (its last watcher left).
    fn unwatch(&self, user: &UserId);

    /// Tells every server that `user`'s privacy settings or contacts changed (each then drops
    /// what it cached of them: [`Notice::PrivacyChanged`]). Done once the notice is sent.
    fn announce_privacy(&self, user: &UserId) -> StoreFuture;

    /// The change notices, once (the driver takes them at start; later calls get `None`).
    fn notices(&self) -> Option<mpsc::UnboundedReceiver<Notice>>;
}

/// A change notice from the registry: a hint that a watched user's presence may have changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// `user`'s sessions changed (a session registered or ended, or was reaped).
    Changed(UserId),
    /// `user`'s privacy settings or contact list changed (on any server).
    PrivacyChanged(UserId),
    /// Notices may have been lost (the change channel reconnected): read every watched user.
    Resync,
}

/// The pub/sub channel of `user`'s changes: `presence:{<user>}`. Plain `PUBLISH` on a single
/// node; on a cluster, sharded pub/sub (`SPUBLISH` / `SSUBSCRIBE`), where the hash tag puts the
/// channel in the user's slot, so a notice stays on the shard that holds the user's keys.
pub fn change_channel(user: &UserId) -> String {
    format!("presence:{{{user}}}")
}

/// The pub/sub channel of privacy changes, one for all users: a message's payload is the user
/// whose settings or contacts changed (docs/PRIVACY.md, "Propagation").
pub const PRIVACY_CHANNEL: &str = "presence:privacy";

/// The user of a change channel name.
pub fn channel_user(channel: &str) -> Option<UserId> {
    UserId::new(channel.strip_prefix("presence:{")?.strip_suffix('}')?).ok()
}

/// Executes durable-store operations (the source of truth for last_seen).
pub trait DurableStore: Send + Sync + 'static {
    /// Executes one op. Must never hang: each call is bounded by the executor's op timeout
    /// (-> [`StoreError::Timeout`]).
    fn execute(&self, op: DurableOp) -> StoreFuture;

    /// Short label for logs and metrics (`"dynamodb"`, `"redb"`).
    fn kind(&self) -> &'static str;
}

/// Runs `fut` with a deadline, turning "no answer in time" into [`StoreError::Timeout`]: the
/// bound of the DynamoDB and redb executors. The Redis executors time their ops themselves (an op
/// that timed out also makes them probe or suspect the connection), and bound connects and health
/// checks by their own timeouts; they report a late op as the same [`StoreError::Timeout`].
pub(crate) async fn with_timeout<T>(
    limit: std::time::Duration,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_elapsed) => Err(StoreError::Timeout),
    }
}
