//! Per-service Prometheus metrics (prometheus-client) and text rendering.
//!
//! Owns: [`ServiceMetrics`] — queued and active requests, handled and
//! errored requests and a service-time histogram per opcode, plus the
//! malformed, dropped, early-reply and bulk-checksum counters, and those
//! of requests answered (or declined) on the receive path — and
//! [`render`], which turns a registry into the text a `/metrics` endpoint
//! serves (the daemons will serve it over HTTP).
//!
//! Must not: decide anything; the service bumps these as it works.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::wire::Op;

/// The label set of per-opcode series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    /// The operation's name ([`Op::name`]).
    pub operation: &'static str,
}

fn latency_histogram() -> Histogram {
    // 8 µs .. ~67 s in powers of two.
    Histogram::new(exponential_buckets(8e-6, 2.0, 24))
}

/// One opcode's handled counter and service-time histogram, looked up in
/// their families once (a family lookup hashes the label under a lock).
#[derive(Debug)]
struct OpSeries {
    handled: Counter,
    latency: Histogram,
}

/// The metrics of one service, registered in the service's own registry
/// (prefix `ptlrpc`, label `service`).
#[derive(Debug)]
pub struct ServiceMetrics {
    registry: Registry,
    /// Requests waiting in a queue.
    pub queued: Gauge,
    /// Requests being handled by a worker.
    pub active: Gauge,
    /// Requests handled, per opcode.
    pub handled: Family<OpLabel, Counter>,
    /// Requests answered with an error status, per opcode.
    pub errors: Family<OpLabel, Counter>,
    /// Service time (arrival to reply) per opcode, in seconds.
    pub latency: Family<OpLabel, Histogram, fn() -> Histogram>,
    /// Requests that did not decode.
    pub malformed: Counter,
    /// Requests refused because a queue was full.
    pub overflow: Counter,
    /// Early replies sent.
    pub early_replies: Counter,
    /// Bulk transfers whose checksum did not match.
    pub bulk_cksum_errors: Counter,
    /// Bulk transfers that failed.
    pub bulk_errors: Counter,
    /// Requests and replies dropped by fault injection.
    pub injected_drops: Counter,
    /// Replies lnet refused to send.
    pub reply_send_errors: Counter,
    /// Requests answered on lnet's receive path ([`super::Handler::inline`]).
    pub served_inline: Counter,
    /// Requests a handler declined to answer on the receive path (queued
    /// instead, [`super::Reply::declined`]).
    pub inline_declined: Counter,
    /// `handled` and `latency` per opcode, in [`Op::ALL`]'s order, filled
    /// on first use.
    per_op: Box<[OnceLock<OpSeries>]>,
}

impl ServiceMetrics {
    /// Metrics for the service named `service`.
    pub fn new(service: &str) -> ServiceMetrics {
        let labels = [(Cow::Borrowed("service"), Cow::Owned(service.to_string()))];
        let mut registry = Registry::with_prefix_and_labels("ptlrpc", labels.into_iter());
        let m = ServiceMetrics {
            registry: Registry::default(),
            queued: Gauge::default(),
            active: Gauge::default(),
            handled: Family::default(),
            errors: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            malformed: Counter::default(),
            overflow: Counter::default(),
            early_replies: Counter::default(),
            bulk_cksum_errors: Counter::default(),
            bulk_errors: Counter::default(),
            injected_drops: Counter::default(),
            reply_send_errors: Counter::default(),
            served_inline: Counter::default(),
            inline_declined: Counter::default(),
            per_op: Op::ALL.iter().map(|_| OnceLock::new()).collect(),
        };
        registry.register("queued_requests", "Requests waiting in a queue", m.queued.clone());
        registry.register("active_requests", "Requests being handled", m.active.clone());
        registry.register("requests_handled", "Requests handled", m.handled.clone());
        registry.register("request_errors", "Requests answered with an error status", m.errors.clone());
        registry.register("service_seconds", "Service time, arrival to reply", m.latency.clone());
        registry.register("malformed_requests", "Requests that did not decode", m.malformed.clone());
        registry.register("queue_overflows", "Requests refused because a queue was full", m.overflow.clone());
        registry.register("early_replies", "Early replies sent", m.early_replies.clone());
        registry.register("bulk_checksum_errors", "Bulk checksum mismatches", m.bulk_cksum_errors.clone());
        registry.register("bulk_errors", "Bulk transfers that failed", m.bulk_errors.clone());
        registry.register("injected_drops", "Messages dropped by fault injection", m.injected_drops.clone());
        registry.register("reply_send_errors", "Replies lnet refused to send", m.reply_send_errors.clone());
        registry.register("requests_inline", "Requests answered on the receive path", m.served_inline.clone());
        registry.register(
            "inline_declined",
            "Requests a handler declined on the receive path and queued",
            m.inline_declined.clone(),
        );
        ServiceMetrics { registry, ..m }
    }

    /// The registry holding these metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Records a handled request.
    pub fn observe(&self, op: Op, service_time: Duration, failed: bool) {
        let l = OpLabel { operation: op.name() };
        if failed {
            self.errors.get_or_create(&l).inc();
        }
        // `Op::ALL` is in `Op`'s order, so every op is found.
        let Some(slot) = Op::ALL.binary_search(&op).ok().and_then(|i| self.per_op.get(i)) else {
            self.handled.get_or_create(&l).inc();
            self.latency.get_or_create(&l).observe(service_time.as_secs_f64());
            return;
        };
        let s = slot.get_or_init(|| OpSeries {
            handled: self.handled.get_or_create(&l).clone(),
            latency: self.latency.get_or_create(&l).clone(),
        });
        s.handled.inc();
        s.latency.observe(service_time.as_secs_f64());
    }

    /// Requests handled for `op` so far.
    pub fn handled(&self, op: Op) -> u64 {
        self.handled.get(&OpLabel { operation: op.name() }).map_or(0, |c| c.get())
    }

    /// Error replies for `op` so far.
    pub fn errors(&self, op: Op) -> u64 {
        self.errors.get(&OpLabel { operation: op.name() }).map_or(0, |c| c.get())
    }
}

/// Renders `registry` in the Prometheus/OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(err = %e, "encoding metrics");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_per_opcode_series() {
        let m = ServiceMetrics::new("ost");
        m.queued.inc();
        m.observe(Op::OstWrite, Duration::from_micros(300), false);
        m.observe(Op::OstWrite, Duration::from_millis(2), true);
        assert_eq!((m.handled(Op::OstWrite), m.errors(Op::OstWrite), m.handled(Op::OstRead)), (2, 1, 0));
        let text = render(m.registry());
        assert!(text.contains(r#"ptlrpc_requests_handled_total{service="ost",operation="OstWrite"} 2"#), "{text}");
        assert!(text.contains(r#"ptlrpc_queued_requests{service="ost"} 1"#), "{text}");
        assert!(text.contains("ptlrpc_service_seconds_bucket"), "{text}");
        assert!(text.contains(r#"ptlrpc_service_seconds_count{service="ost",operation="OstWrite"} 2"#), "{text}");
        for &op in Op::ALL {
            m.observe(op, Duration::from_micros(1), false);
            assert_eq!(m.handled(op), 1 + u64::from(op == Op::OstWrite) * 2, "{op:?} counted in its own series");
        }
    }
}
