//! Recovery and eviction metrics of one target, in the Lustre exporters'
//! `recovery_status_*` style (prometheus-client).
//!
//! Owns: [`TargetMetrics`] — whether the target is in recovery, the known
//! clients, the last recovery's duration and outcome (clients recovered,
//! evicted, retained), recoveries started and finished, replays by outcome,
//! gaps, and evictions by reason — and [`TargetMetrics::observe`], which
//! folds one [`TargetEvent`] in.
//!
//! Must not: decide anything; the target driver feeds it events.

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::target::{EvictReason, TargetEvent};

/// Label of per-reason eviction counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why (`ping_timeout`, `version_mismatch`, `admin`, `recovery_aborted`,
    /// `retained_overflow`).
    pub reason: &'static str,
}

/// Label of replay counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplayLabel {
    /// `primary` or `delayed`.
    pub mode: &'static str,
    /// `applied` or `refused` (VBR).
    pub outcome: &'static str,
}

/// The metrics of one target (prefix `lustre`, labels `component` and
/// `target`).
#[derive(Debug)]
pub struct TargetMetrics {
    registry: Registry,
    /// 1 while primary recovery runs, else 0.
    pub recovering: Gauge,
    /// Clients known from the client table at the last boot.
    pub known_clients: Gauge,
    /// Boot to end of the last primary recovery, in seconds.
    pub duration_seconds: Gauge<f64, AtomicU64>,
    /// Clients that recovered in the last recovery.
    pub completed_clients: Gauge,
    /// Clients evicted at the end of the last recovery.
    pub evicted_clients: Gauge,
    /// Clients retained for delayed recovery by the last recovery.
    pub retained_clients: Gauge,
    /// Recoveries started.
    pub recoveries_started: Counter,
    /// Recoveries finished.
    pub recoveries_done: Counter,
    /// Replays handled, by mode and outcome.
    pub replays: Family<ReplayLabel, Counter>,
    /// Transno gaps primary recovery skipped.
    pub gaps: Counter,
    /// Exports evicted, by reason.
    pub evictions: Family<ReasonLabel, Counter>,
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

impl TargetMetrics {
    /// Metrics for target `target` of component `component` (`mdt`, `ost`,
    /// `kv`).
    pub fn new(component: &str, target: &str) -> TargetMetrics {
        let labels = [
            (Cow::Borrowed("component"), Cow::Owned(component.to_string())),
            (Cow::Borrowed("target"), Cow::Owned(target.to_string())),
        ];
        let mut registry = Registry::with_prefix_and_labels("lustre", labels.into_iter());
        let m = TargetMetrics {
            registry: Registry::default(),
            recovering: Gauge::default(),
            known_clients: Gauge::default(),
            duration_seconds: Gauge::default(),
            completed_clients: Gauge::default(),
            evicted_clients: Gauge::default(),
            retained_clients: Gauge::default(),
            recoveries_started: Counter::default(),
            recoveries_done: Counter::default(),
            replays: Family::default(),
            gaps: Counter::default(),
            evictions: Family::default(),
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
        TargetMetrics { registry, ..m }
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Folds one target event in.
    pub fn observe(&self, ev: &TargetEvent) {
        match ev {
            TargetEvent::RecoveryStarted { clients, .. } => {
                self.recovering.set(1);
                self.known_clients.set(i64::try_from(*clients).unwrap_or(i64::MAX));
                self.recoveries_started.inc();
            }
            TargetEvent::Replayed { delayed, applied, .. } => {
                let mode = if *delayed { "delayed" } else { "primary" };
                let outcome = if *applied { "applied" } else { "refused" };
                self.replays.get_or_create(&ReplayLabel { mode, outcome }).inc();
            }
            TargetEvent::Gap { .. } => {
                self.gaps.inc();
            }
            TargetEvent::RecoveryDone { duration, recovered, evicted, retained, .. } => {
                let n = |v: &usize| i64::try_from(*v).unwrap_or(i64::MAX);
                self.recovering.set(0);
                self.duration_seconds.set(duration.as_secs_f64());
                self.completed_clients.set(n(recovered));
                self.evicted_clients.set(n(evicted));
                self.retained_clients.set(n(retained));
                self.recoveries_done.inc();
            }
            TargetEvent::Evicted { reason, .. } => {
                self.evictions.get_or_create(&ReasonLabel { reason: reason_name(*reason) }).inc();
            }
        }
    }

    /// Evictions for `reason` so far.
    pub fn evicted(&self, reason: EvictReason) -> u64 {
        self.evictions.get(&ReasonLabel { reason: reason_name(reason) }).map_or(0, |c| c.get())
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
        let m = TargetMetrics::new("kv", "kv0");
        m.observe(&TargetEvent::RecoveryStarted { at: Time::ZERO, clients: 3 });
        let text = render(m.registry());
        assert!(text.contains(r#"lustre_recovery_status_recovering{component="kv",target="kv0"} 1"#), "{text}");
        m.observe(&TargetEvent::RecoveryDone {
            at: Time::from_secs(2),
            duration: Duration::from_millis(1500),
            recovered: 2,
            evicted: 1,
            retained: 0,
        });
        m.observe(&TargetEvent::Evicted { uuid: "c".into(), reason: EvictReason::PingTimeout });
        let text = render(m.registry());
        assert!(text.contains(r#"lustre_recovery_status_duration_seconds{component="kv",target="kv0"} 1.5"#), "{text}");
        assert!(text.contains(r#"lustre_recovery_status_completed_clients{component="kv",target="kv0"} 2"#), "{text}");
        assert!(text.contains(r#"reason="ping_timeout"} 1"#), "{text}");
        assert_eq!(m.evicted(EvictReason::PingTimeout), 1);
    }
}
