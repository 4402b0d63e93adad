//! Recovery under the simulator: a key-value target with N clients,
//! random server crashes (durable state = last commit), loss, duplication,
//! reordering and partitions, over many seeds; and the seed documents'
//! scenarios, step by step.

use std::time::Duration;

use ptlrpc::Time;
use ptlrpc::import::ImportStateKind;
use ptlrpc::sim::{LinkConfig, NodeId, World, run_seeds};
use ptlrpc::target::{EvictReason, ExportStage, TargetEvent};
#[allow(unused_imports)]
use ptlrpc::wire::Xid;

use crate::kv::{Client, Server, SimNode, check_store};
use crate::msg;

const CLIENTS: usize = 3;
/// After the last fault, every client is FULL and idle within this.
const SETTLE: Duration = Duration::from_secs(1200);

struct Run {
    w: World<SimNode>,
    server: NodeId,
    clients: Vec<NodeId>,
}

impl Run {
    fn new(seed: u64, trace: bool, ops: u32, failover: bool) -> Run {
        let mut w = World::new(seed);
        w.set_trace(trace);
        w.set_message_formatter(msg::describe);
        let now = w.now();
        let srv = Server::new(now, w.rng());
        let server = w.add_node("mds0", SimNode::Server(Box::new(srv)));
        let dead = failover.then(|| w.add_node("mds0-failover", SimNode::Dead));
        let mut clients = Vec::new();
        for i in 0..CLIENTS {
            let paths = match dead {
                Some(d) if i % 2 == 0 => vec![d, server],
                Some(d) => vec![server, d],
                None => vec![server],
            };
            let c = Client::new(now, i, paths, ops, w.rng());
            #[allow(clippy::let_and_return)]
            clients.push(w.add_node(&format!("c{i}"), SimNode::Client(Box::new(c))));
        }
        Run { w, server, clients }
    }

    fn client(&self, i: usize) -> &Client {
        self.w.node(self.clients[i]).client()
    }

    fn server(&self) -> &Server {
        self.w.node(self.server).server()
    }

    fn all(&self) -> Vec<&Client> {
        self.clients.iter().map(|&c| self.w.node(c).client()).collect()
    }

    fn crash(&mut self) -> Result<(), String> {
        check_store(self.server(), &self.all(), true, false)?;
        self.w.crash(self.server);
        Ok(())
    }

    /// Restarts the server; `notify` tells every client at once
    /// (imperative recovery).
    fn restart(&mut self, notify: bool) {
        self.w.restart(self.server);
        if notify {
            for &c in &self.clients.clone() {
                self.w.with_node(c, |n, now| n.client_mut().import.handle_target_restarted(now));
            }
        }
    }

    fn all_full(&self) -> bool {
        self.all().iter().all(|c| c.kind() == ImportStateKind::Full)
    }

    /// Time from `t` until every client entered FULL.
    fn recovery_time(&self, t: Time) -> Option<Duration> {
        self.all().iter().map(|c| c.full_since(t).map(|f| f - t)).collect::<Option<Vec<_>>>()?.into_iter().max()
    }

    fn finish(&self) -> Result<(), String> {
        for c in self.all() {
            if c.kind() != ImportStateKind::Full {
                return Err(format!("(e) {} is {:?} at the end", c.uuid, c.kind()));
            }
            if !c.idle() {
                return Err(format!("{} still has work ({} ops left)", c.uuid, c.ops_left));
            }
            if let Some(e) = c.errors.first() {
                return Err(format!("{}: {e}", c.uuid));
            }
        }
        check_store(self.server(), &self.all(), false, true)
    }

    fn evictions(&self) -> Vec<(String, EvictReason)> {
        self.server()
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                TargetEvent::Evicted { uuid, reason } => Some((uuid.clone(), *reason)),
                _ => None,
            })
            .collect()
    }
}

#[derive(Debug, Default)]
struct Totals {
    crashes: u64,
    recoveries: Vec<Duration>,
    evictions: u64,
    gaps: u64,
    vbr_refused: u64,
    lost: u64,
    acked: u64,
}

enum Fault {
    Crash { down: Duration, notify: bool },
    Partition { client: usize, len: Duration },
}

fn random_run(seed: u64, trace: bool, totals: &mut Totals) -> Result<(), String> {
    let mut run = Run::new(seed, trace, 12, seed % 4 == 0);
    let link = LinkConfig::random(run.w.rng(), 0.05);
    run.w.net().set_default_link(link);
    let mut faults = Vec::new();
    for _ in 0..run.w.rng().below(4) {
        let at = Time::from_millis(run.w.rng().range(1_000, 120_000));
        let down = Duration::from_millis(run.w.rng().range(0, 20_000));
        let notify = run.w.rng().chance(0.7);
        faults.push((at, Fault::Crash { down, notify }));
    }
    for _ in 0..run.w.rng().below(3) {
        let at = Time::from_millis(run.w.rng().range(1_000, 120_000));
        let client = run.w.rng().below(CLIENTS as u64) as usize;
        let len = Duration::from_millis(run.w.rng().range(1_000, 400_000));
        faults.push((at, Fault::Partition { client, len }));
    }
    faults.sort_by_key(|(t, _)| *t);
    let mut heal_at: Option<Time> = None;
    let mut last = Time::ZERO;
    let mut restarts = Vec::new();
    for (at, f) in faults {
        if heal_at.is_some_and(|h| h <= at) {
            run.w.run_until(heal_at.unwrap_or(at));
            run.w.net().heal();
            heal_at = None;
        }
        run.w.run_until(at);
        match f {
            Fault::Crash { down, notify } => {
                run.crash()?;
                totals.crashes += 1;
                run.w.advance(down);
                run.restart(notify);
                restarts.push(run.w.now());
                last = last.max(run.w.now());
            }
            Fault::Partition { client, len } => {
                let (s, c) = (run.server, run.clients[client]);
                run.w.net().partition(&[c], &[s]);
                let end = at + len;
                heal_at = Some(heal_at.map_or(end, |h| h.max(end)));
                last = last.max(end);
            }
        }
    }
    if let Some(h) = heal_at {
        run.w.run_until(h);
        run.w.net().heal();
    }
    run.w.run_until(last + SETTLE);
    // (e): every client was FULL again within the bound after the last
    // fault ...
    for c in run.all() {
        let full_at_last = c.states.iter().rev().find(|(at, _)| *at <= last).is_some_and(|(_, k)| *k == ImportStateKind::Full);
        if !full_at_last && c.full_since(last).is_none() {
            return Err(format!("(e) {} not FULL within {SETTLE:?} of the last fault ({:?})", c.uuid, c.kind()));
        }
    }
    // ... and, once the links stop losing messages, everyone is FULL, idle
    // and consistent.
    run.w.net().set_default_link(LinkConfig::ideal(link.latency));
    run.w.advance(Duration::from_secs(100));
    run.finish()?;
    for (i, r) in restarts.iter().enumerate() {
        let next = restarts.get(i + 1).copied().unwrap_or(Time::from_epoch(Duration::MAX));
        if let Some(d) = run.recovery_time(*r).filter(|d| *r + *d < next) {
            totals.recoveries.push(d);
        }
    }
    totals.evictions += run.evictions().len() as u64;
    for (_, e) in &run.server().events {
        match e {
            TargetEvent::Gap { .. } => totals.gaps += 1,
            TargetEvent::Replayed { applied: false, .. } => totals.vbr_refused += 1,
            _ => {}
        }
    }
    for c in run.all() {
        totals.lost += c.lost.len() as u64;
        totals.acked += c.acked.len() as u64;
    }
    Ok(())
}

#[test]
fn kv_recovery_random_seeds() {
    let seeds = std::env::var("SHEEN_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let totals = std::cell::RefCell::new(Totals::default());
    run_seeds("kv_recovery_random_seeds", seeds, |seed, trace| random_run(seed, trace, &mut totals.borrow_mut()));
    let t = totals.into_inner();
    let mut r = t.recoveries.clone();
    r.sort();
    let pct = |p: usize| r.get((r.len().saturating_sub(1)) * p / 100).copied().unwrap_or_default();
    println!(
        "kv recovery: {seeds} seeds, {} crashes, {} acked puts, {} reported lost, {} evictions, {} gaps, {} VBR refusals; \
         recovery time (restart -> every client FULL) over {} restarts: p50 {:?} p90 {:?} max {:?}",
        t.crashes,
        t.acked,
        t.lost,
        t.evictions,
        t.gaps,
        t.vbr_refused,
        r.len(),
        pct(50),
        pct(90),
        pct(100),
    );
}
