//! The import's request lists: sending and delayed requests, and the
//! replay list.
//!
//! Owns: [`RequestSpec`] (what a caller asks for), the table of requests
//! without a final reply (Lustre's sending and delayed lists: a request
//! is delayed until the import is FULL and, for modifying requests, until
//! one of the negotiated `max_mod_rpcs` reply slots is free; a modifying
//! request holds its slot — its tag — from its first send until its final
//! reply, across resends), and [`ReplayList`]: replied,
//! uncommitted modifying requests in transno order, pruned as
//! `last_committed` advances; open requests stay until released (closed)
//! and, when their close has a replay entry of its own, until that close
//! leaves the list too (a replayed close needs its open replayed first);
//! it lives in `super::replay_list`.
//! A request may carry a [`ReplayFixup`]: when its reply arrives, the
//! body kept for replay is rewritten from the reply (what the target
//! chose — an open's handle, a create's layout — goes into the replay).
//!
//! Must not: send, choose states or read a clock; the import drives these.

use std::collections::BTreeMap;

use crate::time::Time;
use crate::wire::{ConnCnt, Op, Portal, Xid};

/// What kind of request a caller submits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReqKind {
    /// Reads nothing durable: no transno, never replayed.
    Read,
    /// Modifies the target: gets a transno and is replayed until committed.
    /// At most the negotiated `max_mod_rpcs` are in flight per import, each
    /// in its own slot (tag) of the target's record of the client.
    Modify,
    /// Like `Modify`, but kept for replay after commit until
    /// [`super::Import::release_open`] (Lustre's committed opens).
    Open,
}

impl ReqKind {
    /// Whether the request modifies the target.
    pub fn modifies(self) -> bool {
        matches!(self, ReqKind::Modify | ReqKind::Open)
    }
}

/// A request as the caller describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSpec {
    /// The operation.
    pub op: Op,
    /// The service portal (keys the adaptive-timeout estimate).
    pub portal: Portal,
    /// The body, already archived.
    pub body: Vec<u8>,
    /// Read, modify or open.
    pub kind: ReqKind,
    /// The job the request is made for (its header's job id, on every
    /// send, resend and replay); `None`: the import's own
    /// (`ImportConfig::jobid`).
    pub jobid: Option<crate::wire::JobId>,
}

/// Rewrites a request's body for replay from its reply: called with the
/// request body and the reply body when the reply arrives (status 0, a
/// transno); `Some` replaces the body every replay sends, `None` keeps it.
pub type ReplayFixup = fn(request: &[u8], reply: &[u8]) -> Option<Vec<u8>>;

/// Where a request without its reply is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Not sent yet (the delayed list).
    Delayed,
    /// Sent on connection `conn_cnt`; waiting for the reply.
    Sent { sent: Time, deadline: Time, conn_cnt: ConnCnt },
    /// Was sent on a connection that failed: resend (same xid, `RESEND`).
    Resend,
}

#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub spec: RequestSpec,
    pub phase: Phase,
    /// The reply slot a modifying request holds (0: none yet).
    pub tag: u16,
    pub fixup: Option<ReplayFixup>,
    /// Times the target answered -EINPROGRESS (resent each time).
    pub in_progress: u32,
}

/// Requests without a final reply, by xid.
#[derive(Debug, Clone, Default)]
pub(crate) struct Requests {
    map: BTreeMap<Xid, Req>,
}

impl Requests {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn insert(&mut self, xid: Xid, spec: RequestSpec, fixup: Option<ReplayFixup>) {
        self.map.insert(xid, Req { spec, phase: Phase::Delayed, tag: 0, fixup, in_progress: 0 });
    }

    pub fn get(&self, xid: Xid) -> Option<&Req> {
        self.map.get(&xid)
    }

    pub fn get_mut(&mut self, xid: Xid) -> Option<&mut Req> {
        self.map.get_mut(&xid)
    }

    pub fn remove(&mut self, xid: Xid) -> Option<Req> {
        self.map.remove(&xid)
    }

    /// The lowest free slot in `1..=max_mod`, if any.
    fn free_tag(&self, max_mod: u16) -> Option<u16> {
        let used: std::collections::BTreeSet<u16> = self.map.values().map(|r| r.tag).filter(|&t| t != 0).collect();
        if used.len() >= usize::from(max_mod) {
            return None;
        }
        (1..=max_mod.max(1)).find(|t| !used.contains(t))
    }

    /// The lowest xid without its final reply.
    pub fn lowest_xid(&self) -> Option<Xid> {
        self.map.keys().next().copied()
    }

    /// The next request to put on the wire: resends first (xid order), then
    /// delayed requests, holding modifying ones while every one of the
    /// `max_mod` slots is taken. A modifying request sent for the first
    /// time takes the lowest free slot. Returns the xid, whether it is a
    /// resend, and its tag.
    pub fn next_to_send(&mut self, max_mod: u16) -> Option<(Xid, bool, u16)> {
        if let Some((&x, r)) = self.map.iter().find(|(_, r)| r.phase == Phase::Resend) {
            return Some((x, true, r.tag));
        }
        let free = self.free_tag(max_mod);
        let (&x, r) = self
            .map
            .iter_mut()
            .find(|(_, r)| r.phase == Phase::Delayed && (free.is_some() || !r.spec.kind.modifies()))?;
        if r.spec.kind.modifies() {
            r.tag = free?;
        }
        Some((x, false, r.tag))
    }

    /// The connection failed: everything sent must be resent.
    pub fn connection_lost(&mut self) {
        for r in self.map.values_mut() {
            if matches!(r.phase, Phase::Sent { .. }) {
                r.phase = Phase::Resend;
            }
        }
    }

    /// The earliest deadline of a sent request.
    pub fn earliest_deadline(&self) -> Option<Time> {
        self.map
            .values()
            .filter_map(|r| match r.phase {
                Phase::Sent { deadline, .. } => Some(deadline),
                _ => None,
            })
            .min()
    }

    /// Removes every request that was ever sent (the sending list), for
    /// failing them after an eviction; delayed ones stay.
    pub fn drain_sending(&mut self) -> Vec<(Xid, Req)> {
        let xids: Vec<Xid> = self.map.iter().filter(|(_, r)| r.phase != Phase::Delayed).map(|(&x, _)| x).collect();
        xids.into_iter().filter_map(|x| self.map.remove(&x).map(|r| (x, r))).collect()
    }

    /// Removes everything.
    pub fn drain_all(&mut self) -> Vec<(Xid, Req)> {
        std::mem::take(&mut self.map).into_iter().collect()
    }
}

pub use super::replay_list::{ReplayEntry, ReplayList};
