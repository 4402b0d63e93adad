//! What the mount did, for its `/metrics` endpoint (Lustre's llite
//! `stats`, and the mdc/osc import and ldlm namespace files under
//! `/proc/fs/lustre`).
//!
//! Owns: [`FuseStats`] — per FUSE operation the calls, the failed ones
//! and a latency histogram (call to reply), and the bytes read and
//! written — and [`render_mount`], which adds what is read at scrape time:
//! the lock cache, every import's state and counters, lnet's counters.
//! An operation is timed by the guard [`FuseStats::op`] returns; a
//! failure is counted by [`FuseStats::failed`] on the same FUSE thread
//! (the guard names the operation for it) when a call the operation made
//! through the client failed (`SheenFs::run`: ENOENT of a lookup
//! included); one refused before any call (an unknown handle or inode) is
//! not counted.
//!
//! Must not: decide anything, or take a lock a FUSE call holds across a
//! network call.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt::Write as _;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::fs::Sheen;

use super::cache::FuseCache;

thread_local! {
    /// The FUSE operation this thread is in (set by its guard).
    static CURRENT: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// The label of per-operation series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    operation: &'static str,
}

/// The label of the byte counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirLabel {
    direction: &'static str,
}

/// 8 us to ~8 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(8e-6, 2.0, 21))
}

/// The mount's per-operation counters (prefix `sheen_client`).
#[derive(Debug)]
pub struct FuseStats {
    registry: Registry,
    ops: Family<OpLabel, Counter>,
    errors: Family<OpLabel, Counter>,
    latency: Family<OpLabel, Histogram, fn() -> Histogram>,
    bytes: Family<DirLabel, Counter>,
}

impl Default for FuseStats {
    fn default() -> FuseStats {
        FuseStats::new()
    }
}

impl FuseStats {
    /// Empty counters.
    pub fn new() -> FuseStats {
        let mut registry = Registry::with_prefix("sheen_client");
        let s = FuseStats {
            registry: Registry::default(),
            ops: Family::default(),
            errors: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            bytes: Family::default(),
        };
        registry.register("fuse_ops", "FUSE operations answered", s.ops.clone());
        registry.register("fuse_errors", "FUSE operations answered with an error", s.errors.clone());
        registry.register("fuse_op_seconds", "FUSE operation time, call to reply", s.latency.clone());
        registry.register("fuse_bytes", "File data read and written through the mount", s.bytes.clone());
        FuseStats { registry, ..s }
    }

    /// Times operation `op` on this thread until the guard drops.
    pub fn op(&self, op: &'static str) -> OpGuard<'_> {
        CURRENT.with(|c| c.set(Some(op)));
        OpGuard { stats: self, op, start: Instant::now() }
    }

    /// The operation this thread is in failed.
    pub fn failed(&self) {
        if let Some(op) = CURRENT.with(Cell::get) {
            self.errors.get_or_create(&OpLabel { operation: op }).inc();
        }
    }

    /// `n` bytes of file data read.
    pub fn read_bytes(&self, n: usize) {
        self.bytes.get_or_create(&DirLabel { direction: "read" }).inc_by(n as u64);
    }

    /// `n` bytes of file data written.
    pub fn written_bytes(&self, n: usize) {
        self.bytes.get_or_create(&DirLabel { direction: "write" }).inc_by(n as u64);
    }

    /// Calls of `op` answered so far.
    pub fn calls(&self, op: &'static str) -> u64 {
        self.ops.get(&OpLabel { operation: op }).map_or(0, |c| c.get())
    }

    /// Failed calls of `op` so far.
    pub fn failures(&self, op: &'static str) -> u64 {
        self.errors.get(&OpLabel { operation: op }).map_or(0, |c| c.get())
    }

    /// The counters in Prometheus text.
    pub fn render(&self) -> String {
        ptlrpc::driver::render(&self.registry)
    }
}

/// Times one FUSE operation (see [`FuseStats::op`]).
#[derive(Debug)]
pub struct OpGuard<'a> {
    stats: &'a FuseStats,
    op: &'static str,
    start: Instant,
}

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        let l = OpLabel { operation: self.op };
        self.stats.ops.get_or_create(&l).inc();
        self.stats.latency.get_or_create(&l).observe(self.start.elapsed().as_secs_f64());
        CURRENT.with(|c| c.set(None));
    }
}

/// One gauge.
fn gauge(out: &mut String, name: &str, help: &str, labels: &[(&str, Cow<'_, str>)], v: u64) {
    sample(out, "gauge", name, name, help, labels, v);
}

/// One counter (`name` gets `_total`).
fn counter(out: &mut String, name: &str, help: &str, labels: &[(&str, Cow<'_, str>)], v: u64) {
    sample(out, "counter", name, &format!("{name}_total"), help, labels, v);
}

fn sample(out: &mut String, kind: &str, family: &str, name: &str, help: &str, labels: &[(&str, Cow<'_, str>)], v: u64) {
    let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} {kind}");
    let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    if l.is_empty() {
        let _ = writeln!(out, "{name} {v}");
    } else {
        let _ = writeln!(out, "{name}{{{}}} {v}", l.join(","));
    }
}

/// What is read at scrape time: the lock cache (`cache`, if the mount
/// caches), each import of `fs` (the mdc's and every osc's: state,
/// generation, replay list, connects, evictions, resends, messages sent),
/// and lnet's counters.
pub fn render_mount(fs: &Sheen, cache: Option<&FuseCache>, lnet: &lnet::Lnet) -> String {
    let mut out = String::new();
    if let Some(c) = cache {
        gauge(&mut out, "sheen_client_locks", "MDT locks held (Lustre's ldlm lock_count)", &[], c.locks_held() as u64);
        let lru = c.lru_limits().size as u64;
        gauge(&mut out, "sheen_client_lru_size", "Most locks kept (lru_size)", &[], lru);
        let (answered, waits) = (c.absent_answered(), c.inval_waits());
        counter(&mut out, "sheen_client_absent_answered", "Lookups answered ENOENT from a name set", &[], answered);
        counter(&mut out, "sheen_client_inval_waits", "Callbacks that cancelled before the kernel let go", &[], waits);
    }
    let oscs = fs.oscs();
    let mut imports = vec![(format!("{}-MDT0000", fs.fsname()), Some(fs.mdc().import()))];
    for o in oscs.values() {
        imports.push((o.name().to_string(), o.import()));
    }
    for (name, imp) in imports {
        let Some(i) = imp else { continue };
        let t = [("target", Cow::Borrowed(name.as_str()))];
        let st = [("target", Cow::Borrowed(name.as_str())), ("state", Cow::Owned(format!("{:?}", i.state())))];
        gauge(&mut out, "sheen_client_import_state", "The import's state (the label; 1)", &st, 1);
        gauge(&mut out, "sheen_client_import_generation", "Reconnections that changed the export", &t, i.generation());
        gauge(&mut out, "sheen_client_import_replay_list", "Requests kept for replay", &t, i.replay_len() as u64);
        let s = i.import_stats();
        counter(&mut out, "sheen_client_import_connects", "CONNECTs sent", &t, s.connects);
        counter(&mut out, "sheen_client_import_evictions", "Evictions noticed", &t, s.evictions);
        counter(&mut out, "sheen_client_import_resends", "Requests resent", &t, s.resends);
        counter(&mut out, "sheen_client_import_replays", "Replays sent", &t, s.replays);
        let d = i.stats();
        counter(&mut out, "sheen_client_import_sent", "Messages handed to lnet", &t, d.sent);
        counter(&mut out, "sheen_client_import_send_failures", "Sends lnet refused or failed", &t, d.send_failures);
    }
    let n = lnet.counters();
    counter(&mut out, "sheen_client_lnet_sent", "lnet messages sent", &[], n.send_count);
    counter(&mut out, "sheen_client_lnet_received", "lnet messages received", &[], n.recv_count);
    counter(&mut out, "sheen_client_lnet_dropped", "lnet messages dropped", &[], n.drop_count);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_is_counted_timed_and_its_failure_named_by_its_guard() {
        let s = FuseStats::new();
        {
            let _g = s.op("create");
            s.failed();
        }
        {
            let _g = s.op("create");
        }
        s.failed(); // outside any operation: not counted
        s.written_bytes(4096);
        assert_eq!((s.calls("create"), s.failures("create")), (2, 1));
        let text = s.render();
        assert!(text.contains("sheen_client_fuse_ops_total{operation=\"create\"} 2"), "{text}");
        assert!(text.contains("sheen_client_fuse_op_seconds_count{operation=\"create\"} 2"), "{text}");
        assert!(text.contains("sheen_client_fuse_bytes_total{direction=\"write\"} 4096"), "{text}");
    }
}
