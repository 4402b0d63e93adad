//! # ptlrpc — the RPC layer Sheen's services stand on
//!
//! Owns: the wire format of every service ([`wire`]), and the sans-IO
//! protocol machinery built on it: adaptive timeouts and early-reply
//! scheduling ([`at`]), the pinger ([`pinger`]) and the export evictor ([`evictor`]),
//! protocol time ([`time`]), and — behind the `sim` feature — the
//! deterministic simulator that drives these state machines in tests
//! ([`sim`]).
//!
//! Must not: perform I/O, read a clock, sleep or draw unseeded randomness
//! anywhere outside a driver. Every state machine takes `now` and events
//! and returns actions through `poll_*` methods. The lnet-backed driver,
//! services on CPU partitions, bulk and imports/exports come next (issue 4
//! and 5); see `DESIGN.md`, section ptlrpc.

#![forbid(unsafe_code)]

pub mod at;
pub mod evictor;
pub mod pinger;
pub mod time;
pub mod wire;

#[cfg(any(test, feature = "sim"))]
pub mod sim;

pub use time::{Clock, Time};
