//! In-memory stores with the semantics of the real ones, for tests, fuzzers and simulations.
//!
//! [`MemoryStores`] applies the core's [`StoreOp`]s the way the Redis scripts and the DynamoDB
//! conditional write do: the registry is a hash per user keyed by session id, and last_seen is a
//! max-register in both stores. It is what the model-based property test and the core fuzz target
//! check the state machine against.

use std::collections::{BTreeMap, BTreeSet};

use crate::store::{DurableOp, RegistryEntry, RegistryOp, StoreOp, StoreOutput};
use crate::time::UnixMillis;
use crate::user::{SessionId, UserId};

/// The registry (Redis) and the durable store (DynamoDB), in memory.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemoryStores {
    /// `ws:{user}`: the sessions registered per user (empty sets are removed).
    pub ws: BTreeMap<UserId, BTreeSet<SessionId>>,
    /// `last_seen:{user}` in the registry.
    pub registry_last_seen: BTreeMap<UserId, UnixMillis>,
    /// `last_seen` in the durable store.
    pub durable_last_seen: BTreeMap<UserId, UnixMillis>,
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
            StoreOp::Registry(RegistryOp::Register { user, session }) => {
                self.ws.entry(user.clone()).or_default().insert(session.clone());
                StoreOutput::Done
            }
            StoreOp::Registry(RegistryOp::EndSession { user, session, last_seen }) => {
                if let Some(set) = self.ws.get_mut(user) {
                    set.remove(session);
                    if set.is_empty() {
                        self.ws.remove(user);
                    }
                }
                max_register(&mut self.registry_last_seen, user, *last_seen);
                StoreOutput::Done
            }
            StoreOp::Registry(RegistryOp::SetLastSeen { user, last_seen }) => {
                max_register(&mut self.registry_last_seen, user, *last_seen);
                StoreOutput::Done
            }
            StoreOp::Registry(RegistryOp::Read { users }) => StoreOutput::Registry(
                users
                    .iter()
                    .map(|u| RegistryEntry {
                        online: self.ws.contains_key(u),
                        last_seen: self.registry_last_seen.get(u).copied(),
                    })
                    .collect(),
            ),
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
        }
    }

    /// A registry restart without persistence: the hash and the cached last_seen are gone.
    pub fn lose_registry(&mut self) {
        self.ws.clear();
        self.registry_last_seen.clear();
    }
}
