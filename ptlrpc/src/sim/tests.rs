//! Tests of the simulator itself, with a node that echoes and counts.

use std::time::Duration;

use super::*;
use crate::time::Time;

/// Sends `to_send` numbered messages to `peer` at start and every timer
/// tick; echoes nothing; records what it received and when.
#[derive(Debug, Default)]
struct Counter {
    peer: Option<NodeId>,
    outbox: Vec<Transmit>,
    received: Vec<(Time, NodeId, Vec<u8>)>,
    tick: Option<Time>,
    ticks: u32,
    crashed: u32,
}

impl Node for Counter {
    fn handle_message(&mut self, now: Time, from: NodeId, bytes: &[u8]) {
        self.received.push((now, from, bytes.to_vec()));
    }
    fn handle_timeout(&mut self, now: Time) {
        self.ticks += 1;
        if let Some(peer) = self.peer {
            self.outbox.push(Transmit { to: peer, bytes: vec![self.ticks as u8] });
        }
        self.tick = (self.ticks < 100).then(|| now + Duration::from_secs(1));
    }
    fn poll_transmit(&mut self, _now: Time) -> Option<Transmit> {
        self.outbox.pop()
    }
    fn poll_timeout(&self) -> Option<Time> {
        self.tick
    }
    fn crash(&mut self) {
        self.crashed += 1;
        self.received.clear();
    }
}

fn pair(seed: u64, link: LinkConfig) -> (World<Counter>, NodeId, NodeId) {
    let mut w = World::new(seed);
    w.net().set_default_link(link);
    let b = w.add_node("b", Counter::default());
    let a = w.add_node("a", Counter { peer: Some(b), tick: Some(Time::from_secs(1)), ..Counter::default() });
    (w, a, b)
}

#[test]
fn ideal_link_delivers_in_order_with_latency() {
    let (mut w, _a, b) = pair(1, LinkConfig::ideal(Duration::from_millis(3)));
    w.run_until(Time::from_secs(200));
    let got = &w.node(b).received;
    assert_eq!(got.len(), 100);
    for (i, (t, _, bytes)) in got.iter().enumerate() {
        assert_eq!(bytes[0] as usize, i + 1);
        assert_eq!(*t, Time::from_secs(i as u64 + 1) + Duration::from_millis(3));
    }
    assert_eq!(w.now(), Time::from_secs(200));
}

#[test]
fn faults_happen_and_runs_are_deterministic() {
    let link = LinkConfig {
        latency: Duration::from_millis(1),
        jitter: Duration::from_millis(5),
        loss: 0.2,
        duplicate: 0.2,
        reorder: 0.5,
        reorder_delay: Duration::from_secs(3),
    };
    let run = |seed| {
        let (mut w, _a, b) = pair(seed, link);
        w.run_until(Time::from_secs(200));
        let order: Vec<u8> = w.node(b).received.iter().map(|r| r.2[0]).collect();
        (w.stats(), order)
    };
    let (stats, order) = run(9);
    assert_eq!(run(9), (stats, order.clone()));
    assert_ne!(run(10).1, order);
    assert!(stats.lost > 0 && stats.duplicated > 0, "{stats:?}");
    assert!(order.windows(2).any(|p| p[0] > p[1]), "some reordering");
    assert_eq!(stats.delivered as usize, order.len());
}

#[test]
fn partitions_and_crashes_stop_delivery() {
    let (mut w, a, b) = pair(3, LinkConfig::default());
    w.run_until(Time::from_millis(10_500));
    assert_eq!(w.node(b).received.len(), 10);
    w.net().partition(&[a], &[b]);
    w.run_until(Time::from_millis(20_500));
    assert_eq!(w.node(b).received.len(), 10);
    assert_eq!(w.stats().partitioned, 10);
    w.net().heal();
    w.crash(b);
    assert!(!w.is_up(b));
    w.run_until(Time::from_millis(30_500));
    assert_eq!(w.stats().dropped_down, 10);
    assert_eq!(w.node(b).crashed, 1);
    w.restart(b);
    w.run_until(Time::from_millis(40_500));
    assert_eq!(w.node(b).received.len(), 10, "volatile state was dropped");
    // A crashed sender's timer stops, and restarts with it.
    w.crash(a);
    w.run_until(Time::from_millis(50_500));
    assert_eq!(w.node(b).received.len(), 10);
    w.with_node(a, |n, now| n.tick = Some(now + Duration::from_secs(1)));
    w.restart(a);
    w.run_until(Time::from_millis(52_600));
    assert_eq!(w.node(b).received.len(), 12);
}

#[test]
fn runner_replays_and_reports() {
    let seen = std::cell::RefCell::new(Vec::new());
    run_seeds("runner_ok", 5, |seed, trace| {
        seen.borrow_mut().push((seed, trace));
        Ok(())
    });
    if std::env::var(SEED_ENV).is_err() {
        assert_eq!(seen.borrow().len(), 5);
        let failed = std::panic::catch_unwind(|| {
            run_seeds("runner_fail", 10, |seed, _| if seed == 3 { Err("boom".into()) } else { Ok(()) })
        });
        let msg = failed.err().and_then(|p| p.downcast_ref::<String>().cloned());
        assert_eq!(msg.as_deref(), Some("sim runner_fail: seed 3 failed: boom"));
    }
}
