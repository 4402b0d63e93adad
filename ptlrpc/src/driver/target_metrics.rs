//! Recovery and eviction metrics of one target, in the Lustre exporters'
//! `recovery_status_*` style (prometheus-client).
//!
//! Owns: [`TargetMetrics`] (one per target driver, series labelled by
//! [`TargetLabel`]) — whether a target is in recovery, its exports, the known
//! clients, the last recovery's duration and outcome (clients recovered,
//! evicted, retained), recoveries started and finished, replays by outcome,
//! gaps, and evictions by reason — and [`TargetMetrics::observe`], which
//! folds one [`TargetEvent`] in.
//!
//! Must not: decide anything; the target driver feeds it events.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::target::{EvictReason, TargetEvent};

/// The labels of one target's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabel {
    /// `mdt`, `ost`, `kv`.
    pub component: String,
    /// The target's name.
    pub target: String,
}

/// Label of per-reason eviction counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetReasonLabel {
    component: String,
    target: String,
    reason: &'static str,
}

/// Label of replay counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetReplayLabel {
    component: String,
    target: String,
    mode: &'static str,
    outcome: &'static str,
}

type GaugeF = Gauge<f64, AtomicU64>;

/// The metrics of the targets of one driver (prefix `lustre`, labels
/// `component` and `target`).
#[derive(Debug)]
pub struct TargetMetrics {
    registry: Registry,
    recovering: Family<TargetLabel, Gauge>,
    known_clients: Family<TargetLabel, Gauge>,
    duration_seconds: Family<TargetLabel, GaugeF>,
    completed_clients: Family<TargetLabel, Gauge>,
    evicted_clients: Family<TargetLabel, Gauge>,
    retained_clients: Family<TargetLabel, Gauge>,
    recoveries_started: Family<TargetLabel, Counter>,
    recoveries_done: Family<TargetLabel, Counter>,
    replays: Family<TargetReplayLabel, Counter>,
    gaps: Family<TargetLabel, Counter>,
    evictions: Family<TargetReasonLabel, Counter>,
    exports: Family<TargetLabel, Gauge>,
}

fn reason_name(r: EvictReason) -> &'static str {
    match r {
        EvictReason::PingTimeout => "ping_timeout",
        EvictReason::VersionMismatch => "version_mismatch",
        EvictReason::Admin => "admin",
        EvictReason::RecoveryAborted => "recovery_aborted",
        EvictReason::RetainedOverflow => "retained_overflow",
    }
}

impl Default for TargetMetrics {
    fn default() -> TargetMetrics {
        TargetMetrics::new()
    }
}

impl TargetMetrics {
    /// Empty metrics; each target's series appear with its first event.
    pub fn new() -> TargetMetrics {
        let mut registry = Registry::with_prefix("lustre");
        let m = TargetMetrics {
            registry: Registry::default(),
            recovering: Family::default(),
            known_clients: Family::default(),
            duration_seconds: Family::default(),
            completed_clients: Family::default(),
            evicted_clients: Family::default(),
            retained_clients: Family::default(),
            recoveries_started: Family::default(),
            recoveries_done: Family::default(),
            replays: Family::default(),
            gaps: Family::default(),
            evictions: Family::default(),
            exports: Family::default(),
        };
        let r = &mut registry;
        r.register("recovery_status_recovering", "1 while recovery runs", m.recovering.clone());
        r.register("recovery_status_known_clients", "Clients known at boot", m.known_clients.clone());
        r.register("recovery_status_duration_seconds", "Last recovery, boot to end", m.duration_seconds.clone());
        r.register("recovery_status_completed_clients", "Clients recovered", m.completed_clients.clone());
        r.register("recovery_status_evicted_clients", "Clients evicted by recovery", m.evicted_clients.clone());
        r.register("recovery_status_retained_clients", "Clients left for delayed recovery", m.retained_clients.clone());
        r.register("recovery_status_started", "Recoveries started", m.recoveries_started.clone());
        r.register("recovery_status_finished", "Recoveries finished", m.recoveries_done.clone());
        r.register("recovery_replays", "Replays handled", m.replays.clone());
        r.register("recovery_gaps", "Transno gaps skipped", m.gaps.clone());
        r.register("evictions", "Exports evicted", m.evictions.clone());
        r.register("exports", "Exports held (retained ones included)", m.exports.clone());
        TargetMetrics { registry, ..m }
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Makes `l`'s series exist (zero) before any event.
    pub fn add_target(&self, l: &TargetLabel) {
        let _ = self.recovering.get_or_create(l);
        let _ = self.recoveries_started.get_or_create(l);
        let _ = self.recoveries_done.get_or_create(l);
        let _ = self.exports.get_or_create(l);
    }

    /// Sets `l`'s export count (at scrape time).
    pub fn set_exports(&self, l: &TargetLabel, n: usize) {
        self.exports.get_or_create(l).set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Folds one event of target `l` in.
    pub fn observe(&self, l: &TargetLabel, ev: &TargetEvent) {
        let n = |v: &usize| i64::try_from(*v).unwrap_or(i64::MAX);
        match ev {
            TargetEvent::RecoveryStarted { clients, .. } => {
                self.recovering.get_or_create(l).set(1);
                self.known_clients.get_or_create(l).set(n(clients));
                self.recoveries_started.get_or_create(l).inc();
            }
            TargetEvent::Replayed { delayed, applied, .. } => {
                let mode = if *delayed { "delayed" } else { "primary" };
                let outcome = if *applied { "applied" } else { "refused" };
                let k = TargetReplayLabel { component: l.component.clone(), target: l.target.clone(), mode, outcome };
                self.replays.get_or_create(&k).inc();
            }
            TargetEvent::Gap { .. } => {
                self.gaps.get_or_create(l).inc();
            }
            TargetEvent::RecoveryDone { duration, recovered, evicted, retained, .. } => {
                self.recovering.get_or_create(l).set(0);
                self.duration_seconds.get_or_create(l).set(duration.as_secs_f64());
                self.completed_clients.get_or_create(l).set(n(recovered));
                self.evicted_clients.get_or_create(l).set(n(evicted));
                self.retained_clients.get_or_create(l).set(n(retained));
                self.recoveries_done.get_or_create(l).inc();
            }
            TargetEvent::Evicted { reason, .. } => {
                self.evictions.get_or_create(&Self::reason(l, *reason)).inc();
            }
        }
    }

    fn reason(l: &TargetLabel, r: EvictReason) -> TargetReasonLabel {
        TargetReasonLabel { component: l.component.clone(), target: l.target.clone(), reason: reason_name(r) }
    }

    /// Evictions of target `l` for `reason` so far.
    pub fn evicted(&self, l: &TargetLabel, reason: EvictReason) -> u64 {
        self.evictions.get(&Self::reason(l, reason)).map_or(0, |c| c.get())
    }

    /// Recoveries of target `l` finished so far.
    pub fn recoveries_done(&self, l: &TargetLabel) -> u64 {
        self.recoveries_done.get(l).map_or(0, |c| c.get())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Time;
    use crate::driver::render;

    #[test]
    fn recovery_status_series() {
        let m = TargetMetrics::new();
        let l = TargetLabel { component: "kv".into(), target: "kv0".into() };
        m.observe(&l, &TargetEvent::RecoveryStarted { at: Time::ZERO, clients: 3 });
        let text = render(m.registry());
        assert!(text.contains(r#"lustre_recovery_status_recovering{component="kv",target="kv0"} 1"#), "{text}");
        m.observe(
            &l,
            &TargetEvent::RecoveryDone {
                at: Time::from_secs(2),
                duration: Duration::from_millis(1500),
                recovered: 2,
                evicted: 1,
                retained: 0,
            },
        );
        m.observe(&l, &TargetEvent::Evicted { uuid: "c".into(), reason: EvictReason::PingTimeout });
        let text = render(m.registry());
        assert!(text.contains(r#"lustre_recovery_status_duration_seconds{component="kv",target="kv0"} 1.5"#), "{text}");
        assert!(text.contains(r#"lustre_recovery_status_completed_clients{component="kv",target="kv0"} 2"#), "{text}");
        assert!(text.contains(r#"reason="ping_timeout"} 1"#), "{text}");
        assert_eq!(m.evicted(&l, EvictReason::PingTimeout), 1);
    }
}
