//! Peers: credits, health and counters, as the core sees them.
//!
//! Owns per-peer send credits and the queue of messages waiting for one,
//! per-NI credits and queue, peer health (LNet's health value, failures,
//! last alive) and the per-peer traffic counters. Pure bookkeeping: no
//! I/O, no clock reads (times are passed in).

use std::collections::VecDeque;

use tokio::time::Instant;

use crate::nid::Nid;

/// LNet's full health value.
pub const HEALTH_MAX: u32 = 1000;
/// How much one failure costs (LNet's `lnet_health_sensitivity` default is 100).
pub const HEALTH_SENSITIVITY: u32 = 100;

/// A credit pool with its FIFO of waiting message ids.
#[derive(Debug)]
pub(crate) struct CreditQueue {
    pub(crate) max: u32,
    pub(crate) avail: u32,
    pub(crate) min_avail: u32,
    pub(crate) waiting: VecDeque<u64>,
}

impl CreditQueue {
    pub(crate) fn new(max: u32) -> CreditQueue {
        CreditQueue { max, avail: max, min_avail: max, waiting: VecDeque::new() }
    }

    /// Takes a credit if one is free.
    pub(crate) fn take(&mut self) -> bool {
        if self.avail == 0 {
            return false;
        }
        self.avail -= 1;
        self.min_avail = self.min_avail.min(self.avail);
        true
    }

    pub(crate) fn give_back(&mut self) {
        debug_assert!(self.avail < self.max, "credit returned twice");
        self.avail = (self.avail + 1).min(self.max);
    }

    pub(crate) fn in_use(&self) -> u32 {
        self.max - self.avail
    }
}

/// Traffic counters of one peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PeerCounters {
    /// Messages sent to the peer.
    pub send_count: u64,
    /// Messages received from the peer.
    pub recv_count: u64,
    /// Messages from the peer that were dropped (no match, malformed).
    pub drop_count: u64,
    /// Payload bytes sent.
    pub send_bytes: u64,
    /// Payload bytes received.
    pub recv_bytes: u64,
    /// Sends that failed.
    pub send_errors: u64,
}

#[derive(Debug)]
pub(crate) struct PeerState {
    pub(crate) credits: CreditQueue,
    pub(crate) health: u32,
    pub(crate) failures: u64,
    pub(crate) last_alive: Option<Instant>,
    pub(crate) counters: PeerCounters,
}

impl PeerState {
    pub(crate) fn new(credits: u32) -> PeerState {
        PeerState {
            credits: CreditQueue::new(credits),
            health: HEALTH_MAX,
            failures: 0,
            last_alive: None,
            counters: PeerCounters::default(),
        }
    }

    pub(crate) fn alive(&mut self, now: Instant) {
        self.last_alive = Some(now);
        // Recovery is gradual, as LNet's: one success undoes one sensitivity step.
        self.health = (self.health + HEALTH_SENSITIVITY).min(HEALTH_MAX);
    }

    pub(crate) fn failed(&mut self) {
        self.failures += 1;
        self.health = self.health.saturating_sub(HEALTH_SENSITIVITY);
    }
}

/// A snapshot of one peer, for `lnetctl peer show`-style listings and metrics.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PeerInfo {
    /// The peer.
    pub nid: Nid,
    /// Health value, 0..=1000.
    pub health: u32,
    /// Failures seen.
    pub failures: u64,
    /// Seconds since the peer was last heard from (None: never).
    pub last_alive_secs_ago: Option<u64>,
    /// Credits configured.
    pub max_credits: u32,
    /// Credits free now.
    pub credits: u32,
    /// Fewest credits ever free.
    pub min_credits: u32,
    /// Messages waiting for a credit.
    pub queued: usize,
    /// Traffic.
    pub counters: PeerCounters,
}
