//! Server leases and the reaper: what makes last_seen correct when a server dies without running
//! its disconnect path (kill -9, a lost host, a long partition from the registry).
//!
//! - Every server holds a lease in the registry, renewed every `Config::lease_renew_interval` and
//!   expiring after `Config::lease_ttl` by the registry's clock. Its registrations carry the lease's
//!   fencing token ([`LeaseToken`]).
//! - Readers count a registry entry as online only while its lease is live, by the view of the
//!   leases this server got at its last renewal (a token newer than that view is live: tokens only
//!   grow). A view older than the TTL is not trusted: queries answer `unavailable`, never a ghost.
//! - The reaper: each renewal also lists expired leases. This server claims one (a claim with a
//!   TTL, so several servers do not all reap the same lease; if they do, every step is idempotent),
//!   reads its sessions in batches and records last_seen = the dead lease's last renewal for each
//!   one still registered under it: in the registry first (like a session end), then durably
//!   through the same retrying pipeline as our own ends; only once that is durable does it remove
//!   the entries (compare-and-delete on the fencing token). A reaper that dies midway leaves the
//!   entries, and the next claim redoes the batch.
//! - A server that could not renew for a whole TTL assumes it was reaped: it stops registering until
//!   it holds a new lease, then registers every live session again under the new token, which a
//!   late reaper of the old lease cannot remove.
//!
//! Bounds (with the defaults: heartbeat timeout 30 s, TTL 10 s, renewal every 3 s) are in
//! ARCHITECTURE.md, "Leases and the reaper".

use std::collections::BTreeSet;

use rand_chacha::rand_core::RngCore;

use crate::store::{LeaseToken, LeaseView, ReapBatch, RegistryOp, StoreError, StoreOp, StoreOutput};
use crate::time::MonoTime;
use crate::user::{SessionId, UserId};

use super::{InFlight, Presence};

/// This server's lease and its view of everyone's.
#[derive(Debug, Default)]
pub(super) struct Lease {
    /// Our lease's token while we hold it (or believe we do).
    pub(super) token: Option<LeaseToken>,
    /// Send time of the renewal that last confirmed our lease: the lease is live until at least
    /// this + TTL (the registry started counting after we sent).
    confirmed_at: Option<MonoTime>,
    /// Leases live at our last successful renewal, ours included. A token above the highest one
    /// was issued after that view, so it is live too.
    live: BTreeSet<LeaseToken>,
    /// Expired leases from the last view, by name: candidates for the reaper.
    expired: Vec<String>,
    /// When to send the next renewal.
    next_renewal: MonoTime,
    /// A renewal is in flight.
    renewing: bool,
    /// The reap in progress, if any.
    reap: Option<Reap>,
}

/// One expired lease being reaped.
#[derive(Debug)]
struct Reap {
    lease: String,
    step: ReapStep,
}

#[derive(Debug)]
enum ReapStep {
    /// Waiting for the claim and the next batch.
    Claiming,
    /// Waiting for the batch's values to be recorded in the registry.
    Marking { batch: ReapBatch },
    /// Waiting for the durable writes of these users of the batch.
    Durable { batch: ReapBatch, waiting: BTreeSet<UserId> },
    /// Waiting for the registry to remove the batch's entries.
    Removing { held: u64 },
}

impl Presence {
    /// Whether a registry entry under `token` counts as online; `None` if our view of the leases
    /// is too old to say (queries answer `unavailable`).
    pub(super) fn lease_is_live(&self, token: LeaseToken) -> Option<bool> {
        let l = &self.lease;
        let view_at = l.confirmed_at?;
        if self.now >= view_at.saturating_add(self.config.lease_ttl) {
            return None;
        }
        Some(l.live.contains(&token) || l.live.last().is_none_or(|n| token > *n))
    }

    /// When the lease work next needs a `Timeout`.
    pub(super) fn lease_deadline(&self) -> Option<MonoTime> {
        (!self.shutting_down && !self.lease.renewing).then_some(self.lease.next_renewal)
    }

    /// Renews the lease when due, and notices a lease we can no longer count on.
    pub(super) fn lease_tick(&mut self) {
        let ttl = self.config.lease_ttl;
        if let (Some(_), Some(at)) = (self.lease.token, self.lease.confirmed_at) {
            if self.now >= at.saturating_add(ttl) {
                // Not renewed for a whole TTL: the lease expired by now and a reaper may have
                // removed our entries. Stop registering under it; the next grant registers again.
                self.lease.token = None;
                self.stats.leases_lost += 1;
            }
        }
        if self.shutting_down || self.lease.renewing || self.now < self.lease.next_renewal {
            return;
        }
        self.lease.renewing = true;
        self.lease.next_renewal = self.now.saturating_add(self.config.lease_renew_interval);
        let op = RegistryOp::RenewLease { token: self.lease.token, ttl, wall: self.wall };
        self.emit_store(StoreOp::Registry(op), InFlight::RenewLease { sent: self.now });
    }

    /// Renew at once (the registry restarted: our lease is probably gone with its data).
    pub(super) fn renew_lease_now(&mut self) {
        self.lease.next_renewal = self.now;
    }

    pub(super) fn lease_renewed(&mut self, sent: MonoTime, result: Result<StoreOutput, StoreError>) {
        self.lease.renewing = false;
        self.registry_failing = !matches!(result, Ok(StoreOutput::Lease(_)));
        let view = match result {
            Ok(StoreOutput::Lease(view)) => view,
            Ok(_) | Err(_) => {
                self.stats.registry_failures += 1;
                return;
            }
        };
        let LeaseView { token, live, expired } = view;
        let previous = self.lease.token.replace(token);
        self.lease.confirmed_at = Some(sent);
        self.lease.live = live.into_iter().chain([token]).collect();
        self.lease.expired = expired;
        if previous != Some(token) {
            // A new lease: whatever we registered before is under a token that no longer counts
            // (and may be reaped). Register every live session again under this one.
            self.stats.leases_granted += 1;
            self.register_all_again();
        }
        self.start_reap();
    }

    /// Claims an expired lease to reap, if none is being reaped and one is waiting.
    fn start_reap(&mut self) {
        if self.lease.reap.is_some() || self.lease.expired.is_empty() || self.shutting_down {
            return;
        }
        // A seeded pick, so servers spread over the expired leases (a lease claimed by another
        // server is skipped this round) and runs still replay exactly.
        let i = (self.rng.next_u64() % self.lease.expired.len() as u64) as usize;
        let lease = self.lease.expired[i].clone();
        self.claim(lease);
    }

    fn claim(&mut self, lease: String) {
        let op = RegistryOp::ClaimReap {
            lease: lease.clone(),
            ttl: self.config.lease_ttl,
            batch: self.config.reap_batch,
            ceiling: self.wall,
        };
        self.lease.reap = Some(Reap { lease, step: ReapStep::Claiming });
        self.emit_store(StoreOp::Registry(op), InFlight::ReapClaim);
    }

    pub(super) fn reap_claimed(&mut self, result: Result<StoreOutput, StoreError>) {
        self.registry_failing = result.is_err();
        let Some(reap) = self.lease.reap.take() else { return };
        let batch = match result {
            Ok(StoreOutput::Reap(Some(batch))) => batch,
            Ok(_) => {
                // Done, or not ours to do: forget the lease until a view lists it again, and go on
                // with the next one at once (after a mass failure, one lease per renewal would be
                // slow).
                self.lease.expired.retain(|l| *l != reap.lease);
                return self.start_reap();
            }
            Err(_) => return,
        };
        let held: Vec<(UserId, SessionId)> =
            batch.sessions.iter().filter(|s| s.2).map(|(u, s, _)| (u.clone(), s.clone())).collect();
        if held.is_empty() {
            self.lease.reap =
                Some(Reap { lease: reap.lease, step: ReapStep::Durable { batch, waiting: BTreeSet::new() } });
            return self.reap_check_durable();
        }
        // First the registry, like a session end: readers see the value before it is durable.
        let op = RegistryOp::MarkReaped { token: batch.token, last_seen: batch.last_seen, sessions: held };
        self.lease.reap = Some(Reap { lease: reap.lease, step: ReapStep::Marking { batch } });
        self.emit_store(StoreOp::Registry(op), InFlight::ReapMark);
    }

    pub(super) fn reap_marked(&mut self, result: Result<StoreOutput, StoreError>) {
        self.registry_failing = result.is_err();
        let Some(Reap { lease, step: ReapStep::Marking { batch } }) = self.lease.reap.take() else { return };
        // Even if the mark failed (it may have been applied all the same), make the value durable
        // through the same pipeline as our own session ends (coalesced per user, retried until
        // acknowledged, then the cache refreshed), and remove the entries only once it is.
        let users: BTreeSet<UserId> = batch.sessions.iter().filter(|s| s.2).map(|s| s.0.clone()).collect();
        for user in &users {
            self.queue_durable(user.clone(), batch.last_seen);
        }
        self.lease.reap = Some(Reap { lease, step: ReapStep::Durable { batch, waiting: users } });
        self.reap_check_durable();
    }

    /// Moves the reap on once every user of its batch has the batch's value durable (their
    /// pending write finished, or acknowledged a value at least as new).
    pub(super) fn reap_check_durable(&mut self) {
        let Some(Reap { step: ReapStep::Durable { batch, waiting }, .. }) = &mut self.lease.reap else {
            return;
        };
        let durable = &self.durable;
        waiting.retain(|u| durable.get(u).is_some_and(|w| !w.is_durable(batch.last_seen)));
        if waiting.is_empty() {
            self.reap_remove();
        }
    }

    /// The batch's last_seen is durable: remove its entries and raise the cached last_seen.
    fn reap_remove(&mut self) {
        let Some(reap) = self.lease.reap.take() else { return };
        let ReapStep::Durable { batch, .. } = reap.step else { return };
        let held = batch.sessions.iter().filter(|s| s.2).count() as u64;
        let op = RegistryOp::Reap { lease: reap.lease.clone(), token: batch.token, sessions: batch.sessions };
        self.lease.reap = Some(Reap { lease: reap.lease, step: ReapStep::Removing { held } });
        self.emit_store(StoreOp::Registry(op), InFlight::ReapRemove);
    }

    pub(super) fn reap_removed(&mut self, result: Result<StoreOutput, StoreError>) {
        self.registry_failing = result.is_err();
        let Some(reap) = self.lease.reap.take() else { return };
        let ReapStep::Removing { held } = reap.step else { return };
        if result.is_err() {
            return;
        }
        self.stats.sessions_reaped += held;
        if self.shutting_down {
            return;
        }
        self.claim(reap.lease);
    }
}
