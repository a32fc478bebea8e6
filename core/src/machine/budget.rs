//! Per-user lookup budgets: one token bucket (`Config::lookup_rate` / `lookup_burst`) and one
//! count of requests in flight (`Config::max_queries_in_flight`) per user, shared by all of the
//! user's connections on this server and its HTTP lookups. Opening more connections, or asking
//! over HTTP, buys a user no extra lookups.
//!
//! The state is bounded and cleaned up: a user has an entry only while a request of theirs is in
//! flight or their bucket is not full yet. When the last request ends, a sweep is scheduled for the
//! moment the bucket is full again; it then holds exactly what a fresh entry would, so dropping it
//! loses nothing. The number of entries is at most the users who asked within the last
//! `lookup_burst / lookup_rate` seconds (10 s by default), plus those with requests in flight.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use crate::ratelimit::TokenBucket;
use crate::time::MonoTime;
use crate::user::UserId;

use super::Presence;

/// One user's budget.
#[derive(Debug)]
pub(super) struct Budget {
    bucket: TokenBucket,
    in_flight: u32,
    /// When this entry's sweep is armed in `Budgets::sweep` (only while nothing is in flight).
    sweep_at: Option<MonoTime>,
}

/// Every user's budget. Not iterated on any output path (looked up by user only).
#[derive(Debug, Default)]
pub(super) struct Budgets {
    users: HashMap<UserId, Budget>,
    /// (when the bucket is full again, user): entries to drop.
    pub(super) sweep: BTreeSet<(MonoTime, UserId)>,
}

impl Budgets {
    /// Users with an entry (for tests and metrics).
    pub(super) fn len(&self) -> usize {
        self.users.len()
    }
}

/// Why a request was refused (`rate_limited`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// `max_queries_in_flight` requests of the user are waiting for the stores.
    InFlight,
    /// Not enough lookups in the bucket; this long until there are.
    Rate(Duration),
}

impl Refusal {
    /// The `error` frame's message.
    pub(super) fn message(self) -> String {
        match self {
            Refusal::InFlight => "too many queries in flight".to_owned(),
            Refusal::Rate(d) => {
                format!("lookup rate limit exceeded; retry in {} ms", d.as_millis().max(1))
            }
        }
    }

    /// The retry hint of a refused HTTP lookup (`None`: as soon as an answer comes back).
    pub(super) fn retry_after(self) -> Option<Duration> {
        match self {
            Refusal::InFlight => None,
            Refusal::Rate(d) => Some(d),
        }
    }
}

impl Presence {
    /// Admits a request of `n` distinct lookups by `user`: takes the lookups from the bucket and a
    /// slot in flight, to be given back with [`Presence::release_budget`].
    pub(super) fn admit(&mut self, user: &UserId, n: usize) -> Result<(), Refusal> {
        let (rate, burst, max, now) =
            (self.config.lookup_rate, self.config.lookup_burst, self.config.max_queries_in_flight, self.now);
        let b = self.budgets.users.entry(user.clone()).or_insert_with(|| Budget {
            bucket: TokenBucket::full(burst, now),
            in_flight: 0,
            sweep_at: None,
        });
        let verdict = if b.in_flight >= max {
            Err(Refusal::InFlight)
        } else if b.bucket.try_take(n as u64, rate, burst, now) {
            b.in_flight += 1;
            Ok(())
        } else {
            Err(Refusal::Rate(b.bucket.wait_for(n as u64, rate, burst, now)))
        };
        if verdict.is_err() {
            self.stats.lookups_refused += 1;
        }
        self.arm_sweep(user);
        verdict
    }

    /// Gives back the slot in flight of a request [`Presence::admit`] let through.
    pub(super) fn release_budget(&mut self, user: &UserId) {
        if let Some(b) = self.budgets.users.get_mut(user) {
            b.in_flight = b.in_flight.saturating_sub(1);
        }
        self.arm_sweep(user);
    }

    /// Arms the user's sweep at the moment its bucket is full again if nothing is in flight, and
    /// disarms it otherwise.
    fn arm_sweep(&mut self, user: &UserId) {
        let (rate, burst, now) = (self.config.lookup_rate, self.config.lookup_burst, self.now);
        let Some(b) = self.budgets.users.get_mut(user) else { return };
        let want = (b.in_flight == 0).then(|| b.bucket.full_at(rate, burst, now));
        if want == b.sweep_at {
            return;
        }
        if let Some(at) = b.sweep_at.take() {
            self.budgets.sweep.remove(&(at, user.clone()));
        }
        if let Some(at) = want {
            b.sweep_at = Some(at);
            self.budgets.sweep.insert((at, user.clone()));
        }
    }

    /// Drops the user's entry if its bucket is full and nothing is in flight (its sweep fired).
    pub(super) fn sweep_due(&mut self, user: &UserId) {
        let (rate, burst, now) = (self.config.lookup_rate, self.config.lookup_burst, self.now);
        let Some(b) = self.budgets.users.get_mut(user) else { return };
        b.sweep_at = None;
        if b.in_flight == 0 && b.bucket.full_at(rate, burst, now) <= now {
            self.budgets.users.remove(user);
        } else {
            self.arm_sweep(user);
        }
    }

    /// Users holding a lookup-budget entry (bounded; see the module docs).
    pub fn budget_entries(&self) -> usize {
        self.budgets.len()
    }
}
