//! `presence-server` processes.
//!
//! [`ServerSpec`] is the command line: the harness defaults (short timeouts, a fixed JWT secret,
//! a data directory inside the test's directory) plus the stores of the test's [`crate::Stack`];
//! tests override single flags with [`ServerSpec::arg`]. [`ServerSpec::start`] runs the binary with
//! `--listen 127.0.0.1:0`, reads the address it prints (and the admin listener's, with
//! `--admin-listen`), and waits for `/healthz` and `/readyz`.
//!
//! `/readyz` and `/metrics` answer from a snapshot of the core up to a second old;
//! [`PresenceServer::readyz`] and [`PresenceServer::metric`] wait for one taken after they asked,
//! so a test reads the state its last action left.
//!
//! The child gets a clean environment for its own settings: every inherited `PRESENCE_*` and
//! `AWS_*` variable is removed, so only the flags below configure it.
//!
//! | flag                  | harness default | why                                                   |
//! |-----------------------|-----------------|-------------------------------------------------------|
//! | `--ping-interval`     | 200ms           | dead connections are found fast...                    |
//! | `--heartbeat-timeout` | 1s              | ...so the ungraceful scenarios take about a second    |
//! | `--handshake-timeout` | 2s              |                                                       |
//! | `--store-timeout`     | 1s              | outages are noticed quickly                           |
//! | `--shutdown-timeout`  | 5s              | a stuck shutdown fails the test instead of hanging it |

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use crate::client::{ConnectError, ConnectOptions, Entry, WsClient};
use crate::http;
use crate::process::Proc;
use crate::time::eventually;
use crate::token;

/// The command line of one server.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    id: String,
    dir: PathBuf,
    secret: String,
    args: Vec<(String, Option<String>)>,
}

impl ServerSpec {
    /// A server with id `id` whose files live under `dir`, with the harness defaults and no stores
    /// (embedded ones in its data directory).
    pub fn new(id: &str, dir: &Path, secret: &str) -> ServerSpec {
        let data = dir.join(format!("{id}-data"));
        let spec = ServerSpec {
            id: id.to_owned(),
            dir: dir.to_owned(),
            secret: secret.to_owned(),
            args: Vec::new(),
        };
        spec.arg("--listen", "127.0.0.1:0")
            .arg("--server-id", id)
            .arg("--jwt-secret", secret)
            .arg("--data-dir", data.to_str().expect("utf-8 path"))
            .arg("--ping-interval", "200ms")
            .arg("--heartbeat-timeout", "1s")
            .arg("--handshake-timeout", "2s")
            .arg("--store-timeout", "1s")
            .arg("--lease-ttl", "2s")
            .arg("--lease-renew-interval", "500ms")
            .arg("--offline-grace", "0s")
            .arg("--shutdown-timeout", "5s")
    }

    /// Sets `flag` to `value`, replacing an earlier value.
    pub fn arg(mut self, flag: &str, value: &str) -> ServerSpec {
        self.args.retain(|(f, _)| f != flag);
        self.args.push((flag.to_owned(), Some(value.to_owned())));
        self
    }

    /// Removes `flag` (e.g. the harness's `--jwt-secret`, to pass `--jwt-secret-file` instead).
    pub fn without(mut self, flag: &str) -> ServerSpec {
        self.args.retain(|(f, _)| f != flag);
        self
    }

    fn value(&self, flag: &str) -> Option<&str> {
        self.args.iter().find(|(f, _)| f == flag).and_then(|(_, v)| v.as_deref())
    }

    /// Adds a flag without value (e.g. `--create-table`).
    pub fn flag(mut self, flag: &str) -> ServerSpec {
        self.args.retain(|(f, _)| f != flag);
        self.args.push((flag.to_owned(), None));
        self
    }

    /// The server id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(crate::env::server_bin());
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("PRESENCE_") || k.starts_with("AWS_") {
                cmd.env_remove(&*k);
            }
        }
        cmd.env("RUST_LOG", "info").env("RUST_BACKTRACE", "1");
        for (k, v) in &self.args {
            cmd.arg(k);
            if let Some(v) = v {
                cmd.arg(v);
            }
        }
        cmd
    }

    /// Starts the server and waits until it is healthy and ready.
    pub async fn start(self) -> PresenceServer {
        let mut server = PresenceServer { spec: self, addr: None, admin: None, proc: None };
        server.spawn().await;
        server
    }
}

/// A running `presence-server`; killed on drop.
pub struct PresenceServer {
    spec: ServerSpec,
    addr: Option<SocketAddr>,
    /// The admin listener's address (with `--admin-listen`).
    admin: Option<SocketAddr>,
    proc: Option<Proc>,
}

impl PresenceServer {
    async fn spawn(&mut self) {
        let mut spec = self.spec.clone();
        if let Some(addr) = self.addr {
            // A restart keeps the address, so clients and tests can reconnect to the same place.
            spec = spec.arg("--listen", &addr.to_string());
        }
        if let Some(admin) = self.admin {
            spec = spec.arg("--admin-listen", &admin.to_string());
        }
        let with_admin = spec.value("--admin-listen").is_some();
        let log = self.spec.dir.join(format!("{}.log", self.spec.id));
        let offset = std::fs::metadata(&log).map_or(0, |m| m.len() as usize);
        let mut proc = Proc::spawn(&format!("presence-server {}", self.spec.id), spec.command(), &log);
        let addr =
            eventually(&format!("{} to print its address", self.spec.id), Duration::from_secs(30), || {
                let found = listening_addr(&log, offset, PUBLIC_LINE);
                let admin =
                    if with_admin { listening_addr(&log, offset, ADMIN_LINE).map(Some) } else { Some(None) };
                let exited = proc.try_exit();
                async move {
                    if let Some(status) = exited {
                        return Err(format!("exited with {status:?}"));
                    }
                    found.zip(admin).ok_or_else(|| "not listening yet".to_owned())
                }
            })
            .await;
        let (addr, admin) = addr;
        proc.assert_running();
        self.addr = Some(addr);
        self.admin = admin;
        self.proc = Some(proc);
        let health = self.health_addr();
        eventually(
            &format!("{} /healthz and /readyz", self.spec.id),
            Duration::from_secs(20),
            || async move {
                let h = http::get(addr, "/healthz").await?;
                let r = http::get(health, "/readyz").await?;
                if h.status == 200 && r.status == 200 {
                    Ok(())
                } else {
                    Err(format!("/healthz {} /readyz {} {}", h.status, r.status, r.body))
                }
            },
        )
        .await;
    }

    /// The server id.
    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("server started")
    }

    /// The admin listener's address, if the server has one (`--admin-listen`).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Where `/readyz` and `/metrics` are served: the admin listener if any, else the public one.
    pub fn health_addr(&self) -> SocketAddr {
        self.admin.unwrap_or_else(|| self.addr())
    }

    /// A valid token for `user`, signed with this server's secret.
    pub fn token(&self, user: &str) -> String {
        token::valid(&self.spec.secret, user)
    }

    /// A token for `user` signed with this server's secret, expiring at `exp` (Unix seconds).
    pub fn token_with_exp(&self, user: &str, exp: i64) -> String {
        token::with_exp(&self.spec.secret, user, exp)
    }

    /// Connects `user` with `token`; panics if refused.
    pub async fn connect_token(&self, user: &str, token: &str) -> WsClient {
        let options = ConnectOptions { token: Some(token.to_owned()), ..ConnectOptions::default() };
        WsClient::connect(self.addr(), user, &options)
            .await
            .unwrap_or_else(|e| panic!("{user} could not connect to {}: {e:?}", self.id()))
    }

    /// `GET /v1/presence?users=...` as `as_user`, whatever the answer (status, headers, body).
    pub async fn try_presence_http(&self, as_user: &str, users: &[&str]) -> http::Response {
        let path = format!("/v1/presence?users={}", users.join(","));
        let auth = format!("Bearer {}", self.token(as_user));
        http::request(self.addr(), "GET", &path, &[("Authorization", &auth)])
            .await
            .unwrap_or_else(|e| panic!("{} GET {path}: {e}", self.id()))
    }

    /// A service token (`scope` claim) signed with this server's secret.
    pub fn service_token(&self, scope: &str) -> String {
        token::service(&self.spec.secret, "backend", scope)
    }

    /// `method path` with `token` and a JSON `body` (empty for none), whatever the answer.
    pub async fn api(&self, token: &str, method: &str, path: &str, body: &str) -> http::Response {
        let auth = format!("Bearer {token}");
        let len = body.len().to_string();
        let headers = [
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
            ("Content-Length", len.as_str()),
        ];
        http::request_with_body(self.addr(), method, path, &headers, body)
            .await
            .unwrap_or_else(|e| panic!("{} {method} {path}: {e}", self.id()))
    }

    /// `PUT /v1/me/privacy` as `user`; panics unless 200. Returns the answer's settings.
    pub async fn set_privacy(&self, user: &str, settings: serde_json::Value) -> serde_json::Value {
        let r = self.api(&self.token(user), "PUT", "/v1/me/privacy", &settings.to_string()).await;
        assert_eq!(r.status, 200, "{user} PUT /v1/me/privacy: {}", r.body);
        r.json()
    }

    /// `PUT /v1/me/contacts` as `user`; panics unless 200.
    pub async fn set_contacts(&self, user: &str, contacts: &[&str]) {
        let body = serde_json::json!({ "contacts": contacts }).to_string();
        let r = self.api(&self.token(user), "PUT", "/v1/me/contacts", &body).await;
        assert_eq!(r.status, 200, "{user} PUT /v1/me/contacts: {}", r.body);
    }

    /// Connects `user` with a valid token; panics if refused.
    pub async fn connect(&self, user: &str) -> WsClient {
        let options = ConnectOptions { token: Some(self.token(user)), ..ConnectOptions::default() };
        WsClient::connect(self.addr(), user, &options)
            .await
            .unwrap_or_else(|e| panic!("{user} could not connect to {}: {e:?}", self.id()))
    }

    /// Connects with explicit options (tokens, Origin); the error carries the HTTP status.
    pub async fn connect_with(&self, user: &str, options: &ConnectOptions) -> Result<WsClient, ConnectError> {
        WsClient::connect(self.addr(), user, options).await
    }

    /// `GET path` on this server.
    pub async fn get(&self, path: &str) -> http::Response {
        http::get(self.addr(), path).await.unwrap_or_else(|e| panic!("{} GET {path}: {e}", self.id()))
    }

    /// A counter or gauge from `GET /metrics` (the unlabelled sample named `name`), from a
    /// snapshot of the core taken after this call began.
    pub async fn metric(&self, name: &str) -> u64 {
        let body = self.fresh("/metrics").await.body;
        sample(&body, name).unwrap_or_else(|| panic!("{}: no metric {name} in /metrics", self.id())) as u64
    }

    /// `GET path` (`/readyz` or `/metrics`) on [`Self::health_addr`], again until the answer's
    /// snapshot of the core was taken after the first request was sent.
    pub async fn fresh(&self, path: &str) -> http::Response {
        let asked = std::time::Instant::now();
        let addr = self.health_addr();
        eventually(
            &format!("{} {path} from a fresh snapshot", self.id()),
            Duration::from_secs(5),
            || async move {
                let r = http::get(addr, path).await?;
                let age_ms = if path == "/readyz" {
                    r.json()["snapshot_age_ms"].as_f64()
                } else {
                    sample(&r.body, "presence_status_snapshot_age_seconds").map(|s| s * 1000.0)
                };
                match age_ms {
                    // The age is shown in whole milliseconds (rounded down): a snapshot is
                    // surely newer than the request only if `age + 1 ms` fits in the time since.
                    Some(age) if age + 1.0 <= asked.elapsed().as_secs_f64() * 1000.0 => Ok(r),
                    Some(age) => Err(format!("snapshot {age} ms old")),
                    // No driver (shutting down): the answer is as fresh as it gets.
                    None if r.status == 503 => Ok(r),
                    None => Err(format!("no snapshot age in {}", r.body)),
                }
            },
        )
        .await
    }

    /// `GET /healthz` status.
    pub async fn healthz(&self) -> u16 {
        self.get("/healthz").await.status
    }

    /// `GET /readyz`: status and JSON body, from a snapshot taken after this call began.
    pub async fn readyz(&self) -> (u16, serde_json::Value) {
        let r = self.fresh("/readyz").await;
        (r.status, r.json())
    }

    /// `GET /v1/presence?users=...` as `as_user`.
    pub async fn presence_http(&self, as_user: &str, users: &[&str]) -> Vec<Entry> {
        let path = format!("/v1/presence?users={}", users.join(","));
        let auth = format!("Bearer {}", self.token(as_user));
        let r = http::request(self.addr(), "GET", &path, &[("Authorization", &auth)])
            .await
            .unwrap_or_else(|e| panic!("{} GET {path}: {e}", self.id()));
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.json()["users"].as_array().expect("users").iter().map(Entry::from_json).collect()
    }

    /// Panics (with the log's tail) if the process has exited.
    pub fn assert_running(&mut self) {
        self.proc.as_mut().expect("server running").assert_running();
    }

    /// SIGTERM, then waits up to `limit` for the exit; returns the exit status.
    pub async fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let mut proc = self.proc.take().expect("server running");
        proc.terminate(limit).await
    }

    /// Sends `signal` to the running server (e.g. `SIGSTOP`: silent, sockets open, no FIN).
    pub fn signal(&mut self, signal: i32) {
        self.proc.as_mut().expect("server running").signal(signal);
    }

    /// SIGKILL (a crash), then waits for the exit.
    pub async fn kill9(&mut self) {
        let mut proc = self.proc.take().expect("server running");
        proc.kill9().await;
    }

    /// Starts the server again with the same flags and address (after terminate or kill9).
    pub async fn restart(&mut self) {
        assert!(self.proc.is_none(), "{}: restart while running", self.id());
        self.spawn().await;
    }

    /// The process id of the running server.
    pub fn pid(&self) -> u32 {
        self.proc.as_ref().expect("server running").pid()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.spec.dir.join(format!("{}.log", self.spec.id))).unwrap_or_default()
    }
}

const PUBLIC_LINE: &str = "presence-server listening on http://";
const ADMIN_LINE: &str = "presence-server admin listening on http://";

/// The address in the first line starting with `prefix` (`PREFIX` + ADDR) written after `offset`.
fn listening_addr(log: &Path, offset: usize, prefix: &str) -> Option<SocketAddr> {
    let text = std::fs::read(log).ok()?;
    let text = String::from_utf8_lossy(text.get(offset..)?);
    let line = text.lines().find(|l| l.starts_with(prefix))?;
    let rest = line.strip_prefix(prefix)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The value of the unlabelled sample `name` in a Prometheus text answer.
pub fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
