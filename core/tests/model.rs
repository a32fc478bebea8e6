//! Model-based property test of the state machine.
//!
//! Random interleavings of opens, frames (valid and garbage), closes, proofs of life, time advances
//! (with wall-clock jumps both ways), store results (ok, failed, applied-but-timed-out, out of order)
//! and registry restarts drive the core against fake stores with Redis and DynamoDB semantics. A
//! reference model of which sessions are live checks, at every step and after a healing phase:
//!
//! - last_seen values the core asks to record never regress per user;
//! - every ended session ends up in the durable store with a value >= its last proof of life;
//! - the core's local online/offline agrees with the model, and heartbeat deadlines are exact (on
//!   the check grid: closed at the first grid instant at or after the deadline, never before it);
//! - the registry converges to exactly the live sessions (no session removes another's entry, no
//!   ghost registration lands after an end);
//! - no effect names a connection after it closed;
//! - pending writes stay under the cap plus the live sessions;
//! - the core never panics.
//!
//! `PROPTEST_CASES` overrides the 10,000 cases.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use presence_core::frame::Encoding;
use presence_core::store::LeaseToken;
use presence_core::store::{DurableOp, EffectId, RegistryOp, StoreError, StoreOp, StoreOutput};
use presence_core::testkit::{max_register, MemoryStores};
use presence_core::time::{MonoTime, Now, UnixMillis};
use presence_core::user::{SessionId, UserId};
use presence_core::{Config, ConnId, Effect, Input, Presence};
use proptest::prelude::*;

const USERS: [&str; 4] = ["bob", "alice", "carol", "dave"];
const WALL0: i64 = 1_700_000_000_000;

#[derive(Clone, Debug)]
enum Step {
    Open(usize),
    Ping(usize),
    Query(usize, Vec<usize>),
    Bye(usize),
    Garbage(usize, bool, Vec<u8>),
    Alive(usize),
    Close(usize, bool),
    /// Advance monotonic time by ms; the wall clock additionally jumps by the given ms.
    Advance(u64, i64),
    /// Complete the in-flight op at this index: 0 ok, 1 failed, 2 applied but reported timed out.
    Complete(usize, u8),
    RegistryRestart,
    /// A connection subscribes to these users (JSON `subscribe`, id 9).
    Subscribe(usize, Vec<usize>),
    /// A connection unsubscribes.
    Unsubscribe(usize, Vec<usize>),
    /// A change notice for a user (pub/sub), whether or not anything changed.
    Changed(usize),
    /// The change channel reconnected: notices may have been lost.
    Resync,
    /// The registry lets our lease expire (it saw no renewal for a TTL: a partition); the server
    /// must get a new one, register again under it and reap the old one, fenced.
    LeaseExpires,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..USERS.len()).prop_map(Step::Open),
        2 => any::<usize>().prop_map(Step::Ping),
        2 => (any::<usize>(), prop::collection::vec(0..USERS.len(), 0..4)).prop_map(|(c, u)| Step::Query(c, u)),
        1 => any::<usize>().prop_map(Step::Bye),
        1 => (any::<usize>(), any::<bool>(), prop::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(c, b, g)| Step::Garbage(c, b, g)),
        3 => any::<usize>().prop_map(Step::Alive),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(c, g)| Step::Close(c, g)),
        4 => (prop_oneof![0..50u64, 0..2_000u64, 0..40_000u64],
              prop_oneof![8 => Just(0i64), 1 => -3_600_000..3_600_000i64])
            .prop_map(|(ms, j)| Step::Advance(ms, j)),
        8 => (any::<usize>(), prop_oneof![6 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8)])
            .prop_map(|(i, o)| Step::Complete(i, o)),
        1 => Just(Step::RegistryRestart),
        1 => Just(Step::LeaseExpires),
        2 => (any::<usize>(), prop::collection::vec(0..USERS.len(), 0..3)).prop_map(|(c, u)| Step::Subscribe(c, u)),
        1 => (any::<usize>(), prop::collection::vec(0..USERS.len(), 0..2)).prop_map(|(c, u)| Step::Unsubscribe(c, u)),
        2 => (0..USERS.len()).prop_map(Step::Changed),
        1 => Just(Step::Resync),
    ]
}

struct ModelConn {
    user: UserId,
    session: SessionId,
    last_proof_mono: u64,
    last_proof_wall: i64,
}

/// A session that ended: who, and the least last_seen it may record.
struct Ended {
    user: UserId,
    session: SessionId,
    min_last_seen: i64,
}

struct Harness {
    p: Presence,
    config: Config,
    mono_ms: u64,
    wall_ms: i64,
    next_conn: u64,
    /// Every connection ever opened (closed ones stay, to send them late inputs).
    all_conns: Vec<ConnId>,
    live: BTreeMap<ConnId, ModelConn>,
    ended: Vec<Ended>,
    ended_sessions: BTreeSet<SessionId>,
    in_flight: Vec<(EffectId, StoreOp)>,
    stores: MemoryStores,
    max_recorded: BTreeMap<UserId, UnixMillis>,
    restarts: u64,
    peak_live: usize,
    /// Values the reaper recorded (a dead lease's last renewal): durable writes of these are not
    /// held to the monotone order of the values this server records for its own sessions.
    reaped: BTreeSet<(UserId, UnixMillis)>,
    /// Users the core subscribed to on the change channel (`Watch` minus `Unwatch`).
    watched: BTreeSet<UserId>,
    /// Per connection, what it was last shown of each user (snapshots and pushes).
    shown: BTreeMap<ConnId, BTreeMap<String, (bool, Option<String>)>>,
    /// Per connection, the users it subscribed to and did not unsubscribe since.
    subs: BTreeMap<ConnId, BTreeSet<String>>,
    /// The answers to the harness's own lookups.
    lookups: Vec<Vec<(String, bool, Option<String>)>>,
}

impl Harness {
    fn new() -> Self {
        let config = Config {
            ping_interval: Duration::from_secs(15),
            heartbeat_timeout: Duration::from_secs(30),
            retry_max: Duration::from_secs(1),
            max_pending_writes: 6,
            frame_burst: 30,
            ..Config::default()
        };
        Harness {
            p: Presence::new(config.clone(), 42),
            config,
            mono_ms: 0,
            wall_ms: WALL0,
            next_conn: 0,
            all_conns: Vec::new(),
            live: BTreeMap::new(),
            ended: Vec::new(),
            ended_sessions: BTreeSet::new(),
            in_flight: Vec::new(),
            stores: MemoryStores::default(),
            max_recorded: BTreeMap::new(),
            restarts: 0,
            peak_live: 0,
            reaped: BTreeSet::new(),
            watched: BTreeSet::new(),
            shown: BTreeMap::new(),
            subs: BTreeMap::new(),
            lookups: Vec::new(),
        }
    }

    fn now(&self) -> Now {
        Now { mono: MonoTime::from_nanos(self.mono_ms * 1_000_000), wall: UnixMillis(self.wall_ms) }
    }

    fn pick(&self, i: usize) -> Option<ConnId> {
        (!self.all_conns.is_empty()).then(|| self.all_conns[i % self.all_conns.len()])
    }

    fn proof(&mut self, conn: ConnId) {
        let (m, w) = (self.mono_ms, self.wall_ms);
        if let Some(c) = self.live.get_mut(&conn) {
            c.last_proof_mono = m;
            c.last_proof_wall = w;
        }
    }

    fn feed(&mut self, input: Input<'_>) -> Result<(), TestCaseError> {
        let now = self.now();
        if std::env::var_os("MODEL_TRACE").is_some() {
            eprintln!("{} {:?}", self.mono_ms, input);
        }
        self.p.handle(now, input);
        while let Some(e) = self.p.poll_effect() {
            if std::env::var_os("MODEL_TRACE").is_some() {
                eprintln!("    {e:?}");
            }
            self.check_effect(e)?;
        }
        self.check_state()
    }

    /// Ends a live session in the model; `at` is the input wall time for ends that happen now,
    /// `None` for ends that record the last proof of life.
    fn end_in_model(&mut self, conn: ConnId, at: Option<i64>) {
        if let Some(c) = self.live.remove(&conn) {
            self.ended_sessions.insert(c.session.clone());
            self.ended.push(Ended {
                user: c.user,
                session: c.session,
                min_last_seen: at.unwrap_or(c.last_proof_wall),
            });
        }
    }

    fn check_effect(&mut self, e: Effect) -> Result<(), TestCaseError> {
        match e {
            Effect::LookupDone { result, .. } => {
                if let Ok(users) = result {
                    let l = users
                        .iter()
                        .map(|e| (e.user.to_string(), e.online, e.last_seen.map(|t| t.to_rfc3339())));
                    self.lookups.push(l.collect());
                }
            }
            Effect::Watch { user } => {
                prop_assert!(self.watched.insert(user.clone()), "second Watch of {}", user);
            }
            Effect::Unwatch { user } => {
                prop_assert!(self.watched.remove(&user), "Unwatch of {} not watched", user);
            }
            Effect::Send { conn, message } => {
                prop_assert!(self.live.contains_key(&conn), "effect for closed connection {:?}", conn);
                self.record_shown(conn, &message);
            }
            Effect::VerifyToken { conn, .. } => {
                prop_assert!(self.live.contains_key(&conn), "effect for closed connection {:?}", conn);
            }
            Effect::Close { conn, reason, .. } => match self.live.get(&conn) {
                Some(c) if reason == "heartbeat timeout" => {
                    let idle = self.mono_ms - c.last_proof_mono;
                    prop_assert!(
                        idle >= self.config.heartbeat_timeout.as_millis() as u64,
                        "closed after {} ms idle",
                        idle
                    );
                    self.end_in_model(conn, None);
                }
                Some(_) => self.end_in_model(conn, Some(self.wall_ms)),
                // A refused open (1013) never became live.
                None => {
                    prop_assert_eq!(reason, "server at capacity", "close of unknown connection {:?}", conn)
                }
            },
            Effect::Store { id, op } => {
                match &op {
                    StoreOp::Registry(RegistryOp::Register { session, .. }) => {
                        prop_assert!(
                            !self.ended_sessions.contains(session),
                            "register after end of {}",
                            session
                        );
                    }
                    StoreOp::Registry(RegistryOp::EndSession { user, session, last_seen, .. }) => {
                        prop_assert!(
                            self.ended_sessions.contains(session),
                            "end of a session not ended: {}",
                            session
                        );
                        self.check_monotone(user, *last_seen)?;
                    }
                    StoreOp::Durable(DurableOp::Write { user, last_seen })
                        if !self.reaped.contains(&(user.clone(), *last_seen)) =>
                    {
                        self.check_monotone(user, *last_seen)?
                    }
                    _ => {}
                }
                self.in_flight.push((id, op));
            }
        }
        Ok(())
    }

    /// Snapshots (`presence` with id 9) and pushes (no id) update what the connection was shown.
    fn record_shown(&mut self, conn: ConnId, message: &presence_core::OutMessage) {
        let (bytes, encoding) = match message {
            presence_core::OutMessage::Text(t) => (t.as_bytes(), Encoding::Json),
            presence_core::OutMessage::Binary(b) => (b.as_slice(), Encoding::Binary),
        };
        let limits = presence_core::frame::Limits::default();
        let frame =
            presence_core::codec::decode(bytes, encoding, &limits).expect("the core sends valid frames");
        let presence_core::frame::Frame::Presence { id, users } = frame else { return };
        if !(id.is_none() || id == Some(9)) {
            return;
        }
        let subs = self.subs.get(&conn);
        let shown = self.shown.entry(conn).or_default();
        for e in users {
            // A snapshot that arrives after an unsubscribe of the user shows nothing to keep.
            if id.is_some() && !subs.is_some_and(|s| s.contains(e.user.as_str())) {
                continue;
            }
            shown.insert(e.user.to_string(), (e.online, e.last_seen.map(|t| t.to_rfc3339())));
        }
    }

    fn check_monotone(&mut self, user: &UserId, v: UnixMillis) -> Result<(), TestCaseError> {
        if let Some(prev) = self.max_recorded.get(user) {
            prop_assert!(v >= *prev, "last_seen regression for {}: {:?} then {:?}", user, prev, v);
        }
        max_register(&mut self.max_recorded, user, v);
        Ok(())
    }

    fn check_state(&mut self) -> Result<(), TestCaseError> {
        self.peak_live = self.peak_live.max(self.live.len());
        for u in USERS {
            let u = UserId::new(u).unwrap();
            let model_online = self.live.values().any(|c| c.user == u);
            prop_assert_eq!(self.p.is_locally_online(&u), model_online, "online state of {}", u);
        }
        prop_assert_eq!(self.p.connections(), self.live.len());
        // Checked on the grid: a connection dead at `d` is closed at the first grid instant >= d.
        let timeout = self.config.heartbeat_timeout.as_millis() as u64;
        let step = (self.config.heartbeat_check_step.as_millis() as u64).max(1);
        for (conn, c) in &self.live {
            let check_at = (c.last_proof_mono + timeout).div_ceil(step) * step;
            prop_assert!(self.mono_ms < check_at, "{:?} should have timed out at {} ms", conn, check_at);
        }
        // At the cap no session opens; each session live then adds at most a registry end and a
        // durable write when it ends.
        prop_assert!(self.p.pending_writes() <= self.config.max_pending_writes + 2 * self.peak_live);
        Ok(())
    }

    /// Every store operation in flight succeeds.
    fn complete_all(&mut self) -> Result<(), TestCaseError> {
        while !self.in_flight.is_empty() {
            self.complete(0, 0)?;
        }
        Ok(())
    }

    /// Live connections prove life, then 500 ms pass.
    fn heartbeat_and_wait(&mut self) -> Result<(), TestCaseError> {
        for conn in self.live.keys().copied().collect::<Vec<_>>() {
            self.proof(conn);
            let at = MonoTime::from_nanos(self.mono_ms * 1_000_000);
            self.feed(Input::Alive { conn, at })?;
        }
        self.mono_ms += 500;
        self.wall_ms += 500;
        self.feed(Input::Timeout)
    }

    /// After healing: notices may have been lost, so resync; past the grace, every watcher's view
    /// of every user it watches equals what a fresh lookup answers (online exactly; last_seen
    /// while offline), and the change channel holds exactly the users someone watches.
    fn check_watchers(&mut self) -> Result<(), TestCaseError> {
        self.feed(Input::Resync)?;
        for _ in 0..16 {
            self.complete_all()?;
            self.heartbeat_and_wait()?;
        }
        self.complete_all()?;
        prop_assert_eq!(self.p.watched_users(), self.watched.len());
        let users: Vec<UserId> = USERS.iter().map(|u| UserId::new(u).unwrap()).collect();
        self.lookups.clear();
        self.feed(Input::Lookup {
            lookup: presence_core::LookupId(77),
            user: UserId::new("viewer").unwrap(),
            users,
            read_all: false,
        })?;
        self.complete_all()?;
        prop_assert_eq!(self.lookups.len(), 1, "the lookup was not answered");
        let truth: BTreeMap<String, (bool, Option<String>)> =
            self.lookups[0].iter().map(|(u, o, l)| (u.clone(), (*o, l.clone()))).collect();
        for (conn, shown) in &self.shown {
            if !self.live.contains_key(conn) {
                continue;
            }
            for (user, (online, last_seen)) in shown {
                if !self.watched.contains(&UserId::new(user).unwrap()) {
                    continue;
                }
                let (t_online, t_last) = &truth[user];
                prop_assert_eq!(
                    online,
                    t_online,
                    "{:?} shown {} online={}, truth {}",
                    conn,
                    user,
                    online,
                    t_online
                );
                if !online {
                    prop_assert_eq!(last_seen, t_last, "{:?} shown {} last_seen", conn, user);
                }
            }
        }
        Ok(())
    }

    fn complete(&mut self, idx: usize, outcome: u8) -> Result<(), TestCaseError> {
        if self.in_flight.is_empty() {
            return Ok(());
        }
        let (id, op) = self.in_flight.remove(idx % self.in_flight.len());
        let result = match outcome {
            0 => Ok(self.stores.apply(&op)),
            1 => Err(StoreError::Unavailable("injected".into())),
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
        self.feed(Input::StoreDone { id, result })
    }

    fn message(&mut self, c: usize, encoding: Encoding, payload: &[u8]) -> Result<(), TestCaseError> {
        let Some(conn) = self.pick(c) else {
            return Ok(());
        };
        self.proof(conn);
        self.feed(Input::Message { conn, encoding, payload })
    }

    fn run(&mut self, s: Step) -> Result<(), TestCaseError> {
        match s {
            Step::Open(u) => {
                self.next_conn += 1;
                let conn = ConnId(self.next_conn);
                let user = UserId::new(USERS[u]).unwrap();
                let session = SessionId::new(format!("srv-{}", self.next_conn));
                if self.p.readiness().accepting {
                    let (m, w) = (self.mono_ms, self.wall_ms);
                    let c = ModelConn {
                        user: user.clone(),
                        session: session.clone(),
                        last_proof_mono: m,
                        last_proof_wall: w,
                    };
                    self.live.insert(conn, c);
                }
                self.all_conns.push(conn);
                self.feed(Input::Open { conn, user, session, expires: None, scopes: Default::default() })
            }
            Step::Ping(c) => self.message(c, Encoding::Json, br#"{"type":"ping","seq":1}"#),
            Step::Query(c, users) => {
                let list: Vec<String> = users.iter().map(|&u| format!("\"{}\"", USERS[u])).collect();
                let text = format!(r#"{{"type":"query","id":5,"users":[{}]}}"#, list.join(","));
                self.message(c, Encoding::Json, text.as_bytes())
            }
            Step::Bye(c) => self.message(c, Encoding::Json, br#"{"type":"bye"}"#),
            Step::Garbage(c, binary, bytes) => {
                let encoding = if binary { Encoding::Binary } else { Encoding::Json };
                self.message(c, encoding, &bytes)
            }
            Step::Alive(c) => match self.pick(c) {
                Some(conn) => {
                    self.proof(conn);
                    let at = MonoTime::from_nanos(self.mono_ms * 1_000_000);
                    self.feed(Input::Alive { conn, at })
                }
                None => Ok(()),
            },
            Step::Close(c, graceful) => match self.pick(c) {
                Some(conn) => {
                    let at = graceful.then_some(self.wall_ms);
                    self.end_in_model(conn, at);
                    self.feed(Input::Closed { conn, graceful })
                }
                None => Ok(()),
            },
            Step::Advance(ms, jump) => {
                self.mono_ms += ms;
                self.wall_ms += ms as i64 + jump;
                self.feed(Input::Timeout)
            }
            Step::Complete(i, o) => self.complete(i, o),
            Step::RegistryRestart => {
                self.stores.lose_registry();
                self.restarts += 1;
                self.feed(Input::RegistryRestarted)
            }
            Step::Subscribe(c, users) => {
                if let Some(conn) = self.pick(c) {
                    self.subs.entry(conn).or_default().extend(users.iter().map(|&u| USERS[u].to_owned()));
                }
                let list: Vec<String> = users.iter().map(|&u| format!("\"{}\"", USERS[u])).collect();
                let text = format!(r#"{{"type":"subscribe","id":9,"users":[{}]}}"#, list.join(","));
                self.message(c, Encoding::Json, text.as_bytes())
            }
            Step::Unsubscribe(c, users) => {
                let list: Vec<String> = users.iter().map(|&u| format!("\"{}\"", USERS[u])).collect();
                let text = format!(r#"{{"type":"unsubscribe","users":[{}]}}"#, list.join(","));
                // No longer watched by this connection: what it was shown is not checked.
                if let Some(conn) = self.pick(c) {
                    for &u in &users {
                        self.shown.get_mut(&conn).map(|s| s.remove(USERS[u]));
                        self.subs.get_mut(&conn).map(|s| s.remove(USERS[u]));
                    }
                }
                self.message(c, Encoding::Json, text.as_bytes())
            }
            Step::Changed(u) => self.feed(Input::Changed { user: UserId::new(USERS[u]).unwrap() }),
            Step::Resync => self.feed(Input::Resync),
            Step::LeaseExpires => {
                for token in self.stores.leases.keys().copied().collect::<Vec<_>>() {
                    self.stores.expire_lease(token);
                }
                Ok(())
            }
        }
    }

    /// Faults stop: every operation succeeds and time passes with live connections heartbeating.
    fn heal(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..200 {
            self.complete_all()?;
            let reaped = self.stores.expired.is_empty();
            if self.p.pending_writes() == 0 && self.p.registry_backlog() == 0 && reaped {
                break;
            }
            self.heartbeat_and_wait()?;
        }
        self.complete_all()?;
        prop_assert_eq!(self.p.pending_writes(), 0, "writes still pending after healing");
        prop_assert_eq!(self.p.registry_backlog(), 0, "registrations still pending after healing");
        // Every ended session is durable with at least its last proof of life (I2).
        for e in &self.ended {
            let d = self.stores.durable_last_seen.get(&e.user).copied();
            prop_assert!(
                d.is_some_and(|d| d.0 >= e.min_last_seen),
                "{}/{}: durable {:?} < {}",
                e.user,
                e.session,
                d,
                e.min_last_seen
            );
        }
        // What the registry answers, max(cache, pending), never exceeds the durable value; without
        // registry restarts it equals it whenever the cache is present (I6). The cache is absent
        // when the durable write was applied but reported as failed and the retry found it already
        // there, or after a restart; readers then fall back to the durable store and backfill. A
        // backfill in flight across a restart may leave an older durable value until the next end.
        for (user, d) in &self.stores.durable_last_seen {
            let c = self.stores.registry_last_seen.get(user).copied();
            let p = self.stores.registry_pending.get(user).copied();
            let answered = c.max(p);
            prop_assert!(
                answered.is_none_or(|r| r <= *d),
                "{}: registry {:?}/{:?} above durable {:?}",
                user,
                c,
                p,
                d
            );
            if self.restarts == 0 && c.is_some() {
                prop_assert_eq!(answered, Some(*d), "{}: registry {:?}/{:?}, durable {:?}", user, c, p, d);
            }
        }
        // The registry holds exactly the live sessions (I6, I7).
        let mut want: BTreeMap<UserId, BTreeSet<SessionId>> = BTreeMap::new();
        for c in self.live.values() {
            want.entry(c.user.clone()).or_default().insert(c.session.clone());
        }
        prop_assert_eq!(&self.stores.registered(), &want);
        self.check_watchers()?;
        // Every entry is under our current lease, and every expired lease was reaped.
        prop_assert!(self
            .stores
            .ws
            .values()
            .flat_map(|m| m.values())
            .all(|t| self.stores.leases.contains_key(t)));
        prop_assert!(
            self.stores.expired.is_empty(),
            "leases left unreaped: {:?}",
            self.stores.expired.keys()
        );
        Ok(())
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn core_agrees_with_the_model(steps in prop::collection::vec(step(), 1..120)) {
        let mut h = Harness::new();
        for s in steps {
            h.run(s)?;
        }
        h.heal()?;
    }
}

fn replay(steps: Vec<Step>) -> Harness {
    let mut h = Harness::new();
    for s in steps {
        h.run(s).unwrap();
    }
    h.heal().unwrap();
    h
}

/// Found by the property test: the reaper's claim saw a session under the expired lease and wrote
/// its last_seen durably, but the session was registered again under the new lease before the
/// removal; the cached last_seen must still be raised to match the durable one.
#[test]
fn regression_reaped_session_registered_again_before_removal() {
    use Step::*;
    let h = replay(vec![
        Open(2),
        Close(0, false),
        Complete(7868587946604838730, 0),
        Advance(3000, 0),
        Complete(0, 0),
        Complete(0, 0),
        Complete(2752439047758997629, 0),
        Open(0),
        Complete(6825421772993407597, 0),
        Open(2),
        Complete(154170512866884570, 0),
        LeaseExpires,
        Open(0),
    ]);
    assert_eq!(h.p.stats().leases_granted, 2);
}

/// A lease that expires while sessions are live: the server takes a new lease, registers its
/// sessions under it, and reaps its own old lease without removing them (the fencing token).
#[test]
fn expired_lease_is_reaped_without_removing_sessions_registered_again() {
    use Step::*;
    let h = replay(vec![
        Open(0),
        Open(1),
        Advance(1, 0),
        Complete(0, 0),
        Complete(0, 0),
        Complete(0, 0),
        LeaseExpires,
    ]);
    assert_eq!(h.p.stats().leases_granted, 2);
    assert_eq!(h.p.stats().sessions_reaped, 2);
    assert_eq!(
        h.stores.ws.values().flat_map(|m| m.values()).collect::<Vec<_>>(),
        vec![&LeaseToken(2), &LeaseToken(2)]
    );
}

/// Found by the property test: an abrupt end recording an older proof of life after another
/// device's graceful end of the same user.
#[test]
fn regression_older_proof_after_graceful_end() {
    use Step::*;
    replay(vec![
        Open(0),
        Open(0),
        Open(0),
        Open(2),
        Open(0),
        Open(0),
        Open(2),
        Advance(1, 0),
        Bye(5011081419602855408),
        Ping(5915716020863887227),
        Close(8020950694521155180, false),
        Open(0),
        Close(5830268819710473683, false),
        Open(0),
        Open(0),
    ]);
}

/// Found by the property test: the reaper recorded a dead lease's last renewal for a user whose
/// cache was filled meanwhile from an older durable value.
#[test]
fn regression_reaper_value_and_a_stale_cache_fill() {
    use Step::*;
    replay(vec![
        Open(0),
        Complete(0, 0),
        Advance(30000, 0),
        Complete(985741405463232606, 1),
        Complete(5497991772868015008, 1),
        Open(0),
        Advance(93, 0),
        Complete(2379644916073275416, 0),
        Open(3),
        Open(0),
        Open(0),
        Open(3),
        LeaseExpires,
        Open(0),
        Advance(13807, 0),
        Complete(16786890505275680657, 0),
        LeaseExpires,
        Query(9711519627947037770, vec![]),
        Advance(16193, 0),
    ]);
}

/// Found by the property test: a reaper claim applied but reported as failed, for a lease whose
/// server was alive (it had lost the lease), whose session then ended normally before the next
/// claim: a value recorded by the claim must not be left in the registry without its durable write.
#[test]
fn regression_claim_outcome_unknown() {
    use Step::*;
    replay(vec![
        Open(0),
        Advance(3000, 0),
        Complete(0, 1),
        Close(0, false),
        Open(1),
        Open(0),
        Complete(15948463607114928792, 1),
        Advance(1, 0),
        RegistryRestart,
        Complete(343706234439434654, 0),
        Advance(29999, 0),
        Complete(11902617693923620698, 0),
        Ping(0),
        Complete(2058617070296503908, 1),
        Complete(6563869208963355874, 0),
        Complete(7599796581741258797, 0),
        LeaseExpires,
        Open(1),
        Advance(30000, 0),
        Complete(2450062892743391437, 0),
        Complete(1878480446228265766, 2),
        Open(0),
        Garbage(5319, false, vec![190, 190, 244, 35, 28, 138, 237, 168, 163, 68, 76, 113, 0, 205]),
        Open(1),
        Open(2),
        Close(12039080994573209008, false),
    ]);
}
