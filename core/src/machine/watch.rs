//! Live presence: `subscribe` / `unsubscribe`, and the `presence` frames pushed when a watched user
//! goes online or offline.
//!
//! - The core keeps, per watched user, the connections watching and the last state it evaluated.
//!   The first watcher of a user makes it emit [`Effect::Watch`] (the driver subscribes to the
//!   user's change channel, once per server however many clients watch); the last one leaving,
//!   [`Effect::Unwatch`].
//! - A change notice ([`Input::Changed`], from Redis pub/sub or the embedded registry) is only a
//!   hint: the core re-reads the user's presence through the query path (registry, lease filter,
//!   durable fallback) and compares. A hint that arrives while a read is in flight schedules one
//!   more read, so the last change is always read after it happened.
//! - No flapping: online -> offline is held back for `Config::presence_grace`; at the deadline the
//!   user is read again and the offline pushed only if it still holds. A user back within the
//!   grace produces nothing. Offline -> online is pushed at once.
//! - Each connection remembers what it was shown (its snapshot, then each push), and gets a frame
//!   only when the new state differs: online/offline flipped, or a newer last_seen while offline.
//!   No push reaches a connection before its snapshot; after the snapshot each user is read once
//!   more (a change between the snapshot's read and its answer went only to the other watchers).
//!   A `subscribe` whose snapshot fails (`unavailable`) still holds its users (within the limit)
//!   but pushes nothing for them until a later `subscribe` of them is answered, or they are
//!   unsubscribed.
//! - A last_seen further ahead of this server's clock than `Config::max_clock_skew` (another
//!   server's clock is ahead) is shown clamped to the ceiling; the user is read again once the
//!   ceiling has passed it, and watchers are pushed the exact value (no notice would come: the
//!   stores do not change).
//! - After the change channel may have lost messages (a registry restart or pub/sub reconnect:
//!   [`Input::Resync`]), every watched user is read again and differences pushed.
//! - Privacy: each connection keeps, per watched user, what its user may see ([`SeenView`], from
//!   the snapshot's privacy read, then from re-reads), and every push is the entry as that view
//!   shows it. A connection whose view shows nothing new gets nothing, so no push (nor its
//!   timing) reveals a change the viewer may not see. A settings change ([`Input::PrivacyChanged`])
//!   re-reads the privacy of every subscription with that user on either side, and a connection
//!   whose view changed is pushed the entry as it now shows. Until a connection's view of a user
//!   is known, nothing about that user is pushed to it (fail closed). A change whose notice was
//!   lost (its server could not announce it) is covered by a periodic re-read of each
//!   connection's views, every `Config::privacy_refresh`.
//!
//! Limits: `Config::max_watched_users` per connection and `Config::max_watched_users_total`
//! distinct users for the whole server (`too_many_users` past either); everything a connection
//! watches is released when it closes.
//!
//! [`Effect::Watch`]: super::Effect::Watch
//! [`Effect::Unwatch`]: super::Effect::Unwatch
//! [`Input::Changed`]: super::Input::Changed
//! [`Input::Resync`]: super::Input::Resync
//! [`Input::PrivacyChanged`]: super::Input::PrivacyChanged

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::frame::{Approx, ErrorCode, Frame, PresenceEntry};
use crate::privacy::{self, View};
use crate::store::{EffectId, PrivacyOp, StoreError, StoreOp, StoreOutput};
use crate::time::{MonoTime, UnixMillis};
use crate::user::UserId;

use super::io::{ConnId, Effect};
use super::{InFlight, Presence};

/// A user's presence as evaluated (the true state) or as shown to one watcher (its view of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Shown {
    pub(super) online: bool,
    pub(super) last_seen: Option<UnixMillis>,
    pub(super) approx: Option<Approx>,
}

impl Shown {
    pub(super) fn of(e: &PresenceEntry) -> Shown {
        Shown { online: e.online, last_seen: e.last_seen, approx: e.last_seen_approx }
    }

    fn entry(&self, user: &UserId) -> PresenceEntry {
        let mut e = PresenceEntry::new(user.clone(), self.online, self.last_seen);
        e.last_seen_approx = self.approx;
        e
    }

    /// Whether a watcher shown `self` should be told about `new` (the same view): online/offline
    /// flipped, a newer last_seen while offline, or another bucket.
    fn differs(&self, new: &Shown) -> bool {
        self.online != new.online
            || (!new.online && new.last_seen > self.last_seen)
            || self.approx != new.approx
    }
}

/// What a connection's user may see of a watched user, and the id of the privacy read it came
/// from: an answer replaces the view only if its read was issued after the one in force, so a
/// slow answer never undoes a newer one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SeenView {
    pub(super) view: View,
    pub(super) read: u64,
}

/// One watched user.
#[derive(Debug, Default)]
pub(super) struct Watched {
    /// Connections watching (their snapshot was sent: pushes go to them).
    watchers: BTreeSet<ConnId>,
    /// Connections whose snapshot is not answered yet: no push before it.
    pending: BTreeSet<ConnId>,
    /// The true state last evaluated and pushed (`None` until the first read answers).
    state: Option<Shown>,
    /// A read for this user is in flight.
    reading: bool,
    /// A hint came while reading: read once more when it answers.
    again: bool,
    /// An offline seen while the user was shown online, held back until this deadline.
    grace_until: Option<MonoTime>,
    /// The state was read with a last_seen ahead of this server's clock by more than the skew
    /// bound, and shown clamped: read again at this deadline, when the clamp no longer applies.
    recheck_at: Option<MonoTime>,
}

/// All subscriptions of this server.
#[derive(Debug, Default)]
pub(super) struct Watches {
    pub(super) users: BTreeMap<UserId, Watched>,
    /// Deadlines to read a user again, (when, user): a held-back offline's grace, a retry after a
    /// failed read, or a clamped value's recheck.
    pub(super) grace: BTreeSet<(MonoTime, UserId)>,
    /// Deadlines to read a connection's privacy again, (when, conn): after a failed read, or the
    /// periodic refresh.
    pub(super) privacy_retry: BTreeSet<(MonoTime, ConnId)>,
    /// Per user, its connections that watch someone: whose views a change of the user's own
    /// settings re-evaluates (reciprocity), found without scanning every connection.
    pub(super) viewers: BTreeMap<UserId, BTreeSet<ConnId>>,
}

impl Presence {
    pub(super) fn on_subscribe(&mut self, conn: ConnId, id: Option<u64>, users: Vec<UserId>) {
        let Some(c) = self.conns.get(&conn) else { return };
        let new: BTreeSet<&UserId> = users.iter().filter(|u| !c.watching.contains(*u)).collect();
        let max = self.config.max_watched_users;
        if c.watching.len() + new.len() > max {
            let msg = format!("a connection may watch at most {max} users ({} already)", c.watching.len());
            return self.send_error(conn, id, ErrorCode::TooManyUsers, &msg);
        }
        let max_total = self.config.max_watched_users_total;
        let unwatched = new.iter().filter(|u| !self.watches.users.contains_key(**u)).count();
        if self.watches.users.len() + unwatched > max_total {
            let msg = format!("this server watches at most {max_total} users");
            return self.send_error(conn, id, ErrorCode::TooManyUsers, &msg);
        }
        let new: Vec<UserId> = new.into_iter().cloned().collect();
        // The snapshot is a query; it is refused (rate limits) before anything is watched.
        if !self.start_snapshot(conn, id, users) {
            return;
        }
        if let Some(c) = self.conns.get(&conn).filter(|_| !new.is_empty()) {
            self.watches.viewers.entry(c.user.clone()).or_default().insert(conn);
        }
        for user in new {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.watching.insert(user.clone());
            }
            let w = self.watches.users.entry(user.clone()).or_default();
            if w.watchers.is_empty() && w.pending.is_empty() {
                self.effects.push_back(Effect::Watch { user: user.clone() });
            }
            w.pending.insert(conn);
        }
    }

    pub(super) fn on_unsubscribe(&mut self, conn: ConnId, users: Vec<UserId>) {
        for user in users {
            let Some(c) = self.conns.get_mut(&conn) else { return };
            if c.watching.remove(&user) {
                c.shown.remove(&user);
                c.views.remove(&user);
                if c.watching.is_empty() {
                    let viewer = c.user.clone();
                    self.drop_viewer(&viewer, conn);
                }
                self.drop_watcher(&user, conn);
            }
        }
    }

    /// Releases everything a closing connection of `viewer` watched.
    pub(super) fn unwatch_all(&mut self, conn: ConnId, viewer: &UserId, watching: BTreeSet<UserId>) {
        self.drop_viewer(viewer, conn);
        for user in watching {
            self.drop_watcher(&user, conn);
        }
    }

    fn drop_viewer(&mut self, viewer: &UserId, conn: ConnId) {
        if let Some(set) = self.watches.viewers.get_mut(viewer) {
            set.remove(&conn);
            if set.is_empty() {
                self.watches.viewers.remove(viewer);
            }
        }
    }

    fn drop_watcher(&mut self, user: &UserId, conn: ConnId) {
        let Some(w) = self.watches.users.get_mut(user) else { return };
        w.watchers.remove(&conn);
        w.pending.remove(&conn);
        if w.watchers.is_empty() && w.pending.is_empty() {
            for at in w.grace_until.into_iter().chain(w.recheck_at) {
                self.watches.grace.remove(&(at, user.clone()));
            }
            self.watches.users.remove(user);
            self.effects.push_back(Effect::Unwatch { user: user.clone() });
        }
    }

    /// A change notice for `user`: read it again (or once more after the read in flight).
    pub(super) fn on_changed(&mut self, user: UserId) {
        let Some(w) = self.watches.users.get_mut(&user) else { return };
        if w.reading {
            w.again = true;
            return;
        }
        w.reading = true;
        self.read_watched(vec![user]);
    }

    /// Notices may have been lost: read every watched user again, and every subscription's
    /// privacy.
    pub(super) fn on_resync(&mut self) {
        let users: Vec<UserId> = self.watches.users.keys().cloned().collect();
        for user in users {
            self.on_changed(user);
        }
        self.reread_all_privacy();
    }

    /// A connection's snapshot answered: it was shown these entries (as its view shows them:
    /// `views`, from privacy read `read`; `None` when it sees everything), and it gets pushes
    /// from now on. Each user is read once more: a change made after the snapshot's read, whose
    /// push went only to the other watchers, reaches this one too.
    pub(super) fn snapshot_shown(
        &mut self,
        conn: ConnId,
        truth: &[PresenceEntry],
        entries: &[PresenceEntry],
        views: Option<&[View]>,
        read: u64,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let mut joined = Vec::new();
        for (i, (e, true_entry)) in entries.iter().zip(truth).enumerate() {
            // Unsubscribed meanwhile: not watched any more.
            if !c.watching.contains(&e.user) {
                continue;
            }
            let view = views.and_then(|v| v.get(i).copied()).unwrap_or(View::FULL);
            set_view(&mut c.views, &e.user, SeenView { view, read });
            c.shown.insert(e.user.clone(), Shown::of(e));
            if let Some(w) = self.watches.users.get_mut(&e.user) {
                w.pending.remove(&conn);
                w.watchers.insert(conn);
                // The first state of a user nobody read yet (the true one, not this view of it).
                w.state.get_or_insert(Shown::of(true_entry));
            }
            // Read once more, also for a user this connection watched already: this snapshot
            // may be older than a push it got meanwhile.
            joined.push(e.user.clone());
        }
        if views.is_some() {
            self.arm_privacy_refresh(conn);
        }
        for user in joined {
            self.on_changed(user);
        }
    }

    /// A read of watched users answered (`entries` is `None` if it failed: the next hint,
    /// resync or grace deadline reads again).
    pub(super) fn watched_read(&mut self, users: &[UserId], entries: Option<Vec<PresenceEntry>>) {
        let (now, grace) = (self.now, self.config.presence_grace);
        let Some(entries) = entries else {
            // The stores could not say: read again at the next lease renewal (when our view of
            // the stores is refreshed), a held-back offline after another grace.
            let retry = now.saturating_add(self.config.lease_renew_interval);
            for user in users {
                let Some(w) = self.watches.users.get_mut(user) else { continue };
                w.reading = false;
                if let Some(at) = w.grace_until.filter(|at| *at <= now) {
                    self.watches.grace.remove(&(at, user.clone()));
                    let next = now.saturating_add(grace);
                    w.grace_until = Some(next);
                    self.watches.grace.insert((next, user.clone()));
                } else {
                    self.watches.grace.insert((retry, user.clone()));
                }
            }
            return;
        };
        for e in entries {
            let new = Shown::of(&e);
            let Some(w) = self.watches.users.get_mut(&e.user) else { continue };
            w.reading = false;
            let was_online = w.state.is_some_and(|s| s.online);
            let grace_over = w.grace_until.is_some_and(|at| at <= now);
            if !new.online && was_online && !grace_over && !grace.is_zero() {
                // Going offline: hold it back; a return within the grace shows nothing.
                if w.grace_until.is_none() {
                    let at = now.saturating_add(grace);
                    w.grace_until = Some(at);
                    self.watches.grace.insert((at, e.user.clone()));
                }
            } else {
                if let Some(at) = w.grace_until.take() {
                    self.watches.grace.remove(&(at, e.user.clone()));
                }
                w.state = Some(new);
                self.push(&e.user, new);
            }
            self.read_again_if_hinted(&e.user);
        }
    }

    fn read_again_if_hinted(&mut self, user: &UserId) {
        if let Some(w) = self.watches.users.get_mut(user) {
            if std::mem::take(&mut w.again) {
                w.reading = true;
                self.read_watched(vec![user.clone()]);
            }
        }
    }

    /// Watched users whose last_seen was shown clamped to the skew ceiling, each with how far
    /// ahead of the ceiling it was: read each again once the ceiling has passed it, so watchers are
    /// pushed the exact value (no notice will come: the stores did not change).
    pub(super) fn recheck_clamped(&mut self, clamped: Vec<(UserId, Duration)>) {
        for (user, ahead) in clamped {
            let Some(w) = self.watches.users.get_mut(&user) else { continue };
            if w.recheck_at.is_some() {
                continue;
            }
            let at = self.now.saturating_add(ahead);
            w.recheck_at = Some(at);
            self.watches.grace.insert((at, user));
        }
    }

    /// A deadline of `grace` passed (a held-back offline's grace ran out, a failed read's
    /// retry, or a clamped value's recheck): read once more and push what holds.
    pub(super) fn grace_due(&mut self, user: UserId) {
        let now = self.now;
        let Some(w) = self.watches.users.get_mut(&user) else { return };
        if w.recheck_at.is_some_and(|at| at <= now) {
            w.recheck_at = None;
        }
        if w.reading {
            w.again = true;
        } else {
            w.reading = true;
            self.read_watched(vec![user]);
        }
    }

    /// Tells every watcher of `user` whose view of the new state differs from what it was shown.
    fn push(&mut self, user: &UserId, new: Shown) {
        let Some(w) = self.watches.users.get(user) else { return };
        let truth = new.entry(user);
        let mut to = Vec::new();
        for conn in &w.watchers {
            let Some(c) = self.conns.get_mut(conn) else { continue };
            let Some(view) = view_of(c, user) else { continue };
            let seen = Shown::of(&privacy::apply(&truth, view, self.wall));
            let tell = c.shown.get(user).is_none_or(|s| s.differs(&seen));
            c.shown.insert(user.clone(), seen);
            if tell {
                to.push((*conn, seen));
            }
        }
        for (conn, seen) in to {
            self.stats.pushes += 1;
            self.send(conn, &Frame::Presence { id: None, users: vec![seen.entry(user)] });
        }
    }

    /// `user`'s settings or contacts changed: every connection watching `user`, and every
    /// connection of `user` itself (reciprocity: its own settings decide what it may see), reads
    /// the privacy of the affected subscriptions again.
    pub(super) fn on_privacy_changed(&mut self, user: &UserId) {
        let mut affected: BTreeMap<ConnId, Vec<UserId>> = BTreeMap::new();
        if let Some(w) = self.watches.users.get(user) {
            for conn in w.watchers.iter().chain(&w.pending) {
                affected.insert(*conn, vec![user.clone()]);
            }
        }
        for conn in self.watches.viewers.get(user).into_iter().flatten() {
            if let Some(c) = self.conns.get(conn) {
                affected.insert(*conn, c.watching.iter().filter(|t| *t != user).cloned().collect());
            }
        }
        for (conn, targets) in affected {
            // A `read_all` service sees everything whatever anyone's settings say.
            if self.conns.get(&conn).is_some_and(|c| !c.scopes.read_all) {
                self.read_watch_privacy(conn, targets);
            }
        }
    }

    /// Every subscription's privacy may be stale (the change feed may have lost notices).
    pub(super) fn reread_all_privacy(&mut self) {
        let mut all: Vec<(ConnId, Vec<UserId>)> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.scopes.read_all && !c.watching.is_empty())
            .map(|(conn, c)| (*conn, c.watching.iter().filter(|t| **t != c.user).cloned().collect()))
            .collect();
        all.sort_unstable_by_key(|(conn, _)| *conn);
        for (conn, targets) in all {
            self.read_watch_privacy(conn, targets);
        }
    }

    /// A failed privacy read's retry, or the periodic refresh, is due: read every subscription of
    /// `conn` again.
    pub(super) fn privacy_retry_due(&mut self, conn: ConnId) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if c.privacy_refresh_at.is_some_and(|at| at <= now) {
            c.privacy_refresh_at = None;
        }
        let targets = c.watching.iter().filter(|t| **t != c.user).cloned().collect();
        self.read_watch_privacy(conn, targets);
    }

    fn read_watch_privacy(&mut self, conn: ConnId, targets: Vec<UserId>) {
        let Some(c) = self.conns.get(&conn) else { return };
        if targets.is_empty() {
            return;
        }
        let op = PrivacyOp::Read { viewer: c.user.clone(), targets: targets.clone() };
        self.emit_store(StoreOp::Privacy(op), InFlight::WatchPrivacy { conn, targets });
    }

    /// A subscription's privacy re-read answered: record the new views, and push to the
    /// connection each watched user whose entry, as the new view shows the state last evaluated,
    /// is not what it was shown. A failed read drops those views (failing closed: nothing is
    /// pushed about those users meanwhile) and is retried after `Config::lease_renew_interval`.
    pub(super) fn watch_privacy_done(
        &mut self,
        conn: ConnId,
        id: EffectId,
        targets: Vec<UserId>,
        result: Result<StoreOutput, StoreError>,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let answer = match result {
            Ok(StoreOutput::Privacy(a)) if a.targets.len() == targets.len() => a,
            // Fail closed: forget the views, so nothing is pushed about these users until a
            // later read (the next notice, resync or subscribe) answers.
            _ => {
                for t in &targets {
                    c.views.remove(t);
                }
                let at = self.now.saturating_add(self.config.lease_renew_interval);
                self.watches.privacy_retry.insert((at, conn));
                return;
            }
        };
        let views = answer.views(&c.user, &targets);
        let mut changed = Vec::new();
        for (target, view) in targets.iter().zip(views) {
            if set_view(&mut c.views, target, SeenView { view, read: id.0 }) {
                changed.push(target.clone());
            }
        }
        for target in changed {
            self.reshow(conn, &target);
        }
        self.arm_privacy_refresh(conn);
    }

    /// Arms the next periodic re-read of `conn`'s views (`Config::privacy_refresh`), if none is:
    /// a change whose notice was lost reaches existing subscriptions within that bound, as it
    /// reaches queries when the privacy cache's entries expire.
    fn arm_privacy_refresh(&mut self, conn: ConnId) {
        let at = self.now.saturating_add(self.config.privacy_refresh);
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if c.privacy_refresh_at.is_none() && !c.scopes.read_all {
            c.privacy_refresh_at = Some(at);
            self.watches.privacy_retry.insert((at, conn));
        }
    }

    /// Pushes to `conn` the entry of `user` as its (new) view shows the last evaluated state, if
    /// that is not what it was shown.
    fn reshow(&mut self, conn: ConnId, user: &UserId) {
        let Some(state) =
            self.watches.users.get(user).filter(|w| w.watchers.contains(&conn)).and_then(|w| w.state)
        else {
            return;
        };
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let Some(view) = view_of(c, user) else { return };
        let seen = Shown::of(&privacy::apply(&state.entry(user), view, self.wall));
        if c.shown.get(user) == Some(&seen) {
            return;
        }
        c.shown.insert(user.clone(), seen);
        self.stats.pushes += 1;
        self.send(conn, &Frame::Presence { id: None, users: vec![seen.entry(user)] });
    }

    /// Users watched by at least one connection (each is subscribed once on the change channel).
    pub fn watched_users(&self) -> usize {
        self.watches.users.len()
    }
}

/// What `c`'s user may see of `user`: everything for oneself and `read_all` services, else the
/// view from its latest privacy read (`None` until one answered).
fn view_of(c: &super::conn::Conn, user: &UserId) -> Option<View> {
    if c.scopes.read_all || c.user == *user {
        return Some(View::FULL);
    }
    c.views.get(user).map(|v| v.view)
}

/// Records `new` unless a view from a later read is in force. Returns whether the view changed.
fn set_view(views: &mut BTreeMap<UserId, SeenView>, user: &UserId, new: SeenView) -> bool {
    match views.get(user) {
        Some(old) if old.read > new.read => false,
        Some(old) => {
            let changed = old.view != new.view;
            views.insert(user.clone(), new);
            changed
        }
        None => {
            views.insert(user.clone(), new);
            true
        }
    }
}
