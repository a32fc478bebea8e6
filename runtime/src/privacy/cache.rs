//! The executor of the core's [`PrivacyOp::Read`]: a per-server cache of settings and membership
//! answers over a [`PrivacyBackend`].
//!
//! Why a cache: a batch query of 100 users needs up to 101 settings and 200 memberships, and
//! settings change rarely. Why it is safe (docs/PRIVACY.md, "Propagation"):
//!
//! - Every change is announced: the server that takes a change drops what it cached of the user
//!   at once and publishes a notice on the change feed; every server drops what it cached of that
//!   user when the notice arrives ([`PrivacyCache::invalidate`]).
//! - A lost notice is never a kept grant: when the feed may have lost notices (it reconnected, or
//!   Redis restarted) the whole cache is dropped ([`PrivacyCache::invalidate_all`]).
//! - A read that raced a change does not fill the cache with what it read before the change: a
//!   backend answer is cached only if no invalidation of that user (or of everything) happened
//!   since the read started.
//! - Entries expire after [`PrivacyCacheConfig::ttl`] whatever happens: the bound for the one case
//!   no notice covers (the server that took a change died before publishing it).
//! - Read entries are refreshed ahead of that: the first cached read that uses an entry older than
//!   three quarters of the TTL is answered from it and names it for a background re-read
//!   ([`PrivacyCache::refresh`]), which replaces it under the same rule as any backend answer.
//!   Entries read together expire together; without this, every query of the moment they expire
//!   misses and waits for the store (a burst of thousands at 5,000 queries/s, BENCHMARKS.md).
//! - Bounded: past [`PrivacyCacheConfig::max_entries`] the cache is emptied (a cold cache is slow,
//!   never wrong).
//!
//! Why short lists are held whole: a viewer's batch asks about 200 memberships, so holding one
//! answer per question needs viewers x targets x 2 entries, more than any bound at a few thousand
//! viewers (at 18,000 viewers of 100 targets, 3.6 M; BENCHMARKS.md). Most lists are short, and the
//! backends return a short list whole with the owner's settings ([`StoredUser::contacts`]), so
//! one entry per owner answers every question about that owner, at the cost of its length.
//! Longer lists keep one answer per question asked.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use presence_core::privacy::{LastSeenAudience, PrivacyAnswer, Settings, TargetPrivacy};
use presence_core::store::{PrivacyOp, StoreError, StoreOutput};
use presence_core::user::UserId;
use tokio::time::Instant;

use super::{Membership, PrivacyBackend, StoredUser};
use crate::store::{with_timeout, StoreFuture};

/// Settings of the cache.
#[derive(Clone, Debug)]
pub struct PrivacyCacheConfig {
    /// The `last_seen` audience of users who never set theirs (`--default-privacy`).
    pub default_last_seen: LastSeenAudience,
    /// How long an entry may be used without a notice dropping it.
    pub ttl: Duration,
    /// Most settings plus membership entries held.
    pub max_entries: usize,
    /// Bound on one read, backend round trips included.
    pub op_timeout: Duration,
}

impl Default for PrivacyCacheConfig {
    fn default() -> PrivacyCacheConfig {
        PrivacyCacheConfig {
            default_last_seen: LastSeenAudience::Everyone,
            ttl: Duration::from_secs(60),
            max_entries: 1_000_000,
            op_timeout: Duration::from_secs(2),
        }
    }
}

/// How many recent invalidations are remembered to decide whether a finished read may fill the
/// cache; a read older than all of them fills nothing.
const RECENT_INVALIDATIONS: usize = 4_096;

/// One user's cached settings and the answers about its contact list.
#[derive(Debug)]
struct Cached {
    at: Instant,
    /// A refresh of this entry is in flight (at most one per entry).
    refreshing: bool,
    settings: Arc<Settings>,
    list: u64,
    /// What is known of the user's list (version `list`).
    members: Members,
}

/// What the cache knows of one contact list.
#[derive(Debug)]
enum Members {
    /// The whole list, sorted: every membership is answered.
    Whole(Arc<[UserId]>),
    /// The answers to the questions asked so far: is this member in the list?
    Asked(HashMap<UserId, bool>),
}

impl Members {
    fn of(stored: Option<Arc<[UserId]>>) -> Members {
        stored.map_or_else(|| Members::Asked(HashMap::new()), Members::Whole)
    }

    /// Whether `member` is in the list, if known.
    fn get(&self, member: &UserId) -> Option<bool> {
        match self {
            Members::Whole(list) => Some(list.binary_search(member).is_ok()),
            Members::Asked(answers) => answers.get(member).copied(),
        }
    }

    /// Entries this holds, towards [`PrivacyCacheConfig::max_entries`] (a whole list counts one
    /// per id).
    fn entries(&self) -> usize {
        match self {
            Members::Whole(list) => list.len(),
            Members::Asked(answers) => answers.len(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    users: HashMap<UserId, Cached>,
    entries: usize,
    /// Bumped by every invalidation.
    epoch: u64,
    /// The latest invalidations: (epoch, user), `None` for all.
    recent: VecDeque<(u64, Option<UserId>)>,
}

impl State {
    /// Whether what a read started at `start` learnt about `user` may be cached.
    fn fresh_since(&self, start: u64, user: &UserId) -> bool {
        if self.epoch == start {
            return true;
        }
        // Older than everything remembered: cannot tell.
        if self.recent.front().is_none_or(|(e, _)| *e > start + 1) {
            return false;
        }
        !self.recent.iter().any(|(e, u)| *e > start && u.as_ref().is_none_or(|u| u == user))
    }

    fn bump(&mut self, user: Option<UserId>) {
        self.epoch += 1;
        self.recent.push_back((self.epoch, user));
        if self.recent.len() > RECENT_INVALIDATIONS {
            self.recent.pop_front();
        }
    }
}

/// The cache; shared by the driver (reads) and the HTTP API and change feed (invalidations).
pub struct PrivacyCache {
    backend: Arc<dyn PrivacyBackend>,
    config: PrivacyCacheConfig,
    state: Mutex<State>,
}

impl std::fmt::Debug for PrivacyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivacyCache")
            .field("backend", &self.backend.kind())
            .field("config", &self.config)
            .finish()
    }
}

impl PrivacyCache {
    /// A cache over `backend`.
    pub fn new(backend: Arc<dyn PrivacyBackend>, config: PrivacyCacheConfig) -> Arc<PrivacyCache> {
        Arc::new(PrivacyCache { backend, config, state: Mutex::new(State::default()) })
    }

    /// The durable store behind the cache (the HTTP API writes through it).
    pub fn backend(&self) -> &Arc<dyn PrivacyBackend> {
        &self.backend
    }

    /// The settings of a user who never set any.
    pub fn default_settings(&self) -> Settings {
        Settings::default_with(self.config.default_last_seen)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the maps consistent, so a poisoned lock's data is fine.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops what is cached of `user` (its settings or contacts changed).
    pub fn invalidate(&self, user: &UserId) {
        let mut st = self.lock();
        if let Some(c) = st.users.remove(user) {
            st.entries = st.entries.saturating_sub(1 + c.members.entries());
        }
        st.bump(Some(user.clone()));
    }

    /// Drops everything (notices may have been lost).
    pub fn invalidate_all(&self) {
        let mut st = self.lock();
        st.users.clear();
        st.entries = 0;
        st.bump(None);
    }

    /// Executes the core's privacy op.
    pub fn execute(self: &Arc<Self>, op: PrivacyOp) -> StoreFuture {
        let cache = self.clone();
        Box::pin(async move {
            let PrivacyOp::Read { viewer, targets } = op;
            let limit = cache.config.op_timeout;
            with_timeout(limit, cache.read(viewer, targets)).await.map(StoreOutput::Privacy)
        })
    }

    /// The answer to a read from the cache alone, if it holds everything the rule needs: the
    /// driver's fast path (no task, no allocation but the answer's). `None` on any miss; the
    /// caller then runs [`PrivacyCache::execute`], which fills the cache. With the answer come the
    /// users whose entries are due for a refresh (usually none): the caller passes them to
    /// [`PrivacyCache::refresh`], off the query's path.
    pub fn read_cached(&self, op: &PrivacyOp) -> Option<(PrivacyAnswer, Vec<UserId>)> {
        let PrivacyOp::Read { viewer, targets } = op;
        let mut st = self.lock();
        let now = Instant::now();
        let ttl = self.config.ttl;
        let mut due: Vec<UserId> = Vec::new();
        let answer = {
            let mut get = |u: &UserId| {
                let c = st.users.get(u).filter(|c| now.duration_since(c.at) < ttl)?;
                if !c.refreshing && now.duration_since(c.at) >= ttl / 4 * 3 && !due.contains(u) {
                    due.push(u.clone());
                }
                Some(c)
            };
            Self::answer_cached(&mut get, viewer, targets)
        };
        let answer = answer?;
        for u in &due {
            if let Some(c) = st.users.get_mut(u) {
                c.refreshing = true;
            }
        }
        Some((answer, due))
    }

    /// [`PrivacyCache::read_cached`]'s answer, over `get` (the cached entry of a user, if fresh).
    fn answer_cached<'a>(
        get: &mut impl FnMut(&UserId) -> Option<&'a Cached>,
        viewer: &UserId,
        targets: &[UserId],
    ) -> Option<PrivacyAnswer> {
        let v = get(viewer)?;
        // As `read`: a membership is asked only where the rule looks at it, and of no one about
        // themselves (the answer for oneself is `false`, unused: oneself always sees).
        let member = |owner: &Cached, member: &UserId| -> Option<bool> {
            match needs_list(&owner.settings, member) {
                true => owner.members.get(member),
                false => Some(false),
            }
        };
        let mut out = Vec::with_capacity(targets.len());
        for t in targets {
            let c = get(t)?;
            let (has_viewer, viewer_has) =
                if t == viewer { (false, false) } else { (member(c, viewer)?, member(v, t)?) };
            out.push(TargetPrivacy { settings: c.settings.clone(), has_viewer, viewer_has });
        }
        Some(PrivacyAnswer { viewer: v.settings.clone(), targets: out })
    }

    /// Reads `users` from the backend again and replaces their entries, each only if no
    /// invalidation of it happened since the read started (as for any backend answer). Until then
    /// the old entries keep answering, within their TTL. On failure they stay as they are, and the
    /// next cached read that uses them asks again.
    pub async fn refresh(&self, users: Vec<UserId>) {
        let start = self.lock().epoch;
        let read = with_timeout(self.config.op_timeout, self.backend.read_users(users.clone())).await;
        let mut st = self.lock();
        // A failed or misshapen read answers no one: every entry then just leaves the refresh.
        let mut stored = match read {
            Ok(stored) if stored.len() == users.len() => Some(stored.into_iter()),
            _ => None,
        };
        let now = Instant::now();
        for u in users {
            match stored.as_mut().and_then(Iterator::next) {
                Some(s) if st.fresh_since(start, &u) => {
                    self.fill(&mut st, u, s, now);
                }
                _ => {
                    if let Some(c) = st.users.get_mut(&u) {
                        c.refreshing = false;
                    }
                }
            }
        }
    }

    /// Caches what the backend answered for `u` (read at `now`), replacing any entry; returns its
    /// settings.
    fn fill(&self, st: &mut State, u: UserId, s: StoredUser, now: Instant) -> Arc<Settings> {
        let settings = Arc::new(s.settings.unwrap_or_else(|| self.default_settings()));
        let members = Members::of(s.contacts);
        let size = 1 + members.entries();
        self.make_room(st, size);
        let cached = Cached { at: now, refreshing: false, settings: settings.clone(), list: s.list, members };
        if let Some(old) = st.users.insert(u, cached) {
            st.entries = st.entries.saturating_sub(1 + old.members.entries());
        }
        st.entries += size;
        settings
    }

    /// The settings of `viewer` and `targets` and the memberships the rule needs.
    pub async fn read(&self, viewer: UserId, targets: Vec<UserId>) -> Result<PrivacyAnswer, StoreError> {
        let start = self.lock().epoch;
        let mut wanted: Vec<UserId> = targets.clone();
        wanted.push(viewer.clone());
        wanted.sort_unstable();
        wanted.dedup();
        let settings = self.users(start, &wanted).await?;
        let of = |u: &UserId| settings.get(u).cloned().ok_or_else(|| missing(u));
        let viewer_settings = of(&viewer)?;
        // The memberships the rule will look at: only for a `contacts` audience, and not for an
        // id the `except` list hides anyway.
        let mut questions: Vec<(UserId, UserId)> = Vec::new();
        for t in targets.iter().filter(|t| **t != viewer) {
            let (ts, _) = of(t)?;
            if needs_list(&ts, &viewer) {
                questions.push((t.clone(), viewer.clone()));
            }
            if needs_list(&viewer_settings.0, t) {
                questions.push((viewer.clone(), t.clone()));
            }
        }
        let answers = self.memberships(start, &settings, questions).await?;
        let has = |owner: &UserId, member: &UserId| {
            answers.get(&(owner.clone(), member.clone())).copied().unwrap_or(false)
        };
        let mut out = Vec::with_capacity(targets.len());
        for t in &targets {
            let (settings, _) = of(t)?;
            out.push(TargetPrivacy { settings, has_viewer: has(t, &viewer), viewer_has: has(&viewer, t) });
        }
        Ok(PrivacyAnswer { viewer: viewer_settings.0, targets: out })
    }

    /// Settings and list version of each of `users`, from the cache or the backend.
    async fn users(
        &self,
        start: u64,
        users: &[UserId],
    ) -> Result<BTreeMap<UserId, (Arc<Settings>, u64)>, StoreError> {
        let mut found = BTreeMap::new();
        let mut misses = Vec::new();
        {
            let st = self.lock();
            let now = Instant::now();
            for u in users {
                match st.users.get(u).filter(|c| now.duration_since(c.at) < self.config.ttl) {
                    Some(c) => {
                        found.insert(u.clone(), (c.settings.clone(), c.list));
                    }
                    None => misses.push(u.clone()),
                }
            }
        }
        if misses.is_empty() {
            return Ok(found);
        }
        let stored = self.backend.read_users(misses.clone()).await?;
        if stored.len() != misses.len() {
            return Err(StoreError::Unavailable("privacy store answered with the wrong shape".to_owned()));
        }
        let mut st = self.lock();
        let now = Instant::now();
        for (u, s) in misses.into_iter().zip(stored) {
            let list = s.list;
            let settings = if st.fresh_since(start, &u) {
                self.fill(&mut st, u.clone(), s, now)
            } else {
                Arc::new(s.settings.unwrap_or_else(|| self.default_settings()))
            };
            found.insert(u, (settings, list));
        }
        Ok(found)
    }

    /// The answers to `questions` (owner, member), from the cache or the backend.
    async fn memberships(
        &self,
        start: u64,
        settings: &BTreeMap<UserId, (Arc<Settings>, u64)>,
        questions: Vec<(UserId, UserId)>,
    ) -> Result<HashMap<(UserId, UserId), bool>, StoreError> {
        let mut answers = HashMap::new();
        let mut misses = Vec::new();
        {
            let st = self.lock();
            for (owner, member) in questions {
                let list = settings.get(&owner).map_or(0, |s| s.1);
                let cached =
                    st.users.get(&owner).filter(|c| c.list == list).and_then(|c| c.members.get(&member));
                match cached {
                    Some(yes) => {
                        answers.insert((owner, member), yes);
                    }
                    None => misses.push(Membership { owner, list, member }),
                }
            }
        }
        if misses.is_empty() {
            return Ok(answers);
        }
        let got = self.backend.read_memberships(misses.clone()).await?;
        if got.len() != misses.len() {
            return Err(StoreError::Unavailable("privacy store answered with the wrong shape".to_owned()));
        }
        let mut st = self.lock();
        for (m, yes) in misses.into_iter().zip(got) {
            if st.fresh_since(start, &m.owner) {
                let added = match st.users.get_mut(&m.owner).map(|c| (c.list == m.list, &mut c.members)) {
                    Some((true, Members::Asked(answers))) => answers.insert(m.member.clone(), yes).is_none(),
                    _ => false,
                };
                if added {
                    st.entries += 1;
                    self.make_room(&mut st, 0);
                }
            }
            answers.insert((m.owner, m.member), yes);
        }
        Ok(answers)
    }

    /// Empties the cache if `extra` more entries would pass the bound.
    fn make_room(&self, st: &mut State, extra: usize) {
        if st.entries + extra > self.config.max_entries {
            st.users.clear();
            st.entries = 0;
        }
    }
}

/// Whether `owner`'s rule for `other` depends on `owner`'s contact list.
fn needs_list(owner: &Settings, other: &UserId) -> bool {
    owner.last_seen == LastSeenAudience::Contacts && !owner.except.contains(other)
}

fn missing(u: &UserId) -> StoreError {
    StoreError::Unavailable(format!("privacy settings of {u} missing from the answer"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use presence_core::privacy::OnlineAudience;

    use super::*;
    use crate::privacy::{MemoryPrivacy, WHOLE_LIST_MAX};

    fn u(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    fn read_op(viewer: &str, targets: &[&str]) -> PrivacyOp {
        PrivacyOp::Read { viewer: u(viewer), targets: targets.iter().map(|t| u(t)).collect() }
    }

    /// Alice (contacts only, lists Bob) and Bob (contacts only, except Eve, lists Alice and Eve),
    /// over a backend that returns lists of at most `whole_lists` ids whole.
    async fn setup(whole_lists: Option<usize>) -> (Arc<MemoryPrivacy>, Arc<PrivacyCache>) {
        let backend = Arc::new(MemoryPrivacy::new().with_whole_lists(whole_lists));
        let contacts = |s: &[&str]| s.iter().map(|t| u(t)).collect::<BTreeSet<_>>();
        let only_contacts = Settings {
            last_seen: LastSeenAudience::Contacts,
            online: OnlineAudience::SameAsLastSeen,
            except: BTreeSet::new(),
        };
        backend.put_settings(u("alice"), only_contacts.clone()).await.unwrap();
        backend.put_contacts(u("alice"), contacts(&["bob"])).await.unwrap();
        let mut hides_eve = only_contacts;
        hides_eve.except.insert(u("eve"));
        backend.put_settings(u("bob"), hides_eve).await.unwrap();
        backend.put_contacts(u("bob"), contacts(&["alice", "eve"])).await.unwrap();
        let cache = PrivacyCache::new(backend.clone(), PrivacyCacheConfig::default());
        (backend, cache)
    }

    /// The fast path's answer, without the users it names for a refresh.
    fn cached(cache: &PrivacyCache, op: &PrivacyOp) -> Option<PrivacyAnswer> {
        cache.read_cached(op).map(|(answer, _)| answer)
    }

    async fn read(cache: &Arc<PrivacyCache>, op: &PrivacyOp) -> PrivacyAnswer {
        match cache.execute(op.clone()).await {
            Ok(StoreOutput::Privacy(answer)) => answer,
            other => panic!("privacy read failed: {other:?}"),
        }
    }

    /// The fast path answers exactly what the full read answers, once the full read has filled
    /// the cache, and nothing before; with lists asked member by member.
    #[tokio::test]
    async fn cached_reads_answer_as_the_full_read() {
        let (_backend, cache) = setup(None).await;
        let ops = [
            read_op("bob", &["alice", "eve", "bob", "carol"]),
            read_op("alice", &["bob", "carol"]),
            read_op("eve", &["bob", "alice"]),
            read_op("carol", &["alice", "alice"]),
        ];
        for (i, op) in ops.iter().enumerate() {
            // Carol's read needs nothing the reads before it did not cache (her settings, and
            // "is Carol in Alice's list"): the fast path has it already.
            let before = cached(&cache, op);
            assert_eq!(before.is_some(), i == 3, "{op:?}");
            let full = read(&cache, op).await;
            assert!(before.is_none_or(|b| b == full), "{op:?}");
            assert_eq!(cached(&cache, op), Some(full), "{op:?}");
        }
        // Bob is in Alice's list and Alice in Bob's; Eve is in Bob's list but excepted, so the
        // rule never asks about her membership.
        let answer = cached(&cache, &ops[0]).unwrap();
        let flags: Vec<(bool, bool)> = answer.targets.iter().map(|t| (t.has_viewer, t.viewer_has)).collect();
        assert_eq!(flags, vec![(true, true), (false, false), (false, false), (false, false)]);
    }

    /// An entry past three quarters of its TTL is still answered from, named for a refresh once
    /// (not again while that refresh is in flight), and the refresh replaces it with what the
    /// backend holds now, with a new TTL. Entries not yet due are not named.
    #[tokio::test(start_paused = true)]
    async fn entries_near_their_ttl_are_refreshed_ahead() {
        let (backend, old) = setup(Some(WHOLE_LIST_MAX)).await;
        let config = PrivacyCacheConfig { ttl: Duration::from_secs(100), ..PrivacyCacheConfig::default() };
        drop(old);
        let cache = PrivacyCache::new(backend.clone(), config);
        let op = read_op("bob", &["alice", "bob"]);
        let first = read(&cache, &op).await;
        assert_eq!(cache.read_cached(&op), Some((first.clone(), vec![])));
        tokio::time::advance(Duration::from_secs(74)).await;
        assert_eq!(cache.read_cached(&op).map(|(_, due)| due), Some(vec![]), "not due before 3/4 of the TTL");
        tokio::time::advance(Duration::from_secs(2)).await;
        let (answer, due) = cache.read_cached(&op).expect("still within the TTL");
        assert_eq!((answer, due.clone()), (first.clone(), vec![u("bob"), u("alice")]));
        assert_eq!(cache.read_cached(&op).map(|(_, due)| due), Some(vec![]), "one refresh in flight");
        // Alice's list changes and the notice is lost: the refresh still reads what is stored.
        backend.put_contacts(u("alice"), BTreeSet::new()).await.unwrap();
        cache.refresh(due).await;
        // Past the first read's TTL, the refreshed entries answer, with Alice's new list.
        tokio::time::advance(Duration::from_secs(30)).await;
        let (answer, due) = cache.read_cached(&op).expect("refreshed: a new TTL");
        assert!(!answer.targets[0].has_viewer, "the refresh read Alice's new, empty list");
        assert_eq!(due, vec![]);
        // Unused entries are not refreshed: past their TTL they are a miss as before.
        tokio::time::advance(Duration::from_secs(71)).await;
        assert_eq!(cached(&cache, &op), None);
    }

    /// A membership the cache never answered is a miss, even if the owner's settings are cached.
    #[tokio::test]
    async fn an_unasked_membership_is_a_miss() {
        let (_backend, cache) = setup(None).await;
        read(&cache, &read_op("bob", &["alice"])).await;
        assert!(cached(&cache, &read_op("bob", &["alice"])).is_some());
        // Carol's settings are not cached, nor Alice's answer about Carol.
        assert_eq!(cached(&cache, &read_op("carol", &["alice"])), None);
        read(&cache, &read_op("carol", &["bob"])).await;
        // Now Carol and Alice are both cached, but not "is Carol in Alice's list".
        assert_eq!(cached(&cache, &read_op("carol", &["alice"])), None);
    }

    /// An invalidation, of one user or of everything, turns the fast path into a miss.
    #[tokio::test]
    async fn invalidations_end_the_fast_path() {
        for whole_lists in [None, Some(WHOLE_LIST_MAX)] {
            invalidations_end_the_fast_path_with(whole_lists).await;
        }
    }

    async fn invalidations_end_the_fast_path_with(whole_lists: Option<usize>) {
        let (backend, cache) = setup(whole_lists).await;
        let op = read_op("bob", &["alice"]);
        read(&cache, &op).await;
        backend.put_contacts(u("alice"), BTreeSet::new()).await.unwrap();
        cache.invalidate(&u("alice"));
        assert_eq!(cached(&cache, &op), None);
        let after = read(&cache, &op).await;
        assert!(!after.targets[0].has_viewer, "Alice's new, empty list is read");
        assert_eq!(cached(&cache, &op), Some(after));
        cache.invalidate_all();
        assert_eq!(cached(&cache, &op), None);
    }

    /// With whole lists, one read of a user's settings answers every later question about its
    /// list: Carol's first read is answered from the cache once Alice and Carol are cached, and
    /// the cache holds one entry per user plus one per listed id, not one per question.
    #[tokio::test]
    async fn a_whole_list_answers_questions_never_asked() {
        let (_backend, cache) = setup(Some(WHOLE_LIST_MAX)).await;
        read(&cache, &read_op("bob", &["alice"])).await;
        read(&cache, &read_op("carol", &["bob"])).await;
        let op = read_op("carol", &["alice"]);
        let fast = cached(&cache, &op).expect("answered from the whole lists");
        assert_eq!(fast, read(&cache, &op).await);
        assert_eq!((fast.targets[0].has_viewer, fast.targets[0].viewer_has), (false, false));
        let bob_sees = cached(&cache, &read_op("bob", &["alice", "eve"])).is_none();
        assert!(bob_sees, "Eve's settings were never read");
        // Alice (1 + her 1 contact), Bob (1 + 2), Carol (1 + 0).
        assert_eq!(cache.lock().entries, 6);
    }

    /// A list longer than the backend returns whole is asked member by member, and a stale
    /// whole list is never used: after Alice's list changes (and the notice), the new one is read.
    #[tokio::test]
    async fn long_lists_are_asked_and_whole_lists_follow_changes() {
        let (backend, cache) = setup(Some(1)).await;
        let op = read_op("alice", &["bob"]);
        // Bob lists two: asked; Alice lists one: whole.
        let first = read(&cache, &op).await;
        assert_eq!((first.targets[0].has_viewer, first.targets[0].viewer_has), (true, true));
        assert_eq!(cached(&cache, &op), Some(first));
        assert_eq!(cached(&cache, &read_op("alice", &["bob", "alice"])).map(|a| a.targets.len()), Some(2));
        backend.put_contacts(u("alice"), BTreeSet::from([u("carol")])).await.unwrap();
        cache.invalidate(&u("alice"));
        let after = read(&cache, &op).await;
        assert_eq!((after.targets[0].has_viewer, after.targets[0].viewer_has), (true, false));
        assert_eq!(cached(&cache, &op), Some(after));
    }
}
