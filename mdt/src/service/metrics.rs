//! MDT/MGS metrics in the Lustre exporters' style: operation counts and
//! latencies per metadata operation, open files, exports, recovery state,
//! transaction numbers, destroy backlog and OST states.
//!
//! Must not: decide anything; handlers and the daemon feed it.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of per-operation series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// `mdt` or `mgs`.
    pub component: &'static str,
    /// The operation (`create`, `mkdir`, `getattr`, `config_read`, ...).
    pub operation: &'static str,
}

/// Labels of per-OST series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OstLabels {
    /// OST index.
    pub ost: u32,
}

fn latency() -> Histogram {
    Histogram::new(exponential_buckets(2e-6, 2.0, 24))
}

/// The metrics.
#[derive(Debug)]
pub struct MdtMetrics {
    registry: Registry,
    /// Operations handled.
    pub ops: Family<OpLabels, Counter>,
    /// Operations that failed.
    pub errors: Family<OpLabels, Counter>,
    /// Handling time, seconds.
    pub latency: Family<OpLabels, Histogram, fn() -> Histogram>,
    /// Open files.
    pub open_files: Gauge,
    /// Exports of the MDT target (the target framework's, retained ones
    /// included).
    pub exports: Gauge,
    /// Recovery state: 1 while the target recovers after a restart.
    pub recovery_status: Gauge,
    /// 1 when replay recovery runs on restart; 0 today (the driver
    /// integration of ptlrpc's target framework has not landed).
    pub recovery_supported: Gauge,
    /// Last transno applied.
    pub last_transno: Gauge,
    /// Last transno durably committed.
    pub last_committed: Gauge,
    /// Objects waiting in the destroy log.
    pub destroy_pending: Gauge,
    /// OST usable for allocation (1) or not (0).
    pub ost_active: Family<OstLabels, Gauge>,
    /// OST activated in the config log (1) or deactivated (0); no series
    /// once removed.
    pub ost_admin_active: Family<OstLabels, Gauge>,
    /// Config-log records applied by this MDT.
    pub config_records: Counter,
    /// Target restarts (imperative recovery notices) seen.
    pub target_restarts: Counter,
    /// Open handles closed because their client's export went (eviction,
    /// disconnect, not back by the end of recovery).
    pub gone_handles_closed: Counter,
    /// Open-unlinked files those closes destroyed.
    pub gone_orphans_destroyed: Counter,
    /// Closes refused (ESTALE) because they named a handle closed so.
    pub stale_handles_refused: Counter,
    /// Creates refused for a FID not granted to their client (EPERM) or
    /// not one a client may name (EINVAL), since the MDT started.
    pub fids_refused: Gauge,
}

impl Default for MdtMetrics {
    fn default() -> MdtMetrics {
        MdtMetrics::new()
    }
}

impl MdtMetrics {
    /// Registered under the `sheen_mdt` prefix.
    pub fn new() -> MdtMetrics {
        let mut registry = Registry::with_prefix("sheen_mdt");
        let m = MdtMetrics {
            ops: Family::default(),
            errors: Family::default(),
            latency: Family::new_with_constructor(latency as fn() -> Histogram),
            open_files: Gauge::default(),
            exports: Gauge::default(),
            recovery_status: Gauge::default(),
            recovery_supported: Gauge::default(),
            last_transno: Gauge::default(),
            last_committed: Gauge::default(),
            destroy_pending: Gauge::default(),
            ost_active: Family::default(),
            ost_admin_active: Family::default(),
            config_records: Counter::default(),
            target_restarts: Counter::default(),
            gone_handles_closed: Counter::default(),
            gone_orphans_destroyed: Counter::default(),
            stale_handles_refused: Counter::default(),
            fids_refused: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("stats", "Metadata operations handled", m.ops.clone());
        registry.register("errors", "Metadata operations that failed", m.errors.clone());
        registry.register("op_latency_seconds", "Metadata operation handling time", m.latency.clone());
        registry.register("open_files", "Open file handles", m.open_files.clone());
        registry.register("exports", "Clients served", m.exports.clone());
        registry.register("recovery_status", "0 complete/none, 1 recovering", m.recovery_status.clone());
        registry.register(
            "recovery_supported",
            "Replay recovery after a restart (1: the MDT runs on the target framework)",
            m.recovery_supported.clone(),
        );
        registry.register("last_transno", "Last transno applied", m.last_transno.clone());
        registry.register("last_committed", "Last transno durably committed", m.last_committed.clone());
        registry.register("destroy_pending", "OST objects waiting in the destroy log", m.destroy_pending.clone());
        registry.register("ost_active", "OST takes new objects", m.ost_active.clone());
        registry.register("ost_admin_active", "OST activated in the config log", m.ost_admin_active.clone());
        registry.register("config_records", "Config-log records applied", m.config_records.clone());
        registry.register("target_restarts", "Target restart notices seen", m.target_restarts.clone());
        registry.register(
            "gone_handles_closed",
            "Open handles closed because their client's export went",
            m.gone_handles_closed.clone(),
        );
        registry.register(
            "gone_orphans_destroyed",
            "Open-unlinked files destroyed by those closes",
            m.gone_orphans_destroyed.clone(),
        );
        registry.register(
            "stale_handles_refused",
            "Closes refused (ESTALE) naming a handle closed when its export went",
            m.stale_handles_refused.clone(),
        );
        registry.register(
            "fids_refused",
            "Creates refused for a FID not granted to their client",
            m.fids_refused.clone(),
        );
        MdtMetrics { registry, ..m }
    }

    /// Counts one operation.
    pub fn observe(&self, component: &'static str, operation: &'static str, took: Duration, failed: bool) {
        let l = OpLabels { component, operation };
        self.ops.get_or_create(&l).inc();
        if failed {
            self.errors.get_or_create(&l).inc();
        }
        self.latency.get_or_create(&l).observe(took.as_secs_f64());
    }

    /// Operations handled so far under `operation`.
    pub fn count(&self, component: &'static str, operation: &'static str) -> u64 {
        self.ops.get_or_create(&OpLabels { component, operation }).get()
    }

    /// Prometheus text.
    pub fn render(&self) -> String {
        ptlrpc::driver::render(&self.registry)
    }
}
