//! Deterministic simulation of the presence service.
//!
//! The real runtime (`presence_runtime::server::serve`: hyper, tokio-tungstenite, the driver, the
//! core, the real `redis` client) runs on turmoil hosts over a simulated network, against a Redis
//! host that speaks RESP and loses its data when it crashes, and an in-process DynamoDB stand-in.
//! Simulated devices hold real WebSocket sessions with real tokens. A nemesis drawn from the seed
//! partitions, clogs, crashes, restarts, throttles and skews clocks; a quiet phase at the end lets
//! the system converge; oracles check invariants I1-I10 of `design-notes.md` section 5 against a
//! reference model. `docs/SIMULATION.md` is the manual.
//!
//! | module        | role                                                                   |
//! |---------------|------------------------------------------------------------------------|
//! | [`world`]     | shared state of one run                                                |
//! | [`params`]    | parameters, planted bugs, timing bounds, the epoch (depends on nothing) |
//! | [`witness`]   | what the stand-ins see of the run: clock, trace, live violations       |
//! | [`server_host`] | a WS server host: the real runtime over turmoil                      |
//! | [`redis_host`]| the Redis host's state: commands, and the real Lua scripts (data dies with it) |
//! | [`redis_server`] | the Redis host's software: RESP over turmoil TCP, pub/sub delivery  |
//! | [`dynamo`]    | the DynamoDB stand-in (`DurableStore`) with fault windows              |
//! | [`clock`]     | per-server skewed, stepping wall clocks from virtual time              |
//! | [`device`]    | simulated users' devices (tokio-tungstenite clients) and the `/readyz` probe |
//! | [`nemesis`]   | the seeded fault schedule and its execution                            |
//! | [`model`]     | the reference model: sessions as clients saw them, answers, faults     |
//! | [`settings`]  | the settings host: privacy changes through the real HTTP API           |
//! | [`oracle`]    | the invariant checks                                                   |
//! | [`privacy_oracle`] | I10: what each viewer received against the privacy rule in force  |
//! | [`run`]       | one seed end to end; traces and replay lines                           |

pub mod clock;
pub mod device;
pub mod dynamo;
pub mod model;
pub mod nemesis;
pub mod oracle;
pub mod params;
pub mod privacy_oracle;
pub mod redis_host;
pub mod redis_server;
pub mod rng;
pub mod run;
pub mod server_host;
pub mod settings;
pub mod trace;
pub mod witness;
pub mod world;

pub use run::{replay_line, run_seed, write_trace, Outcome};
pub use world::{Params, Plant};
