//! The DynamoDB privacy backend against a real DynamoDB-compatible server (dynalite), and the
//! three backends (memory, redb, DynamoDB) compared on one sequence of operations.
//!
//! Like `dynamo_store.rs`: the tests that need a server are `#[ignore]`d so a plain `cargo test`
//! stays green without services; `scripts/test` starts dynalite, exports
//! `PRESENCE_TEST_DYNAMODB_ENDPOINT` and runs them with `--include-ignored`, and without the
//! variable they fail (never skip). By hand:
//!
//! ```text
//! node tests/node/node_modules/dynalite/cli.js --port 8000 &
//! PRESENCE_TEST_DYNAMODB_ENDPOINT=http://127.0.0.1:8000 \
//!     cargo test -p presence-runtime --test privacy_dynamo_store -- --include-ignored --nocapture
//! ```
//!
//! Each test has its own tables (named after the test and the process id). Every request is
//! recorded by its operation name (`X-Amz-Target`), so a test can check what was sent, e.g. that
//! a membership read is one `BatchGetItem` and never reads the list.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{
    BehaviorVersion, ConfigBag, Credentials, Intercept, Region, RuntimeComponents,
};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use presence_core::privacy::{LastSeenAudience, OnlineAudience, Settings};
use presence_core::store::{DurableOp, StoreError};
use presence_core::time::UnixMillis;
use presence_core::user::UserId;
use presence_runtime::privacy::{
    ContactsError, DynamoPrivacy, Membership, MemoryPrivacy, PrivacyBackend, RedbPrivacy, StoredUser,
};
use presence_runtime::store::{DurableStore, DynamoConfig, DynamoDurable, RedbDurable};

const NEEDS: &str = "PRESENCE_TEST_DYNAMODB_ENDPOINT is not set: this test needs a DynamoDB-compatible \
                     server, e.g. PRESENCE_TEST_DYNAMODB_ENDPOINT=http://127.0.0.1:8000 (dynalite; \
                     run it via scripts/test)";

fn endpoint() -> String {
    std::env::var("PRESENCE_TEST_DYNAMODB_ENDPOINT").unwrap_or_else(|_| panic!("{NEEDS}"))
}

/// Records the operation name of every request sent.
#[derive(Debug, Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Recorder {
    /// The operations sent since the last call.
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "test-recorder"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // `DynamoDB_20120810.BatchGetItem` -> `BatchGetItem`.
        let target = context.request().headers().get("x-amz-target").unwrap_or("?");
        self.0.lock().unwrap().push(target.rsplit('.').next().unwrap_or(target).to_owned());
        Ok(())
    }
}

/// One test's tables and backends.
struct Fixture {
    durable: DynamoDurable,
    privacy: DynamoPrivacy,
    sent: Recorder,
}

impl Fixture {
    async fn new(tag: &str) -> Fixture {
        let sent = Recorder::default();
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint())
            .credentials_provider(Credentials::new("test", "test", None, None, "presence-tests"))
            .retry_config(RetryConfig::disabled())
            .timeout_config(TimeoutConfig::builder().operation_timeout(Duration::from_secs(10)).build())
            .interceptor(sent.clone())
            .build();
        let table = format!("presence_privacy_{tag}_{}", std::process::id());
        // Generous bounds: the test machine is shared and dynalite is single threaded.
        let durable_config =
            DynamoConfig { table, op_timeout: Duration::from_secs(10), ..DynamoConfig::default() };
        let durable = DynamoDurable::from_client(Client::from_conf(config), durable_config);
        durable.create_table_if_missing(Duration::from_secs(30)).await.unwrap();
        let privacy = durable.privacy().with_cleanup_delay(Duration::ZERO);
        sent.take();
        Fixture { durable, privacy, sent }
    }

    fn client(&self) -> &Client {
        self.durable.client()
    }

    /// The `users` item of `u` as an operator reads it.
    async fn users_item(&self, u: &str) -> std::collections::HashMap<String, AttributeValue> {
        let out = self
            .client()
            .get_item()
            .table_name(self.durable.table())
            .key("user_id", AttributeValue::S(u.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        out.item().cloned().unwrap_or_default()
    }

    /// Every (list, contact) key of the contacts table.
    async fn contact_rows(&self) -> BTreeSet<(String, String)> {
        let mut rows = BTreeSet::new();
        let mut start = None;
        loop {
            let out = self
                .client()
                .scan()
                .table_name(self.privacy.contacts_table())
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap();
            for item in out.items() {
                let s = |k: &str| item[k].as_s().unwrap().clone();
                rows.insert((s("list"), s("contact")));
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return rows,
            }
        }
    }

    /// The list partitions (`<owner>#<version>`) present in the contacts table.
    async fn partitions(&self) -> BTreeSet<String> {
        self.contact_rows().await.into_iter().map(|(list, _)| list).collect()
    }

    async fn version(&self, u: &str) -> u64 {
        self.privacy.read_users(vec![user(u)]).await.unwrap()[0].list
    }

    async fn drop_tables(&self) {
        for table in [self.durable.table(), self.privacy.contacts_table()] {
            let _ = self.client().delete_table().table_name(table).send().await;
        }
    }
}

fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn set(ids: &[&str]) -> BTreeSet<UserId> {
    ids.iter().map(|s| user(s)).collect()
}

fn ask(owner: &str, list: u64, member: &str) -> Membership {
    Membership { owner: user(owner), list, member: user(member) }
}

fn settings(last_seen: LastSeenAudience, except: &[&str]) -> Settings {
    Settings { last_seen, online: OnlineAudience::SameAsLastSeen, except: set(except) }
}

/// Polls `check` until it holds (background cleanup), at most 20 s.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "not within 20 s: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
#[ignore = "needs dynamodb: run via scripts/test"]
async fn settings_round_trip_beside_last_seen() {
    let f = Fixture::new("settings").await;
    let p = &f.privacy;
    assert_eq!(p.read_users(vec![]).await.unwrap(), vec![]);
    assert_eq!(p.read_users(vec![user("bob")]).await.unwrap(), vec![StoredUser::never_set()]);

    f.durable.execute(DurableOp::Write { user: user("bob"), last_seen: UnixMillis(1_000) }).await.unwrap();
    let bob = settings(LastSeenAudience::Contacts, &["eve", "dan"]);
    p.put_settings(user("bob"), bob.clone()).await.unwrap();
    p.put_settings(user("amy"), settings(LastSeenAudience::Nobody, &[])).await.unwrap();
    // No list written: known to be empty.
    let want_bob = StoredUser { settings: Some(bob), ..StoredUser::never_set() };
    let want_amy =
        StoredUser { settings: Some(settings(LastSeenAudience::Nobody, &[])), ..StoredUser::never_set() };
    assert_eq!(
        p.read_users(vec![user("bob"), user("carl"), user("amy"), user("bob")]).await.unwrap(),
        vec![want_bob.clone(), StoredUser::never_set(), want_amy, want_bob]
    );

    // The item as an operator reads it: the API's JSON, and last_seen untouched either way.
    f.durable.execute(DurableOp::Write { user: user("bob"), last_seen: UnixMillis(2_000) }).await.unwrap();
    let item = f.users_item("bob").await;
    let text = r#"{"last_seen":"contacts","online":"same_as_last_seen","except":["dan","eve"]}"#;
    assert_eq!(item.get("privacy"), Some(&AttributeValue::S(text.to_owned())));
    assert_eq!(item.get("last_seen"), Some(&AttributeValue::N("2000".to_owned())));
    assert_eq!(item.len(), 3, "{item:?}");

    // Stored text that does not parse: unavailable, never the defaults.
    f.client()
        .update_item()
        .table_name(f.durable.table())
        .key("user_id", AttributeValue::S("carl".into()))
        .update_expression("SET privacy = :t")
        .expression_attribute_values(":t", AttributeValue::S(r#"{"last_seen":"sometimes"}"#.into()))
        .send()
        .await
        .unwrap();
    let r = p.read_users(vec![user("bob"), user("carl")]).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    f.drop_tables().await;
}

/// A 128-byte id for `i`, whose first byte runs through the whole id alphabet, so the table's
/// order is checked against String order on every kind of byte.
fn long_id(i: usize) -> String {
    const ALPHABET: &[u8] = b"+-.0123456789:@ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";
    let first = ALPHABET[(i * 7) % ALPHABET.len()] as char;
    format!("{first}{i:0>127}")
}

#[tokio::test]
#[ignore = "needs dynamodb: run via scripts/test"]
async fn ten_thousand_contacts_of_128_bytes() {
    let f = Fixture::new("big").await;
    let p = &f.privacy;
    let ids: BTreeSet<UserId> = (0..10_000).map(|i| user(&long_id(i))).collect();
    assert_eq!((ids.len(), ids.first().unwrap().as_str().len()), (10_000, 128));

    let started = Instant::now();
    p.put_contacts(user("bob"), ids.clone()).await.unwrap();
    let put = started.elapsed();
    let sent = f.sent.take();
    let batches = sent.iter().filter(|op| *op == "BatchWriteItem").count();
    assert_eq!(batches, 400, "25 items per request");
    assert_eq!(
        sent.iter().filter(|op| *op != "BatchWriteItem").cloned().collect::<Vec<_>>(),
        ["GetItem", "PutItem", "UpdateItem"]
    );

    let started = Instant::now();
    let got = p.contacts(user("bob")).await.unwrap();
    let read = started.elapsed();
    assert_eq!(got, ids.iter().cloned().collect::<Vec<_>>(), "every contact, in String order");
    eprintln!("10,000 contacts of 128 bytes on dynalite: put {put:?}, contacts() {read:?}");

    let version = f.version("bob").await;
    assert_ne!(version, 0);
    let item = f.users_item("bob").await;
    assert_eq!(item.get("contacts_list"), Some(&AttributeValue::N(version.to_string())));
    assert_eq!(item.get("contacts_count"), Some(&AttributeValue::N("10000".to_owned())));

    // Membership: one BatchGetItem, never the list.
    f.sent.take();
    let member = |i: usize| ask("bob", version, &long_id(i));
    let asks = vec![
        member(0),
        ask("bob", version, "stranger"),
        member(9_999),
        member(5_000),
        ask("amy", version, &long_id(1)),
    ];
    assert_eq!(p.read_memberships(asks).await.unwrap(), vec![true, false, true, true, false]);
    assert_eq!(f.sent.take(), ["BatchGetItem"]);
    // Version 0 is "no list": false without any request.
    assert_eq!(
        p.read_memberships(vec![ask("bob", 0, &long_id(0)), ask("x", 0, "y")]).await.unwrap(),
        vec![false, false]
    );
    assert_eq!(p.read_memberships(vec![]).await.unwrap(), Vec::<bool>::new());
    assert_eq!(f.sent.take(), Vec::<String>::new());
    // More than one request's worth (100 keys), with repeats.
    let many: Vec<Membership> =
        (0..250).map(|i| member(i * 13 % 300)).chain([member(0), member(0)]).collect();
    assert_eq!(p.read_memberships(many).await.unwrap(), vec![true; 252]);
    f.drop_tables().await;
}

#[tokio::test]
#[ignore = "needs dynamodb: run via scripts/test"]
async fn patch_replace_and_the_limit() {
    let f = Fixture::new("patch").await;
    let p = &f.privacy;
    assert_eq!(p.contacts(user("bob")).await.unwrap(), Vec::<UserId>::new());
    // A patch creates a list too; an id in both add and remove ends up removed.
    assert_eq!(p.patch_contacts(user("bob"), set(&["amy", "carl", "dan"]), set(&["dan"]), 4).await, Ok(2));
    let v1 = f.version("bob").await;
    assert_eq!(p.contacts(user("bob")).await.unwrap(), vec![user("amy"), user("carl")]);

    assert_eq!(p.patch_contacts(user("bob"), set(&["eve", "fay"]), set(&["amy", "zed"]), 4).await, Ok(3));
    let v2 = f.version("bob").await;
    assert!(v2 > v1, "{v2} > {v1}");
    assert_eq!(p.contacts(user("bob")).await.unwrap(), vec![user("carl"), user("eve"), user("fay")]);

    // Over the limit: refused, nothing written (same version, same list).
    let refused = p.patch_contacts(user("bob"), set(&["gus", "hal"]), set(&["carl"]), 3).await;
    assert_eq!(refused, Err(ContactsError::TooMany { max: 3, would: 4 }));
    assert_eq!(f.version("bob").await, v2);
    assert_eq!(p.contacts(user("bob")).await.unwrap(), vec![user("carl"), user("eve"), user("fay")]);
    // A patch that changes nothing writes nothing.
    f.sent.take();
    assert_eq!(p.patch_contacts(user("bob"), set(&["eve"]), set(&["nobody"]), 3).await, Ok(3));
    assert!(!f.sent.take().iter().any(|op| op == "PutItem" || op == "UpdateItem"));

    // A put replaces the list whole: an old member is no longer one, in the new version.
    p.put_contacts(user("bob"), set(&["ivy"])).await.unwrap();
    let v3 = f.version("bob").await;
    assert!(v3 > v2);
    assert_eq!(p.contacts(user("bob")).await.unwrap(), vec![user("ivy")]);
    let asks = vec![ask("bob", v3, "carl"), ask("bob", v3, "ivy"), ask("bob", v3, "eve")];
    assert_eq!(p.read_memberships(asks).await.unwrap(), vec![false, true, false]);
    // A list with members is asked member by member: read_users does not return it.
    let read = p.read_users(vec![user("bob")]).await.unwrap();
    assert_eq!((read[0].list, read[0].contacts.clone()), (v3, None));
    // An empty list is a list (version kept, nobody in it), and known whole to be empty.
    p.put_contacts(user("bob"), BTreeSet::new()).await.unwrap();
    let v4 = f.version("bob").await;
    assert_eq!(p.contacts(user("bob")).await.unwrap(), Vec::<UserId>::new());
    assert_eq!(p.read_memberships(vec![ask("bob", v4, "ivy")]).await.unwrap(), vec![false]);
    let read = p.read_users(vec![user("bob")]).await.unwrap();
    assert_eq!((read[0].list, read[0].contacts.as_deref().map(<[UserId]>::len)), (v4, Some(0)));

    // The old versions are deleted in the background: only the current one's marker is left.
    let current = format!("bob#{v4}");
    eventually("old versions deleted", || async {
        f.partitions().await == BTreeSet::from([current.clone()])
    })
    .await;
    assert_eq!(f.contact_rows().await, BTreeSet::from([(current.clone(), "#".to_owned())]));
    f.drop_tables().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs dynamodb: run via scripts/test"]
async fn concurrent_writers_never_mix_lists() {
    let f = Fixture::new("race").await;
    let lists: Vec<BTreeSet<UserId>> =
        (0..4).map(|w| (0..60).map(|i| user(&format!("w{w}-{i:02}"))).collect()).collect();
    // All start together, so they read the same version and all but one lose the first flip.
    let start = Arc::new(tokio::sync::Barrier::new(lists.len()));
    let tasks: Vec<_> = lists
        .iter()
        .map(|list| {
            let (p, list, start) = (f.privacy.clone(), list.clone(), Arc::clone(&start));
            tokio::spawn(async move {
                start.wait().await;
                p.put_contacts(user("bob"), list).await
            })
        })
        .collect();
    let mut landed = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => landed += 1,
            Err(ContactsError::Store(StoreError::Unavailable(m))) => {
                assert_eq!(m, "concurrent change, try again")
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(landed >= 1);
    // Every attempt sends one flip: more flips than writes that landed means some lost the
    // condition and started again (the path under test).
    let flips = f.sent.take().iter().filter(|op| *op == "UpdateItem").count();
    eprintln!("concurrent puts: {landed} of 4 landed, {flips} flips sent");
    assert!(flips > landed, "no writer lost a flip: {flips} flips, {landed} landed");
    let got: BTreeSet<UserId> = f.privacy.contacts(user("bob")).await.unwrap().into_iter().collect();
    assert!(lists.contains(&got), "the list is one writer's, whole: {got:?}");

    // Concurrent patches: every one that succeeded is in the list, none that failed.
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let p = f.privacy.clone();
            let id = format!("p{i}");
            tokio::spawn(async move {
                (p.patch_contacts(user("bob"), set(&[&id]), BTreeSet::new(), 1_000).await, id)
            })
        })
        .collect();
    let mut want = got.clone();
    for t in tasks {
        match t.await.unwrap() {
            (Ok(_), id) => assert!(want.insert(user(&id))),
            (Err(ContactsError::Store(StoreError::Unavailable(_))), _) => {}
            (Err(e), _) => panic!("{e:?}"),
        }
    }
    let got: BTreeSet<UserId> = f.privacy.contacts(user("bob")).await.unwrap().into_iter().collect();
    assert_eq!(got, want);

    // Losers' versions and replaced ones are all deleted in the background.
    let current = format!("bob#{}", f.version("bob").await);
    eventually("only the current version left", || async {
        f.partitions().await == BTreeSet::from([current.clone()])
    })
    .await;
    f.drop_tables().await;
}

#[tokio::test]
#[ignore = "needs dynamodb: run via scripts/test"]
async fn create_table_makes_the_contacts_table() {
    let f = Fixture::new("schema").await;
    assert_eq!(f.privacy.contacts_table(), format!("{}_contacts", f.durable.table()));
    assert!(!f.durable.create_table_if_missing(Duration::from_secs(30)).await.unwrap(), "both exist");
    let desc = f.client().describe_table().table_name(f.privacy.contacts_table()).send().await.unwrap();
    let table = desc.table().unwrap();
    let keys: Vec<(&str, &str)> =
        table.key_schema().iter().map(|k| (k.attribute_name(), k.key_type().as_str())).collect();
    assert_eq!(keys, [("list", "HASH"), ("contact", "RANGE")]);
    let attrs: BTreeSet<(&str, &str)> = table
        .attribute_definitions()
        .iter()
        .map(|a| (a.attribute_name(), a.attribute_type().as_str()))
        .collect();
    assert_eq!(attrs, BTreeSet::from([("contact", "S"), ("list", "S")]));
    f.drop_tables().await;
}

/// A tiny deterministic generator (the sequence must be the same for every backend).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }

    fn ids(&mut self, pool: &[&str], most: usize) -> BTreeSet<UserId> {
        (0..self.below(most + 1)).map(|_| user(pool[self.below(pool.len())])).collect()
    }
}

/// Runs one step of the sequence on `backend`; the answer as text, to compare across backends.
async fn step(backend: &dyn PrivacyBackend, rng: &mut Lcg) -> String {
    const USERS: &[&str] = &["amy", "bob", "carl"];
    const IDS: &[&str] = &["amy", "bob", "carl", "dan", "eve", "fay", "Gus", "_x"];
    let owner = user(USERS[rng.below(USERS.len())]);
    match rng.below(6) {
        0 => {
            let audience = [LastSeenAudience::Everyone, LastSeenAudience::Contacts, LastSeenAudience::Nobody];
            let s = Settings {
                last_seen: audience[rng.below(3)],
                online: OnlineAudience::Everyone,
                except: rng.ids(IDS, 2),
            };
            format!("put_settings {:?}", backend.put_settings(owner, s).await)
        }
        1 => format!("put_contacts {:?}", backend.put_contacts(owner, rng.ids(IDS, 5)).await),
        2 => {
            let (add, remove) = (rng.ids(IDS, 3), rng.ids(IDS, 2));
            format!("patch {:?}", backend.patch_contacts(owner, add, remove, 4).await)
        }
        3 => format!("contacts {:?}", backend.contacts(owner).await),
        4 => {
            // Settings only: the list version is the backend's own (0 for the in-place ones).
            let users: Vec<UserId> = USERS.iter().map(|u| user(u)).collect();
            let read = backend.read_users(users).await.unwrap();
            format!("read_users {:?}", read.into_iter().map(|u| u.settings).collect::<Vec<_>>())
        }
        _ => {
            let read = backend.read_users(vec![owner.clone()]).await.unwrap();
            let asks: Vec<Membership> = IDS
                .iter()
                .map(|m| Membership { owner: owner.clone(), list: read[0].list, member: user(m) })
                .collect();
            let answers = backend.read_memberships(asks).await;
            // Where a backend returns the list whole, it says what the membership reads say.
            if let (Some(whole), Ok(answers)) = (&read[0].contacts, &answers) {
                let from_whole: Vec<bool> = IDS.iter().map(|m| whole.contains(&user(m))).collect();
                assert_eq!(&from_whole, answers, "{} whole list {whole:?}", backend.kind());
            }
            format!("memberships {answers:?}")
        }
    }
}

#[tokio::test]
#[ignore = "needs dynamodb: run via scripts/test"]
async fn the_three_backends_answer_alike() {
    let f = Fixture::new("diff").await;
    let dir = TempDir::new();
    let durable = RedbDurable::open(&dir.0).unwrap();
    let memory = MemoryPrivacy::new();
    let redb: RedbPrivacy = durable.privacy();
    let backends: [&dyn PrivacyBackend; 3] = [&memory, &redb, &f.privacy];
    let mut rngs = [Lcg(7), Lcg(7), Lcg(7)];
    let mut seen = Vec::new();
    for i in 0..150 {
        let mut answers = Vec::new();
        for (backend, rng) in backends.iter().zip(rngs.iter_mut()) {
            answers.push(step(*backend, rng).await);
        }
        assert_eq!(answers[0], answers[1], "step {i}: memory vs redb");
        assert_eq!(answers[0], answers[2], "step {i}: memory vs dynamodb");
        seen.push(answers.swap_remove(0));
    }
    // The sequence reaches the interesting answers (it is not vacuous).
    let count = |needle: &str| seen.iter().filter(|a| a.contains(needle)).count();
    for needle in ["memberships Ok([", "true", "TooMany", "patch Ok(", "contacts Ok([\"", "Some(Settings"] {
        assert!(count(needle) > 0, "no answer with {needle:?}: {seen:#?}");
    }
    f.drop_tables().await;
}

/// A unique directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let p = std::env::temp_dir().join(format!("presence-privacy-diff-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
