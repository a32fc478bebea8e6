//! Presence queries: one registry read per request, a durable read for the users the registry has
//! no last_seen for (lost in a restart, or never cached), a backfill of those into the registry,
//! and one reply: a `presence` frame for a connection's query, or [`Effect::LookupDone`] for a
//! lookup from outside a connection (the HTTP API).
//!
//! A request naming a user more than once is answered in order, one entry per position, but
//! each distinct user is read (and paid for from the asker's budget, `budget.rs`) once.
//!
//! Privacy (docs/PRIVACY.md): a request by a user first reads the privacy of the asker and its
//! targets ([`PrivacyOp::Read`]), and every entry is answered as the asker may see it
//! ([`privacy::apply`]). If that read fails, the request fails (`unavailable`), never showing
//! more than the rule allows. Oneself, a `presence:read_all` service and the re-reads of
//! watched users (`watch.rs`, which applies each watcher's view itself) skip the read.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::frame::{ErrorCode, Frame, PresenceEntry};
use crate::privacy::{self, View};
use crate::store::{DurableOp, PrivacyOp, RegistryEntry, RegistryOp, StoreError, StoreOp, StoreOutput};
use crate::time::UnixMillis;
use crate::user::UserId;

use super::io::{ConnId, Effect, LookupError, LookupId};
use super::writes::Sid;
use super::{InFlight, Presence};

/// A query between its request and its reply.
#[derive(Debug)]
pub(super) struct QueryState {
    asker: Asker,
    /// Whose budget holds a slot in flight for this request (released with the reply).
    payer: Option<UserId>,
    /// The distinct users to read, in order of first appearance.
    users: Vec<UserId>,
    /// For a request that repeated ids: per requested position, its index in `users`.
    order: Option<Vec<usize>>,
    entries: Vec<RegistryEntry>,
    /// Per user: a registry entry under a live lease.
    online: Vec<bool>,
    /// Whose view is answered: `None` for the true state (a `read_all` service, or a re-read of
    /// watched users).
    viewer: Option<UserId>,
    /// Per user, what the viewer may see (from the privacy read); `None`: everything.
    views: Option<Vec<View>>,
    /// The privacy read's id: orders it against later ones (`watch.rs`, `SeenView`).
    privacy_read: u64,
}

/// Who gets the answer.
#[derive(Debug)]
enum Asker {
    /// A connection's `query` (or `subscribe` snapshot) frame. `sid`: the session that asked; a
    /// reply goes out only if the connection still carries it.
    Conn { conn: ConnId, sid: Sid, request: Option<u64>, subscribe: bool },
    /// A lookup from outside any connection.
    Lookup(LookupId),
    /// A re-read of watched users (`watch.rs`).
    Watch,
}

impl Presence {
    pub(super) fn start_query(&mut self, conn: ConnId, request: Option<u64>, users: Vec<UserId>) {
        self.start_conn_query(conn, request, users, false);
    }

    /// A `subscribe`'s snapshot. Returns false if it was refused (an error was sent).
    pub(super) fn start_snapshot(&mut self, conn: ConnId, request: Option<u64>, users: Vec<UserId>) -> bool {
        self.start_conn_query(conn, request, users, true)
    }

    fn start_conn_query(
        &mut self,
        conn: ConnId,
        request: Option<u64>,
        users: Vec<UserId>,
        subscribe: bool,
    ) -> bool {
        let max = self.config.max_query_users;
        if users.len() > max {
            let msg = format!("{} users exceed the limit of {max} per query", users.len());
            self.send_error(conn, request, ErrorCode::TooManyUsers, &msg);
            return false;
        }
        let Some(c) = self.conns.get(&conn) else {
            return false;
        };
        let (user, sid, read_all) = (c.user.clone(), c.sid, c.scopes.read_all);
        if users.is_empty() {
            self.stats.queries += 1;
            self.send(conn, &Frame::Presence { id: request, users: Vec::new() });
            return true;
        }
        let (users, order) = distinct(users);
        if let Err(refusal) = self.admit(&user, users.len()) {
            self.send_error(conn, request, ErrorCode::RateLimited, &refusal.message());
            return false;
        }
        self.stats.queries += 1;
        let viewer = (!read_all).then(|| user.clone());
        self.start_read(Asker::Conn { conn, sid, request, subscribe }, Some(user), viewer, users, order);
        true
    }

    /// Re-reads watched users (`watch.rs`); answered with `watched_read`.
    pub(super) fn read_watched(&mut self, users: Vec<UserId>) {
        self.start_read(Asker::Watch, None, None, users, None);
    }

    /// A lookup by `user` from outside any connection: validated by the caller (the HTTP front
    /// end), paid from `user`'s budget; answered with [`Effect::LookupDone`].
    pub(super) fn start_lookup(
        &mut self,
        lookup: LookupId,
        user: UserId,
        users: Vec<UserId>,
        read_all: bool,
    ) {
        let refuse = |code, message: String, retry_after| Effect::LookupDone {
            lookup,
            result: Err(LookupError { code, message, retry_after }),
        };
        if users.len() > self.config.max_query_users {
            let msg = format!("at most {} users per lookup", self.config.max_query_users);
            return self.effects.push_back(refuse(ErrorCode::TooManyUsers, msg, None));
        }
        if users.is_empty() {
            return self.effects.push_back(Effect::LookupDone { lookup, result: Ok(Vec::new()) });
        }
        let (users, order) = distinct(users);
        if let Err(refusal) = self.admit(&user, users.len()) {
            let effect = refuse(ErrorCode::RateLimited, refusal.message(), refusal.retry_after());
            return self.effects.push_back(effect);
        }
        let viewer = (!read_all).then(|| user.clone());
        self.start_read(Asker::Lookup(lookup), Some(user), viewer, users, order);
    }

    /// Starts a request: the privacy read first if a viewer may be refused anything, else the
    /// registry read.
    fn start_read(
        &mut self,
        asker: Asker,
        payer: Option<UserId>,
        viewer: Option<UserId>,
        users: Vec<UserId>,
        order: Option<Vec<usize>>,
    ) {
        // Oneself is always seen whole: no read when every target is the viewer.
        let viewer = viewer.filter(|v| users.iter().any(|u| u != v));
        let (entries, online, views) = (Vec::new(), Vec::new(), None);
        let mut q =
            QueryState { asker, payer, users, order, entries, online, viewer, views, privacy_read: 0 };
        match &q.viewer {
            Some(viewer) => {
                let op = PrivacyOp::Read { viewer: viewer.clone(), targets: q.users.clone() };
                let id = self.next_effect_id();
                q.privacy_read = id.0;
                self.emit_store_as(id, StoreOp::Privacy(op), InFlight::QueryPrivacy(Box::new(q)));
            }
            None => self.read_registry(q),
        }
    }

    fn read_registry(&mut self, q: QueryState) {
        let op = StoreOp::Registry(RegistryOp::Read { users: q.users.clone() });
        self.emit_store(op, InFlight::QueryRegistry(Box::new(q)));
    }

    pub(super) fn query_privacy_done(&mut self, mut q: QueryState, result: Result<StoreOutput, StoreError>) {
        let answer = match result {
            Ok(StoreOutput::Privacy(a)) if a.targets.len() == q.users.len() => a,
            Ok(_) => return self.fail_query(q, "privacy store answered with the wrong shape"),
            // Fail closed: without the settings nothing may be shown.
            Err(e) => return self.fail_query(q, &format!("privacy settings: {e}")),
        };
        if let Some(viewer) = &q.viewer {
            q.views = Some(answer.views(viewer, &q.users));
        }
        self.read_registry(q);
    }

    pub(super) fn query_registry_done(&mut self, mut q: QueryState, result: Result<StoreOutput, StoreError>) {
        let entries = match result {
            Ok(StoreOutput::Registry(e)) if e.len() == q.users.len() => e,
            Ok(_) => return self.fail_query(q, "registry answered with the wrong shape"),
            Err(e) => return self.fail_query(q, &format!("registry: {e}")),
        };
        // An entry counts only under a live lease: a dead server's sessions read as offline even
        // before the reaper removes them. Without a recent view of the leases we cannot tell.
        let mut online = Vec::with_capacity(entries.len());
        for e in &entries {
            let mut any = false;
            for t in &e.leases {
                match self.lease_is_live(*t) {
                    Some(live) => any |= live,
                    None => return self.fail_query(q, "registry: no recent view of the server leases"),
                }
            }
            online.push(any);
        }
        q.entries = entries;
        q.online = online;
        let missing: Vec<usize> = (0..q.users.len()).filter(|&i| q.entries[i].last_seen.is_none()).collect();
        if missing.is_empty() {
            return self.reply(q);
        }
        let users = missing.iter().map(|&i| q.users[i].clone()).collect();
        self.emit_store(
            StoreOp::Durable(DurableOp::Read { users }),
            InFlight::QueryDurable(Box::new(q), missing),
        );
    }

    pub(super) fn query_durable_done(
        &mut self,
        mut q: QueryState,
        missing: Vec<usize>,
        result: Result<StoreOutput, StoreError>,
    ) {
        let values = match result {
            Ok(StoreOutput::Durable(v)) if v.len() == missing.len() => v,
            Ok(_) => return self.fail_query(q, "durable store answered with the wrong shape"),
            Err(e) => return self.fail_query(q, &format!("durable store: {e}")),
        };
        for (&i, value) in missing.iter().zip(values) {
            let Some(v) = value else { continue };
            // The answer is max(durable, pending) (`reply`); only the durable value fills the cache.
            q.entries[i].last_seen = Some(v);
            // Refill the cache (max-register, so a racing newer end is kept). Best effort: the value
            // is safe in the durable store whatever happens to this write.
            let op = RegistryOp::SetLastSeen { user: q.users[i].clone(), last_seen: v };
            self.emit_store(StoreOp::Registry(op), InFlight::Backfill);
        }
        self.reply(q);
    }

    fn fail_query(&mut self, mut q: QueryState, why: &str) {
        if let Some(payer) = q.payer.take() {
            self.release_budget(&payer);
        }
        match q.asker {
            Asker::Conn { conn, sid, request, .. } => {
                if self.finish_query(conn, sid) {
                    self.send_error(conn, request, ErrorCode::Unavailable, why);
                }
            }
            Asker::Lookup(lookup) => {
                let error =
                    LookupError { code: ErrorCode::Unavailable, message: why.to_owned(), retry_after: None };
                self.effects.push_back(Effect::LookupDone { lookup, result: Err(error) });
            }
            Asker::Watch => self.watched_read(&q.users, None),
        }
    }

    /// Whether the asking session is still there.
    fn finish_query(&self, conn: ConnId, sid: Sid) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.sid == sid)
    }

    fn reply(&mut self, mut q: QueryState) {
        if let Some(payer) = q.payer.take() {
            self.release_budget(&payer);
        }
        if let Asker::Conn { conn, sid, .. } = &q.asker {
            if !self.finish_query(*conn, *sid) {
                return;
            }
        }
        // Another server's clock may be ahead; never show a time further ahead than the skew bound.
        let ceiling = self.wall.saturating_add(self.config.max_clock_skew);
        // Watched users shown a clamped value, and how long until the ceiling reaches it.
        let mut clamped: Vec<(UserId, Duration)> = Vec::new();
        let users: Vec<PresenceEntry> = q
            .users
            .iter()
            .zip(q.entries.iter().zip(&q.online))
            .map(|(user, (e, &registered))| {
                let local = self.users.get(user);
                // A live session here is online even if its registration has not landed yet, and a
                // value this server recorded is visible even if its write is still pending.
                let online = registered || local.is_some_and(|u| u.live > 0);
                let recorded = local.and_then(|u| u.max_recorded);
                let raw = max_opt(max_opt(e.last_seen, e.pending), recorded);
                if let Some(ahead) = raw.and_then(|v| u64::try_from(v.0.saturating_sub(ceiling.0)).ok()) {
                    if ahead > 0 && matches!(q.asker, Asker::Watch) {
                        clamped.push((user.clone(), Duration::from_millis(ahead)));
                    }
                }
                PresenceEntry::new(user.clone(), online, raw.map(|v| v.min(ceiling)))
            })
            .collect();
        // What the viewer may see of each (the true state for the watch re-reads and services).
        let truth = users;
        #[cfg(feature = "planted-bugs")]
        if self.config.planted_bug == Some(crate::config::PlantedBug::PrivacyIgnored) {
            // Planted bug (simulation only): every view is taken as full.
            q.views = None;
        }
        let users = match &q.views {
            Some(views) => truth.iter().zip(views).map(|(e, v)| privacy::apply(e, *v, self.wall)).collect(),
            None => truth.clone(),
        };
        // Repeated ids get the entry of their one read, at every position they were asked.
        let answer = |users: &[PresenceEntry]| match &q.order {
            Some(order) => order.iter().filter_map(|&i| users.get(i).cloned()).collect(),
            None => users.to_vec(),
        };
        match q.asker {
            Asker::Conn { conn, request, subscribe, .. } => {
                if subscribe {
                    self.snapshot_shown(conn, &truth, &users, q.views.as_deref(), q.privacy_read);
                }
                let users = if q.order.is_some() { answer(&users) } else { users };
                self.send(conn, &Frame::Presence { id: request, users });
            }
            Asker::Lookup(lookup) => {
                let users = if q.order.is_some() { answer(&users) } else { users };
                self.effects.push_back(Effect::LookupDone { lookup, result: Ok(users) })
            }
            Asker::Watch => {
                self.watched_read(&q.users, Some(users));
                self.recheck_clamped(clamped);
            }
        }
    }
}

fn max_opt(a: Option<UnixMillis>, b: Option<UnixMillis>) -> Option<UnixMillis> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// `users` without repetitions (in order of first appearance) and, if there were any, for each
/// requested position the index of its user in the distinct list.
fn distinct(users: Vec<UserId>) -> (Vec<UserId>, Option<Vec<usize>>) {
    let mut index: BTreeMap<&UserId, usize> = BTreeMap::new();
    let mut order = Vec::with_capacity(users.len());
    let mut firsts = Vec::new();
    for (pos, u) in users.iter().enumerate() {
        let next = index.len();
        let i = *index.entry(u).or_insert_with(|| {
            firsts.push(pos);
            next
        });
        order.push(i);
    }
    if firsts.len() == users.len() {
        return (users, None);
    }
    let unique = firsts.into_iter().filter_map(|pos| users.get(pos).cloned()).collect();
    (unique, Some(order))
}
