//! How a workload client reaches the file system: through its FUSE mount
//! (system calls on the mount point, as an application does) or through
//! the library API (`--library`), with one error shape for both.
//!
//! Owns: [`Io`] (the operations the workload runs), [`Handle`] (an open
//! file either way), [`OpErr`] (errno, text and, when an eviction did it,
//! the [`Cause`]).
//!
//! The FUSE mount is this process's own (`client::fuse::mount_cached`, the code
//! `sheen mount` runs), over the same [`Sheen`] the library calls use, so
//! that what FUSE cannot express is asked of the very client the
//! application uses: the import states, and why an EIO came back — a
//! FUSE reply carries only an errno, so the cause of an EIO is read from
//! the client's own eviction counters (an open from before an MDT
//! eviction: [`Cause::LostOpen`], as `ClientError::LostOpen` says through
//! the library; an eviction during the call: [`Cause::Evicted`]).
//!
//! Must not: retry, or hide an error (every call's outcome goes back as
//! it was).

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;

use client::fs::SetAttr;
use client::{ClientError, File, Sheen};
use ptlrpc::wire::mds::{StripeSpec, attr_valid, open_flags};

use crate::oplog::Cause;

/// A failed call.
#[derive(Debug, Clone)]
pub struct OpErr {
    /// Positive errno.
    pub errno: i32,
    /// Its text.
    pub msg: String,
    /// Why, when an eviction did it.
    pub cause: Option<Cause>,
}

impl OpErr {
    fn lib(e: &ClientError) -> OpErr {
        let cause = if e.is_lost_open() {
            Some(Cause::LostOpen)
        } else if e.is_evicted_in_flight() {
            Some(Cause::Evicted)
        } else {
            None
        };
        OpErr { errno: e.errno(), msg: e.to_string(), cause }
    }

    /// Whether the open the call used was lost to an eviction.
    pub fn lost_open(&self) -> bool {
        self.cause == Some(Cause::LostOpen)
    }
}

/// An open file.
#[derive(Debug)]
pub enum Handle {
    /// Through the library.
    Lib(Box<File>),
    /// Through the mount: the file and the MDT evictions when it opened.
    Fuse(Arc<std::fs::File>, u64),
}

/// The file system as a workload client reaches it.
#[derive(Debug, Clone)]
pub struct Io {
    fs: Arc<Sheen>,
    /// The FUSE mount point (None: the library API).
    mnt: Option<PathBuf>,
}

/// Runs a system call off the runtime's threads (the FUSE mount's calls
/// block on this runtime).
async fn sys<T: Send + 'static>(f: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

impl Io {
    /// Calls through `mnt` (a FUSE mount of `fs`), or the library when None.
    pub fn new(fs: Arc<Sheen>, mnt: Option<PathBuf>) -> Io {
        Io { fs, mnt }
    }

    /// The library client.
    pub fn fs(&self) -> &Arc<Sheen> {
        &self.fs
    }

    /// Whether calls go through the FUSE mount.
    pub fn fuse(&self) -> bool {
        self.mnt.is_some()
    }

    fn at(&self, path: &str) -> PathBuf {
        self.mnt.as_ref().map_or_else(|| PathBuf::from(path), |m| m.join(path.trim_start_matches('/')))
    }

    fn mdt_evictions(&self) -> u64 {
        self.fs.mdc().import().import_stats().evictions
    }

    /// Evictions of this client by any target so far.
    fn evictions(&self) -> u64 {
        let osts: u64 = self.fs.oscs().values().filter_map(|o| o.import()).map(|i| i.import_stats().evictions).sum();
        self.mdt_evictions() + osts
    }

    /// The error of a system call on the mount, with its cause: `before`,
    /// the evictions when the call started; `opened`, the MDT evictions
    /// when the handle it used was opened.
    fn os_err(&self, e: &std::io::Error, before: u64, opened: Option<u64>) -> OpErr {
        let errno = e.raw_os_error().unwrap_or(libc::EIO);
        let cause = if errno != libc::EIO {
            None
        } else if opened.is_some_and(|o| self.mdt_evictions() > o) {
            Some(Cause::LostOpen)
        } else if self.evictions() > before {
            Some(Cause::Evicted)
        } else {
            None
        };
        OpErr { errno, msg: e.to_string(), cause }
    }

    async fn call<T: Send + 'static>(
        &self,
        opened: Option<u64>,
        f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, OpErr> {
        let before = self.evictions();
        sys(f).await.map_err(|e| self.os_err(&e, before, opened))
    }

    /// mkdir with `mode`.
    pub async fn mkdir(&self, path: &str, mode: u32) -> Result<(), OpErr> {
        if !self.fuse() {
            return self.fs.mkdir(path, mode).await.map(drop).map_err(|e| OpErr::lib(&e));
        }
        let p = self.at(path);
        self.call(None, move || DirBuilder::new().mode(mode).create(p)).await
    }

    /// rmdir.
    pub async fn rmdir(&self, path: &str) -> Result<(), OpErr> {
        if !self.fuse() {
            return self.fs.rmdir(path).await.map_err(|e| OpErr::lib(&e));
        }
        let p = self.at(path);
        self.call(None, move || std::fs::remove_dir(p)).await
    }

    /// Exclusive create, open for reading and writing. Through the mount
    /// the file takes its directory's default striping (`stripe` is for
    /// the library only: FUSE has no way to say it).
    pub async fn create(&self, path: &str, mode: u32, stripe: Option<StripeSpec>) -> Result<Handle, OpErr> {
        if !self.fuse() {
            return self
                .fs
                .create(path, mode, stripe)
                .await
                .map(|f| Handle::Lib(Box::new(f)))
                .map_err(|e| OpErr::lib(&e));
        }
        let p = self.at(path);
        let f = self
            .call(None, move || OpenOptions::new().read(true).write(true).create_new(true).mode(mode).open(p))
            .await?;
        Ok(Handle::Fuse(Arc::new(f), self.mdt_evictions()))
    }

    /// Opens an existing file for reading and writing.
    pub async fn open(&self, path: &str) -> Result<Handle, OpErr> {
        if !self.fuse() {
            return self
                .fs
                .open(path, open_flags::RDWR, 0, None)
                .await
                .map(|f| Handle::Lib(Box::new(f)))
                .map_err(|e| OpErr::lib(&e));
        }
        let p = self.at(path);
        let f = self.call(None, move || OpenOptions::new().read(true).write(true).open(p)).await?;
        Ok(Handle::Fuse(Arc::new(f), self.mdt_evictions()))
    }

    /// Writes all of `data` at `off`.
    pub async fn write(&self, h: &Handle, off: u64, data: Vec<u8>) -> Result<(), OpErr> {
        match h {
            Handle::Lib(f) => self.fs.write(f, off, &data).await.map(drop).map_err(|e| OpErr::lib(&e)),
            Handle::Fuse(f, opened) => {
                let f = Arc::clone(f);
                self.call(Some(*opened), move || f.write_all_at(&data, off)).await
            }
        }
    }

    /// Reads up to `len` bytes at `off` (fewer only at the end of the file).
    pub async fn read(&self, h: &Handle, off: u64, len: usize) -> Result<Vec<u8>, OpErr> {
        match h {
            Handle::Lib(f) => {
                let mut buf = vec![0u8; len];
                let n = self.fs.read(f, off, &mut buf).await.map_err(|e| OpErr::lib(&e))?;
                buf.truncate(n);
                Ok(buf)
            }
            Handle::Fuse(f, opened) => {
                let f = Arc::clone(f);
                self.call(Some(*opened), move || {
                    let mut buf = vec![0u8; len];
                    let mut n = 0;
                    while n < len {
                        match f.read_at(&mut buf[n..], off + n as u64)? {
                            0 => break,
                            k => n += k,
                        }
                    }
                    buf.truncate(n);
                    Ok(buf)
                })
                .await
            }
        }
    }

    /// fsync.
    pub async fn fsync(&self, h: &Handle) -> Result<(), OpErr> {
        match h {
            Handle::Lib(f) => self.fs.fsync(f).await.map_err(|e| OpErr::lib(&e)),
            Handle::Fuse(f, opened) => {
                let f = Arc::clone(f);
                self.call(Some(*opened), move || f.sync_all()).await
            }
        }
    }

    /// close, with its error (through the mount: close(2)'s, the flush of
    /// what was written behind).
    pub async fn close(&self, h: Handle) -> Result<(), OpErr> {
        match h {
            Handle::Lib(f) => self.fs.close(*f).await.map_err(|e| OpErr::lib(&e)),
            Handle::Fuse(f, opened) => {
                let Ok(f) = Arc::try_unwrap(f) else {
                    return Err(OpErr { errno: libc::EBUSY, msg: "handle still shared".into(), cause: None });
                };
                self.call(Some(opened), move || crate::sys::close(f)).await
            }
        }
    }

    /// rename.
    pub async fn rename(&self, from: &str, to: &str) -> Result<(), OpErr> {
        if !self.fuse() {
            return self.fs.rename(from, to).await.map_err(|e| OpErr::lib(&e));
        }
        let (a, b) = (self.at(from), self.at(to));
        self.call(None, move || std::fs::rename(a, b)).await
    }

    /// unlink.
    pub async fn unlink(&self, path: &str) -> Result<(), OpErr> {
        if !self.fuse() {
            return self.fs.unlink(path).await.map_err(|e| OpErr::lib(&e));
        }
        let p = self.at(path);
        self.call(None, move || std::fs::remove_file(p)).await
    }

    /// chmod.
    pub async fn chmod(&self, path: &str, mode: u32) -> Result<(), OpErr> {
        if !self.fuse() {
            let r = async {
                let fid = self.fs.resolve(path).await?;
                self.fs.setattr(fid, attr_valid::MODE, SetAttr { mode, ..SetAttr::default() }).await
            }
            .await;
            return r.map(drop).map_err(|e| OpErr::lib(&e));
        }
        let p = self.at(path);
        self.call(None, move || std::fs::set_permissions(p, Permissions::from_mode(mode))).await
    }
}
