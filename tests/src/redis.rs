//! `redis-server` processes (one node, or a local three-master cluster) and direct reads of the
//! product's Redis schema.
//!
//! Nodes run without persistence (`--save '' --appendonly no`), so [`RedisServer::restart_empty`]
//! after [`RedisServer::kill9`] gives what an operator gets after a crash of a cache-only Redis: the
//! same address, no data, an empty script cache.
//!
//! [`RedisProbe`] reads what an operator reads with `redis-cli`: `HGETALL ws:{user}` (session id
//! -> server id) and `GET last_seen:{user}`. It opens a fresh connection per read, so it works
//! across restarts without reconnect logic of its own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::env;
use crate::process::{free_port, wait_listening, Proc};
use crate::time::eventually;

/// One `redis-server` process on its own port and directory.
pub struct RedisServer {
    name: String,
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    proc: Option<Proc>,
}

impl RedisServer {
    /// Starts a node on a free port, keeping its files in `dir`. `extra`: more `redis-server` flags.
    pub async fn start(name: &str, dir: &Path, extra: &[&str]) -> RedisServer {
        std::fs::create_dir_all(dir).expect("create redis dir");
        let mut r = RedisServer {
            name: name.to_owned(),
            port: free_port(),
            dir: dir.to_owned(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            proc: None,
        };
        r.spawn().await;
        r
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new(env::redis_server());
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--daemonize", "no", "--dir"])
        .arg(&self.dir)
        .args(&self.extra);
        let mut proc = Proc::spawn(&self.name, cmd, &self.dir.join("redis.log"));
        wait_listening(self.addr(), Duration::from_secs(10), &mut proc).await;
        self.proc = Some(proc);
    }

    /// The node's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no shutdown, no save.
    pub async fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9().await;
        }
    }

    /// Starts the node again on the same port (after [`RedisServer::kill9`]); it has no data.
    pub async fn restart_empty(&mut self) {
        assert!(self.proc.is_none(), "{}: restart_empty without kill9 first", self.name);
        self.spawn().await;
    }
}

/// A local Redis Cluster of three masters (no replicas), created with `redis-cli --cluster create`.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled nodes under `dir` and joins them into one cluster with all
    /// 16384 slots assigned; returns once every node reports `cluster_state:ok`.
    pub async fn start(dir: &Path) -> RedisCluster {
        let mut nodes = Vec::new();
        for i in 1..=3 {
            let node_dir = dir.join(format!("redis-cluster-{i}"));
            let conf = node_dir.join("nodes.conf");
            let conf = conf.to_str().expect("utf-8 path").to_owned();
            let flags = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &conf,
                "--cluster-node-timeout",
                "5000",
            ];
            nodes.push(RedisServer::start(&format!("redis-cluster-{i}"), &node_dir, &flags).await);
        }
        let cluster = RedisCluster { nodes };
        let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr().to_string()).collect();
        let out = tokio::process::Command::new(env::redis_cli())
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(30), out)
            .await
            .expect("redis-cli --cluster create timed out")
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for node in &cluster.nodes {
            let url = node.url();
            eventually(&format!("cluster_state:ok on {url}"), Duration::from_secs(15), || {
                let url = url.clone();
                async move {
                    let info: String = single_cmd(&url, redis::cmd("CLUSTER").arg("INFO")).await?;
                    if info.contains("cluster_state:ok") {
                        Ok(())
                    } else {
                        Err(info.lines().next().unwrap_or_default().to_owned())
                    }
                }
            })
            .await;
        }
        cluster
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3` (the server's `--redis-url` form).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(|n| n.addr().to_string()).collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// `redis://host:port` of each node.
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

async fn single_cmd<T: redis::FromRedisValue>(url: &str, cmd: &redis::Cmd) -> Result<T, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let fut = async {
        let mut con = client.get_multiplexed_async_connection().await?;
        cmd.query_async::<T>(&mut con).await
    };
    match tokio::time::timeout(Duration::from_secs(2), fut).await {
        Ok(r) => r.map_err(|e| format!("{url}: {e}")),
        Err(_) => Err(format!("{url}: no answer within 2 s")),
    }
}

/// Reads the product's Redis keys directly, as an operator would.
#[derive(Clone, Debug)]
pub enum RedisProbe {
    /// One node: `redis://host:port`.
    Single(String),
    /// A cluster: `redis://host:port` of each seed node.
    Cluster(Vec<String>),
}

impl RedisProbe {
    async fn query<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, String> {
        match self {
            RedisProbe::Single(url) => single_cmd(url, &cmd).await,
            RedisProbe::Cluster(urls) => {
                let client = redis::cluster::ClusterClient::new(urls.clone()).map_err(|e| e.to_string())?;
                let fut = async {
                    let mut con = client.get_async_connection().await?;
                    cmd.query_async::<T>(&mut con).await
                };
                match tokio::time::timeout(Duration::from_secs(3), fut).await {
                    Ok(r) => r.map_err(|e| format!("cluster: {e}")),
                    Err(_) => Err("cluster: no answer within 3 s".to_owned()),
                }
            }
        }
    }

    /// `HGETALL ws:{user}`: session id -> server id. Empty = offline.
    pub async fn try_sessions(&self, user: &str) -> Result<BTreeMap<String, String>, String> {
        self.query(redis::cmd("HGETALL").arg(format!("ws:{{{user}}}")).clone()).await
    }

    /// `HGETALL ws:{user}`; panics if Redis does not answer.
    pub async fn sessions(&self, user: &str) -> BTreeMap<String, String> {
        self.try_sessions(user).await.unwrap_or_else(|e| panic!("HGETALL ws:{{{user}}}: {e}"))
    }

    /// `EXISTS ws:{user}` (an empty hash does not exist in Redis).
    pub async fn ws_key_exists(&self, user: &str) -> bool {
        let n: i64 = self
            .query(redis::cmd("EXISTS").arg(format!("ws:{{{user}}}")).clone())
            .await
            .unwrap_or_else(|e| panic!("EXISTS ws:{{{user}}}: {e}"));
        n == 1
    }

    /// `GET last_seen:{user}`.
    pub async fn try_last_seen(&self, user: &str) -> Result<Option<String>, String> {
        self.query(redis::cmd("GET").arg(format!("last_seen:{{{user}}}")).clone()).await
    }

    /// `GET last_seen:{user}`; panics if Redis does not answer.
    pub async fn last_seen(&self, user: &str) -> Option<String> {
        self.try_last_seen(user).await.unwrap_or_else(|e| panic!("GET last_seen:{{{user}}}: {e}"))
    }

    /// Waits until `last_seen:{user}` holds `want`. Writes land asynchronously after the answer a
    /// reader got (the session end, then the refresh after DynamoDB's ack: docs/STORES.md,
    /// "Cache fill"), so checks of the cache poll instead of reading once.
    pub async fn wait_last_seen(&self, user: &str, want: &Option<String>, limit: Duration) {
        crate::time::eventually(&format!("last_seen:{{{user}}} = {want:?}"), limit, || async move {
            match self.try_last_seen(user).await? {
                v if &v == want => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }

    /// `GET last_seen_pending:{user}`: a session end recorded while `last_seen:{user}` was absent.
    pub async fn try_pending(&self, user: &str) -> Result<Option<String>, String> {
        self.query(redis::cmd("GET").arg(format!("last_seen_pending:{{{user}}}")).clone()).await
    }

    /// Waits until `last_seen_pending:{user}` holds `want`.
    pub async fn wait_pending(&self, user: &str, want: &Option<String>, limit: Duration) {
        crate::time::eventually(&format!("last_seen_pending:{{{user}}} = {want:?}"), limit, || async move {
            match self.try_pending(user).await? {
                v if &v == want => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }

    /// Waits until `ws:{user}` holds exactly the sessions of these servers (one entry per server id
    /// listed; a server id may repeat) and returns the hash.
    pub async fn wait_sessions_on(
        &self,
        user: &str,
        servers: &[&str],
        limit: Duration,
    ) -> BTreeMap<String, String> {
        let mut want: Vec<String> = servers.iter().map(|s| (*s).to_owned()).collect();
        want.sort();
        eventually(&format!("ws:{{{user}}} to hold sessions on {want:?}"), limit, || {
            let want = want.clone();
            async move {
                let h = self.try_sessions(user).await?;
                let mut have: Vec<String> = h.values().cloned().collect();
                have.sort();
                if have == want {
                    Ok(h)
                } else {
                    Err(format!("{h:?}"))
                }
            }
        })
        .await
    }
}
