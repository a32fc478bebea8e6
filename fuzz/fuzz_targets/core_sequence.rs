//! The core under arbitrary sequences of inputs: opens, raw frames, proofs of life, closes, time
//! jumps (both clocks, both directions for the wall clock), store results in any order (ok, failed,
//! applied-but-timed-out), registry restarts, lease expiries (and so the reaper), change
//! notices and resyncs (subscriptions arrive as raw frames), lookups, shutdown, token expiries
//! and `auth` verdicts (valid, for another user, refused), closes by the connection's task for a
//! policy breach. Asserts: no
//! panic; the last_seen values asked for a user never regress; no effect for a connection that is
//! not open; pending writes stay under cap + 2 x live sessions; after
//! healing, nothing is pending, every expired lease is reaped, the registry holds exactly the
//! open sessions, and Watch/Unwatch balance.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use presence_core::frame::Encoding;
use presence_core::store::{DurableOp, EffectId, RegistryOp, StoreError, StoreOp, StoreOutput};
use presence_core::testkit::MemoryStores;
use presence_core::time::{MonoTime, Now, UnixMillis};
use presence_core::user::{SessionId, UserId};
use presence_core::{Config, ConnId, Effect, Input, LookupId, Presence, TokenGrant};

#[derive(Arbitrary, Debug)]
enum Op {
    /// A user, and the token's lifetime in seconds (`None`: never expires).
    Open(u8, Option<u8>),
    Frame(u8, bool, Vec<u8>),
    Alive(u8),
    Close(u8, bool),
    Advance(u16, i32),
    Complete(u8, u8),
    RegistryRestart,
    LeaseExpires,
    Changed(u8),
    Resync,
    Lookup(u8, Vec<u8>),
    Shutdown,
    /// The runtime's verdict on an `auth` frame: conn, user, lifetime in seconds, or refused.
    TokenChecked(u8, u8, Option<u8>, bool),
    PolicyClosed(u8),
}

const USERS: [&str; 3] = ["bob", "alice", "carol"];
const CAP: usize = 8;

struct Run {
    p: Presence,
    mono_ms: u64,
    wall_ms: i64,
    open: BTreeMap<ConnId, (UserId, SessionId)>,
    peak_open: usize,
    next_conn: u64,
    in_flight: Vec<(EffectId, StoreOp)>,
    stores: MemoryStores,
    asked: BTreeMap<UserId, UnixMillis>,
    /// Users subscribed on the change channel (`Watch` minus `Unwatch`).
    watched: BTreeSet<UserId>,
    /// Values the reaper recorded (see `feed`).
    reaped: BTreeSet<(UserId, UnixMillis)>,
}

impl Run {
    fn feed(&mut self, input: Input<'_>) {
        // Counted before the core sees the input: a connection the core ends at once (its token
        // already expired at the open) was still a live session for the bound below. Draining
        // only removes connections, so this is the peak.
        self.peak_open = self.peak_open.max(self.open.len());
        let now =
            Now { mono: MonoTime::from_nanos(self.mono_ms * 1_000_000), wall: UnixMillis(self.wall_ms) };
        self.p.handle(now, input);
        while let Some(e) = self.p.poll_effect() {
            match e {
                Effect::Send { conn, .. } => assert!(self.open.contains_key(&conn)),
                Effect::Close { conn, .. } => {
                    self.open.remove(&conn);
                }
                Effect::LookupDone { .. } => {}
                Effect::VerifyToken { conn, .. } => assert!(self.open.contains_key(&conn)),
                Effect::Watch { user } => assert!(self.watched.insert(user), "second Watch"),
                Effect::Unwatch { user } => {
                    assert!(self.watched.remove(&user), "Unwatch of an unwatched user")
                }
                Effect::Store { id, op } => {
                    let asked = match &op {
                        StoreOp::Registry(RegistryOp::EndSession { user, last_seen, .. }) => {
                            Some((user, last_seen))
                        }
                        // The reaper's writes carry a dead lease's last renewal, not our values.
                        StoreOp::Durable(DurableOp::Write { user, last_seen })
                            if !self.reaped.contains(&(user.clone(), *last_seen)) =>
                        {
                            Some((user, last_seen))
                        }
                        _ => None,
                    };
                    if let Some((user, last_seen)) = asked {
                        let prev = self.asked.entry(user.clone()).or_insert(*last_seen);
                        assert!(*last_seen >= *prev, "last_seen regression for {user}");
                        *prev = *last_seen;
                    }
                    self.in_flight.push((id, op));
                }
            }
        }
        assert!(self.p.pending_writes() <= CAP + 2 * self.peak_open);
        assert_eq!(self.p.connections(), self.open.len());
    }

    fn complete(&mut self, i: usize, how: u8) {
        if self.in_flight.is_empty() {
            return;
        }
        let (id, op) = self.in_flight.remove(i % self.in_flight.len());
        let result = match how % 4 {
            0 | 1 => Ok(self.stores.apply(&op)),
            2 => Err(StoreError::Unavailable("fuzz".into())),
            _ => {
                self.stores.apply(&op);
                Err(StoreError::Timeout)
            }
        };
        if let Ok(StoreOutput::Reap(Some(batch))) = &result {
            for (user, _, _) in &batch.sessions {
                self.reaped.insert((user.clone(), batch.last_seen));
            }
        }
        self.feed(Input::StoreDone { id, result });
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let config = Config {
        max_pending_writes: CAP,
        retry_max: Duration::from_secs(1),
        ping_interval: Duration::from_secs(2),
        heartbeat_timeout: Duration::from_secs(5),
        ..Config::default()
    };
    let mut r = Run {
        p: Presence::new(config, 3),
        mono_ms: 0,
        wall_ms: 1_700_000_000_000,
        open: BTreeMap::new(),
        peak_open: 0,
        next_conn: 0,
        in_flight: Vec::new(),
        stores: MemoryStores::default(),
        asked: BTreeMap::new(),
        reaped: BTreeSet::new(),
        watched: BTreeSet::new(),
    };
    let mut shut = false;
    for op in ops.into_iter().take(500) {
        let pick = |r: &Run, c: u8| ConnId(u64::from(c) % (r.next_conn + 1));
        match op {
            Op::Open(u, ttl) => {
                let expires = ttl.map(|s| UnixMillis(r.wall_ms + 1_000 * i64::from(s)));
                r.next_conn += 1;
                let conn = ConnId(r.next_conn);
                let user = UserId::new(USERS[usize::from(u) % USERS.len()]).unwrap();
                let session = SessionId::new(format!("s{}", r.next_conn));
                if r.p.readiness().accepting {
                    r.open.insert(conn, (user.clone(), session.clone()));
                }
                r.feed(Input::Open { conn, user, session, expires, scopes: Default::default() });
            }
            Op::Frame(c, binary, bytes) => {
                let conn = pick(&r, c);
                let encoding = if binary { Encoding::Binary } else { Encoding::Json };
                r.feed(Input::Message { conn, encoding, payload: &bytes });
            }
            Op::Alive(c) => {
                let conn = pick(&r, c);
                // Handed in late by up to 255 ms, as the runtime batches proofs of life.
                let at = MonoTime::from_nanos(r.mono_ms.saturating_sub(u64::from(c)) * 1_000_000);
                r.feed(Input::Alive { conn, at });
            }
            Op::Close(c, graceful) => {
                let conn = pick(&r, c);
                r.open.remove(&conn);
                r.feed(Input::Closed { conn, graceful });
            }
            Op::Advance(ms, jump) => {
                r.mono_ms += u64::from(ms);
                r.wall_ms += i64::from(ms) + i64::from(jump);
                r.feed(Input::Timeout);
            }
            Op::Complete(i, how) => r.complete(usize::from(i), how),
            Op::RegistryRestart => {
                r.stores.lose_registry();
                r.feed(Input::RegistryRestarted);
            }
            Op::Changed(u) => {
                let user = UserId::new(USERS[usize::from(u) % USERS.len()]).unwrap();
                r.feed(Input::Changed { user });
            }
            Op::Resync => r.feed(Input::Resync),
            Op::LeaseExpires => {
                for token in r.stores.leases.keys().copied().collect::<Vec<_>>() {
                    r.stores.expire_lease(token);
                }
            }
            Op::Lookup(asker, names) => {
                let users = names
                    .iter()
                    .map(|&n| UserId::new(USERS[usize::from(n) % USERS.len()]).unwrap())
                    .collect();
                let user = UserId::new(USERS[usize::from(asker) % USERS.len()]).unwrap();
                r.feed(Input::Lookup { lookup: LookupId(1), user, users, read_all: false });
            }
            Op::TokenChecked(c, u, ttl, ok) => {
                let conn = pick(&r, c);
                let user = UserId::new(USERS[usize::from(u) % USERS.len()]).unwrap();
                let expires = ttl.map(|s| UnixMillis(r.wall_ms + 1_000 * i64::from(s)));
                let result = if ok { Ok(TokenGrant { user, expires, scopes: Default::default() }) } else { Err("fuzz".to_owned()) };
                r.feed(Input::TokenChecked { conn, result });
            }
            Op::PolicyClosed(c) => {
                let conn = pick(&r, c);
                r.open.remove(&conn);
                r.feed(Input::PolicyClosed { conn });
            }
            Op::Shutdown => {
                shut = true;
                r.feed(Input::Shutdown);
            }
        }
    }
    // Heal: every operation succeeds; open connections keep proving life.
    for _ in 0..100 {
        while !r.in_flight.is_empty() {
            r.complete(0, 0);
        }
        if r.p.pending_writes() == 0 && r.p.registry_backlog() == 0 && (shut || r.stores.expired.is_empty()) {
            break;
        }
        for conn in r.open.keys().copied().collect::<Vec<_>>() {
            let at = MonoTime::from_nanos(r.mono_ms * 1_000_000);
            r.feed(Input::Alive { conn, at });
        }
        r.mono_ms += 500;
        r.wall_ms += 500;
        r.feed(Input::Timeout);
    }
    while !r.in_flight.is_empty() {
        r.complete(0, 0);
    }
    assert_eq!(r.p.pending_writes(), 0);
    let mut want: BTreeMap<UserId, BTreeSet<SessionId>> = BTreeMap::new();
    for (user, session) in r.open.values() {
        want.entry(user.clone()).or_default().insert(session.clone());
    }
    assert_eq!(r.stores.registered(), want);
    assert_eq!(r.p.watched_users(), r.watched.len());
    // A server shutting down stops renewing and reaping: only a live one must have reaped all.
    if !shut {
        assert!(r.stores.expired.is_empty());
    }
    if shut {
        assert!(r.open.is_empty());
    }
});
