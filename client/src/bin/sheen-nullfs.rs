//! `sheen-nullfs DIR`: a do-nothing FUSE file system — the ceiling a FUSE
//! mount can reach on this machine (what `sheen-bench` compares against).
//!
//! Directories and files that hold only a size: writes are accepted and
//! dropped, reads return zeros up to the size. Files are opened with
//! direct I/O and attributes have zero TTLs, as the Sheen mount does, so
//! the kernel sends the same requests. Prints `nullfs ready DIR` once
//! mounted; unmounts on SIGTERM or ^C. Must not: keep data.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use client::fuse::{file_attr, kind};
use fuser::{
    Errno, FileAttr, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner, OpenFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;
use ptlrpc::wire::mds::MdtAttr;

const TTL: Duration = Duration::ZERO;
const ROOT: u64 = 1;

/// A node: its parent, name, size and whether a directory.
struct Node {
    parent: u64,
    name: String,
    size: u64,
    dir: bool,
}

#[derive(Default)]
struct Files {
    by_name: HashMap<(u64, String), u64>,
    by_ino: HashMap<u64, Node>,
}

#[derive(Default)]
struct NullFs {
    files: Mutex<Files>,
    next: AtomicU64,
}

/// The `st_mode` of a node.
fn mode(dir: bool) -> u32 {
    if dir { libc::S_IFDIR | 0o755 } else { libc::S_IFREG | 0o644 }
}

/// Attributes as the Sheen mount builds them, owned by root, times now.
fn attr(ino: u64, size: u64, dir: bool) -> FileAttr {
    let now = client::fs::now();
    let a = MdtAttr {
        mode: mode(dir),
        nlink: if dir { 2 } else { 1 },
        size,
        atime: now,
        mtime: now,
        ctime: now,
        ..MdtAttr::default()
    };
    FileAttr { ino: INodeNo(ino), ..file_attr(&a, 0) }
}

impl NullFs {
    /// (size, is a directory) of `ino`.
    fn node(&self, ino: u64) -> Option<(u64, bool)> {
        if ino == ROOT {
            return Some((0, true));
        }
        self.files.lock().by_ino.get(&ino).map(|n| (n.size, n.dir))
    }

    /// Answers with `ino`'s attributes, or ENOENT.
    fn reply_attr(&self, ino: u64, reply: ReplyAttr) {
        match self.node(ino) {
            Some((s, d)) => reply.attr(&TTL, &attr(ino, s, d)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn add(&self, parent: u64, name: &OsStr, dir: bool) -> Result<u64, Errno> {
        let name = name.to_str().ok_or(Errno::EINVAL)?.to_string();
        let mut f = self.files.lock();
        if parent != ROOT && !f.by_ino.get(&parent).is_some_and(|n| n.dir) {
            return Err(Errno::ENOENT);
        }
        if f.by_name.contains_key(&(parent, name.clone())) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next.fetch_add(1, Ordering::Relaxed) + 2;
        f.by_name.insert((parent, name.clone()), ino);
        f.by_ino.insert(ino, Node { parent, name, size: 0, dir });
        Ok(ino)
    }

    fn remove(&self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let name = name.to_str().ok_or(Errno::EINVAL)?.to_string();
        let mut f = self.files.lock();
        let ino = *f.by_name.get(&(parent, name.clone())).ok_or(Errno::ENOENT)?;
        match (dir, f.by_ino.get(&ino).is_some_and(|n| n.dir)) {
            (true, false) => return Err(Errno::ENOTDIR),
            (false, true) => return Err(Errno::EISDIR),
            (true, true) if f.by_ino.values().any(|n| n.parent == ino) => return Err(Errno::ENOTEMPTY),
            _ => {}
        }
        f.by_name.remove(&(parent, name));
        f.by_ino.remove(&ino);
        Ok(())
    }
}

impl Filesystem for NullFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let f = self.files.lock();
        let found = name.to_str().and_then(|n| f.by_name.get(&(parent.0, n.to_string())));
        match found.and_then(|ino| f.by_ino.get(ino).map(|n| (*ino, n))) {
            Some((ino, n)) => reply.entry(&TTL, &attr(ino, n.size, n.dir), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.reply_attr(ino.0, reply);
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if let (Some(s), Some(n)) = (size, self.files.lock().by_ino.get_mut(&ino.0)) {
            n.size = s;
        }
        self.reply_attr(ino.0, reply);
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.add(parent.0, name, false) {
            Ok(ino) => {
                reply.created(&TTL, &attr(ino, 0, false), Generation(0), FileHandle(ino), FopenFlags::FOPEN_DIRECT_IO)
            }
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, _mode: u32, _umask: u32, reply: ReplyEntry) {
        match self.add(parent.0, name, true) {
            Ok(ino) => reply.entry(&TTL, &attr(ino, 0, true), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.remove(parent.0, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.node(ino.0) {
            Some(_) => reply.opened(FileHandle(ino.0), FopenFlags::FOPEN_DIRECT_IO),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let end = self.node(ino.0).map_or(0, |n| n.0);
        let n = end.saturating_sub(offset).min(u64::from(size)) as usize;
        reply.data(&vec![0u8; n]);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if let Some(n) = self.files.lock().by_ino.get_mut(&ino.0) {
            n.size = n.size.max(offset + data.len() as u64);
        }
        reply.written(u32::try_from(data.len()).unwrap_or(u32::MAX));
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.remove(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let f = self.files.lock();
        let mut all: Vec<(u64, &Node)> =
            f.by_ino.iter().filter(|(_, n)| n.parent == ino.0).map(|(&i, n)| (i, n)).collect();
        all.sort_unstable_by_key(|(i, _)| *i);
        for (i, (ino, n)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), i as u64 + 1, kind(mode(n.dir)), &n.name) {
                break;
            }
        }
        reply.ok();
    }
}

fn main() -> anyhow::Result<()> {
    let dir: PathBuf = std::env::args_os().nth(1).context("usage: sheen-nullfs DIR")?.into();
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        fuser::MountOption::FSName("nullfs".into()),
        fuser::MountOption::Subtype("nullfs".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoAtime,
    ];
    cfg.acl = fuser::SessionACL::All;
    cfg.n_threads = Some(4);
    let session = fuser::spawn_mount(NullFs::default(), &dir, &cfg)
        .with_context(|| format!("mounting on {} (needs root and /dev/fuse)", dir.display()))?;
    println!("nullfs ready {}", dir.display());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok::<_, anyhow::Error>(())
    })?;
    session.umount_and_join().with_context(|| format!("unmounting {}", dir.display()))
}
