//! The simulated world: nodes, a virtual clock and one event queue.
//!
//! Owns: [`World`], which holds every [`Node`], the virtual clock, the
//! [`Network`], the seeded [`SimRng`] and an event queue ordered by
//! `(time, seq)`; it delivers messages, fires node timers, crashes and
//! restarts nodes, and prints a per-event trace when asked.
//!
//! Must not: know any protocol. Nodes see only bytes, their peers' ids and
//! `now`; everything random is drawn from the one seeded RNG.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;
use std::time::Duration;

use super::net::{Network, Route};
use super::rng::SimRng;
use crate::time::{Clock, Time};

/// Names a node in a [`World`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// A message a node wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: NodeId,
    /// The encoded message.
    pub bytes: Vec<u8>,
}

/// A sans-IO state machine the world can drive.
pub trait Node {
    /// A message from `from` arrived at `now`.
    fn handle_message(&mut self, now: Time, from: NodeId, bytes: &[u8]);
    /// The time the node last asked for through `poll_timeout` has come.
    fn handle_timeout(&mut self, now: Time);
    /// The next message to send, if any.
    fn poll_transmit(&mut self, now: Time) -> Option<Transmit>;
    /// When the node next wants `handle_timeout` called.
    fn poll_timeout(&self) -> Option<Time>;
    /// The node crashed: drop volatile state (durable state survives).
    fn crash(&mut self) {}
    /// The node came back at `now`.
    fn restart(&mut self, _now: Time) {}
}

/// Counters of what the world did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Events processed.
    pub events: u64,
    /// Messages handed to nodes.
    pub delivered: u64,
    /// Messages lost on links.
    pub lost: u64,
    /// Extra copies made by duplication.
    pub duplicated: u64,
    /// Messages cut by partitions.
    pub partitioned: u64,
    /// Messages that arrived at a crashed node.
    pub dropped_down: u64,
    /// Node timers fired.
    pub timers: u64,
}

#[derive(Debug)]
enum Action {
    Deliver { from: NodeId, to: NodeId, bytes: Vec<u8> },
    Timer { node: NodeId, generation: u64 },
}

#[derive(Debug)]
struct Scheduled {
    at: Time,
    seq: u64,
    action: Action,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed, so the max-heap pops the earliest `(at, seq)` first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Debug)]
struct Slot<N> {
    name: String,
    node: N,
    up: bool,
    timer: Option<Time>,
    generation: u64,
}

/// Messages a node may emit in one wake-up before the world calls it a
/// livelock.
const MAX_TRANSMITS_PER_WAKE: usize = 100_000;

/// A deterministic world of nodes `N` (use an enum for mixed node kinds).
#[derive(Debug)]
pub struct World<N> {
    now: Time,
    seq: u64,
    rng: SimRng,
    queue: BinaryHeap<Scheduled>,
    nodes: Vec<Slot<N>>,
    net: Network,
    trace: bool,
    stats: SimStats,
    event_budget: u64,
    describe: fn(&[u8]) -> String,
}

fn describe_len(bytes: &[u8]) -> String {
    format!("{}B", bytes.len())
}

impl<N: Node> World<N> {
    /// An empty world at time zero drawing everything from `seed`.
    pub fn new(seed: u64) -> World<N> {
        World {
            now: Time::ZERO,
            seq: 0,
            rng: SimRng::new(seed),
            queue: BinaryHeap::new(),
            nodes: Vec::new(),
            net: Network::default(),
            trace: false,
            stats: SimStats::default(),
            event_budget: 10_000_000,
            describe: describe_len,
        }
    }

    /// Prints every event to stderr when `on`.
    pub fn set_trace(&mut self, on: bool) {
        self.trace = on;
    }

    /// Sets how traces print a message (default: its length), so a
    /// protocol's tests can show opcodes and xids.
    pub fn set_message_formatter(&mut self, describe: fn(&[u8]) -> String) {
        self.describe = describe;
    }

    /// Caps the events a run may process (a livelock guard).
    pub fn set_event_budget(&mut self, events: u64) {
        self.event_budget = events;
    }

    /// The virtual time.
    pub fn now(&self) -> Time {
        self.now
    }

    /// The world's RNG, for scenario choices (which node crashes, when).
    pub fn rng(&mut self) -> &mut SimRng {
        &mut self.rng
    }

    /// The network, to configure links and partitions.
    pub fn net(&mut self) -> &mut Network {
        &mut self.net
    }

    /// What the world has done so far.
    pub fn stats(&self) -> SimStats {
        self.stats
    }

    /// Writes a trace line (when tracing) stamped with the virtual time.
    pub fn trace(&self, line: fmt::Arguments<'_>) {
        if self.trace {
            eprintln!("[{}] {line}", self.now);
        }
    }

    /// Adds a node, up, and lets it send and arm its timer.
    pub fn add_node(&mut self, name: &str, node: N) -> NodeId {
        let id = NodeId(u32::try_from(self.nodes.len()).unwrap_or(u32::MAX));
        self.nodes.push(Slot { name: name.to_string(), node, up: true, timer: None, generation: 0 });
        self.trace(format_args!("add {id} {name}"));
        self.wake(id);
        id
    }

    /// The node `id`. Panics on an id this world did not hand out.
    pub fn node(&self, id: NodeId) -> &N {
        &self.slot(id).node
    }

    /// The name `id` was added with.
    pub fn name(&self, id: NodeId) -> &str {
        &self.slot(id).name
    }

    /// Whether `id` is up.
    pub fn is_up(&self, id: NodeId) -> bool {
        self.slot(id).up
    }

    /// Runs `f` on node `id` at the current time, then collects what the
    /// node wants to send and its new timer.
    pub fn with_node<R>(&mut self, id: NodeId, f: impl FnOnce(&mut N, Time) -> R) -> R {
        let now = self.now;
        let r = f(&mut self.slot_mut(id).node, now);
        self.wake(id);
        r
    }

    /// Crashes `id`: it loses volatile state, stops receiving messages and
    /// timers until [`World::restart`].
    pub fn crash(&mut self, id: NodeId) {
        self.trace(format_args!("crash {id} {}", self.slot(id).name));
        let slot = self.slot_mut(id);
        slot.up = false;
        slot.timer = None;
        slot.generation += 1;
        slot.node.crash();
    }

    /// Restarts a crashed node.
    pub fn restart(&mut self, id: NodeId) {
        self.trace(format_args!("restart {id} {}", self.slot(id).name));
        let now = self.now;
        let slot = self.slot_mut(id);
        slot.up = true;
        slot.node.restart(now);
        self.wake(id);
    }

    /// Processes the next event. Returns false when the queue is empty.
    pub fn step(&mut self) -> bool {
        let Some(ev) = self.queue.pop() else {
            return false;
        };
        assert!(ev.at >= self.now, "event queue went back in time");
        self.now = ev.at;
        self.stats.events += 1;
        assert!(
            self.stats.events <= self.event_budget,
            "event budget of {} exhausted at {} (livelock?)",
            self.event_budget,
            self.now
        );
        match ev.action {
            Action::Deliver { from, to, bytes } => {
                if !self.slot(to).up {
                    self.stats.dropped_down += 1;
                    self.trace(format_args!("drop {from}->{to} {}: {to} is down", (self.describe)(&bytes)));
                    return true;
                }
                self.stats.delivered += 1;
                self.trace(format_args!("deliver {from}->{to} {}", (self.describe)(&bytes)));
                let now = self.now;
                self.slot_mut(to).node.handle_message(now, from, &bytes);
                self.wake(to);
            }
            Action::Timer { node, generation } => {
                let slot = self.slot(node);
                if !slot.up || slot.generation != generation {
                    return true;
                }
                self.stats.timers += 1;
                self.trace(format_args!("timer {node}"));
                let now = self.now;
                let slot = self.slot_mut(node);
                slot.timer = None;
                slot.node.handle_timeout(now);
                self.wake(node);
            }
        }
        true
    }

    /// Runs every event up to and including `until`, then sets the clock
    /// to `until`.
    pub fn run_until(&mut self, until: Time) {
        while self.queue.peek().is_some_and(|ev| ev.at <= until) {
            self.step();
        }
        self.now = self.now.max(until);
    }

    /// Runs for `d` of virtual time.
    pub fn advance(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    fn slot(&self, id: NodeId) -> &Slot<N> {
        &self.nodes[id.0 as usize]
    }

    fn slot_mut(&mut self, id: NodeId) -> &mut Slot<N> {
        &mut self.nodes[id.0 as usize]
    }

    fn schedule(&mut self, at: Time, action: Action) {
        self.seq += 1;
        self.queue.push(Scheduled { at, seq: self.seq, action });
    }

    /// Sends what node `id` has queued and re-arms its timer.
    fn wake(&mut self, id: NodeId) {
        if !self.slot(id).up {
            return;
        }
        let now = self.now;
        for _ in 0..MAX_TRANSMITS_PER_WAKE {
            let Some(t) = self.slot_mut(id).node.poll_transmit(now) else {
                break;
            };
            self.send(id, t);
        }
        let want = self.slot(id).node.poll_timeout();
        let slot = self.slot_mut(id);
        if want != slot.timer {
            slot.timer = want;
            slot.generation += 1;
            let generation = slot.generation;
            if let Some(at) = want {
                self.schedule(at.max(now), Action::Timer { node: id, generation });
            }
        }
    }

    fn send(&mut self, from: NodeId, t: Transmit) {
        assert!((t.to.0 as usize) < self.nodes.len(), "send to unknown node {}", t.to);
        match self.net.route(&mut self.rng, from, t.to) {
            Route::Partitioned => {
                self.stats.partitioned += 1;
                self.trace(format_args!("cut {from}->{} {}", t.to, (self.describe)(&t.bytes)));
            }
            Route::Lost => {
                self.stats.lost += 1;
                self.trace(format_args!("lose {from}->{} {}", t.to, (self.describe)(&t.bytes)));
            }
            Route::Deliver(delays) => {
                self.stats.duplicated += delays.len().saturating_sub(1) as u64;
                let mut bytes = Some(t.bytes);
                let n = delays.len();
                for (i, d) in delays.into_iter().enumerate() {
                    let copy =
                        if i + 1 == n { bytes.take().unwrap_or_default() } else { bytes.clone().unwrap_or_default() };
                    self.trace(format_args!("send {from}->{} {} +{d:?}", t.to, (self.describe)(&copy)));
                    let at = self.now + d;
                    self.schedule(at, Action::Deliver { from, to: t.to, bytes: copy });
                }
            }
        }
    }
}

impl<N> Clock for World<N> {
    fn now(&self) -> Time {
        self.now
    }
}
