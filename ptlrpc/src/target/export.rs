//! Server-side exports: one per client UUID.
//!
//! Owns: [`Export`] (the connection's state on the target: handle cookie,
//! conn_cnt, negotiated data, recovery stage, the held "replay done"
//! PING) and [`Exports`], the table by UUID and by handle, including the
//! bounded set of disconnected exports retained for delayed recovery.
//!
//! Must not: decide connects, recovery or eviction (the target does); it
//! keeps the table consistent (a handle names at most one export).

use std::collections::{BTreeMap, VecDeque};

use super::PeerId;
use crate::time::Time;
use crate::wire::{ConnCnt, ConnectData, ExportHandle, Header, Transno, Xid};

/// Executed-but-uncommitted transnos an export tracks at most.
pub const UNCOMMITTED_TRACKED: usize = 64;
/// Executed xids an export remembers at most ([`Export::done`]).
pub const DONE_TRACKED: usize = 1 << 14;

/// Where an export is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportStage {
    /// Connected and serving.
    Normal,
    /// Known from the client table at boot; in primary recovery.
    Recovering {
        /// Reconnected since boot.
        connected: bool,
        /// Sent its "replay done" PING.
        done: bool,
    },
    /// Reconnected after recovery ended without it: replaying with
    /// version checks and new transnos.
    Delayed,
    /// Missing when recovery ended; kept so it can recover later.
    Retained {
        /// The first transno missing in that recovery.
        gap: Option<Transno>,
        /// Since when.
        since: Time,
    },
}

/// One client's export.
#[derive(Debug, Clone)]
pub struct Export {
    /// The client's UUID.
    pub uuid: String,
    /// The random cookie naming this export on the wire.
    pub handle: ExportHandle,
    /// Where replies go.
    pub peer: PeerId,
    /// The highest conn_cnt seen in a CONNECT; older requests are dropped.
    pub conn_cnt: ConnCnt,
    /// What was negotiated.
    pub data: ConnectData,
    /// Life stage.
    pub stage: ExportStage,
    /// A replay failed its version check: evicted once its replays end.
    pub vbr_failed: bool,
    /// The "replay done" PING, answered when recovery ends.
    pub held_ping: Option<Header>,
    /// The client's last transno as loaded at boot (durable): its replays
    /// at or below it were committed before the crash. Kept for the whole
    /// boot (replays always carry transnos of earlier boots).
    pub boot_transno: Option<Transno>,
    /// Updates of the client's executed in this boot, by xid, with their
    /// transno and whether they were replays: a duplicate whose slot was
    /// reused since is still known. Normal ones go once the client
    /// acknowledges them (then `replied_xid` covers them); at most
    /// [`DONE_TRACKED`] are kept.
    pub done: BTreeMap<Xid, (Transno, bool)>,
    /// A CONNECT is being answered; another one is dropped meanwhile.
    pub connecting: bool,
    /// Transnos of the client's executed updates not yet known durable
    /// (the newest [`UNCOMMITTED_TRACKED`]; dropping older ones is safe,
    /// as a later transno durable implies every earlier one is).
    pub uncommitted: VecDeque<Transno>,
    /// The `last_committed` this client is told: the transno of one of
    /// its own updates known durable. Not the target-wide value: during
    /// recovery that can pass a transno a gap left unexecuted.
    pub own_committed: Transno,
}

impl Export {
    /// The client's update `xid` was executed as `transno`.
    pub fn executed(&mut self, xid: Xid, transno: Transno, replay: bool) {
        if self.uncommitted.len() == UNCOMMITTED_TRACKED {
            self.uncommitted.pop_front();
        }
        self.uncommitted.push_back(transno);
        if self.done.len() >= DONE_TRACKED {
            self.done.pop_first();
        }
        self.done.insert(xid, (transno, replay));
    }

    /// The client acknowledged every reply up to `xid`: forgets the normal
    /// updates it covers (replays stay: their xids are old).
    pub fn acknowledged(&mut self, xid: Xid) {
        self.done.retain(|&x, &mut (_, replay)| replay || x > xid);
    }

    /// A fresh export.
    pub fn new(uuid: &str, handle: ExportHandle, peer: PeerId, stage: ExportStage) -> Export {
        Export {
            uuid: uuid.to_string(),
            handle,
            peer,
            conn_cnt: ConnCnt(0),
            data: ConnectData::default(),
            stage,
            vbr_failed: false,
            held_ping: None,
            boot_transno: None,
            done: BTreeMap::new(),
            connecting: false,
            uncommitted: VecDeque::new(),
            own_committed: Transno(0),
        }
    }
}

/// The exports of a target, by UUID and by handle.
#[derive(Debug, Clone, Default)]
pub struct Exports {
    by_uuid: BTreeMap<String, Export>,
    by_handle: BTreeMap<ExportHandle, String>,
}

impl Exports {
    /// Number of exports (retained ones included).
    pub fn len(&self) -> usize {
        self.by_uuid.len()
    }

    /// No exports.
    pub fn is_empty(&self) -> bool {
        self.by_uuid.is_empty()
    }

    /// Whether `handle` names an export.
    pub fn has_handle(&self, handle: ExportHandle) -> bool {
        self.by_handle.contains_key(&handle)
    }

    /// The export of `uuid`.
    pub fn get(&self, uuid: &str) -> Option<&Export> {
        self.by_uuid.get(uuid)
    }

    /// The export of `uuid`, mutably.
    pub fn get_mut(&mut self, uuid: &str) -> Option<&mut Export> {
        self.by_uuid.get_mut(uuid)
    }

    /// The UUID of the export named by `handle`.
    pub fn uuid_of(&self, handle: ExportHandle) -> Option<&str> {
        self.by_handle.get(&handle).map(String::as_str)
    }

    /// Adds `e`, replacing any export of the same UUID.
    pub fn insert(&mut self, e: Export) {
        self.remove(&e.uuid.clone());
        self.by_handle.insert(e.handle, e.uuid.clone());
        self.by_uuid.insert(e.uuid.clone(), e);
    }

    /// Removes the export of `uuid`.
    pub fn remove(&mut self, uuid: &str) -> Option<Export> {
        let e = self.by_uuid.remove(uuid)?;
        self.by_handle.remove(&e.handle);
        Some(e)
    }

    /// Every export.
    pub fn iter(&self) -> impl Iterator<Item = &Export> {
        self.by_uuid.values()
    }

    /// The `last_committed` for the client of `handle`, given the
    /// target-wide durable transno `committed` (updates apply in transno
    /// order within a boot, so an executed transno at or below it is
    /// durable).
    pub fn committed_for(&mut self, handle: ExportHandle, committed: Transno) -> Transno {
        let Some(e) = self.by_handle.get(&handle).and_then(|u| self.by_uuid.get_mut(u)) else {
            return Transno(0);
        };
        while let Some(&t) = e.uncommitted.front().filter(|&&t| t <= committed) {
            e.own_committed = e.own_committed.max(t);
            e.uncommitted.pop_front();
        }
        e.own_committed
    }

    /// Every export, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Export> {
        self.by_uuid.values_mut()
    }

    /// The retained export held longest, if more than `max` are retained.
    pub fn retained_over(&self, max: usize) -> Option<String> {
        let mut retained: Vec<(&Time, &str)> = self
            .by_uuid
            .values()
            .filter_map(|e| match &e.stage {
                ExportStage::Retained { since, .. } => Some((since, e.uuid.as_str())),
                _ => None,
            })
            .collect();
        if retained.len() <= max {
            return None;
        }
        retained.sort();
        retained.first().map(|(_, u)| u.to_string())
    }
}
