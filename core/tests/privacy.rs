//! Properties of the visibility rule (`presence_core::privacy`, docs/PRIVACY.md): reciprocity is
//! symmetric, `except` always hides, a hidden entry never carries the exact time, self always
//! sees, and what is hidden cannot be told apart from an offline user.

use std::collections::BTreeSet;

use presence_core::frame::PresenceEntry;
use presence_core::privacy::{
    apply, approx_of, view, Approx, LastSeenAudience, OnlineAudience, Settings, Side, View, RECENTLY_MS,
    WITHIN_MONTH_MS, WITHIN_WEEK_MS,
};
use presence_core::time::UnixMillis;
use presence_core::user::UserId;
use proptest::prelude::*;

fn uid(s: &str) -> UserId {
    UserId::new(s).expect("valid id")
}

/// Two users, "v" and "t", plus a bystander "x" who may appear in the lists.
fn settings() -> impl Strategy<Value = Settings> {
    (
        prop_oneof![
            Just(LastSeenAudience::Everyone),
            Just(LastSeenAudience::Contacts),
            Just(LastSeenAudience::Nobody)
        ],
        prop_oneof![Just(OnlineAudience::Everyone), Just(OnlineAudience::SameAsLastSeen)],
        proptest::collection::btree_set(prop_oneof![Just("v"), Just("t"), Just("x")], 0..3),
    )
        .prop_map(|(last_seen, online, except)| Settings {
            last_seen,
            online,
            except: except.into_iter().map(uid).collect::<BTreeSet<_>>(),
        })
}

fn entry() -> impl Strategy<Value = PresenceEntry> {
    (any::<bool>(), proptest::option::of(0i64..2_000_000_000_000)).prop_map(|(online, last_seen)| {
        PresenceEntry { user: uid("t"), online, last_seen: last_seen.map(UnixMillis), last_seen_approx: None }
    })
}

proptest! {
    #[test]
    fn reciprocity_is_symmetric(vs in settings(), ts in settings(), v_has_t: bool, t_has_v: bool) {
        let (v, t) = (uid("v"), uid("t"));
        let v_side = Side { settings: &vs, has_other_as_contact: v_has_t };
        let t_side = Side { settings: &ts, has_other_as_contact: t_has_v };
        prop_assert_eq!(view(&v, &t, v_side, t_side), view(&t, &v, t_side, v_side));
    }

    #[test]
    fn except_always_hides(vs in settings(), ts in settings(), v_has_t: bool, t_has_v: bool, t_excepts: bool) {
        let (v, t) = (uid("v"), uid("t"));
        let (mut vs, mut ts) = (vs, ts);
        // Either side's except list naming the other hides both ways.
        if t_excepts { ts.except.insert(v.clone()); } else { vs.except.insert(t.clone()); }
        let got = view(&v, &t, Side { settings: &vs, has_other_as_contact: v_has_t }, Side { settings: &ts, has_other_as_contact: t_has_v });
        prop_assert_eq!(got, View { last_seen: false, online: false });
    }

    #[test]
    fn seeing_the_last_seen_implies_seeing_online(vs in settings(), ts in settings(), v_has_t: bool, t_has_v: bool) {
        let got = view(&uid("v"), &uid("t"), Side { settings: &vs, has_other_as_contact: v_has_t }, Side { settings: &ts, has_other_as_contact: t_has_v });
        prop_assert!(!got.last_seen || got.online, "{got:?}");
    }

    #[test]
    fn self_always_sees(s in settings(), has_self: bool) {
        let v = uid("v");
        let side = Side { settings: &s, has_other_as_contact: has_self };
        prop_assert_eq!(view(&v, &v, side, side), View::FULL);
    }

    #[test]
    fn a_hidden_entry_never_carries_the_exact_time(e in entry(), online_visible: bool, now in 0i64..3_000_000_000_000) {
        let got = apply(&e, View { last_seen: false, online: online_visible }, UnixMillis(now));
        prop_assert_eq!(got.last_seen, None);
        prop_assert_eq!(got.last_seen_approx, approx_of(e.online, e.last_seen, UnixMillis(now)));
        prop_assert_eq!(got.online, e.online && online_visible);
        prop_assert_eq!(&got.user, &e.user);
    }

    #[test]
    fn a_full_view_changes_nothing(e in entry(), now in 0i64..3_000_000_000_000) {
        let got = apply(&e, View::FULL, UnixMillis(now));
        prop_assert_eq!(got.last_seen_approx, None);
        prop_assert_eq!(got, e);
    }

    #[test]
    fn online_hidden_and_online_reads_as_offline_and_just_seen(seen_ago in 0i64..=RECENTLY_MS, now in RECENTLY_MS..3_000_000_000_000, prior: Option<i64>) {
        let hidden = View { last_seen: false, online: false };
        let online = PresenceEntry { user: uid("t"), online: true, last_seen: prior.map(|p| UnixMillis(p.rem_euclid(now))), last_seen_approx: None };
        let offline = PresenceEntry { user: uid("t"), online: false, last_seen: Some(UnixMillis(now - seen_ago)), last_seen_approx: None };
        prop_assert_eq!(apply(&online, hidden, UnixMillis(now)), apply(&offline, hidden, UnixMillis(now)));
    }
}

#[test]
fn the_rule_on_named_cases() {
    let (v, t) = (uid("v"), uid("t"));
    let s = |last_seen, online| Settings { last_seen, online, except: BTreeSet::new() };
    let everyone = s(LastSeenAudience::Everyone, OnlineAudience::SameAsLastSeen);
    let contacts = s(LastSeenAudience::Contacts, OnlineAudience::SameAsLastSeen);
    let nobody = s(LastSeenAudience::Nobody, OnlineAudience::SameAsLastSeen);
    let nobody_online_everyone = s(LastSeenAudience::Nobody, OnlineAudience::Everyone);
    let side = |settings, has| Side { settings, has_other_as_contact: has };
    let see = |vs, ts| view(&v, &t, vs, ts);
    // Contacts only: a contact sees, a stranger does not.
    assert_eq!(see(side(&everyone, false), side(&contacts, true)), View::FULL);
    assert_eq!(see(side(&everyone, false), side(&contacts, false)), View { last_seen: false, online: false });
    // Reciprocal: who hides their last seen cannot see another's.
    assert_eq!(see(side(&nobody, false), side(&everyone, false)), View { last_seen: false, online: false });
    // Online shown to everyone, last seen to nobody.
    assert_eq!(
        see(side(&everyone, false), side(&nobody_online_everyone, false)),
        View { last_seen: false, online: true }
    );
    // Only the owner's list counts: t in v's contacts does not let v see a contacts-only t.
    assert_eq!(see(side(&everyone, true), side(&contacts, false)), View { last_seen: false, online: false });
}

#[test]
fn buckets_at_their_edges() {
    let now = UnixMillis(100 * 86_400_000);
    let at = |ago: i64| approx_of(false, Some(UnixMillis(now.0 - ago)), now);
    assert_eq!(approx_of(true, None, now), Some(Approx::Recently));
    assert_eq!(approx_of(false, None, now), None);
    assert_eq!(at(-5_000), Some(Approx::Recently));
    assert_eq!(at(RECENTLY_MS), Some(Approx::Recently));
    assert_eq!(at(RECENTLY_MS + 1), Some(Approx::WithinWeek));
    assert_eq!(at(WITHIN_WEEK_MS), Some(Approx::WithinWeek));
    assert_eq!(at(WITHIN_WEEK_MS + 1), Some(Approx::WithinMonth));
    assert_eq!(at(WITHIN_MONTH_MS), Some(Approx::WithinMonth));
    assert_eq!(at(WITHIN_MONTH_MS + 1), Some(Approx::LongAgo));
    for a in [Approx::Recently, Approx::WithinWeek, Approx::WithinMonth, Approx::LongAgo] {
        assert_eq!(Approx::parse(a.as_str()), Some(a));
    }
}
