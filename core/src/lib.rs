//! The presence service's core: the whole presence logic as a sans-IO state machine.
//!
//! "Is Bob online, and if not, when was he last seen?" This crate decides every answer and every
//! write, and does no I/O: the runtime (`presence-runtime`) feeds it inputs with the time they
//! happened and executes the effects it asks for; the simulation, the fuzzers and the property tests
//! feed it the same way. Modules:
//!
//! - [`machine`]: the state machine ([`Presence`]): `handle(now, input)`, drain `poll_effect`,
//!   `poll_timeout`. Heartbeat, session ends, retries, coalescing, queries.
//! - [`frame`] and [`codec`]: the public wire protocol (`docs/PROTOCOL.md`), JSON and binary.
//! - [`privacy`]: who may see a user's online state and last seen (docs/PRIVACY.md), a pure function.
//! - [`store`]: the operations the core asks of the registry (Redis) and the durable store (DynamoDB).
//! - [`time`]: monotonic and wall-clock time as handed in; RFC 3339 formatting.
//! - [`user`]: validated user and session ids.
//! - [`config`]: tunables and their defaults.
//! - [`ratelimit`]: token buckets (the core's budgets, and the runtime's per-connection frame rate).
//! - `testkit` (feature `testkit`, enabled only by this crate's own tests): in-memory stores with
//!   the registry's and DynamoDB's semantics, the test model of `tests/model.rs`.
//!
//! Features: `testkit` (above) and `planted-bugs` (`Config::planted_bug`, bugs planted on purpose
//! so the simulation can prove its oracles catch them; only `presence-sim` enables it, so the
//! server binary cannot contain them).

mod clock;
pub mod codec;
pub mod config;
pub mod frame;
pub mod machine;
pub mod privacy;
pub mod ratelimit;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod time;
pub mod user;

pub use config::Config;
pub use machine::{
    close_code, ConnId, Effect, EndReason, Input, LookupError, LookupId, OutMessage, Presence, Readiness,
    Scopes, Stats, TokenGrant,
};
