//! I10, private: no viewer receives, in an answer or a push, a value the privacy rule forbids at
//! the time it is sent, allowing only the documented propagation bound after a change; no push
//! shows a viewer nothing new (its timing alone would reveal a change it may not see); and after
//! the quiet phase every watcher's view is what the final settings allow.
//!
//! The rule is written here again, independently of `presence_core::privacy` (docs/PRIVACY.md,
//! "The rule"), so a bug there is a disagreement here.
//!
//! Time: a change request sent at `s` and answered 200 at `d` may be in force from `s` (the
//! durable write lands before the answer), and the value before it may still be applied by some
//! server until `d + PRIVACY_PROPAGATION_MS`. A request that failed or was never answered may have
//! landed or not: both values stay possible until a later change is answered. If the change feed
//! may have lost the change's notice (a fault on some server's path to Redis, or Redis down,
//! overlapping the request or its propagation, or the servers reconnecting after it), the old value
//! may be applied until the fault's end plus twice the privacy cache's TTL (`PRIVACY_TTL_MS`: a
//! cache entry expires after one, and each subscription's views are read again after one, maybe
//! from an entry filled just before) and the propagation bound: docs/PRIVACY.md, "Propagation",
//! the backstop.

use std::collections::BTreeSet;

use crate::model::{Model, PrivacyChange, PrivacyEdit, Shown, SimSettings};
use crate::oracle::{healthy_at_end, secs, Verdict};
use crate::world::bounds;

/// A value one user's settings or contacts may have had, and from when until when a server may
/// have applied it (inclusive).
struct Span<T> {
    value: T,
    from: u64,
    until: u64,
}

/// Per user, every value its settings and its contacts may have had.
struct Possible {
    settings: Vec<Vec<Span<SimSettings>>>,
    contacts: Vec<Vec<Span<BTreeSet<usize>>>>,
}

/// What a viewer may see of a target: (the exact last_seen, the online state).
type View = (bool, bool);

/// Runs I10 over every answer and push, and over the watchers' views at `end`.
pub fn check(m: &Model, v: &mut Verdict, end: u64) {
    let p = possible(m);
    for a in &m.answers {
        let viewer = m.conns[a.conn].user;
        let full = a.entries.iter().map(|&(u, online, ls)| (u, (online, ls, None)));
        for (target, shown) in full.chain(a.hidden.iter().copied()) {
            if target == viewer {
                continue;
            }
            v.count("I10 checks (answer entries)");
            let views = views_in(&p, viewer, target, a.t_sent, a.t_recv);
            if let Some(why) = forbidden(shown, &views) {
                let who = format!("c{} ({} asking srv{})", a.conn, m.users[viewer], a.server);
                let when = format!("sent {}, received {}", secs(a.t_sent), secs(a.t_recv));
                v.violate(
                    "I10",
                    format!("{who} was answered {} as {shown:?} ({when}): {why}", m.users[target]),
                );
            }
        }
    }
    for push in &m.push_log {
        let c = &m.conns[push.conn];
        v.count("I10 checks (pushes)");
        let who = format!("c{} ({} watching from srv{})", push.conn, m.users[c.user], c.server);
        let target = &m.users[push.user];
        if push.before == Some(push.shown) {
            let msg = format!("{who} was pushed {target} as {:?} at {}, which it was shown already: the push alone reveals a change", push.shown, secs(push.t));
            v.violate("I10", msg);
        }
        let views = views_in(&p, c.user, push.user, push.t.saturating_sub(bounds::PUSH_SLACK_MS), push.t);
        if let Some(why) = forbidden(push.shown, &views) {
            v.violate(
                "I10",
                format!("{who} was pushed {target} as {:?} at {}: {why}", push.shown, secs(push.t)),
            );
        }
    }
    check_final_views(m, v, &p, end);
}

/// After the quiet phase: a healthy watcher's view of each user is what the final settings allow
/// (hidden where they hide, not hidden where they show: a lost re-evaluation keeps neither).
fn check_final_views(m: &Model, v: &mut Verdict, p: &Possible, end: u64) {
    for (cx, c) in m.conns.iter().enumerate() {
        if c.subscribed.is_none() || !healthy_at_end(c, end) {
            continue;
        }
        for (&target, &shown) in &c.view {
            if target == c.user {
                continue;
            }
            let views = views_in(p, c.user, target, end, end);
            let (exact, hidden) = (shown.1.is_some() && shown.2.is_none(), shown.2.is_some());
            let who = format!("c{cx} ({} watching from srv{})", m.users[c.user], c.server);
            v.count("I10 checks (views after the quiet phase)");
            if exact && views.iter().all(|view| !view.0) {
                v.violate("I10", format!("{who} still shows {}'s exact last_seen after the quiet phase: {shown:?}, though the settings hide it", m.users[target]));
            } else if hidden && views.iter().all(|view| view.0) {
                v.violate("I10", format!("{who} still shows {} hidden after the quiet phase: {shown:?}, though the settings show it", m.users[target]));
            }
        }
    }
}

/// Why `shown` is more than any of `views` allows, if it is.
fn forbidden((online, last_seen, approx): Shown, views: &[View]) -> Option<&'static str> {
    if last_seen.is_some() && approx.is_some() {
        return Some("a hidden entry carries the exact last_seen");
    }
    if last_seen.is_some() && !views.iter().any(|v| v.0) {
        return Some("the exact last_seen was visible under no settings in force");
    }
    if online && !views.iter().any(|v| v.1) {
        return Some("the online state was visible under no settings in force");
    }
    None
}

/// Every view of `viewer` on `target` that some combination of the settings and contacts possibly
/// in force between `a` and `b` gives.
fn views_in(p: &Possible, viewer: usize, target: usize, a: u64, b: u64) -> Vec<View> {
    let (ts, tc) = (in_force(&p.settings[target], a, b), in_force(&p.contacts[target], a, b));
    let (vs, vc) = (in_force(&p.settings[viewer], a, b), in_force(&p.contacts[viewer], a, b));
    let mut out = Vec::new();
    for t_set in &ts {
        for t_con in &tc {
            for v_set in &vs {
                for v_con in &vc {
                    let (t_side, v_side) = ((*t_set, *t_con), (*v_set, *v_con));
                    let view = (
                        shares(t_side, viewer) && shares(v_side, target),
                        shares_online(t_side, viewer) && shares_online(v_side, target),
                    );
                    if !out.contains(&view) {
                        out.push(view);
                    }
                }
            }
        }
    }
    out
}

/// The values of `spans` possibly in force at some time between `a` and `b`.
fn in_force<T>(spans: &[Span<T>], a: u64, b: u64) -> Vec<&T> {
    spans.iter().filter(|s| s.from <= b && s.until >= a).map(|s| &s.value).collect()
}

/// shares(X, other): X shows its last_seen to `other`.
fn shares((settings, contacts): (&SimSettings, &BTreeSet<usize>), other: usize) -> bool {
    !settings.except.contains(&other)
        && match settings.last_seen {
            0 => true,
            1 => contacts.contains(&other),
            _ => false,
        }
}

/// shares_online(X, other): X shows its online state to `other`.
fn shares_online(side: (&SimSettings, &BTreeSet<usize>), other: usize) -> bool {
    !side.0.except.contains(&other) && (side.0.online_everyone || shares(side, other))
}

/// Every value each user's settings and contacts may have had, with when.
fn possible(m: &Model) -> Possible {
    let n = m.users.len();
    let mut p = Possible { settings: Vec::new(), contacts: Vec::new() };
    for u in 0..n {
        let mine = m.privacy.iter().filter(|c| c.user == u);
        let settings = mine.clone().filter_map(|c| match &c.edit {
            PrivacyEdit::Settings(s) => Some((c, s.clone())),
            PrivacyEdit::Contacts(_) => None,
        });
        p.settings.push(spans(m, SimSettings::default_everyone(), settings.collect()));
        let contacts = mine.filter_map(|c| match &c.edit {
            PrivacyEdit::Contacts(set) => Some((c, set.clone())),
            PrivacyEdit::Settings(_) => None,
        });
        p.contacts.push(spans(m, BTreeSet::new(), contacts.collect()));
    }
    p
}

/// The spans of one user's settings (or contacts): the initial value, then each change's, in the
/// order they were sent (the settings host sends one at a time).
fn spans<T>(m: &Model, initial: T, changes: Vec<(&PrivacyChange, T)>) -> Vec<Span<T>> {
    // Until when the value before change `j` may still be applied, if `j` was answered 200.
    let superseded_at = |c: &PrivacyChange| -> Option<u64> {
        let (done, status) = c.answer?;
        (status == 200).then(|| stale_until(m, c.t_sent, done))
    };
    let ends: Vec<Option<u64>> = changes.iter().map(|(c, _)| superseded_at(c)).collect();
    // The value before change `i` ends at the first answered change from `i` on (never, if none).
    let until = |i: usize| ends[i..].iter().flatten().min().copied().unwrap_or(u64::MAX);
    let mut out = vec![Span { value: initial, from: 0, until: until(0) }];
    for (i, (c, value)) in changes.into_iter().enumerate() {
        out.push(Span { value, from: c.t_sent, until: until(i + 1) });
    }
    out
}

/// Until when a server may still apply the value a change sent at `sent` and answered at `done`
/// replaced: the propagation bound, or, if the change feed may have lost its notice meanwhile,
/// the end of that fault plus two of the privacy cache's TTLs.
fn stale_until(m: &Model, sent: u64, done: u64) -> u64 {
    let normal = done + bounds::PRIVACY_PROPAGATION_MS;
    // A fault counts until its servers have reconnected to Redis after it healed.
    let feed_faults = m.faults.iter().filter(|f| {
        f.start <= normal
            && f.end.saturating_add(bounds::REDIS_RECOVER_MS) >= sent
            && Model::disturbs_some_redis_path(f)
    });
    match feed_faults.map(|f| f.end).max() {
        // A view's periodic re-read may hit a cache entry filled up to a TTL earlier.
        Some(healed) => healed.max(done) + 2 * bounds::PRIVACY_TTL_MS + bounds::PRIVACY_PROPAGATION_MS,
        None => normal,
    }
}
