//! The FUSE mount (llite): kernel requests mapped onto the library API.
//!
//! Owns: [`SheenFs`] — inode numbers (the root is 1; others are the FID
//! flattened as Lustre does, with a table from inode to FID filled by
//! lookups and emptied by forgets), open file handles, and the FUSE
//! replies. Every attribute and entry is answered with a zero TTL and file
//! data is opened with `FOPEN_DIRECT_IO` (1 MiB requests, no page cache):
//! nothing another client could change is cached. Calls block the FUSE
//! worker thread on the tokio runtime that drives lnet. No `unsafe`.
//!
//! Mapped: lookup/forget, getattr/setattr (truncate, chmod, chown,
//! utimes), mkdir, mknod (devices, FIFOs, sockets, files), symlink,
//! readlink, link, unlink, rmdir, rename (and `RENAME_NOREPLACE`, checked
//! by a lookup first), open/create/read/write/flush/release/fsync (SYNC on
//! the OSTs and the MDT), readdir with "." and "..", fsyncdir, statfs,
//! xattrs (get/set/list/remove with ERANGE and ENODATA), access, and
//! fallocate (mode 0 extends the size; punch hole). Permissions are the
//! kernel's (`default_permissions`), for every user (`allow_other`).
//!
//! Must not: cache data or attributes; hold a lock across a network call.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;
use ptlrpc::wire::Fid;
use ptlrpc::wire::mds::{MdtAttr, Timestamp, attr_valid, open_flags, xattr_flags};

use crate::error::ClientError;
use crate::fs::{Cred, File, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, SetAttr, Sheen, Stat};

/// No caching: every attribute and entry is asked for again.
const TTL: Duration = Duration::ZERO;
/// The largest FUSE request (max_pages_limit 256 x 4 KiB).
pub const MAX_WRITE: u32 = 1 << 20;

/// Lustre's `fid_flatten`: a FID as a 64-bit inode number.
pub fn flatten(fid: Fid) -> u64 {
    if fid == Fid::ROOT {
        return 1;
    }
    let ino = (fid.seq << 24).wrapping_add((fid.seq >> 24).wrapping_mul(0xff_ffff)).wrapping_add(u64::from(fid.oid));
    if ino <= 1 { ino.wrapping_add(2) } else { ino }
}

fn errno(e: &ClientError) -> Errno {
    Errno::from_i32(e.errno())
}

/// A wire time as the kernel takes it (before 1970 too).
fn time(t: Timestamp) -> SystemTime {
    let nsec = Duration::from_nanos(u64::from(t.nsec.min(999_999_999)));
    match u64::try_from(t.sec) {
        Ok(s) => UNIX_EPOCH + Duration::from_secs(s) + nsec,
        Err(_) => UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + nsec,
    }
}

/// A time the kernel gives (or now) as a wire time, to the nanosecond.
fn timestamp(t: TimeOrNow) -> Timestamp {
    let t = match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => return crate::fs::now(),
    };
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp { sec: d.as_secs() as i64, nsec: d.subsec_nanos() },
        Err(e) => {
            // Before 1970: whole seconds down, nanoseconds up.
            let d = e.duration();
            let (mut sec, mut nsec) = (-(d.as_secs() as i64), d.subsec_nanos());
            if nsec > 0 {
                sec -= 1;
                nsec = 1_000_000_000 - nsec;
            }
            Timestamp { sec, nsec }
        }
    }
}

fn kind(mode: u32) -> FileType {
    match mode & S_IFMT {
        S_IFDIR => FileType::Directory,
        S_IFLNK => FileType::Symlink,
        S_IFREG => FileType::RegularFile,
        0o020000 => FileType::CharDevice,
        0o060000 => FileType::BlockDevice,
        0o010000 => FileType::NamedPipe,
        0o140000 => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn file_attr(a: &MdtAttr, blocks: u64) -> FileAttr {
    FileAttr {
        ino: INodeNo(flatten(a.fid)),
        size: a.size,
        blocks,
        atime: time(a.atime),
        mtime: time(a.mtime),
        ctime: time(a.ctime),
        crtime: time(a.ctime),
        kind: kind(a.mode),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev as u32,
        blksize: MAX_WRITE,
        flags: 0,
    }
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
        let attr = file_attr(&st.attr, st.blocks);
        if attr.ino.0 != 1 {
            let mut i = self.inodes.lock();
            let e = i.fids.entry(attr.ino.0).or_insert((st.fid(), 0));
            e.0 = st.fid();
            e.1 += 1;
        }
        reply.entry(&TTL, &attr, Generation(0));
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
    fn settle(&self, fid: Fid) -> Result<(), Errno> {
        let writers: Vec<Arc<File>> =
            self.files.lock().values().filter(|f| f.fid() == fid && self.fs.writing(f)).cloned().collect();
        for f in writers {
            self.run(self.fs.settle(&f))?;
        }
        Ok(())
    }

    /// Drops the readahead of every open of `fid` (a write or truncate
    /// through this client changed it).
    fn drop_readahead(&self, fid: Fid) {
        for f in self.files.lock().values().filter(|f| f.fid() == fid) {
            self.fs.drop_readahead(f);
        }
    }

    fn run<T>(&self, f: impl std::future::Future<Output = Result<T, ClientError>>) -> Result<T, Errno> {
        self.rt.block_on(f).map_err(|e| {
            tracing::debug!(error = %e, "fuse request failed");
            errno(&e)
        })
    }
}

/// The longest name (`NAME_MAX`).
const NAME_MAX: usize = 255;

fn name(n: &OsStr) -> Result<&str, Errno> {
    if n.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    n.to_str().ok_or(Errno::EINVAL)
}

/// The mode a write by an unprivileged caller leaves (Linux's
/// `file_remove_privs`): set-user-ID goes, set-group-ID too when the group
/// may execute. `None` when nothing changes.
fn killpriv(mode: u32) -> Option<u32> {
    let mut m = mode & 0o7777;
    m &= !libc::S_ISUID;
    if mode & libc::S_IXGRP != 0 {
        m &= !libc::S_ISGID;
    }
    (m != mode & 0o7777).then_some(m)
}

fn cred(req: &Request) -> Cred {
    Cred { uid: req.uid(), gid: req.gid() }
}

/// Linux open flags -> the MDT's.
fn mdt_flags(flags: i32) -> u32 {
    let f = flags as u32;
    let mut out = f & (open_flags::WRONLY | open_flags::RDWR);
    for bit in [open_flags::CREAT, open_flags::EXCL, open_flags::TRUNC] {
        out |= f & bit;
    }
    out
}

/// Offsets readdir gives "." (1) and ".." (2).
const DOT_OFFSETS: u64 = 2;

/// Linux `setxattr` flags -> the MDT's.
fn xattr_set_flags(flags: i32) -> u32 {
    let mut out = 0;
    if flags & libc::XATTR_CREATE != 0 {
        out |= xattr_flags::CREATE;
    }
    if flags & libc::XATTR_REPLACE != 0 {
        out |= xattr_flags::REPLACE;
    }
    out
}

/// Names as `listxattr` returns them: each followed by a NUL.
fn xattr_list(names: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for n in names {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
    }
    out
}

/// A getxattr/listxattr answer: the size when asked with 0, the bytes when
/// they fit, else ERANGE.
fn xattr_reply(v: &[u8], size: u32, reply: ReplyXattr) {
    let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
    if size == 0 {
        reply.size(len);
    } else if len <= size {
        reply.data(v);
    } else {
        reply.error(Errno::ERANGE);
    }
}

/// Whether `cred` may access an object with `a` for `mask` (`R_OK`,
/// `W_OK`, `X_OK`; `F_OK` is 0): owner, group, then other bits; root
/// passes except for execute with no execute bit at all.
fn may_access(a: &MdtAttr, cred: Cred, mask: i32) -> bool {
    let mask = (mask & 0o7) as u32;
    if cred.uid == 0 {
        return mask & 1 == 0 || a.mode & 0o111 != 0 || a.mode & S_IFMT == S_IFDIR;
    }
    let bits = if cred.uid == a.uid {
        (a.mode >> 6) & 7
    } else if cred.gid == a.gid {
        (a.mode >> 3) & 7
    } else {
        a.mode & 7
    };
    bits & mask == mask
}

impl Filesystem for SheenFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(max) = config.set_max_write(MAX_WRITE) {
            tracing::info!(max, "kernel caps max_write");
        }
        let _ = config.set_max_readahead(MAX_WRITE);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEntry) {
        // The kernel asks for attributes next (zero TTLs): the objects'
        // size is left to that getattr.
        let r = self.fid(parent).and_then(|p| self.run(self.fs.lookup_mdt(p, name(n)?)));
        match r {
            Ok(st) => self.entry(&st, reply),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let mut i = self.inodes.lock();
        if let Some(e) = i.fids.get_mut(&ino.0) {
            e.1 = e.1.saturating_sub(nlookup);
            if e.1 == 0 {
                i.fids.remove(&ino.0);
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let r = self.fid(ino).and_then(|f| {
            self.settle(f)?;
            self.run(self.fs.stat_fid(f))
        });
        match r {
            Ok(st) => reply.attr(&TTL, &file_attr(&st.attr, st.blocks)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = self.fid(ino).and_then(|fid| {
            self.settle(fid)?;
            if size.is_some() {
                self.drop_readahead(fid);
            }
            self.run(async {
                if let Some(s) = size {
                    self.fs.truncate_fid(fid, s).await?;
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
        let r = self.fid(parent).and_then(|p| self.run(self.fs.mkdir_at(cred(req), p, name(n)?, mode & !umask, None)));
        match r {
            Ok(st) => self.entry(&st, reply),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEmpty) {
        match self.fid(parent).and_then(|p| self.run(self.fs.unlink_at(p, name(n)?, false))) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEmpty) {
        match self.fid(parent).and_then(|p| self.run(self.fs.unlink_at(p, name(n)?, true))) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        n: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let noreplace = flags.bits() == libc::RENAME_NOREPLACE;
        if flags.bits() != 0 && !noreplace {
            // RENAME_EXCHANGE / WHITEOUT are not in the MDT's protocol.
            return reply.error(Errno::EINVAL);
        }
        let r = self.fid(parent).and_then(|sp| {
            let (dp, sn, dn) = (self.fid(newparent)?, name(n)?, name(newname)?);
            self.run(async {
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

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let r = self.fid(ino).and_then(|f| self.run(self.fs.open_fid(f, mdt_flags(flags.0))));
        match r {
            Ok(f) => reply.opened(self.keep(f), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn create(&self, req: &Request, parent: INodeNo, n: &OsStr, mode: u32, umask: u32, flags: i32, reply: ReplyCreate) {
        let fl = mdt_flags(flags) | open_flags::CREAT;
        let r =
            self.fid(parent).and_then(|p| self.run(self.fs.open_at(cred(req), p, name(n)?, fl, mode & !umask, None)));
        match r {
            Ok(f) => {
                let attr = file_attr(f.attr(), 0);
                {
                    let mut i = self.inodes.lock();
                    let e = i.fids.entry(attr.ino.0).or_insert((f.fid(), 0));
                    e.1 += 1;
                }
                let fh = self.keep(f);
                reply.created(&TTL, &attr, Generation(0), fh, FopenFlags::FOPEN_DIRECT_IO);
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        tracing::trace!(fh = fh.0, offset, size, "read");
        let r = self.file(fh).and_then(|f| {
            self.settle(f.fid())?;
            let mut buf = vec![0u8; size.min(MAX_WRITE) as usize];
            let n = self.run(self.fs.read(&f, offset, &mut buf))?;
            buf.truncate(n);
            Ok(buf)
        });
        match r {
            Ok(b) => reply.data(&b),
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
        let append = flags.0 & libc::O_APPEND != 0;
        let r = self.file(fh).and_then(|f| {
            self.drop_readahead(f.fid());
            // The first write by an unprivileged user through an open of a
            // set-ID file drops the set-ID bits.
            if req.uid() != 0 && killpriv(f.attr().mode).is_some() && self.privs_checked.lock().insert(fh.0) {
                self.run(async {
                    let st = self.fs.stat_fid(f.fid()).await?;
                    if let Some(m) = killpriv(st.attr.mode) {
                        let a = SetAttr { mode: m, ..SetAttr::default() };
                        self.fs.setattr(f.fid(), attr_valid::MODE, a).await?;
                    }
                    Ok(())
                })?;
            }
            if append {
                // The end is where every open's writes so far have landed.
                self.settle(f.fid())?;
            }
            self.run(async {
                // O_APPEND writes at the file's end as the OSTs know it
                // (another client may have extended it), not the kernel's.
                let off = if append { self.fs.size(&f).await? } else { offset };
                self.fs.write_behind(&f, off, data).await
            })
        });
        match r {
            Ok(n) => reply.written(u32::try_from(n).unwrap_or(u32::MAX)),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        // close(2): the writes behind reach the OSTs before it returns
        // (close-to-open), and their failure is its error.
        match self.file(fh).and_then(|f| self.run(self.fs.flush(&f))) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let f = self.files.lock().remove(&fh.0);
        self.privs_checked.lock().remove(&fh.0);
        match f.map(|f| self.run(self.fs.close_ref(&f))) {
            Some(Err(e)) => reply.error(e),
            _ => reply.ok(),
        }
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.file(fh).and_then(|f| self.run(self.fs.fsync(&f))) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        // Offsets: 1 after ".", 2 after ".."; an entry's is its MDT
        // readdir cookie + 3, so a listing resumes at cookie + 1 (cookies
        // are stable while entries come and go).
        let r = self.fid(ino).and_then(|d| {
            let cookie = offset.saturating_sub(DOT_OFFSETS);
            Ok((self.run(self.fs.readdir_page(d, cookie))?, cookie))
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

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.run(self.fs.mdc().sync()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fid(ino).and_then(|f| self.run(self.fs.readlink_fid(f))) {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let r = self.fid(parent).and_then(|p| {
            let t = target.to_str().ok_or(Errno::EINVAL)?;
            self.run(self.fs.symlink_at(cred(req), p, name(link_name)?, t))
        });
        match r {
            Ok(st) => self.entry(&st, reply),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, n: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let r = self.fid(parent).and_then(|p| {
            let mode = (mode & S_IFMT) | (mode & 0o7777 & !umask);
            if mode & S_IFMT == S_IFDIR || mode & S_IFMT == S_IFLNK {
                return Err(Errno::EINVAL);
            }
            let st = self.run(self.fs.create_node_at(cred(req), p, name(n)?, mode, u64::from(rdev), ""))?;
            // A regular file's size comes from its (new, empty) objects.
            if st.is_file() { self.run(self.fs.stat_fid(st.fid())) } else { Ok(st) }
        });
        match r {
            Ok(st) => self.entry(&st, reply),
            Err(e) => reply.error(e),
        }
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let r = self.fid(ino).and_then(|f| {
            let p = self.fid(newparent)?;
            self.run(self.fs.link_at(f, p, name(newname)?))
        });
        match r {
            Ok(st) => self.entry(&st, reply),
            Err(e) => reply.error(e),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        n: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        if position != 0 {
            // Only macOS resource forks use a position.
            return reply.error(Errno::EINVAL);
        }
        let fl = xattr_set_flags(flags);
        match self.fid(ino).and_then(|f| self.run(self.fs.setxattr(f, name(n)?, value, fl))) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, n: &OsStr, size: u32, reply: ReplyXattr) {
        match self.fid(ino).and_then(|f| self.run(self.fs.getxattr(f, name(n)?))) {
            Ok(v) => xattr_reply(&v, size, reply),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fid(ino).and_then(|f| self.run(self.fs.listxattr(f))) {
            Ok(names) => xattr_reply(&xattr_list(&names), size, reply),
            Err(e) => reply.error(e),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, n: &OsStr, reply: ReplyEmpty) {
        match self.fid(ino).and_then(|f| self.run(self.fs.removexattr(f, name(n)?))) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        // Called only without `default_permissions` (the kernel checks
        // otherwise); answers from fresh attributes.
        match self.fid(ino).and_then(|f| self.run(self.fs.stat_fid(f))) {
            Ok(st) if may_access(&st.attr, cred(req), mask.bits()) => reply.ok(),
            Ok(_) => reply.error(Errno::EACCES),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        if let Ok(f) = self.fid(ino) {
            if let Err(e) = self.settle(f) {
                return reply.error(e);
            }
            self.drop_readahead(f);
        }
        let r = if mode == 0 {
            self.fid(ino).and_then(|f| self.run(self.fs.fallocate_fid(f, offset, length, false)))
        } else if mode == punch {
            self.fid(ino).and_then(|f| self.run(self.fs.fallocate_fid(f, offset, length, true)))
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

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Space is the OSTs' (as `lfs df` sums it); inodes are the MDT's.
        let r = self.run(async {
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

/// Mounts `fs` on `dir` (as root: the pure-Rust mount, no helper) with
/// `threads` FUSE workers; returns the background session (unmount with
/// `umount_and_join`).
pub fn mount(
    fs: Arc<Sheen>,
    rt: tokio::runtime::Handle,
    dir: &Path,
    threads: usize,
) -> std::io::Result<fuser::BackgroundSession> {
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        fuser::MountOption::FSName(format!("sheen:{}", fs.fsname())),
        fuser::MountOption::Subtype("sheen".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoAtime,
    ];
    // Every user of the node uses the mount (`allow_other`; the kernel
    // checks modes: `default_permissions`).
    cfg.acl = fuser::SessionACL::All;
    cfg.n_threads = Some(threads.max(1));
    fuser::spawn_mount(SheenFs::new(fs, rt), dir, &cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fids_flatten_like_lustre_and_the_root_is_one() {
        assert_eq!(flatten(Fid::ROOT), 1);
        let a = flatten(Fid { seq: 0x2_0000_0400, oid: 1, ver: 0 });
        let b = flatten(Fid { seq: 0x2_0000_0400, oid: 2, ver: 0 });
        assert_eq!(b, a + 1);
        assert!(a > 1);
    }

    #[test]
    fn unprivileged_writes_drop_set_id_bits() {
        assert_eq!(killpriv(0o100644), None);
        assert_eq!(killpriv(0o104777), Some(0o777));
        assert_eq!(killpriv(0o102777), Some(0o777));
        assert_eq!(killpriv(0o102767 & !0o010), None, "set-group-ID without group execute is mandatory locking");
        assert_eq!(killpriv(0o106755), Some(0o755));
    }

    #[test]
    fn open_flags_map_to_the_mdt() {
        assert_eq!(mdt_flags(libc::O_RDWR | libc::O_CREAT | libc::O_NOFOLLOW), open_flags::RDWR | open_flags::CREAT);
        assert_eq!(mdt_flags(libc::O_WRONLY | libc::O_TRUNC), open_flags::WRONLY | open_flags::TRUNC);
    }
}
