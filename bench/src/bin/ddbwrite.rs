//! The bare durable-write baseline: `--writes` conditional UpdateItems (the presence server's
//! max-register: `SET #ls = :ts` if `attribute_not_exists(#ls) OR #ls < :ts`) against a
//! DynamoDB-compatible endpoint, `--concurrency` in flight. Prints one JSON line with writes/s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long)]
    endpoint: String,
    #[arg(long, default_value = "bench_bare")]
    table: String,
    #[arg(long, default_value_t = 1000)]
    writes: usize,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value = "bare")]
    user_prefix: String,
    /// Instead of writing: scan the table and count items whose last_seen >= this (epoch ms).
    #[arg(long)]
    verify_since_ms: Option<i64>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url(&args.endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "bench", "bench", None, None, "bench",
        ))
        .build();
    let client = aws_sdk_dynamodb::Client::from_conf(config);
    if let Some(since) = args.verify_since_ms {
        let (mut items, mut since_ok, mut missing) = (0u64, 0u64, 0u64);
        let mut start: Option<std::collections::HashMap<String, AttributeValue>> = None;
        for _ in 0..100_000 {
            let out = client
                .scan()
                .table_name(&args.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .expect("scan");
            for item in out.items() {
                items += 1;
                match item.get("last_seen").and_then(|v| v.as_n().ok()).and_then(|n| n.parse::<i64>().ok()) {
                    Some(ls) if ls >= since => since_ok += 1,
                    Some(_) => {}
                    None => missing += 1,
                }
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        println!(
            "{}",
            serde_json::json!({"items":items,"last_seen_since":since_ok,"without_last_seen":missing})
        );
        return;
    }
    let exists = client.describe_table().table_name(&args.table).send().await.is_ok();
    if !exists {
        client
            .create_table()
            .table_name(&args.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("user_id")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("user_id")
                    .key_type(KeyType::Hash)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .expect("create table");
        for _ in 0..100 {
            let d = client.describe_table().table_name(&args.table).send().await;
            if d.ok().and_then(|d| d.table().and_then(|t| t.table_status().cloned()))
                == Some(aws_sdk_dynamodb::types::TableStatus::Active)
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let next = Arc::new(AtomicU64::new(0));
    let (ok, cond_failed, errors) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, next, ok, cond_failed, errors) =
            (client.clone(), next.clone(), ok.clone(), cond_failed.clone(), errors.clone());
        let (table, prefix, n) = (args.table.clone(), args.user_prefix.clone(), args.writes as u64);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let r = client
                    .update_item()
                    .table_name(&table)
                    .key("user_id", AttributeValue::S(format!("{prefix}{i}")))
                    .update_expression("SET #ls = :ts")
                    .condition_expression("attribute_not_exists(#ls) OR #ls < :ts")
                    .expression_attribute_names("#ls", "last_seen")
                    .expression_attribute_values(":ts", AttributeValue::N((now_ms + i as i64).to_string()))
                    .send()
                    .await;
                match r {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
                    {
                        cond_failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = started.elapsed().as_secs_f64();
    let ok = ok.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({"writes":args.writes,"ok":ok,"condition_failed":cond_failed.load(Ordering::Relaxed),
            "errors":errors.load(Ordering::Relaxed),"concurrency":args.concurrency,"secs":secs,"per_sec":ok as f64 / secs})
    );
}
