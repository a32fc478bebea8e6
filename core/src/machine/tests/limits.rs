//! Abuse limits with exact expected effects: token expiry and in-band refresh, per-user lookup
//! budgets shared by connections and lookups (and their cleanup), repeated ids read once, the
//! server-wide cap on watched users.

use std::time::Duration;

use super::{answer_snapshot, entry_of, reg, store, text_of, uid, watch_effects, Rig, T0};
use crate::frame::{ErrorCode, Token};
use crate::store::{RegistryOp, StoreOutput};
use crate::time::UnixMillis;
use crate::user::SessionId;
use crate::{close_code, Config, ConnId, Effect, EndReason, Input, LookupError, LookupId, TokenGrant};

impl Rig {
    fn open_until(&mut self, conn: u64, user: &str, expires_ms: i64) -> Vec<Effect> {
        self.input(Input::Open {
            conn: ConnId(conn),
            user: uid(user),
            session: SessionId::new(format!("s{conn}")),
            expires: Some(UnixMillis(T0 + expires_ms)),
            scopes: Default::default(),
        })
    }
    fn lookup(&mut self, id: u64, asker: &str, users: &[&str]) -> Vec<Effect> {
        self.input(Input::Lookup {
            lookup: LookupId(id),
            user: uid(asker),
            users: users.iter().map(|u| uid(u)).collect(),
            read_all: false,
        })
    }
}

fn grant(user: &str, expires_ms: i64) -> Result<TokenGrant, String> {
    Ok(TokenGrant { user: uid(user), expires: Some(UnixMillis(T0 + expires_ms)), scopes: Default::default() })
}

fn expired_close(conn: u64) -> Effect {
    Effect::Close { conn: ConnId(conn), code: close_code::TOKEN_EXPIRED, reason: "token expired" }
}

const EXPIRED_FRAME: &str =
    r#"{"type":"error","code":"token_expired","message":"the connection's token expired"}"#;

#[test]
fn an_expired_token_closes_with_4001_and_records_the_close_time() {
    let mut r = Rig::new(Config::default());
    let e = r.open_until(1, "bob", 3_000);
    r.done(store(&e[0]).0, Ok(StoreOutput::Done));
    assert_eq!(r.p.poll_timeout().map(|t| t.as_nanos()), Some(3_000_000_000));
    // Proof of life does not extend a token.
    r.ms = 2_999;
    assert!(r.alive(1, 0).is_empty());
    let e = r.advance(1);
    assert_eq!(text_of(&e[0]), EXPIRED_FRAME);
    assert_eq!(e[1], expired_close(1));
    let at = UnixMillis(T0 + 3_000);
    assert_eq!(
        store(&e[2]).1,
        reg(RegistryOp::EndSession {
            user: uid("bob"),
            session: SessionId::new("s1"),
            last_seen: at,
            token: Some(super::LEASE)
        })
    );
    assert_eq!(r.p.stats().sessions_ended[EndReason::Expired as usize], 1);
    assert_eq!(r.p.connections(), 0);
}

#[test]
fn the_deadline_is_taken_on_the_monotonic_clock_at_the_open() {
    let mut r = Rig::new(Config::default());
    r.open_until(1, "bob", 10_000);
    // The wall clock jumps an hour ahead: the deadline stays 10 s after the open, monotonic.
    r.ms = 5_000;
    let now = crate::time::Now {
        mono: crate::time::MonoTime::from_nanos(5_000_000_000),
        wall: UnixMillis(T0 + 3_600_000),
    };
    r.p.handle(now, Input::Timeout);
    while r.p.poll_effect().is_some() {}
    assert_eq!(r.p.poll_timeout().map(|t| t.as_nanos()), Some(10_000_000_000));
    // A token already expired when the core sees it fires at once.
    let e = r.open_until(2, "carol", -1);
    assert!(e.contains(&expired_close(2)), "{e:?}");
}

#[test]
fn auth_with_the_same_user_replaces_the_deadline_and_anything_else_keeps_the_old_one() {
    let mut r = Rig::new(Config::default());
    r.open_until(1, "bob", 3_000);
    let e = r.text(1, r#"{"type":"auth","token":"t.o.k"}"#);
    assert_eq!(e, vec![Effect::VerifyToken { conn: ConnId(1), token: Token("t.o.k".into()) }]);
    // Another user's valid token: refused, the old deadline stays.
    let e = r.input(Input::TokenChecked { conn: ConnId(1), result: grant("mallory", 60_000) });
    assert_eq!(
        text_of(&e[0]),
        r#"{"type":"error","code":"bad_token","message":"the token is for another user"}"#
    );
    let e =
        r.input(Input::TokenChecked { conn: ConnId(1), result: Err("invalid token: bad signature".into()) });
    assert_eq!(
        text_of(&e[0]),
        r#"{"type":"error","code":"bad_token","message":"invalid token: bad signature"}"#
    );
    assert_eq!(r.p.poll_timeout().map(|t| t.as_nanos()), Some(3_000_000_000));
    // The same user: the new deadline replaces the old one, silently.
    r.ms = 1_000;
    assert!(r.input(Input::TokenChecked { conn: ConnId(1), result: grant("bob", 8_000) }).is_empty());
    let e = r.advance(2_500);
    assert!(e.is_empty(), "the old deadline (3 s) is gone: {e:?}");
    assert!(r.advance(4_499).is_empty());
    assert_eq!(r.ms, 7_999);
    let e = r.advance(1);
    assert_eq!((text_of(&e[0]).as_str(), &e[1]), (EXPIRED_FRAME, &expired_close(1)));
    // A verdict for a connection that is gone changes nothing.
    assert!(r.input(Input::TokenChecked { conn: ConnId(1), result: grant("bob", 99_000) }).is_empty());
}

#[test]
fn a_token_without_expiry_is_never_closed_for_it() {
    let mut r = Rig::new(Config::default());
    r.input(Input::Open {
        conn: ConnId(1),
        user: uid("bob"),
        session: SessionId::new("s1"),
        expires: None,
        scopes: Default::default(),
    });
    r.input(Input::TokenChecked {
        conn: ConnId(1),
        result: Ok(TokenGrant { user: uid("bob"), expires: None, scopes: Default::default() }),
    });
    for _ in 0..10 {
        r.alive(1, 0);
        r.advance(10_000);
    }
    assert_eq!(r.p.connections(), 1);
}

#[test]
fn a_policy_close_by_the_connection_task_ends_the_session_now() {
    let mut r = Rig::new(Config::default());
    r.open(1, "bob");
    r.ms = 700;
    let e = r.input(Input::PolicyClosed { conn: ConnId(1) });
    assert!(e.iter().all(|e| !matches!(e, Effect::Close { .. })), "the task already closed it: {e:?}");
    let ends: Vec<_> = e.iter().map(|e| store(e).1).collect();
    assert!(ends.contains(&crate::store::StoreOp::Durable(crate::store::DurableOp::Write {
        user: uid("bob"),
        last_seen: UnixMillis(T0 + 700)
    })));
    assert_eq!(r.p.stats().sessions_ended[EndReason::Policy as usize], 1);
}

/// The effects are exactly one registry read (of any users): the request was admitted.
fn assert_reads(e: &[Effect]) {
    assert!(
        matches!(e, [Effect::Store { op: crate::store::StoreOp::Registry(RegistryOp::Read { .. }), .. }]),
        "expected one registry read, got {e:?}"
    );
}

fn rate_limited(id: u64, ms: u64) -> String {
    format!(
        r#"{{"type":"error","id":{id},"code":"rate_limited","message":"lookup rate limit exceeded; retry in {ms} ms"}}"#
    )
}

#[test]
fn lookups_are_budgeted_per_user_across_connections_and_http() {
    let config = Config { lookup_rate: 10, lookup_burst: 6, ..Config::default() };
    let mut r = Rig::new(config);
    r.open(1, "alice");
    r.open(2, "alice");
    r.open(3, "bob");
    // Alice: 2 users on connection 1, 2 on connection 2, 2 over HTTP: the burst of 6 is spent.
    assert_reads(&r.text(1, r#"{"type":"query","id":1,"users":["u1","u2"]}"#));
    assert_reads(&r.text(2, r#"{"type":"query","id":2,"users":["u3","u4"]}"#));
    assert_reads(&r.lookup(1, "alice", &["u5", "u6"]));
    let e = r.text(1, r#"{"type":"query","id":3,"users":["u7"]}"#);
    assert_eq!(text_of(&e[0]), rate_limited(3, 100));
    let e = r.lookup(2, "alice", &["u7", "u8"]);
    assert_eq!(
        e,
        vec![Effect::LookupDone {
            lookup: LookupId(2),
            result: Err(LookupError {
                code: ErrorCode::RateLimited,
                message: "lookup rate limit exceeded; retry in 200 ms".into(),
                retry_after: Some(Duration::from_millis(200)),
            }),
        }]
    );
    // Bob's budget is his own.
    assert_reads(&r.text(3, r#"{"type":"query","id":4,"users":["u1","u2","u3"]}"#));
    // 10/s: after 100 ms one more lookup for alice, from any connection.
    r.advance(100);
    assert_reads(&r.text(2, r#"{"type":"query","id":5,"users":["u9"]}"#));
    assert_eq!(r.p.stats().lookups_refused, 2);
}

#[test]
fn requests_in_flight_are_limited_per_user() {
    let config = Config { max_queries_in_flight: 2, ..Config::default() };
    let mut r = Rig::new(config);
    r.open(1, "alice");
    r.open(2, "alice");
    let (a, _) = store(&r.text(1, r#"{"type":"query","id":1,"users":["bob"]}"#)[0]);
    store(&r.lookup(1, "alice", &["bob"])[0]);
    let e = r.text(2, r#"{"type":"query","id":2,"users":["bob"]}"#);
    assert_eq!(
        text_of(&e[0]),
        r#"{"type":"error","id":2,"code":"rate_limited","message":"too many queries in flight"}"#
    );
    let e = r.lookup(2, "alice", &["bob"]);
    assert!(
        matches!(&e[0], Effect::LookupDone { result: Err(LookupError { retry_after: None, .. }), .. }),
        "{e:?}"
    );
    // An answer frees a slot, even for a connection that closed meanwhile.
    r.input(Input::Closed { conn: ConnId(1), graceful: true });
    r.done(a, Ok(StoreOutput::Registry(vec![entry_of(false, Some(T0))])));
    let e = r.text(2, r#"{"type":"query","id":3,"users":["bob"]}"#);
    assert_eq!(store(&e[0]).1, reg(RegistryOp::Read { users: vec![uid("bob")] }));
}

#[test]
fn a_budget_entry_is_dropped_once_nothing_is_in_flight_and_the_bucket_is_full() {
    let config = Config { lookup_rate: 100, lookup_burst: 1_000, ..Config::default() };
    let mut r = Rig::new(config);
    r.open(1, "alice");
    let (q, _) = store(&r.text(1, r#"{"type":"query","id":1,"users":["bob","carol"]}"#)[0]);
    assert_eq!(r.p.budget_entries(), 1);
    r.advance(5);
    r.done(q, Ok(StoreOutput::Registry(vec![entry_of(false, Some(T0)), entry_of(false, Some(T0))])));
    // 2 lookups at 100/s: full again 20 ms after they were taken.
    assert_eq!(r.p.budget_entries(), 1);
    r.advance(14);
    assert_eq!(r.p.budget_entries(), 1);
    r.advance(1);
    assert_eq!(r.p.budget_entries(), 0);
    // A refused HTTP lookup of a user without a connection leaves nothing behind either.
    let config = Config { lookup_rate: 10, lookup_burst: 2, ..Config::default() };
    let mut r = Rig::new(config);
    let e = r.lookup(1, "mallory", &["a", "b", "c"]);
    assert!(matches!(&e[..], [Effect::LookupDone { result: Err(_), .. }]), "{e:?}");
    assert_eq!(r.p.budget_entries(), 0);
}

#[test]
fn repeated_ids_are_answered_in_order_but_read_and_paid_once() {
    let config = Config { lookup_rate: 1, lookup_burst: 2, ..Config::default() };
    let mut r = Rig::new(config);
    r.open(1, "alice");
    let e = r.text(1, r#"{"type":"query","id":7,"users":["bob","carol","bob","bob","carol"]}"#);
    let (q, op) = store(&e[0]);
    assert_eq!(op, reg(RegistryOp::Read { users: vec![uid("bob"), uid("carol")] }));
    let e = r.done(
        q,
        Ok(StoreOutput::Registry(vec![entry_of(true, Some(T0 - 1_000)), entry_of(false, Some(T0))])),
    );
    let bob = r#"{"user":"bob","online":true,"last_seen":"2024-01-15T09:41:59.000Z"}"#;
    let carol = r#"{"user":"carol","online":false,"last_seen":"2024-01-15T09:42:00.000Z"}"#;
    assert_eq!(
        text_of(&e[0]),
        format!(r#"{{"type":"presence","id":7,"users":[{bob},{carol},{bob},{bob},{carol}]}}"#)
    );
    // The same over HTTP (a budget of 2 distinct users paid it; the bucket is empty now).
    r.advance(2_000);
    let e = r.lookup(1, "alice", &["carol", "carol"]);
    let (q, op) = store(&e[0]);
    assert_eq!(op, reg(RegistryOp::Read { users: vec![uid("carol")] }));
    let e = r.done(q, Ok(StoreOutput::Registry(vec![entry_of(false, Some(T0))])));
    match &e[0] {
        Effect::LookupDone { result: Ok(users), .. } => {
            assert_eq!(users.iter().map(|u| u.user.as_str()).collect::<Vec<_>>(), ["carol", "carol"])
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn the_server_wide_watch_cap_refuses_new_users_only() {
    let config = Config { max_watched_users_total: 2, ..Config::default() };
    let mut r = Rig::new(config);
    r.open(1, "alice");
    r.open(2, "carol");
    let e = r.text(1, r#"{"type":"subscribe","id":1,"users":["bob","dave"]}"#);
    answer_snapshot(&mut r, &e, vec![entry_of(false, Some(T0)), entry_of(false, Some(T0))]);
    let e = r.text(2, r#"{"type":"subscribe","id":2,"users":["bob","erin"]}"#);
    assert_eq!(
        text_of(&e[0]),
        r#"{"type":"error","id":2,"code":"too_many_users","message":"this server watches at most 2 users"}"#
    );
    // Users the server already watches are not new: carol may watch them too.
    let e = r.text(2, r#"{"type":"subscribe","id":3,"users":["dave","bob"]}"#);
    assert!(watch_effects(&e).is_empty());
    assert_eq!(store(&e[0]).1, reg(RegistryOp::Read { users: vec![uid("dave"), uid("bob")] }));
    assert_eq!(r.p.watched_users(), 2);
}
