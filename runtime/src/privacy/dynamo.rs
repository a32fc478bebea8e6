//! The DynamoDB privacy backend: settings in the `users` item of [`DynamoDurable`], contact lists
//! in their own table, written copy-on-write so a list changes whole or not at all without
//! transactions (dynalite, the local server of the tests, has no `TransactWriteItems`).
//!
//! # Schema (public: operators read it with the AWS CLI; docs/STORES.md has the same)
//!
//! Table `users` (the durable store's table, partition key `user_id`), three more attributes,
//! written with `UpdateItem SET` on only these (`last_seen` and anything else are left alone):
//!
//! | attribute        | type | content                                                          |
//! |------------------|------|------------------------------------------------------------------|
//! | `privacy`        | S    | the settings, as the API's JSON: `{"last_seen":"contacts","online":"same_as_last_seen","except":["eve"]}` |
//! | `contacts_list`  | N    | the version of the current contact list; absent: no list (version 0) |
//! | `contacts_count` | N    | how many contacts that version holds                             |
//!
//! Table `<users>_contacts` (default `users_contacts`; [`DynamoConfig::contacts_table`]),
//! on-demand billing, created by `--create-table`:
//!
//! | attribute | key           | content                                                        |
//! |-----------|---------------|----------------------------------------------------------------|
//! | `list`    | partition (S) | `<owner>#<version>`, e.g. `bob#111859586348236800` (`#` is never in a user id) |
//! | `contact` | sort (S)      | one contact's user id; or `#`: the version's claim marker (below) |
//!
//! One item per contact, so a 10,000-contact list of 128-byte ids is 10,000 small items (an item
//! is limited to 400 KB, a partition is not).
//!
//! # Operations
//!
//! - `read_users`: `BatchGetItem` on `users`, `ConsistentRead=true`, projected to `privacy`,
//!   `contacts_list` and `contacts_count`, 100 distinct keys per request, `UnprocessedKeys`
//!   retried (as the durable read). A `privacy` that does not parse, or a `contacts_list` or
//!   `contacts_count` that is not an integer, fails the call as `Unavailable` (fail closed; logged
//!   at warn with the user id only). A user without a list, or whose list is empty, is returned
//!   with the whole (empty) list; other lists are asked member by member (no list is read here).
//! - `read_memberships`: `BatchGetItem` on the contacts table, `ConsistentRead=true`, keys
//!   (`<owner>#<version>`, member): never the list. Version 0 is "no list": false without a read.
//! - `contacts`: `GetItem` (consistent) of the user's `contacts_list` and `contacts_count`, then a
//!   paginated `Query` of the partition `<user>#<version>` (consistent, `contact > "#"`). A result
//!   whose size is not `contacts_count` is `Unavailable` (never a partial list).
//! - `put_settings`: `UpdateItem SET privacy = :text`.
//! - `put_contacts` (copy-on-write): read the current version `v` (consistent); claim a fresh
//!   version `n` (`PutItem` of the marker (`<user>#<n>`, `#`) under `attribute_not_exists`, so two
//!   writers can never share a version; `n` = epoch ms * 65,536 + 16 random bits, above `v`);
//!   `BatchWriteItem` every contact under `<user>#<n>` (25 per request, 8 requests in flight,
//!   `UnprocessedItems` retried); then flip the `users` item: `SET contacts_list = n,
//!   contacts_count = len` under the condition `contacts_list = v` (`attribute_not_exists` when
//!   `v` is 0). Readers only ever read the version `contacts_list` names, so they see the old list
//!   or the new one, whole. If the condition fails (a concurrent writer flipped first), the whole
//!   write is redone from the read, up to 4 attempts, then `Unavailable("concurrent change, try
//!   again")`.
//! - `patch_contacts`: read the current list as `contacts` does, apply the change, refuse with
//!   `TooMany` over the limit (nothing written), then write it as `put_contacts` does under the
//!   condition on the version it read: a concurrent change makes it start again from the read.
//!
//! # Old versions and garbage
//!
//! After a flip, the previous version's items are deleted by a background task (best effort),
//! [`DynamoPrivacy::with_cleanup_delay`] after the flip (default 60 s), so a reader that read the
//! old version just before the flip still finds its members. A membership read naming a deleted
//! version answers false (fail closed; the cache re-reads the user on the change notice). A write
//! that lost the flip deletes its own version at once. Left behind, and never read (no
//! `contacts_list` names them): the versions of writes that failed or timed out midway, and old
//! versions whose cleanup did not run (the process stopped, the table throttled). An operator can
//! find them with a `Scan` of the contacts table: every partition whose version is not its owner's
//! `contacts_list`.
//!
//! # Bounds
//!
//! Single-item calls and membership reads are bounded by the op timeout. A list write or read
//! moves up to thousands of items, so it is bounded by [`DynamoPrivacy::list_timeout`]: twice the
//! op timeout plus [`DynamoPrivacy::with_list_time_per_contact`] (default 2 ms) per contact
//! written (for a patch: per contact the limit allows), e.g. 24 s for 10,000 contacts with the
//! default 2 s op timeout. Each HTTP request is still bounded by the SDK's own timeout.
//!
//! The submodule `lists` holds the copy-on-write writes and the cleanup; this one the reads.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, KeyType};
use aws_sdk_dynamodb::Client;
use presence_core::privacy::Settings;
use presence_core::store::StoreError;
use presence_core::user::UserId;

use super::json::{settings_from_stored, settings_to_stored};
use super::{BackendFuture, ContactsError, Membership, PrivacyBackend, StoredUser};
use crate::store::dynamo::{
    batch_get_consistent, classify, user_key, Item, BATCH_GET_MAX_KEYS, USER_ID_ATTR,
};
use crate::store::with_timeout;
#[cfg(doc)]
use crate::store::{DynamoConfig, DynamoDurable};

mod lists;

/// The settings attribute of the `users` item (String: the API's JSON).
pub const PRIVACY_ATTR: &str = "privacy";
/// The current list version attribute of the `users` item (Number; absent: 0, no list).
pub const CONTACTS_LIST_ATTR: &str = "contacts_list";
/// The current list's size attribute of the `users` item (Number).
pub const CONTACTS_COUNT_ATTR: &str = "contacts_count";
/// The contacts table's partition key: `<owner>#<version>` (String).
pub const LIST_ATTR: &str = "list";
/// The contacts table's sort key: the contact's user id (String).
pub const CONTACT_ATTR: &str = "contact";
/// The default contacts table is the users table's name with this suffix.
pub const CONTACTS_TABLE_SUFFIX: &str = "_contacts";
/// The sort key of a version's claim marker: not a valid user id, and below every one.
pub const VERSION_MARKER: &str = "#";
/// The contacts table's key schema (both String), for `--create-table`.
pub(crate) const CONTACTS_KEY_SCHEMA: [(&str, KeyType); 2] =
    [(LIST_ATTR, KeyType::Hash), (CONTACT_ATTR, KeyType::Range)];

/// The DynamoDB privacy backend. Clones share the client and settings.
#[derive(Clone)]
pub struct DynamoPrivacy {
    client: Client,
    config: Arc<Config>,
}

/// Everything an operation needs besides the client (shared with the `'static` futures).
#[derive(Clone, Debug)]
struct Config {
    users: String,
    contacts: String,
    op_timeout: Duration,
    per_contact: Duration,
    unprocessed_retries: u32,
    cleanup_delay: Duration,
}

impl DynamoPrivacy {
    /// Default extra time a list write may take per contact.
    pub const DEFAULT_LIST_TIME_PER_CONTACT: Duration = Duration::from_millis(2);
    /// Default delay before an old list version is deleted.
    pub const DEFAULT_CLEANUP_DELAY: Duration = Duration::from_secs(60);

    /// The backend over `client`: settings in `users_table`, lists in `contacts_table`, each
    /// single call bounded by `op_timeout`. [`DynamoDurable::privacy`] builds it from the
    /// durable store's settings.
    pub fn new(
        client: Client,
        users_table: &str,
        contacts_table: &str,
        op_timeout: Duration,
    ) -> DynamoPrivacy {
        let config = Config {
            users: users_table.to_owned(),
            contacts: contacts_table.to_owned(),
            op_timeout,
            per_contact: DynamoPrivacy::DEFAULT_LIST_TIME_PER_CONTACT,
            unprocessed_retries: 5,
            cleanup_delay: DynamoPrivacy::DEFAULT_CLEANUP_DELAY,
        };
        DynamoPrivacy { client, config: Arc::new(config) }
    }

    /// How many times a batch re-sends unprocessed keys or items before giving up as
    /// `Throttled` (default 5).
    pub fn with_unprocessed_retries(mut self, retries: u32) -> DynamoPrivacy {
        Arc::make_mut(&mut self.config).unprocessed_retries = retries;
        self
    }

    /// The extra time a list write or read may take per contact (see [`DynamoPrivacy::list_timeout`]).
    pub fn with_list_time_per_contact(mut self, per_contact: Duration) -> DynamoPrivacy {
        Arc::make_mut(&mut self.config).per_contact = per_contact;
        self
    }

    /// How long after a flip the previous version's items are deleted (module docs).
    pub fn with_cleanup_delay(mut self, delay: Duration) -> DynamoPrivacy {
        Arc::make_mut(&mut self.config).cleanup_delay = delay;
        self
    }

    /// The bound on a list write or read of `contacts` contacts: twice the op timeout plus the
    /// per-contact time for each.
    pub fn list_timeout(&self, contacts: usize) -> Duration {
        self.config.list_timeout(contacts)
    }

    /// The users table.
    pub fn users_table(&self) -> &str {
        &self.config.users
    }

    /// The contacts table.
    pub fn contacts_table(&self) -> &str {
        &self.config.contacts
    }
}

impl Config {
    fn list_timeout(&self, contacts: usize) -> Duration {
        let n = u32::try_from(contacts).unwrap_or(u32::MAX);
        self.op_timeout.saturating_mul(2).saturating_add(self.per_contact.saturating_mul(n))
    }
}

/// The partition key of `owner`'s list version `version`.
fn list_key(owner: &str, version: u64) -> String {
    format!("{owner}#{version}")
}

/// The key of one item of the contacts table.
fn contact_key(list: &str, contact: &str) -> Item {
    HashMap::from([
        (LIST_ATTR.to_owned(), AttributeValue::S(list.to_owned())),
        (CONTACT_ATTR.to_owned(), AttributeValue::S(contact.to_owned())),
    ])
}

fn corrupt(user: &str, what: &str) -> StoreError {
    // The user id only: the stored values may name other users.
    tracing::warn!(user, what, "unreadable privacy data in dynamodb: the user's privacy is unavailable");
    StoreError::Unavailable(format!("stored {what} of {user} cannot be read"))
}

/// A non-negative integer Number attribute; absent: 0.
fn parse_count(user: &str, item: &Item, attr: &str) -> Result<u64, StoreError> {
    match item.get(attr) {
        None => Ok(0),
        Some(AttributeValue::N(n)) => n.parse::<u64>().map_err(|_| corrupt(user, attr)),
        Some(_) => Err(corrupt(user, attr)),
    }
}

/// What a `users` item holds for privacy.
fn parse_user(user: &str, item: &Item) -> Result<StoredUser, StoreError> {
    let settings = match item.get(PRIVACY_ATTR) {
        None => None,
        Some(AttributeValue::S(text)) => {
            Some(settings_from_stored(text).ok_or_else(|| corrupt(user, PRIVACY_ATTR))?)
        }
        Some(_) => return Err(corrupt(user, PRIVACY_ATTR)),
    };
    let list = parse_count(user, item, CONTACTS_LIST_ATTR)?;
    // A count that is absent (never written with a version) says nothing: the list is asked.
    let counted = item.contains_key(CONTACTS_COUNT_ATTR);
    let empty = list == 0 || (counted && parse_count(user, item, CONTACTS_COUNT_ATTR)? == 0);
    Ok(StoredUser { settings, list, contacts: empty.then(|| Arc::from([])) })
}

async fn read_users(
    client: &Client,
    config: &Config,
    users: &[UserId],
) -> Result<Vec<StoredUser>, StoreError> {
    let mut seen = HashSet::new();
    let unique: Vec<&str> = users.iter().map(UserId::as_str).filter(|u| seen.insert(*u)).collect();
    let names = [
        ("#uid", USER_ID_ATTR),
        ("#pv", PRIVACY_ATTR),
        ("#cl", CONTACTS_LIST_ATTR),
        ("#cc", CONTACTS_COUNT_ATTR),
    ];
    let chunks = unique.chunks(BATCH_GET_MAX_KEYS).map(|chunk| {
        let keys = chunk.iter().map(|u| user_key(u)).collect();
        batch_get_consistent(client, &config.users, keys, &names, config.unprocessed_retries)
    });
    let mut found = HashMap::new();
    for item in futures_util::future::try_join_all(chunks).await?.into_iter().flatten() {
        if let Some(AttributeValue::S(user)) = item.get(USER_ID_ATTR) {
            let stored = parse_user(user, &item)?;
            found.insert(user.clone(), stored);
        }
    }
    Ok(users.iter().map(|u| found.get(u.as_str()).cloned().unwrap_or_else(StoredUser::never_set)).collect())
}

async fn read_memberships(
    client: &Client,
    config: &Config,
    pairs: &[Membership],
) -> Result<Vec<bool>, StoreError> {
    let keys: Vec<(String, &str)> = pairs
        .iter()
        .filter(|m| m.list != 0)
        .map(|m| (list_key(m.owner.as_str(), m.list), m.member.as_str()))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let names = [("#l", LIST_ATTR), ("#c", CONTACT_ATTR)];
    let chunks = keys.chunks(BATCH_GET_MAX_KEYS).map(|chunk| {
        let keys = chunk.iter().map(|(list, member)| contact_key(list, member)).collect();
        batch_get_consistent(client, &config.contacts, keys, &names, config.unprocessed_retries)
    });
    let mut found = HashSet::new();
    for item in futures_util::future::try_join_all(chunks).await?.into_iter().flatten() {
        if let (Some(AttributeValue::S(list)), Some(AttributeValue::S(contact))) =
            (item.get(LIST_ATTR), item.get(CONTACT_ATTR))
        {
            found.insert((list.clone(), contact.clone()));
        }
    }
    Ok(pairs
        .iter()
        .map(|m| {
            m.list != 0 && found.contains(&(list_key(m.owner.as_str(), m.list), m.member.as_str().to_owned()))
        })
        .collect())
}

/// `user`'s current list version and its size, from a consistent `GetItem`.
async fn read_version(client: &Client, config: &Config, user: &str) -> Result<(u64, u64), StoreError> {
    let out = client
        .get_item()
        .table_name(&config.users)
        .set_key(Some(user_key(user)))
        .consistent_read(true)
        .projection_expression("#cl, #cc")
        .expression_attribute_names("#cl", CONTACTS_LIST_ATTR)
        .expression_attribute_names("#cc", CONTACTS_COUNT_ATTR)
        .send()
        .await
        .map_err(|e| classify(&e))?;
    match out.item() {
        None => Ok((0, 0)),
        Some(item) => {
            Ok((parse_count(user, item, CONTACTS_LIST_ATTR)?, parse_count(user, item, CONTACTS_COUNT_ATTR)?))
        }
    }
}

/// The sort keys of the partition `list`, in the table's order. `contacts_only`: without the
/// claim marker (`contact > "#"`).
async fn query_list(
    client: &Client,
    table: &str,
    list: &str,
    contacts_only: bool,
) -> Result<Vec<String>, StoreError> {
    let mut found = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let mut request = client
            .query()
            .table_name(table)
            .consistent_read(true)
            .projection_expression("#c")
            .expression_attribute_names("#l", LIST_ATTR)
            .expression_attribute_names("#c", CONTACT_ATTR)
            .expression_attribute_values(":l", AttributeValue::S(list.to_owned()))
            .set_exclusive_start_key(start.take());
        request = if contacts_only {
            request
                .key_condition_expression("#l = :l AND #c > :m")
                .expression_attribute_values(":m", AttributeValue::S(VERSION_MARKER.to_owned()))
        } else {
            request.key_condition_expression("#l = :l")
        };
        let out = request.send().await.map_err(|e| classify(&e))?;
        found.extend(out.items().iter().filter_map(|item| match item.get(CONTACT_ATTR) {
            Some(AttributeValue::S(contact)) => Some(contact.clone()),
            _ => None,
        }));
        match out.last_evaluated_key() {
            Some(key) if !key.is_empty() => start = Some(key.clone()),
            _ => return Ok(found),
        }
    }
}

/// `user`'s current version and list. Sorted by the set (String order), whatever order the
/// table returned.
async fn current_list(
    client: &Client,
    config: &Config,
    user: &UserId,
) -> Result<(u64, BTreeSet<UserId>), StoreError> {
    let (version, count) =
        with_timeout(config.op_timeout, read_version(client, config, user.as_str())).await?;
    if version == 0 {
        return Ok((0, BTreeSet::new()));
    }
    let limit = config.list_timeout(usize::try_from(count).unwrap_or(usize::MAX));
    let ids =
        with_timeout(limit, query_list(client, &config.contacts, &list_key(user.as_str(), version), true))
            .await?;
    let list = ids
        .iter()
        .map(|id| UserId::new(id).map_err(|_| corrupt(user.as_str(), CONTACT_ATTR)))
        .collect::<Result<BTreeSet<_>, _>>()?;
    if list.len() as u64 != count {
        // Never a partial list: the version's items were removed by hand, or its cleanup raced
        // a slow reader (module docs).
        return Err(corrupt(user.as_str(), "contact list (size differs from contacts_count)"));
    }
    Ok((version, list))
}

async fn put_settings(
    client: &Client,
    config: &Config,
    user: &UserId,
    settings: &Settings,
) -> Result<(), StoreError> {
    client
        .update_item()
        .table_name(&config.users)
        .set_key(Some(user_key(user.as_str())))
        .update_expression("SET #pv = :text")
        .expression_attribute_names("#pv", PRIVACY_ATTR)
        .expression_attribute_values(":text", AttributeValue::S(settings_to_stored(settings)))
        .send()
        .await
        .map_err(|e| classify(&e))?;
    Ok(())
}

impl PrivacyBackend for DynamoPrivacy {
    fn read_users(&self, users: Vec<UserId>) -> BackendFuture<Result<Vec<StoredUser>, StoreError>> {
        let (client, config) = (self.client.clone(), Arc::clone(&self.config));
        Box::pin(async move {
            if users.is_empty() {
                return Ok(Vec::new());
            }
            with_timeout(config.op_timeout, read_users(&client, &config, &users)).await
        })
    }

    fn read_memberships(&self, pairs: Vec<Membership>) -> BackendFuture<Result<Vec<bool>, StoreError>> {
        let (client, config) = (self.client.clone(), Arc::clone(&self.config));
        Box::pin(async move {
            if pairs.iter().all(|m| m.list == 0) {
                return Ok(vec![false; pairs.len()]);
            }
            with_timeout(config.op_timeout, read_memberships(&client, &config, &pairs)).await
        })
    }

    fn contacts(&self, user: UserId) -> BackendFuture<Result<Vec<UserId>, StoreError>> {
        let (client, config) = (self.client.clone(), Arc::clone(&self.config));
        // Each step is bounded by itself: the list's bound depends on its size.
        Box::pin(async move { Ok(current_list(&client, &config, &user).await?.1.into_iter().collect()) })
    }

    fn put_settings(&self, user: UserId, settings: Settings) -> BackendFuture<Result<(), StoreError>> {
        let (client, config) = (self.client.clone(), Arc::clone(&self.config));
        Box::pin(async move {
            with_timeout(config.op_timeout, put_settings(&client, &config, &user, &settings)).await
        })
    }

    fn put_contacts(
        &self,
        user: UserId,
        contacts: BTreeSet<UserId>,
    ) -> BackendFuture<Result<(), ContactsError>> {
        let (client, config) = (self.client.clone(), Arc::clone(&self.config));
        Box::pin(async move {
            let limit = config.list_timeout(contacts.len());
            match tokio::time::timeout(limit, lists::put(&client, &config, &user, &contacts)).await {
                Ok(result) => result,
                Err(_) => Err(StoreError::Timeout.into()),
            }
        })
    }

    fn patch_contacts(
        &self,
        user: UserId,
        add: BTreeSet<UserId>,
        remove: BTreeSet<UserId>,
        max: usize,
    ) -> BackendFuture<Result<usize, ContactsError>> {
        let (client, config) = (self.client.clone(), Arc::clone(&self.config));
        Box::pin(async move {
            // The list written holds at most `max` contacts (reading it is much faster than
            // writing it, and bounded by its own size in `current_list` too).
            let limit = config.list_timeout(max);
            match tokio::time::timeout(limit, lists::patch(&client, &config, &user, &add, &remove, max)).await
            {
                Ok(result) => result,
                Err(_) => Err(StoreError::Timeout.into()),
            }
        })
    }

    fn kind(&self) -> &'static str {
        "dynamodb"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[(&str, AttributeValue)]) -> Item {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn parses_a_users_item_and_fails_closed() {
        let s = |v: &str| AttributeValue::S(v.to_owned());
        let n = |v: &str| AttributeValue::N(v.to_owned());
        assert_eq!(parse_user("bob", &item(&[])).unwrap(), StoredUser::never_set());
        let text = r#"{"last_seen":"nobody","online":"everyone","except":["eve"]}"#;
        let got =
            parse_user("bob", &item(&[(PRIVACY_ATTR, s(text)), (CONTACTS_LIST_ATTR, n("42"))])).unwrap();
        assert_eq!(got.list, 42);
        // A list of unknown size is asked member by member; an empty one is known whole.
        assert_eq!(got.contacts, None);
        let emptied = [(CONTACTS_LIST_ATTR, n("42")), (CONTACTS_COUNT_ATTR, n("0"))];
        assert_eq!(parse_user("bob", &item(&emptied)).unwrap().contacts, Some(Arc::from([])));
        let full = [(CONTACTS_LIST_ATTR, n("42")), (CONTACTS_COUNT_ATTR, n("3"))];
        assert_eq!(parse_user("bob", &item(&full)).unwrap().contacts, None);
        assert_eq!(got.settings.map(|s| settings_to_stored(&s)), Some(text.to_owned()));
        for bad in [
            item(&[(PRIVACY_ATTR, s("{"))]),
            item(&[(PRIVACY_ATTR, n("1"))]),
            item(&[(CONTACTS_LIST_ATTR, n("-1"))]),
            item(&[(CONTACTS_LIST_ATTR, s("1"))]),
            item(&[(CONTACTS_LIST_ATTR, n("1")), (CONTACTS_COUNT_ATTR, s("1"))]),
        ] {
            assert!(matches!(parse_user("bob", &bad), Err(StoreError::Unavailable(_))), "{bad:?}");
        }
    }

    #[test]
    fn keys_and_bounds() {
        assert_eq!(list_key("bob", 7), "bob#7");
        // The marker sorts below every user id, so `contact > "#"` skips only it.
        assert!(presence_core::user::check_user_id(VERSION_MARKER.as_bytes()).is_err());
        assert!(VERSION_MARKER.as_bytes()[0] < b'+');
        let client = Client::from_conf(
            aws_sdk_dynamodb::Config::builder()
                .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
                .build(),
        );
        let p = DynamoPrivacy::new(client, "users", "users_contacts", Duration::from_secs(2));
        assert_eq!(p.list_timeout(0), Duration::from_secs(4));
        assert_eq!(p.list_timeout(10_000), Duration::from_secs(24));
        assert_eq!(p.list_timeout(usize::MAX), Duration::from_secs(4) + Duration::from_millis(2) * u32::MAX);
        assert_eq!((p.users_table(), p.contacts_table(), p.kind()), ("users", "users_contacts", "dynamodb"));
    }
}
