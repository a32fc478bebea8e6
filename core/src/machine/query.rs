//! Presence queries: one registry read per request, a durable read for the users the registry has
//! no last_seen for (lost in a restart, or never cached), a backfill of those into the registry,
//! and one reply: a `presence` frame for a connection's query, or [`Effect::LookupDone`] for a
//! lookup from outside a connection (the HTTP API).

use crate::frame::{ErrorCode, Frame, PresenceEntry};
use crate::store::{DurableOp, RegistryEntry, RegistryOp, StoreError, StoreOp, StoreOutput};
use crate::time::UnixMillis;
use crate::user::UserId;

use super::io::{ConnId, Effect, LookupId};
use super::writes::Sid;
use super::{InFlight, Presence};

/// A query between its request and its reply.
#[derive(Debug)]
pub(super) struct QueryState {
    asker: Asker,
    users: Vec<UserId>,
    entries: Vec<RegistryEntry>,
    /// Per user: a registry entry under a live lease.
    online: Vec<bool>,
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
        if c.queries_in_flight >= self.config.max_queries_in_flight {
            self.send_error(conn, request, ErrorCode::RateLimited, "too many queries in flight");
            return false;
        }
        if !self.take_lookups(conn, users.len()) {
            self.send_error(conn, request, ErrorCode::RateLimited, "lookup rate limit exceeded");
            return false;
        }
        self.stats.queries += 1;
        if users.is_empty() {
            self.send(conn, &Frame::Presence { id: request, users: Vec::new() });
            return true;
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        c.queries_in_flight += 1;
        let sid = c.sid;
        self.read_registry(Asker::Conn { conn, sid, request, subscribe }, users);
        true
    }

    /// Re-reads watched users (`watch.rs`); answered with `watched_read`.
    pub(super) fn read_watched(&mut self, users: Vec<UserId>) {
        self.read_registry(Asker::Watch, users);
    }

    /// A lookup from outside any connection: validated and rate-limited by the caller (the HTTP
    /// front end); answered with [`Effect::LookupDone`].
    pub(super) fn start_lookup(&mut self, lookup: LookupId, users: Vec<UserId>) {
        if users.len() > self.config.max_query_users {
            let err = (
                ErrorCode::TooManyUsers,
                format!("at most {} users per lookup", self.config.max_query_users),
            );
            return self.effects.push_back(Effect::LookupDone { lookup, result: Err(err) });
        }
        if users.is_empty() {
            return self.effects.push_back(Effect::LookupDone { lookup, result: Ok(Vec::new()) });
        }
        self.read_registry(Asker::Lookup(lookup), users);
    }

    fn read_registry(&mut self, asker: Asker, users: Vec<UserId>) {
        let op = StoreOp::Registry(RegistryOp::Read { users: users.clone() });
        let state = QueryState { asker, users, entries: Vec::new(), online: Vec::new() };
        self.emit_store(op, InFlight::QueryRegistry(Box::new(state)));
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

    fn fail_query(&mut self, q: QueryState, why: &str) {
        match q.asker {
            Asker::Conn { conn, sid, request, .. } => {
                if self.finish_query(conn, sid) {
                    self.send_error(conn, request, ErrorCode::Unavailable, why);
                }
            }
            Asker::Lookup(lookup) => {
                let result = Err((ErrorCode::Unavailable, why.to_owned()));
                self.effects.push_back(Effect::LookupDone { lookup, result });
            }
            Asker::Watch => self.watched_read(&q.users, None),
        }
    }

    /// Releases the connection's in-flight slot; returns whether the asking session is still there.
    fn finish_query(&mut self, conn: ConnId, sid: Sid) -> bool {
        match self.conns.get_mut(&conn) {
            Some(c) if c.sid == sid => {
                c.queries_in_flight = c.queries_in_flight.saturating_sub(1);
                true
            }
            _ => false,
        }
    }

    fn reply(&mut self, q: QueryState) {
        if let Asker::Conn { conn, sid, .. } = &q.asker {
            if !self.finish_query(*conn, *sid) {
                return;
            }
        }
        // Another server's clock may be ahead; never show a time further ahead than the skew bound.
        let ceiling = self.wall.saturating_add(self.config.max_clock_skew);
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
                let last_seen = max_opt(max_opt(e.last_seen, e.pending), recorded).map(|v| v.min(ceiling));
                PresenceEntry { user: user.clone(), online, last_seen }
            })
            .collect();
        match q.asker {
            Asker::Conn { conn, request, subscribe, .. } => {
                if subscribe {
                    self.snapshot_shown(conn, &users);
                }
                self.send(conn, &Frame::Presence { id: request, users });
            }
            Asker::Lookup(lookup) => self.effects.push_back(Effect::LookupDone { lookup, result: Ok(users) }),
            Asker::Watch => self.watched_read(&q.users, Some(users)),
        }
    }
}

fn max_opt(a: Option<UnixMillis>, b: Option<UnixMillis>) -> Option<UnixMillis> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}
