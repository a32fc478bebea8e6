//! The copy-on-write contact list writes of the DynamoDB privacy backend (the protocol is in the
//! parent module's docs): claim a fresh version, write its items, flip the `users` item to it
//! under a condition on the version read; and the cleanup of versions no reader will read again.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};
use aws_sdk_dynamodb::Client;
use futures_util::{StreamExt, TryStreamExt};
use presence_core::store::StoreError;
use presence_core::user::UserId;

use super::{
    contact_key, current_list, list_key, query_list, read_version, Config, CONTACTS_COUNT_ATTR,
    CONTACTS_LIST_ATTR, LIST_ATTR, VERSION_MARKER,
};
use crate::privacy::memory::patched;
use crate::privacy::ContactsError;
use crate::store::dynamo::{classify, user_key};
use crate::store::with_timeout;

/// Attempts of a whole write when another writer changes the list first.
const ATTEMPTS: u32 = 4;
/// BatchWriteItem's limit on items per request.
const BATCH_WRITE_MAX_ITEMS: usize = 25;
/// BatchWriteItem requests of one list in flight at once (a 10,000 list is 400 requests).
const WRITES_IN_FLIGHT: usize = 8;

fn conflict() -> ContactsError {
    StoreError::Unavailable("concurrent change, try again".to_owned()).into()
}

/// Replaces `user`'s list with `contacts`.
pub(super) async fn put(
    client: &Client,
    config: &Arc<Config>,
    user: &UserId,
    contacts: &BTreeSet<UserId>,
) -> Result<(), ContactsError> {
    for _ in 0..ATTEMPTS {
        let (version, _) =
            with_timeout(config.op_timeout, read_version(client, config, user.as_str())).await?;
        if write_version(client, config, user, version, contacts).await? {
            return Ok(());
        }
    }
    Err(conflict())
}

/// Adds `add` and removes `remove` from `user`'s list, refusing over `max`; the new length.
pub(super) async fn patch(
    client: &Client,
    config: &Arc<Config>,
    user: &UserId,
    add: &BTreeSet<UserId>,
    remove: &BTreeSet<UserId>,
    max: usize,
) -> Result<usize, ContactsError> {
    for _ in 0..ATTEMPTS {
        let (version, list) = current_list(client, config, user).await?;
        let next = patched(&list, add, remove);
        if next.len() > max {
            return Err(ContactsError::TooMany { max, would: next.len() });
        }
        if next == list {
            // Nothing changes: as if applied at the read (a rewrite would only churn versions).
            return Ok(next.len());
        }
        if write_version(client, config, user, version, &next).await? {
            return Ok(next.len());
        }
    }
    Err(conflict())
}

/// Writes `contacts` as a new version of `user`'s list and makes it current if the current one
/// is still `old`. Whether it did (false: another writer changed the list first).
async fn write_version(
    client: &Client,
    config: &Arc<Config>,
    user: &UserId,
    old: u64,
    contacts: &BTreeSet<UserId>,
) -> Result<bool, StoreError> {
    let new = with_timeout(config.op_timeout, claim(client, config, user.as_str(), old)).await?;
    let list = list_key(user.as_str(), new);
    // Until the flip is sent no reader can ever see this version, so if we stop here (an error,
    // or the op's timeout dropping this future) it is deleted at once.
    let mut unflipped = Unflipped { client, config, list: Some(list.clone()) };
    write_items(client, config, &list, contacts).await?;
    unflipped.list = None;
    // From here the flip may land even if we see an error or time out: the version is kept.
    let flip = flip(client, config, user.as_str(), old, new, contacts.len());
    if with_timeout(config.op_timeout, flip).await? {
        if old != 0 {
            spawn_cleanup(client, config, list_key(user.as_str(), old), config.cleanup_delay);
        }
        Ok(true)
    } else {
        // The condition failed, so the users item never named `new`: nobody reads it.
        spawn_cleanup(client, config, list, Duration::ZERO);
        Ok(false)
    }
}

/// A version above `floor`: epoch milliseconds * 65,536 plus 16 random bits, so concurrent
/// writers rarely pick the same one (and the claim's condition settles it when they do).
fn fresh_version(floor: u64) -> u64 {
    let ms =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
    let candidate = ms.saturating_mul(1 << 16) | u64::from(rand::random::<u16>());
    // A clock behind the version read (another server's clock, or a step back) must not reuse
    // or go below it.
    candidate.max(floor.saturating_add(1))
}

/// Claims a fresh version of `user`'s list above `old`: the marker item under
/// `attribute_not_exists`, so no two writers ever write into the same version.
async fn claim(client: &Client, config: &Config, user: &str, old: u64) -> Result<u64, StoreError> {
    let mut floor = old;
    for _ in 0..ATTEMPTS {
        let version = fresh_version(floor);
        let res = client
            .put_item()
            .table_name(&config.contacts)
            .set_item(Some(contact_key(&list_key(user, version), VERSION_MARKER)))
            .condition_expression("attribute_not_exists(#l)")
            .expression_attribute_names("#l", LIST_ATTR)
            .send()
            .await;
        match res {
            Ok(_) => return Ok(version),
            // Taken (by a concurrent writer): try above it.
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                floor = version;
            }
            Err(e) => return Err(classify(&e)),
        }
    }
    Err(StoreError::Unavailable("no free contact list version, try again".to_owned()))
}

/// Every contact as an item of the partition `list`, 25 per request, several in flight.
async fn write_items(
    client: &Client,
    config: &Config,
    list: &str,
    contacts: &BTreeSet<UserId>,
) -> Result<(), StoreError> {
    let requests = contacts
        .iter()
        .map(|c| {
            let put = PutRequest::builder().set_item(Some(contact_key(list, c.as_str()))).build();
            put.map(|p| WriteRequest::builder().put_request(p).build())
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    batch_write_all(client, config, requests).await
}

/// Runs `requests` in batches of 25, up to [`WRITES_IN_FLIGHT`] at once.
async fn batch_write_all(
    client: &Client,
    config: &Config,
    requests: Vec<WriteRequest>,
) -> Result<(), StoreError> {
    // The futures are built up front: a lazy `chunks().map(..)` stream trips the compiler's
    // higher-ranked lifetime check for the `Send` futures of the trait.
    let mut batches = Vec::with_capacity(requests.len().div_ceil(BATCH_WRITE_MAX_ITEMS));
    let mut requests = requests.into_iter().peekable();
    while requests.peek().is_some() {
        batches.push(batch_write(client, config, requests.by_ref().take(BATCH_WRITE_MAX_ITEMS).collect()));
    }
    futures_util::stream::iter(batches)
        .buffer_unordered(WRITES_IN_FLIGHT)
        .try_for_each(|()| async { Ok(()) })
        .await
}

/// One `BatchWriteItem` on the contacts table, following `UnprocessedItems` (throttling) up to
/// the configured retries with a short backoff, then [`StoreError::Throttled`].
async fn batch_write(
    client: &Client,
    config: &Config,
    requests: Vec<WriteRequest>,
) -> Result<(), StoreError> {
    let table = config.contacts.as_str();
    let mut pending = requests;
    let mut round: u32 = 0;
    loop {
        let out =
            client.batch_write_item().request_items(table, pending).send().await.map_err(|e| classify(&e))?;
        pending = out.unprocessed_items().and_then(|u| u.get(table)).cloned().unwrap_or_default();
        if pending.is_empty() {
            return Ok(());
        }
        if round >= config.unprocessed_retries {
            tracing::warn!(table, left = pending.len(), "dynamodb left items unprocessed after retries");
            return Err(StoreError::Throttled);
        }
        tokio::time::sleep(Duration::from_millis(10u64 << round.min(5))).await;
        round += 1;
    }
}

/// Makes `new` (of `count` contacts) `user`'s current version if it still is `old`. Whether the
/// condition held.
async fn flip(
    client: &Client,
    config: &Config,
    user: &str,
    old: u64,
    new: u64,
    count: usize,
) -> Result<bool, StoreError> {
    let mut request = client
        .update_item()
        .table_name(&config.users)
        .set_key(Some(user_key(user)))
        .update_expression("SET #cl = :new, #cc = :count")
        .expression_attribute_names("#cl", CONTACTS_LIST_ATTR)
        .expression_attribute_names("#cc", CONTACTS_COUNT_ATTR)
        .expression_attribute_values(":new", AttributeValue::N(new.to_string()))
        .expression_attribute_values(":count", AttributeValue::N(count.to_string()));
    request = if old == 0 {
        request.condition_expression("attribute_not_exists(#cl)")
    } else {
        request
            .condition_expression("#cl = :old")
            .expression_attribute_values(":old", AttributeValue::N(old.to_string()))
    };
    match request.send().await {
        Ok(_) => Ok(true),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
            Ok(false)
        }
        Err(e) => Err(classify(&e)),
    }
}

/// A claimed version not flipped yet: deleted in the background if dropped while `list` is set.
struct Unflipped<'a> {
    client: &'a Client,
    config: &'a Arc<Config>,
    list: Option<String>,
}

impl Drop for Unflipped<'_> {
    fn drop(&mut self) {
        if let Some(list) = self.list.take() {
            spawn_cleanup(self.client, self.config, list, Duration::ZERO);
        }
    }
}

/// Deletes the partition `list` after `delay`, in a task of its own (best effort: a failure
/// leaves garbage that no reader reads, logged).
fn spawn_cleanup(client: &Client, config: &Arc<Config>, list: String, delay: Duration) {
    // Dropped outside a runtime (at shutdown): nothing to run the task on; the version stays.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    let (client, config) = (client.clone(), Arc::clone(config));
    runtime.spawn(async move {
        tokio::time::sleep(delay).await;
        match delete_list(&client, &config, &list).await {
            Ok(n) => tracing::debug!(list, items = n, "deleted an unused contact list version"),
            Err(e) => tracing::warn!(list, error = %e, "could not delete an unused contact list version (left as garbage)"),
        }
    });
}

/// Deletes every item of the partition `list`, the claim marker last: while any contact is left
/// the version stays claimed, so a writer can never reuse it half deleted. How many items.
async fn delete_list(client: &Client, config: &Config, list: &str) -> Result<usize, StoreError> {
    let keys =
        with_timeout(config.list_timeout(0), query_list(client, &config.contacts, list, false)).await?;
    let (marker, contacts): (Vec<String>, Vec<String>) = keys.into_iter().partition(|k| k == VERSION_MARKER);
    let n = contacts.len() + marker.len();
    let delete = |contact: &str| {
        DeleteRequest::builder()
            .set_key(Some(contact_key(list, contact)))
            .build()
            .map(|d| WriteRequest::builder().delete_request(d).build())
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    };
    let requests = contacts.iter().map(|c| delete(c)).collect::<Result<Vec<_>, _>>()?;
    with_timeout(config.list_timeout(contacts.len()), batch_write_all(client, config, requests)).await?;
    if !marker.is_empty() {
        with_timeout(config.op_timeout, batch_write_all(client, config, vec![delete(VERSION_MARKER)?]))
            .await?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_versions_grow_past_the_floor() {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let v = fresh_version(0);
        assert!(v >> 16 >= now_ms && v >> 16 <= now_ms + 60_000, "{v}");
        // Fits an i64 (readable by every SDK) for thousands of years yet.
        assert!(v < i64::MAX as u64 / 10);
        // A floor from the future (another clock): just above it.
        assert_eq!(fresh_version(u64::MAX / 2), u64::MAX / 2 + 1);
        assert_eq!(fresh_version(u64::MAX), u64::MAX);
    }
}
