//! Scenario 10, Redis Cluster: scenarios 1 (seed) and 4 (several devices) against a local
//! three-master cluster (`redis-server --cluster-enabled yes`, joined with
//! `redis-cli --cluster create`), the servers using `--redis-url redis+cluster://h1,h2,h3`.
//! `ws:{u}` and `last_seen:{u}` share a hash slot, so each user's keys live on one master.

use presence_tests::{scenarios, Stack};

#[tokio::test]
#[ignore = "needs redis-server, redis-cli and dynalite: run scripts/test"]
async fn seed_scenario_on_cluster() {
    let stack = Stack::with_cluster("cluster_seed").await;
    scenarios::seed(&stack).await;
}

#[tokio::test]
#[ignore = "needs redis-server, redis-cli and dynalite: run scripts/test"]
async fn several_devices_on_cluster() {
    let stack = Stack::with_cluster("cluster_devices").await;
    scenarios::several_devices(&stack).await;
}
