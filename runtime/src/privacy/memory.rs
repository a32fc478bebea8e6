//! An in-process privacy backend: settings and contact lists in a map behind a mutex. For tests
//! and the simulator (where it plays the durable store, shared by the simulated servers), and the
//! reference the other backends' tests compare with. Lists are updated in place, so the list
//! version is unused (always 0). Lists of at most [`MemoryPrivacy::with_whole_lists`] ids
//! (default [`WHOLE_LIST_MAX`]) are returned whole by `read_users`; the simulator varies the
//! bound per seed so both of the cache's membership paths run among the faults.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use presence_core::privacy::Settings;
use presence_core::store::StoreError;
use presence_core::user::UserId;

use super::{BackendFuture, ContactsError, Membership, PrivacyBackend, StoredUser, WHOLE_LIST_MAX};

#[derive(Debug, Default)]
struct UserPrivacy {
    settings: Option<Settings>,
    contacts: BTreeSet<UserId>,
}

/// The in-process backend. Clones share the data.
#[derive(Clone, Debug)]
pub struct MemoryPrivacy {
    users: Arc<Mutex<HashMap<UserId, UserPrivacy>>>,
    /// While set, every call fails as `Unavailable` (the simulator's outage windows).
    down: Arc<std::sync::atomic::AtomicBool>,
    /// The longest list `read_users` returns whole; `None`: none.
    whole_lists: Option<usize>,
}

impl Default for MemoryPrivacy {
    fn default() -> MemoryPrivacy {
        MemoryPrivacy { users: Arc::default(), down: Arc::default(), whole_lists: Some(WHOLE_LIST_MAX) }
    }
}

impl MemoryPrivacy {
    /// An empty store.
    pub fn new() -> MemoryPrivacy {
        MemoryPrivacy::default()
    }

    /// Returns lists of at most `max` ids whole from `read_users` (at most [`WHOLE_LIST_MAX`];
    /// `None`: never, so every membership is asked).
    pub fn with_whole_lists(mut self, max: Option<usize>) -> MemoryPrivacy {
        self.whole_lists = max.map(|m| m.min(WHOLE_LIST_MAX));
        self
    }

    /// Makes every call fail (`true`) or succeed again (`false`).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<UserId, UserPrivacy>> {
        // A panic while holding the lock leaves the map consistent (every change is one insert).
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Unavailable("privacy store down".to_owned()));
        }
        Ok(())
    }

    fn done<T: Send + 'static>(result: T) -> BackendFuture<T> {
        Box::pin(std::future::ready(result))
    }
}

impl PrivacyBackend for MemoryPrivacy {
    fn read_users(&self, users: Vec<UserId>) -> BackendFuture<Result<Vec<StoredUser>, StoreError>> {
        let result = self.check().map(|()| {
            let map = self.lock();
            users
                .iter()
                .map(|u| {
                    let p = map.get(u);
                    let list = p.map(|p| &p.contacts);
                    let len = list.map_or(0, BTreeSet::len);
                    StoredUser {
                        settings: p.and_then(|p| p.settings.clone()),
                        list: 0,
                        contacts: self
                            .whole_lists
                            .is_some_and(|max| len <= max)
                            .then(|| list.into_iter().flatten().cloned().collect()),
                    }
                })
                .collect()
        });
        Self::done(result)
    }

    fn read_memberships(&self, pairs: Vec<Membership>) -> BackendFuture<Result<Vec<bool>, StoreError>> {
        let result = self.check().map(|()| {
            let map = self.lock();
            pairs.iter().map(|m| map.get(&m.owner).is_some_and(|p| p.contacts.contains(&m.member))).collect()
        });
        Self::done(result)
    }

    fn contacts(&self, user: UserId) -> BackendFuture<Result<Vec<UserId>, StoreError>> {
        let result = self.check().map(|()| {
            self.lock().get(&user).map(|p| p.contacts.iter().cloned().collect()).unwrap_or_default()
        });
        Self::done(result)
    }

    fn put_settings(&self, user: UserId, settings: Settings) -> BackendFuture<Result<(), StoreError>> {
        let result = self.check().map(|()| {
            self.lock().entry(user).or_default().settings = Some(settings);
        });
        Self::done(result)
    }

    fn put_contacts(
        &self,
        user: UserId,
        contacts: BTreeSet<UserId>,
    ) -> BackendFuture<Result<(), ContactsError>> {
        let result = self.check().map_err(ContactsError::from).map(|()| {
            self.lock().entry(user).or_default().contacts = contacts;
        });
        Self::done(result)
    }

    fn patch_contacts(
        &self,
        user: UserId,
        add: BTreeSet<UserId>,
        remove: BTreeSet<UserId>,
        max: usize,
    ) -> BackendFuture<Result<usize, ContactsError>> {
        let result = self.check().map_err(ContactsError::from).and_then(|()| {
            let mut map = self.lock();
            let entry = map.entry(user).or_default();
            let next = patched(&entry.contacts, &add, &remove);
            if next.len() > max {
                return Err(ContactsError::TooMany { max, would: next.len() });
            }
            entry.contacts = next;
            Ok(entry.contacts.len())
        });
        Self::done(result)
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

/// `list` with `add` added, then `remove` removed (an id in both ends up removed).
pub(crate) fn patched(
    list: &BTreeSet<UserId>,
    add: &BTreeSet<UserId>,
    remove: &BTreeSet<UserId>,
) -> BTreeSet<UserId> {
    list.union(add).filter(|u| !remove.contains(*u)).cloned().collect()
}
