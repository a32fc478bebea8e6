//! The presence server runtime.
#![warn(missing_docs, unreachable_pub)]

pub mod store;
