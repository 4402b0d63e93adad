//! # ost — the object storage target
//!
//! Owns: object storage (files in hashed subdirectories plus a fjall
//! index), the OST request handler (connect with grant/brw-size/checksum
//! negotiation, create and precreate, destroy, getattr/setattr, punch,
//! BRW read/write with niobufs and server-driven bulk, sync, statfs, last
//! id), grants and space, the commit thread, metrics, the `sheen-oss`
//! daemon's configuration, and a small OST client used by tests and the
//! benchmark. See `DESIGN.md`, section ost, and issue 6.
//!
//! Must not: use `unsafe` (rustix wraps fallocate/statvfs/fdatasync),
//! panic on network or disk input, or acknowledge data it cannot keep.
//!
//! ## Code map
//!
//! | module | job |
//! | --- | --- |
//! | `label` | the `LABEL` file: fs uuid, target name and index |
//! | `index` | fjall index: object records, last id, server and client records |
//! | `objects` | object files, vectored I/O of niobuf runs (optional `O_DIRECT`, readahead on a cache miss), punch, fdatasync, write order |
//! | `space` | statvfs, grants, ENOSPC before data moves |
//! | `target` | one target: format/open, exports, transnos, operations, commit |
//! | `handler` | the ptlrpc `Handler`: routing, BRW with bulk, accounting |
//! | `resend` | bounded cache of replies to recent modifying requests (resends) |
//! | `server` | targets + commit threads + the service; clean shutdown |
//! | `metrics` | Prometheus families in the Lustre exporters' names |
//! | `config` | `sheen-oss` TOML config, validated with errors naming the key |
//! | `mgs_reg` | registering the targets with the MGS at start (retried until it answers) |
//! | `client` | a minimal OST client: connect, BRW, replay of uncommitted writes |
//! | `error` | `OstError` and its errno |
//!
//! ## Invariants
//!
//! - A write's space is admitted before its bulk GET; ENOSPC is never
//!   answered after data was acknowledged.
//! - `last_committed` only advances after every object written up to it
//!   was fdatasynced and the index persisted with `SyncAll`.
//! - A directory is formatted once; opening checks its label; nothing
//!   that exists is overwritten.

#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod error;
pub mod handler;
pub mod index;
pub mod label;
pub mod metrics;
pub mod mgs_reg;
pub mod objects;
pub mod resend;
pub mod server;
pub mod space;
pub mod target;

pub use client::OstClient;
pub use config::OssConfig;
pub use error::OstError;
pub use handler::OstHandler;
pub use server::OstServer;
pub use target::{Ost, OstConfig};
