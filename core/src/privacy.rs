//! Who may see a user's online state and last seen: the visibility rule of docs/PRIVACY.md as a
//! pure function of the two users' settings, the two membership answers and the time.
//!
//! The rule, for a viewer V asking about a target T:
//!
//! - `shares(X, Y)`: Y is not in X's `except` list, and X's `last_seen` audience is everyone, or
//!   contacts with Y in X's contacts;
//! - `shares_online(X, Y)`: Y is not in X's `except` list, and X's `online` audience is everyone,
//!   or `shares(X, Y)`;
//! - V sees T's last seen iff `shares(T, V) && shares(V, T)` (reciprocal), and T's online state iff
//!   `shares_online(T, V) && shares_online(V, T)`; V always sees itself, and a service token with
//!   the `presence:read_all` scope sees everyone.
//!
//! What is hidden is replaced, not left out: a hidden online state reads `false`, exactly as if T
//! were offline, and a hidden last seen reads `null` with a coarse [`Approx`] bucket, so an
//! online-hidden user who is online and an offline one seen a minute ago look the same.
//! The [`Approx`] buckets themselves are wire values and live with the frames (`crate::frame`).
//!
//! Everything here is a pure function (no clock reads, no I/O): the core decides every answer
//! with it, and the property tests (`core/tests/privacy.rs`) and the simulation check it.

use std::collections::BTreeSet;
use std::sync::Arc;

pub use crate::frame::Approx;
use crate::frame::PresenceEntry;
use crate::time::UnixMillis;
use crate::user::UserId;

/// At most this many ids in a user's `except` list.
pub const MAX_EXCEPT: usize = 1_000;

/// Default of `--max-contacts`: at most this many ids in a user's contact list.
pub const DEFAULT_MAX_CONTACTS: usize = 10_000;

/// Who may see a user's last seen (the `last_seen` member of the settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LastSeenAudience {
    /// Everyone (reciprocity still applies).
    Everyone,
    /// Only the ids in the user's contact list.
    Contacts,
    /// No one.
    Nobody,
}

/// Who may see a user's online state (the `online` member of the settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OnlineAudience {
    /// Everyone not in the `except` list, whatever the last seen audience.
    Everyone,
    /// Whoever may see the last seen.
    SameAsLastSeen,
}

impl LastSeenAudience {
    /// The JSON name (`"everyone"`, `"contacts"`, `"nobody"`).
    pub fn as_str(self) -> &'static str {
        match self {
            LastSeenAudience::Everyone => "everyone",
            LastSeenAudience::Contacts => "contacts",
            LastSeenAudience::Nobody => "nobody",
        }
    }

    /// The audience a JSON name stands for.
    pub fn parse(s: &str) -> Option<LastSeenAudience> {
        [LastSeenAudience::Everyone, LastSeenAudience::Contacts, LastSeenAudience::Nobody]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

impl OnlineAudience {
    /// The JSON name (`"everyone"`, `"same_as_last_seen"`).
    pub fn as_str(self) -> &'static str {
        match self {
            OnlineAudience::Everyone => "everyone",
            OnlineAudience::SameAsLastSeen => "same_as_last_seen",
        }
    }

    /// The audience a JSON name stands for.
    pub fn parse(s: &str) -> Option<OnlineAudience> {
        [OnlineAudience::Everyone, OnlineAudience::SameAsLastSeen].into_iter().find(|a| a.as_str() == s)
    }
}

/// A user's privacy settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Who may see the last seen.
    pub last_seen: LastSeenAudience,
    /// Who may see the online state.
    pub online: OnlineAudience,
    /// Who sees neither, whatever the two audiences say (at most [`MAX_EXCEPT`]).
    pub except: BTreeSet<UserId>,
}

impl Settings {
    /// The settings of a user who never set any: `last_seen` from the server's
    /// `--default-privacy`, `online` same as last seen, no exceptions.
    pub fn default_with(last_seen: LastSeenAudience) -> Settings {
        Settings { last_seen, online: OnlineAudience::SameAsLastSeen, except: BTreeSet::new() }
    }
}

/// What one side of a pair has decided about the other: its settings, and whether the other is
/// in its contact list (the one membership answer the rule needs, so a 10,000-contact list is
/// never read whole).
#[derive(Clone, Copy, Debug)]
pub struct Side<'a> {
    /// This user's settings (the default ones if never set).
    pub settings: &'a Settings,
    /// Whether the other user is in this user's contact list.
    pub has_other_as_contact: bool,
}

impl Side<'_> {
    /// `shares(self, other)`: whether this side shows its last seen to `other`.
    pub fn shares(&self, other: &UserId) -> bool {
        !self.settings.except.contains(other)
            && match self.settings.last_seen {
                LastSeenAudience::Everyone => true,
                LastSeenAudience::Contacts => self.has_other_as_contact,
                LastSeenAudience::Nobody => false,
            }
    }

    /// `shares_online(self, other)`: whether this side shows its online state to `other`.
    pub fn shares_online(&self, other: &UserId) -> bool {
        !self.settings.except.contains(other)
            && (self.settings.online == OnlineAudience::Everyone || self.shares(other))
    }
}

/// What a viewer may see of a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct View {
    /// The exact last seen.
    pub last_seen: bool,
    /// The online state.
    pub online: bool,
}

impl View {
    /// Everything: oneself, or a `presence:read_all` service.
    pub const FULL: View = View { last_seen: true, online: true };
}

/// The view of `viewer` on `target`, from both sides' settings and membership answers.
pub fn view(viewer: &UserId, target: &UserId, viewer_side: Side<'_>, target_side: Side<'_>) -> View {
    if viewer == target {
        return View::FULL;
    }
    View {
        last_seen: target_side.shares(viewer) && viewer_side.shares(target),
        online: target_side.shares_online(viewer) && viewer_side.shares_online(target),
    }
}

const DAY_MS: i64 = 86_400_000;
/// "recently": online now, or seen within this long (3 days).
pub const RECENTLY_MS: i64 = 3 * DAY_MS;
/// "within_week": seen within this long (7 days).
pub const WITHIN_WEEK_MS: i64 = 7 * DAY_MS;
/// "within_month": seen within this long (30 days).
pub const WITHIN_MONTH_MS: i64 = 30 * DAY_MS;

/// The bucket of a user who is `online`, last seen at `last_seen`, as of `now`; `None` for a
/// user never seen and not online (who gets no bucket). A value ahead of `now` (another server's
/// clock) is "recently".
pub fn approx_of(online: bool, last_seen: Option<UnixMillis>, now: UnixMillis) -> Option<Approx> {
    if online {
        return Some(Approx::Recently);
    }
    let age = now.0.saturating_sub(last_seen?.0);
    Some(if age <= RECENTLY_MS {
        Approx::Recently
    } else if age <= WITHIN_WEEK_MS {
        Approx::WithinWeek
    } else if age <= WITHIN_MONTH_MS {
        Approx::WithinMonth
    } else {
        Approx::LongAgo
    })
}

/// Applies `view` to the true entry at `now`: the entry the viewer may see. A hidden online state
/// reads offline; a hidden last seen reads `None` with its bucket (computed from the true state,
/// so an online user whose online state is hidden reads "recently", as a user who just left).
pub fn apply(entry: &PresenceEntry, view: View, now: UnixMillis) -> PresenceEntry {
    if view.last_seen && view.online {
        return entry.clone();
    }
    PresenceEntry {
        user: entry.user.clone(),
        online: entry.online && view.online,
        last_seen: if view.last_seen { entry.last_seen } else { None },
        last_seen_approx: if view.last_seen { None } else { approx_of(entry.online, entry.last_seen, now) },
    }
}

/// One target's part of a [`PrivacyAnswer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetPrivacy {
    /// The target's settings (the default ones if never set).
    pub settings: Arc<Settings>,
    /// Whether the viewer is in the target's contact list.
    pub has_viewer: bool,
    /// Whether the target is in the viewer's contact list.
    pub viewer_has: bool,
}

/// The store's answer to a privacy read for one viewer and its targets
/// ([`crate::store::PrivacyOp::Read`]): everything [`view`] needs, nothing more (a membership
/// the rule does not need, because the audience is not `contacts`, may read `false`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrivacyAnswer {
    /// The viewer's settings.
    pub viewer: Arc<Settings>,
    /// One per target, in the request's order.
    pub targets: Vec<TargetPrivacy>,
}

impl PrivacyAnswer {
    /// The view of `viewer` on each of `targets` (the targets of the read, in order).
    pub fn views(&self, viewer: &UserId, targets: &[UserId]) -> Vec<View> {
        targets
            .iter()
            .zip(&self.targets)
            .map(|(target, t)| {
                let viewer_side = Side { settings: &self.viewer, has_other_as_contact: t.viewer_has };
                let target_side = Side { settings: &t.settings, has_other_as_contact: t.has_viewer };
                view(viewer, target, viewer_side, target_side)
            })
            .collect()
    }
}
