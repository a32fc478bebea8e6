//! The integration harness: real processes on loopback, real WebSocket clients, direct store reads.
//!
//! Every scenario in `tests/tests/*.rs` is one behaviour of the product shown against the
//! components an operator runs: `redis-server` (single node or a three-master cluster), `dynalite`
//! (a DynamoDB-compatible server) and `presence-server` processes built from this workspace. Each
//! test is isolated: its own temporary directory, ports, Redis, dynalite and DynamoDB table.
//!
//! | module        | role                                                                         |
//! |---------------|------------------------------------------------------------------------------|
//! | [`env`](mod@env) | the required environment (`PRESENCE_TEST_*`, `PRESENCE_SERVER_BIN`); fails with what to install |
//! | [`process`]   | a child process that is always killed and reaped on drop (even on panic), free ports |
//! | [`stack`]     | [`Stack`]: one test's directory, Redis, dynalite, table and JWT secret       |
//! | [`redis`]     | start/kill/restart `redis-server`, a local cluster, and read `ws:{u}` / `last_seen:{u}` |
//! | [`dynamo`]    | start/kill/restart dynalite, and read `last_seen` with `ConsistentRead`      |
//! | [`server`]    | start/stop `presence-server` processes with short timeouts                   |
//! | [`cli`]       | the `presence-server query` / `watch` command-line client, run as a process  |
//! | [`client`]    | [`WsClient`]: a WebSocket client speaking the JSON protocol; can go silent   |
//! | [`http`]      | a minimal HTTP/1.1 client for `/healthz`, `/readyz`, `/v1/presence`          |
//! | [`token`]     | HS256 tokens: valid, expired, forged and `alg: none`                         |
//! | [`time`]      | wall-clock milliseconds, the fixed-width RFC 3339 form, and polling with a deadline |
//! | [`scenarios`] | scenario bodies shared by several test files (seed, several devices)         |
//!
//! The tests need services, so every test is `#[ignore]`d with the reason; `scripts/test` installs
//! the services, exports the variables [`env`](mod@env) reads, and runs the suite with `--include-ignored`.
//! A test that runs without them fails with a message naming what to install; it never skips.
//!
//! Timing: servers run with a 200 ms ping interval and a 1 s heartbeat timeout, and every wait is
//! a poll against a deadline ([`time::eventually`]) rather than a fixed sleep, so the suite stays
//! fast. When a test fails, the tail of every process log is printed and its directory is kept.

pub mod cli;
pub mod client;
pub mod dynamo;
pub mod env;
pub mod http;
pub mod process;
pub mod redis;
pub mod scenarios;
pub mod server;
pub mod stack;
pub mod time;
pub mod token;

pub use client::{CloseInfo, Entry, WsClient};
pub use server::{PresenceServer, ServerSpec};
pub use stack::Stack;
pub use time::{eventually, now_ms, rfc3339};
