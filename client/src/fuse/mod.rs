//! The FUSE mount (llite): kernel requests mapped onto the library API.
//!
//! Owns: [`SheenFs`] — inode numbers (the root is 1; others are the FID
//! flattened as Lustre does, with a table from inode to FID filled by
//! lookups and emptied by forgets), open file handles, and the FUSE
//! replies. A mount made with [`mount_cached`] asks getattr and lookup
//! through lock enqueues and answers long TTLs where the MDT's locks
//! allow (`cache`: invalidated by the MDT's blocking callbacks); one made
//! with [`mount`] takes no locks and answers every attribute and entry
//! with a zero TTL. File data is opened with `FOPEN_DIRECT_IO` (1 MiB
//! requests, no page cache). Calls block the FUSE
//! worker thread on the tokio runtime that drives lnet. No `unsafe`.
//!
//! Mapped: lookup/forget, getattr/setattr (truncate, chmod, chown,
//! utimes), mkdir, mknod (devices, FIFOs, sockets, files), symlink,
//! readlink, link, unlink, rmdir, rename (and `RENAME_NOREPLACE`, checked
//! by a lookup first), open/create/read/write/flush/release/fsync (SYNC on
//! the OSTs and the MDT), readdir with "." and "..", fsyncdir, statfs,
//! xattrs (get/set/list/remove with ERANGE and ENODATA), access, and
//! fallocate (mode 0 extends the size; punch hole). The mount is for every
//! user (`allow_other`) and permissions are the MDT's, as in Lustre: no
//! `default_permissions`, so the kernel neither checks modes nor re-reads a
//! directory's attributes to check them; every request carries its
//! caller's credentials (`crate::creds`) and the MDT checks search
//! permission at each lookup, the parent at each create and unlink, the
//! mode at each open, ownership at each setattr; `access(2)` and opendir
//! ask the MDT. Not checked: opens of FIFOs (the kernel opens them itself
//! and asks a FUSE file system without `default_permissions` nothing;
//! pjdfstest `open/06.t`; device nodes are not opened: the mount is
//! `nodev`).
//!
//! Modules: `conv` (pure conversions), `ops` (the `Filesystem` calls),
//! `cache` (what the kernel may cache under MDT locks, the callback
//! service, early cancels), `stats` (per-operation counters and the
//! mount's `/metrics` text);
//! this one holds the inode and handle tables and runs calls on tokio,
//! each inside its caller's job id (`crate::jobid::PidJobs`) and
//! credentials (`crate::creds::PidGroups`).
//!
//! Must not: cache data, or attributes and names beyond what the MDT's
//! locks cover (`cache`); hold a lock across a network call.

mod cache;
mod conv;
mod ops;
mod stats;

pub use stats::{FuseStats, render_mount};

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fuser::{Errno, FileHandle, Generation, INodeNo, ReplyEntry, Request};
use parking_lot::Mutex;
use ptlrpc::ldlm::InodeBits;
use ptlrpc::wire::Fid;

pub use conv::{MAX_WRITE, file_attr, flatten, kind};

pub use cache::FuseCache;
use cache::start_callbacks;

use crate::creds::{PidGroups, with_creds};
use crate::error::ClientError;
use crate::fs::{File, Sheen, Stat};
use crate::jobid::PidJobs;
use conv::{TTL, errno};

thread_local! {
    /// Lock handles a FUSE request gave up before its change
    /// (`SheenFs::changing`), for that change's MDS request.
    pub(super) static EARLY_CANCELS: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Lock handles a FUSE request's change keeps (`SheenFs::changing_name`).
    pub(super) static EARLY_KEEPS: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Inode numbers the kernel holds (with its lookup counts) -> FIDs.
#[derive(Debug, Default)]
struct Inodes {
    fids: HashMap<u64, (Fid, u64)>,
}

/// The mounted file system as FUSE sees it.
#[derive(Debug)]
pub struct SheenFs {
    fs: Arc<Sheen>,
    rt: tokio::runtime::Handle,
    inodes: Mutex<Inodes>,
    files: Mutex<HashMap<u64, Arc<File>>>,
    /// Open handles whose set-ID bits were dealt with at their first write.
    privs_checked: Mutex<std::collections::HashSet<u64>>,
    next_fh: AtomicU64,
    jobs: PidJobs,
    groups: PidGroups,
    /// Caching under MDT locks (`None`: a mount without a callback
    /// service, which takes no locks and caches nothing).
    cache: Option<Arc<FuseCache>>,
    /// Per-operation counters.
    stats: Arc<FuseStats>,
}

impl SheenFs {
    /// FUSE over `fs`, running its calls on `rt`.
    pub fn new(fs: Arc<Sheen>, rt: tokio::runtime::Handle) -> SheenFs {
        SheenFs {
            fs,
            rt,
            inodes: Mutex::new(Inodes::default()),
            files: Mutex::new(HashMap::new()),
            privs_checked: Mutex::new(std::collections::HashSet::new()),
            next_fh: AtomicU64::new(1),
            jobs: PidJobs::new(crate::jobid::from_env()),
            groups: PidGroups::new(),
            cache: None,
            stats: Arc::new(FuseStats::new()),
        }
    }

    fn fid(&self, ino: INodeNo) -> Result<Fid, Errno> {
        if ino.0 == 1 {
            return Ok(Fid::ROOT);
        }
        self.inodes.lock().fids.get(&ino.0).map(|&(f, _)| f).ok_or(Errno::ESTALE)
    }

    /// Records a lookup the kernel now holds; answers the entry.
    fn entry(&self, st: &Stat, reply: ReplyEntry) {
        self.entry_ttls(st, TTL, TTL, reply);
    }

    /// Records a lookup the kernel now holds; answers the entry with its
    /// TTLs (attributes, name).
    fn entry_ttls(&self, st: &Stat, attr_ttl: Duration, entry_ttl: Duration, reply: ReplyEntry) {
        let attr = file_attr(&st.attr, st.blocks);
        if attr.ino.0 != 1 {
            let mut i = self.inodes.lock();
            let e = i.fids.entry(attr.ino.0).or_insert((st.fid(), 0));
            e.0 = st.fid();
            e.1 += 1;
        }
        reply.entry_with_ttls(&attr_ttl, &entry_ttl, &attr, Generation(0));
    }

    /// lookup through a lock enqueue: the TTLs the locks allow.
    fn lookup_cached(&self, cache: &FuseCache, req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEntry) {
        let r = self.fid(parent).and_then(|p| {
            cache.follow_import();
            // A directory this client made: it knows every name there. (A
            // name too long or not UTF-8 gets the MDT's error first.)
            let nm = conv::name(n)?;
            if cache.absent(p, n) {
                return Err(Errno::ENOENT);
            }
            let seq = cache.seq();
            // A name known here whose child's locks are held (the
            // kernel's entry expired, or it forgot it): looked up without
            // locks, else the MDT grants them again (and again at every
            // walk of a path the kernel does not keep).
            let held = cache.child_named(p, n).filter(|c| cache.covers(*c, InodeBits::KNOWN));
            let (st, locks) = match held {
                Some(c) => match self.run(req, self.fs.lookup_mdt(p, nm))? {
                    st if st.fid() == c => (st, Vec::new()),
                    _ => self.run(req, self.fs.lookup_locked(p, nm))?,
                },
                None => self.run(req, self.fs.lookup_locked(p, nm))?,
            };
            cache.granted(&locks, st.attr.mode);
            cache.remember(&st, seq);
            // A name is cached only under its parent's lock: take it once.
            if cache.covers(st.fid(), InodeBits::LOOKUP) && !cache.covers(p, InodeBits::UPDATE) {
                match self.run(req, self.fs.stat_locked(p)) {
                    Ok((pst, pl)) => cache.granted(&pl, pst.attr.mode),
                    Err(e) => tracing::debug!(?e, "parent lock not taken"),
                }
            }
            let entry_ttl = cache.entry_ttl(p, n, st.fid(), seq);
            Ok((cache.stat_ttl(&st, seq), entry_ttl, st))
        });
        match r {
            Ok((a, e, st)) => self.entry_ttls(&st, a, e, reply),
            Err(e) => reply.error(e),
        }
    }

    /// getattr through a lock enqueue (or, under a lock held already, the
    /// attributes kept with it, else a plain getattr): the stat and its
    /// TTL.
    fn getattr_cached(&self, cache: &FuseCache, req: &Request, f: Fid) -> Result<(Stat, Duration), Errno> {
        cache.follow_import();
        let seq = cache.seq();
        let st = if let Some(st) = cache.known(f) {
            st
        } else if cache.covers(f, InodeBits::UPDATE) {
            self.run(req, self.fs.stat_fid(f))?
        } else {
            let (st, locks) = self.run(req, self.fs.stat_locked(f))?;
            cache.granted(&locks, st.attr.mode);
            st
        };
        cache.remember(&st, seq);
        let ttl = cache.stat_ttl(&st, seq);
        Ok((st, ttl))
    }

    /// Before a change of this client's own to `dirs` (their entries),
    /// `objs` (their attributes) and the names `named`: gives up the
    /// locks the MDT would call back for it and marks `dirs` busy until
    /// the guard drops (see `cache`).
    ///
    /// The handles given up wait on this FUSE thread for the change's
    /// request (`run` packs them into it); any it did not take are
    /// cancelled on their own when the guard drops.
    fn changing(&self, dirs: &[Fid], objs: &[Fid], named: &[(Fid, &OsStr)]) -> Option<cache::Busy<'_>> {
        let c = self.cache.as_ref()?;
        let mut handles = Vec::new();
        for d in dirs {
            handles.extend(c.give_up(*d, InodeBits::UPDATE));
        }
        for o in objs {
            handles.extend(c.give_up(*o, InodeBits::UPDATE));
        }
        for (p, n) in named {
            if let Some(child) = c.child_named(*p, n) {
                handles.extend(c.give_up(child, InodeBits::KNOWN));
            }
        }
        EARLY_CANCELS.with(|e| e.borrow_mut().extend(handles));
        Some(c.busy(dirs))
    }

    /// [`SheenFs::changing`] for a change that adds the name `n` to the
    /// directory `p` or removes it (and changes the names `named`): when
    /// this client knows every name in `p`, it keeps its lock there (the
    /// change's request says so) and the guard is told the outcome
    /// ([`cache::Busy::done`]); otherwise the lock is given up as for any
    /// other change.
    fn changing_name(&self, p: Fid, n: &OsStr, named: &[(Fid, &OsStr)]) -> Option<cache::Busy<'_>> {
        let c = self.cache.as_ref()?;
        let Some((keeps, b)) = c.keeping(p, n) else {
            return self.changing(&[p], &[], named);
        };
        let mut handles = Vec::new();
        for (dir, name) in named {
            if let Some(child) = c.child_named(*dir, name) {
                handles.extend(c.give_up(child, InodeBits::KNOWN));
            }
        }
        EARLY_CANCELS.with(|e| e.borrow_mut().extend(handles));
        EARLY_KEEPS.with(|e| e.borrow_mut().extend(keeps));
        Some(b)
    }

    /// Before a change of `fid`'s mode or owner: its LOOKUP lock goes too
    /// (packed into the change like [`SheenFs::changing`]'s).
    fn giving_up_names(&self, fid: Fid) {
        if let Some(c) = self.cache.as_ref() {
            let handles = c.give_up(fid, InodeBits::KNOWN);
            EARLY_CANCELS.with(|e| e.borrow_mut().extend(handles));
        }
    }

    fn file(&self, fh: FileHandle) -> Result<Arc<File>, Errno> {
        self.files.lock().get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn keep(&self, f: File) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.files.lock().insert(fh, Arc::new(f));
        FileHandle(fh)
    }

    /// Waits for the writes in flight of every open of `fid` (what this
    /// client wrote is what a stat, a truncate or another open's read sees).
    fn settle(&self, req: &Request, fid: Fid) -> Result<(), Errno> {
        let writers: Vec<Arc<File>> =
            self.files.lock().values().filter(|f| f.fid() == fid && self.fs.writing(f)).cloned().collect();
        for f in writers {
            self.run(req, self.fs.settle(&f))?;
        }
        Ok(())
    }

    /// An open of `fid` for writing through this mount, if any.
    fn writer(&self, fid: Fid) -> Option<Arc<File>> {
        self.files.lock().values().find(|f| f.fid() == fid && f.writable()).cloned()
    }

    /// Drops the readahead of every open of `fid` (a write or truncate
    /// through this client changed it).
    fn drop_readahead(&self, fid: Fid) {
        for f in self.files.lock().values().filter(|f| f.fid() == fid) {
            self.fs.drop_readahead(f);
        }
    }

    /// Runs `f` for the caller of `req`: its requests carry the calling
    /// process's job id and credentials.
    fn run<T>(&self, req: &Request, f: impl std::future::Future<Output = Result<T, ClientError>>) -> Result<T, Errno> {
        let now = std::time::Instant::now();
        let job = self.jobs.job(req.pid(), req.uid(), now);
        let creds = self.groups.creds(req.pid(), req.uid(), req.gid(), now);
        let cancels = EARLY_CANCELS.with(|e| std::mem::take(&mut *e.borrow_mut()));
        let keeps = EARLY_KEEPS.with(|e| std::mem::take(&mut *e.borrow_mut()));
        let f = crate::creds::with_cancels(cancels, keeps, f);
        let (out, left) = self.rt.block_on(ptlrpc::driver::with_jobid(job, with_creds(creds, f)));
        // Not taken (no modifying request yet): for the next run of this
        // request, or cancelled on their own when its guard drops.
        EARLY_CANCELS.with(|e| e.borrow_mut().extend(left));
        out.map_err(|e| {
            self.stats.failed();
            // EIO is lost I/O or a lost open: always worth a line (the
            // soak's findings are read from these); the rest are answers.
            if e.errno() == libc::EIO {
                tracing::warn!(error = %e, "fuse request failed");
            } else {
                tracing::debug!(error = %e, "fuse request failed");
            }
            errno(&e)
        })
    }
}

/// Tells a change's guard (if the mount caches) that its name is now
/// `present` or gone ([`cache::Busy::done`]).
fn done(b: &mut Option<cache::Busy<'_>>, present: bool) {
    if let Some(b) = b {
        b.done(present);
    }
}

/// Mounts `fs` on `dir` (as root: the pure-Rust mount, no helper) with
/// `threads` FUSE workers; returns the background session (unmount with
/// `umount_and_join`).
pub fn mount(
    fs: Arc<Sheen>,
    rt: tokio::runtime::Handle,
    dir: &Path,
    threads: usize,
) -> std::io::Result<fuser::BackgroundSession> {
    let cfg = session_config(&fs, threads);
    fuser::spawn_mount(SheenFs::new(fs, rt), dir, &cfg)
}

/// The FUSE session settings both mounts use: `threads` workers, no
/// atime, and every user of the node on the mount (`allow_other`; the MDT
/// checks permissions with each caller's credentials).
fn session_config(fs: &Sheen, threads: usize) -> fuser::Config {
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        fuser::MountOption::FSName(format!("sheen:{}", fs.fsname())),
        fuser::MountOption::Subtype("sheen".into()),
        fuser::MountOption::NoAtime,
    ];
    cfg.acl = fuser::SessionACL::All;
    cfg.n_threads = Some(threads.max(1));
    cfg
}

/// A FUSE mount that caches under MDT locks: the session and the
/// blocking-callback service the MDT reaches it by.
#[derive(Debug)]
pub struct Mounted {
    /// The FUSE session (unmount with `umount_and_join`).
    pub session: fuser::BackgroundSession,
    /// The lock cache (locks held, for tests and stats).
    pub cache: Arc<FuseCache>,
    /// The per-operation counters.
    pub stats: Arc<FuseStats>,
    /// The fault points of the callback service (for `/faults`).
    pub faults: Arc<ptlrpc::fault::FaultInjector>,
    callbacks: Arc<ptlrpc::driver::Service>,
}

impl Mounted {
    /// The mount's `/metrics` text, rendered at each scrape: FUSE
    /// operations, the lock cache, the imports of `fs` (the file system
    /// mounted), the callback service, lnet's counters. Holds nothing of
    /// the mount alive (the callback service only weakly).
    pub fn metrics_source(&self, fs: Arc<Sheen>, lnet: lnet::Lnet) -> ptlrpc::admin::MetricsSource {
        let (stats, cache) = (Arc::clone(&self.stats), Arc::downgrade(&self.cache));
        let callbacks = Arc::downgrade(&self.callbacks);
        Arc::new(move || {
            let mut out = stats.render();
            out.push_str(&render_mount(&fs, cache.upgrade().as_deref(), &lnet));
            if let Some(c) = callbacks.upgrade() {
                out.push_str(&c.render_metrics());
            }
            out
        })
    }
}

/// Mounts `fs` on `dir` as [`mount`] does, but with attributes and names
/// cached in the kernel under the MDT's locks (`cache`); the MDT's
/// blocking callbacks arrive on `lnet`, the node `fs` was mounted over.
pub fn mount_cached(
    fs: Arc<Sheen>,
    rt: tokio::runtime::Handle,
    dir: &Path,
    threads: usize,
    lnet: &lnet::Lnet,
) -> std::io::Result<Mounted> {
    let cache = FuseCache::new(Arc::clone(&fs), rt.clone());
    let faults = Arc::new(ptlrpc::fault::FaultInjector::new(u64::from(std::process::id())));
    let callbacks = start_callbacks(lnet, &cache, Arc::clone(&faults))?;
    let cfg = session_config(&fs, threads);
    let mut sfs = SheenFs::new(fs, rt);
    sfs.cache = Some(Arc::clone(&cache));
    let stats = Arc::clone(&sfs.stats);
    let session = fuser::spawn_mount(sfs, dir, &cfg)?;
    cache.set_notifier(session.notifier());
    cache::watch_import(&cache);
    Ok(Mounted { session, cache, stats, faults, callbacks: Arc::new(callbacks) })
}
