//! The simulated network: per-link behaviour and partitions.
//!
//! Owns: [`LinkConfig`] (latency, jitter, loss, duplication, reordering),
//! the per-link table with a default, the set of cut node pairs, and
//! [`Network::route`], which turns one send into zero or more delivery
//! delays using the world's RNG.
//!
//! Must not: hold messages or know about time beyond delays; the world's
//! event queue does that.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::rng::SimRng;
use super::world::NodeId;

/// How one direction of a link behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// Smallest one-way delay.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` per message.
    pub jitter: Duration,
    /// Probability a message is lost.
    pub loss: f64,
    /// Probability a message is delivered twice (independent delays).
    pub duplicate: f64,
    /// Probability a message is held back by up to `reorder_delay` extra,
    /// so later messages overtake it.
    pub reorder: f64,
    /// The most a reordered message is held back.
    pub reorder_delay: Duration,
}

impl LinkConfig {
    /// A perfect link with `latency` and nothing else.
    pub const fn ideal(latency: Duration) -> LinkConfig {
        LinkConfig {
            latency,
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
        }
    }

    /// The longest delay this link can give a delivered message.
    pub fn max_delay(&self) -> Duration {
        self.latency + self.jitter + self.reorder_delay
    }

    /// A random link for `rng`: latency 10 µs–20 ms, jitter up to 10 ms,
    /// loss and duplication up to `max_fault` each, reordering up to 20 %.
    pub fn random(rng: &mut SimRng, max_fault: f64) -> LinkConfig {
        LinkConfig {
            latency: rng.duration(Duration::from_micros(10), Duration::from_millis(20)),
            jitter: rng.duration(Duration::ZERO, Duration::from_millis(10)),
            loss: rng.unit() * max_fault,
            duplicate: rng.unit() * max_fault,
            reorder: rng.unit() * 0.2,
            reorder_delay: rng.duration(Duration::ZERO, Duration::from_millis(50)),
        }
    }
}

impl Default for LinkConfig {
    fn default() -> LinkConfig {
        LinkConfig::ideal(Duration::from_micros(50))
    }
}

/// What became of one send.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// Cut by a partition.
    Partitioned,
    /// Lost on the link.
    Lost,
    /// Delivered after each of these delays (two when duplicated).
    Deliver(Vec<Duration>),
}

/// Links between nodes and the partitions cutting them.
#[derive(Debug, Clone, Default)]
pub struct Network {
    default_link: LinkConfig,
    links: BTreeMap<(NodeId, NodeId), LinkConfig>,
    cut: BTreeSet<(NodeId, NodeId)>,
}

impl Network {
    /// Sets the behaviour of links with no config of their own.
    pub fn set_default_link(&mut self, link: LinkConfig) {
        self.default_link = link;
    }

    /// Sets the link from `from` to `to` (one direction).
    pub fn set_link(&mut self, from: NodeId, to: NodeId, link: LinkConfig) {
        self.links.insert((from, to), link);
    }

    /// The link from `from` to `to`.
    pub fn link(&self, from: NodeId, to: NodeId) -> &LinkConfig {
        self.links.get(&(from, to)).unwrap_or(&self.default_link)
    }

    /// The longest delay any configured link can give.
    pub fn max_delay(&self) -> Duration {
        self.links.values().map(LinkConfig::max_delay).fold(self.default_link.max_delay(), Duration::max)
    }

    /// Cuts every link between a node of `a` and a node of `b`, both ways.
    pub fn partition(&mut self, a: &[NodeId], b: &[NodeId]) {
        for &x in a {
            for &y in b {
                self.cut.insert((x, y));
                self.cut.insert((y, x));
            }
        }
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Whether `from` can reach `to`.
    pub fn connected(&self, from: NodeId, to: NodeId) -> bool {
        !self.cut.contains(&(from, to))
    }

    /// Decides what happens to one message from `from` to `to`.
    pub fn route(&self, rng: &mut SimRng, from: NodeId, to: NodeId) -> Route {
        if !self.connected(from, to) {
            return Route::Partitioned;
        }
        let link = *self.link(from, to);
        if rng.chance(link.loss) {
            return Route::Lost;
        }
        let copies = if rng.chance(link.duplicate) { 2 } else { 1 };
        let delays = (0..copies)
            .map(|_| {
                let mut d = link.latency + rng.duration(Duration::ZERO, link.jitter);
                if rng.chance(link.reorder) {
                    d += rng.duration(Duration::ZERO, link.reorder_delay);
                }
                d
            })
            .collect();
        Route::Deliver(delays)
    }
}
