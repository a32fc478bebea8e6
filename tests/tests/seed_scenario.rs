//! Scenario 1, the seed: Bob on server A, Alice on server B. Bob closes gracefully; Alice's query
//! on B reports offline with last_seen = Bob's close time (within 50 ms); `ws:{bob}` is gone;
//! `last_seen:{bob}` in Redis and `last_seen` in DynamoDB hold that same instant.

use presence_tests::{scenarios, Stack};

#[tokio::test]
#[ignore = "needs redis-server and dynalite: run scripts/test"]
async fn seed_scenario() {
    let stack = Stack::new("seed_scenario").await;
    scenarios::seed(&stack).await;
}
