//! # ptlrpc — the RPC layer Sheen's services stand on
//!
//! Owns: the wire format of every service ([`wire`]), and the sans-IO
//! protocol machinery built on it: adaptive timeouts and early-reply
//! scheduling ([`at`]), the pinger ([`pinger`]) and the export evictor
//! ([`evictor`]), one request's client-side life ([`request`]), portal
//! conventions ([`portals`]), named fault points ([`fault`]), protocol time
//! ([`time`]), and — behind the `sim` feature — the deterministic simulator
//! that drives these state machines in tests ([`sim`]). The [`driver`] runs
//! them over lnet and tokio: clients, services, bulk, metrics.
//!
//! Must not: perform I/O, read a clock, sleep or draw unseeded randomness
//! anywhere outside [`driver`], [`admin`] (the HTTP admin endpoint) and
//! [`cpt`] (which talks to the OS for topology and binding). Every state machine takes `now` and events and
//! returns actions. Connections, imports ([`import`]), the target framework
//! with exports, transnos, reply reconstruction and recovery/VBR
//! ([`target`]) follow `DESIGN.md`, section ptlrpc.
//!
//! ## Code map
//!
//! | module | job |
//! | --- | --- |
//! | `wire::header` | the 160-byte little-endian header, by hand, pinned by golden bytes |
//! | `wire::opcode` | the opcode registry (Lustre numbers) and MDS reint sub-ops |
//! | `wire::message` | header + rkyv body; bodies validated before use |
//! | `wire::error` | typed decode/encode errors and their errno |
//! | `wire::bulk` | bulk descriptors (match bits, length, CRC32C), BRW bodies |
//! | `request` | xid sequence; one request's deadline, early replies, resends |
//! | `portals` | request/reply/bulk portal numbers, reply offsets |
//! | `fault` | typed fault points and triggers, shared injector |
//! | `driver` | lnet/tokio I/O: client, services, workers, bulk, metrics, echo |
//! | `driver::import_driver` | runs an `Import` (one mutex, one task): async connect/rpc, pinger, imperative recovery |
//! | `driver::target_driver` | runs `Target`s (one or several) as one service: routing, front hooks (work outside the target lock: bulk, reads), timer tasks, events, recovery metrics |
//! | `driver::file_store` | a log-structured `TargetStore`, fsync'd by a commit thread (tests, kv target) |
//! | `driver::kv` | the key-value service the `kv-target` binary serves (process-level recovery tests) |
//! | `admin` | HTTP: `/metrics` and run-time fault injection (`/faults`) |
//! | `cpt` | CPU partitions from the hwloc topology; bound worker threads |
//! | `at` | AT estimator (4 bins), client deadlines, server early replies |
//! | `config_log` | following an MGS's config log: long-poll reads, give-up and retry, each record once |
//! | `pinger` | per-import ping schedule, missed ping -> DISCON event |
//! | `evictor` | server side: exports silent for 6 ping intervals -> evict event |
//! | `import` | client connection state machine: connect/failover, lists, replay, eviction |
//! | `ldlm` | the lock manager: modes, inode bits, the server's lock table, blocking callbacks and their timeout |
//! | `target` | exports, connect negotiation, transnos, client records, recovery, VBR, admission for front hooks |
//! | `seeded` | seeded RNG for handle cookies and reconnect jitter |
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

pub mod admin;
pub mod at;
pub mod config_log;
pub mod cpt;
pub mod driver;
pub mod evictor;
pub mod fault;
pub mod import;
pub mod ldlm;
pub mod pinger;
pub mod portals;
pub mod request;
pub mod seeded;
pub mod target;
pub mod time;
pub mod wire;

#[cfg(any(test, feature = "sim"))]
pub mod sim;

pub use time::{Clock, Time};
