//! Scenario 4, several devices: Bob on A (phone) and B (laptop). One closes: still online. The
//! other closes: offline, with that close as last_seen in Redis and DynamoDB.

use presence_tests::{scenarios, Stack};

#[tokio::test]
#[ignore = "needs redis-server and dynalite: run scripts/test"]
async fn several_devices() {
    let stack = Stack::new("several_devices").await;
    scenarios::several_devices(&stack).await;
}
