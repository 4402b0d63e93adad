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
//! Must not: cache data or attributes; hold a lock across a network call.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;
use ptlrpc::wire::Fid;
use ptlrpc::wire::mds::{MdtAttr, attr_valid, open_flags};

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

fn time(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

fn secs(t: TimeOrNow) -> i64 {
    let t = match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    };
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
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

fn file_attr(a: &MdtAttr) -> FileAttr {
    FileAttr {
        ino: INodeNo(flatten(a.fid)),
        size: a.size,
        blocks: a.size.div_ceil(512),
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
        let attr = file_attr(&st.attr);
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

    fn run<T>(&self, f: impl std::future::Future<Output = Result<T, ClientError>>) -> Result<T, Errno> {
        self.rt.block_on(f).map_err(|e| {
            tracing::debug!(error = %e, "fuse request failed");
            errno(&e)
        })
    }
}

fn name(n: &OsStr) -> Result<&str, Errno> {
    n.to_str().ok_or(Errno::EINVAL)
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

impl Filesystem for SheenFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(max) = config.set_max_write(MAX_WRITE) {
            tracing::info!(max, "kernel caps max_write");
        }
        let _ = config.set_max_readahead(MAX_WRITE);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEntry) {
        let r = self.fid(parent).and_then(|p| self.run(self.fs.lookup(p, name(n)?)));
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
        match self.fid(ino).and_then(|f| self.run(self.fs.stat_fid(f))) {
            Ok(st) => reply.attr(&TTL, &file_attr(&st.attr)),
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
                    a.atime = secs(t);
                }
                if let Some(t) = mtime {
                    valid |= attr_valid::MTIME;
                    a.mtime = secs(t);
                }
                if valid != 0 {
                    self.fs.setattr(fid, valid, a).await?;
                }
                self.fs.stat_fid(fid).await
            })
        });
        match r {
            Ok(st) => reply.attr(&TTL, &file_attr(&st.attr)),
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
        if flags.bits() != 0 {
            // RENAME_NOREPLACE / EXCHANGE are not in the MDT's protocol.
            return reply.error(Errno::EINVAL);
        }
        let r = self.fid(parent).and_then(|sp| {
            let dp = self.fid(newparent)?;
            self.run(self.fs.rename_at(sp, name(n)?, dp, name(newname)?))
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
                let attr = file_attr(f.attr());
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
        let r = self.file(fh).and_then(|f| {
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
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.file(fh).and_then(|f| self.run(self.fs.write(&f, offset, data))) {
            Ok(n) => reply.written(u32::try_from(n).unwrap_or(u32::MAX)),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        // Writes go to the OSTs before they are answered: nothing to flush.
        reply.ok();
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
        // Offsets are the MDT's readdir cookies plus one (0 is the start).
        let r = self.fid(ino).and_then(|d| self.run(self.fs.readdir_page(d, offset)));
        match r {
            Ok((entries, _, _)) => {
                for e in entries {
                    let k = kind(u32::from(e.kind) << 12);
                    if reply.add(INodeNo(flatten(e.fid)), e.cookie.saturating_add(1), k, &e.name) {
                        break;
                    }
                }
                reply.ok();
            }
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
    fn open_flags_map_to_the_mdt() {
        assert_eq!(mdt_flags(libc::O_RDWR | libc::O_CREAT | libc::O_NOFOLLOW), open_flags::RDWR | open_flags::CREAT);
        assert_eq!(mdt_flags(libc::O_WRONLY | libc::O_TRUNC), open_flags::WRONLY | open_flags::TRUNC);
    }
}
