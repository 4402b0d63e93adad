//! The kernel's FUSE requests ([`fuser::Filesystem`]) mapped onto the
//! library API (see the parent module for what is mapped and how).
//!
//! Must not: cache data, or attributes and names beyond what the MDT's
//! locks cover (`cache`); hold a lock across a network call.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use ptlrpc::wire::mds::{Creds, access_mask, attr_valid, open_flags};

use super::conv::*;
use super::{SheenFs, done};
use crate::creds::with_creds;
use crate::error::ClientError;
use crate::fs::{S_IFDIR, S_IFLNK, S_IFMT, SetAttr};

impl Filesystem for SheenFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(max) = config.set_max_write(MAX_WRITE) {
            tracing::info!(max, "kernel caps max_write");
        }
        let _ = config.set_max_readahead(MAX_WRITE);
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEntry) {
        let _op = self.stats.op("lookup");
        if let Some(cache) = &self.cache {
            return self.lookup_cached(cache, req, parent, n, reply);
        }
        // The kernel asks for attributes next (zero TTLs): the objects'
        // size is left to that getattr.
        let r = self.fid(parent).and_then(|p| self.run(req, self.fs.lookup_mdt(p, name(n)?)));
        match r {
            Ok(st) => self.entry(&st, reply),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let _op = self.stats.op("forget");
        let mut i = self.inodes.lock();
        if let Some(e) = i.fids.get_mut(&ino.0) {
            e.1 = e.1.saturating_sub(nlookup);
            if e.1 == 0 {
                i.fids.remove(&ino.0);
            }
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _op = self.stats.op("getattr");
        let r = self.fid(ino).and_then(|f| {
            self.settle(req, f)?;
            // This client writing the file: the MDT and the objects at once.
            match (self.writer(f), &self.cache) {
                (Some(h), _) => Ok((self.run(req, self.fs.stat_open(&h))?, TTL)),
                (None, Some(c)) => self.getattr_cached(c, req, f),
                (None, None) => Ok((self.run(req, self.fs.stat_fid(f))?, TTL)),
            }
        });
        match r {
            Ok((st, ttl)) => reply.attr(&ttl, &file_attr(&st.attr, st.blocks)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _op = self.stats.op("setattr");
        let r = self.fid(ino).and_then(|fid| {
            if mode.is_some() || uid.is_some() || gid.is_some() {
                // The MDT locks the name side too for these (see `cache`).
                self.giving_up_names(fid);
            }
            let _b = self.changing(&[], &[fid], &[]);
            self.settle(req, fid)?;
            if size.is_some() {
                self.drop_readahead(fid);
            }
            // ftruncate: through a handle open for writing (checked at its open).
            let from_open = fh.and_then(|h| self.file(h).ok()).is_some_and(|f| f.writable());
            self.run(req, async {
                if let Some(s) = size {
                    self.fs.truncate_as(fid, s, from_open).await?;
                }
                let mut valid = 0;
                let mut a = SetAttr::default();
                if let Some(m) = mode {
                    valid |= attr_valid::MODE;
                    a.mode = m;
                }
                if let Some(u) = uid {
                    valid |= attr_valid::UID;
                    a.uid = u;
                }
                if let Some(g) = gid {
                    valid |= attr_valid::GID;
                    a.gid = g;
                }
                if let Some(t) = atime {
                    valid |= attr_valid::ATIME;
                    a.atime = timestamp(t);
                }
                if let Some(t) = mtime {
                    valid |= attr_valid::MTIME;
                    a.mtime = timestamp(t);
                }
                // utimes(NULL) / UTIME_NOW: write permission suffices.
                let times = [atime, mtime];
                if times.iter().any(Option::is_some) && times.iter().flatten().all(|t| matches!(t, TimeOrNow::Now)) {
                    valid |= attr_valid::TIMES_NOW;
                }
                if valid != 0 {
                    self.fs.setattr(fid, valid, a).await?;
                }
                self.fs.stat_fid(fid).await
            })
        });
        match r {
            Ok(st) => reply.attr(&TTL, &file_attr(&st.attr, st.blocks)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, n: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let _op = self.stats.op("mkdir");
        let r = self.fid(parent).and_then(|p| {
            let mut b = self.changing_name(p, n, &[]);
            let mode = mode & !umask;
            let st = match &self.cache {
                // The new directory comes back locked: this client will
                // know every name in it.
                Some(c) => {
                    c.follow_import();
                    let seq = c.seq();
                    let (st, locks) = self.run(req, self.fs.mkdir_locked(cred(req), p, name(n)?, mode, true))?;
                    c.granted(&locks, st.attr.mode);
                    c.new_dir(st.fid(), seq);
                    st
                }
                None => self.run(req, self.fs.mkdir_at(cred(req), p, name(n)?, mode))?,
            };
            done(&mut b, true);
            Ok(st)
        });
        match r {
            Ok(st) => self.entry(&st, reply),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEmpty) {
        let _op = self.stats.op("unlink");
        match self.fid(parent).and_then(|p| {
            let mut b = self.changing_name(p, n, &[(p, n)]);
            self.run(req, self.fs.unlink_at(p, name(n)?, false))?;
            done(&mut b, false);
            Ok(())
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEmpty) {
        let _op = self.stats.op("rmdir");
        match self.fid(parent).and_then(|p| {
            let mut b = self.changing_name(p, n, &[(p, n)]);
            self.run(req, self.fs.unlink_at(p, name(n)?, true))?;
            done(&mut b, false);
            Ok(())
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        n: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _op = self.stats.op("rename");
        let noreplace = flags.bits() == libc::RENAME_NOREPLACE;
        if flags.bits() != 0 && !noreplace {
            // RENAME_EXCHANGE / WHITEOUT are not in the MDT's protocol.
            return reply.error(Errno::EINVAL);
        }
        let r = self.fid(parent).and_then(|sp| {
            let (dp, sn, dn) = (self.fid(newparent)?, name(n)?, name(newname)?);
            let _b = self.changing(&[sp, dp], &[], &[(sp, n), (dp, newname)]);
            self.run(req, async {
                // NOREPLACE is checked by a lookup just before the rename:
                // not atomic against another client's create of the name.
                if noreplace {
                    match self.fs.mdc().lookup(dp, dn).await {
                        Ok(_) => return Err(ClientError::posix("rename target exists", libc::EEXIST)),
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e),
                    }
                }
                self.fs.rename_at(sp, sn, dp, dn).await
            })
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _op = self.stats.op("open");
        let r = self.fid(ino).and_then(|f| {
            let fl = mdt_flags(flags.0);
            let _b = (fl & (open_flags::WRONLY | open_flags::RDWR | open_flags::TRUNC) != 0)
                .then(|| self.changing(&[], &[f], &[]));
            self.run(req, self.fs.open_fid(f, fl))
        });
        match r {
            Ok(f) => reply.opened(self.keep(f), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn create(&self, req: &Request, parent: INodeNo, n: &OsStr, mode: u32, umask: u32, flags: i32, reply: ReplyCreate) {
        let _op = self.stats.op("create");
        // With a callback service: the new file comes back locked (its
        // name and attributes cached from this reply).
        let lock = if self.cache.is_some() { open_flags::LOCK } else { 0 };
        let fl = mdt_flags(flags) | open_flags::CREAT | lock;
        let r = self.fid(parent).and_then(|p| {
            let mut b = self.changing_name(p, n, &[(p, n)]);
            // Locks from before a reconnect go first; one the reply brings
            // from before a reconnect during it is dropped at the next
            // `follow_import` (it enters under the old generation).
            let seq = self.cache.as_ref().map(|c| {
                c.follow_import();
                c.seq()
            });
            let f = self.run(req, self.fs.open_at(cred(req), p, name(n)?, fl, mode & !umask, None))?;
            done(&mut b, true);
            let ttl = match (&self.cache, seq) {
                (Some(c), Some(seq)) => {
                    c.granted(f.granted_locks(), f.attr().mode);
                    // Long attributes too (FUSE has one TTL here): the
                    // new file is empty and stays so but for this
                    // kernel's own writes, which update its size and drop
                    // the rest; another client's open for writing or
                    // setattr calls the lock back first.
                    c.entry_ttl(p, n, f.fid(), seq).min(c.attr_ttl(f.fid(), seq))
                }
                _ => TTL,
            };
            Ok((f, ttl))
        });
        match r {
            Ok((f, ttl)) => {
                let attr = file_attr(f.attr(), 0);
                {
                    let mut i = self.inodes.lock();
                    let e = i.fids.entry(attr.ino.0).or_insert((f.fid(), 0));
                    e.1 += 1;
                }
                let fh = self.keep(f);
                reply.created(&ttl, &attr, Generation(0), fh, FopenFlags::FOPEN_DIRECT_IO);
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _op = self.stats.op("read");
        tracing::trace!(fh = fh.0, offset, size, "read");
        let r = self.file(fh).and_then(|f| {
            self.settle(req, f.fid())?;
            let mut buf = vec![0u8; size.min(MAX_WRITE) as usize];
            let n = self.run(req, self.fs.read(&f, offset, &mut buf))?;
            buf.truncate(n);
            Ok(buf)
        });
        match r {
            Ok(b) => {
                self.stats.read_bytes(b.len());
                reply.data(&b)
            }
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _op = self.stats.op("write");
        let append = flags.0 & libc::O_APPEND != 0;
        let r = self.file(fh).and_then(|f| {
            self.drop_readahead(f.fid());
            // The first write by an unprivileged user through an open of a
            // set-ID file drops the set-ID bits.
            // The kernel's doing (`file_remove_privs`), not the writer's
            // chmod: made as root.
            if req.uid() != 0 && killpriv(f.attr().mode).is_some() && self.privs_checked.lock().insert(fh.0) {
                self.run(
                    req,
                    with_creds(Creds::ROOT, async {
                        let st = self.fs.stat_fid(f.fid()).await?;
                        if let Some(m) = killpriv(st.attr.mode) {
                            let a = SetAttr { mode: m, ..SetAttr::default() };
                            self.fs.setattr(f.fid(), attr_valid::MODE, a).await?;
                        }
                        Ok(())
                    }),
                )?;
            }
            if append {
                // The end is where every open's writes so far have landed.
                self.settle(req, f.fid())?;
            }
            self.run(req, async {
                // O_APPEND writes at the file's end as the OSTs know it
                // (another client may have extended it), not the kernel's.
                let off = if append { self.fs.size(&f).await? } else { offset };
                self.fs.write_behind(&f, off, data).await
            })
        });
        match r {
            Ok(n) => {
                self.stats.written_bytes(n);
                reply.written(u32::try_from(n).unwrap_or(u32::MAX))
            }
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, req: &Request, _ino: INodeNo, fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        let _op = self.stats.op("flush");
        // close(2): the writes behind reach the OSTs before it returns
        // (close-to-open), and their failure is its error.
        let f = match self.file(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        if !self.fs.writing(&f) {
            return match self.run(req, self.fs.flush(&f)) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            };
        }
        // Writes in flight: answered by the task that sees the last one's
        // reply (the runtime thread that read it), not by waking this
        // thread to answer.
        let fs = Arc::clone(&self.fs);
        self.rt.spawn(async move {
            match fs.flush(&f).await {
                Ok(()) => reply.ok(),
                Err(e) => {
                    tracing::debug!(error = %e, "fuse flush failed");
                    reply.error(errno(&e));
                }
            }
        });
    }

    fn release(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _op = self.stats.op("release");
        let f = self.files.lock().remove(&fh.0);
        self.privs_checked.lock().remove(&fh.0);
        let seq = self.cache.as_ref().map(|c| c.seq());
        match f.map(|f| self.run(req, self.fs.close_ref(&f))) {
            Some(Err(e)) => reply.error(e),
            Some(Ok(after)) => {
                // The size the MDT now knows exactly: a getattr under this
                // client's UPDATE lock asks nothing.
                if let (Some(c), Some(seq), Some(st)) = (&self.cache, seq, after) {
                    c.remember(&st, seq);
                }
                reply.ok();
            }
            None => reply.ok(),
        }
    }

    fn fsync(&self, req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let _op = self.stats.op("fsync");
        match self.file(fh).and_then(|f| self.run(req, self.fs.fsync(&f))) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let _op = self.stats.op("readdir");
        // Offsets: 1 after ".", 2 after ".."; an entry's is its MDT
        // readdir cookie + 3, so a listing resumes at cookie + 1 (cookies
        // are stable while entries come and go).
        let r = self.fid(ino).and_then(|d| {
            let cookie = offset.saturating_sub(DOT_OFFSETS);
            Ok((self.run(req, self.fs.readdir_page(d, cookie))?, cookie))
        });
        match r {
            Ok(((entries, _, _), _)) => {
                if offset == 0 && reply.add(ino, 1, FileType::Directory, ".") {
                    return reply.ok();
                }
                // ".." names the parent; the client keeps no parent map, so
                // its inode number is the root's (what readdir callers see
                // in d_ino only; lookups of ".." go through the kernel).
                if offset <= 1 && reply.add(INodeNo(1), DOT_OFFSETS, FileType::Directory, "..") {
                    return reply.ok();
                }
                for e in entries {
                    let k = kind(u32::from(e.kind) << 12);
                    let off = e.cookie.saturating_add(DOT_OFFSETS + 1);
                    if reply.add(INodeNo(flatten(e.fid)), off, k, &e.name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(&self, req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let _op = self.stats.op("fsyncdir");
        match self.run(req, self.fs.mdc().sync()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let _op = self.stats.op("readlink");
        match self.fid(ino).and_then(|f| self.run(req, self.fs.readlink_fid(f))) {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let _op = self.stats.op("symlink");
        let r = self.fid(parent).and_then(|p| {
            let t = target.to_str().ok_or(Errno::EINVAL)?;
            let mut b = self.changing_name(p, link_name, &[]);
            let st = self.run(req, self.fs.symlink_at(cred(req), p, name(link_name)?, t))?;
            done(&mut b, true);
            Ok(st)
        });
        match r {
            Ok(st) => self.entry(&st, reply),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, n: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let _op = self.stats.op("mknod");
        let r = self.fid(parent).and_then(|p| {
            let mode = (mode & S_IFMT) | (mode & 0o7777 & !umask);
            if mode & S_IFMT == S_IFDIR || mode & S_IFMT == S_IFLNK {
                return Err(Errno::EINVAL);
            }
            let mut b = self.changing_name(p, n, &[]);
            let st = self.run(req, self.fs.create_node_at(cred(req), p, name(n)?, mode, u64::from(rdev), ""))?;
            done(&mut b, true);
            drop(b);
            // A regular file's size comes from its (new, empty) objects.
            if st.is_file() { self.run(req, self.fs.stat_fid(st.fid())) } else { Ok(st) }
        });
        match r {
            Ok(st) => self.entry(&st, reply),
            Err(e) => reply.error(e),
        }
    }

    fn link(&self, req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let _op = self.stats.op("link");
        let r = self.fid(ino).and_then(|f| {
            let p = self.fid(newparent)?;
            let _b = self.changing(&[p], &[f], &[]);
            self.run(req, self.fs.link_at(f, p, name(newname)?))
        });
        match r {
            Ok(st) => self.entry(&st, reply),
            Err(e) => reply.error(e),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        n: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        let _op = self.stats.op("setxattr");
        if position != 0 {
            // Only macOS resource forks use a position.
            return reply.error(Errno::EINVAL);
        }
        let fl = xattr_set_flags(flags);
        match self.fid(ino).and_then(|f| {
            let _b = self.changing(&[], &[f], &[]);
            self.run(req, self.fs.setxattr(f, name(n)?, value, fl))
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, n: &OsStr, size: u32, reply: ReplyXattr) {
        let _op = self.stats.op("getxattr");
        match self.fid(ino).and_then(|f| self.run(req, self.fs.getxattr(f, name(n)?))) {
            Ok(v) => xattr_reply(&v, size, reply),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _op = self.stats.op("listxattr");
        match self.fid(ino).and_then(|f| self.run(req, self.fs.listxattr(f))) {
            Ok(names) => xattr_reply(&xattr_list(&names), size, reply),
            Err(e) => reply.error(e),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, n: &OsStr, reply: ReplyEmpty) {
        let _op = self.stats.op("removexattr");
        match self.fid(ino).and_then(|f| {
            let _b = self.changing(&[], &[f], &[]);
            self.run(req, self.fs.removexattr(f, name(n)?))
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let _op = self.stats.op("access");
        // access(2), faccessat and chdir: the MDT checks the mask for the
        // caller (with its supplementary groups).
        let mask = mask.bits() as u32 & (access_mask::READ | access_mask::WRITE | access_mask::EXEC);
        match self.fid(ino).and_then(|f| self.run(req, self.fs.mdc().access(f, mask))) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _op = self.stats.op("opendir");
        // open(2) of a directory (the kernel refuses it for writing): read
        // permission, checked by the MDT.
        match self.fid(ino).and_then(|f| self.run(req, self.fs.mdc().access(f, access_mask::READ))) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let _op = self.stats.op("fallocate");
        let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        if let Ok(f) = self.fid(ino) {
            if let Err(e) = self.settle(req, f) {
                return reply.error(e);
            }
            self.drop_readahead(f);
        }
        let r = if mode == 0 {
            self.fid(ino).and_then(|f| self.run(req, self.fs.fallocate_fid(f, offset, length, false)))
        } else if mode == punch {
            self.fid(ino).and_then(|f| self.run(req, self.fs.fallocate_fid(f, offset, length, true)))
        } else {
            // KEEP_SIZE alone would promise reserved space the OSTs do not
            // reserve; collapse / insert / zero ranges are not in the protocol.
            Err(Errno::EOPNOTSUPP)
        };
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _op = self.stats.op("statfs");
        // Space is the OSTs' (as `lfs df` sums it); inodes are the MDT's.
        let r = self.run(req, async {
            let mdt = self.fs.mdc().statfs().await?;
            let osts = self.fs.df().await;
            Ok((mdt, osts))
        });
        match r {
            Ok((mdt, osts)) => {
                let sum = |f: fn(&crate::fs::TargetSpace) -> u64| {
                    osts.iter().filter(|t| t.ok && t.name.contains("-OST")).map(f).sum::<u64>() / 4
                };
                let (blocks, free, avail) = (sum(|t| t.kbytes), sum(|t| t.kbytes - t.used_kb), sum(|t| t.avail_kb));
                reply.statfs(blocks, free, avail, mdt.files, mdt.ffree, 4096, 255, 4096);
            }
            Err(e) => reply.error(e),
        }
    }
}
