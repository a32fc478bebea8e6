//! Change notices on a Redis Cluster, over sharded pub/sub (`SSUBSCRIBE` / `SPUBLISH`, Redis 7).
//!
//! A cluster broadcasts a plain `PUBLISH` over its bus to every node, so one notice costs every
//! shard some work, and that cost grows with the cluster. `SPUBLISH` stays on the shard that owns
//! the channel's slot. `presence:{<user>}` carries the user's hash tag, so a user's notices stay on
//! the shard that holds the user's keys; `presence:privacy` lives on the one shard that owns its
//! slot.
//!
//! A subscriber must therefore reach the owner of every watched user's slot. The `redis` crate's
//! cluster connection does that for us, with RESP3 and a push sender: it keeps a connection per
//! node, routes each `SSUBSCRIBE` to the slot's owner, and, through its subscription tracker,
//! subscribes again after a reconnect and after a topology refresh (the subscriptions the server
//! confirmed; one that failed is this task's to retry, every health-check interval). What this task
//! adds:
//!
//! - an `ssubscribe` confirmation of a user's channel becomes [`Notice::Changed`] for that user. A
//!   confirmation comes for our own subscribe and for every resubscription the crate makes after a
//!   lost connection, so a notice lost while unsubscribed is made good by a read that starts after
//!   the subscription is in effect again;
//! - an `ssubscribe` confirmation of [`PRIVACY_CHANNEL`] becomes [`Notice::Resync`]: privacy
//!   notices may have been lost, so the privacy cache is dropped (the single-node feed sends it on
//!   every connect for the same reason);
//! - a `sunsubscribe` of a channel we still want (Redis unsubscribes a shard channel when its slot
//!   moves to another node) is subscribed again, which the crate routes to the new owner;
//! - `smessage` pushes become notices as in the single-node feed.
//!
//! A lost node connection shows as a `Disconnection` push and is logged; the crate reconnects and
//! resubscribes. Unlike the single-node feed there is no `PING` of the subscription connections:
//! a silent partition of one is noticed when its TCP connection fails (the same limit as the
//! cluster executor's crate-managed connections, see [`super`]).

use std::collections::BTreeSet;

use presence_core::user::UserId;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{ConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use super::changes::{apply, Cmd};
use super::cluster::connect_cluster;
use super::config::RedisConfig;
use crate::store::{change_channel, channel_user, Notice, PRIVACY_CHANNEL};

/// The feed's task: connects (with backoff), subscribes, then serves commands and pushes until the
/// feed is dropped.
pub(super) async fn run(
    nodes: Vec<ConnectionInfo>,
    config: RedisConfig,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    notices: mpsc::UnboundedSender<Notice>,
) {
    let (push_tx, mut pushes) = mpsc::unbounded_channel::<PushInfo>();
    let client = match ClusterClient::builder(nodes)
        .use_protocol(ProtocolVersion::RESP3)
        .push_sender(push_tx)
        .connection_timeout(config.connect_timeout)
        .response_timeout(config.op_timeout)
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            // The executor built a client from the same nodes, so this cannot happen in practice.
            tracing::error!(error = %e, "change feed: cannot build the cluster client; no live notices");
            return;
        }
    };
    // No need to watch for the feed being dropped meanwhile: dropping it aborts this task.
    let conn = connect_cluster(&client, &config, "change feed").await;
    let mut wanted: BTreeSet<UserId> = BTreeSet::new();
    while let Ok(cmd) = cmds.try_recv() {
        apply(&mut wanted, cmd);
    }
    let mut feed = Feed { conn, config, wanted, retry: BTreeSet::new(), notices };
    let mut channels: Vec<String> = feed.wanted.iter().map(change_channel).collect();
    channels.push(PRIVACY_CHANNEL.to_owned());
    // Until this lands nothing is heard; the confirmations it brings make up for what was missed.
    feed.subscribe(channels).await;
    let mut retry = tokio::time::interval(feed.config.health_check_interval);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            cmd = cmds.recv() => {
                let Some(cmd) = cmd else { return };
                feed.on_cmd(cmd).await;
            }
            push = pushes.recv() => {
                let Some(push) = push else { return };
                feed.on_push(push).await;
            }
            _ = retry.tick(), if !feed.retry.is_empty() => {
                let channels = std::mem::take(&mut feed.retry).into_iter().filter(|c| feed.wants(c)).collect();
                feed.subscribe(channels).await;
            }
        }
    }
}

/// The feed's task state once connected.
struct Feed {
    conn: ClusterConnection,
    config: RedisConfig,
    /// The users watched on this server.
    wanted: BTreeSet<UserId>,
    /// Channels whose `SSUBSCRIBE` failed (a node down): tried again every health-check interval.
    /// The crate resubscribes only what the server confirmed, so these are ours to retry.
    retry: BTreeSet<String>,
    notices: mpsc::UnboundedSender<Notice>,
}

impl Feed {
    fn wants(&self, channel: &str) -> bool {
        channel == PRIVACY_CHANNEL || channel_user(channel).is_some_and(|u| self.wanted.contains(&u))
    }

    async fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Watch(user) => {
                if self.wanted.insert(user.clone()) {
                    self.subscribe(vec![change_channel(&user)]).await;
                }
            }
            Cmd::Unwatch(user) => {
                if self.wanted.remove(&user) {
                    let channel = change_channel(&user);
                    self.retry.remove(&channel);
                    match tokio::time::timeout(self.config.op_timeout, self.conn.sunsubscribe(&channel)).await
                    {
                        Ok(Ok(())) => {}
                        // A stray subscription costs only its messages, which on_push drops.
                        _ => tracing::warn!("change feed: SUNSUBSCRIBE failed"),
                    }
                }
            }
        }
    }

    /// `SSUBSCRIBE`s `channels`, one command each (the channels of different users live in
    /// different slots). A failure (a node down, a slot moving) is kept for the retry: the
    /// confirmation, and with it the read that makes up for lost notices, comes when it lands.
    async fn subscribe(&mut self, channels: Vec<String>) {
        for channel in channels {
            match tokio::time::timeout(self.config.op_timeout, self.conn.ssubscribe(&channel)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "change feed: SSUBSCRIBE failed; retrying");
                    self.retry.insert(channel);
                }
                Err(_) => {
                    tracing::warn!("change feed: SSUBSCRIBE timed out; retrying");
                    self.retry.insert(channel);
                }
            }
        }
    }

    async fn on_push(&mut self, push: PushInfo) {
        let channel = push.data.first().and_then(text);
        match (push.kind, channel) {
            (PushKind::SMessage, Some(channel)) => {
                if channel == PRIVACY_CHANNEL {
                    let named = push.data.get(1).and_then(text).and_then(|u| UserId::new(&u).ok());
                    // Not a user id: drop everything rather than keep a stale grant.
                    let _ = self.notices.send(named.map_or(Notice::Resync, Notice::PrivacyChanged));
                } else if let Some(user) = channel_user(&channel).filter(|u| self.wanted.contains(u)) {
                    let _ = self.notices.send(Notice::Changed(user));
                }
            }
            (PushKind::SSubscribe, Some(channel)) => {
                if channel == PRIVACY_CHANNEL {
                    let _ = self.notices.send(Notice::Resync);
                } else if let Some(user) = channel_user(&channel).filter(|u| self.wanted.contains(u)) {
                    let _ = self.notices.send(Notice::Changed(user));
                }
            }
            // Unsubscribed by the server while still wanted: the slot moved to another node.
            (PushKind::SUnsubscribe, Some(channel)) if self.wants(&channel) => {
                tracing::info!(
                    "change feed: a shard channel was unsubscribed (slot moved); subscribing again"
                );
                self.subscribe(vec![channel]).await;
            }
            (PushKind::Disconnection, _) => {
                tracing::warn!(
                    "change feed: a cluster node connection was lost; the crate reconnects and resubscribes"
                );
            }
            _ => {}
        }
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}
