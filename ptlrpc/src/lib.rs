//! # ptlrpc — the RPC layer Sheen's services stand on
//!
//! Owns: the wire format of every service ([`wire`]), and the sans-IO
//! protocol machinery built on it: adaptive timeouts and early-reply
//! scheduling ([`at`]), the pinger ([`pinger`]) and the export evictor
//! ([`evictor`]), protocol time ([`time`]), and — behind the `sim` feature —
//! the deterministic simulator that drives these state machines in tests
//! ([`sim`]).
//!
//! Must not: perform I/O, read a clock, sleep or draw unseeded randomness
//! anywhere outside a driver. Every state machine takes `now` and events
//! and returns actions through `poll_*` methods. The lnet-backed driver,
//! services on CPU partitions, bulk and imports/exports come next (issues 4
//! and 5); see `DESIGN.md`, section ptlrpc.
//!
//! ## Code map
//!
//! | module | job |
//! | --- | --- |
//! | `wire::header` | the 144-byte little-endian header, by hand, pinned by golden bytes |
//! | `wire::opcode` | the opcode registry (Lustre numbers) and MDS reint sub-ops |
//! | `wire::message` | header + rkyv body; bodies validated before use |
//! | `wire::error` | typed decode/encode errors and their errno |
//! | `at` | AT estimator (4 bins), client deadlines, server early replies |
//! | `pinger` | per-import ping schedule, missed ping -> DISCON event |
//! | `evictor` | server side: exports silent for 6 ping intervals -> evict event |
//! | `sim` | virtual clock, faulty network, crashes, seeds, traces |
//!
//! ## Invariants
//!
//! - No decoder panics: every malformed input is a [`wire::DecodeError`]
//!   (property tests and the `msg_decode` fuzz target hold the line).
//! - Nothing here reads a clock: time enters only as [`Time`] arguments.
//! - Early replies never enter an AT history; deadlines never shrink.
//! - Every queue and table has a bound (pending requests, exports, portals,
//!   tracked pings, message body size, simulator events).

#![forbid(unsafe_code)]

pub mod at;
pub mod cpt;
pub mod evictor;
pub mod pinger;
pub mod time;
pub mod wire;

#[cfg(any(test, feature = "sim"))]
pub mod sim;

pub use time::{Clock, Time};
