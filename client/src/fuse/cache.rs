//! What the kernel may cache, under the MDT's locks (llite's side of the
//! lock manager).
//!
//! Owns: [`FuseCache`] — the mount's [`LockCache`], the dentries handed to
//! the kernel with a long TTL (by child, and by parent), the blocking
//! callback service on the client's lnet ([`start_callbacks`]), early
//! cancels before this client's own changes, the locks the LRU pushes
//! out (cancelled in batches of [`AGED_BATCH`] or at the next 200 ms
//! tick: not one cancel RPC per aged lock), and the invalidation thread.
//!
//! Rules. An attribute TTL is long only when this client holds an UPDATE
//! lock on the object; an entry TTL only when it holds the child's LOOKUP
//! lock (a rename or unlink of the name revokes it) and a LOOKUP or UPDATE
//! lock on the parent (a change of its mode or owner revokes both: the
//! MDT's setattr of those takes both bits) and the parent is searchable by
//! everyone (the kernel does no permission checks of its own on this
//! mount, `default_permissions` being off, so a cached name must not let
//! a path walk skip a search check the MDT would make). Everything else
//! is answered with zero TTLs, and names that do not exist are never
//! cached (negative dentries would need invalidating under the parent's
//! lock while the kernel may hold it: see below). A regular file's
//! attributes get a long TTL only when its size is exact (size on MDT):
//! this client may hold UPDATE on a file open for writing, the one its
//! create made (the create asks for a LOOKUP|UPDATE lock on the new file:
//! its name and attributes are cached from the create's reply, the
//! kernel updating the size of its own writes). Attributes known under an
//! UPDATE lock — from a lookup or getattr reply, or from the close that
//! made the size exact — are kept here and answer the kernel's getattrs
//! without asking the MDT until the lock goes.
//!
//! A blocking callback first invalidates what the lock covered — the
//! inode's attributes (`inval_inode`, which takes no kernel lock), the
//! names leading to the object (`inval_entry`, which takes the parent
//! directory's lock) — and then cancels. A directory's lock going also
//! drops the names cached under it. `inval_entry` runs on the callback
//! thread unless this client has a request in flight that changes that
//! directory (the kernel then holds its lock while the request waits for
//! the MDT, which waits for this cancel): then it is left to the
//! invalidation thread, and the cancel goes at once. The kernel may also
//! hold the directory's lock for a request this client cannot see as a
//! change — a lookup in that directory waiting for the MDT, which waits
//! for this cancel: so the callback waits for `inval_entry` at most
//! [`INVAL_WAIT`] (it runs on its own thread), then cancels anyway and
//! the kernel drops the name once it lets go of the directory (counted
//! in [`FuseCache::inval_waits`]): a moment's stale name instead of a
//! deadlock ended only by the MDT evicting this client. Before a change of
//! its own the client gives up the locks the change would call back
//! (Lustre's early lock cancel: the cancel is queued on the import ahead
//! of the change, its reply not waited for);
//! the kernel updates its own caches for its own changes.
//!
//! Names that do not exist, in a directory this client made: its mkdir
//! asks for a LOOKUP|UPDATE lock on the new directory, and while this
//! client holds an UPDATE lock on it, every name in it is one this
//! client put there ([`FuseCache::new_dir`]; no other client can change
//! its entries without calling that lock back). A lookup of any other
//! name is answered ENOENT here, with no RPC (the kernel is told nothing
//! it would cache: zero TTL, as for every negative answer). To keep the
//! set true, this client's own creates and unlinks there keep the lock
//! (`MdsReq::keeps`, [`FuseCache::keeping`]: the MDT neither waits for
//! nor calls it back) and enter their outcome ([`Busy::done`]); one that
//! ends any other way drops the set, as does the last UPDATE lock on the
//! directory going, a reconnect, or a set past [`COMPLETE_MAX`] names.
//! Only in directories everyone may search (the MDT's search check is
//! what an ENOENT here skips). Renames and links in it give the lock up
//! as before. The directory's own attributes are not cached meanwhile
//! (zero TTL, asked of the MDT: they change with this client's creates,
//! which call nothing back).
//! The callback sequence is not bumped by these changes: they change one
//! directory, and a bump would refuse every reply in flight (the closes
//! of the files made just before among them).
//!
//! A callback racing with a reply: a global sequence, bumped by every
//! callback and early cancel (not by the LRU's own drops, see [`Why`]),
//! is read before the request and checked (under the same mutex the
//! callback takes) after the locks and names are entered; a change means
//! zero TTLs. A grant the locks held cover already is given back before
//! the request is answered (`Added::Redundant`); a lookup of a name this
//! client knows, whose child's locks it holds, asks for no locks at all.
//! When the mdc import reconnects (an MDT restart or eviction), every
//! lock is dropped and everything the kernel caches is invalidated.
//!
//! Must not: block a FUSE request on an invalidation; hold its mutex
//! across a network call.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use fuser::INodeNo;
use lnet::Lnet;
use parking_lot::Mutex;
use ptlrpc::driver::{Errno, Handler, Reply, ReqCtx, Request, Service, ServiceConfig};
use ptlrpc::fault::FaultInjector;
use ptlrpc::ldlm::InodeBits;
use ptlrpc::portals::LDLM_CB_REQUEST_PORTAL;
use ptlrpc::wire::Fid;
use ptlrpc::wire::Op;
use ptlrpc::wire::ldlm::{LdlmBlCallbackReq, LdlmLockDesc};

use super::conv::flatten;
use crate::fs::{Sheen, Stat};
use crate::locks::{Added, Held, LockCache};

/// The TTL of what a lock covers.
pub(super) const LOCKED_TTL: Duration = Duration::from_secs(60);

/// The most names kept for one directory this client made (past it, the
/// directory's lookups ask the MDT again).
pub const COMPLETE_MAX: usize = 1 << 17;

/// Aged-out locks cancelled together when no change carried them.
pub const AGED_BATCH: usize = 64;
/// How long a lookup waits for the cancel of a lock granted twice.
const REDUNDANT_CANCEL_WAIT: Duration = Duration::from_secs(2);

/// How long a blocking callback waits for the kernel to drop a name
/// before it cancels the lock anyway (see the module docs).
pub const INVAL_WAIT: Duration = Duration::from_secs(1);

enum Inval {
    Inode(u64),
    Entry(u64, OsString),
}

#[derive(Debug, Default)]
struct Names {
    /// child -> (parent inode, name) the kernel holds with a long TTL.
    by_child: HashMap<Fid, Vec<(Fid, OsString)>>,
    /// parent -> children named under it.
    by_parent: HashMap<Fid, HashMap<OsString, Fid>>,
    /// Directory modes seen with their UPDATE locks.
    modes: HashMap<Fid, u32>,
    /// Attributes known under this client's UPDATE lock on the object: a
    /// getattr is answered from here without asking the MDT.
    attrs: HashMap<Fid, Stat>,
    /// Every name in a directory this client made, while it holds an
    /// UPDATE lock on it (see the module docs).
    complete: HashMap<Fid, HashSet<OsString>>,
}

/// The mount's lock-covered caching.
pub struct FuseCache {
    fs: Arc<Sheen>,
    rt: tokio::runtime::Handle,
    locks: LockCache,
    names: Mutex<Names>,
    seq: AtomicU64,
    busy: Mutex<HashMap<Fid, usize>>,
    notifier: OnceLock<fuser::Notifier>,
    deferred: Mutex<std::sync::mpsc::Sender<Inval>>,
    /// Handles the lock LRU pushed out, not cancelled yet.
    aged: Mutex<Vec<u64>>,
    /// Name invalidations a callback waits for (bounded), each with its
    /// completion.
    bounded: Mutex<std::sync::mpsc::Sender<(Inval, std::sync::mpsc::SyncSender<()>)>>,
    inval_waits: AtomicU64,
    /// Lookups answered ENOENT from a directory's complete name set.
    absent_answered: AtomicU64,
}

impl std::fmt::Debug for FuseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FuseCache").field("locks", &self.locks.len()).finish_non_exhaustive()
    }
}

/// Directories with a change of this client's in flight; dropped, they
/// are not busy any more.
pub(super) struct Busy<'a> {
    cache: &'a FuseCache,
    dirs: Vec<Fid>,
    /// A directory whose lock the change keeps, the name it changes there,
    /// and its outcome once known (`Some(true)`: the name was made).
    kept: Option<(Fid, OsString, Option<bool>)>,
}

impl Busy<'_> {
    /// The change that keeps its directory's lock is done: the name was
    /// made (`true`) or removed (`false`).
    pub(super) fn done(&mut self, made: bool) {
        if let Some((_, _, outcome)) = &mut self.kept {
            *outcome = Some(made);
        }
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        super::EARLY_KEEPS.with(|e| e.borrow_mut().clear());
        if let Some((dir, name, outcome)) = self.kept.take() {
            self.cache.kept_change(dir, &name, outcome);
        }
        // Early cancels no request carried (the change failed before it
        // reached the MDT): an LDLM_CANCEL of their own.
        let left = super::EARLY_CANCELS.with(|e| std::mem::take(&mut *e.borrow_mut()));
        if !left.is_empty() {
            self.cache.cancel(left);
        }
        let mut b = self.cache.busy.lock();
        for d in &self.dirs {
            if let Some(n) = b.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    b.remove(d);
                }
            }
        }
    }
}

impl FuseCache {
    /// A cache for `fs`; its invalidation thread starts now (kernel
    /// notifications wait for [`FuseCache::set_notifier`]).
    pub fn new(fs: Arc<Sheen>, rt: tokio::runtime::Handle) -> Arc<FuseCache> {
        let (tx, rx) = std::sync::mpsc::channel::<Inval>();
        let (btx, brx) = std::sync::mpsc::channel::<(Inval, std::sync::mpsc::SyncSender<()>)>();
        let locks = LockCache::with_limits(fs.options().lru());
        let cache = Arc::new(FuseCache {
            fs,
            rt,
            locks,
            names: Mutex::new(Names::default()),
            seq: AtomicU64::new(0),
            busy: Mutex::new(HashMap::new()),
            notifier: OnceLock::new(),
            deferred: Mutex::new(tx),
            bounded: Mutex::new(btx),
            aged: Mutex::new(Vec::new()),
            inval_waits: AtomicU64::new(0),
            absent_answered: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&cache);
        let _ = std::thread::Builder::new().name("sheen-inval".into()).spawn(move || {
            while let Ok(job) = rx.recv() {
                let Some(c) = weak.upgrade() else { return };
                c.notify(&job);
            }
        });
        let weak = Arc::downgrade(&cache);
        let _ = std::thread::Builder::new().name("sheen-inval-cb".into()).spawn(move || {
            while let Ok((job, done)) = brx.recv() {
                let Some(c) = weak.upgrade() else { return };
                c.notify(&job);
                let _ = done.try_send(());
            }
        });
        cache
    }

    /// Callbacks that cancelled before the kernel had dropped a name (it
    /// held the directory's lock longer than [`INVAL_WAIT`]).
    pub fn inval_waits(&self) -> u64 {
        self.inval_waits.load(Ordering::Relaxed)
    }

    /// `job` done by the kernel, waited for at most [`INVAL_WAIT`].
    fn notify_bounded(&self, job: Inval) {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        if self.bounded.lock().send((job, done)).is_err() {
            return;
        }
        if wait.recv_timeout(INVAL_WAIT).is_err() {
            self.inval_waits.fetch_add(1, Ordering::Relaxed);
            tracing::info!("the kernel holds a directory a called-back name is in; cancelling without waiting");
        }
    }

    /// The kernel channel (once the mount is up).
    pub fn set_notifier(&self, n: fuser::Notifier) {
        let _ = self.notifier.set(n);
    }

    /// Locks held (tests, stats).
    pub fn locks_held(&self) -> usize {
        self.locks.len()
    }

    /// The lock LRU's limits (stats).
    pub fn lru_limits(&self) -> crate::locks::LruLimits {
        self.locks.limits()
    }

    fn notify(&self, job: &Inval) {
        let Some(n) = self.notifier.get() else { return };
        let r = match job {
            Inval::Inode(i) => n.inval_inode(INodeNo(*i), -1, 0),
            Inval::Entry(p, name) => n.inval_entry(INodeNo(*p), name),
        };
        // ENOENT: the kernel did not hold it (any more).
        if let Err(e) = r
            && e.raw_os_error() != Some(libc::ENOENT)
        {
            tracing::debug!(error = %e, "kernel cache invalidation failed");
        }
    }

    fn defer(&self, job: Inval) {
        let _ = self.deferred.lock().send(job);
    }

    /// The callback sequence now (read before a request whose reply may
    /// be cached).
    pub(super) fn seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Drops every lock if the mdc import reconnected since.
    pub(super) fn follow_import(&self) {
        let g = self.fs.mdc().import().generation();
        if g <= self.locks.generation() {
            return;
        }
        let dropped = self.locks.reconnected(g);
        self.seq.fetch_add(1, Ordering::AcqRel);
        let names = std::mem::take(&mut *self.names.lock());
        for h in &dropped {
            self.defer(Inval::Inode(flatten(h.fid)));
        }
        for (_, v) in names.by_child {
            for (p, n) in v {
                self.defer(Inval::Entry(flatten(p), n));
            }
        }
        if !dropped.is_empty() {
            tracing::info!(locks = dropped.len(), "mdc reconnected: every lock dropped");
        }
    }

    /// Enters granted locks; `mode` is the object's (kept for
    /// directories). Refused ones are given back; redundant ones too,
    /// before this returns. Called on a FUSE thread (it may block).
    pub(super) fn granted(&self, locks: &[LdlmLockDesc], mode: u32) {
        let g = self.locks.generation();
        let (mut back, mut redundant) = (Vec::new(), Vec::new());
        for d in locks {
            let (added, pushed) = self.locks.add(Instant::now(), g, d);
            match added {
                Added::Refused => back.push(d.handle),
                Added::Redundant => redundant.push(d.handle),
                Added::Kept => {}
            }
            if added != Added::Refused
                && d.bits & InodeBits::KNOWN.wire() != 0
                && mode & crate::fs::S_IFMT == crate::fs::S_IFDIR
            {
                self.names.lock().modes.insert(d.res, mode);
            }
            for h in pushed {
                self.dropped(&h, Why::Lru);
                self.aged.lock().push(h.handle);
            }
        }
        self.cancel(back);
        // A redundant one is given back before the caller goes on (as
        // Lustre's mdc cancels a lock an intent granted twice): held on
        // the MDT, it would be called back by this client's own next
        // change there, which keeps only the locks in the cache. Rare: a
        // lookup of a name whose child's locks are held asks for none.
        // Bounded: an MDT gone meanwhile drops the lock with its restart,
        // and a callback for it is answered with a cancel anyway.
        if !redundant.is_empty() {
            // The timer is made on the runtime (this is a FUSE thread).
            let cancel = async { tokio::time::timeout(REDUNDANT_CANCEL_WAIT, self.fs.mdc().cancel(redundant)).await };
            match self.rt.block_on(cancel) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "lock cancel not answered"),
                Err(_) => tracing::debug!("lock cancel not answered within {REDUNDANT_CANCEL_WAIT:?}"),
            }
        }
        // Locks the LRU pushed out go in batches, in the background: not
        // one cancel RPC each. (Packed into the next change's request
        // instead, as Lustre's ELC does, they put the MDT's cancel on the
        // change's path: creates were ~5% slower here.)
        if self.aged.lock().len() >= AGED_BATCH {
            self.flush_aged();
        }
    }

    /// Gives up the locks unused for `lru_max_age` (Lustre's LRU aging):
    /// the kernel's copies are dropped and the locks cancelled with the
    /// batch of those the size limit pushed out.
    fn age_out(&self) {
        for h in self.locks.aged(Instant::now()) {
            self.dropped(&h, Why::Lru);
            self.aged.lock().push(h.handle);
        }
    }

    /// Cancels the aged locks left, in one `LDLM_CANCEL`.
    fn flush_aged(&self) {
        let aged = std::mem::take(&mut *self.aged.lock());
        self.cancel(aged);
    }

    /// Whether this client holds `bits` on `fid`.
    pub(super) fn covers(&self, fid: Fid, bits: InodeBits) -> bool {
        self.locks.covers(Instant::now(), fid, bits)
    }

    /// The attribute TTL of `st`, answered from a request that began at
    /// callback sequence `seq`: zero for a regular file whose size the MDT
    /// does not know exactly (it is open for writing: the lock this client
    /// took with its create does not make its size stand still).
    pub(super) fn stat_ttl(&self, st: &Stat, seq: u64) -> Duration {
        if st.attr.size_exact() { self.attr_ttl(st.fid(), seq) } else { Duration::ZERO }
    }

    /// The attribute TTL for `fid` answered from a request that began at
    /// callback sequence `seq`.
    pub(super) fn attr_ttl(&self, fid: Fid, seq: u64) -> Duration {
        let names = self.names.lock();
        let settled = !names.complete.contains_key(&fid);
        if settled && self.seq() == seq && self.locks.covers(Instant::now(), fid, InodeBits::UPDATE) {
            LOCKED_TTL
        } else {
            Duration::ZERO
        }
    }

    /// Keeps `st` (from a reply to a request that began at callback
    /// sequence `seq`) to answer getattrs while this client holds the
    /// object's UPDATE lock. A regular file's only with its exact size.
    pub(super) fn remember(&self, st: &Stat, seq: u64) {
        let mut names = self.names.lock();
        // Not a directory with a name set: this client's own changes there
        // keep the lock, and a reply racing one could be older than it.
        let settled = !names.complete.contains_key(&st.fid());
        if settled
            && st.attr.size_exact()
            && self.seq() == seq
            && self.locks.covers(Instant::now(), st.fid(), InodeBits::UPDATE)
        {
            names.attrs.insert(st.fid(), st.clone());
        }
    }

    /// The attributes of `fid` kept under its UPDATE lock, if any.
    pub(super) fn known(&self, fid: Fid) -> Option<Stat> {
        let names = self.names.lock();
        names.attrs.get(&fid).filter(|_| self.locks.covers(Instant::now(), fid, InodeBits::UPDATE)).cloned()
    }

    /// Records the name `parent/name` -> `child` and returns its entry TTL
    /// (zero unless the locks allow it, see the module docs).
    pub(super) fn entry_ttl(&self, parent: Fid, name: &OsStr, child: Fid, seq: u64) -> Duration {
        let mut names = self.names.lock();
        let searchable = names.modes.get(&parent).is_some_and(|m| m & 0o111 == 0o111);
        let ok = self.seq() == seq
            && searchable
            && self.locks.covers(Instant::now(), child, InodeBits::LOOKUP)
            && (self.locks.covers(Instant::now(), parent, InodeBits::LOOKUP)
                || self.locks.covers(Instant::now(), parent, InodeBits::UPDATE));
        if !ok {
            return Duration::ZERO;
        }
        let v = names.by_child.entry(child).or_default();
        if !v.iter().any(|(p, n)| *p == parent && n == name) {
            v.push((parent, name.to_os_string()));
        }
        names.by_parent.entry(parent).or_default().insert(name.to_os_string(), child);
        LOCKED_TTL
    }

    /// The child this client last named `parent/name` to the kernel.
    pub(super) fn child_named(&self, parent: Fid, name: &OsStr) -> Option<Fid> {
        self.names.lock().by_parent.get(&parent)?.get(name).copied()
    }

    /// Marks `dirs` as changed by a request of this client until the
    /// returned guard drops.
    pub(super) fn busy(&self, dirs: &[Fid]) -> Busy<'_> {
        let mut b = self.busy.lock();
        for d in dirs {
            *b.entry(*d).or_default() += 1;
        }
        Busy { cache: self, dirs: dirs.to_vec(), kept: None }
    }

    /// Before a change of this client's own that adds `name` to `dir` or
    /// removes it: when this client knows every name in `dir`, the
    /// handles of its UPDATE-covering locks there, which the change keeps
    /// (`MdsReq::keeps`) — and a guard marking `dir` busy, to be told the
    /// outcome ([`Busy::done`]). `None`: the change gives the locks up as
    /// any other ([`FuseCache::give_up`]).
    pub(super) fn keeping(&self, dir: Fid, name: &OsStr) -> Option<(Vec<u64>, Busy<'_>)> {
        // The directory's attributes change with it: they are never kept
        // for a directory with a name set (see `remember`).
        let mut names = self.names.lock();
        if !names.complete.contains_key(&dir) {
            return None;
        }
        let handles = self.locks.handles(dir, InodeBits::UPDATE);
        if handles.is_empty() {
            names.complete.remove(&dir);
            return None;
        }
        let mut b = self.busy(&[dir]);
        b.kept = Some((dir, name.to_os_string(), None));
        Some((handles, b))
    }

    /// A change that kept `dir`'s lock ended: `name` made or removed, or
    /// (`None`) it failed or its outcome is unknown: then the name set
    /// goes, and so do the UPDATE locks on `dir` (the change may have
    /// happened: what they cover is not known any more).
    fn kept_change(&self, dir: Fid, name: &OsStr, outcome: Option<bool>) {
        {
            let mut names = self.names.lock();
            let still = self.locks.has(dir, InodeBits::UPDATE);
            let keep = match (names.complete.get_mut(&dir), outcome) {
                (Some(set), Some(true)) if still && set.len() < COMPLETE_MAX => {
                    set.insert(name.to_os_string());
                    true
                }
                (Some(set), Some(false)) if still => {
                    set.remove(name);
                    true
                }
                _ => false,
            };
            if keep {
                return;
            }
            names.complete.remove(&dir);
        }
        if outcome.is_none() {
            let handles = self.give_up(dir, InodeBits::UPDATE);
            self.cancel(handles);
        }
    }

    /// A directory this client just made, with the locks its mkdir
    /// brought (entered already), answered at callback sequence `seq`:
    /// empty, and every name made in it will be this client's while it
    /// holds the UPDATE lock.
    pub(super) fn new_dir(&self, dir: Fid, seq: u64) {
        let mut names = self.names.lock();
        if self.seq() == seq && self.locks.covers(Instant::now(), dir, InodeBits::UPDATE) {
            names.complete.insert(dir, HashSet::new());
        }
    }

    /// Whether `parent/name` is known not to exist: `parent` is a
    /// directory this client made, holds an UPDATE lock on and everyone
    /// may search, and no name of its own there is `name`.
    pub(super) fn absent(&self, parent: Fid, name: &OsStr) -> bool {
        let names = self.names.lock();
        let searchable = names.modes.get(&parent).is_some_and(|m| m & 0o111 == 0o111);
        let absent = searchable
            && names.complete.get(&parent).is_some_and(|set| !set.contains(name))
            && self.locks.covers(Instant::now(), parent, InodeBits::UPDATE);
        if absent {
            self.absent_answered.fetch_add(1, Ordering::Relaxed);
        }
        absent
    }

    /// Lookups answered ENOENT without asking the MDT ([`FuseCache::absent`]).
    pub fn absent_answered(&self) -> u64 {
        self.absent_answered.load(Ordering::Relaxed)
    }

    /// Early cancel: gives up this client's locks on `fid` with `bits`
    /// before a change of its own would have the MDT call them back;
    /// returns their handles, which the change's request carries
    /// (`MdsReq::cancels`, Lustre's ELC): the MDT cancels them before it
    /// locks what the change touches — no cancel RPC, no callback.
    pub(super) fn give_up(&self, fid: Fid, bits: InodeBits) -> Vec<u64> {
        let held = self.locks.take(fid, bits);
        for h in &held {
            self.dropped(h, Why::GivenUp);
        }
        held.iter().map(|h| h.handle).collect()
    }

    /// A lock left the cache: what it covered leaves the kernel (at once
    /// when it was called back and that is safe, else on the invalidation
    /// thread).
    fn dropped(&self, h: &Held, why: Why) {
        let now = why == Why::CalledBack;
        let mut jobs = Vec::new();
        {
            let mut names = self.names.lock();
            if why != Why::Lru {
                self.seq.fetch_add(1, Ordering::AcqRel);
            }
            if h.bits.intersects(InodeBits::LOOKUP) {
                for (p, n) in names.by_child.remove(&h.fid).unwrap_or_default() {
                    if let Some(m) = names.by_parent.get_mut(&p)
                        && m.get(&n) == Some(&h.fid)
                    {
                        m.remove(&n);
                    }
                    jobs.push((p, Inval::Entry(flatten(p), n)));
                }
            }
            if h.bits.intersects(InodeBits::UPDATE) {
                names.attrs.remove(&h.fid);
                if !self.locks.has(h.fid, InodeBits::UPDATE) {
                    names.complete.remove(&h.fid);
                }
                jobs.push((h.fid, Inval::Inode(flatten(h.fid))));
            }
            // Names cached under a directory rely on its mode, which any
            // lock of ours on it protects: they go with the last one.
            let still = self.locks.has(h.fid, InodeBits::LOOKUP) || self.locks.has(h.fid, InodeBits::UPDATE);
            if !still {
                names.modes.remove(&h.fid);
                for c in names.by_parent.remove(&h.fid).unwrap_or_default().into_values() {
                    if let Some(v) = names.by_child.get_mut(&c) {
                        let (gone, keep): (Vec<_>, Vec<_>) =
                            std::mem::take(v).into_iter().partition(|(p, _)| *p == h.fid);
                        *v = keep;
                        for (_, n) in gone {
                            // Deferred: a permission change, not a name change.
                            self.defer(Inval::Entry(flatten(h.fid), n));
                        }
                    }
                }
            }
        }
        for (dir, job) in jobs {
            let entry = matches!(job, Inval::Entry(..));
            let busy = entry && self.busy.lock().contains_key(&dir);
            match (now && !busy, entry) {
                // inval_inode takes no kernel lock.
                (true, false) => self.notify(&job),
                (true, true) => self.notify_bounded(job),
                (false, _) => self.defer(job),
            }
        }
    }

    /// The MDT calls `handle` back.
    fn called_back(&self, b: &LdlmBlCallbackReq) {
        match self.locks.called_back(b.handle) {
            Some(h) => self.dropped(&h, Why::CalledBack),
            None => {
                self.seq.fetch_add(1, Ordering::AcqRel);
            }
        }
        self.cancel(vec![b.handle]);
    }

    /// Cancels `handles` with an LDLM_CANCEL of their own (in the
    /// background).
    pub(super) fn cancel(&self, handles: Vec<u64>) {
        if handles.is_empty() {
            return;
        }
        let fs = Arc::clone(&self.fs);
        self.rt.spawn(async move {
            if let Err(e) = fs.mdc().cancel(handles).await {
                tracing::debug!(error = %e, "lock cancel not answered");
            }
        });
    }
}

/// Why a lock left the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// The MDT called it back: another client's change.
    CalledBack,
    /// Given up before a change of this client's own (early cancel).
    GivenUp,
    /// Pushed out by the LRU's size limit or aged out: nothing changed.
    /// No callback-sequence bump: what a request in flight read stays
    /// true under the locks its own reply grants (an intent reads after
    /// it locks), and `covers` no longer sees this one. (A bump made
    /// every reply zero-TTL once the cache was full: each grant pushes a
    /// lock out, so a lookup's own grant refused its own entry, the
    /// kernel looked the name up again at every path walk, and each
    /// lookup granted more locks.)
    Lru,
}

/// Follows the mdc import: every lock dropped when it reconnects.
pub(super) fn watch_import(cache: &Arc<FuseCache>) {
    let weak = Arc::downgrade(cache);
    cache.rt.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            match weak.upgrade() {
                Some(c) => {
                    c.follow_import();
                    c.age_out();
                    c.flush_aged();
                }
                None => return,
            }
        }
    });
}

struct Callbacks {
    cache: Arc<FuseCache>,
}

impl Handler for Callbacks {
    fn handle(&self, req: &Request, _ctx: &mut ReqCtx<'_>) -> Result<Reply, Errno> {
        match req.op() {
            Op::LdlmBlCallback => {
                let b: LdlmBlCallbackReq = req.body()?;
                self.cache.called_back(&b);
                Ok(Reply::empty())
            }
            Op::ObdPing => Ok(Reply::empty()),
            _ => Err(Errno::EOPNOTSUPP),
        }
    }
}

/// Starts the blocking-callback service on `lnet` (the MDT sends to this
/// client's NID, `LDLM_CB_REQUEST_PORTAL`), its fault points armed by
/// `faults` (the mount's `/faults`).
pub fn start_callbacks(lnet: &Lnet, cache: &Arc<FuseCache>, faults: Arc<FaultInjector>) -> std::io::Result<Service> {
    let sc = ServiceConfig { threads_per_cpt: 1, ..ServiceConfig::new("ldlm_cb", LDLM_CB_REQUEST_PORTAL) };
    Service::start(lnet, sc, Arc::new(Callbacks { cache: Arc::clone(cache) }), faults)
        .map_err(|e| std::io::Error::other(e.to_string()))
}
