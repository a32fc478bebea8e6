//! In-memory stores with the semantics of the real ones, for tests, fuzzers and simulations.
//!
//! [`MemoryStores`] applies the core's [`StoreOp`]s the way the Redis scripts and the DynamoDB
//! conditional write do: the registry is a hash per user keyed by session id, and last_seen is a
//! max-register in both stores; leases are granted and renewed (they never expire on their own
//! here: [`MemoryStores::expire_lease`] kills one). It is what the model-based property test and
//! the core fuzz target check the state machine against.

use std::collections::{BTreeMap, BTreeSet};

use std::sync::Arc;

use crate::privacy::{LastSeenAudience, PrivacyAnswer, Settings, TargetPrivacy};
use crate::store::{
    DurableOp, LeaseToken, LeaseView, PrivacyOp, ReapBatch, RegistryEntry, RegistryOp, StoreOp, StoreOutput,
};
use crate::time::UnixMillis;
use crate::user::{SessionId, UserId};

/// The registry (Redis) and the durable store (DynamoDB), in memory.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemoryStores {
    /// `ws:{user}` with `ws_lease:{user}`: the sessions registered per user, each with the lease it
    /// was registered under (empty maps are removed).
    pub ws: BTreeMap<UserId, BTreeMap<SessionId, LeaseToken>>,
    /// Live leases, with each one's session index; expired ones (not yet reaped) with the wall time
    /// of their last renewal.
    pub leases: BTreeMap<LeaseToken, BTreeSet<(UserId, SessionId)>>,
    /// Expired leases not yet reaped: index and last renewal.
    pub expired: BTreeMap<LeaseToken, (BTreeSet<(UserId, SessionId)>, UnixMillis)>,
    /// Last renewal (wall) per live lease.
    pub renewed: BTreeMap<LeaseToken, UnixMillis>,
    /// The last token issued (tokens only grow, across [`MemoryStores::lose_registry`] too).
    pub last_token: u64,
    /// `last_seen:{user}` in the registry.
    pub registry_last_seen: BTreeMap<UserId, UnixMillis>,
    /// `last_seen_pending:{user}` in the registry.
    pub registry_pending: BTreeMap<UserId, UnixMillis>,
    /// `last_seen` in the durable store.
    pub durable_last_seen: BTreeMap<UserId, UnixMillis>,
    /// Privacy settings set by users (others have the defaults: everyone may see them).
    pub settings: BTreeMap<UserId, Settings>,
    /// Contact lists.
    pub contacts: BTreeMap<UserId, BTreeSet<UserId>>,
}

/// Max-register: keeps the larger of the stored and the new value.
pub fn max_register(map: &mut BTreeMap<UserId, UnixMillis>, user: &UserId, value: UnixMillis) {
    let e = map.entry(user.clone()).or_insert(value);
    *e = (*e).max(value);
}

impl MemoryStores {
    /// Applies `op` and returns what the real executor would answer.
    pub fn apply(&mut self, op: &StoreOp) -> StoreOutput {
        match op {
            StoreOp::Registry(RegistryOp::Register { user, session, token }) => {
                let entry = (user.clone(), session.clone());
                if let Some(index) = self.leases.get_mut(token) {
                    index.insert(entry);
                } else if let Some((index, _)) = self.expired.get_mut(token) {
                    index.insert(entry);
                }
                self.ws.entry(user.clone()).or_default().insert(session.clone(), *token);
                StoreOutput::Done
            }
            StoreOp::Registry(RegistryOp::EndSession { user, session, last_seen, token }) => {
                self.remove_session(user, session, None);
                self.record_end(user, *last_seen);
                if let Some(t) = token {
                    let entry = (user.clone(), session.clone());
                    self.leases.get_mut(t).map(|i| i.remove(&entry));
                    self.expired.get_mut(t).map(|(i, _)| i.remove(&entry));
                }
                StoreOutput::Done
            }
            StoreOp::Registry(RegistryOp::SetLastSeen { user, last_seen }) => {
                max_register(&mut self.registry_last_seen, user, *last_seen);
                let cached = self.registry_last_seen[user];
                if self.registry_pending.get(user).is_some_and(|p| *p <= cached) {
                    self.registry_pending.remove(user);
                }
                StoreOutput::Done
            }
            StoreOp::Registry(RegistryOp::RecordLastSeen { user, last_seen }) => {
                self.record_end(user, *last_seen);
                StoreOutput::Done
            }
            StoreOp::Registry(RegistryOp::Read { users }) => StoreOutput::Registry(
                users
                    .iter()
                    .map(|u| RegistryEntry {
                        leases: self.ws.get(u).map(|m| m.values().copied().collect()).unwrap_or_default(),
                        last_seen: self.registry_last_seen.get(u).copied(),
                        pending: self.registry_pending.get(u).copied(),
                    })
                    .collect(),
            ),
            StoreOp::Registry(RegistryOp::RenewLease { token, wall, .. }) => self.renew(*token, *wall),
            StoreOp::Registry(RegistryOp::ClaimReap { lease, batch, ceiling, .. }) => {
                self.claim(lease, *batch, *ceiling)
            }
            StoreOp::Registry(RegistryOp::MarkReaped { token, last_seen, sessions }) => {
                for (user, session) in sessions {
                    if self.ws.get(user).and_then(|m| m.get(session)) == Some(token) {
                        self.record_end(user, *last_seen);
                    }
                }
                StoreOutput::Done
            }
            StoreOp::Registry(RegistryOp::Reap { token, sessions, .. }) => {
                for (user, session, held) in sessions {
                    if *held {
                        self.remove_session(user, session, Some(*token));
                    }
                    if let Some((index, _)) = self.expired.get_mut(token) {
                        index.remove(&(user.clone(), session.clone()));
                    }
                }
                StoreOutput::Done
            }
            StoreOp::Durable(DurableOp::Write { user, last_seen }) => {
                if self.durable_last_seen.get(user).is_some_and(|old| old >= last_seen) {
                    return StoreOutput::Superseded;
                }
                max_register(&mut self.durable_last_seen, user, *last_seen);
                StoreOutput::Done
            }
            StoreOp::Durable(DurableOp::Read { users }) => {
                StoreOutput::Durable(users.iter().map(|u| self.durable_last_seen.get(u).copied()).collect())
            }
            StoreOp::Privacy(PrivacyOp::Read { viewer, targets }) => {
                StoreOutput::Privacy(self.privacy(viewer, targets))
            }
        }
    }

    /// `PrivacyOp::Read` over [`MemoryStores::settings`] and [`MemoryStores::contacts`].
    pub fn privacy(&self, viewer: &UserId, targets: &[UserId]) -> PrivacyAnswer {
        let settings = |u: &UserId| {
            Arc::new(
                self.settings
                    .get(u)
                    .cloned()
                    .unwrap_or_else(|| Settings::default_with(LastSeenAudience::Everyone)),
            )
        };
        let has =
            |owner: &UserId, member: &UserId| self.contacts.get(owner).is_some_and(|c| c.contains(member));
        PrivacyAnswer {
            viewer: settings(viewer),
            targets: targets
                .iter()
                .map(|t| TargetPrivacy {
                    settings: settings(t),
                    has_viewer: has(t, viewer),
                    viewer_has: has(viewer, t),
                })
                .collect(),
        }
    }

    /// `RenewLease`: extends a live lease, or issues a new token.
    fn renew(&mut self, token: Option<LeaseToken>, wall: UnixMillis) -> StoreOutput {
        let token = match token {
            Some(t) if self.leases.contains_key(&t) => t,
            _ => {
                self.last_token += 1;
                let t = LeaseToken(self.last_token);
                self.leases.insert(t, BTreeSet::new());
                t
            }
        };
        self.renewed.insert(token, wall);
        StoreOutput::Lease(LeaseView {
            token,
            live: self.leases.keys().copied().collect(),
            expired: self.expired.keys().map(|t| format!("lease#{}", t.0)).collect(),
        })
    }

    /// `ClaimReap`: a batch of an expired lease's sessions and which are still held under it; an
    /// empty index forgets the lease.
    fn claim(&mut self, lease: &str, batch: usize, ceiling: UnixMillis) -> StoreOutput {
        let Some(token) = parse_lease(lease) else { return StoreOutput::Reap(None) };
        let Some((index, renewed)) = self.expired.get(&token) else { return StoreOutput::Reap(None) };
        if index.is_empty() {
            self.expired.remove(&token);
            return StoreOutput::Reap(None);
        }
        let renewed = (*renewed).min(ceiling);
        let sessions: Vec<(UserId, SessionId, bool)> = index
            .iter()
            .take(batch)
            .map(|(u, s)| {
                let held = self.ws.get(u).and_then(|m| m.get(s)) == Some(&token);
                (u.clone(), s.clone(), held)
            })
            .collect();
        StoreOutput::Reap(Some(ReapBatch { token, last_seen: renewed, sessions }))
    }

    /// A registry restart without persistence: the hashes, the cached last_seen and the leases are
    /// gone (the token counter is not: real tokens never go below the registry's clock).
    pub fn lose_registry(&mut self) {
        self.ws.clear();
        self.registry_last_seen.clear();
        self.registry_pending.clear();
        self.leases.clear();
        self.expired.clear();
        self.renewed.clear();
    }

    /// The lease `token` expires (its server died): it is listed for the reaper from now on.
    pub fn expire_lease(&mut self, token: LeaseToken) {
        if let Some(index) = self.leases.remove(&token) {
            let renewed = self.renewed.remove(&token).unwrap_or(UnixMillis(0));
            self.expired.insert(token, (index, renewed));
        }
    }

    /// A session end's value in the registry: the cache if present, else the pending key.
    fn record_end(&mut self, user: &UserId, value: UnixMillis) {
        match self.registry_last_seen.get_mut(user) {
            Some(v) => *v = (*v).max(value),
            None => max_register(&mut self.registry_pending, user, value),
        }
    }

    /// The registered sessions per user, without their leases.
    pub fn registered(&self) -> BTreeMap<UserId, BTreeSet<SessionId>> {
        self.ws.iter().map(|(u, m)| (u.clone(), m.keys().cloned().collect())).collect()
    }

    /// Removes one session's entry, only if it is under `token` when one is given. Returns whether
    /// an entry was removed.
    fn remove_session(&mut self, user: &UserId, session: &SessionId, token: Option<LeaseToken>) -> bool {
        let Some(map) = self.ws.get_mut(user) else { return false };
        if token.is_some_and(|t| map.get(session) != Some(&t)) {
            return false;
        }
        let removed = map.remove(session).is_some();
        if map.is_empty() {
            self.ws.remove(user);
        }
        removed
    }
}

/// The token of a lease named `lease#<token>` (how [`MemoryStores`] names expired leases).
fn parse_lease(name: &str) -> Option<LeaseToken> {
    name.strip_prefix("lease#")?.parse().ok().map(LeaseToken)
}
