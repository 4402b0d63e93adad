//! [`LockCache`]: the locks the MDT granted this client, and what the
//! client may cache because of them.
//!
//! A lock is entered when an `LDLM_ENQUEUE` reply grants it and leaves
//! when the MDT calls it back (a blocking callback), when the client gives
//! it up before a change of its own would make the MDT call it back
//! (early cancel), when the cache is over its size (least recently used
//! first, Lustre's `lru_size`), when it has not been used for
//! `lru_max_age` ([`LockCache::aged`]), or all at once when the mdc
//! import reconnects (the MDT restarted or evicted
//! this client: its locks are gone there, or may be). A callback can
//! overtake the grant it revokes (they travel apart): it is remembered,
//! and the grant, when it comes, is refused ([`LockCache::add`] returns
//! false) and given back.
//!
//! Time is the caller's (`now` arguments): nothing here reads a clock.
//!
//! Must not: do I/O or know about FUSE; callers send the cancels and
//! invalidate kernel caches.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ptlrpc::ldlm::InodeBits;
use ptlrpc::wire::Fid;
use ptlrpc::wire::ldlm::LdlmLockDesc;

/// The most locks a client keeps by default (Lustre's `lru_size`; the
/// MDT's table holds every client's).
pub const MAX_LOCKS: usize = 16 * 1024;
/// How long an unused lock is kept by default (Lustre's `lru_max_age`,
/// 65 minutes).
pub const LRU_MAX_AGE: Duration = Duration::from_secs(3900);
/// Uses of a lock closer together than this count as one (a lock used
/// all the time is moved in the LRU once a second, not at every use).
const USE_GRAIN: Duration = Duration::from_secs(1);
/// Callbacks remembered for grants not yet seen.
const EARLY_KEPT: usize = 256;

/// The LRU's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LruLimits {
    /// Locks kept at most (at least 1).
    pub size: usize,
    /// An unused lock is given up after this long.
    pub max_age: Duration,
}

impl Default for LruLimits {
    fn default() -> LruLimits {
        LruLimits { size: MAX_LOCKS, max_age: LRU_MAX_AGE }
    }
}

/// What [`LockCache::add`] did with a granted lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Entered.
    Kept,
    /// To be given back at once: its callback came first, or it was
    /// granted before the import reconnected.
    Refused,
    /// Not entered: the locks held on its object cover its bits already
    /// (to be given back before the request that brought it is
    /// answered).
    Redundant,
}

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
    /// Each lock and when it was last used.
    locks: HashMap<u64, (Held, Instant)>,
    by_fid: HashMap<Fid, Vec<u64>>,
    /// Least recently used first: (handle, when used). An entry whose time
    /// is not its lock's last use (used again since, or gone) is skipped.
    order: VecDeque<(u64, Instant)>,
    early: VecDeque<u64>,
    /// The mdc import generation the locks were granted under.
    generation: u64,
}

impl Inner {
    /// Whether `order`'s entry `(handle, at)` is its lock's current one.
    fn current(&self, handle: u64, at: Instant) -> bool {
        self.locks.get(&handle).is_some_and(|(_, used)| *used == at)
    }

    /// Takes out the least recently used lock if `pick` says so of its last
    /// use (stale entries are dropped on the way).
    fn pop_lru(&mut self, pick: impl Fn(Instant) -> bool) -> Option<Held> {
        while let Some(&(h, at)) = self.order.front() {
            if !self.current(h, at) {
                self.order.pop_front();
                continue;
            }
            if !pick(at) {
                return None;
            }
            self.order.pop_front();
            return self.remove(h);
        }
        None
    }

    /// Counts a use of the locks `hs` at `now` (they move to the LRU's
    /// recent end, at most once per [`USE_GRAIN`]).
    fn used(&mut self, hs: &[u64], now: Instant) {
        for h in hs {
            if let Some((_, used)) = self.locks.get_mut(h)
                && now.saturating_duration_since(*used) >= USE_GRAIN
            {
                *used = now;
                self.order.push_back((*h, now));
            }
        }
        self.compact();
    }

    /// Keeps `order` within twice the live entries.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.locks.len() + 64 {
            let live: VecDeque<(u64, Instant)> =
                self.order.iter().copied().filter(|&(h, at)| self.current(h, at)).collect();
            self.order = live;
        }
    }

    fn remove(&mut self, handle: u64) -> Option<Held> {
        let (h, _) = self.locks.remove(&handle)?;
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
    limits: LruLimits,
}

impl LockCache {
    /// An empty cache with the default limits.
    pub fn new() -> LockCache {
        LockCache::default()
    }

    /// An empty cache with `limits`.
    pub fn with_limits(limits: LruLimits) -> LockCache {
        LockCache { limits: LruLimits { size: limits.size.max(1), ..limits }, ..LockCache::default() }
    }

    /// The LRU's limits.
    pub fn limits(&self) -> LruLimits {
        self.limits
    }

    /// Locks held.
    pub fn len(&self) -> usize {
        self.inner.lock().locks.len()
    }

    /// Whether no lock is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Enters a granted lock (granted under import `generation`, at
    /// `now`), unless it must be given back at once ([`Added::Refused`]:
    /// its callback came first, or it is from an older generation) or
    /// adds nothing to the locks held on its object
    /// ([`Added::Redundant`]: the bits are covered already, as a lookup
    /// of a name whose kernel entry expired grants them again; kept, such
    /// locks would pile up on a directory walked often). Also returns the
    /// least recently used locks pushed out by the size limit, to be
    /// cancelled.
    pub fn add(&self, now: Instant, generation: u64, d: &LdlmLockDesc) -> (Added, Vec<Held>) {
        let Some(bits) = InodeBits::from_wire(d.bits) else {
            return (Added::Refused, Vec::new());
        };
        let mut i = self.inner.lock();
        if generation < i.generation {
            return (Added::Refused, Vec::new());
        }
        if let Some(pos) = i.early.iter().position(|h| *h == d.handle) {
            i.early.remove(pos);
            return (Added::Refused, Vec::new());
        }
        let others: Vec<u64> = i.by_fid.get(&d.res).into_iter().flatten().copied().filter(|h| *h != d.handle).collect();
        let have = others.iter().filter_map(|h| i.locks.get(h)).fold(InodeBits::NONE, |acc, (l, _)| acc | l.bits);
        if have.contains(bits) {
            // The locks it duplicates are the ones used now.
            i.used(&others, now);
            return (Added::Redundant, Vec::new());
        }
        let held = Held { handle: d.handle, fid: d.res, bits };
        if i.locks.insert(d.handle, (held, now)).is_none() {
            i.by_fid.entry(d.res).or_default().push(d.handle);
        }
        i.order.push_back((d.handle, now));
        let mut out = Vec::new();
        while i.locks.len() > self.limits.size {
            match i.pop_lru(|_| true) {
                Some(h) => out.push(h),
                None => break,
            }
        }
        i.compact();
        (Added::Kept, out)
    }

    /// Whether the locks held on `fid` cover `bits`; a use of them at
    /// `now` when they do (they move to the LRU's recent end).
    pub fn covers(&self, now: Instant, fid: Fid, bits: InodeBits) -> bool {
        let mut i = self.inner.lock();
        let hs = i.by_fid.get(&fid).cloned().unwrap_or_default();
        let have = hs.iter().filter_map(|h| i.locks.get(h)).fold(InodeBits::NONE, |acc, (l, _)| acc | l.bits);
        if !have.contains(bits) {
            return false;
        }
        i.used(&hs, now);
        true
    }

    /// Whether the locks held on `fid` cover `bits`, without counting it
    /// as a use.
    pub fn has(&self, fid: Fid, bits: InodeBits) -> bool {
        let i = self.inner.lock();
        let hs = i.by_fid.get(&fid).into_iter().flatten();
        hs.filter_map(|h| i.locks.get(h)).fold(InodeBits::NONE, |acc, (l, _)| acc | l.bits).contains(bits)
    }

    /// The handles of the locks held on `fid` with any of `bits` (left
    /// in place: a change of this client's own that keeps them).
    pub fn handles(&self, fid: Fid, bits: InodeBits) -> Vec<u64> {
        let i = self.inner.lock();
        let hs = i.by_fid.get(&fid).into_iter().flatten();
        hs.filter(|h| i.locks.get(h).is_some_and(|(l, _)| l.bits.intersects(bits))).copied().collect()
    }

    /// Takes out the locks unused for `lru_max_age` at `now` (to be
    /// cancelled).
    pub fn aged(&self, now: Instant) -> Vec<Held> {
        let max_age = self.limits.max_age;
        let mut i = self.inner.lock();
        let mut out = Vec::new();
        while let Some(h) = i.pop_lru(|used| now.saturating_duration_since(used) >= max_age) {
            out.push(h);
        }
        out
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
            .filter(|h| i.locks.get(h).is_some_and(|(l, _)| l.bits.intersects(bits)))
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
        i.locks.drain().map(|(_, (h, _))| h).collect()
    }

    /// The generation the cache follows.
    pub fn generation(&self) -> u64 {
        self.inner.lock().generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *T0.get_or_init(Instant::now)
    }

    fn fid(oid: u32) -> Fid {
        Fid { seq: 1, oid, ver: 0 }
    }

    fn desc(handle: u64, oid: u32, bits: InodeBits) -> LdlmLockDesc {
        LdlmLockDesc { handle, res: Fid { seq: 1, oid, ver: 0 }, mode: 4, bits: bits.wire() }
    }

    #[test]
    fn a_callback_before_its_grant_refuses_the_grant() {
        let c = LockCache::new();
        assert_eq!(c.called_back(7), None);
        assert_eq!(c.add(t0(), 0, &desc(7, 1, InodeBits::UPDATE)).0, Added::Refused);
        assert!(c.is_empty());
        assert_eq!(c.add(t0(), 0, &desc(8, 1, InodeBits::UPDATE)).0, Added::Kept);
        assert!(c.covers(t0(), Fid { seq: 1, oid: 1, ver: 0 }, InodeBits::UPDATE));
        assert!(!c.covers(t0(), Fid { seq: 1, oid: 1, ver: 0 }, InodeBits::KNOWN));
    }

    #[test]
    fn bits_of_two_locks_add_up_and_take_removes_by_bits() {
        let c = LockCache::new();
        let f = Fid { seq: 1, oid: 2, ver: 0 };
        c.add(t0(), 0, &desc(1, 2, InodeBits::LOOKUP));
        c.add(t0(), 0, &desc(2, 2, InodeBits::UPDATE));
        assert!(c.covers(t0(), f, InodeBits::KNOWN));
        let t = c.take(f, InodeBits::UPDATE);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].handle, 2);
        assert!(c.covers(t0(), f, InodeBits::LOOKUP));
        assert!(!c.covers(t0(), f, InodeBits::UPDATE));
    }

    /// A grant whose bits the locks held on its object cover already is
    /// not entered (a directory walked often would pile them up); the
    /// same lock granted again is the lock held.
    #[test]
    fn a_grant_the_held_locks_cover_is_redundant() {
        let c = LockCache::new();
        assert_eq!(c.add(t0(), 0, &desc(1, 2, InodeBits::LOOKUP)).0, Added::Kept);
        assert_eq!(c.add(t0(), 0, &desc(2, 2, InodeBits::UPDATE)).0, Added::Kept);
        assert_eq!(c.add(t0(), 0, &desc(2, 2, InodeBits::UPDATE)).0, Added::Kept, "the same lock");
        for h in 3..100 {
            assert_eq!(c.add(t0(), 0, &desc(h, 2, InodeBits::LOOKUP)).0, Added::Redundant);
            assert_eq!(c.add(t0(), 0, &desc(h + 1000, 2, InodeBits::KNOWN)).0, Added::Redundant);
        }
        assert_eq!(c.len(), 2);
        // Bits not held yet make a lock worth keeping.
        c.take(fid(2), InodeBits::UPDATE);
        assert_eq!(c.add(t0(), 0, &desc(5000, 2, InodeBits::KNOWN)).0, Added::Kept);
    }

    #[test]
    fn a_reconnect_drops_everything_and_old_grants() {
        let c = LockCache::new();
        c.add(t0(), 0, &desc(1, 2, InodeBits::LOOKUP));
        assert_eq!(c.reconnected(1).len(), 1);
        assert!(c.reconnected(1).is_empty());
        assert_eq!(c.add(t0(), 0, &desc(3, 2, InodeBits::LOOKUP)).0, Added::Refused, "granted before the reconnect");
        assert_eq!(c.add(t0(), 1, &desc(4, 2, InodeBits::LOOKUP)).0, Added::Kept);
    }

    #[test]
    fn the_cache_is_bounded_oldest_out() {
        let c = LockCache::new();
        let mut out = Vec::new();
        for h in 1..=(MAX_LOCKS as u64 + 3) {
            out.extend(c.add(t0(), 0, &desc(h, h as u32, InodeBits::UPDATE)).1);
        }
        assert_eq!(c.len(), MAX_LOCKS);
        assert_eq!(out.iter().map(|h| h.handle).collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    /// The size limit pushes out the least recently used lock, not the
    /// oldest grant; uses within a second count once.
    #[test]
    fn the_size_limit_pushes_out_the_least_recently_used() {
        let c = LockCache::with_limits(LruLimits { size: 2, max_age: LRU_MAX_AGE });
        let s = |n| t0() + Duration::from_secs(n);
        c.add(s(0), 0, &desc(1, 1, InodeBits::UPDATE));
        c.add(s(1), 0, &desc(2, 2, InodeBits::UPDATE));
        assert!(c.covers(s(2), fid(1), InodeBits::UPDATE), "lock 1 used after lock 2's grant");
        let (_, out) = c.add(s(3), 0, &desc(3, 3, InodeBits::UPDATE));
        assert_eq!(out.iter().map(|h| h.handle).collect::<Vec<_>>(), vec![2]);
        assert!(!c.covers(s(3), fid(2), InodeBits::UPDATE));
        // Used again within the grain: still as of s(2), older than lock 3.
        assert!(c.covers(s(2) + Duration::from_millis(500), fid(1), InodeBits::UPDATE));
        let (_, out) = c.add(s(4), 0, &desc(4, 4, InodeBits::UPDATE));
        assert_eq!(out.iter().map(|h| h.handle).collect::<Vec<_>>(), vec![1]);
        assert_eq!(c.len(), 2);
    }

    /// Locks unused for `max_age` come out at the next look; a lock in use
    /// stays; the LRU's bookkeeping stays bounded under constant use.
    #[test]
    fn unused_locks_age_out() {
        let c = LockCache::with_limits(LruLimits { size: 100, max_age: Duration::from_secs(60) });
        let s = |n| t0() + Duration::from_secs(n);
        c.add(s(0), 0, &desc(1, 1, InodeBits::UPDATE));
        c.add(s(0), 0, &desc(2, 2, InodeBits::LOOKUP));
        assert!(c.aged(s(59)).is_empty());
        assert!(c.covers(s(30), fid(2), InodeBits::LOOKUP));
        assert_eq!(c.aged(s(60)).iter().map(|h| h.handle).collect::<Vec<_>>(), vec![1]);
        assert!(c.aged(s(89)).is_empty());
        for n in 31..10_000 {
            assert!(c.covers(s(n), fid(2), InodeBits::LOOKUP));
        }
        let held = c.len();
        assert!(c.inner.lock().order.len() <= 2 * held + 64 + 1);
        assert!(c.aged(s(10_000)).is_empty(), "used a second ago");
        assert_eq!(c.aged(s(10_059)).len(), 1);
        assert!(c.is_empty());
        // A size of 0 is taken as 1.
        assert_eq!(LockCache::with_limits(LruLimits { size: 0, max_age: LRU_MAX_AGE }).limits().size, 1);
    }
}
