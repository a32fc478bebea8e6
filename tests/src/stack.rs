//! [`Stack`]: everything one test owns besides its presence servers.
//!
//! A temporary directory (kept, and its path printed, when the test fails), the stores (a Redis
//! node or cluster and dynalite, or none for the embedded default), the DynamoDB table name (one per
//! test) and the JWT secret every server of the test shares. [`Stack::server`] gives the command
//! line of a server wired to these stores.
//!
//! Declare the stack before the servers and clients of a test: locals drop in reverse order, so
//! clients and servers stop first and the stores last.

use std::path::{Path, PathBuf};

use crate::dynamo::{Dynalite, DynamoProbe};
use crate::env;
use crate::redis::{RedisCluster, RedisProbe, RedisServer};
use crate::server::ServerSpec;

/// The JWT secret of every server in the suite.
pub const SECRET: &str = "presence-integration-tests-secret";

enum Redis {
    None,
    Single(RedisServer),
    Cluster(RedisCluster),
}

/// One test's directory, stores, table and secret.
pub struct Stack {
    name: String,
    // Field order is drop order: stores stop before the directory is removed.
    redis: Redis,
    dynalite: Option<Dynalite>,
    table: String,
    dir: TestDir,
}

impl Stack {
    /// A single-node Redis and dynalite.
    pub async fn new(name: &str) -> Stack {
        require(&[env::server_bin, env::redis_server, env::node, env::dynalite_cli]);
        let dir = TestDir::new(name);
        let (redis_dir, dynalite_dir) = (dir.path().join("redis"), dir.path().join("dynalite"));
        let (redis, dynalite) =
            tokio::join!(RedisServer::start("redis", &redis_dir, &[]), Dynalite::start(&dynalite_dir));
        Stack::assemble(name, dir, Redis::Single(redis), Some(dynalite))
    }

    /// A three-master Redis Cluster and dynalite.
    pub async fn with_cluster(name: &str) -> Stack {
        require(&[env::server_bin, env::redis_server, env::redis_cli, env::node, env::dynalite_cli]);
        let dir = TestDir::new(name);
        let dynalite_dir = dir.path().join("dynalite");
        let (cluster, dynalite) =
            tokio::join!(RedisCluster::start(dir.path()), Dynalite::start(&dynalite_dir));
        Stack::assemble(name, dir, Redis::Cluster(cluster), Some(dynalite))
    }

    /// No external stores: servers use the in-process registry and the embedded durable store.
    pub fn embedded(name: &str) -> Stack {
        require(&[env::server_bin]);
        Stack::assemble(name, TestDir::new(name), Redis::None, None)
    }

    fn assemble(name: &str, dir: TestDir, redis: Redis, dynalite: Option<Dynalite>) -> Stack {
        let table = format!("presence-{}", name.replace('_', "-"));
        Stack { name: name.to_owned(), redis, dynalite, table, dir }
    }

    /// The test's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The test's directory (logs, data directories).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The DynamoDB table of this test.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The command line of a server with id `id` using this stack's stores.
    pub fn server(&self, id: &str) -> ServerSpec {
        let mut spec = ServerSpec::new(id, self.path(), SECRET);
        match &self.redis {
            Redis::None => {}
            Redis::Single(r) => spec = spec.arg("--redis-url", &r.url()),
            Redis::Cluster(c) => spec = spec.arg("--redis-url", &c.url()),
        }
        if let Some(d) = &self.dynalite {
            spec = spec
                .arg("--dynamodb-table", &self.table)
                .arg("--dynamodb-endpoint", &d.endpoint())
                .flag("--create-table");
        }
        spec
    }

    /// Reads the stack's Redis directly.
    pub fn redis_probe(&self) -> RedisProbe {
        match &self.redis {
            Redis::None => panic!("{}: this stack has no Redis", self.name),
            Redis::Single(r) => RedisProbe::Single(r.url()),
            Redis::Cluster(c) => RedisProbe::Cluster(c.node_urls()),
        }
    }

    /// Reads the stack's DynamoDB table directly.
    pub fn dynamo_probe(&self) -> DynamoProbe {
        let d = self.dynalite.as_ref().unwrap_or_else(|| panic!("{}: this stack has no dynalite", self.name));
        DynamoProbe::new(&d.endpoint(), &self.table)
    }

    /// The single Redis node (to kill and restart it).
    pub fn redis_server(&mut self) -> &mut RedisServer {
        match &mut self.redis {
            Redis::Single(r) => r,
            _ => panic!("{}: this stack has no single Redis node", self.name),
        }
    }

    /// dynalite (to kill and restart it).
    pub fn dynalite(&mut self) -> &mut Dynalite {
        let name = self.name.clone();
        self.dynalite.as_mut().unwrap_or_else(|| panic!("{name}: this stack has no dynalite"))
    }
}

/// Checks every requirement before anything is started, so a missing one fails the test at once
/// with its message and leaves no directory behind.
fn require(checks: &[fn() -> PathBuf]) {
    for check in checks {
        check();
    }
}

/// A temporary directory, removed when the test passes and kept (path printed) when it fails.
pub struct TestDir(Option<tempfile::TempDir>, PathBuf);

impl TestDir {
    /// A new directory named after the test.
    pub fn new(name: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("presence-{name}-"))
            .tempdir()
            .expect("create a temporary directory");
        let path = dir.path().to_owned();
        TestDir(Some(dir), path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.1
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.0.take() {
                let path = dir.keep();
                eprintln!("---- test directory kept for inspection: {}", path.display());
            }
        }
    }
}
