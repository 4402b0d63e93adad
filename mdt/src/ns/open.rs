//! Open files: handles, open counts, and orphans (unlinked while open,
//! destroyed at last close).
//!
//! Handles live in memory only. Every open and close is a transaction
//! (empty when it changes nothing else), so the target framework gives it
//! a transno, keeps its reply for a resend and orders its replay; the
//! handle changes take effect when the transaction is applied
//! ([`super::Namespace::applied`]), so a dropped plan leaves none. After a
//! restart, clients replay their opens (committed ones too): a replay
//! names the file and the handle it was answered ([`OpenReplay`]) and the
//! MDT restores that handle — by FID when the file exists (an orphan
//! included), else by creating it again with its original FID and
//! layout. Orphans left by the previous boot are destroyed once recovery
//! is over ([`Namespace::cleanup_orphans`]), unless a replayed open holds
//! them.
//!
//! Every handle has an owner: the client (export UUID) that opened it, or
//! replayed its open. Only the owner closes it (another client's close is
//! EBADF). When an export goes (eviction, disconnect, the end of recovery
//! without it) the target framework tells the MDT and every handle it
//! owns is closed ([`Namespace::close_owner`]): the last close of an
//! open-unlinked file destroys it (its objects go to the destroy log), a
//! write handle leaves the file's size inexact (`som`), all in batches
//! written at once and made durable by a commit asked for then (a crash
//! before it leaves the orphan to the end-of-recovery cleanup, which the
//! evicted client does not stop: it replays no opens). Handles closed so
//! are remembered (the last [`REVOKED_KEPT`]): a later close naming one
//! is answered ESTALE — "your client was evicted and this handle closed
//! for you" — rather than EBADF, and counted.
//!
//! Must not: let a handle outlive its close or its owner's export, close
//! a handle for a client that does not own it, or destroy an orphan that
//! is still open.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use ptlrpc::wire::Fid;
use ptlrpc::wire::mds::{MdtAttr, OpenReplay, SomAttr, open_flags};

use super::modify::{CreateArgs, SetattrArgs};
use super::som::{SomTable, WriteOpen};
use super::{Done, HandleOp, Namespace};
use crate::dir;
use crate::error::{MdtError, Result, errno};
use crate::fid;
use crate::inode::{Inode, Kind, S_IFMT, S_IFREG};
use crate::perm;
use crate::store::{Table, scan};

/// Open flags ([`open_flags`]).
pub type OpenFlags = u32;

/// The result of an open.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The handle to close.
    pub handle: u64,
    /// The inode as opened.
    pub inode: Inode,
    /// The transaction when the open created or truncated the file.
    pub done: Done,
}

/// The owner of handles opened through the embedded namespace (tests,
/// benchmarks: no target, no exports).
pub const LOCAL: &str = "";

/// Handles closed for a gone export remembered at most (for the ESTALE
/// answer; an older one is answered EBADF like any unknown handle).
pub const REVOKED_KEPT: usize = 1 << 16;

#[derive(Debug)]
struct Handle {
    fid: Fid,
    /// A handle open for writing: its open (`super::som`).
    write: Option<WriteOpen>,
    owner: Arc<str>,
}

#[derive(Debug)]
pub(super) struct Opens {
    next: u64,
    handles: HashMap<u64, Handle>,
    /// Owner -> the handles it holds.
    owned: HashMap<Arc<str>, HashSet<u64>>,
    counts: HashMap<Fid, u32>,
    /// Handles closed because their owner's export went, oldest first.
    revoked: HashSet<u64>,
    revoked_order: VecDeque<u64>,
    /// Size on MDT (`super::som`).
    pub(super) som: SomTable,
}

impl Opens {
    pub(super) fn new() -> Opens {
        Opens {
            next: 1,
            handles: HashMap::new(),
            owned: HashMap::new(),
            counts: HashMap::new(),
            revoked: HashSet::new(),
            revoked_order: VecDeque::new(),
            som: SomTable::default(),
        }
    }

    fn revoke(&mut self, h: u64) {
        if self.revoked.insert(h) {
            self.revoked_order.push_back(h);
        }
        while self.revoked_order.len() > REVOKED_KEPT {
            if let Some(old) = self.revoked_order.pop_front() {
                self.revoked.remove(&old);
            }
        }
    }
}

/// What a gone export's handles came to ([`Namespace::close_owner`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnerClosed {
    /// Handles closed.
    pub handles: usize,
    /// Open-unlinked files their last close destroyed.
    pub destroyed: usize,
}

impl Namespace {
    pub(super) fn is_open(&self, f: Fid) -> bool {
        self.opens.lock().counts.contains_key(&f)
    }

    /// Files open now.
    pub fn open_files(&self) -> usize {
        self.opens.lock().handles.len()
    }

    /// Handles `owner` holds now.
    pub fn open_files_of(&self, owner: &str) -> usize {
        self.opens.lock().owned.get(owner).map_or(0, HashSet::len)
    }

    /// A handle number not used in this boot (the epoch in the top bits
    /// keeps it apart from handles restored from earlier boots).
    fn new_handle(&self) -> u64 {
        let mut o = self.opens.lock();
        let h = (u64::from(self.txn.epoch()) << 40) | o.next;
        o.next += 1;
        h
    }

    /// Makes a handle change part of the operation's transaction: applied
    /// at once in embedded mode, with the pending transaction (an empty
    /// one if the operation wrote nothing) when deferred.
    fn attach(&self, op: HandleOp) {
        if !self.deferred {
            self.apply_handle(op);
            return;
        }
        let mut p = self.pending.lock();
        match p.as_mut() {
            Some(tx) => tx.handles.push(op),
            None => {
                let mut tx = self.begin();
                tx.handles.push(op);
                *p = Some(tx);
            }
        }
    }

    pub(super) fn apply_handle(&self, op: HandleOp) {
        let mut o = self.opens.lock();
        match op {
            HandleOp::Open(h, f, write, owner) => match o.handles.get(&h) {
                Some(g) if g.fid == f => {}
                Some(g) => tracing::warn!(handle = h, open = %g.fid, asked = %f, "open handle in use: not restored"),
                None => {
                    let w = write.then(|| o.som.open_write(f));
                    o.owned.entry(Arc::clone(&owner)).or_default().insert(h);
                    o.handles.insert(h, Handle { fid: f, write: w, owner });
                    *o.counts.entry(f).or_insert(0) += 1;
                }
            },
            HandleOp::Close(h, seen) => {
                if let Some(Handle { fid: f, write: w, owner }) = o.handles.remove(&h) {
                    if let Some(set) = o.owned.get_mut(&owner) {
                        set.remove(&h);
                        if set.is_empty() {
                            o.owned.remove(&owner);
                        }
                    }
                    if let Some(w) = w {
                        o.som.close_write(f, w, seen);
                    }
                    match o.counts.get_mut(&f) {
                        Some(n) if *n > 1 => *n -= 1,
                        _ => {
                            o.counts.remove(&f);
                        }
                    }
                }
            }
        }
    }

    /// A replayed open whose transaction ran before the restart (committed)
    /// or earlier in this recovery: restores its handle on `fid` for
    /// `owner` if the file still exists (an orphan included), as a write
    /// handle when `flags` open for writing. Returns whether it did.
    pub fn restore_open(&self, owner: &str, handle: u64, fid: Fid, flags: OpenFlags) -> bool {
        let Ok(i) = self.inode(fid) else {
            tracing::info!(handle, %fid, "replayed open of a file that is gone: not restored");
            return false;
        };
        let write = flags & (open_flags::WRONLY | open_flags::RDWR) != 0 && i.kind() == Kind::File;
        self.apply_handle(HandleOp::Open(handle, fid, write, owner.into()));
        true
    }

    /// open by name (creating with `CREAT`) or by FID.
    pub fn open(
        &self,
        parent: Fid,
        name: &str,
        by_fid: Option<Fid>,
        flags: OpenFlags,
        create: &CreateArgs,
    ) -> Result<Opened> {
        self.open_as(LOCAL, parent, name, by_fid, flags, create, None)
    }

    /// [`Namespace::open`] for client `owner`, or with `replay` an open
    /// replayed after a restart: the file by its FID if it exists, else
    /// (with `CREAT`) created again under `name` with that FID and the
    /// original layout; either way under the handle the client was
    /// answered.
    #[allow(clippy::too_many_arguments)]
    pub fn open_as(
        &self,
        owner: &str,
        parent: Fid,
        name: &str,
        by_fid: Option<Fid>,
        flags: OpenFlags,
        create: &CreateArgs,
        replay: Option<&OpenReplay>,
    ) -> Result<Opened> {
        let mut create = std::borrow::Cow::Borrowed(create);
        let (by_fid, flags, handle) = match replay {
            Some(r) if self.inode(r.fid).is_ok() => {
                (Some(r.fid), flags & !(open_flags::CREAT | open_flags::EXCL), Some(r.handle))
            }
            Some(r) if flags & open_flags::CREAT != 0 => {
                let c = create.to_mut();
                c.fid = Some(r.fid);
                c.replay_layout = Some(r.layout.clone());
                (None, flags, Some(r.handle))
            }
            Some(r) => return Err(MdtError::posix(errno::ENOENT, format!("replayed open of {}: gone", r.fid))),
            None => (by_fid, flags, None),
        };
        let create = &*create;
        // A replay reopens what its client had open: not checked again.
        let check = replay.is_none();
        let cr = &create.creds;
        let writes = flags & (open_flags::WRONLY | open_flags::RDWR) != 0;
        let (inode, done, created) = if let Some(f) = by_fid {
            (self.inode(f)?, Done::default(), false)
        } else {
            if check {
                perm::may_lookup(cr, &self.dir_inode(parent)?)?;
            }
            // An unlink racing between this lookup and the registration
            // below leaves a handle whose getattr answers ENOENT; the lock
            // manager (later) closes that window.
            let existing = match dir::lookup(&*self.kv, parent, name)? {
                Some((_, d)) => Some(self.inode(d.fid)?),
                None => None,
            };
            match existing {
                Some(_) if flags & open_flags::CREAT != 0 && flags & open_flags::EXCL != 0 => {
                    return Err(MdtError::posix(errno::EEXIST, format!("{name:?} exists")));
                }
                Some(i) => (i, Done::default(), false),
                None if flags & open_flags::CREAT != 0 => {
                    let mut a = create.clone();
                    a.mode = S_IFREG | (a.mode & !S_IFMT);
                    a.client = owner.to_string();
                    match self.create(parent, name, &a) {
                        Ok((i, d)) => (i, d, true),
                        // Lost a race with another creator: open theirs.
                        Err(e) if e.errno() == errno::EEXIST && flags & open_flags::EXCL == 0 => {
                            (self.inode(self.lookup_fid(parent, name)?)?, Done::default(), false)
                        }
                        Err(e) => return Err(e),
                    }
                }
                None => return Err(MdtError::posix(errno::ENOENT, format!("no {name:?} in {parent}"))),
            }
        };
        if inode.is_dir() && writes {
            return Err(MdtError::posix(errno::EISDIR, "open of a directory for writing"));
        }
        // The creator opens what it created whatever its mode.
        if check && !created {
            perm::may_open(cr, &inode, flags)?;
        }
        let (inode, done) = if flags & open_flags::TRUNC != 0 && writes && inode.kind() == Kind::File && inode.size != 0
        {
            let (i, d) = self.setattr(
                inode.fid,
                &SetattrArgs { valid: ptlrpc::wire::mds::attr_valid::SIZE, ..SetattrArgs::default() },
            )?;
            (i, if done.transno == 0 { d } else { done })
        } else {
            (inode, done)
        };
        let handle = handle.unwrap_or_else(|| self.new_handle());
        self.attach(HandleOp::Open(handle, inode.fid, writes && inode.kind() == Kind::File, owner.into()));
        Ok(Opened { handle, inode, done })
    }

    /// close (embedded: handles of [`LOCAL`]).
    pub fn close(&self, handle: u64, seen: Option<SomAttr>) -> Result<Done> {
        self.close_by(LOCAL, handle, seen)
    }

    /// close by client `owner`: the last close of an orphan destroys it;
    /// the close of a write handle tells what its client saw of the
    /// objects (`seen`, kept as the exact size when this was the lone
    /// writer: `super::som`). A handle closed when its owner's export went
    /// is ESTALE; an unknown one, or another client's, EBADF.
    pub fn close_by(&self, owner: &str, handle: u64, seen: Option<SomAttr>) -> Result<Done> {
        let mut w = self.w.lock();
        let (f, last) = {
            let o = self.opens.lock();
            let h = match o.handles.get(&handle) {
                Some(h) if &*h.owner == owner => h,
                Some(h) => {
                    return Err(MdtError::posix(
                        errno::EBADF,
                        format!("open handle {handle:#x} belongs to client {:?}, not {owner:?}", h.owner),
                    ));
                }
                None if o.revoked.contains(&handle) => {
                    return Err(MdtError::posix(
                        errno::ESTALE,
                        format!("open handle {handle:#x} was closed when its client's export went (evicted)"),
                    ));
                }
                None => return Err(MdtError::posix(errno::EBADF, format!("no open handle {handle:#x}"))),
            };
            (h.fid, o.counts.get(&h.fid).is_none_or(|n| *n <= 1))
        };
        let mut tx = self.begin();
        tx.handles.push(HandleOp::Close(handle, seen));
        if last && self.kv.get(Table::Orphans, &fid::key(f))?.is_some() {
            let i = self.inode(f)?;
            self.destroy_inode(&mut w, &mut tx, &i)?;
        }
        self.finish(&mut w, tx)
    }

    /// The attributes the close of `handle` by `owner`, having seen
    /// `seen`, leaves the file with when it makes its size exact (size on
    /// MDT); `None` otherwise (or for a file that is gone). Asked before
    /// the close: nothing changes.
    pub fn attr_after_close(&self, owner: &str, handle: u64, seen: Option<SomAttr>) -> Option<MdtAttr> {
        let (f, exact) = {
            let o = self.opens.lock();
            let h = o.handles.get(&handle).filter(|h| &*h.owner == owner)?;
            (h.fid, o.som.would_be_exact(h.fid, h.write?, seen)?)
        };
        let i = self.inode(f).ok().filter(|i| i.nlink > 0)?;
        let mut a = i.attr();
        super::with_som(&mut a, exact);
        Some(a)
    }

    /// The export of `owner` is gone (evicted, disconnected, or not back
    /// by the end of recovery): closes every handle it holds, outside any
    /// client transaction. The last close of an orphan destroys it (its
    /// objects to the destroy log); a write handle's file stays inexact
    /// (nothing was seen at this close). Each close is one batch written
    /// now (durable at the next commit). A later close naming one of the
    /// handles is ESTALE.
    pub fn close_owner(&self, owner: &str) -> Result<OwnerClosed> {
        let mut w = self.w.lock();
        let handles: Vec<u64> = {
            let mut o = self.opens.lock();
            let hs: Vec<u64> = o.owned.get(owner).map(|s| s.iter().copied().collect()).unwrap_or_default();
            for &h in &hs {
                o.revoke(h);
            }
            hs
        };
        let mut done = OwnerClosed::default();
        for h in handles {
            let (f, last) = {
                let o = self.opens.lock();
                let Some(hd) = o.handles.get(&h) else { continue };
                (hd.fid, o.counts.get(&hd.fid).is_none_or(|n| *n <= 1))
            };
            let mut tx = self.begin();
            tx.handles.push(HandleOp::Close(h, None));
            if last && self.kv.get(Table::Orphans, &fid::key(f))?.is_some() {
                let i = self.inode(f)?;
                self.destroy_inode(&mut w, &mut tx, &i)?;
                done.destroyed += 1;
            }
            self.finish_internal(&mut w, tx)?;
            done.handles += 1;
        }
        if done.handles > 0 {
            tracing::info!(
                client = owner,
                handles = done.handles,
                destroyed = done.destroyed,
                "closed the open handles of a gone export"
            );
        }
        Ok(done)
    }

    /// Destroys orphans no handle holds: at the end of recovery, those of
    /// the previous boot whose opens were not replayed. Returns how many.
    pub fn cleanup_orphans(&self) -> Result<usize> {
        let mut fids = Vec::new();
        scan(&*self.kv, Table::Orphans, &[], crate::store::KEY_END, |k, _| {
            fids.extend(fid::from_key(k));
            Ok(())
        })?;
        let mut w = self.w.lock();
        let mut n = 0;
        for f in fids {
            if self.is_open(f) {
                continue;
            }
            let mut tx = self.begin();
            match self.inode(f) {
                Ok(i) => self.destroy_inode(&mut w, &mut tx, &i)?,
                Err(_) => tx.b.del(Table::Orphans, fid::key(f).to_vec()),
            }
            self.finish_internal(&mut w, tx)?;
            n += 1;
        }
        *self.cleanups.lock() += 1;
        self.cleaned.notify_all();
        Ok(n)
    }

    /// Waits up to `bound` until [`Namespace::cleanup_orphans`] has run at
    /// least `n` times (the daemon runs it once recovery is over); returns
    /// how many times it ran.
    pub fn wait_orphan_cleanups(&self, n: u64, bound: std::time::Duration) -> u64 {
        let deadline = std::time::Instant::now() + bound;
        let mut g = self.cleanups.lock();
        while *g < n {
            if self.cleaned.wait_until(&mut g, deadline).timed_out() {
                break;
            }
        }
        *g
    }
}
