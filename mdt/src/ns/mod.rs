//! The namespace: inodes, directories, xattrs, layouts, open files and the
//! destroy log, on a [`Kv`] store.
//!
//! Every modifying operation runs under one write lock, reads what it
//! needs, and writes one atomic batch holding every change, the FID cursor,
//! the OST cursors, destroy-log records and the new `last_transno`; the
//! objects it touches get the transaction's version (`seeds/002`: create,
//! link and unlink set parent and child, rename every object involved,
//! setattr/setxattr the object unless only times or size change). Reads
//! take no lock: a batch is visible whole or not at all.
//!
//! Owns: [`Namespace`] and its operations (`modify`: create, link, unlink,
//! rename, setattr, xattrs; `open`: open/close handles, their owners and
//! orphans;
//! `som`: size on MDT, in memory; `destroy`: the persistent destroy log).
//!
//! Must not: call an OST while holding the write lock, except to precreate
//! objects when a precreated range is used up.

mod destroy;
mod modify;
mod open;
#[cfg(test)]
mod perm_tests;
mod som;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use parking_lot::Mutex;
use ptlrpc::wire::mds::{AttrReply, Creds, DirEntry, MdtAttr, ReaddirReply, StatfsReply, attr_flags};
use ptlrpc::wire::{Fid, WireDecode};

pub use destroy::parse_record as parse_destroy_record;
pub use modify::{CreateArgs, SetattrArgs};
pub use open::{LOCAL, OpenFlags, Opened, OwnerClosed};

use crate::alloc::Allocator;
use crate::dir::{self, Dirent};
use crate::error::{MdtError, Result, errno};
use crate::fid::{self, FidCursor};
use crate::inode::{Inode, S_IFDIR};
use crate::seq::{self as seqs, Refusal, Sequences};
use crate::store::{Batch, Kv, Table, decode, encode};
use crate::txn::TxnState;

const CURSOR_KEY: &[u8] = b"fid_cursor";

/// What a modifying operation did: its transno and the objects' versions
/// before it (the version after is the transno).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Done {
    /// The transaction (0: nothing changed).
    pub transno: u64,
    /// Pre-op versions, parent first.
    pub pre_versions: Vec<u64>,
}

/// State only the writer touches.
#[derive(Debug)]
struct Writer {
    cursor: FidCursor,
    seqs: Arc<parking_lot::Mutex<Sequences>>,
    destroy_seq: u64,
}

/// A transaction being built: the batch (entries, xattrs, orphans, the
/// destroy log, OST cursors), the inodes it writes (encoded when it is
/// written, so a deferred transaction's versions can still be stamped),
/// the objects it versions, the open-handle changes made once it is
/// written, and the OST objects it took (handed back if it is dropped).
pub struct Tx {
    b: Batch,
    /// 0 while deferred: the target framework assigns it at apply.
    transno: u64,
    pre: Vec<u64>,
    inodes: Vec<Inode>,
    objects: Vec<Fid>,
    handles: Vec<HandleOp>,
    held: Held,
}

/// An open-handle change a transaction makes once written.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HandleOp {
    /// Handle `.0` opens `.1` (a new open, or a replayed one restored),
    /// for writing when `.2`, owned by the client (export UUID) `.3`.
    Open(u64, Fid, bool, Arc<str>),
    /// Handle `.0` is closed; a write handle's closer saw `.1`.
    Close(u64, Option<ptlrpc::wire::mds::SomAttr>),
}

/// OST objects a transaction took: back to the allocator when dropped
/// unwritten, kept ([`Held::keep`]) once written.
struct Held {
    alloc: Arc<Allocator>,
    taken: Vec<crate::alloc::Taken>,
}

impl Held {
    fn keep(mut self) {
        self.taken.clear();
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.taken.is_empty() {
            self.alloc.give_back(&self.taken);
        }
    }
}

/// What happens once a transaction's batch is written
/// ([`Namespace::applied`]): handle changes, and its OST objects kept.
/// Dropped unapplied (the write failed), the objects go back.
pub struct Effects {
    handles: Vec<HandleOp>,
    held: Held,
}

impl std::fmt::Debug for Effects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Effects").field("handles", &self.handles).field("taken", &self.held.taken).finish()
    }
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").field("objects", &self.objects).field("changes", &self.b.changes.len()).finish()
    }
}

impl Tx {
    /// Gives `ino` the transaction's version, remembering the old one.
    fn version(&mut self, ino: &mut Inode) {
        self.pre.push(ino.version);
        self.objects.push(ino.fid);
        ino.version = self.transno;
    }

    fn put_inode(&mut self, ino: &Inode) {
        match self.inodes.iter_mut().find(|i| i.fid == ino.fid) {
            Some(i) => *i = ino.clone(),
            None => self.inodes.push(ino.clone()),
        }
    }

    fn put_dirent(&mut self, dir: Fid, cookie: u64, d: &Dirent) {
        self.b.put(Table::Dirents, dir::key(dir, cookie).to_vec(), encode(d));
    }

    /// The objects it versions, in pre-version order (parent first).
    pub fn objects(&self) -> &[Fid] {
        &self.objects
    }

    /// The final batch — every change, the inodes with `version` stamped on
    /// the versioned ones (a deferred transaction's), inode writes last —
    /// and what to do once it is written ([`Namespace::applied`]).
    pub fn into_parts(mut self, version: u64) -> (Batch, Effects) {
        for mut i in self.inodes {
            if self.objects.contains(&i.fid) {
                i.version = version;
            }
            self.b.put(Table::Inodes, fid::key(i.fid).to_vec(), encode(&i));
        }
        (self.b, Effects { handles: self.handles, held: self.held })
    }

    /// Whether it writes nothing (an open of an existing file, a close
    /// that destroys nothing: only handle changes).
    fn writes_nothing(&self) -> bool {
        self.b.is_empty() && self.inodes.is_empty()
    }
}

/// The metadata namespace of one MDT.
pub struct Namespace {
    kv: Arc<dyn Kv>,
    txn: Arc<TxnState>,
    alloc: Arc<Allocator>,
    w: Mutex<Writer>,
    opens: Mutex<open::Opens>,
    /// Run by the target framework: modifying operations leave their
    /// transaction in `pending` for the target to apply with its transno.
    deferred: bool,
    pending: Mutex<Option<Tx>>,
    /// Creates refused for their FID (`check_client_fid`).
    fids_refused: std::sync::atomic::AtomicU64,
    /// End-of-recovery orphan cleanups done (see `open`), and its signal.
    cleanups: Mutex<u64>,
    cleaned: parking_lot::Condvar,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace").field("epoch", &self.txn.epoch()).finish_non_exhaustive()
    }
}

fn meta<T>(kv: &dyn Kv, key: &[u8]) -> Result<Option<T>>
where
    T: WireDecode,
{
    match kv.get(Table::Meta, key)? {
        Some(v) => Ok(Some(decode::<T>(Table::Meta, &v)?)),
        None => Ok(None),
    }
}

impl Namespace {
    /// Mounts the namespace: boots the transaction state (new epoch),
    /// creates the root on a fresh store, and reads the cursors back.
    pub fn mount(kv: Arc<dyn Kv>, alloc: Arc<Allocator>) -> Result<Namespace> {
        let (txn, _) = TxnState::boot(&*kv)?;
        Namespace::mount_with(kv, alloc, txn, false)
    }

    /// Mounts the namespace for the target framework (`crate::tgt`): the
    /// target owns the epoch and transnos; operations are deferred
    /// ([`Namespace::take_pending`]); the root and orphan cleanup write no
    /// transno.
    pub fn mount_deferred(kv: Arc<dyn Kv>, alloc: Arc<Allocator>) -> Result<Namespace> {
        let txn = TxnState::adopt(&*kv)?;
        alloc.set_nonblocking();
        Namespace::mount_with(kv, alloc, txn, true)
    }

    fn mount_with(kv: Arc<dyn Kv>, alloc: Arc<Allocator>, txn: TxnState, deferred: bool) -> Result<Namespace> {
        let cursor = meta::<FidCursor>(&*kv, CURSOR_KEY)?.unwrap_or_default();
        // The allocator grants OST sequences from the same server.
        let seqs = alloc.seqs()?;
        let destroy_seq = kv
            .range(Table::DestroyLog, &[], crate::store::KEY_END, usize::MAX)?
            .last()
            .and_then(|(k, _)| <[u8; 8]>::try_from(k.as_slice()).ok())
            .map_or(1, |k| u64::from_be_bytes(k) + 1);
        let ns = Namespace {
            kv,
            txn: Arc::new(txn),
            alloc,
            w: Mutex::new(Writer { cursor, seqs, destroy_seq }),
            fids_refused: std::sync::atomic::AtomicU64::new(0),
            opens: Mutex::new(open::Opens::new()),
            deferred,
            pending: Mutex::new(None),
            cleanups: Mutex::new(0),
            cleaned: parking_lot::Condvar::new(),
        };
        if ns.kv.get(Table::Inodes, &fid::key(Fid::ROOT))?.is_none() {
            let mut w = ns.w.lock();
            let mut tx = ns.begin();
            let root = Inode {
                fid: Fid::ROOT,
                parent: Fid::ROOT,
                mode: S_IFDIR | 0o755,
                nlink: 2,
                version: tx.transno,
                ..Inode::default()
            };
            tx.put_inode(&root);
            ns.finish_internal(&mut w, tx)?;
        }
        Ok(ns)
    }

    /// Whether operations are deferred to the target framework.
    pub fn is_deferred(&self) -> bool {
        self.deferred
    }

    /// The transaction the last modifying operation left (deferred mode).
    pub fn take_pending(&self) -> Option<Tx> {
        self.pending.lock().take()
    }

    /// The transaction counters.
    pub fn txn(&self) -> &Arc<TxnState> {
        &self.txn
    }

    /// The store.
    pub fn kv(&self) -> &Arc<dyn Kv> {
        &self.kv
    }

    /// The allocator.
    pub fn alloc(&self) -> &Arc<Allocator> {
        &self.alloc
    }

    fn begin(&self) -> Tx {
        let transno = if self.deferred { 0 } else { self.txn.next() };
        Tx {
            b: Batch::new(),
            transno,
            pre: Vec::new(),
            inodes: Vec::new(),
            objects: Vec::new(),
            handles: Vec::new(),
            held: Held { alloc: Arc::clone(&self.alloc), taken: Vec::new() },
        }
    }

    /// A transaction's batch was written: its handle changes take effect
    /// and its OST objects are kept.
    pub fn applied(&self, e: Effects) {
        let Effects { handles, held } = e;
        held.keep();
        for op in handles {
            self.apply_handle(op);
        }
    }

    /// Ends a modifying operation: writes its batch with the next transno,
    /// or (deferred) leaves it for the target.
    fn finish(&self, w: &mut Writer, mut tx: Tx) -> Result<Done> {
        if !self.deferred && tx.writes_nothing() {
            // Only handle changes: no transaction in embedded mode.
            let (_, e) = tx.into_parts(0);
            self.applied(e);
            return Ok(Done::default());
        }
        tx.b.put(Table::Meta, CURSOR_KEY, encode(&w.cursor));
        if self.deferred {
            let pre = tx.pre.clone();
            *self.pending.lock() = Some(tx);
            return Ok(Done { transno: 0, pre_versions: pre });
        }
        let (transno, pre) = (tx.transno, tx.pre.clone());
        let (mut b, e) = tx.into_parts(transno);
        TxnState::stamp(&mut b, transno);
        self.kv.write(b)?;
        self.applied(e);
        self.txn.applied(transno);
        Ok(Done { transno, pre_versions: pre })
    }

    /// Housekeeping writes (the root, orphan cleanup): a transno in
    /// embedded mode; none when the target owns transnos.
    fn finish_internal(&self, w: &mut Writer, mut tx: Tx) -> Result<Done> {
        if !self.deferred {
            return self.finish(w, tx);
        }
        tx.b.put(Table::Meta, CURSOR_KEY, encode(&w.cursor));
        let version = self.txn.last().max(1);
        let (b, e) = tx.into_parts(version);
        self.kv.write(b)?;
        self.applied(e);
        Ok(Done::default())
    }

    /// SEQ_QUERY: grants client `owner` up to `count` sequences
    /// (`crate::seq`), durably: the grant is persisted before it is
    /// returned, so it is never repeated across a crash, and the client's
    /// creates from it are accepted after a restart too. Returns
    /// `start..end`.
    pub fn grant_seqs(&self, owner: &str, count: u32) -> Result<std::ops::Range<u64>> {
        let w = &mut *self.w.lock();
        self.grant_locked(w, owner, count)
    }

    fn grant_locked(&self, w: &mut Writer, owner: &str, count: u32) -> Result<std::ops::Range<u64>> {
        let mut seqs = w.seqs.lock();
        let p = seqs.grant(owner, count);
        self.kv.write(p.batch())?;
        self.kv.persist()?;
        Ok(seqs.granted(p))
    }

    /// Creates refused because they named a FID not granted to their
    /// client (EPERM) or no FID a client may name (EINVAL).
    pub fn fids_refused(&self) -> u64 {
        self.fids_refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A client-chosen FID must lie in a sequence granted to `owner` (a
    /// replay's also in one the MDT took) and name no inode.
    fn check_client_fid(&self, w: &Writer, owner: &str, f: Fid, replay: bool) -> Result<()> {
        if let Err(r) = w.seqs.lock().check(owner, f, replay) {
            self.fids_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(client = owner, fid = %f, refusal = ?r, "create with a FID the client was not granted");
            return Err(match r {
                Refusal::Insane => MdtError::posix(errno::EINVAL, format!("FID {f} is not one a client may name")),
                Refusal::NotGranted => {
                    MdtError::posix(errno::EPERM, format!("FID {f} is not from a sequence granted to client {owner:?}"))
                }
            });
        }
        if self.kv.get(Table::Inodes, &fid::key(f))?.is_some() {
            return Err(MdtError::posix(errno::EEXIST, format!("FID {f} is in use")));
        }
        Ok(())
    }

    /// A FID from the MDT's own sequence (granted to [`seqs::OWN`],
    /// durably, when the current one is used up), skipping any in use.
    fn own_fid(&self, w: &mut Writer) -> Result<Fid> {
        loop {
            let own = w.cursor.seq != 0
                && w.seqs.lock().check(seqs::OWN, Fid { seq: w.cursor.seq, oid: 1, ver: 0 }, false).is_ok();
            let f = match w.cursor.take().filter(|_| own) {
                Some(f) => f,
                None => {
                    let g = self.grant_locked(w, seqs::OWN, 1)?;
                    w.cursor.start(g.start);
                    continue;
                }
            };
            if self.kv.get(Table::Inodes, &fid::key(f))?.is_none() {
                return Ok(f);
            }
        }
    }

    /// The inode `f`.
    pub fn inode(&self, f: Fid) -> Result<Inode> {
        match self.kv.get(Table::Inodes, &fid::key(f))? {
            Some(v) => Ok(decode::<Inode>(Table::Inodes, &v)?),
            None => Err(MdtError::posix(errno::ENOENT, format!("no inode {f}"))),
        }
    }

    fn dir_inode(&self, f: Fid) -> Result<Inode> {
        let i = self.inode(f)?;
        if !i.is_dir() {
            return Err(MdtError::posix(errno::ENOTDIR, format!("{f} is not a directory")));
        }
        Ok(i)
    }

    /// The wire attributes of `i`: a regular file's size, space and data
    /// mtime are the exact ones when the MDT knows them (`som`).
    pub fn attr(&self, i: &Inode) -> MdtAttr {
        let mut a = i.attr();
        if i.kind() == crate::inode::Kind::File
            && let Some(s) = self.opens.lock().som.exact(i.fid)
        {
            with_som(&mut a, s);
        }
        a
    }

    /// Files whose size the MDT knows exactly (`som`).
    pub fn som_exact_files(&self) -> usize {
        self.opens.lock().som.exact_len()
    }

    /// getattr (and readlink: the reply carries a symlink's target).
    pub fn getattr(&self, f: Fid) -> Result<AttrReply> {
        self.getattr_as(&Creds::ROOT, f, 0)
    }

    /// The FID `name` in `parent` names.
    pub fn lookup_fid(&self, parent: Fid, name: &str) -> Result<Fid> {
        self.dir_inode(parent)?;
        match dir::lookup(&*self.kv, parent, name)? {
            Some((_, d)) => Ok(d.fid),
            None => Err(MdtError::posix(errno::ENOENT, format!("no {name:?} in {parent}"))),
        }
    }

    /// lookup: `name` in `parent` and its attributes.
    pub fn lookup(&self, parent: Fid, name: &str) -> Result<AttrReply> {
        self.getattr(self.lookup_fid(parent, name)?)
    }

    /// [`Namespace::lookup`] for `c`: search permission on `parent`.
    pub fn lookup_as(&self, c: &Creds, parent: Fid, name: &str) -> Result<AttrReply> {
        crate::perm::may_lookup(c, &self.dir_inode(parent)?)?;
        self.lookup(parent, name)
    }

    /// getattr for `c`, who must have `mask` (`access_mask`, 0: nothing)
    /// on `f` (`access(2)`, opendir).
    pub fn getattr_as(&self, c: &Creds, f: Fid, mask: u32) -> Result<AttrReply> {
        let i = self.inode(f)?;
        if mask != 0 {
            crate::perm::permission(c, &i, mask)?;
        }
        Ok(AttrReply {
            attr: self.attr(&i),
            layout: i.layout.clone(),
            default_stripe: i.default_stripe.clone(),
            symlink: i.symlink,
        })
    }

    /// readdir from `cookie`.
    pub fn readdir(&self, f: Fid, cookie: u64, max: u32) -> Result<ReaddirReply> {
        self.dir_inode(f)?;
        let max = (max as usize).clamp(1, 4096);
        let (rows, end) = dir::readdir(&*self.kv, f, cookie, max)?;
        let next = rows.last().map_or(cookie, |(c, _)| c.saturating_add(1));
        let end = end || rows.last().is_some_and(|(c, _)| *c == u64::MAX);
        let entries =
            rows.into_iter().map(|(cookie, d)| DirEntry { name: d.name, fid: d.fid, kind: d.kind, cookie }).collect();
        Ok(ReaddirReply { entries, next, end })
    }

    /// statfs.
    pub fn statfs(&self) -> StatfsReply {
        let (kbytes, kbytes_free, osts_active) = self.alloc.space();
        let files = self.kv.approx_len(Table::Inodes) as u64;
        StatfsReply { files, ffree: u64::from(u32::MAX).saturating_sub(files), kbytes, kbytes_free, osts_active }
    }

    /// An xattr's value.
    pub fn getxattr(&self, f: Fid, name: &str) -> Result<Vec<u8>> {
        self.getxattr_as(&Creds::ROOT, f, name)
    }

    /// [`Namespace::getxattr`] for `c` (`perm::may_xattr`).
    pub fn getxattr_as(&self, c: &Creds, f: Fid, name: &str) -> Result<Vec<u8>> {
        crate::perm::may_xattr(c, &self.inode(f)?, name, false)?;
        self.kv
            .get(Table::Xattrs, &xattr_key(f, name))?
            .ok_or_else(|| MdtError::posix(errno::ENODATA, format!("no xattr {name:?} on {f}")))
    }

    /// Every xattr name of `f`.
    pub fn listxattr(&self, f: Fid) -> Result<Vec<String>> {
        self.inode(f)?;
        let mut names = Vec::new();
        crate::store::scan(&*self.kv, Table::Xattrs, &fid::key(f), &fid_end(f), |k, _| {
            names.push(String::from_utf8_lossy(k.get(16..).unwrap_or_default()).into_owned());
            Ok(())
        })?;
        Ok(names)
    }
}

/// The key of xattr `name` of `f`.
fn xattr_key(f: Fid, name: &str) -> Vec<u8> {
    let mut k = fid::key(f).to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// The first key after every key prefixed by `f`.
fn fid_end(f: Fid) -> Vec<u8> {
    let mut k = fid::key(f).to_vec();
    k.extend_from_slice(&[0xff; 300]);
    k
}

/// `a` with the exact size, space and data mtime `s` (size on MDT).
fn with_som(a: &mut MdtAttr, s: ptlrpc::wire::mds::SomAttr) {
    a.size = s.size;
    a.blocks = s.blocks;
    a.mtime = a.mtime.max(s.mtime);
    a.ctime = a.ctime.max(s.mtime);
    a.flags |= attr_flags::SOM_EXACT;
}
