//! Writes to the stores: registering sessions, ending them, and durable last_seen, with retries.
//!
//! Each session is a small reconciliation loop: its *wanted* state (live, or ended with a value)
//! against what the registry has *acknowledged*. At most one registry operation per session is in
//! flight, so a late `Register` can never land after its own `EndSession` and leave a ghost.
//! Durable writes are one per user and coalesce: a max-register loses nothing when only the newest
//! value is sent. Failures back off exponentially with seeded jitter; nothing is ever dropped.

use std::time::Duration;

use rand_chacha::rand_core::RngCore;

#[cfg(feature = "planted-bugs")]
use crate::config::PlantedBug;
use crate::store::{DurableOp, EffectId, LeaseToken, RegistryOp, StoreError, StoreOp, StoreOutput};
use crate::time::{MonoTime, UnixMillis};
use crate::user::{SessionId, UserId};

use super::{InFlight, Presence};

/// The core's own handle of a session (the `SessionId` is the registry's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Sid(pub(super) u64);

/// A session this server owns in the registry.
#[derive(Debug)]
pub(super) struct Session {
    user: UserId,
    id: SessionId,
    /// `Some(last_seen)` once the session ended.
    ended: Option<UnixMillis>,
    /// The registry holds our entry (acknowledged since the last registry restart or new lease).
    registered: bool,
    /// The lease of the last `Register` sent: its index lists the session, so the end removes it.
    token: Option<LeaseToken>,
    in_flight: Option<EffectId>,
    attempts: u32,
    retry_at: Option<MonoTime>,
}

impl DurableWrite {
    /// `value` (or a newer one) is acknowledged by the durable store.
    pub(super) fn is_durable(&self, value: UnixMillis) -> bool {
        self.acked.is_some_and(|a| a >= value)
    }
}

impl Session {
    pub(super) fn new(user: UserId, id: SessionId) -> Self {
        Session {
            user,
            id,
            ended: None,
            registered: false,
            token: None,
            in_flight: None,
            attempts: 0,
            retry_at: None,
        }
    }

    pub(super) fn is_unregistered(&self) -> bool {
        self.ended.is_none() && !self.registered
    }
}

/// A pending durable write for one user, then the refresh of the registry's cached value.
///
/// Two phases: the durable write of the newest value (coalesced), then `SetLastSeen` of the durable
/// value in the registry (the applied value, or the one read back after a superseded write). After
/// a registry data loss, a session end may have put a value below the durable one into the empty
/// cache; this refresh raises it (docs/STORES.md, "Cache fill").
#[derive(Debug)]
pub(super) struct DurableWrite {
    /// Newest value wanted in the durable store.
    value: UnixMillis,
    /// Highest value the durable store acknowledged (applied or superseded).
    acked: Option<UnixMillis>,
    /// A durable value (applied by us, or read back) still to be set in the registry.
    refresh: Option<UnixMillis>,
    /// Read the durable value back (consistent read) before refreshing the cache with it: after a
    /// superseded write (the stored value is unknown: ours, if an earlier attempt timed out after
    /// applying it, or another server's newer one), and after a failed refresh or a registry
    /// restart (ours may no longer be the maximum when the refresh lands in an emptied cache).
    read_back: bool,
    /// The registry lost its data while `value` was not yet durable: record it there again as a
    /// session end does (the cache if present, else the pending key) before anything else, or
    /// readers would fall back to an older durable value until the write lands (I1).
    rerecord: bool,
    /// The operation in flight, if one is.
    in_flight: Option<(EffectId, DurablePhase)>,
    attempts: u32,
    retry_at: Option<MonoTime>,
}

/// What a user's in-flight durable work is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DurablePhase {
    /// The durable write of this value.
    Write(UnixMillis),
    /// The registry refresh of this (durable) value.
    Refresh(UnixMillis),
    /// A consistent read of the durable value, after a superseded write.
    ReadBack,
    /// The registry record of this not-yet-durable value, issued after this many registry
    /// restarts (`Stats::registry_restarts`).
    Record(UnixMillis, u64),
}

/// Which write a retry timer belongs to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum RetryKey {
    Session(Sid),
    Durable(UserId),
}

impl Presence {
    /// Marks a session ended with `last_seen` and queues its registry end and durable write.
    pub(super) fn end_session(&mut self, sid: Sid, last_seen: UnixMillis) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if s.ended.is_some() {
            return;
        }
        s.ended = Some(last_seen);
        // A failed Register waiting for its retry is moot now: send the end at once.
        if let Some(at) = s.retry_at.take() {
            self.retries.remove(&(at, RetryKey::Session(sid)));
            s.attempts = 0;
        }
        let user = s.user.clone();
        self.ending_sessions += 1;
        self.dirty_sessions.insert(sid);
        self.queue_durable(user, last_seen);
    }

    pub(super) fn queue_durable(&mut self, user: UserId, value: UnixMillis) {
        match self.durable.get_mut(&user) {
            Some(w) => w.value = w.value.max(value),
            None => {
                self.user_ref(&user);
                let w = DurableWrite {
                    value,
                    acked: None,
                    refresh: None,
                    read_back: false,
                    rerecord: false,
                    in_flight: None,
                    attempts: 0,
                    retry_at: None,
                };
                self.durable.insert(user.clone(), w);
            }
        }
        self.dirty_durable.insert(user);
    }

    /// Issues every write that is ready (not in flight, not waiting for a retry).
    pub(super) fn issue_writes(&mut self) {
        while let Some(sid) = self.dirty_sessions.pop_first() {
            let Some(s) = self.sessions.get(&sid) else {
                continue;
            };
            if s.in_flight.is_some() || s.retry_at.is_some() {
                continue;
            }
            let op = match s.ended {
                Some(ended) => {
                    // Another session of the user may have recorded a later value since this one
                    // ended (this end waited for its Register): send the user's maximum, so the
                    // values asked for a user never go down.
                    let max = self.users.get(&s.user).and_then(|u| u.max_recorded);
                    let last_seen = max.map_or(ended, |m| m.max(ended));
                    RegistryOp::EndSession {
                        user: s.user.clone(),
                        session: s.id.clone(),
                        last_seen,
                        token: s.token,
                    }
                }
                None if !s.registered => {
                    // Registrations wait for a lease (the grant makes every session dirty again).
                    let Some(token) = self.lease.token else { continue };
                    RegistryOp::Register { user: s.user.clone(), session: s.id.clone(), token }
                }
                None => continue,
            };
            let registering = match &op {
                RegistryOp::Register { token, .. } => Some(*token),
                _ => None,
            };
            let (epoch, end) = (self.registry_epoch, s.ended.is_some());
            let id = self.emit_store(StoreOp::Registry(op), InFlight::Session { sid, epoch, end });
            if let Some(s) = self.sessions.get_mut(&sid) {
                s.in_flight = Some(id);
                s.token = registering.or(s.token);
            }
        }
        while let Some(user) = self.dirty_durable.pop_first() {
            let Some(w) = self.durable.get(&user) else { continue };
            if w.in_flight.is_some() || w.retry_at.is_some() {
                continue;
            }
            let durable = w.is_durable(w.value);
            // The record goes first, but never holds the durable write back: while the registry
            // fails, the write goes on (once it lands, the record is moot).
            let (op, phase) = if w.rerecord && !durable && !self.registry_failing {
                let op = RegistryOp::RecordLastSeen { user: user.clone(), last_seen: w.value };
                (StoreOp::Registry(op), DurablePhase::Record(w.value, self.stats.registry_restarts))
            } else if !durable {
                let op = StoreOp::Durable(DurableOp::Write { user: user.clone(), last_seen: w.value });
                (op, DurablePhase::Write(w.value))
            } else if w.read_back {
                (StoreOp::Durable(DurableOp::Read { users: vec![user.clone()] }), DurablePhase::ReadBack)
            } else if let Some(v) = w.refresh {
                let op = StoreOp::Registry(RegistryOp::SetLastSeen { user: user.clone(), last_seen: v });
                (op, DurablePhase::Refresh(v))
            } else {
                // Durable and refreshed: done.
                self.durable.remove(&user);
                self.user_unref(&user);
                continue;
            };
            let id = self.emit_store(op, InFlight::Durable(user.clone()));
            if let Some(w) = self.durable.get_mut(&user) {
                w.in_flight = Some((id, phase));
            }
        }
    }

    pub(super) fn session_done(&mut self, sid: Sid, epoch: u64, end: bool, ok: bool) {
        let current = self.registry_epoch;
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        s.in_flight = None;
        if !ok {
            self.stats.registry_failures += 1;
            self.schedule_retry(RetryKey::Session(sid));
            return;
        }
        s.attempts = 0;
        if epoch != current {
            // Issued before a registry restart: it may have landed before the data was lost.
            self.dirty_sessions.insert(sid);
            return;
        }
        if end {
            let user = s.user.clone();
            self.sessions.remove(&sid);
            self.ending_sessions -= 1;
            self.user_unref(&user);
            return;
        }
        s.registered = true;
        if s.ended.is_some() {
            // Ended while the Register was in flight: now send the end.
            self.dirty_sessions.insert(sid);
        }
    }

    pub(super) fn durable_done(&mut self, user: UserId, result: Result<StoreOutput, StoreError>) {
        let Some(w) = self.durable.get_mut(&user) else { return };
        let Some((_, phase)) = w.in_flight.take() else { return };
        let registry = matches!(phase, DurablePhase::Refresh(_) | DurablePhase::Record(..));
        if registry {
            self.registry_failing = result.is_err();
        } else {
            self.durable_failing = result.is_err();
        }
        let Ok(output) = result else {
            if registry {
                self.stats.registry_failures += 1;
            } else {
                self.stats.durable_failures += 1;
            }
            if let DurablePhase::Refresh(_) = phase {
                // The registry failed: it may have lost its data meanwhile, and another server
                // may have made a newer value durable since ours was. A refresh creates an absent
                // cache, so retrying it with our value could put a superseded value in front of
                // every reader (I1). Read the durable value back
                // first, and refresh with that.
                w.read_back = true;
            }
            #[cfg(feature = "planted-bugs")]
            if self.config.planted_bug == Some(PlantedBug::NoDurableRetry)
                && matches!(phase, DurablePhase::Write(_))
            {
                // Planted bug (simulation only): the failed write is dropped, not retried.
                self.durable.remove(&user);
                self.user_unref(&user);
                self.reap_check_durable();
                return;
            }
            self.schedule_retry(RetryKey::Durable(user));
            return;
        };
        w.attempts = 0;
        match phase {
            DurablePhase::Write(v) => {
                w.acked = Some(w.acked.map_or(v, |a| a.max(v)));
                if output == StoreOutput::Superseded {
                    w.read_back = true;
                } else {
                    // Applied: this value is now the durable maximum, safe to put in the cache.
                    w.refresh = Some(w.refresh.map_or(v, |r| r.max(v)));
                }
            }
            DurablePhase::ReadBack => {
                w.read_back = false;
                if let StoreOutput::Durable(values) = output {
                    if let Some(Some(m)) = values.first() {
                        w.refresh = Some(w.refresh.map_or(*m, |r| r.max(*m)));
                    }
                }
            }
            DurablePhase::Refresh(v) => {
                if w.refresh == Some(v) {
                    w.refresh = None;
                }
            }
            DurablePhase::Record(v, restarts) => {
                // Recorded, unless a newer value came since (its own session end records it) or
                // the registry restarted meanwhile (this record may have landed before the loss).
                if restarts == self.stats.registry_restarts && v >= w.value {
                    w.rerecord = false;
                }
            }
        }
        // Next: a newer value to write, the refresh, or nothing (the entry is removed).
        self.dirty_durable.insert(user);
        self.reap_check_durable();
    }

    fn schedule_retry(&mut self, key: RetryKey) {
        self.stats.store_retries += 1;
        let attempts = match &key {
            RetryKey::Session(sid) => self.sessions.get_mut(sid).map(|s| &mut s.attempts),
            RetryKey::Durable(u) => self.durable.get_mut(u).map(|w| &mut w.attempts),
        };
        let Some(attempts) = attempts else { return };
        *attempts = attempts.saturating_add(1);
        let n = *attempts;
        let delay = self.backoff(n);
        let at = self.now.saturating_add(delay);
        match &key {
            RetryKey::Session(sid) => {
                if let Some(s) = self.sessions.get_mut(sid) {
                    s.retry_at = Some(at);
                }
            }
            RetryKey::Durable(u) => {
                if let Some(w) = self.durable.get_mut(u) {
                    w.retry_at = Some(at);
                }
            }
        }
        self.retries.insert((at, key));
    }

    /// Exponential backoff with "equal jitter": half the capped exponential delay, plus a seeded
    /// random share of the other half (AWS architecture blog, "Exponential Backoff And Jitter").
    fn backoff(&mut self, attempt: u32) -> Duration {
        let base = self.config.retry_base.as_nanos() as u64;
        let max = self.config.retry_max.as_nanos() as u64;
        let exp = base.saturating_mul(1u64 << attempt.saturating_sub(1).min(32)).min(max).max(1);
        let half = exp / 2;
        Duration::from_nanos(half + self.rng.next_u64() % (exp - half + 1))
    }

    pub(super) fn retry_due(&mut self, key: RetryKey) {
        match key {
            RetryKey::Session(sid) => {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.retry_at = None;
                    self.dirty_sessions.insert(sid);
                }
            }
            RetryKey::Durable(user) => {
                if let Some(w) = self.durable.get_mut(&user) {
                    w.retry_at = None;
                    self.dirty_durable.insert(user);
                }
            }
        }
    }

    /// The registry lost (or may have lost) its data, our lease with it: renew at once, and
    /// register everything again under the lease that renewal grants.
    pub(super) fn on_registry_restarted(&mut self) {
        self.stats.registry_restarts += 1;
        self.registry_failing = false;
        self.lease.token = None;
        self.renew_lease_now();
        self.register_all_again();
        for (user, w) in self.durable.iter_mut() {
            // Refreshes not yet done carry values from before the data loss: read them back first
            // (as after a failed refresh, `durable_done`).
            if w.refresh.is_some() {
                w.read_back = true;
            }
            // A value not yet durable was only in the registry, and is gone with its data: record
            // it at once, not after the durable write's backoff (whose attempt count stays).
            w.rerecord = !w.is_durable(w.value);
            if w.rerecord {
                if let Some(at) = w.retry_at.take() {
                    self.retries.remove(&(at, RetryKey::Durable(user.clone())));
                }
            }
            self.dirty_durable.insert(user.clone());
        }
    }

    /// Registers every live session again and re-sends pending ends: results of operations sent
    /// before are not trusted (they may have landed before a data loss, or under an old lease).
    pub(super) fn register_all_again(&mut self) {
        // Planted bug (simulation only): what the registry acknowledged before is trusted to be
        // there still; only sessions never registered are sent (as on the first lease grant).
        #[cfg(feature = "planted-bugs")]
        let planted = self.config.planted_bug == Some(PlantedBug::NoReregister);
        #[cfg(not(feature = "planted-bugs"))]
        let planted = false;
        if !planted {
            self.registry_epoch += 1;
        }
        for (sid, s) in self.sessions.iter_mut() {
            if planted && s.registered {
                continue;
            }
            s.registered = false;
            s.attempts = 0;
            // The store is back: retry at once instead of waiting out the backoff.
            if let Some(at) = s.retry_at.take() {
                self.retries.remove(&(at, RetryKey::Session(*sid)));
            }
            self.dirty_sessions.insert(*sid);
        }
    }
}
