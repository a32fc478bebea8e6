//! dynalite (a DynamoDB-compatible server, `node cli.js --port P --path DIR`) and direct reads of
//! the product's table.
//!
//! dynalite keeps its data in LevelDB under `--path`, so [`Dynalite::kill9`] followed by
//! [`Dynalite::restart`] is an outage after which the data is still there. Tables are `ACTIVE`
//! at once (`--createTableMs 0`), so servers started with `--create-table` do not wait.
//!
//! [`DynamoProbe`] reads what an operator reads with the AWS CLI: `GetItem` with
//! `ConsistentRead=true` on `user_id` (S), returning `last_seen` (N, epoch milliseconds).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::env;
use crate::process::{free_port, wait_listening, Proc};

/// One dynalite process with durable storage in its own directory.
pub struct Dynalite {
    port: u16,
    dir: PathBuf,
    proc: Option<Proc>,
}

impl Dynalite {
    /// Starts dynalite on a free port, storing its data under `dir`.
    pub async fn start(dir: &Path) -> Dynalite {
        std::fs::create_dir_all(dir).expect("create dynalite dir");
        let mut d = Dynalite { port: free_port(), dir: dir.to_owned(), proc: None };
        d.spawn().await;
        d
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new(env::node());
        cmd.arg(env::dynalite_cli())
            .args(["--port", &self.port.to_string(), "--host", "127.0.0.1", "--createTableMs", "0", "--path"])
            .arg(self.dir.join("data"));
        let mut proc = Proc::spawn("dynalite", cmd, &self.dir.join("dynalite.log"));
        wait_listening(self.addr(), Duration::from_secs(20), &mut proc).await;
        self.proc = Some(proc);
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `http://127.0.0.1:<port>` (the server's `--dynamodb-endpoint`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the outage starts.
    pub async fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9().await;
        }
    }

    /// Starts dynalite again on the same port with the same data directory.
    pub async fn restart(&mut self) {
        assert!(self.proc.is_none(), "dynalite: restart without kill9 first");
        self.spawn().await;
    }
}

/// Reads `last_seen` from the product's table directly.
#[derive(Clone)]
pub struct DynamoProbe {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoProbe {
    /// A client for `table` at `endpoint`, with dummy credentials (local servers accept any),
    /// no SDK retries and a 2 s bound per call.
    pub fn new(endpoint: &str, table: &str) -> DynamoProbe {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(Credentials::new("test", "test", None, None, "presence-tests"))
            .retry_config(RetryConfig::disabled())
            .timeout_config(TimeoutConfig::builder().operation_timeout(Duration::from_secs(2)).build())
            .build();
        DynamoProbe { client: aws_sdk_dynamodb::Client::from_conf(config), table: table.to_owned() }
    }

    /// `GetItem(user_id = user, ConsistentRead)` -> `last_seen` in epoch ms, if the item has one.
    pub async fn try_last_seen(&self, user: &str) -> Result<Option<i64>, String> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("user_id", AttributeValue::S(user.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| format!("GetItem {user}: {}", DisplayErrorContext(&e)))?;
        let Some(item) = out.item else { return Ok(None) };
        match item.get("last_seen") {
            None => Ok(None),
            Some(AttributeValue::N(n)) => {
                n.parse::<i64>().map(Some).map_err(|e| format!("last_seen N {n:?} is not an integer: {e}"))
            }
            Some(other) => Err(format!("last_seen of {user} is not a Number: {other:?}")),
        }
    }

    /// Like [`DynamoProbe::try_last_seen`]; panics if the table cannot be read.
    pub async fn last_seen(&self, user: &str) -> Option<i64> {
        self.try_last_seen(user).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits until the item of `user` has `last_seen == want` (the durable write is asynchronous).
    pub async fn wait_last_seen(&self, user: &str, want: i64, limit: Duration) {
        crate::time::eventually(&format!("DynamoDB last_seen of {user} = {want}"), limit, || async move {
            match self.try_last_seen(user).await? {
                Some(v) if v == want => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
}
