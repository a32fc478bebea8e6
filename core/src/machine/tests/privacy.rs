//! Privacy with exact expected effects: answers as the asker's view shows them, pushes only of
//! what a watcher's view shows, live re-evaluation after a settings change, services, and
//! failing closed.

use super::{answer_snapshot, entry_of, store, text_of, uid, Rig, T0};
use crate::frame::ErrorCode;
use crate::privacy::{LastSeenAudience, OnlineAudience, Settings};
use crate::store::{PrivacyOp, StoreError, StoreOp, StoreOutput};
use crate::user::SessionId;
use crate::{Config, ConnId, Effect, Input, Scopes};

const HOUR: i64 = 3_600_000;

impl Rig {
    /// `user`'s settings: `last_seen` for its audience, online same as last seen.
    fn set_privacy(&mut self, user: &str, last_seen: LastSeenAudience, contacts: &[&str]) {
        let mut s = Settings::default_with(last_seen);
        s.online = OnlineAudience::SameAsLastSeen;
        self.privacy.settings.insert(uid(user), s);
        self.privacy.contacts.insert(uid(user), contacts.iter().map(|c| uid(c)).collect());
    }

    fn open_service(&mut self, conn: u64, scopes: Scopes) -> Vec<Effect> {
        self.input(Input::Open {
            conn: ConnId(conn),
            user: uid("backend"),
            session: SessionId::new(format!("s{conn}")),
            expires: None,
            scopes,
        })
    }
}

const BOB_SEEN: &str = r#"{"user":"bob","online":false,"last_seen":"2024-01-15T08:42:00.000Z"}"#;
const BOB_HIDDEN: &str = r#"{"user":"bob","online":false,"last_seen":null,"last_seen_approx":"recently"}"#;

#[test]
fn a_contact_sees_the_exact_time_and_a_stranger_sees_recently() {
    let mut r = Rig::new(Config::default());
    r.set_privacy("bob", LastSeenAudience::Contacts, &["alice"]);
    r.open(1, "alice");
    r.open(2, "eve");
    for (conn, want) in [(1, BOB_SEEN), (2, BOB_HIDDEN)] {
        let e = r.text(conn, r#"{"type":"query","id":1,"users":["bob"]}"#);
        let e = r.done(store(&e[0]).0, Ok(StoreOutput::Registry(vec![entry_of(false, Some(T0 - HOUR))])));
        assert_eq!(text_of(&e[0]), format!(r#"{{"type":"presence","id":1,"users":[{want}]}}"#));
    }
}

#[test]
fn a_hidden_online_user_coming_online_pushes_nothing_to_a_stranger() {
    let mut r = Rig::new(Config::default());
    r.set_privacy("bob", LastSeenAudience::Contacts, &["alice"]);
    r.open(1, "alice");
    r.open(2, "eve");
    let e = r.text(1, r#"{"type":"subscribe","users":["bob"]}"#);
    answer_snapshot(&mut r, &e, vec![entry_of(false, Some(T0 - HOUR))]);
    let e = r.text(2, r#"{"type":"subscribe","users":["bob"]}"#);
    assert!(answer_snapshot(&mut r, &e, vec![entry_of(false, Some(T0 - HOUR))]).contains(BOB_HIDDEN));
    // Bob comes online: alice is told, eve is not (her view reads the same as before).
    let e = r.input(Input::Changed { user: uid("bob") });
    let e = r.done(store(&e[0]).0, Ok(StoreOutput::Registry(vec![entry_of(true, Some(T0 - HOUR))])));
    let to: Vec<ConnId> =
        e.iter().filter_map(|e| if let Effect::Send { conn, .. } = e { Some(*conn) } else { None }).collect();
    assert_eq!(to, vec![ConnId(1)]);
    assert_eq!(r.p.stats().pushes, 1);
}

#[test]
fn a_settings_change_pushes_the_entry_as_each_view_now_shows_it() {
    let mut r = Rig::new(Config::default());
    r.open(1, "alice");
    let e = r.text(1, r#"{"type":"subscribe","users":["bob"]}"#);
    assert!(answer_snapshot(&mut r, &e, vec![entry_of(false, Some(T0 - HOUR))]).contains(BOB_SEEN));
    // Bob hides his last seen from everyone: alice is pushed the hidden entry at once.
    r.set_privacy("bob", LastSeenAudience::Nobody, &[]);
    let e = r.input(Input::PrivacyChanged { user: uid("bob") });
    assert_eq!(text_of(&e[0]), format!(r#"{{"type":"presence","users":[{BOB_HIDDEN}]}}"#));
    // Nothing more when the view did not change again.
    assert!(r.input(Input::PrivacyChanged { user: uid("bob") }).is_empty());
    // Reciprocity: alice hides hers; bob shows everyone again, but alice still may not see him.
    r.set_privacy("bob", LastSeenAudience::Everyone, &[]);
    r.set_privacy("alice", LastSeenAudience::Nobody, &[]);
    assert!(r.input(Input::PrivacyChanged { user: uid("bob") }).is_empty());
    // Alice shows hers again: her own change re-evaluates her subscriptions.
    r.set_privacy("alice", LastSeenAudience::Everyone, &[]);
    let e = r.input(Input::PrivacyChanged { user: uid("alice") });
    assert_eq!(text_of(&e[0]), format!(r#"{{"type":"presence","users":[{BOB_SEEN}]}}"#));
}

#[test]
fn a_change_whose_notice_was_lost_reaches_subscriptions_at_the_next_refresh() {
    // (Within the 30 s heartbeat timeout: alice sends nothing meanwhile.)
    let config = Config { privacy_refresh: std::time::Duration::from_secs(5), ..Config::default() };
    let mut r = Rig::new(config);
    r.open(1, "alice");
    let e = r.text(1, r#"{"type":"subscribe","users":["bob"]}"#);
    assert!(answer_snapshot(&mut r, &e, vec![entry_of(false, Some(T0 - HOUR))]).contains(BOB_SEEN));
    // Bob hides his last seen, and no notice comes (his server could not announce it).
    r.set_privacy("bob", LastSeenAudience::Nobody, &[]);
    let sends =
        |e: &[Effect]| e.iter().filter(|e| matches!(e, Effect::Send { .. })).map(text_of).collect::<Vec<_>>();
    assert!(sends(&r.advance(4_999)).is_empty());
    assert_eq!(sends(&r.advance(1)), vec![format!(r#"{{"type":"presence","users":[{BOB_HIDDEN}]}}"#)]);
    // And again every 5 s: nothing to push while nothing changed.
    assert!(sends(&r.advance(5_000)).is_empty());
    r.set_privacy("bob", LastSeenAudience::Everyone, &[]);
    assert_eq!(sends(&r.advance(5_000)), vec![format!(r#"{{"type":"presence","users":[{BOB_SEEN}]}}"#)]);
}

#[test]
fn a_failed_privacy_read_fails_the_query_and_never_answers_the_entry() {
    let mut r = Rig::new(Config::default());
    r.manual_privacy = true;
    r.open(1, "alice");
    let e = r.text(1, r#"{"type":"query","id":3,"users":["bob"]}"#);
    let (id, op) = store(&e[0]);
    assert_eq!(op, StoreOp::Privacy(PrivacyOp::Read { viewer: uid("alice"), targets: vec![uid("bob")] }));
    let e = r.done(id, Err(StoreError::Unavailable("down".into())));
    let frame = text_of(&e[0]);
    assert!(frame.starts_with(r#"{"type":"error","id":3,"code":"unavailable""#), "{frame}");
    assert_eq!(e.len(), 1, "no registry read after a failed privacy read: {e:?}");
}

#[test]
fn oneself_is_read_without_a_privacy_read() {
    let mut r = Rig::new(Config::default());
    r.manual_privacy = true;
    r.set_privacy("alice", LastSeenAudience::Nobody, &[]);
    r.open(1, "alice");
    let e = r.text(1, r#"{"type":"query","users":["alice"]}"#);
    assert!(matches!(store(&e[0]).1, StoreOp::Registry(_)), "{e:?}");
}

#[test]
fn a_read_all_service_sees_the_truth_and_registers_no_session() {
    let mut r = Rig::new(Config::default());
    r.manual_privacy = true;
    r.set_privacy("bob", LastSeenAudience::Nobody, &[]);
    let svc = Scopes { service: true, read_all: true, admin: false };
    let e = r.open_service(9, svc);
    assert!(e.is_empty(), "no Register for a service connection: {e:?}");
    assert_eq!(r.p.registry_backlog(), 0);
    let e = r.text(9, r#"{"type":"query","users":["bob"]}"#);
    let e = r.done(store(&e[0]).0, Ok(StoreOutput::Registry(vec![entry_of(false, Some(T0 - HOUR))])));
    assert_eq!(text_of(&e[0]), format!(r#"{{"type":"presence","users":[{BOB_SEEN}]}}"#));
    // Its end records nothing.
    assert!(r.input(Input::Closed { conn: ConnId(9), graceful: true }).is_empty());
    assert_eq!(r.p.pending_writes(), 0);
    assert_eq!(r.p.stats().sessions_opened, 0);
}

#[test]
fn an_auth_frame_must_keep_the_connections_scopes() {
    let mut r = Rig::new(Config::default());
    r.open(1, "alice");
    let grant = crate::TokenGrant {
        user: uid("alice"),
        expires: None,
        scopes: Scopes { service: true, read_all: true, admin: false },
    };
    let e = r.input(Input::TokenChecked { conn: ConnId(1), result: Ok(grant) });
    let frame = text_of(&e[0]);
    assert!(frame.contains(&format!(r#""code":"{}""#, ErrorCode::BadToken.as_str())), "{frame}");
}
