//! Scenario tests of the state machine with exact expected effects.

use std::time::Duration;

use crate::frame::Encoding;
use crate::store::{DurableOp, EffectId, RegistryEntry, RegistryOp, StoreError, StoreOp, StoreOutput};
use crate::time::{MonoTime, Now, UnixMillis};
use crate::user::{SessionId, UserId};
use crate::{close_code, Config, ConnId, Effect, Input, OutMessage, Presence};

const T0: i64 = 1_705_311_720_000; // 2024-01-15T09:42:00.000Z

struct Rig {
    p: Presence,
    ms: u64,
}

impl Rig {
    fn new(config: Config) -> Self {
        Rig { p: Presence::new(config, 7), ms: 0 }
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
        std::iter::from_fn(|| self.p.poll_effect()).collect()
    }
    fn open(&mut self, conn: u64, user: &str) -> Vec<Effect> {
        self.input(Input::Open {
            conn: ConnId(conn),
            user: uid(user),
            session: SessionId::new(format!("s{conn}")),
        })
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
    assert_eq!(op, reg(RegistryOp::Register { user: uid("bob"), session: SessionId::new("s1") }));
    assert!(r.done(id, Ok(StoreOutput::Done)).is_empty());
    r.advance(5_000);
    let e = r.input(Input::Closed { conn: ConnId(1), graceful: true });
    let ops: Vec<StoreOp> = e.iter().map(|e| store(e).1).collect();
    let at = UnixMillis(T0 + 5_000);
    assert_eq!(
        ops,
        vec![
            reg(RegistryOp::EndSession { user: uid("bob"), session: SessionId::new("s1"), last_seen: at }),
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

#[test]
fn heartbeat_probes_then_ends_with_last_proof_of_life() {
    let mut r = Rig::new(Config::default());
    let e = r.open(1, "bob");
    r.done(store(&e[0]).0, Ok(StoreOutput::Done));
    r.advance(4_000);
    assert!(r.input(Input::Alive { conn: ConnId(1) }).is_empty());
    assert_eq!(r.p.poll_timeout(), Some(MonoTime::from_nanos(15_000 * 1_000_000)));
    // First check at 15 s finds proof at 4 s: re-armed for 19 s, nothing sent.
    assert!(r.advance(11_000).is_empty());
    assert_eq!(r.p.poll_timeout(), Some(MonoTime::from_nanos(19_000 * 1_000_000)));
    assert_eq!(r.advance(4_000), vec![Effect::Ping { conn: ConnId(1) }]);
    // Dead at 4 s + 30 s = 34 s.
    assert!(r.advance(14_999).is_empty());
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
            last_seen: last_proof
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
    assert_eq!(store(&e[0]).1, reg(RegistryOp::Register { user: uid("bob"), session: SessionId::new("s1") }));
}

#[test]
fn query_falls_back_to_durable_and_backfills() {
    let mut r = Rig::new(Config::default());
    r.open(1, "alice");
    let e = r.text(1, r#"{"type":"query","id":7,"users":["bob","carol"]}"#);
    let (id, op) = store(&e[0]);
    assert_eq!(op, reg(RegistryOp::Read { users: vec![uid("bob"), uid("carol")] }));
    let entries = vec![
        RegistryEntry { online: false, last_seen: None },
        RegistryEntry { online: true, last_seen: None },
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
        Ok(StoreOutput::Registry(vec![RegistryEntry { online: false, last_seen: Some(far) }])),
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
            last_seen: UnixMillis(T0 + 1_010)
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
