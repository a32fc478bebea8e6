//! The oracles: invariants I1-I8 of the design notes (section 5; I10 is in `crate::privacy_oracle`),
//! judged against the reference model after the run (over every answer the clients received during
//! it, and over the stores after the quiet phase). I7 and the store half of I5 are checked live by
//! the stand-ins; I9 (determinism) by running a seed twice. Bounds are in `crate::world::bounds` and explained in
//! `docs/SIMULATION.md`.

use std::collections::BTreeMap;

use crate::model::{End, Model};
use crate::redis_host::RedisState;
use crate::world::{bounds, lock, World, EPOCH_MS};

/// What the oracles found, and how much they looked at.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Violations (first few per invariant), human-readable.
    pub violations: Vec<String>,
    /// Counters: checks made, checks excused by a documented gap, per invariant.
    pub counts: BTreeMap<String, u64>,
}

impl Verdict {
    pub(crate) fn count(&mut self, what: &str) {
        *self.counts.entry(what.to_owned()).or_default() += 1;
    }

    pub(crate) fn violate(&mut self, inv: &str, msg: String) {
        self.count(&format!("{inv} violations"));
        let shown = self.violations.iter().filter(|v| v.starts_with(inv)).count();
        if shown < 5 {
            self.violations.push(format!("{inv} {msg}"));
        }
    }
}

pub(crate) fn secs(t: u64) -> String {
    format!("{}.{:03}s", t / 1000, t % 1000)
}

/// Crash time of server `s`'s incarnation `inc`, if it crashed.
fn crash_of(crashes: &[Vec<u64>], s: usize, inc: usize) -> Option<u64> {
    crashes[s].get(inc).copied()
}

/// Runs every oracle. `end`: virtual time the run ended.
pub fn check(w: &World, end: u64) -> Verdict {
    let mut v = Verdict::default();
    let m = lock(&w.model);
    let crashes: Vec<Vec<u64>> = lock(&w.servers).iter().map(|s| s.crashes.clone()).collect();
    let durable = w.dynamo.snapshot();
    // Times the Redis data was wiped (crash or bounce): a crashed server's lease and session index
    // die with it, and with them the reaper's record of its sessions (a documented gap).
    let wipes: Vec<u64> =
        m.faults.iter().filter(|f| f.kind == crate::model::FaultKind::RedisDown).map(|f| f.start).collect();
    let crash = Crashes { crashes, wipes };

    let history = w.dynamo.history();
    check_answers(&m, &mut v, &crash, &history);
    check_durable(&m, &mut v, &crash, &durable);
    check_durable_timely(&m, &mut v, end, &crash, &history);
    check_convergence(w, &m, &mut v, end, &crash, &durable);
    crate::privacy_oracle::check(&m, &mut v, end);
    v
}

/// What the oracles need to know about server crashes.
struct Crashes {
    /// Per server, crash time of each incarnation that crashed.
    crashes: Vec<Vec<u64>>,
    /// Times Redis lost its data.
    wipes: Vec<u64>,
}

impl Crashes {
    /// When the server holding `c` crashed while `c`'s session could still be registered: the
    /// session was not certainly ended by its server before the crash.
    fn held_at_crash(&self, c: &crate::model::Conn) -> Option<u64> {
        let tc = crash_of(&self.crashes, c.server, c.incarnation)?;
        (c.t_attempt <= tc && c.gone_at().is_none_or(|g| g >= tc)).then_some(tc)
    }

    /// The writer of a Redis value (`srv<N>`, true time) crashed after writing it.
    fn recorder_crashed(&self, writer: Option<(&str, u64)>) -> bool {
        let Some((peer, t)) = writer else { return false };
        let Some(s) = peer.strip_prefix("srv").and_then(|n| n.parse::<usize>().ok()) else { return false };
        self.crashes.get(s).is_some_and(|c| c.iter().any(|&tc| tc >= t))
    }

    /// Some server crashed between `a` and `b`.
    fn crashed_between(&self, a: u64, b: u64) -> bool {
        self.crashes.iter().flatten().any(|&t| t >= a && t <= b)
    }

    /// Redis lost its data between `a` and `b`.
    fn wiped(&self, a: u64, b: u64) -> bool {
        self.wipes.iter().any(|&x| x >= a && x <= b)
    }

    /// `c` ended (as its client saw it) before its server crashed, without proof that the server
    /// recorded it durably first: its durable write may have died with the server (documented).
    fn end_lost_with_crash(&self, m: &Model, c: &crate::model::Conn) -> bool {
        let Some(tc) = crash_of(&self.crashes, c.server, c.incarnation) else { return false };
        let Some((kind, t_end)) = c.end else { return false };
        if self.held_at_crash(c).is_some() || c.t_attempt > tc {
            return false;
        }
        let written_before_crash =
            kind == End::CloseAcked && t_end + 3_000 < tc && !m.dynamo_disturbed(t_end, t_end + 3_000);
        !written_before_crash
    }
}

/// When DynamoDB first held a value >= `value` for `user` (from the stand-in's history).
fn durable_since(history: &BTreeMap<String, Vec<(u64, i64)>>, user: &str, value: i64) -> Option<u64> {
    history.get(user).and_then(|h| h.iter().find(|&&(_, x)| x >= value)).map(|&(t, _)| t)
}

/// I1: per user, an answer requested after another was received never shows an older value
/// (with the excuses docs/SIMULATION.md lists).
fn check_monotone(m: &Model, v: &mut Verdict, crash: &Crashes, history: &BTreeMap<String, Vec<(u64, i64)>>) {
    for u in 0..m.users.len() {
        let mut obs: Vec<(u64, u64, Option<i64>, usize)> = Vec::new();
        for (ix, a) in m.answers.iter().enumerate() {
            for &(eu, _, ls) in &a.entries {
                if eu == u {
                    obs.push((a.t_recv, a.t_sent, ls, ix));
                }
            }
        }
        obs.sort();
        // prefix[i] = (max value among obs[..=i], the answer holding it)
        let mut prefix: Vec<(Option<i64>, usize)> = Vec::with_capacity(obs.len());
        for (i, o) in obs.iter().enumerate() {
            let prev = if i == 0 { (None, usize::MAX) } else { prefix[i - 1] };
            prefix.push(if o.2 > prev.0 { (o.2, o.3) } else { prev });
        }
        for o in &obs {
            v.count("I1 checks");
            let earlier = obs.partition_point(|x| x.0 < o.1);
            if earlier == 0 {
                continue;
            }
            let (best, from) = prefix[earlier - 1];
            if best.is_some() && o.2 < best {
                // A value clamped to the reader's now + max skew is >= the true time of the request.
                if o.2.is_some_and(|x| x >= EPOCH_MS + o.1 as i64) {
                    v.count("I1 excused (clamped to reader's skew ceiling)");
                    continue;
                }
                // The higher value was in no durable store when Redis lost its data (after the
                // value existed: it is a wall-clock reading, at most MAX_SKEW ahead of true time).
                // Then only its server knows it. That server records it again, or refreshes the
                // cache after its durable write, once its Redis path works; until then readers
                // answer DynamoDB's older value, or a cache a reader backfilled with it before the
                // write landed. Excused while some server's Redis path
                // is still recovering; or, while it is still in no durable store, when a server
                // crashed meanwhile (if that server held it, the value died with it: documented,
                // ARCHITECTURE.md, "Leases and the reaper").
                let high = best.unwrap_or(i64::MIN);
                let born = (high - EPOCH_MS - bounds::MAX_SKEW_MS).max(0) as u64;
                let since = durable_since(history, &m.users[u], high);
                if crash.wipes.iter().any(|&x| x >= born && x <= o.1 && since.is_none_or(|t| t > x)) {
                    let recovering = (0..crash.crashes.len()).any(|s| {
                        m.last_redis_disturbance(s, o.1)
                            .is_some_and(|d| d.saturating_add(bounds::REDIS_RECOVER_MS) > o.1)
                    });
                    if recovering {
                        v.count(
                            "I1 excused (higher value not durable, Redis path recovering from a data loss)",
                        );
                        continue;
                    }
                    if crash.crashed_between(born, o.1) && since.is_none_or(|t| t > o.1) {
                        v.count(
                            "I1 excused (higher value not durable at a Redis data loss, a server crashed)",
                        );
                        continue;
                    }
                }
                let a = &m.answers[o.3];
                let b = &m.answers[from];
                v.violate(
                    "I1",
                    format!(
                        "{}: answer from srv{} (sent {}, c{}) said last_seen {:?}, but an answer from srv{} received at {} (c{}) said {:?}",
                        m.users[u],
                        a.server,
                        secs(o.1),
                        a.conn,
                        o.2,
                        b.server,
                        secs(b.t_recv),
                        b.conn,
                        best
                    ),
                );
            }
        }
    }
}

fn check_answers(m: &Model, v: &mut Verdict, crash: &Crashes, history: &BTreeMap<String, Vec<(u64, i64)>>) {
    check_monotone(m, v, crash, history);
    for a in &m.answers {
        for &(u, online, ls) in &a.entries {
            // I5: no value beyond the reader's clock + max skew.
            v.count("I5 checks");
            if let Some(x) = ls {
                if x > a.reader_max_wall + bounds::MAX_SKEW_MS {
                    v.violate(
                        "I5",
                        format!(
                            "{}: srv{} answered last_seen {x}, {} ms beyond its clock + max skew (sent {})",
                            m.users[u],
                            a.server,
                            x - a.reader_max_wall - bounds::MAX_SKEW_MS,
                            secs(a.t_sent)
                        ),
                    );
                }
            }
            if online {
                check_ghost(m, v, a, u, crash);
            } else {
                check_false_offline(m, v, a, u);
            }
        }
    }
}

/// I3: a user with a session that is certainly live and certainly registered is never reported
/// offline.
fn check_false_offline(m: &Model, v: &mut Verdict, a: &crate::model::Answer, u: usize) {
    for (cx, c) in m.conns.iter().enumerate() {
        if c.user != u {
            continue;
        }
        let Some(open) = c.t_open else { continue };
        if open + bounds::REGISTER_GRACE_MS > a.t_sent {
            continue;
        }
        // Live after the answer: the server still answered on this session later.
        if c.last_acked_send.is_none_or(|s| s < a.t_recv) {
            continue;
        }
        v.count("I3 checks");
        if let Some(d) = m.last_redis_disturbance(c.server, a.t_recv) {
            if d == u64::MAX || d.max(open) + bounds::REDIS_RECOVER_MS > a.t_sent {
                v.count("I3 excused (registry path of the session's server recently disturbed)");
                continue;
            }
        }
        v.violate(
            "I3",
            format!(
                "{}: srv{} said offline (query sent {}, c{}) while c{cx} on srv{} was open since {} and answered a request sent at {}",
                m.users[u],
                a.server,
                secs(a.t_sent),
                a.conn,
                c.server,
                secs(open),
                secs(c.last_acked_send.unwrap_or(0))
            ),
        );
        return;
    }
}

/// I4: a user with no live session since t is reported offline by t + bound.
fn check_ghost(m: &Model, v: &mut Verdict, a: &crate::model::Answer, u: usize, crash: &Crashes) {
    let mut gone = 0u64;
    let mut bound = 0u64;
    for c in m.conns.iter().filter(|c| c.user == u && c.t_attempt <= a.t_recv) {
        match c.gone_at() {
            Some(g) if g <= a.t_sent => {
                gone = gone.max(g);
                let mut b = g + bounds::HEARTBEAT_TIMEOUT_MS + bounds::GHOST_SLACK_MS;
                if let Some(d) = m.last_redis_disturbance(c.server, a.t_recv) {
                    if d >= g {
                        b = b.max(d.saturating_add(bounds::REDIS_RECOVER_MS));
                    }
                }
                // Its server crashed before ending it: the entry reads as offline once the
                // server's lease expired (and is reaped soon after).
                if let Some(tc) = crash.held_at_crash(c).or_else(|| {
                    crash_of(&crash.crashes, c.server, c.incarnation)
                        .filter(|&tc| tc < b && c.t_attempt <= tc)
                }) {
                    b = b.max(tc + bounds::CRASH_GHOST_MS);
                }
                bound = bound.max(b);
            }
            _ => return, // possibly live
        }
    }
    if bound == 0 || a.t_sent <= bound {
        return;
    }
    v.count("I4 checks");
    v.violate(
        "I4",
        format!(
            "{}: srv{} said online (query sent {}, c{}) but every session ended by {} (bound {})",
            m.users[u],
            a.server,
            secs(a.t_sent),
            a.conn,
            secs(gone),
            secs(bound)
        ),
    );
}

/// I2: every ended session has a durable last_seen >= its last proof of life - max skew; a
/// session whose server crashed holding it, >= its proof of life - max skew - one lease renewal
/// interval (the reaper records the dead lease's last renewal).
fn check_durable(m: &Model, v: &mut Verdict, crash: &Crashes, durable: &BTreeMap<String, i64>) {
    for (cx, c) in m.conns.iter().enumerate() {
        let (Some((kind, t_end)), Some(_)) = (c.end, c.t_open) else { continue };
        let Some(proof) = c.last_acked_send else { continue };
        v.count("I2 checks");
        let mut slack = bounds::MAX_SKEW_MS;
        if let Some(tc) = crash.held_at_crash(c) {
            // Reaped. Known gaps (ARCHITECTURE.md): Redis lost the lease and its index before the
            // reaper got to them; or the server's path to Redis was down before the crash, so its
            // last renewal is older than one interval.
            let reaped_by = tc + bounds::LEASE_TTL_MS + bounds::LEASE_RENEW_MS + bounds::REAP_SLACK_MS;
            if crash.wiped(tc.saturating_sub(bounds::LEASE_TTL_MS), reaped_by) {
                v.count("I2 excused (Redis lost a crashed server's lease before it was reaped)");
                continue;
            }
            let renew_window = tc.saturating_sub(bounds::LEASE_TTL_MS + bounds::LEASE_RENEW_MS);
            if m.last_redis_disturbance(c.server, tc).is_some_and(|d| d >= renew_window) {
                v.count("I2 excused (crashed server's registry path was disturbed before the crash)");
                continue;
            }
            v.count("I2 checks (reaped session)");
            slack += (bounds::LEASE_RENEW_MS + bounds::REDIS_OP_TIMEOUT_MS) as i64;
        } else if crash.end_lost_with_crash(m, c) {
            v.count("I2 excused (ended just before its server crashed: durable write lost with it)");
            continue;
        }
        let want = EPOCH_MS + proof as i64 - slack;
        let user = &m.users[c.user];
        let got = durable.get(user).copied();
        if got.is_none_or(|g| g < want) {
            v.violate(
                "I2",
                format!(
                    "{user}: c{cx} on srv{} ended ({kind:?} at {}) with proof of life at {}; DynamoDB has {got:?}, want >= {want}",
                    c.server,
                    secs(t_end),
                    secs(proof)
                ),
            );
        }
    }
}

/// I2, in time: an ended session's last proof of life (less the skew) is in DynamoDB by a bound
/// after the server ended it and DynamoDB is healthy again (`DURABLE_RECOVER_MS`), not only at the
/// end of the run: a durable write that was dropped instead of retried is caught even when a later
/// session of the same user writes a newer value before the run ends. Sessions whose server crashed
/// before the bound are left to the end-of-run check (reaped, or documented as lost with the server).
fn check_durable_timely(
    m: &Model,
    v: &mut Verdict,
    end: u64,
    crash: &Crashes,
    history: &BTreeMap<String, Vec<(u64, i64)>>,
) {
    let dynamo: Vec<(u64, u64)> = m
        .faults
        .iter()
        .filter(|f| matches!(f.kind, crate::model::FaultKind::Dynamo(_)))
        .map(|f| (f.start, f.end))
        .collect();
    for (cx, c) in m.conns.iter().enumerate() {
        let (Some((kind, _)), Some(_), Some(proof), Some(gone)) =
            (c.end, c.t_open, c.last_acked_send, c.gone_at())
        else {
            continue;
        };
        let mut due =
            gone + bounds::HEARTBEAT_TIMEOUT_MS + bounds::GHOST_SLACK_MS + bounds::DURABLE_RECOVER_MS;
        // Every DynamoDB fault window before the deadline pushes it past the window's end.
        loop {
            let later = dynamo
                .iter()
                .filter(|&&(a, b)| a <= due && b >= gone)
                .map(|&(_, b)| b.saturating_add(bounds::DURABLE_RECOVER_MS))
                .max()
                .unwrap_or(0);
            if later <= due {
                break;
            }
            due = later;
        }
        if due > end {
            v.count("I2 timely skipped (deadline after the end of the run)");
            continue;
        }
        if crash_of(&crash.crashes, c.server, c.incarnation).is_some_and(|tc| tc <= due) {
            v.count("I2 timely skipped (server crashed before the deadline)");
            continue;
        }
        v.count("I2 timely checks");
        let want = EPOCH_MS + proof as i64 - bounds::MAX_SKEW_MS;
        let user = &m.users[c.user];
        let reached = durable_since(history, user, want);
        if reached.is_none_or(|t| t > due) {
            v.violate(
                "I2",
                format!(
                    "{user}: c{cx} on srv{} ended ({kind:?}, quiet from {}) with proof of life at {}; DynamoDB reached >= {want} at {}, due by {}",
                    c.server,
                    secs(gone),
                    secs(proof),
                    reached.map_or("never".to_owned(), secs),
                    secs(due)
                ),
            );
        }
    }
}

/// A connection still open at `end`, opened well before it, whose requests are answered.
pub(crate) fn healthy_at_end(c: &crate::model::Conn, end: u64) -> bool {
    c.end.is_none()
        && c.t_open.is_some_and(|o| o + 3_000 <= end)
        && c.last_acked_send.is_some_and(|s| s + 2_500 >= end)
}

/// Watchers: after the quiet phase, a healthy connection that subscribed to every other
/// user shows each user whose final state is settled as the truth: online exactly as the user is
/// (a healthy session, as in I6), and for an offline user the last_seen DynamoDB holds. Users whose
/// state is not settled at the end are skipped (counted).
fn check_watchers(
    m: &Model,
    v: &mut Verdict,
    (end, settle): (u64, u64),
    crash: &Crashes,
    redis: &RedisState,
    durable: &BTreeMap<String, i64>,
) {
    let healthy = |c: &crate::model::Conn| healthy_at_end(c, end);
    for (cx, w) in m.conns.iter().enumerate() {
        if w.subscribed.is_none() || !healthy(w) || w.view.is_empty() {
            continue;
        }
        for (u, name) in m.users.iter().enumerate() {
            if u == w.user {
                continue;
            }
            let conns: Vec<_> = m.conns.iter().filter(|c| c.user == u).collect();
            let live = conns.iter().any(|c| healthy(c));
            let offline = conns.iter().all(|c| c.gone_at().is_some_and(|g| g + settle <= end));
            if !live && !offline {
                v.count("W1 skipped (user's state ambiguous at the end)");
                continue;
            }
            if w.view.get(&u).is_some_and(|s| s.2.is_some()) {
                v.count("W1 skipped (hidden by the privacy rule: I10 judges it)");
                continue;
            }
            let shown = w.view.get(&u).map(|&(online, last, _)| (online, last));
            v.count("W1 checks");
            let want_last = durable.get(name).copied();
            let ok = match shown {
                Some((online, last)) => online == live && (live || last == want_last),
                None => false,
            };
            // Offline, showing what every server answers, where the stores disagree by the
            // documented crash-between-stores case (I6 excuses the same).
            let excused = !ok
                && matches!(shown, Some((false, Some(x))) if !live && redis.last_seen(name) == Some(x)
                    && stores_disagree_excuse(m, crash, redis, name, x, want_last).is_some());
            if excused {
                v.count("W1 excused (shows Redis's value; the stores disagree after a crash, as I6 excuses)");
            } else if !ok {
                v.violate(
                    "W1",
                    format!(
                        "c{cx} ({} watching from srv{}) shows {name} as {shown:?} after the quiet phase; truth: online={live}, DynamoDB last_seen {want_last:?}",
                        m.users[w.user], w.server
                    ),
                );
            }
        }
    }
}

/// Why Redis's answer `cached` for `name` may differ from DynamoDB's `stored` at the end: the
/// documented crash-between-stores case (ARCHITECTURE.md, "Leases and the reaper"), or `None`.
fn stores_disagree_excuse(
    m: &Model,
    crash: &Crashes,
    redis: &RedisState,
    name: &str,
    cached: i64,
    stored: Option<i64>,
) -> Option<&'static str> {
    let u = m.user_ix(name)?;
    // A session that ended just before its server crashed may have reached one store and not the
    // other.
    if m.conns.iter().any(|c| c.user == u && crash.end_lost_with_crash(m, c)) {
        return Some("one store's write lost with a crashed server");
    }
    // The same for any value a server recorded in Redis ahead of its durable write (a session end,
    // a reaper's mark, a re-record after a Redis restart) and then crashed before that write
    // landed.
    if stored.is_none_or(|d| d < cached) && crash.recorder_crashed(redis.recorder(name, cached)) {
        return Some("value recorded in Redis by a server that crashed before its durable write");
    }
    None
}

/// I6 (and I8): after the quiet phase the registry matches the live sessions, Redis's cached
/// last_seen matches DynamoDB's, and no server has pending writes.
fn check_convergence(
    w: &World,
    m: &Model,
    v: &mut Verdict,
    end: u64,
    crash: &Crashes,
    durable: &BTreeMap<String, i64>,
) {
    let redis = lock(&w.redis);
    if !redis.up {
        v.violate("I6", "redis is down at the end of the quiet phase".into());
        return;
    }
    let settle = bounds::HEARTBEAT_TIMEOUT_MS + bounds::GHOST_SLACK_MS + bounds::REDIS_RECOVER_MS;
    check_watchers(m, v, (end, settle), crash, &redis, durable);
    for (u, name) in m.users.iter().enumerate() {
        let conns: Vec<_> = m.conns.iter().filter(|c| c.user == u).collect();
        let live = conns.iter().any(|c| healthy_at_end(c, end));
        let offline = conns.iter().all(|c| c.gone_at().is_some_and(|g| g + settle <= end));
        let online = redis.online(name);
        v.count("I6 checks");
        if live && !online {
            v.violate(
                "I6",
                format!("{name} has a live session but the registry says offline after the quiet phase"),
            );
        } else if offline && online {
            let fields = redis.sessions(name);
            v.violate(
                "I6",
                format!("{name} has no live session but the registry holds {fields:?} after the quiet phase"),
            );
        } else if !live && !offline {
            v.count("I6 skipped (user's state ambiguous at the end)");
        }
        match (redis.last_seen(name), durable.get(name).copied()) {
            (Some(c), Some(d)) if c == d => {}
            (None, _) => {}
            (Some(c), d) => match stores_disagree_excuse(m, crash, &redis, name, c, d) {
                Some(excuse) => v.count(&format!("I6 excused ({excuse})")),
                None => v.violate(
                    "I6",
                    format!(
                        "{name}: redis last_seen {c:?} != DynamoDB last_seen {d:?} after the quiet phase"
                    ),
                ),
            },
        }
    }
    drop(redis);
    let samples = lock(&w.readyz);
    for s in samples.iter() {
        if let Some(p) = s.pending {
            v.count("I8 checks");
            if p > s.max_pending {
                v.violate(
                    "I8",
                    format!("srv{} pending writes {p} > cap {} at {}", s.server, s.max_pending, secs(s.t)),
                );
            }
        }
    }
    for s in 0..w.params.servers {
        let last = samples.iter().rev().find(|x| x.server == s);
        match last {
            Some(x) if x.t + 4_500 >= end && x.pending == Some(0) && x.ready => {}
            Some(x) => v.violate(
                "I6",
                format!(
                    "srv{s} at the end: /readyz at {} pending={:?} ready={}",
                    secs(x.t),
                    x.pending,
                    x.ready
                ),
            ),
            None => v.violate("I6", format!("srv{s}: no /readyz answer")),
        }
    }
}
