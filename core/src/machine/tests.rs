//! Scenario tests of the state machine with exact expected effects.

use std::time::Duration;

use crate::frame::Encoding;
use crate::store::{
    DurableOp, EffectId, LeaseToken, LeaseView, ReapBatch, RegistryEntry, RegistryOp, StoreError, StoreOp,
    StoreOutput,
};
use crate::time::{MonoTime, Now, UnixMillis};
use crate::user::{SessionId, UserId};
use crate::{close_code, Config, ConnId, Effect, Input, OutMessage, Presence};

const T0: i64 = 1_705_311_720_000; // 2024-01-15T09:42:00.000Z

/// Our lease in these tests.
const LEASE: LeaseToken = LeaseToken(100);

struct Rig {
    p: Presence,
    ms: u64,
    /// Answer lease renewals at once with [`LEASE`] (and no other lease), hiding them from the test.
    auto_lease: bool,
    /// Privacy reads are answered at once from these settings and contacts (everyone sees
    /// everyone unless a test sets some), hidden from the test unless `manual_privacy`.
    privacy: crate::testkit::MemoryStores,
    manual_privacy: bool,
}

impl Rig {
    /// A core that holds [`LEASE`]; renewals are answered behind the test's back.
    fn new(config: Config) -> Self {
        let mut r = Rig { p: Presence::new(config, 7), ms: 0, auto_lease: true, ..Rig::base() };
        assert!(r.input(Input::Timeout).is_empty());
        r
    }
    /// A core whose lease renewals the test answers itself.
    fn manual_lease(config: Config) -> Self {
        Rig { p: Presence::new(config, 7), ms: 0, auto_lease: false, ..Rig::base() }
    }
    fn base() -> Self {
        Rig {
            p: Presence::new(Config::default(), 7),
            ms: 0,
            auto_lease: true,
            privacy: Default::default(),
            manual_privacy: false,
        }
    }
    fn now(&self) -> Now {
        Now { mono: MonoTime::from_nanos(self.ms * 1_000_000), wall: UnixMillis(T0 + self.ms as i64) }
    }
    fn advance(&mut self, ms: u64) -> Vec<Effect> {
        self.ms += ms;
        self.input(Input::Timeout)
    }
    fn input(&mut self, input: Input<'_>) -> Vec<Effect> {
        let now = self.now();
        self.p.handle(now, input);
        self.drain(now)
    }
    /// The effects queued, with the hidden ones answered. The effects an auto-answered privacy
    /// read leads to take its place in the list (as if the privacy read were not there), so the
    /// scenarios read the same with privacy as before it.
    fn drain(&mut self, now: Now) -> Vec<Effect> {
        let mut out = Vec::new();
        while let Some(e) = self.p.poll_effect() {
            match e {
                Effect::Store { id, op: StoreOp::Registry(RegistryOp::RenewLease { .. }) }
                    if self.auto_lease =>
                {
                    let view = LeaseView { token: LEASE, live: vec![LEASE], expired: Vec::new() };
                    self.p.handle(now, Input::StoreDone { id, result: Ok(StoreOutput::Lease(view)) });
                }
                Effect::Store { id, op: op @ StoreOp::Privacy(_) } if !self.manual_privacy => {
                    let held: Vec<Effect> = std::iter::from_fn(|| self.p.poll_effect()).collect();
                    let result = Ok(self.privacy.apply(&op));
                    self.p.handle(now, Input::StoreDone { id, result });
                    out.extend(self.drain(now));
                    out.extend(held);
                }
                e => out.push(e),
            }
        }
        out
    }
    fn open(&mut self, conn: u64, user: &str) -> Vec<Effect> {
        self.input(Input::Open {
            conn: ConnId(conn),
            user: uid(user),
            session: SessionId::new(format!("s{conn}")),
            expires: None,
            scopes: Default::default(),
        })
    }
    /// Proof of life of `conn` that arrived `ago_ms` before now (handed in late, as the runtime
    /// batches them).
    fn alive(&mut self, conn: u64, ago_ms: u64) -> Vec<Effect> {
        let at = MonoTime::from_nanos(self.ms.saturating_sub(ago_ms) * 1_000_000);
        self.input(Input::Alive { conn: ConnId(conn), at })
    }
    fn text(&mut self, conn: u64, s: &str) -> Vec<Effect> {
        self.input(Input::Message { conn: ConnId(conn), encoding: Encoding::Json, payload: s.as_bytes() })
    }
    fn done(&mut self, id: EffectId, result: Result<StoreOutput, StoreError>) -> Vec<Effect> {
        self.input(Input::StoreDone { id, result })
    }
}

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn store(e: &Effect) -> (EffectId, StoreOp) {
    match e {
        Effect::Store { id, op } => (*id, op.clone()),
        other => panic!("expected a store effect, got {other:?}"),
    }
}

fn text_of(e: &Effect) -> String {
    match e {
        Effect::Send { message: OutMessage::Text(t), .. } => t.clone(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

fn reg(op: RegistryOp) -> StoreOp {
    StoreOp::Registry(op)
}

#[test]
fn graceful_close_records_close_time_in_both_stores() {
    let mut r = Rig::new(Config::default());
    let e = r.open(1, "bob");
    assert_eq!(e.len(), 1);
    let (id, op) = store(&e[0]);
    assert_eq!(
        op,
        reg(RegistryOp::Register { user: uid("bob"), session: SessionId::new("s1"), token: LEASE })
    );
    assert!(r.done(id, Ok(StoreOutput::Done)).is_empty());
    r.advance(5_000);
    let e = r.input(Input::Closed { conn: ConnId(1), graceful: true });
    let ops: Vec<StoreOp> = e.iter().map(|e| store(e).1).collect();
    let at = UnixMillis(T0 + 5_000);
    assert_eq!(
        ops,
        vec![
            reg(RegistryOp::EndSession {
                user: uid("bob"),
                session: SessionId::new("s1"),
                last_seen: at,
                token: Some(LEASE)
            }),
            StoreOp::Durable(DurableOp::Write { user: uid("bob"), last_seen: at }),
        ]
    );
    assert_eq!(r.p.pending_writes(), 2);
    assert!(r.done(store(&e[0]).0, Ok(StoreOutput::Done)).is_empty());
    // The durable store applied the value: now it is safe to put in the registry's cache.
    let refresh = r.done(store(&e[1]).0, Ok(StoreOutput::Done));
    assert_eq!(store(&refresh[0]).1, reg(RegistryOp::SetLastSeen { user: uid("bob"), last_seen: at }));
    assert_eq!(r.p.pending_writes(), 1);
    assert!(r.done(store(&refresh[0]).0, Ok(StoreOutput::Done)).is_empty());
    assert_eq!(r.p.pending_writes(), 0);
    assert!(r.p.is_idle());
}

#[test]
fn superseded_durable_write_refreshes_the_cache_with_the_durable_value() {
    let mut r = Rig::new(Config::default());
    let e = r.open(1, "bob");
    r.done(store(&e[0]).0, Ok(StoreOutput::Done));
    let e = r.input(Input::Closed { conn: ConnId(1), graceful: false });
    r.done(store(&e[0]).0, Ok(StoreOutput::Done));
    // A newer value is already durable (another server): the cache gets the durable value read
    // back, never this older one.
    let e = r.done(store(&e[1]).0, Ok(StoreOutput::Superseded));
    assert_eq!(store(&e[0]).1, StoreOp::Durable(DurableOp::Read { users: vec![uid("bob")] }));
    let newer = UnixMillis(T0 + 60_000);
    let e = r.done(store(&e[0]).0, Ok(StoreOutput::Durable(vec![Some(newer)])));
    assert_eq!(store(&e[0]).1, reg(RegistryOp::SetLastSeen { user: uid("bob"), last_seen: newer }));
    r.done(store(&e[0]).0, Ok(StoreOutput::Done));
    assert!(r.p.is_idle());
}

/// Lease renewals far apart, so the only deadlines are the heartbeat's.
fn heartbeat_only() -> Config {
    Config {
        lease_renew_interval: Duration::from_secs(60),
        lease_ttl: Duration::from_secs(120),
        ..Config::default()
    }
}

#[test]
fn heartbeat_ends_with_last_proof_of_life() {
    let config = heartbeat_only();
    let mut r = Rig::new(config);
    let e = r.open(1, "bob");
    r.done(store(&e[0]).0, Ok(StoreOutput::Done));
    // The first check is armed for the timeout after the open (the probes are the runtime's).
    assert_eq!(r.p.poll_timeout(), Some(MonoTime::from_nanos(30_000 * 1_000_000)));
    r.advance(4_000);
    assert!(r.alive(1, 0).is_empty());
    // The check at 30 s finds proof at 4 s: armed again for 34 s, nothing sent.
    assert!(r.advance(26_000).is_empty());
    assert_eq!(r.p.poll_timeout(), Some(MonoTime::from_nanos(34_000 * 1_000_000)));
    // Dead at 4 s + 30 s = 34 s.
    assert!(r.advance(3_999).is_empty());
    let e = r.advance(1);
    assert_eq!(
        e[0],
        Effect::Close { conn: ConnId(1), code: close_code::GOING_AWAY, reason: "heartbeat timeout" }
    );
    let last_proof = UnixMillis(T0 + 4_000);
    assert_eq!(
        store(&e[1]).1,
        reg(RegistryOp::EndSession {
            user: uid("bob"),
            session: SessionId::new("s1"),
            last_seen: last_proof,
            token: Some(LEASE),
        })
    );
    assert_eq!(
        store(&e[2]).1,
        StoreOp::Durable(DurableOp::Write { user: uid("bob"), last_seen: last_proof })
    );
    // Nothing more for the closed connection.
    assert!(r.input(Input::Closed { conn: ConnId(1), graceful: false }).is_empty());
    assert!(r.text(1, r#"{"type":"ping"}"#).is_empty());
}

#[test]
fn a_late_proof_of_life_counts_at_its_own_time() {
    let config = heartbeat_only();
    let mut r = Rig::new(config);
    let e = r.open(1, "bob");
    r.done(store(&e[0]).0, Ok(StoreOutput::Done));
    // A pong at 10 s handed in at 12 s (batched): proof at 10 s, not 12 s.
    r.ms = 12_000;
    assert!(r.alive(1, 2_000).is_empty());
    // One from before it, handed in after it, changes nothing.
    assert!(r.alive(1, 5_000).is_empty());
    // The check at 30 s finds proof at 10 s: armed for 40 s.
    assert!(r.advance(18_000).is_empty());
    assert_eq!(r.p.poll_timeout(), Some(MonoTime::from_nanos(40_000 * 1_000_000)));
    // Reset at 39 s: the session ends with the proof at 10 s as its last_seen.
    r.ms = 39_000;
    let e = r.input(Input::Closed { conn: ConnId(1), graceful: false });
    assert_eq!(
        store(&e[0]).1,
        reg(RegistryOp::EndSession {
            user: uid("bob"),
            session: SessionId::new("s1"),
            last_seen: UnixMillis(T0 + 10_000),
            token: Some(LEASE),
        })
    );
}

#[test]
fn heartbeat_checks_fall_on_a_grid() {
    let config = Config { heartbeat_check_step: Duration::from_millis(250), ..heartbeat_only() };
    let mut r = Rig::new(config);
    r.ms = 10;
    let e = r.open(1, "bob");
    r.done(store(&e[0]).0, Ok(StoreOutput::Done));
    r.ms = 100;
    let e = r.open(2, "carol");
    r.done(store(&e[0]).0, Ok(StoreOutput::Done));
    // Dead at 30.01 s and 30.1 s: both checked at 30.25 s, one wake-up.
    assert_eq!(r.p.poll_timeout(), Some(MonoTime::from_nanos(30_250 * 1_000_000)));
    assert!(r.advance(30_149).is_empty());
    let e = r.advance(1);
    let closed: Vec<&Effect> = e.iter().filter(|e| matches!(e, Effect::Close { .. })).collect();
    assert_eq!(closed.len(), 2, "{e:?}");
    // Each ends with its own last proof of life (its open), not the check's time.
    let ends: Vec<UnixMillis> = e
        .iter()
        .filter_map(|e| match e {
            Effect::Store { op: StoreOp::Registry(RegistryOp::EndSession { last_seen, .. }), .. } => {
                Some(*last_seen)
            }
            _ => None,
        })
        .collect();
    assert_eq!(ends, vec![UnixMillis(T0 + 10), UnixMillis(T0 + 100)]);
}

#[test]
fn end_waits_for_register_in_flight() {
    let mut r = Rig::new(Config::default());
    let reg_id = store(&r.open(1, "bob")[0]).0;
    let e = r.input(Input::Closed { conn: ConnId(1), graceful: true });
    // Only the durable write: the registry end must not overtake the register.
    assert_eq!(e.len(), 1);
    assert!(matches!(store(&e[0]).1, StoreOp::Durable(_)));
    let e = r.done(reg_id, Ok(StoreOutput::Done));
    assert!(matches!(store(&e[0]).1, StoreOp::Registry(RegistryOp::EndSession { .. })));
}

/// Finding 6 of docs/SIMULATION.md: a refresh creates an absent cache, so one that failed (the
/// registry may have lost its data since) or that a registry restart overtook must not be sent
/// again with its old value: another server may have made a newer one durable meanwhile. The
/// durable value is read back first and the cache refreshed with that.
#[test]
fn a_failed_or_overtaken_refresh_reads_the_durable_value_back_first() {
    let mut r = Rig::new(Config::default());
    let e = r.open(1, "bob");
    r.done(store(&e[0]).0, Ok(StoreOutput::Done));
    r.advance(1_000);
    let at = UnixMillis(T0 + 1_000);
    let e = r.input(Input::Closed { conn: ConnId(1), graceful: true });
    r.done(store(&e[0]).0, Ok(StoreOutput::Done));
    let refresh = r.done(store(&e[1]).0, Ok(StoreOutput::Done));
    assert_eq!(store(&refresh[0]).1, reg(RegistryOp::SetLastSeen { user: uid("bob"), last_seen: at }));
    // The refresh fails; its retry is a consistent read of the durable value, not the old value.
    assert!(r.done(store(&refresh[0]).0, Err(StoreError::Timeout)).is_empty());
    let e = r.advance(200);
    assert_eq!(store(&e[0]).1, StoreOp::Durable(DurableOp::Read { users: vec![uid("bob")] }));
    // Another server made a newer value durable meanwhile: that is what goes to the cache.
    let newer = UnixMillis(T0 + 1_500);
    let e = r.done(store(&e[0]).0, Ok(StoreOutput::Durable(vec![Some(newer)])));
    assert_eq!(store(&e[0]).1, reg(RegistryOp::SetLastSeen { user: uid("bob"), last_seen: newer }));
    // A registry restart while that refresh is in flight: read back again before refreshing.
    r.input(Input::RegistryRestarted);
    let after = r.done(store(&e[0]).0, Err(StoreError::Unavailable("connection lost".into())));
    let read = after
        .iter()
        .chain(r.advance(200).iter())
        .map(|e| store(e).1)
        .find(|op| matches!(op, StoreOp::Durable(_)))
        .expect("a read-back after the restart");
    assert_eq!(read, StoreOp::Durable(DurableOp::Read { users: vec![uid("bob")] }));
}

/// Finding 4 (docs/SIMULATION.md): a value whose durable write is still retrying lives only in
/// the registry. When the registry loses its data it is recorded there again at once (as a session
/// end records it), or readers would fall back to an older durable value until the write lands.
#[test]
fn a_registry_restart_records_values_not_yet_durable_again() {
    let mut r = Rig::new(Config::default());
    let e = r.open(1, "bob");
    r.done(store(&e[0]).0, Ok(StoreOutput::Done));
    r.advance(1_000);
    let at = UnixMillis(T0 + 1_000);
    let e = r.input(Input::Closed { conn: ConnId(1), graceful: true });
    r.done(store(&e[0]).0, Ok(StoreOutput::Done));
    // DynamoDB is down: the write waits for its retry.
    assert!(r.done(store(&e[1]).0, Err(StoreError::Unavailable("down".into()))).is_empty());
    // Redis restarts: the value is recorded again at once, before the durable retry.
    let e = r.input(Input::RegistryRestarted);
    let record = reg(RegistryOp::RecordLastSeen { user: uid("bob"), last_seen: at });
    let rec = e.iter().find(|e| store(e).1 == record).expect("the record after the restart");
    let e = r.done(store(rec).0, Ok(StoreOutput::Done));
    // Recorded: next is the durable write itself, and nothing is recorded twice.
    let write = StoreOp::Durable(DurableOp::Write { user: uid("bob"), last_seen: at });
    assert_eq!(e.iter().map(|e| store(e).1).collect::<Vec<_>>(), vec![write.clone()]);
    // It fails again, and so does the next record (another restart, Redis still failing): the
    // durable write is not held back by the failing registry.
    assert!(r.done(store(&e[0]).0, Err(StoreError::Unavailable("down".into()))).is_empty());
    let e = r.input(Input::RegistryRestarted);
    let rec = e.iter().find(|e| store(e).1 == record).expect("the record after the second restart");
    assert!(r.done(store(rec).0, Err(StoreError::Timeout)).is_empty());
    let e = r.advance(2_000);
    let ops: Vec<StoreOp> =
        e.iter().map(|e| store(e).1).filter(|op| matches!(op, StoreOp::Durable(_))).collect();
    assert_eq!(ops, vec![write]);
    // Once durable, the record is moot: the cache refresh follows, then nothing.
    let id = e.iter().find(|e| matches!(store(e).1, StoreOp::Durable(_))).map(|e| store(e).0).unwrap();
    let e = r.done(id, Ok(StoreOutput::Done));
    assert_eq!(store(&e[0]).1, reg(RegistryOp::SetLastSeen { user: uid("bob"), last_seen: at }));
    assert!(r.done(store(&e[0]).0, Ok(StoreOutput::Done)).is_empty());
    assert_eq!(r.p.pending_writes(), 0);
}

#[test]
fn failed_writes_retry_with_backoff_and_coalesce() {
    let mut r = Rig::new(Config::default());
    for (conn, _) in [(1, ()), (2, ())] {
        let e = r.open(conn, "bob");
        r.done(store(&e[0]).0, Ok(StoreOutput::Done));
    }
    r.advance(1_000);
    let e = r.input(Input::Closed { conn: ConnId(1), graceful: true });
    let durable = store(&e[1]).0;
    r.done(store(&e[0]).0, Ok(StoreOutput::Done));
    // Durable store fails: retried after 50..=100 ms (first backoff, equal jitter).
    assert!(r.done(durable, Err(StoreError::Unavailable("down".into()))).is_empty());
    assert!(!r.p.readiness().is_ready());
    let retry_at = r.p.poll_timeout().unwrap();
    let wait = retry_at.since(MonoTime::from_nanos(r.ms * 1_000_000));
    assert!(wait >= Duration::from_millis(50) && wait <= Duration::from_millis(100), "{wait:?}");
    // Meanwhile the other device ends later: the pending write coalesces to the newer value.
    r.advance(10);
    let e = r.input(Input::Closed { conn: ConnId(2), graceful: true });
    assert_eq!(e.len(), 1, "only the registry end; the durable write is waiting for its retry");
    r.done(store(&e[0]).0, Ok(StoreOutput::Done));
    assert_eq!(r.p.pending_writes(), 1);
    let e = r.advance(100);
    assert_eq!(
        store(&e[0]).1,
        StoreOp::Durable(DurableOp::Write { user: uid("bob"), last_seen: UnixMillis(T0 + 1_010) })
    );
    let e = r.done(store(&e[0]).0, Ok(StoreOutput::Done));
    r.done(store(&e[0]).0, Ok(StoreOutput::Done));
    assert!(r.p.is_idle());
    assert!(r.p.readiness().is_ready());
    assert_eq!(r.p.stats().store_retries, 1);
}

#[test]
fn pending_cap_refuses_new_sessions_with_1013() {
    let mut r = Rig::new(Config { max_pending_writes: 2, ..Config::default() });
    let e = r.open(1, "bob");
    r.done(store(&e[0]).0, Ok(StoreOutput::Done));
    r.input(Input::Closed { conn: ConnId(1), graceful: true }); // 2 pending, never acknowledged
    assert!(!r.p.readiness().accepting);
    let e = r.open(2, "carol");
    assert_eq!(
        e,
        vec![Effect::Close {
            conn: ConnId(2),
            code: close_code::TRY_AGAIN_LATER,
            reason: "server at capacity"
        }]
    );
    assert_eq!(r.p.connections(), 0);
}

#[test]
fn registry_restart_registers_live_sessions_again() {
    let mut r = Rig::new(Config::default());
    let e = r.open(1, "bob");
    r.done(store(&e[0]).0, Ok(StoreOutput::Done));
    let e = r.input(Input::RegistryRestarted);
    assert_eq!(
        store(&e[0]).1,
        reg(RegistryOp::Register { user: uid("bob"), session: SessionId::new("s1"), token: LEASE })
    );
}

#[test]
fn query_falls_back_to_durable_and_backfills() {
    let mut r = Rig::new(Config::default());
    r.open(1, "alice");
    let e = r.text(1, r#"{"type":"query","id":7,"users":["bob","carol"]}"#);
    let (id, op) = store(&e[0]);
    assert_eq!(op, reg(RegistryOp::Read { users: vec![uid("bob"), uid("carol")] }));
    let entries = vec![
        RegistryEntry { leases: vec![], last_seen: None, pending: None },
        RegistryEntry { leases: vec![LEASE], last_seen: None, pending: None },
    ];
    let e = r.done(id, Ok(StoreOutput::Registry(entries)));
    let (id, op) = store(&e[0]);
    assert_eq!(op, StoreOp::Durable(DurableOp::Read { users: vec![uid("bob"), uid("carol")] }));
    let e = r.done(id, Ok(StoreOutput::Durable(vec![Some(UnixMillis(T0)), None])));
    assert_eq!(store(&e[0]).1, reg(RegistryOp::SetLastSeen { user: uid("bob"), last_seen: UnixMillis(T0) }));
    assert_eq!(
        text_of(&e[1]),
        r#"{"type":"presence","id":7,"users":[{"user":"bob","online":false,"last_seen":"2024-01-15T09:42:00.000Z"},{"user":"carol","online":true,"last_seen":null}]}"#
    );
}

#[test]
fn store_error_is_unavailable_not_offline() {
    let mut r = Rig::new(Config::default());
    r.open(1, "alice");
    let e = r.text(1, r#"{"type":"query","id":3,"users":["bob"]}"#);
    let e = r.done(store(&e[0]).0, Err(StoreError::Timeout));
    assert_eq!(
        text_of(&e[0]),
        r#"{"type":"error","id":3,"code":"unavailable","message":"registry: store operation timed out"}"#
    );
}

#[test]
fn future_values_are_clamped_in_answers() {
    let mut r = Rig::new(Config::default());
    r.open(1, "alice");
    let e = r.text(1, r#"{"type":"query","users":["bob"]}"#);
    let far = UnixMillis(T0 + 3_600_000);
    let e = r.done(
        store(&e[0]).0,
        Ok(StoreOutput::Registry(vec![RegistryEntry {
            leases: vec![],
            last_seen: Some(far),
            pending: None,
        }])),
    );
    // now = T0, skew bound 5 s.
    assert_eq!(
        text_of(&e[0]),
        r#"{"type":"presence","users":[{"user":"bob","online":false,"last_seen":"2024-01-15T09:42:05.000Z"}]}"#
    );
}

#[test]
fn wall_clock_stepping_back_never_regresses_last_seen() {
    let mut r = Rig::new(Config::default());
    let e = r.open(1, "bob");
    r.done(store(&e[0]).0, Ok(StoreOutput::Done));
    let e = r.open(2, "bob");
    r.done(store(&e[0]).0, Ok(StoreOutput::Done));
    r.ms = 1_000;
    let e = r.input(Input::Closed { conn: ConnId(1), graceful: true });
    assert_eq!(
        store(&e[1]).1,
        StoreOp::Durable(DurableOp::Write { user: uid("bob"), last_seen: UnixMillis(T0 + 1_000) })
    );
    // The wall clock steps back an hour, 10 ms later.
    r.ms = 1_010;
    let now = Now { mono: MonoTime::from_nanos(1_010 * 1_000_000), wall: UnixMillis(T0 - 3_600_000) };
    r.p.handle(now, Input::Closed { conn: ConnId(2), graceful: true });
    let e: Vec<Effect> = std::iter::from_fn(|| r.p.poll_effect()).collect();
    assert_eq!(
        store(&e[0]).1,
        reg(RegistryOp::EndSession {
            user: uid("bob"),
            session: SessionId::new("s2"),
            last_seen: UnixMillis(T0 + 1_010),
            token: Some(LEASE),
        })
    );
}

#[test]
fn bad_frames_get_errors_and_the_connection_keeps_working() {
    let mut r = Rig::new(Config::default());
    r.open(1, "alice");
    let e = r.text(1, "not json");
    assert!(text_of(&e[0]).starts_with(r#"{"type":"error","code":"bad_frame","message":"#), "{e:?}");
    let e = r.text(1, r#"{"type":"query","id":9,"users":["bad user"]}"#);
    assert!(text_of(&e[0]).starts_with(r#"{"type":"error","id":9,"code":"invalid_user""#), "{e:?}");
    let e = r.text(1, r#"{"type":"ping","seq":42}"#);
    assert_eq!(text_of(&e[0]), r#"{"type":"pong","seq":42}"#);
}

#[test]
fn bye_closes_normally_and_flood_closes_with_1008() {
    let mut r = Rig::new(Config { frame_burst: 3, ..Config::default() });
    r.open(1, "alice");
    let e = r.text(1, r#"{"type":"bye"}"#);
    assert_eq!(e[0], Effect::Close { conn: ConnId(1), code: close_code::NORMAL, reason: "bye" });
    r.open(2, "bob");
    for _ in 0..3 {
        r.text(2, r#"{"type":"ping"}"#);
    }
    let e = r.text(2, r#"{"type":"ping"}"#);
    assert_eq!(
        e[0],
        Effect::Close { conn: ConnId(2), code: close_code::POLICY, reason: "frame rate limit exceeded" }
    );
}

#[test]
fn shutdown_closes_everyone_with_1001_and_records_last_seen() {
    let mut r = Rig::new(Config::default());
    r.open(2, "bob");
    r.open(1, "alice");
    r.advance(100);
    let e = r.input(Input::Shutdown);
    let closes: Vec<&Effect> = e.iter().filter(|e| matches!(e, Effect::Close { .. })).collect();
    assert_eq!(
        closes,
        vec![
            &Effect::Close { conn: ConnId(1), code: close_code::GOING_AWAY, reason: "server shutting down" },
            &Effect::Close { conn: ConnId(2), code: close_code::GOING_AWAY, reason: "server shutting down" },
        ]
    );
    let writes = e
        .iter()
        .filter(|e| matches!(e, Effect::Store { op: StoreOp::Durable(DurableOp::Write { last_seen, .. }), .. } if *last_seen == UnixMillis(T0 + 100)))
        .count();
    assert_eq!(writes, 2);
    assert!(!r.p.readiness().accepting);
}

fn lease_view(token: u64, live: &[u64], expired: &[&str]) -> Result<StoreOutput, StoreError> {
    Ok(StoreOutput::Lease(LeaseView {
        token: LeaseToken(token),
        live: live.iter().map(|&t| LeaseToken(t)).collect(),
        expired: expired.iter().map(|s| s.to_string()).collect(),
    }))
}

#[test]
fn registrations_wait_for_a_lease_and_carry_its_token() {
    let mut r = Rig::manual_lease(Config::default());
    let e = r.input(Input::Timeout);
    let (renew, op) = store(&e[0]);
    assert_eq!(
        op,
        reg(RegistryOp::RenewLease { token: None, ttl: Duration::from_secs(10), wall: UnixMillis(T0) })
    );
    // No lease yet: the session is live here but not registered.
    assert!(r.open(1, "bob").is_empty());
    let e = r.done(renew, lease_view(7, &[7], &[]));
    assert_eq!(
        store(&e[0]).1,
        reg(RegistryOp::Register { user: uid("bob"), session: SessionId::new("s1"), token: LeaseToken(7) })
    );
    // The next renewal is due 3 s later and names the lease.
    assert!(r.advance(2_999).is_empty());
    let e = r.advance(1);
    assert_eq!(
        store(&e[0]).1,
        reg(RegistryOp::RenewLease {
            token: Some(LeaseToken(7)),
            ttl: Duration::from_secs(10),
            wall: UnixMillis(T0 + 3_000)
        })
    );
}

#[test]
fn a_lease_not_renewed_for_a_ttl_is_given_up_and_sessions_register_again_under_the_new_one() {
    let mut r = Rig::manual_lease(Config::default());
    let e = r.input(Input::Timeout);
    r.done(store(&e[0]).0, lease_view(7, &[7], &[]));
    let e = r.open(1, "bob");
    r.done(store(&e[0]).0, Ok(StoreOutput::Done));
    // Renewals at 3, 6, 9 s all fail (the registry is unreachable).
    for at in [3_000, 6_000, 9_000] {
        let e = r.advance(at - r.ms);
        let (id, _) = store(&e[0]);
        r.done(id, Err(StoreError::Timeout));
    }
    assert_eq!(r.p.stats().leases_lost, 0);
    // At 10 s the lease confirmed at 0 s has expired: the server stops counting on it, and a
    // query cannot tell live leases from dead ones any more.
    assert!(r.advance(1_000).is_empty());
    assert_eq!(r.p.stats().leases_lost, 1);
    let e = r.text(1, r#"{"type":"query","id":1,"users":["carol"]}"#);
    let (q, _) = store(&e[0]);
    let e = r.done(
        q,
        Ok(StoreOutput::Registry(vec![RegistryEntry {
            leases: vec![LeaseToken(7)],
            last_seen: None,
            pending: None,
        }])),
    );
    assert_eq!(
        text_of(&e[0]),
        r#"{"type":"error","id":1,"code":"unavailable","message":"registry: no recent view of the server leases"}"#
    );
    // The renewal at 12 s asks for a new lease; the grant re-registers bob under it.
    let e = r.advance(2_000);
    let (id, op) = store(&e[0]);
    assert!(matches!(op, StoreOp::Registry(RegistryOp::RenewLease { token: None, .. })));
    let e = r.done(id, lease_view(9, &[9], &["ws-1#7"]));
    // The reaper claims the old lease (our own, dead: a late removal of its entries is fenced by
    // token 7, which the new registrations no longer carry) ...
    assert_eq!(
        store(&e[0]).1,
        reg(RegistryOp::ClaimReap {
            lease: "ws-1#7".into(),
            ttl: Duration::from_secs(10),
            batch: 256,
            ceiling: UnixMillis(T0 + 12_000)
        })
    );
    assert_eq!(
        store(&e[1]).1,
        reg(RegistryOp::Register { user: uid("bob"), session: SessionId::new("s1"), token: LeaseToken(9) })
    );
}

#[test]
fn readers_count_only_entries_under_live_leases() {
    let mut r = Rig::manual_lease(Config::default());
    let e = r.input(Input::Timeout);
    // Live: ours (7) and 5. Dead: 3. Newest seen: 7, so 8 is a lease granted since: live.
    r.done(store(&e[0]).0, lease_view(7, &[5, 7], &["ws-x#3"]));
    let e = r.input(Input::Lookup {
        lookup: crate::LookupId(1),
        user: uid("viewer"),
        users: vec![uid("a"), uid("b"), uid("c"), uid("d")],
        read_all: false,
    });
    let (q, _) = store(&e[0]);
    let entry = |leases: &[u64]| RegistryEntry {
        leases: leases.iter().map(|&t| LeaseToken(t)).collect(),
        last_seen: Some(UnixMillis(T0 - 1_000)),
        pending: None,
    };
    let e = r.done(q, Ok(StoreOutput::Registry(vec![entry(&[3]), entry(&[5]), entry(&[3, 8]), entry(&[])])));
    let online: Vec<bool> = match &e[..] {
        [Effect::LookupDone { result: Ok(users), .. }] => users.iter().map(|u| u.online).collect(),
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(online, vec![false, true, true, false]);
}

#[test]
fn reaper_makes_last_seen_durable_then_removes_fenced_entries_batch_by_batch() {
    let config = Config { reap_batch: 2, ..Config::default() };
    let mut r = Rig::manual_lease(config);
    let e = r.input(Input::Timeout);
    let e = r.done(store(&e[0]).0, lease_view(7, &[7], &["ws-9#4"]));
    let claim_at = |ms: i64| {
        reg(RegistryOp::ClaimReap {
            lease: "ws-9#4".into(),
            ttl: Duration::from_secs(10),
            batch: 2,
            ceiling: UnixMillis(T0 + ms),
        })
    };
    let (claim, op) = store(&e[0]);
    assert_eq!(op, claim_at(0));
    let dead_renewal = UnixMillis(T0 - 4_000);
    let sessions =
        vec![(uid("bob"), SessionId::new("x1"), true), (uid("carol"), SessionId::new("x2"), false)];
    let batch = ReapBatch { token: LeaseToken(4), last_seen: dead_renewal, sessions: sessions.clone() };
    // Only bob's entry is still under the dead lease: it is recorded in the registry first, then
    // durably.
    let e = r.done(claim, Ok(StoreOutput::Reap(Some(batch))));
    let (mark, op) = store(&e[0]);
    assert_eq!(
        op,
        reg(RegistryOp::MarkReaped {
            token: LeaseToken(4),
            last_seen: dead_renewal,
            sessions: vec![(uid("bob"), SessionId::new("x1"))]
        })
    );
    // A mark that may or may not have been applied is made durable all the same.
    let e = r.done(mark, Err(StoreError::Timeout));
    assert_eq!(e.len(), 1);
    let (w, op) = store(&e[0]);
    assert_eq!(op, StoreOp::Durable(DurableOp::Write { user: uid("bob"), last_seen: dead_renewal }));
    // A failed durable write is retried (with backoff) like any other; nothing is removed before
    // last_seen is durable.
    assert!(r.done(w, Err(StoreError::Throttled)).is_empty());
    let e = r.advance(200);
    let (w, op) = store(&e[0]);
    assert_eq!(op, StoreOp::Durable(DurableOp::Write { user: uid("bob"), last_seen: dead_renewal }));
    // Durable (applied): the batch's entries are removed, and the cache refreshed with it.
    let e = r.done(w, Ok(StoreOutput::Done));
    assert_eq!(store(&e[1]).1, reg(RegistryOp::SetLastSeen { user: uid("bob"), last_seen: dead_renewal }));
    let (remove, op) = store(&e[0]);
    assert_eq!(op, reg(RegistryOp::Reap { lease: "ws-9#4".into(), token: LeaseToken(4), sessions }));
    // Removed: claim the next batch; the registry says the index is empty and drops the lease.
    let e = r.done(remove, Ok(StoreOutput::Done));
    assert_eq!(store(&e[0]).1, claim_at(200));
    assert!(r.done(store(&e[0]).0, Ok(StoreOutput::Reap(None))).is_empty());
    assert_eq!(r.p.stats().sessions_reaped, 1);
}

#[test]
fn the_reaper_never_records_past_our_now() {
    // A dead server's clock may have been ahead: the claim carries our clock as the ceiling.
    let mut r = Rig::manual_lease(Config::default());
    let e = r.input(Input::Timeout);
    r.ms = 250;
    let e = r.done(store(&e[0]).0, lease_view(7, &[7], &["ws-9#4"]));
    assert!(matches!(
        store(&e[0]).1,
        StoreOp::Registry(RegistryOp::ClaimReap { ceiling: UnixMillis(c), .. }) if c == T0 + 250
    ));
}

#[test]
fn answers_combine_the_cache_the_pending_value_and_the_durable_one() {
    let mut r = Rig::new(Config::default());
    r.open(1, "alice");
    let e = r.text(1, r#"{"type":"query","id":1,"users":["dave","erin"]}"#);
    let (id, _) = store(&e[0]);
    let entries = vec![
        // Cache lost; an end since then went to the pending key; the durable value is older.
        RegistryEntry { leases: vec![], last_seen: None, pending: Some(UnixMillis(T0 + 5)) },
        // Cache present; a pending value left from before the cache was filled is newer.
        RegistryEntry {
            leases: vec![],
            last_seen: Some(UnixMillis(T0 - 10)),
            pending: Some(UnixMillis(T0 + 3)),
        },
    ];
    let e = r.done(id, Ok(StoreOutput::Registry(entries)));
    let (id, op) = store(&e[0]);
    assert_eq!(op, StoreOp::Durable(DurableOp::Read { users: vec![uid("dave")] }));
    let e = r.done(id, Ok(StoreOutput::Durable(vec![Some(UnixMillis(T0))])));
    // Only the durable value fills the cache; the answer is the maximum.
    assert_eq!(store(&e[0]).1, reg(RegistryOp::SetLastSeen { user: uid("dave"), last_seen: UnixMillis(T0) }));
    assert_eq!(
        text_of(&e[1]),
        r#"{"type":"presence","id":1,"users":[{"user":"dave","online":false,"last_seen":"2024-01-15T09:42:00.005Z"},{"user":"erin","online":false,"last_seen":"2024-01-15T09:42:00.003Z"}]}"#
    );
}

/// A registry answer for one user: online under our lease, or offline with a cached last_seen.
fn entry_of(online: bool, last_seen: Option<i64>) -> RegistryEntry {
    RegistryEntry {
        leases: if online { vec![LEASE] } else { vec![] },
        last_seen: last_seen.map(UnixMillis),
        pending: None,
    }
}

/// Answers a `subscribe`'s snapshot read (the first store effect in `e`) with `entries`, then the
/// re-read that follows the snapshot with the same entries; returns the snapshot frame.
fn answer_snapshot(r: &mut Rig, e: &[Effect], entries: Vec<RegistryEntry>) -> String {
    let e = r.done(store(&e[0]).0, Ok(StoreOutput::Registry(entries.clone())));
    let frame = e.iter().find(|e| matches!(e, Effect::Send { .. })).map(text_of).expect("the snapshot");
    let reads: Vec<EffectId> =
        e.iter().filter(|e| matches!(e, Effect::Store { .. })).map(|e| store(e).0).collect();
    for (id, entry) in reads.into_iter().zip(entries) {
        assert!(r.done(id, Ok(StoreOutput::Registry(vec![entry]))).is_empty(), "nothing changed since");
    }
    frame
}

fn watch_effects(e: &[Effect]) -> Vec<Effect> {
    e.iter().filter(|e| matches!(e, Effect::Watch { .. } | Effect::Unwatch { .. })).cloned().collect()
}

#[test]
fn subscribe_answers_a_snapshot_then_pushes_changes() {
    let mut r = Rig::new(Config::default());
    r.open(1, "alice");
    let e = r.text(1, r#"{"type":"subscribe","id":4,"users":["bob"]}"#);
    assert_eq!(watch_effects(&e), vec![Effect::Watch { user: uid("bob") }]);
    assert_eq!(store(&e[0]).1, reg(RegistryOp::Read { users: vec![uid("bob")] }));
    assert_eq!(
        answer_snapshot(&mut r, &e, vec![entry_of(false, Some(T0 - 60_000))]),
        r#"{"type":"presence","id":4,"users":[{"user":"bob","online":false,"last_seen":"2024-01-15T09:41:00.000Z"}]}"#
    );
    // Bob connects somewhere: a change notice, a read, a push without id.
    let e = r.input(Input::Changed { user: uid("bob") });
    let (q, _) = store(&e[0]);
    // A second notice while the read is in flight: read once more afterwards.
    assert!(r.input(Input::Changed { user: uid("bob") }).is_empty());
    let e = r.done(q, Ok(StoreOutput::Registry(vec![entry_of(true, Some(T0 - 60_000))])));
    assert_eq!(
        text_of(&e[0]),
        r#"{"type":"presence","users":[{"user":"bob","online":true,"last_seen":"2024-01-15T09:41:00.000Z"}]}"#
    );
    let (q, _) = store(&e[1]);
    // Nothing new: nothing pushed.
    assert!(r.done(q, Ok(StoreOutput::Registry(vec![entry_of(true, Some(T0 - 60_000))]))).is_empty());
    assert_eq!(r.p.stats().pushes, 1);
}

#[test]
fn a_last_seen_shown_clamped_to_the_skew_bound_is_pushed_exact_once_the_clock_reaches_it() {
    let mut r = Rig::new(Config::default());
    r.open(1, "alice");
    let e = r.text(1, r#"{"type":"subscribe","id":1,"users":["bob"]}"#);
    // Bob's server's clock is 8 s ahead of ours: with the 5 s skew bound his value is shown as
    // now + 5 s, 3 s short of what the stores hold.
    let ahead = Some(T0 + 8_000);
    assert_eq!(
        answer_snapshot(&mut r, &e, vec![entry_of(false, ahead)]),
        r#"{"type":"presence","id":1,"users":[{"user":"bob","online":false,"last_seen":"2024-01-15T09:42:05.000Z"}]}"#
    );
    // No notice will come (the stores do not change): once the ceiling has passed the value,
    // bob is read again and the exact value pushed.
    assert!(r.advance(2_999).is_empty());
    let e = r.advance(1);
    let (q, op) = store(&e[0]);
    assert_eq!(op, reg(RegistryOp::Read { users: vec![uid("bob")] }));
    let e = r.done(q, Ok(StoreOutput::Registry(vec![entry_of(false, ahead)])));
    assert_eq!(
        text_of(&e[0]),
        r#"{"type":"presence","users":[{"user":"bob","online":false,"last_seen":"2024-01-15T09:42:08.000Z"}]}"#
    );
    // Nothing clamped any more: no further reads of bob.
    let later = r.advance(60_000);
    let reads = later.iter().filter(|e| matches!(e, Effect::Store { .. })).map(|e| store(e).1);
    assert!(reads.filter(|op| matches!(op, StoreOp::Registry(RegistryOp::Read { .. }))).count() == 0);
}

#[test]
fn a_quick_reconnect_within_the_grace_shows_watchers_nothing() {
    let mut r = Rig::new(Config::default());
    r.open(1, "alice");
    let e = r.text(1, r#"{"type":"subscribe","users":["bob"]}"#);
    answer_snapshot(&mut r, &e, vec![entry_of(true, Some(T0 - 9_000))]);
    // Bob's last session ends: offline is held back.
    let e = r.input(Input::Changed { user: uid("bob") });
    let e = r.done(store(&e[0]).0, Ok(StoreOutput::Registry(vec![entry_of(false, Some(T0))])));
    assert!(e.is_empty(), "{e:?}");
    // Back 2 s later: nothing at all.
    r.ms = 2_000;
    let e = r.input(Input::Changed { user: uid("bob") });
    assert!(r.done(store(&e[0]).0, Ok(StoreOutput::Registry(vec![entry_of(true, Some(T0))]))).is_empty());
    // Gone again for good: after the 5 s grace the user is read once more and the offline pushed,
    // with the newest last_seen.
    r.ms = 3_000;
    let e = r.input(Input::Changed { user: uid("bob") });
    let later = Some(T0 + 3_000);
    assert!(r.done(store(&e[0]).0, Ok(StoreOutput::Registry(vec![entry_of(false, later)]))).is_empty());
    assert!(r.advance(4_999).is_empty());
    let e = r.advance(1);
    let (q, op) = store(&e[0]);
    assert_eq!(op, reg(RegistryOp::Read { users: vec![uid("bob")] }));
    let e = r.done(q, Ok(StoreOutput::Registry(vec![entry_of(false, later)])));
    assert_eq!(
        text_of(&e[0]),
        r#"{"type":"presence","users":[{"user":"bob","online":false,"last_seen":"2024-01-15T09:42:03.000Z"}]}"#
    );
}

#[test]
fn watches_are_limited_per_connection_shared_per_server_and_released() {
    let config = Config { max_watched_users: 2, ..Config::default() };
    let mut r = Rig::new(config);
    r.open(1, "alice");
    r.open(2, "carol");
    let e = r.text(1, r#"{"type":"subscribe","id":1,"users":["bob","dave"]}"#);
    assert_eq!(
        watch_effects(&e),
        vec![Effect::Watch { user: uid("bob") }, Effect::Watch { user: uid("dave") }]
    );
    // Past the limit: refused, nothing watched.
    let e = r.text(1, r#"{"type":"subscribe","id":2,"users":["erin"]}"#);
    assert_eq!(
        text_of(&e[0]),
        r#"{"type":"error","id":2,"code":"too_many_users","message":"a connection may watch at most 2 users (2 already)"}"#
    );
    // Watching an already watched user again does not count twice.
    assert!(watch_effects(&r.text(1, r#"{"type":"subscribe","users":["bob"]}"#)).is_empty());
    // A second watcher of bob: no second subscription on the change channel.
    assert!(watch_effects(&r.text(2, r#"{"type":"subscribe","users":["bob"]}"#)).is_empty());
    assert_eq!(r.p.watched_users(), 2);
    assert!(watch_effects(&r.text(1, r#"{"type":"unsubscribe","users":["bob","zed"]}"#)).is_empty());
    let e = r.input(Input::Closed { conn: ConnId(1), graceful: true });
    assert_eq!(watch_effects(&e), vec![Effect::Unwatch { user: uid("dave") }]);
    let e = r.input(Input::Closed { conn: ConnId(2), graceful: false });
    assert_eq!(watch_effects(&e), vec![Effect::Unwatch { user: uid("bob") }]);
    assert_eq!(r.p.watched_users(), 0);
}

#[test]
fn a_resync_reads_every_watched_user_and_pushes_what_changed() {
    let mut r = Rig::new(Config::default());
    r.open(1, "alice");
    let e = r.text(1, r#"{"type":"subscribe","users":["bob","dave"]}"#);
    let snapshot = vec![entry_of(false, Some(T0 - 1_000)), entry_of(false, Some(T0 - 2_000))];
    answer_snapshot(&mut r, &e, snapshot);
    let e = r.input(Input::Resync);
    assert_eq!(e.len(), 2);
    let (qb, _) = store(&e[0]);
    let (qd, _) = store(&e[1]);
    assert!(r.done(qd, Ok(StoreOutput::Registry(vec![entry_of(false, Some(T0 - 2_000))]))).is_empty());
    let e = r.done(qb, Ok(StoreOutput::Registry(vec![entry_of(true, Some(T0 - 1_000))])));
    assert_eq!(
        text_of(&e[0]),
        r#"{"type":"presence","users":[{"user":"bob","online":true,"last_seen":"2024-01-15T09:41:59.000Z"}]}"#
    );
}

/// Found by the core fuzz target: with many expired leases (after a mass failure, or leases
/// orphaned by renewals whose answer was lost), a claim with nothing to do moves on to the next
/// expired lease at once instead of one lease per renewal interval.
#[test]
fn the_reaper_goes_through_expired_leases_without_waiting_for_renewals() {
    let mut r = Rig::manual_lease(Config::default());
    let e = r.input(Input::Timeout);
    let mut e = r.done(store(&e[0]).0, lease_view(9, &[9], &["a#1", "b#2", "c#3"]));
    let mut claimed = Vec::new();
    while let Some(Effect::Store { id, op: StoreOp::Registry(RegistryOp::ClaimReap { lease, .. }) }) =
        e.first()
    {
        claimed.push(lease.clone());
        let id = *id;
        e = r.done(id, Ok(StoreOutput::Reap(None)));
    }
    claimed.sort();
    assert_eq!(claimed, ["a#1", "b#2", "c#3"]);
    assert_eq!(r.ms, 0, "all within the same instant");
}

#[test]
fn no_push_before_the_snapshot_and_a_change_meanwhile_is_pushed_after_it() {
    let mut r = Rig::new(Config::default());
    r.open(1, "alice");
    r.open(2, "carol");
    // Carol watches bob already; Alice subscribes, and bob comes online before her snapshot.
    let e = r.text(2, r#"{"type":"subscribe","users":["bob"]}"#);
    answer_snapshot(&mut r, &e, vec![entry_of(false, Some(T0))]);
    let e = r.text(1, r#"{"type":"subscribe","id":3,"users":["bob"]}"#);
    let (snapshot_read, _) = store(&e[0]);
    let e = r.input(Input::Changed { user: uid("bob") });
    let e = r.done(store(&e[0]).0, Ok(StoreOutput::Registry(vec![entry_of(true, Some(T0))])));
    // Only Carol is pushed: Alice has no snapshot yet.
    assert_eq!(e.len(), 1);
    assert!(matches!(&e[0], Effect::Send { conn: ConnId(2), .. }));
    // Alice's snapshot read was older (offline); then a re-read brings her up to date.
    let e = r.done(snapshot_read, Ok(StoreOutput::Registry(vec![entry_of(false, Some(T0))])));
    let (reread, _) = store(&e[0]);
    assert!(text_of(&e[1]).contains(r#""id":3"#));
    let e = r.done(reread, Ok(StoreOutput::Registry(vec![entry_of(true, Some(T0))])));
    assert_eq!(
        e,
        vec![Effect::Send {
            conn: ConnId(1),
            message: OutMessage::Text(
                r#"{"type":"presence","users":[{"user":"bob","online":true,"last_seen":"2024-01-15T09:42:00.000Z"}]}"#.into()
            )
        }]
    );
}

/// Token lifetime, per-user budgets, repeated ids, the server-wide watch cap.
mod limits;
mod privacy;
