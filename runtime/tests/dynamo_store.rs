//! The DynamoDB durable executor against a real DynamoDB-compatible server (dynalite).
//!
//! The tests that need a server are `#[ignore]`d so a plain `cargo test` stays green without
//! services; `scripts/test` starts dynalite and runs them with `--include-ignored`. By hand:
//!
//! ```text
//! (cd /tmp/dyn && npm install dynalite) && node /tmp/dyn/node_modules/dynalite/cli.js --port 8000 &
//! PRESENCE_TEST_DYNAMODB_ENDPOINT=http://127.0.0.1:8000 \
//!     cargo test -p presence-runtime --test dynamo_store -- --include-ignored
//! ```
//!
//! Each test uses its own table (named after the test and the process id), so they can run in
//! parallel and against a server that other tests use too.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use presence_core::store::{DurableOp, StoreError, StoreOutput};
use presence_core::time::UnixMillis;
use presence_core::user::UserId;
use presence_runtime::store::{DurableStore, DynamoConfig, DynamoDurable};

const NEEDS: &str = "PRESENCE_TEST_DYNAMODB_ENDPOINT is not set: this test needs a DynamoDB-compatible \
                     server, e.g. PRESENCE_TEST_DYNAMODB_ENDPOINT=http://127.0.0.1:8000 (dynalite; \
                     run it via scripts/test)";

fn endpoint() -> String {
    std::env::var("PRESENCE_TEST_DYNAMODB_ENDPOINT").unwrap_or_else(|_| panic!("{NEEDS}"))
}

fn table_name(tag: &str) -> String {
    format!("presence_test_{tag}_{}", std::process::id())
}

async fn store(tag: &str) -> DynamoDurable {
    let config = DynamoConfig {
        table: table_name(tag),
        endpoint: Some(endpoint()),
        op_timeout: Duration::from_secs(5),
        ..DynamoConfig::default()
    };
    let store = DynamoDurable::connect(config).await;
    store.create_table_if_missing(Duration::from_secs(30)).await.unwrap();
    store
}

/// Drops the table and the contacts table `create_table_if_missing` makes beside it.
async fn drop_table(store: &DynamoDurable) {
    for table in [store.table().to_owned(), format!("{}_contacts", store.table())] {
        let _ = store.client().delete_table().table_name(table).send().await;
    }
}

fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

/// A write that must succeed: applied (`Done`) or refused by the max-register (`Superseded`).
async fn write(store: &DynamoDurable, u: &str, ms: i64) -> StoreOutput {
    let op = DurableOp::Write { user: user(u), last_seen: UnixMillis(ms) };
    let out = store.execute(op).await;
    assert!(matches!(out, Ok(StoreOutput::Done | StoreOutput::Superseded)), "{out:?}");
    out.unwrap()
}

async fn read(store: &DynamoDurable, users: &[String]) -> Vec<Option<i64>> {
    let op = DurableOp::Read { users: users.iter().map(|u| user(u)).collect() };
    match store.execute(op).await {
        Ok(StoreOutput::Durable(v)) => v.into_iter().map(|o| o.map(|t| t.0)).collect(),
        other => panic!("unexpected {other:?}"),
    }
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
#[ignore = "needs dynamodb: run via scripts/test"]
async fn create_table_is_idempotent() {
    let config =
        DynamoConfig { table: table_name("create"), endpoint: Some(endpoint()), ..DynamoConfig::default() };
    let a = DynamoDurable::connect(config.clone()).await;
    let b = DynamoDurable::connect(config).await;
    let wait = Duration::from_secs(30);
    assert!(a.create_table_if_missing(wait).await.unwrap(), "created");
    assert!(!a.create_table_if_missing(wait).await.unwrap(), "exists");
    assert!(!b.create_table_if_missing(wait).await.unwrap(), "exists");

    let desc = a.client().describe_table().table_name(a.table()).send().await.unwrap();
    let table = desc.table().unwrap();
    let key = &table.key_schema()[0];
    assert_eq!(key.attribute_name(), "user_id");
    assert_eq!(key.key_type().as_str(), "HASH");
    let attr = &table.attribute_definitions()[0];
    assert_eq!(attr.attribute_type().as_str(), "S");
    drop_table(&a).await;
}

#[tokio::test]
#[ignore = "needs dynamodb: run via scripts/test"]
async fn conditional_write_keeps_the_max() {
    let store = store("max").await;
    assert_eq!(write(&store, "bob", 2_000).await, StoreOutput::Done);
    // ConditionalCheckFailed: success, value kept, reported as superseded.
    assert_eq!(write(&store, "bob", 1_000).await, StoreOutput::Superseded);
    assert_eq!(write(&store, "bob", 2_000).await, StoreOutput::Superseded); // equal: refused too
    assert_eq!(read(&store, &names(&["bob"])).await, vec![Some(2_000)]);
    write(&store, "bob", 3_000).await;
    assert_eq!(read(&store, &names(&["bob"])).await, vec![Some(3_000)]);

    // The stored item, as an operator sees it with the AWS CLI.
    let item = store
        .client()
        .get_item()
        .table_name(store.table())
        .key("user_id", AttributeValue::S("bob".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let item = item.item().unwrap();
    assert_eq!(item.get("user_id"), Some(&AttributeValue::S("bob".into())));
    assert_eq!(item.get("last_seen"), Some(&AttributeValue::N("3000".into())));
    assert_eq!(item.len(), 2);

    // Other attributes of the item are left alone by the write.
    store
        .client()
        .put_item()
        .table_name(store.table())
        .item("user_id", AttributeValue::S("amy".into()))
        .item("name", AttributeValue::S("Amy".into()))
        .send()
        .await
        .unwrap();
    write(&store, "amy", 5).await;
    let item = store
        .client()
        .get_item()
        .table_name(store.table())
        .key("user_id", AttributeValue::S("amy".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let item = item.item().unwrap();
    assert_eq!(item.get("name"), Some(&AttributeValue::S("Amy".into())));
    assert_eq!(item.get("last_seen"), Some(&AttributeValue::N("5".into())));
    drop_table(&store).await;
}

#[tokio::test]
#[ignore = "needs dynamodb: run via scripts/test"]
async fn concurrent_writes_keep_the_max() {
    let store = std::sync::Arc::new(store("race").await);
    let tasks: Vec<_> = (0..40i64)
        .map(|i| {
            let store = std::sync::Arc::clone(&store);
            let t = if i % 2 == 0 { 10_000 + i } else { 10_000 - i };
            tokio::spawn(async move { write(&store, "bob", t).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(read(&store, &names(&["bob"])).await, vec![Some(10_038)]);
    drop_table(&store).await;
}

#[tokio::test]
#[ignore = "needs dynamodb: run via scripts/test"]
async fn batch_read_keeps_request_order_across_chunks() {
    let store = store("order").await;
    // 250 distinct users (three BatchGetItem chunks), every third one written.
    let users: Vec<String> = (0..250).map(|i| format!("u{i}")).collect();
    for (i, u) in users.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
        write(&store, u, 1_000 + i as i64).await;
    }
    let want: Vec<_> = (0..250).map(|i| (i % 3 == 0).then_some(1_000 + i as i64)).collect();
    assert_eq!(read(&store, &users).await, want);

    // Reversed, with duplicates (which BatchGetItem itself would reject) and unknown users.
    let mut mixed: Vec<String> = users.iter().rev().cloned().collect();
    mixed.extend(names(&["u0", "nobody", "u3", "u0"]));
    let mut want: Vec<_> = want.into_iter().rev().collect();
    want.extend([Some(1_000), None, Some(1_003), Some(1_000)]);
    assert_eq!(read(&store, &mixed).await, want);
    assert_eq!(read(&store, &[]).await, vec![]);
    drop_table(&store).await;
}

#[tokio::test]
#[ignore = "needs dynamodb: run via scripts/test"]
async fn a_malformed_last_seen_reads_as_absent() {
    let store = store("malformed").await;
    store
        .client()
        .put_item()
        .table_name(store.table())
        .item("user_id", AttributeValue::S("bob".into()))
        .item("last_seen", AttributeValue::S("yesterday".into()))
        .send()
        .await
        .unwrap();
    write(&store, "amy", 7).await;
    assert_eq!(read(&store, &names(&["bob", "amy"])).await, vec![None, Some(7)]);
    drop_table(&store).await;
}

#[tokio::test]
#[ignore = "needs dynamodb: run via scripts/test"]
async fn a_missing_table_is_unavailable_not_empty() {
    let config =
        DynamoConfig { table: table_name("missing"), endpoint: Some(endpoint()), ..DynamoConfig::default() };
    let store = DynamoDurable::connect(config).await;
    let r = store.execute(DurableOp::Read { users: vec![user("bob")] }).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    let r = store.execute(DurableOp::Write { user: user("bob"), last_seen: UnixMillis(1) }).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
}

/// Needs no server: nothing listens on the port; ops fail within the op timeout.
#[tokio::test]
async fn ops_fail_within_the_timeout_when_unreachable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = DynamoConfig {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        op_timeout: Duration::from_millis(500),
        ..DynamoConfig::default()
    };
    let store = DynamoDurable::connect(config).await;
    let started = Instant::now();
    let r = store.execute(DurableOp::Write { user: user("bob"), last_seen: UnixMillis(1) }).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_) | StoreError::Timeout)), "{r:?}");
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(store.kind(), "dynamodb");
}

/// Needs no server: a peer that accepts but never answers is a timeout, not a hang.
#[tokio::test]
async fn a_silent_peer_is_a_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let config = DynamoConfig {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        op_timeout: Duration::from_millis(300),
        ..DynamoConfig::default()
    };
    let store = DynamoDurable::connect(config).await;
    let started = Instant::now();
    let r = store.execute(DurableOp::Read { users: vec![user("bob")] }).await;
    assert_eq!(r, Err(StoreError::Timeout));
    assert!(started.elapsed() < Duration::from_millis(1000));
    hold.abort();
}
