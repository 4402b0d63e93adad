//! The replay list: replied, uncommitted modifying requests in transno
//! order (Lustre's `imp_replay_list`), pruned as `last_committed`
//! advances. Opens stay until released (closed) and, when their close has
//! a replay entry of its own, until that close leaves the list too (a
//! replayed close needs its open replayed first); entries waiting for
//! delayed recovery stay until re-keyed.
//!
//! Owns: [`ReplayList`] and its indexes — by xid (to release an open and
//! to know whether a close is still listed, without a scan) and by close
//! (which open a listed close holds back) — and the pruning. Pruning
//! costs what changed, not the list's length: a reply whose
//! `last_committed` did not move looks only at the entries an event made
//! removable since (an open released, a close gone, an entry added below
//! what was pruned already, a re-key). Reconnect-time pruning
//! (`prune_client_committed`) is a full pass, and rebuilds the indexes.
//!
//! Must not: send, choose states or read a clock; the import drives it.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::lists::RequestSpec;
use crate::wire::{ObjVersion, PRE_VERSIONS, Transno, Xid};

/// One replied, not yet committed (or open, not yet closed) request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayEntry {
    /// The request's xid (replays keep it).
    pub xid: Xid,
    /// The transno the target gave it (new after a delayed replay).
    pub transno: Transno,
    /// What to replay.
    pub spec: RequestSpec,
    /// Object versions before the original execution, from its reply.
    pub pre_versions: [ObjVersion; PRE_VERSIONS],
    /// An open not yet released: kept after commit.
    pub open: bool,
    /// The reply slot it had (replays keep it).
    pub tag: u16,
    /// A released open whose close (this xid) went on the list: kept
    /// until the close leaves it.
    pub closed_by: Option<Xid>,
    /// Waiting for delayed recovery: its transno came from a target
    /// instance that finished recovery without it, so `last_committed` says
    /// nothing about it.
    pub delayed_pending: bool,
}

/// Replied, uncommitted requests in transno order.
#[derive(Debug, Clone, Default)]
pub struct ReplayList {
    by_transno: BTreeMap<Transno, ReplayEntry>,
    /// xid -> transno of every entry.
    by_xid: HashMap<Xid, Transno>,
    /// A listed close's xid -> the transno of the released open it holds.
    held_by: HashMap<Xid, Transno>,
    /// Every entry at or below this transno that is not in `check` is kept
    /// for a reason (open, its close listed, waiting for delayed
    /// recovery).
    pruned: Transno,
    /// Entries an event may have made removable since the last prune.
    check: Vec<Transno>,
}

impl ReplayList {
    /// Entries held.
    pub fn len(&self) -> usize {
        self.by_transno.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.by_transno.is_empty()
    }

    /// The entries in transno order.
    pub fn iter(&self) -> impl Iterator<Item = &ReplayEntry> {
        self.by_transno.values()
    }

    /// The entry with `transno`.
    pub fn get(&self, transno: Transno) -> Option<&ReplayEntry> {
        self.by_transno.get(&transno)
    }

    pub(crate) fn add(&mut self, e: ReplayEntry) {
        let t = e.transno;
        if let Some(old) = self.by_transno.remove(&t) {
            self.unindex(&old);
        }
        self.by_xid.insert(e.xid, t);
        if let Some(c) = e.closed_by {
            self.held_by.insert(c, t);
        }
        if t <= self.pruned {
            self.check.push(t);
        }
        self.by_transno.insert(t, e);
    }

    /// Drops `e`'s index entries; the open its leaving close held back
    /// may go now.
    fn unindex(&mut self, e: &ReplayEntry) {
        if self.by_xid.get(&e.xid) == Some(&e.transno) {
            self.by_xid.remove(&e.xid);
        }
        if let Some(c) = e.closed_by
            && self.held_by.get(&c) == Some(&e.transno)
        {
            self.held_by.remove(&c);
        }
        if let Some(open) = self.held_by.get(&e.xid) {
            self.check.push(*open);
        }
    }

    pub(crate) fn remove(&mut self, transno: Transno) -> Option<ReplayEntry> {
        let e = self.by_transno.remove(&transno)?;
        self.unindex(&e);
        Some(e)
    }

    /// Whether the entry `t`, `e` may leave at `last_committed`.
    fn removable(&self, t: Transno, e: &ReplayEntry, last_committed: Transno) -> bool {
        !e.open
            && !e.delayed_pending
            && t <= last_committed
            && e.closed_by.is_none_or(|c| !self.by_xid.contains_key(&c))
    }

    /// Drops entries committed by `last_committed` (not opens, not entries
    /// waiting for delayed recovery, not released opens whose close is
    /// still held). Returns how many went.
    pub(crate) fn prune_committed(&mut self, last_committed: Transno) -> usize {
        let mut todo = std::mem::take(&mut self.check);
        if last_committed > self.pruned {
            let from = Transno(self.pruned.0.saturating_add(1));
            todo.extend(self.by_transno.range(from..=last_committed).map(|(t, _)| *t));
            self.pruned = last_committed;
        }
        // In transno order (an open before its close), and again for the
        // opens a leaving close lets go.
        todo.sort_unstable();
        todo.dedup();
        let mut gone = 0;
        let mut queue: VecDeque<Transno> = todo.into();
        while let Some(t) = queue.pop_front() {
            let go = self.by_transno.get(&t).is_some_and(|e| self.removable(t, e, last_committed));
            if go && self.remove(t).is_some() {
                gone += 1;
                queue.extend(self.check.drain(..));
            }
        }
        // Entries above `last_committed` an event touched: looked at when
        // it gets there (the range covers them); below it, none is left
        // removable.
        self.check.clear();
        gone
    }

    /// Drops entries the target holds durably by its record of this
    /// client (`client_committed` of a recovering or delayed connect: see
    /// [`Transno::covered_by`]), waiting ones included, opens aside.
    pub(crate) fn prune_client_committed(&mut self, client_committed: Transno) -> usize {
        let before = self.by_transno.len();
        self.by_transno.retain(|&t, e| e.open || e.closed_by.is_some() || !t.covered_by(client_committed));
        let xids: std::collections::HashSet<Xid> = self.by_transno.values().map(|e| e.xid).collect();
        self.by_transno.retain(|&t, e| match e.closed_by {
            Some(c) if !e.open => xids.contains(&c) || !t.covered_by(client_committed),
            _ => true,
        });
        self.reindex();
        before - self.by_transno.len()
    }

    /// Rebuilds the indexes after a full pass.
    fn reindex(&mut self) {
        self.by_xid = self.by_transno.iter().map(|(t, e)| (e.xid, *t)).collect();
        self.held_by = self.by_transno.iter().filter_map(|(t, e)| Some((e.closed_by?, *t))).collect();
        self.check = self.by_transno.keys().copied().filter(|t| *t <= self.pruned).collect();
    }

    pub(crate) fn mark_all_pending(&mut self) {
        for e in self.by_transno.values_mut() {
            e.delayed_pending = true;
        }
    }

    /// Transnos to replay in a pass, in order.
    pub(crate) fn todo(&self, pending: bool) -> VecDeque<Transno> {
        self.by_transno.iter().filter(|(_, e)| e.delayed_pending == pending).map(|(&t, _)| t).collect()
    }

    /// Whether any entry waits for delayed recovery.
    pub fn has_pending(&self) -> bool {
        self.by_transno.values().any(|e| e.delayed_pending)
    }

    /// A delayed replay got transno `new`: re-key and clear pending.
    pub(crate) fn rekey(&mut self, old: Transno, new: Transno) {
        if let Some(mut e) = self.remove(old) {
            e.transno = new;
            e.delayed_pending = false;
            self.add(e);
            self.check.push(new);
        }
    }

    /// The open `xid` was closed by request `close` (on the list while it
    /// is uncommitted; `None`: the close left nothing to replay): it may go
    /// once committed and the close has gone. Returns whether it was found.
    pub(crate) fn release_open(&mut self, xid: Xid, close: Option<Xid>) -> bool {
        let Some(&t) = self.by_xid.get(&xid) else { return false };
        match self.by_transno.get_mut(&t) {
            Some(e) if e.open => {
                e.open = false;
                e.closed_by = close;
                if let Some(c) = close {
                    self.held_by.insert(c, t);
                }
                self.check.push(t);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn drain(&mut self) -> Vec<ReplayEntry> {
        self.by_xid.clear();
        self.held_by.clear();
        self.check.clear();
        std::mem::take(&mut self.by_transno).into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Op, Portal};
    use proptest::prelude::*;

    /// The straightforward full-scan pruning the list's indexes replace
    /// (the reference the indexed list must agree with).
    #[derive(Debug, Default)]
    struct Model {
        m: BTreeMap<Transno, ReplayEntry>,
    }

    impl Model {
        fn prune_released(&mut self, keep: impl Fn(Transno, &ReplayEntry) -> bool) {
            let xids: std::collections::BTreeSet<Xid> = self.m.values().map(|e| e.xid).collect();
            self.m.retain(|&t, e| match e.closed_by {
                Some(c) if !e.open => xids.contains(&c) || keep(t, e),
                _ => true,
            });
        }
        fn prune_committed(&mut self, lc: Transno) {
            self.m.retain(|&t, e| e.open || e.closed_by.is_some() || e.delayed_pending || t > lc);
            self.prune_released(|t, e| e.delayed_pending || t > lc);
        }
        fn prune_client_committed(&mut self, cc: Transno) {
            self.m.retain(|&t, e| e.open || e.closed_by.is_some() || !t.covered_by(cc));
            self.prune_released(|t, _| !t.covered_by(cc));
        }
        fn release_open(&mut self, xid: Xid, close: Option<Xid>) -> bool {
            match self.m.values_mut().find(|e| e.xid == xid && e.open) {
                Some(e) => {
                    e.open = false;
                    e.closed_by = close;
                    true
                }
                None => false,
            }
        }
        fn rekey(&mut self, old: Transno, new: Transno) {
            if let Some(mut e) = self.m.remove(&old) {
                e.transno = new;
                e.delayed_pending = false;
                self.m.insert(new, e);
            }
        }
    }

    fn entry(t: u64, open: bool) -> ReplayEntry {
        ReplayEntry {
            xid: Xid(t + 1000),
            transno: Transno(t),
            spec: RequestSpec {
                op: Op::MdsReint,
                portal: Portal(12),
                body: Vec::new(),
                kind: ReqKind::Modify,
                jobid: None,
            },
            pre_versions: [ObjVersion::default(); PRE_VERSIONS],
            open,
            tag: 0,
            closed_by: None,
            delayed_pending: false,
        }
    }

    use super::super::lists::ReqKind;

    #[derive(Debug, Clone)]
    enum Step {
        /// A reply: an entry (an open or not), then the reply's
        /// `last_committed` (growing by the given amount).
        Reply {
            open: bool,
            commit_by: u64,
        },
        /// Release the n-th open, closed by the next entry (or nothing).
        Release {
            nth: usize,
            close_listed: bool,
        },
        /// A reconnect's `client_committed` at the n-th entry.
        ClientCommitted {
            nth: usize,
        },
        /// Delayed recovery: all pending, then the n-th re-keyed.
        Pending,
        Rekey {
            nth: usize,
        },
        Remove {
            nth: usize,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (any::<bool>(), 0u64..4).prop_map(|(open, commit_by)| Step::Reply { open, commit_by }),
            3 => (0usize..64, any::<bool>()).prop_map(|(nth, close_listed)| Step::Release { nth, close_listed }),
            1 => (0usize..64).prop_map(|nth| Step::ClientCommitted { nth }),
            1 => Just(Step::Pending),
            1 => (0usize..64).prop_map(|nth| Step::Rekey { nth }),
            1 => (0usize..64).prop_map(|nth| Step::Remove { nth }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// After every step the indexed list holds exactly what the
        /// full-scan reference holds, and its pruning removes as many.
        #[test]
        fn the_indexed_list_prunes_exactly_as_the_full_scan(steps in prop::collection::vec(step(), 1..80)) {
            let mut list = ReplayList::default();
            let mut model = Model::default();
            let mut next = 1u64;
            let mut lc = 0u64;
            for s in steps {
                let nth = |n: usize, m: &Model| m.m.keys().copied().nth(n % m.m.len().max(1));
                match s {
                    Step::Reply { open, commit_by } => {
                        let e = entry(next, open);
                        next += 1;
                        list.add(e.clone());
                        model.m.insert(e.transno, e);
                        // A reply may report a last_committed below entries
                        // already listed, or above the one just added.
                        lc = (lc + commit_by).min(next);
                        list.prune_committed(Transno(lc));
                        model.prune_committed(Transno(lc));
                    }
                    Step::Release { nth: n, close_listed } => {
                        let opens: Vec<Xid> = model.m.values().filter(|e| e.open).map(|e| e.xid).collect();
                        if opens.is_empty() { continue; }
                        let xid = opens[n % opens.len()];
                        let close = if close_listed {
                            let c = entry(next, false);
                            next += 1;
                            list.add(c.clone());
                            let x = c.xid;
                            model.m.insert(c.transno, c);
                            Some(x)
                        } else {
                            None
                        };
                        prop_assert_eq!(list.release_open(xid, close), model.release_open(xid, close));
                        list.prune_committed(Transno(lc));
                        model.prune_committed(Transno(lc));
                    }
                    Step::ClientCommitted { nth: n } => {
                        let Some(t) = nth(n, &model) else { continue };
                        prop_assert_eq!(
                            list.prune_client_committed(t),
                            { let b = model.m.len(); model.prune_client_committed(t); b - model.m.len() }
                        );
                    }
                    Step::Pending => {
                        list.mark_all_pending();
                        for e in model.m.values_mut() { e.delayed_pending = true; }
                    }
                    Step::Rekey { nth: n } => {
                        let Some(t) = nth(n, &model) else { continue };
                        let new = Transno(next);
                        next += 1;
                        list.rekey(t, new);
                        model.rekey(t, new);
                    }
                    Step::Remove { nth: n } => {
                        let Some(t) = nth(n, &model) else { continue };
                        prop_assert_eq!(list.remove(t), model.m.remove(&t));
                    }
                }
                let got: Vec<&ReplayEntry> = list.iter().collect();
                let want: Vec<&ReplayEntry> = model.m.values().collect();
                prop_assert_eq!(got, want);
            }
            // Everything committed and released at the end: both empty out
            // the same way.
            let lc = Transno(next);
            list.prune_committed(lc);
            model.prune_committed(lc);
            prop_assert_eq!(list.len(), model.m.len());
        }
    }
}
