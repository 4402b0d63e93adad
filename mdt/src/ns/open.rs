//! Open files: handles, open counts, and orphans (unlinked while open,
//! destroyed at last close).
//!
//! Handles live in memory only: opens are not replayed after a restart
//! (that needs the target framework's open replay), so at mount every
//! orphan left by the previous boot is destroyed
//! ([`Namespace::cleanup_orphans`]).
//!
//! Must not: let a handle outlive its close, or destroy an orphan that is
//! still open.

use std::collections::HashMap;

use ptlrpc::wire::Fid;
use ptlrpc::wire::mds::{SomAttr, open_flags};

use super::modify::{CreateArgs, SetattrArgs};
use super::som::{SomTable, WriteOpen};
use super::{Done, Namespace};
use crate::dir;
use crate::error::{MdtError, Result, errno};
use crate::fid;
use crate::inode::{Inode, Kind, S_IFMT, S_IFREG};
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

#[derive(Debug)]
pub(super) struct Opens {
    next: u64,
    /// Handle -> the file and, for a handle open for writing, its open.
    handles: HashMap<u64, (Fid, Option<WriteOpen>)>,
    counts: HashMap<Fid, u32>,
    /// Size on MDT (`super::som`).
    pub(super) som: SomTable,
}

impl Opens {
    pub(super) fn new() -> Opens {
        Opens { next: 1, handles: HashMap::new(), counts: HashMap::new(), som: SomTable::default() }
    }
}

impl Namespace {
    pub(super) fn is_open(&self, f: Fid) -> bool {
        self.opens.lock().counts.contains_key(&f)
    }

    /// Files open now.
    pub fn open_files(&self) -> usize {
        self.opens.lock().handles.len()
    }

    /// A new handle of `f` (`write`: open for writing).
    fn register(&self, f: Fid, write: bool) -> u64 {
        let mut o = self.opens.lock();
        let h = (u64::from(self.txn.epoch()) << 40) | o.next;
        o.next += 1;
        let w = write.then(|| o.som.open_write(f));
        o.handles.insert(h, (f, w));
        *o.counts.entry(f).or_insert(0) += 1;
        h
    }

    /// open by name (creating with `CREAT`) or by FID.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        &self,
        parent: Fid,
        name: &str,
        by_fid: Option<Fid>,
        flags: OpenFlags,
        create: &CreateArgs,
    ) -> Result<Opened> {
        let writes = flags & (open_flags::WRONLY | open_flags::RDWR) != 0;
        let (inode, done) = if let Some(f) = by_fid {
            (self.inode(f)?, Done::default())
        } else {
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
                Some(i) => (i, Done::default()),
                None if flags & open_flags::CREAT != 0 => {
                    let mut a = create.clone();
                    a.mode = S_IFREG | (a.mode & !S_IFMT);
                    match self.create(parent, name, &a) {
                        Ok(r) => r,
                        // Lost a race with another creator: open theirs.
                        Err(e) if e.errno() == errno::EEXIST && flags & open_flags::EXCL == 0 => {
                            (self.inode(self.lookup_fid(parent, name)?)?, Done::default())
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
        let handle = self.register(inode.fid, writes && inode.kind() == Kind::File);
        Ok(Opened { handle, inode, done })
    }

    /// close: the last close of an orphan destroys it; the close of a
    /// write handle tells what its client saw of the objects (`seen`, kept
    /// as the exact size when this was the lone writer: `super::som`).
    pub fn close(&self, handle: u64, seen: Option<SomAttr>) -> Result<Done> {
        let f = {
            let mut o = self.opens.lock();
            let (f, w) =
                o.handles.remove(&handle).ok_or_else(|| MdtError::posix(errno::EBADF, "no such open handle"))?;
            if let Some(w) = w {
                o.som.close_write(f, w, seen);
            }
            match o.counts.get_mut(&f) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    return Ok(Done::default());
                }
                _ => {
                    o.counts.remove(&f);
                }
            }
            f
        };
        let mut w = self.w.lock();
        if self.is_open(f) || self.kv.get(Table::Orphans, &fid::key(f))?.is_none() {
            return Ok(Done::default());
        }
        let i = self.inode(f)?;
        let mut tx = self.begin();
        self.destroy_inode(&mut w, &mut tx, &i)?;
        self.finish(&mut w, tx)
    }

    /// Destroys orphans left by the previous boot (no open survives a
    /// restart). Returns how many.
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
        Ok(n)
    }
}
