//! The OST's Prometheus metrics, in the Lustre exporters' families.
//!
//! Owns: [`OstMetrics`] — `lustre_read_bytes_total`,
//! `lustre_write_bytes_total`, `lustre_stats_total{component="ost",
//! target, operation}`, BRW size and per-operation latency histograms,
//! and gauges refreshed at scrape time: `lustre_grant_bytes`,
//! `lustre_capacity_kilobytes`, `lustre_free_kilobytes`,
//! `lustre_available_kilobytes`, `lustre_objects`, `lustre_exports`.
//!
//! Must not: decide anything; targets bump these as they work.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `{component, target}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabel {
    /// Always `ost`.
    pub component: &'static str,
    /// The target's name.
    pub target: String,
}

/// `{component, target, operation}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    /// Always `ost`.
    pub component: &'static str,
    /// The target's name.
    pub target: String,
    /// The operation (`read`, `write`, `create`, ... as Lustre's stats name them).
    pub operation: &'static str,
}

fn size_histogram() -> Histogram {
    // 4 KiB .. 16 MiB.
    Histogram::new(exponential_buckets(4096.0, 2.0, 13))
}

fn latency_histogram() -> Histogram {
    // 8 µs .. ~67 s.
    Histogram::new(exponential_buckets(8e-6, 2.0, 24))
}

/// Every OST metric of a daemon (all its targets), in one registry.
#[derive(Debug)]
pub struct OstMetrics {
    registry: Registry,
    /// Bytes read.
    pub read_bytes: Family<TargetLabel, Counter>,
    /// Bytes written.
    pub write_bytes: Family<TargetLabel, Counter>,
    /// Requests per operation.
    pub stats: Family<OpLabel, Counter>,
    /// Requests answered with an error, per operation.
    pub errors: Family<OpLabel, Counter>,
    /// BRW sizes (bytes), operation `read` or `write`.
    pub brw_size: Family<OpLabel, Histogram, fn() -> Histogram>,
    /// Handling time per operation, seconds.
    pub latency: Family<OpLabel, Histogram, fn() -> Histogram>,
    /// Bytes granted to clients.
    pub grant: Family<TargetLabel, Gauge>,
    /// Capacity, KiB.
    pub capacity_kb: Family<TargetLabel, Gauge>,
    /// Free, KiB.
    pub free_kb: Family<TargetLabel, Gauge>,
    /// Available to clients, KiB.
    pub avail_kb: Family<TargetLabel, Gauge>,
    /// Objects.
    pub objects: Family<TargetLabel, Gauge>,
    /// Writes refused with ENOSPC before their data moved.
    pub enospc: Family<TargetLabel, Counter>,
    /// Commits done.
    pub commits: Family<TargetLabel, Counter>,
    /// The last committed transno.
    pub last_committed: Family<TargetLabel, Gauge>,
}

impl Default for OstMetrics {
    fn default() -> OstMetrics {
        OstMetrics::new()
    }
}

impl OstMetrics {
    /// Registers every family.
    pub fn new() -> OstMetrics {
        let mut r = Registry::default();
        let m = OstMetrics {
            registry: Registry::default(),
            read_bytes: Family::default(),
            write_bytes: Family::default(),
            stats: Family::default(),
            errors: Family::default(),
            brw_size: Family::new_with_constructor(size_histogram as fn() -> Histogram),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            grant: Family::default(),
            capacity_kb: Family::default(),
            free_kb: Family::default(),
            avail_kb: Family::default(),
            objects: Family::default(),
            enospc: Family::default(),
            commits: Family::default(),
            last_committed: Family::default(),
        };
        r.register("lustre_read_bytes", "Bytes read from the target", m.read_bytes.clone());
        r.register("lustre_write_bytes", "Bytes written to the target", m.write_bytes.clone());
        r.register("lustre_stats", "Requests per operation", m.stats.clone());
        r.register("lustre_errors", "Requests answered with an error, per operation", m.errors.clone());
        r.register("lustre_brw_size_bytes", "Bulk read/write sizes", m.brw_size.clone());
        r.register("lustre_op_latency_seconds", "Handling time per operation", m.latency.clone());
        r.register("lustre_grant_bytes", "Bytes granted to clients", m.grant.clone());
        r.register("lustre_capacity_kilobytes", "Capacity", m.capacity_kb.clone());
        r.register("lustre_free_kilobytes", "Free space", m.free_kb.clone());
        r.register("lustre_available_kilobytes", "Space available to clients", m.avail_kb.clone());
        r.register("lustre_objects", "Objects on the target", m.objects.clone());
        r.register("lustre_enospc", "Writes refused for lack of space", m.enospc.clone());
        r.register("lustre_commits", "Commits (fdatasync + index persist)", m.commits.clone());
        r.register("lustre_last_committed", "Last committed transno", m.last_committed.clone());
        OstMetrics { registry: r, ..m }
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Prometheus text.
    pub fn render(&self) -> String {
        ptlrpc::driver::render(&self.registry)
    }
}
