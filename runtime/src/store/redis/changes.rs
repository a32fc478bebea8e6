//! Change notices for subscriptions over Redis pub/sub: the feed's handle, and its task on a
//! single node (a cluster's task is in [`super::sharded`]).
//!
//! Every registry write that changes a user's sessions (`Register`, `EndSession`, `Reap`) is
//! followed by `PUBLISH presence:{<user>}` (see the Redis executor). A server whose clients watch a
//! user subscribes to that user's channel once, however many clients watch it, on a dedicated
//! pub/sub connection owned by [`ChangeFeed`]'s task:
//!
//! - it stays connected (privacy notices concern every server, watched users or not), through the
//!   same [`RedisConnector`] as the executor (so the simulator can run it too);
//! - it is always subscribed to [`PRIVACY_CHANNEL`]: a message there names a user whose privacy
//!   settings or contacts changed and becomes [`Notice::PrivacyChanged`];
//! - a message on a user's channel becomes [`Notice::Changed`] for its user: only a hint, the core
//!   reads the user again;
//! - a new subscription is followed by a `Changed` for the user, so a change made before the
//!   subscription took effect is read too;
//! - a lost connection (an I/O error, a Redis restart, or no answer to the periodic `PING` within
//!   the op timeout) is replaced with backoff, every channel subscribed again, and then a
//!   [`Notice::Resync`] is sent: messages published meanwhile were lost, so every watched user is
//!   read again and the privacy cache is dropped. The first connection sends it too: the cache
//!   may hold entries read before the feed could hear their changes.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use presence_core::user::UserId;
use redis::aio::{PubSub, PubSubSink, PubSubStream};
use redis::RedisConnectionInfo;
use tokio::sync::mpsc;

use super::config::RedisConfig;
use super::connect::{AbortOnDrop, RedisConnector};
use crate::store::{change_channel, channel_user, Notice, PRIVACY_CHANNEL};

/// What the feed's owner asks of its task.
pub(super) enum Cmd {
    Watch(UserId),
    Unwatch(UserId),
}

/// The subscriber side of change notices: a background task and its command queue.
pub(crate) struct ChangeFeed {
    cmds: mpsc::UnboundedSender<Cmd>,
    notices: Mutex<Option<mpsc::UnboundedReceiver<Notice>>>,
    _task: AbortOnDrop,
}

impl ChangeFeed {
    /// A feed over streams from `connector` (single node).
    pub(crate) fn single(
        connector: Arc<dyn RedisConnector>,
        redis: RedisConnectionInfo,
        config: RedisConfig,
    ) -> ChangeFeed {
        let (cmds, cmd_rx) = mpsc::unbounded_channel();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = AbortOnDrop(tokio::spawn(run_single(connector, redis, config, cmd_rx, tx)));
        ChangeFeed { cmds, notices: Mutex::new(Some(rx)), _task: task }
    }

    /// A feed on a Redis Cluster, over sharded pub/sub ([`super::sharded`]).
    pub(crate) fn cluster(nodes: Vec<redis::ConnectionInfo>, config: RedisConfig) -> ChangeFeed {
        let (cmds, cmd_rx) = mpsc::unbounded_channel();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = AbortOnDrop(tokio::spawn(super::sharded::run(nodes, config, cmd_rx, tx)));
        ChangeFeed { cmds, notices: Mutex::new(Some(rx)), _task: task }
    }

    pub(crate) fn watch(&self, user: &UserId) {
        let _ = self.cmds.send(Cmd::Watch(user.clone()));
    }

    pub(crate) fn unwatch(&self, user: &UserId) {
        let _ = self.cmds.send(Cmd::Unwatch(user.clone()));
    }

    pub(crate) fn notices(&self) -> Option<mpsc::UnboundedReceiver<Notice>> {
        self.notices.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

pub(super) fn apply(wanted: &mut BTreeSet<UserId>, cmd: Cmd) {
    match cmd {
        Cmd::Watch(u) => {
            wanted.insert(u);
        }
        Cmd::Unwatch(u) => {
            wanted.remove(&u);
        }
    }
}

async fn run_single(
    connector: Arc<dyn RedisConnector>,
    redis: RedisConnectionInfo,
    config: RedisConfig,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    notices: mpsc::UnboundedSender<Notice>,
) {
    let mut wanted: BTreeSet<UserId> = BTreeSet::new();
    let mut attempt = 0u32;
    loop {
        if cmds.is_closed() && cmds.is_empty() {
            return;
        }
        if attempt > 0 {
            tokio::time::sleep(config.backoff(attempt)).await;
        }
        attempt = attempt.saturating_add(1);
        let (mut sink, mut messages) = match connect(&*connector, &redis, &config).await {
            Ok(pubsub) => pubsub.split(),
            Err(e) => {
                tracing::warn!(error = %e, "change feed: cannot connect to redis; retrying");
                continue;
            }
        };
        // Drain commands that came meanwhile, then subscribe to everything wanted at once.
        while let Ok(cmd) = cmds.try_recv() {
            apply(&mut wanted, cmd);
        }
        let mut channels: Vec<String> = wanted.iter().map(change_channel).collect();
        channels.push(PRIVACY_CHANNEL.to_owned());
        match tokio::time::timeout(config.op_timeout, sink.subscribe(channels)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "change feed: SUBSCRIBE failed; reconnecting");
                continue;
            }
            Err(_) => {
                tracing::warn!("change feed: SUBSCRIBE timed out; reconnecting");
                continue;
            }
        }
        attempt = 0;
        // Messages published while we were not subscribed are lost: read everything again.
        let _ = notices.send(Notice::Resync);
        if !serve_subscribed(&config, &mut wanted, &mut sink, &mut messages, &mut cmds, &notices).await {
            return;
        }
    }
}

/// Serves one subscribed connection: commands, messages and the periodic `PING`, until the
/// connection fails (`true`: reconnect) or the feed was dropped (`false`).
async fn serve_subscribed(
    config: &RedisConfig,
    wanted: &mut BTreeSet<UserId>,
    sink: &mut PubSubSink,
    messages: &mut PubSubStream,
    cmds: &mut mpsc::UnboundedReceiver<Cmd>,
    notices: &mpsc::UnboundedSender<Notice>,
) -> bool {
    let mut health = tokio::time::interval(config.health_check_interval);
    health.tick().await;
    loop {
        tokio::select! {
            biased;
            cmd = cmds.recv() => {
                let Some(cmd) = cmd else { return false };
                let (user, watch) = match cmd {
                    Cmd::Watch(u) => (u, true),
                    Cmd::Unwatch(u) => (u, false),
                };
                let changed = if watch { wanted.insert(user.clone()) } else { wanted.remove(&user) };
                if !changed {
                    continue;
                }
                let channel = change_channel(&user);
                let result = if watch {
                    tokio::time::timeout(config.op_timeout, sink.subscribe(&channel)).await
                } else {
                    tokio::time::timeout(config.op_timeout, sink.unsubscribe(&channel)).await
                };
                if !matches!(result, Ok(Ok(()))) {
                    tracing::warn!("change feed: (UN)SUBSCRIBE failed; reconnecting");
                    return true;
                }
                if watch {
                    let _ = notices.send(Notice::Changed(user));
                }
            }
            msg = messages.next() => {
                let Some(msg) = msg else {
                    tracing::warn!("change feed: connection lost; reconnecting");
                    return true;
                };
                if msg.get_channel_name() == PRIVACY_CHANNEL {
                    let named = msg.get_payload::<String>().ok().and_then(|u| UserId::new(&u).ok());
                    match named {
                        Some(user) => {
                            let _ = notices.send(Notice::PrivacyChanged(user));
                        }
                        // Not a user id: drop everything rather than keep a stale grant.
                        None => {
                            let _ = notices.send(Notice::Resync);
                        }
                    }
                } else if let Some(user) = channel_user(msg.get_channel_name()) {
                    let _ = notices.send(Notice::Changed(user));
                }
            }
            _ = health.tick() => {
                // In subscriber mode Redis answers `["pong", ""]`, not `+PONG`: any reply is
                // proof of life, so take it as a raw value rather than convert it.
                let ping = tokio::time::timeout(config.op_timeout, sink.ping::<redis::Value>()).await;
                if !matches!(ping, Ok(Ok(_))) {
                    tracing::warn!("change feed: no answer to PING; reconnecting");
                    return true;
                }
            }
        }
    }
}

async fn connect(
    connector: &dyn RedisConnector,
    redis: &RedisConnectionInfo,
    config: &RedisConfig,
) -> Result<PubSub, String> {
    let limit = config.connect_timeout;
    let stream = tokio::time::timeout(limit, connector.connect())
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
    tokio::time::timeout(limit, PubSub::new(redis, stream))
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| format!("handshake: {e}"))
}
