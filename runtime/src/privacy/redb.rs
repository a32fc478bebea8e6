//! The embedded privacy backend: settings and contact lists in the redb file of the embedded
//! durable store (`<data-dir>/presence.redb`, [`RedbDurable`]), beside its `last_seen` table.
//!
//! redb allows one open per file, so this backend does not open the file itself: it shares the
//! [`redb::Database`] of a [`RedbDurable`] ([`RedbDurable::privacy`]). Two tables, created when the
//! file is opened (a read transaction cannot create them):
//!
//! | table      | key                        | value | role                                    |
//! |------------|----------------------------|-------|-----------------------------------------|
//! | `settings` | user id                    | text  | the settings as the API's JSON ([`settings_to_stored`]) |
//! | `contacts` | (owner id, contact id)     | `()`  | one row per contact: membership is one `get`, the list a range scan |
//!
//! Lists are updated in place, so the list version is always 0 (the trait allows that: one write
//! transaction replaces a list, and a reader's snapshot sees it whole or not at all).
//!
//! Every change runs in one write transaction and is durable (fsync'd on commit) before the call
//! returns: a `PUT` of the list removes and inserts the difference in one commit, and a `PATCH`
//! reads the list, checks the limit and writes inside the same transaction, so concurrent changes
//! cannot interleave. A stored settings text that does not parse fails the read as
//! [`StoreError::Unavailable`] (fail closed: the defaults could show more than the user chose).
//!
//! redb's API is blocking: each call runs on tokio's blocking pool, bounded by the op timeout like
//! [`RedbDurable`]'s ops (a timed-out call keeps running and may still commit, which is what
//! [`StoreError::Timeout`] means).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use presence_core::privacy::Settings;
use presence_core::store::StoreError;
use presence_core::user::UserId;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::json::{settings_from_stored, settings_to_stored};
use super::memory::patched;
use super::{BackendFuture, ContactsError, Membership, PrivacyBackend, StoredUser, WHOLE_LIST_MAX};
use crate::store::with_timeout;
#[cfg(doc)]
use crate::store::RedbDurable;

/// user id -> the settings' stored JSON text.
const SETTINGS: TableDefinition<'static, &str, &str> = TableDefinition::new("settings");
/// (owner, contact) -> (): one row per contact of each list.
const CONTACTS: TableDefinition<'static, (&str, &str), ()> = TableDefinition::new("contacts");

/// Creates the privacy tables if missing (called by [`RedbDurable`] when it opens the file).
pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(SETTINGS)?;
    txn.open_table(CONTACTS)?;
    Ok(())
}

/// The embedded privacy backend over the database of a [`RedbDurable`]. Clones share it.
#[derive(Clone)]
pub struct RedbPrivacy {
    /// Shared with the durable store and the blocking tasks.
    db: Arc<Database>,
    /// Bound on each call, including the wait for a blocking-pool thread.
    op_timeout: Duration,
}

/// Why a blocking call failed: redb itself, or a stored value we refuse to interpret.
enum Failure {
    Redb(redb::Error),
    /// Already logged; becomes `Unavailable` with this message.
    Corrupt(String),
    TooMany {
        max: usize,
        would: usize,
    },
}

impl<E: Into<redb::Error>> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure::Redb(e.into())
    }
}

impl RedbPrivacy {
    /// The backend over `db`, whose tables [`create_tables`] made. Use [`RedbDurable::privacy`].
    pub(crate) fn new(db: Arc<Database>, op_timeout: Duration) -> RedbPrivacy {
        RedbPrivacy { db, op_timeout }
    }

    /// Runs `f` on the blocking pool within the op timeout, mapping failures to the trait's errors.
    fn run<T, F>(&self, f: F) -> BackendFuture<Result<T, ContactsError>>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, Failure> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        let limit = self.op_timeout;
        Box::pin(async move {
            let task = tokio::task::spawn_blocking(move || f(&db));
            let joined = with_timeout(limit, async {
                task.await.map_err(|e| StoreError::Unavailable(format!("redb task failed: {e}")))
            })
            .await;
            match joined {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(Failure::TooMany { max, would })) => Err(ContactsError::TooMany { max, would }),
                Ok(Err(Failure::Corrupt(message))) => Err(StoreError::Unavailable(message).into()),
                Ok(Err(Failure::Redb(e))) => {
                    tracing::warn!(error = %e, "redb privacy operation failed");
                    Err(StoreError::Unavailable(format!("redb: {e}")).into())
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    /// Like [`RedbPrivacy::run`] for the calls that cannot be refused for the limit.
    fn run_store<T, F>(&self, f: F) -> BackendFuture<Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, Failure> + Send + 'static,
    {
        let fut = self.run(f);
        Box::pin(async move {
            fut.await.map_err(|e| match e {
                ContactsError::Store(e) => e,
                // `f` never returns TooMany here; keep the mapping total anyway.
                other @ ContactsError::TooMany { .. } => StoreError::Unavailable(other.to_string()),
            })
        })
    }
}

/// The stored settings of `user`, parsed; unparseable text fails closed (logged with the user
/// id only: the text may name other users).
fn parse_settings(user: &UserId, text: &str) -> Result<Settings, Failure> {
    settings_from_stored(text).ok_or_else(|| {
        tracing::warn!(user = %user, "unparseable privacy settings in redb: the user's privacy is unavailable");
        Failure::Corrupt(format!("stored privacy settings of {user} do not parse"))
    })
}

/// `owner`'s contacts, in key order (String order: redb compares `&str` keys bytewise).
fn read_list(
    table: &impl ReadableTable<(&'static str, &'static str), ()>,
    owner: &str,
) -> Result<BTreeSet<UserId>, Failure> {
    let mut list = BTreeSet::new();
    read_rows(table, owner, usize::MAX, |contact| {
        list.insert(contact);
    })?;
    Ok(list)
}

/// `owner`'s contacts if there are at most `max`, in key order; `None` if there are more (only
/// `max + 1` rows are read).
fn read_short_list(
    table: &impl ReadableTable<(&'static str, &'static str), ()>,
    owner: &str,
    max: usize,
) -> Result<Option<Vec<UserId>>, Failure> {
    let mut list = Vec::new();
    let complete = read_rows(table, owner, max + 1, |contact| list.push(contact))? <= max;
    Ok(complete.then_some(list))
}

/// Feeds up to `most` of `owner`'s contacts to `each`, in key order; how many it fed.
fn read_rows(
    table: &impl ReadableTable<(&'static str, &'static str), ()>,
    owner: &str,
    most: usize,
    mut each: impl FnMut(UserId),
) -> Result<usize, Failure> {
    let mut n = 0;
    // All rows of `owner` sort together and start at (owner, ""): no id is smaller than "".
    for row in table.range((owner, "")..)? {
        if n == most {
            break;
        }
        let (key, _) = row?;
        let (row_owner, contact) = key.value();
        if row_owner != owner {
            break;
        }
        let contact = UserId::new(contact).map_err(|_| {
            tracing::warn!(user = owner, "invalid contact id in redb: the user's contacts are unavailable");
            Failure::Corrupt(format!("a stored contact of {owner} is not a valid user id"))
        })?;
        each(contact);
        n += 1;
    }
    Ok(n)
}

/// Makes `owner`'s rows equal to `next`, given the current rows `current` (only the difference
/// is written).
fn write_list(
    table: &mut redb::Table<'_, (&'static str, &'static str), ()>,
    owner: &str,
    current: &BTreeSet<UserId>,
    next: &BTreeSet<UserId>,
) -> Result<(), Failure> {
    for gone in current.difference(next) {
        table.remove((owner, gone.as_str()))?;
    }
    for new in next.difference(current) {
        table.insert((owner, new.as_str()), ())?;
    }
    Ok(())
}

impl PrivacyBackend for RedbPrivacy {
    fn read_users(&self, users: Vec<UserId>) -> BackendFuture<Result<Vec<StoredUser>, StoreError>> {
        self.run_store(move |db| {
            // One read snapshot for all users, settings and short lists alike.
            let txn = db.begin_read()?;
            let table = txn.open_table(SETTINGS)?;
            let lists = txn.open_table(CONTACTS)?;
            users
                .iter()
                .map(|u| {
                    let settings = match table.get(u.as_str())? {
                        Some(text) => Some(parse_settings(u, text.value())?),
                        None => None,
                    };
                    let contacts = read_short_list(&lists, u.as_str(), WHOLE_LIST_MAX)?.map(Arc::from);
                    Ok(StoredUser { settings, list: 0, contacts })
                })
                .collect()
        })
    }

    fn read_memberships(&self, pairs: Vec<Membership>) -> BackendFuture<Result<Vec<bool>, StoreError>> {
        self.run_store(move |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(CONTACTS)?;
            // The version is ignored: lists are updated in place, always version 0.
            pairs.iter().map(|m| Ok(table.get((m.owner.as_str(), m.member.as_str()))?.is_some())).collect()
        })
    }

    fn contacts(&self, user: UserId) -> BackendFuture<Result<Vec<UserId>, StoreError>> {
        self.run_store(move |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(CONTACTS)?;
            Ok(read_list(&table, user.as_str())?.into_iter().collect())
        })
    }

    fn put_settings(&self, user: UserId, settings: Settings) -> BackendFuture<Result<(), StoreError>> {
        self.run_store(move |db| {
            let txn = db.begin_write()?;
            txn.open_table(SETTINGS)?.insert(user.as_str(), settings_to_stored(&settings).as_str())?;
            txn.commit()?;
            Ok(())
        })
    }

    fn put_contacts(
        &self,
        user: UserId,
        contacts: BTreeSet<UserId>,
    ) -> BackendFuture<Result<(), ContactsError>> {
        self.run(move |db| {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(CONTACTS)?;
                let current = read_list(&table, user.as_str())?;
                write_list(&mut table, user.as_str(), &current, &contacts)?;
            }
            txn.commit()?;
            Ok(())
        })
    }

    fn patch_contacts(
        &self,
        user: UserId,
        add: BTreeSet<UserId>,
        remove: BTreeSet<UserId>,
        max: usize,
    ) -> BackendFuture<Result<usize, ContactsError>> {
        self.run(move |db| {
            let txn = db.begin_write()?;
            let len = {
                let mut table = txn.open_table(CONTACTS)?;
                let current = read_list(&table, user.as_str())?;
                let next = patched(&current, &add, &remove);
                if next.len() > max {
                    // Dropping the transaction aborts it: nothing changed.
                    return Err(Failure::TooMany { max, would: next.len() });
                }
                write_list(&mut table, user.as_str(), &current, &next)?;
                next.len()
            };
            txn.commit()?;
            Ok(len)
        })
    }

    fn kind(&self) -> &'static str {
        "redb"
    }
}

#[cfg(test)]
mod tests {
    use crate::test_dir::TempDir;

    use presence_core::privacy::{LastSeenAudience, OnlineAudience};

    use super::*;
    use crate::store::RedbDurable;

    fn user(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    fn set(ids: &[&str]) -> BTreeSet<UserId> {
        ids.iter().map(|s| user(s)).collect()
    }

    fn ask(owner: &str, member: &str) -> Membership {
        Membership { owner: user(owner), list: 0, member: user(member) }
    }

    fn settings(except: &[&str]) -> Settings {
        Settings {
            last_seen: LastSeenAudience::Contacts,
            online: OnlineAudience::Everyone,
            except: set(except),
        }
    }

    #[tokio::test]
    async fn settings_and_lists_round_trip_and_survive_a_reopen() {
        let dir = TempDir::new("privacy-redb");
        {
            let durable = RedbDurable::open(dir.path()).unwrap();
            let p = durable.privacy();
            assert_eq!(p.kind(), "redb");
            assert_eq!(p.read_users(vec![user("bob")]).await.unwrap(), vec![StoredUser::never_set()]);
            p.put_settings(user("bob"), settings(&["eve"])).await.unwrap();
            p.put_contacts(user("bob"), set(&["carl", "amy", "Zed"])).await.unwrap();
            p.put_contacts(user("amy"), set(&["bob"])).await.unwrap();
            // Short lists come whole, sorted, with the settings.
            let whole = |ids: &[&str]| Some(ids.iter().map(|u| user(u)).collect());
            let bob = StoredUser {
                settings: Some(settings(&["eve"])),
                list: 0,
                contacts: whole(&["Zed", "amy", "carl"]),
            };
            let amy = StoredUser { settings: None, list: 0, contacts: whole(&["bob"]) };
            assert_eq!(
                p.read_users(vec![user("bob"), user("amy"), user("bob")]).await.unwrap(),
                vec![bob.clone(), amy, bob]
            );
        }
        let durable = RedbDurable::open(dir.path()).unwrap();
        let p = durable.privacy();
        assert_eq!(p.read_users(vec![user("bob")]).await.unwrap()[0].settings, Some(settings(&["eve"])));
        // Sorted in String order (uppercase first), and only bob's rows.
        assert_eq!(p.contacts(user("bob")).await.unwrap(), vec![user("Zed"), user("amy"), user("carl")]);
        assert_eq!(p.contacts(user("nobody")).await.unwrap(), Vec::<UserId>::new());
        let asks = vec![
            ask("bob", "amy"),
            ask("bob", "bob"),
            ask("amy", "bob"),
            ask("amy", "carl"),
            ask("x", "amy"),
        ];
        assert_eq!(p.read_memberships(asks).await.unwrap(), vec![true, false, true, false, false]);
    }

    #[tokio::test]
    async fn put_replaces_and_patch_checks_the_limit() {
        let dir = TempDir::new("privacy-redb-patch");
        let durable = RedbDurable::open(dir.path()).unwrap();
        let p = durable.privacy();
        p.put_contacts(user("bob"), set(&["a", "b", "c"])).await.unwrap();
        p.put_contacts(user("bob"), set(&["c", "d"])).await.unwrap();
        assert_eq!(p.contacts(user("bob")).await.unwrap(), vec![user("c"), user("d")]);
        assert_eq!(
            p.read_memberships(vec![ask("bob", "a"), ask("bob", "d")]).await.unwrap(),
            vec![false, true]
        );

        // An id in both add and remove ends up removed.
        assert_eq!(p.patch_contacts(user("bob"), set(&["e", "f"]), set(&["c", "f"]), 3).await, Ok(2));
        assert_eq!(p.contacts(user("bob")).await.unwrap(), vec![user("d"), user("e")]);
        let refused = p.patch_contacts(user("bob"), set(&["g", "h"]), BTreeSet::new(), 3).await;
        assert_eq!(refused, Err(ContactsError::TooMany { max: 3, would: 4 }));
        assert_eq!(p.contacts(user("bob")).await.unwrap(), vec![user("d"), user("e")]);
        assert_eq!(p.patch_contacts(user("bob"), BTreeSet::new(), set(&["d", "e", "x"]), 3).await, Ok(0));
        assert_eq!(p.contacts(user("bob")).await.unwrap(), Vec::<UserId>::new());
    }

    /// A list one longer than [`WHOLE_LIST_MAX`] is not returned whole; one of that length is.
    #[tokio::test]
    async fn only_short_lists_come_whole() {
        let dir = TempDir::new("privacy-redb-short");
        let durable = RedbDurable::open(dir.path()).unwrap();
        let p = durable.privacy();
        let ids: Vec<String> = (0..=WHOLE_LIST_MAX).map(|i| format!("c{i:03}")).collect();
        let all: Vec<&str> = ids.iter().map(String::as_str).collect();
        p.put_contacts(user("amy"), set(&all[..WHOLE_LIST_MAX])).await.unwrap();
        p.put_contacts(user("bob"), set(&all)).await.unwrap();
        // The user after bob in key order has rows too: bob's scan must stop at his own.
        p.put_contacts(user("bobby"), set(&["x"])).await.unwrap();
        let read = p.read_users(vec![user("amy"), user("bob"), user("bobby")]).await.unwrap();
        let lens: Vec<Option<usize>> = read.iter().map(|u| u.contacts.as_ref().map(|c| c.len())).collect();
        assert_eq!(lens, vec![Some(WHOLE_LIST_MAX), None, Some(1)]);
        assert_eq!(read[0].contacts.as_deref().unwrap()[0], user("c000"));
    }

    #[tokio::test]
    async fn unparseable_settings_fail_closed() {
        let dir = TempDir::new("privacy-redb-corrupt");
        let durable = RedbDurable::open(dir.path()).unwrap();
        let p = durable.privacy();
        {
            let txn = p.db.begin_write().unwrap();
            txn.open_table(SETTINGS).unwrap().insert("bob", r#"{"last_seen":"sometimes"}"#).unwrap();
            txn.commit().unwrap();
        }
        let r = p.read_users(vec![user("amy"), user("bob")]).await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        // Another user alone still reads.
        assert_eq!(p.read_users(vec![user("amy")]).await.unwrap(), vec![StoredUser::never_set()]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_patches_all_land() {
        let dir = TempDir::new("privacy-redb-race");
        let durable = RedbDurable::open(dir.path()).unwrap();
        let p = durable.privacy();
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let p = p.clone();
                tokio::spawn(async move {
                    p.patch_contacts(user("bob"), set(&[&format!("u{i:02}")]), BTreeSet::new(), 100).await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let want: Vec<UserId> = (0..20).map(|i| user(&format!("u{i:02}"))).collect();
        assert_eq!(p.contacts(user("bob")).await.unwrap(), want);
    }
}
