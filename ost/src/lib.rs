//! # ost — the object storage target
//!
//! Owns: object storage (files in hashed subdirectories plus a fjall
//! index), the OST on ptlrpc's target framework — its store (changes,
//! object versions, client and server records in the index), its service
//! (what create, destroy, setattr, punch and write mean) and its front
//! hook (space admission and the bulk GET of a write outside the
//! target's lock; reads, getattr, statfs, sync served there) — so exports,
//! transnos, reply reconstruction, recovery with transno-ordered replay
//! and VBR are the framework's; grants and space, the commit thread,
//! metrics, the `sheen-oss` daemon's configuration, and an OST client on
//! ptlrpc's import (replay of uncommitted writes with their pages). See
//! `DESIGN.md`, section ost, and issue 6.
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
//! | `target` | one target's storage: format/open, changes, reads, grants, staged records, commit |
//! | `store` | the framework's `TargetStore`: versions, apply, records, commits |
//! | `service` | the framework's `TargetService`: plans per request, grants at connect |
//! | `front` | the driver's front hook: write admission + bulk, reads served outside the lock |
//! | `server` | targets + commit threads + one `TargetDriver`; clean shutdown |
//! | `metrics` | Prometheus families in the Lustre exporters' names |
//! | `config` | `sheen-oss` TOML config, validated with errors naming the key |
//! | `mgs_reg` | registering the targets with the MGS at start (retried until it answers) |
//! | `client` | a minimal OST client on an `ImportDriver`: BRW with pages kept for replay |
//! | `error` | `OstError` and its errno |
//!
//! ## Invariants
//!
//! - A write's space is admitted before its bulk GET; ENOSPC is never
//!   answered after data was acknowledged.
//! - `last_committed` only advances after every object written up to it
//!   was fdatasynced and the index persisted with `SyncAll`; the index on
//!   disk holds exactly the last commit (records wait in memory until
//!   then), so a restart starts from a committed state and clients replay
//!   the rest.
//! - Only the data write and the index staging of a change run under the
//!   target's lock; bulk transfers and reads never do.
//! - A directory is formatted once; opening checks its label; nothing
//!   that exists is overwritten.

//! ## Not yet
//!
//! - SIGTERM's notice reaches the clients that send within its second;
//!   an idle client learns of the stop when its next ping fails (every
//!   obd_timeout/4) or from the MGS's restart notice.
//! - Client records are in ptlrpc's record form 2 (reply slots): a target
//!   formatted before holds records of the older form, which do not decode
//!   (the target refuses to open, naming the index); there is no upgrade.
//! - Several writes in flight per client show no throughput gain on the
//!   two-core test machine (README, ost-bench): the data write runs under
//!   the target's lock, one at a time per target.

#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod error;
pub mod front;
pub mod index;
pub mod label;
pub mod metrics;
pub mod mgs_reg;
pub mod objects;
pub mod server;
pub mod service;
pub mod space;
pub mod store;
pub mod target;

pub use client::OstClient;
pub use config::OssConfig;
pub use error::OstError;
pub use server::OstServer;
pub use target::{DIRECT_IO_MIN, Ost, OstConfig};
