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
    fn new(seed: u64, trace: bool, ops: u32, window: usize, failover: bool) -> Run {
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
            let c = Client::new(now, i, paths, ops, window, w.rng());
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
    max_outstanding: usize,
    reconstructed: u64,
}

enum Fault {
    Crash { down: Duration, notify: bool },
    Partition { client: usize, len: Duration },
}

fn random_run(seed: u64, trace: bool, window: usize, totals: &mut Totals) -> Result<(), String> {
    let ops = if window > 1 { 30 } else { 12 };
    let mut run = Run::new(seed, trace, ops, window, seed.is_multiple_of(4));
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
        let full_at_last =
            c.states.iter().rev().find(|(at, _)| *at <= last).is_some_and(|(_, k)| *k == ImportStateKind::Full);
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
        totals.max_outstanding = totals.max_outstanding.max(c.max_puts_outstanding);
    }
    if let Some(t) = &run.server().target {
        totals.reconstructed += t.stats().reconstructed;
    }
    Ok(())
}

#[test]
fn kv_recovery_random_seeds() {
    let seeds = std::env::var("SHEEN_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let totals = std::cell::RefCell::new(Totals::default());
    run_seeds("kv_recovery_random_seeds", seeds, |seed, trace| random_run(seed, trace, 1, &mut totals.borrow_mut()));
    report("kv recovery", seeds, &totals.into_inner());
}

/// The same with four puts in flight per client (reply slots): loss,
/// duplication, reordering, partitions and crashes over many seeds;
/// nothing runs twice, every acknowledged put survives or is reported lost.
#[test]
fn kv_recovery_random_seeds_several_in_flight() {
    let seeds = std::env::var("SHEEN_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let totals = std::cell::RefCell::new(Totals::default());
    run_seeds("kv_recovery_random_seeds_several_in_flight", seeds, |seed, trace| {
        random_run(seed, trace, 4, &mut totals.borrow_mut())
    });
    let t = totals.into_inner();
    report("kv recovery, 4 in flight", seeds, &t);
    assert_eq!(t.max_outstanding, 4, "clients kept four puts in flight");
    assert!(t.reconstructed > 0, "some resends were answered from reply slots");
}

fn report(what: &str, seeds: u64, t: &Totals) {
    let mut r = t.recoveries.clone();
    r.sort();
    let pct = |p: usize| r.get((r.len().saturating_sub(1)) * p / 100).copied().unwrap_or_default();
    println!(
        "{what}: {seeds} seeds, {} crashes, {} acked puts, {} reported lost, {} evictions, {} gaps, {} VBR refusals, \
         {} reconstructed; recovery time (restart -> every client FULL) over {} restarts: p50 {:?} p90 {:?} max {:?}",
        t.crashes,
        t.acked,
        t.lost,
        t.evictions,
        t.gaps,
        t.vbr_refused,
        t.reconstructed,
        r.len(),
        pct(50),
        pct(90),
        pct(100),
    );
}

/// A world on ideal links whose clients issue only the puts a scenario
/// asks for.
fn scenario(seed: u64) -> Run {
    let mut run = Run::new(seed, std::env::var(ptlrpc::sim::SEED_ENV).is_ok(), 0, 1, false);
    run.w.net().set_default_link(LinkConfig::ideal(Duration::from_millis(1)));
    run.w.advance(Duration::from_secs(1));
    assert!(run.all_full(), "everyone connected");
    run
}

impl Run {
    fn put(&mut self, i: usize, key: u32, value: u64) -> Xid {
        let c = self.clients[i];
        let xid = self.w.with_node(c, |n, now| n.client_mut().put(now, key, value));
        self.w.advance(Duration::from_millis(100));
        let acked = self.client(i).acked.get(&xid).map(|a| a.transno);
        assert!(acked.is_some(), "put {xid} acknowledged");
        xid
    }

    fn cut(&mut self, i: usize) {
        let (s, c) = (self.server, self.clients[i]);
        self.w.net().partition(&[c], &[s]);
    }

    fn recovery_done(&self) -> Vec<(Time, usize, usize, usize)> {
        self.server()
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                TargetEvent::RecoveryDone { at, recovered, evicted, retained, .. } => {
                    Some((*at, *recovered, *evicted, *retained))
                }
                _ => None,
            })
            .collect()
    }

    fn gaps(&self) -> usize {
        self.server().events.iter().filter(|(_, e)| matches!(e, TargetEvent::Gap { .. })).count()
    }
}

/// Seed document 3.2.1: every client is back in time; replays run in
/// transno order with no gap, nobody is evicted, and with imperative
/// recovery the window closes as soon as the last client has replayed.
#[test]
fn all_clients_back_in_time() {
    let mut run = scenario(1);
    for round in 0..3u64 {
        for i in 0..CLIENTS {
            run.put(i, i as u32, round);
        }
    }
    assert!(run.all().iter().all(|c| !c.import.replay_list().is_empty()), "uncommitted work to replay");
    run.crash().unwrap_or_else(|e| panic!("{e}"));
    run.w.advance(Duration::from_secs(2));
    run.restart(true);
    let restarted = run.w.now();
    run.w.advance(Duration::from_secs(30));
    let done = run.recovery_done();
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].1, done[0].2, done[0].3), (CLIENTS, 0, 0), "all recovered, none evicted or retained");
    assert_eq!(run.gaps(), 0);
    assert!(run.evictions().is_empty());
    let took = run.recovery_time(restarted).unwrap_or_else(|| panic!("not every client is FULL"));
    println!("all_clients_back_in_time: recovery took {took:?} (restart -> every client FULL)");
    assert!(took < Duration::from_secs(1), "imperative recovery closes the window early: {took:?}");
    run.finish().unwrap_or_else(|e| panic!("{e}"));
    for c in run.all() {
        assert!(c.lost.is_empty() && c.failed.is_empty());
    }
}

/// Imperative recovery naming where the target now serves: the target's
/// storage moves to its failover partner, and the MGS's notice names the
/// partner. Clients reconnect there at once; told only "restarted", a
/// client whose current path is the dead node first waits out a CONNECT
/// there.
#[test]
fn restart_notice_sends_clients_to_the_failover_partner() {
    let took = |name_the_path: bool| {
        let mut run = Run::new(3, std::env::var(ptlrpc::sim::SEED_ENV).is_ok(), 0, 1, true);
        run.w.net().set_default_link(LinkConfig::ideal(Duration::from_millis(1)));
        run.w.advance(Duration::from_secs(30));
        assert!(run.all_full(), "everyone connected");
        for i in 0..CLIENTS {
            run.put(i, i as u32, 7);
        }
        run.crash().unwrap_or_else(|e| panic!("{e}"));
        run.w.advance(Duration::from_secs(1));
        // The partner mounts the target's storage and serves it.
        let (old, partner) = (run.server, NodeId(1));
        assert_eq!(run.w.name(partner), "mds0-failover");
        let srv = run.w.with_node(old, |n, _| std::mem::replace(n, SimNode::Dead));
        run.w.with_node(partner, |n, _| *n = srv);
        run.w.restart(partner);
        run.server = partner;
        let restarted = run.w.now();
        for &c in &run.clients.clone() {
            let path: Vec<_> = run.w.node(c).client().path_to(partner).into_iter().collect();
            run.w.with_node(c, |n, now| {
                let imp = &mut n.client_mut().import;
                if name_the_path {
                    imp.handle_target_restarted_at(now, &path)
                } else {
                    imp.handle_target_restarted(now)
                }
            });
        }
        run.w.advance(Duration::from_secs(60));
        let took = run.recovery_time(restarted).unwrap_or_else(|| panic!("not every client is FULL"));
        run.finish().unwrap_or_else(|e| panic!("{e}"));
        assert!(run.evictions().is_empty());
        took
    };
    let (named, unnamed) = (took(true), took(false));
    println!("failover restart: every client FULL {named:?} after the notice naming the partner, {unnamed:?} without");
    assert!(named < Duration::from_secs(1), "{named:?}");
    assert!(unnamed > named, "naming the path saves a CONNECT timeout: {unnamed:?} vs {named:?}");
}

/// Seed documents 3.2.2 and 3.3: one client misses recovery, leaving a
/// gap. A replay that depended on the missing update fails VBR and its
/// client is evicted at the end; an independent one is applied. The
/// missing client is retained and later recovers by delayed recovery: its
/// version-checked replay gets a new transno.
#[test]
fn missing_client_gap_then_delayed_recovery() {
    let mut run = scenario(2);
    let x0 = run.put(0, 1, 100); // T1: key 1
    let x1 = run.put(1, 1, 200); // T2: key 1, depends on T1
    let x2 = run.put(2, 2, 300); // T3: key 2, independent
    run.cut(0);
    run.crash().unwrap_or_else(|e| panic!("{e}"));
    run.w.advance(Duration::from_secs(2));
    run.restart(true);
    let restarted = run.w.now();
    run.w.advance(Duration::from_secs(100));
    assert!(run.server().target.as_ref().is_some_and(|t| t.is_recovering()), "waits for client-0");
    run.w.advance(Duration::from_secs(250));
    let done = run.recovery_done();
    assert_eq!(done.len(), 1, "recovery ended at the soft limit");
    assert!(done[0].0 >= restarted + Duration::from_secs(300));
    assert_eq!((done[0].1, done[0].2, done[0].3), (1, 1, 1), "one recovered, one evicted, one retained");
    assert_eq!(run.gaps(), 1);
    assert_eq!(run.evictions(), vec![("client-1".to_string(), EvictReason::VersionMismatch)]);
    assert!(run.client(1).lost.contains(&x1), "the refused replay is reported lost");
    assert_eq!(run.client(1).kind(), ImportStateKind::Full, "reconnected as a new client");
    assert!(!run.client(2).lost.contains(&x2));
    let t = run.server().target.as_ref().map(|t| t.exports().get("client-0").map(|e| e.stage));
    assert!(matches!(t, Some(Some(ExportStage::Retained { gap: Some(_), .. }))), "{t:?}");
    // client-0 comes back: delayed recovery.
    run.w.net().heal();
    run.w.advance(Duration::from_secs(60));
    let c0 = run.client(0);
    assert_eq!(c0.kind(), ImportStateKind::Full);
    assert!(c0.connects.iter().any(|(_, f)| f.contains(ptlrpc::wire::MsgFlags::CONNECT_DELAYED)));
    assert!(c0.lost.is_empty(), "its replay matched and was applied");
    let delayed = run.server().events.iter().any(|(_, e)| {
        matches!(e, TargetEvent::Replayed { xid, delayed: true, applied: true, ran_as, transno, .. }
            if *xid == x0 && ran_as > transno)
    });
    assert!(delayed, "the delayed replay ran with a new transno");
    let v = run.server().store().get(ptlrpc::target::ObjId(1)).map(|(_, v)| *v);
    assert_eq!(v, Some(100));
    run.finish().unwrap_or_else(|e| panic!("{e}"));
}

/// Seed document 3.3.3: the window has closed and primary recovery is
/// still running (a connected client is stuck mid-replay) when the missing
/// client arrives. It is told to come back (-EBUSY) and recovers by
/// delayed recovery as soon as primary recovery ends.
#[test]
fn delayed_client_during_primary_recovery() {
    let mut run = scenario(3);
    run.put(0, 1, 100); // T1, client-0 will be missing
    run.put(1, 2, 200); // T2
    run.put(2, 3, 300); // T3
    run.put(1, 4, 400); // T4
    run.cut(0);
    run.crash().unwrap_or_else(|e| panic!("{e}"));
    run.w.advance(Duration::from_secs(2));
    run.restart(true);
    let restarted = run.w.now();
    // client-1 reconnects, sends its first replay, then drops off.
    run.w.advance(Duration::from_millis(3));
    run.cut(1);
    run.w.run_until(restarted + Duration::from_secs(320));
    assert!(run.server().target.as_ref().is_some_and(|t| t.is_recovering()), "primary recovery still running");
    // client-0 arrives now: during primary recovery, after the window.
    run.w.net().heal();
    run.cut(1);
    run.w.advance(Duration::from_secs(40));
    assert_ne!(run.client(0).kind(), ImportStateKind::Full, "held off while primary recovery runs");
    // client-1 comes back, finishes; then client-0 recovers, delayed.
    run.w.net().heal();
    run.w.advance(Duration::from_secs(120));
    let done = run.recovery_done();
    assert_eq!(done.len(), 1);
    let end = done[0].0;
    let c0 = run.client(0);
    assert_eq!(c0.kind(), ImportStateKind::Full);
    let delayed_at =
        c0.connects.iter().find(|(_, f)| f.contains(ptlrpc::wire::MsgFlags::CONNECT_DELAYED)).map(|(t, _)| *t);
    assert!(delayed_at.is_some_and(|t| t >= end), "delayed connect after primary recovery: {delayed_at:?} vs {end:?}");
    println!("delayed_client_during_primary_recovery: primary ended {:?} after restart", end - restarted);
    run.finish().unwrap_or_else(|e| panic!("{e}"));
}
