//! The lnet-backed driver: where ptlrpc does I/O.
//!
//! Owns: the client ([`Client`], [`RequestSet`]), the import and target
//! drivers ([`ImportDriver`], [`TargetDriver`]) with a small file-backed
//! store ([`FileStore`]) and a key-value service for tests ([`kv`]),
//! services ([`Service`],
//! its request buffers, per-CPT queues, workers and early-reply timer),
//! the [`Handler`] and [`Policy`] traits, server-driven bulk with CRC32C,
//! per-service metrics, the echo service, and [`DriverClock`], the real
//! clock the sans-IO parts are fed from.
//!
//! Must not: put protocol decisions here. Deadlines, resends, early-reply
//! schedules and estimates are the sans-IO modules' (`request`, `at`); this
//! layer moves bytes, sleeps and wakes, and feeds them `now`.
//!
//! | file | job |
//! | --- | --- |
//! | `client` | imports-lite: xids, reply MDs, send, resend, early replies, bulk, request sets |
//! | `transport` | the shared lnet plumbing: reply MDs, request PUTs, unlink-on-drop |
//! | `import_driver` | a sans-IO `Import` on lnet/tokio: one mutex, one task, async rpc |
//! | `target_driver` | sans-IO `Target`s as one service: routing, front hooks, timer tasks, events |
//! | `target_metrics` | `recovery_status_*` and eviction metrics per target |
//! | `file_store` | a log-structured `TargetStore` with a commit (fsync) thread |
//! | `kv` | the key-value demo/test service on `FileStore` |
//! | `service` | config, start/stop, request buffers, accept path, queues |
//! | `worker` | workers per CPT, replies, early-reply timer |
//! | `handler` | `Request`, `Reply`, `Handler`, `ReqCtx` |
//! | `bulk` | server GET/PUT of client pages, CRC32C, corruption fault |
//! | `bulk_then` | GET/PUT whose completion answers the request on lnet's thread |
//! | `policy` | `Policy` trait, FIFO |
//! | `metrics` | prometheus-client metrics per service, text rendering |
//! | `echo` | the echo service handler |
//! | `error` | `RpcError`, `Errno`, `BulkError`, `ServiceError` |

mod bulk;
mod bulk_then;
mod client;
mod echo;
mod error;
pub mod file_store;
mod handler;
mod import_driver;
mod jobid;
pub mod kv;
mod metrics;
mod policy;
mod service;
mod target_driver;
mod target_metrics;
mod transport;
mod worker;

use std::time::Instant;

pub use bulk::{checksum, corrupt};
pub use client::{Client, ClientConfig, ClientStats, RequestSet, RpcReply};
pub use echo::EchoHandler;
pub use error::{BulkError, Errno, RpcError, ServiceError};
pub use file_store::{FileStore, StoreError};
pub use handler::{Handler, Reply, ReqCtx, Request};
pub use import_driver::{
    BulkAttachment, BulkDir, BulkReply, ImportDriver, ImportDriverError, ImportDriverStats, ImportReply,
    ImportRpcError, LostReplay,
};
pub use jobid::{current_jobid, with_jobid};
pub use metrics::{OpLabel, ServiceMetrics, render};
pub use policy::{Fifo, Policy, PolicyFactory, fifo};
pub use service::{ReplySender, Service, ServiceConfig};
pub use target_driver::{Gate, PassFront, TargetDriver, TargetDriverConfig, TargetFront, TargetSpec};
pub use target_metrics::{TargetLabel, TargetMetrics};

use crate::time::{Clock, Time};

/// The real monotonic clock, as [`Time`] since the clock's creation.
#[derive(Debug, Clone, Copy)]
pub struct DriverClock {
    epoch: Instant,
}

impl Default for DriverClock {
    fn default() -> DriverClock {
        DriverClock::new()
    }
}

impl DriverClock {
    /// A clock whose epoch is now.
    pub fn new() -> DriverClock {
        DriverClock { epoch: Instant::now() }
    }

    /// The current instant.
    pub fn now(&self) -> Time {
        Time::from_epoch(self.epoch.elapsed())
    }

    /// The real instant `t` stands for.
    pub fn instant(&self, t: Time) -> Instant {
        self.epoch + t.since_epoch()
    }
}

impl Clock for DriverClock {
    fn now(&self) -> Time {
        DriverClock::now(self)
    }
}
