//! [`LockCache`]: the locks the MDT granted this client, and what the
//! client may cache because of them.
//!
//! A lock is entered when an `LDLM_ENQUEUE` reply grants it and leaves
//! when the MDT calls it back (a blocking callback), when the client gives
//! it up before a change of its own would make the MDT call it back
//! (early cancel), when the cache is over its bound (oldest first), or all
//! at once when the mdc import reconnects (the MDT restarted or evicted
//! this client: its locks are gone there, or may be). A callback can
//! overtake the grant it revokes (they travel apart): it is remembered,
//! and the grant, when it comes, is refused ([`LockCache::add`] returns
//! false) and given back.
//!
//! Must not: do I/O or know about FUSE; callers send the cancels and
//! invalidate kernel caches.

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;
use ptlrpc::ldlm::InodeBits;
use ptlrpc::wire::Fid;
use ptlrpc::wire::ldlm::LdlmLockDesc;

/// The most locks a client keeps (the MDT's table holds every client's).
pub const MAX_LOCKS: usize = 16 * 1024;
/// Callbacks remembered for grants not yet seen.
const EARLY_KEPT: usize = 256;

/// A lock this client holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Its handle.
    pub handle: u64,
    /// The object it covers.
    pub fid: Fid,
    /// Its bits.
    pub bits: InodeBits,
}

#[derive(Debug, Default)]
struct Inner {
    locks: HashMap<u64, Held>,
    by_fid: HashMap<Fid, Vec<u64>>,
    /// Oldest first (entries of gone locks are skipped).
    order: VecDeque<u64>,
    early: VecDeque<u64>,
    /// The mdc import generation the locks were granted under.
    generation: u64,
}

impl Inner {
    fn remove(&mut self, handle: u64) -> Option<Held> {
        let h = self.locks.remove(&handle)?;
        if let Some(v) = self.by_fid.get_mut(&h.fid) {
            v.retain(|x| *x != handle);
            if v.is_empty() {
                self.by_fid.remove(&h.fid);
            }
        }
        Some(h)
    }
}

/// The client's granted locks.
#[derive(Debug, Default)]
pub struct LockCache {
    inner: Mutex<Inner>,
}

impl LockCache {
    /// An empty cache.
    pub fn new() -> LockCache {
        LockCache::default()
    }

    /// Locks held.
    pub fn len(&self) -> usize {
        self.inner.lock().locks.len()
    }

    /// Whether no lock is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Enters a granted lock (granted under import `generation`). False
    /// when it must be given back at once: its callback came first, or it
    /// is from an older generation. Also returns the oldest locks pushed
    /// out by the bound, to be cancelled.
    pub fn add(&self, generation: u64, d: &LdlmLockDesc) -> (bool, Vec<Held>) {
        let Some(bits) = InodeBits::from_wire(d.bits) else {
            return (false, Vec::new());
        };
        let mut i = self.inner.lock();
        if generation < i.generation {
            return (false, Vec::new());
        }
        if let Some(pos) = i.early.iter().position(|h| *h == d.handle) {
            i.early.remove(pos);
            return (false, Vec::new());
        }
        let held = Held { handle: d.handle, fid: d.res, bits };
        i.locks.insert(d.handle, held);
        i.by_fid.entry(d.res).or_default().push(d.handle);
        i.order.push_back(d.handle);
        let mut out = Vec::new();
        while i.locks.len() > MAX_LOCKS {
            let Some(old) = i.order.pop_front() else { break };
            if let Some(h) = i.remove(old) {
                out.push(h);
            }
        }
        if i.order.len() > 2 * MAX_LOCKS {
            let live: VecDeque<u64> = i.order.iter().copied().filter(|h| i.locks.contains_key(h)).collect();
            i.order = live;
        }
        (true, out)
    }

    /// Whether the locks held on `fid` cover `bits`.
    pub fn covers(&self, fid: Fid, bits: InodeBits) -> bool {
        let i = self.inner.lock();
        let have = i
            .by_fid
            .get(&fid)
            .into_iter()
            .flatten()
            .filter_map(|h| i.locks.get(h))
            .fold(InodeBits::NONE, |acc, l| acc | l.bits);
        have.contains(bits)
    }

    /// The MDT calls `handle` back: the lock leaves the cache (if it was
    /// not there, its grant may still come: remembered).
    pub fn called_back(&self, handle: u64) -> Option<Held> {
        let mut i = self.inner.lock();
        let got = i.remove(handle);
        if got.is_none() {
            if i.early.len() >= EARLY_KEPT {
                i.early.pop_front();
            }
            i.early.push_back(handle);
        }
        got
    }

    /// Takes out the locks on `fid` with any of `bits` (early cancel
    /// before a change of this client's own).
    pub fn take(&self, fid: Fid, bits: InodeBits) -> Vec<Held> {
        let mut i = self.inner.lock();
        let hs: Vec<u64> = i.by_fid.get(&fid).cloned().unwrap_or_default();
        hs.into_iter()
            .filter(|h| i.locks.get(h).is_some_and(|l| l.bits.intersects(bits)))
            .collect::<Vec<_>>()
            .into_iter()
            .filter_map(|h| i.remove(h))
            .collect()
    }

    /// The import reconnected (generation `generation`): every lock is
    /// dropped (returned, for the kernel's caches to be invalidated).
    /// Nothing when the generation is not new.
    pub fn reconnected(&self, generation: u64) -> Vec<Held> {
        let mut i = self.inner.lock();
        if generation <= i.generation {
            return Vec::new();
        }
        i.generation = generation;
        i.by_fid.clear();
        i.order.clear();
        i.early.clear();
        i.locks.drain().map(|(_, h)| h).collect()
    }

    /// The generation the cache follows.
    pub fn generation(&self) -> u64 {
        self.inner.lock().generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(handle: u64, oid: u32, bits: InodeBits) -> LdlmLockDesc {
        LdlmLockDesc { handle, res: Fid { seq: 1, oid, ver: 0 }, mode: 4, bits: bits.wire() }
    }

    #[test]
    fn a_callback_before_its_grant_refuses_the_grant() {
        let c = LockCache::new();
        assert_eq!(c.called_back(7), None);
        assert!(!c.add(0, &desc(7, 1, InodeBits::UPDATE)).0);
        assert!(c.is_empty());
        assert!(c.add(0, &desc(8, 1, InodeBits::UPDATE)).0);
        assert!(c.covers(Fid { seq: 1, oid: 1, ver: 0 }, InodeBits::UPDATE));
        assert!(!c.covers(Fid { seq: 1, oid: 1, ver: 0 }, InodeBits::KNOWN));
    }

    #[test]
    fn bits_of_two_locks_add_up_and_take_removes_by_bits() {
        let c = LockCache::new();
        let f = Fid { seq: 1, oid: 2, ver: 0 };
        c.add(0, &desc(1, 2, InodeBits::LOOKUP));
        c.add(0, &desc(2, 2, InodeBits::UPDATE));
        assert!(c.covers(f, InodeBits::KNOWN));
        let t = c.take(f, InodeBits::UPDATE);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].handle, 2);
        assert!(c.covers(f, InodeBits::LOOKUP));
        assert!(!c.covers(f, InodeBits::UPDATE));
    }

    #[test]
    fn a_reconnect_drops_everything_and_old_grants() {
        let c = LockCache::new();
        c.add(0, &desc(1, 2, InodeBits::LOOKUP));
        assert_eq!(c.reconnected(1).len(), 1);
        assert!(c.reconnected(1).is_empty());
        assert!(!c.add(0, &desc(3, 2, InodeBits::LOOKUP)).0, "granted before the reconnect");
        assert!(c.add(1, &desc(4, 2, InodeBits::LOOKUP)).0);
    }

    #[test]
    fn the_cache_is_bounded_oldest_out() {
        let c = LockCache::new();
        let mut out = Vec::new();
        for h in 1..=(MAX_LOCKS as u64 + 3) {
            out.extend(c.add(0, &desc(h, h as u32, InodeBits::UPDATE)).1);
        }
        assert_eq!(c.len(), MAX_LOCKS);
        assert_eq!(out.iter().map(|h| h.handle).collect::<Vec<_>>(), vec![1, 2, 3]);
    }
}
