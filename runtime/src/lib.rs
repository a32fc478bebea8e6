//! The presence server runtime: runs the sans-IO core (`presence-core`) for real.
//!
//! | module      | role                                                                          |
//! |-------------|-------------------------------------------------------------------------------|
//! | [`server`]  | the listener: HTTP routes, auth, Origin check, WebSocket upgrade; its JSON endpoints in `server/api.rs` |
//! | [`edge`]    | limits before a session: handshakes, sessions per user and IP, dev-mode Host  |
//! | `status`    | the core's snapshot behind `/readyz` and `/metrics`, refreshed at most 1/s    |
//! | [`ws`]      | one WebSocket connection: socket on one side, the driver on the other         |
//! | [`driver`]  | the one task that owns the core: feeds it inputs, executes its effects        |
//! | [`privacy`] | privacy settings and contact lists: backends, the per-server cache, the API JSON |
//! | [`store`]   | executors for Redis, Redis Cluster, DynamoDB and the embedded defaults        |
//! | [`auth`]    | HS256 JWT verification and issuing                                            |
//! | [`client`]  | the command-line client: `query` and `watch` a running deployment             |
//! | [`clock`]   | the wall clock behind a trait; tokio's (virtual under turmoil) monotonic time |
//! | [`metrics`] | Prometheus text rendering                                                     |
//! | [`config`]  | the command line (`clap`), every flag also an environment variable            |
//! | [`demo`]    | the demo page served at `GET /` (static HTML, CSS, JS built into the binary)  |
//!
//! Everything is generic over the listener, the stores and the wall clock, so the simulation
//! (`presence-sim`) runs this very code over turmoil's network.

pub mod auth;
pub mod client;
pub mod clock;
pub mod config;
pub mod demo;
pub mod driver;
pub mod edge;
pub mod metrics;
pub mod privacy;
pub(crate) mod proofs;
pub mod server;
pub(crate) mod status;
pub mod store;
#[cfg(test)]
mod test_dir;
pub mod ws;
