//! Object files: one file per object in hashed subdirectories, and the
//! data path over them.
//!
//! Owns: object paths (`<dir>/O/<seq in hex>/<oid & 0xff as 2 hex
//! digits>/<oid in hex>`, Lustre's per-sequence `O/<seq>/d<N>/<oid>`),
//! files made ahead of their CREATE ([`Objects::premake`]), a bounded
//! cache of open files ([`ObjFile`]), vectored positional
//! I/O of niobuf runs straight from and into bulk pages (`pwritev` /
//! `preadv` through rustix, short transfers continued), optionally with
//! `O_DIRECT` ([`Objects::use_direct_io`]: the 4 KiB-aligned parts of runs
//! of at least the target's `direct_io_min` bytes go straight between the
//! aligned pool pages and the device, the rest — small I/O, unaligned
//! heads and tails — through the page cache; a file system that refuses
//! `O_DIRECT` turns it off for the target, logged once; an object's
//! `O_DIRECT` descriptor is opened at its first direct run, so a small
//! object costs one open), buffered reads that start the disk
//! reads ahead of them when the page cache misses, hole punching
//! (`fallocate(PUNCH_HOLE | KEEP_SIZE)`), truncation, `fdatasync`, and the
//! per-object write order ([`WriteOrder`]: one client's overlapping writes
//! in xid order, overlapping writes one at a time, disjoint ones at once).
//!
//! Must not: touch the index or decide transnos; never `unsafe`.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use lnet::MdBuffer;
use parking_lot::{Condvar, Mutex};
use ptlrpc::wire::OstId;
use rustix::fs::FallocateFlags;

use crate::error::OstError;

/// The objects' directory inside the target directory.
pub const OBJECTS_DIR: &str = "O";
/// Open object files kept at most.
pub const MAX_OPEN: usize = 4096;
/// Recent writes remembered per object for ordering one client's
/// overlapping writes.
pub const WRITE_ORDER_DEPTH: usize = 64;

/// One run of a request: `len` bytes at object offset `offset`, found at
/// `buf_pos` in the bulk buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Object offset.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
    /// Where the bytes are in the bulk buffer.
    pub buf_pos: u64,
}

/// The last writes applied to an object, so that an older write of a
/// client (lower xid) arriving after a newer, overlapping one does not
/// overwrite it: Lustre's "one client's overlapping writes land in
/// order". Bounded by [`WRITE_ORDER_DEPTH`] (a write older than that many
/// later ones is applied as it comes).
#[derive(Debug, Default)]
pub struct WriteOrder {
    recent: std::collections::VecDeque<(String, u64, u64, u64)>, // client uuid, xid, start, end
    /// Extents being written now, by write id.
    active: Vec<(u64, u64, u64)>,
    next_id: u64,
}

impl WriteOrder {
    fn overlaps_active(&self, runs: &[Run]) -> bool {
        runs.iter().any(|r| self.active.iter().any(|&(_, s, e)| r.offset < e && s < r.offset + r.len))
    }

    fn begin(&mut self, runs: &[Run]) -> u64 {
        self.next_id += 1;
        for r in runs {
            self.active.push((self.next_id, r.offset, r.offset + r.len));
        }
        self.next_id
    }

    fn end(&mut self, id: u64) {
        self.active.retain(|&(i, _, _)| i != id);
    }

    /// The parts of `runs` not covered by a newer write (higher xid) of the
    /// same client (by UUID: stable across reconnects and restarts, so
    /// replays in transno order trim alike), and records this write.
    pub fn admit(&mut self, client: &str, xid: u64, runs: &[Run]) -> Vec<Run> {
        let mut out: Vec<Run> = runs.to_vec();
        for (c, x, s, end) in &self.recent {
            if c != client || *x <= xid {
                continue;
            }
            out = out.into_iter().flat_map(|r| subtract(r, *s, *end)).collect();
        }
        for r in runs {
            if self.recent.len() == WRITE_ORDER_DEPTH {
                self.recent.pop_front();
            }
            self.recent.push_back((client.to_string(), xid, r.offset, r.offset + r.len));
        }
        out
    }
}

/// `r` minus `[s, e)`: zero, one or two runs.
fn subtract(r: Run, s: u64, e: u64) -> Vec<Run> {
    let (a, b) = (r.offset, r.offset + r.len);
    if e <= a || s >= b {
        return vec![r];
    }
    let mut v = Vec::new();
    if s > a {
        v.push(Run { offset: a, len: s - a, buf_pos: r.buf_pos });
    }
    if e < b {
        v.push(Run { offset: e, len: b - e, buf_pos: r.buf_pos + (e - a) });
    }
    v
}

/// Offsets, lengths and buffer positions of `O_DIRECT` I/O are multiples
/// of this (a multiple of every logical block size up to 4 KiB; pool pages
/// are aligned to it).
pub const DIRECT_ALIGN: usize = 4096;

/// Whether a target does its object I/O with `O_DIRECT`, shared by its
/// open objects: asked for in the config, and turned off (once, logged)
/// when the file system refuses it.
#[derive(Debug)]
struct DirectIo {
    on: AtomicBool,
    /// Runs shorter than this go through the page cache.
    min: AtomicUsize,
    root: PathBuf,
}

impl DirectIo {
    fn on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    fn min(&self) -> usize {
        self.min.load(Ordering::Relaxed)
    }

    /// The file system refused `O_DIRECT`: buffered I/O from now on.
    fn refused(&self, err: &std::io::Error) {
        if self.on.swap(false, Ordering::Relaxed) {
            tracing::warn!(dir = %self.root.display(), %err,
                "direct_io: the file system refuses O_DIRECT; falling back to buffered I/O");
        }
    }
}

fn refuses_direct(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error())
}

/// The longest prefix of `left` bytes at object offset `off` and buffer
/// position `pos` that `O_DIRECT` moves (0: none — unaligned, or fewer
/// than `min` bytes: small I/O stays in the page cache).
fn direct_len(buf: &MdBuffer, off: u64, pos: usize, left: usize, min: usize) -> usize {
    let aligned = off.is_multiple_of(DIRECT_ALIGN as u64) && pos.is_multiple_of(DIRECT_ALIGN);
    if !aligned || left < min || buf.pages().is_none() {
        return 0;
    }
    left - left % DIRECT_ALIGN
}

/// Writes and reads back one aligned block through `O_DIRECT` at `path`.
fn probe_direct(path: &Path) -> std::io::Result<()> {
    let flags = rustix::fs::OFlags::DIRECT.bits() as i32;
    let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).custom_flags(flags).open(path)?;
    let mut v = vec![0x5au8; 2 * DIRECT_ALIGN];
    let at = v.as_ptr().align_offset(DIRECT_ALIGN);
    let block = v.get_mut(at..at + DIRECT_ALIGN).ok_or_else(|| std::io::Error::from(ErrorKind::InvalidInput))?;
    rustix::io::pwrite(&f, block, 0)?;
    rustix::io::pread(&f, block, 0)?;
    Ok(())
}

/// An open object.
#[derive(Debug)]
pub struct ObjFile {
    /// The object id.
    pub oid: OstId,
    /// Its path.
    pub path: PathBuf,
    file: File,
    /// The same file opened with `O_DIRECT`, at its first direct run
    /// (`None` inside: the file system refused it). A small object never
    /// needs it: one open instead of two.
    direct: OnceLock<Option<File>>,
    direct_io: Arc<DirectIo>,
    /// Where the readahead of a cold read stream ends (0: no cold stream
    /// seen), see `read_cached`.
    ahead: AtomicU64,
    /// Recent and in-progress writes: one client's overlapping writes land
    /// in xid order; overlapping writes never run at once; disjoint ones do.
    order: Mutex<WriteOrder>,
    idle: Condvar,
}

/// Bytes a buffered read that finds nothing cached asks the kernel to
/// read ahead from its offset (see `ObjFile::read_cached`).
pub const READ_AHEAD: u64 = 16 << 20;

/// How long a write waits for an overlapping one to finish.
pub const OVERLAP_WAIT: Duration = Duration::from_secs(60);

impl ObjFile {
    /// Writes `runs` from `buf` as write `xid` of `client`: waits (bounded)
    /// for in-progress writes that overlap it, skips the parts a newer
    /// write of the same client already wrote, and runs alongside
    /// disjoint writes.
    pub fn write_ordered(&self, client: &str, xid: u64, runs: &[Run], buf: &MdBuffer) -> Result<(), OstError> {
        let deadline = Instant::now() + OVERLAP_WAIT;
        let (id, trimmed) = {
            let mut o = self.order.lock();
            while o.overlaps_active(runs) {
                if self.idle.wait_until(&mut o, deadline).timed_out() {
                    return Err(OstError::io(
                        "waiting for an overlapping write to",
                        &self.path,
                        ErrorKind::TimedOut.into(),
                    ));
                }
            }
            let trimmed = o.admit(client, xid, runs);
            (o.begin(runs), trimmed)
        };
        let r = self.write_runs(&trimmed, buf);
        self.order.lock().end(id);
        self.idle.notify_all();
        r
    }

    /// The `O_DIRECT` file (opened now if this is its first use) when the
    /// target still uses it.
    fn direct_file(&self) -> Result<Option<&File>, OstError> {
        if !self.direct_io.on() {
            return Ok(None);
        }
        if let Some(f) = self.direct.get() {
            return Ok(f.as_ref());
        }
        let flags = rustix::fs::OFlags::DIRECT.bits() as i32;
        let f = match OpenOptions::new().read(true).write(true).custom_flags(flags).open(&self.path) {
            Ok(f) => Some(f),
            Err(e) if refuses_direct(&e) => {
                self.direct_io.refused(&e);
                None
            }
            Err(e) => return Err(OstError::io("opening (O_DIRECT)", &self.path, e)),
        };
        Ok(self.direct.get_or_init(|| f).as_ref())
    }

    /// Whether object I/O goes around the page cache (`O_DIRECT`).
    pub fn is_direct(&self) -> bool {
        self.direct_file().ok().flatten().is_some()
    }

    /// The file a part of `left` bytes at `off` (buffer position `pos`)
    /// goes through, and how many bytes of it: its aligned head directly
    /// when it is long enough, else all of it buffered.
    fn file_for(&self, buf: &MdBuffer, off: u64, pos: usize, left: usize) -> Result<(&File, usize, bool), OstError> {
        let d = if self.direct_io.on() { direct_len(buf, off, pos, left, self.direct_io.min()) } else { 0 };
        Ok(match if d > 0 { self.direct_file()? } else { None } {
            Some(f) => (f, d, true),
            None => (&self.file, left, false),
        })
    }

    /// Writes the runs from `buf`.
    pub fn write_runs(&self, runs: &[Run], buf: &MdBuffer) -> Result<(), OstError> {
        for r in runs {
            let mut off = r.offset;
            let mut pos = r.buf_pos as usize;
            let mut left = r.len as usize;
            while left > 0 {
                let (file, want, direct) = self.file_for(buf, off, pos, left)?;
                let slices = buf.io_slices(pos, want);
                let n = match rustix::io::pwritev(file, &slices, off) {
                    Ok(n) => n,
                    Err(e) if direct && refuses_direct(&e.into()) => {
                        self.direct_io.refused(&e.into());
                        continue;
                    }
                    Err(e) => return Err(OstError::io("writing", &self.path, e.into())),
                };
                if n == 0 {
                    return Err(OstError::io("writing", &self.path, std::io::ErrorKind::WriteZero.into()));
                }
                off += n as u64;
                pos += n;
                left -= n;
            }
        }
        Ok(())
    }

    /// Reads the runs into `buf`; bytes past the end of the object (and
    /// holes) read as zeros.
    pub fn read_runs(&self, runs: &[Run], buf: &mut MdBuffer) -> Result<(), OstError> {
        for r in runs {
            let mut off = r.offset;
            let mut pos = r.buf_pos as usize;
            let mut left = r.len as usize;
            while left > 0 {
                let (file, want, direct) = self.file_for(buf, off, pos, left)?;
                let mut slices = buf.io_slices_mut(pos, want);
                let read = if direct {
                    rustix::io::preadv(file, &mut slices, off)
                } else {
                    self.read_cached(&mut slices, off)
                };
                let n = match read {
                    Ok(n) => n,
                    Err(e) if direct && refuses_direct(&e.into()) => {
                        self.direct_io.refused(&e.into());
                        continue;
                    }
                    Err(e) => return Err(OstError::io("reading", &self.path, e.into())),
                };
                if n == 0 {
                    // End of object: the rest of the run is zeros.
                    let zeros = vec![0u8; left];
                    buf.write_at(pos, &zeros);
                    break;
                }
                off += n as u64;
                pos += n;
                left -= n;
            }
        }
        Ok(())
    }

    /// A buffered read at `off`: what the page cache holds, without
    /// waiting (`RWF_NOWAIT`); when it holds nothing there, the disk reads
    /// of `[off, off + READ_AHEAD)` are started at once (`WILLNEED`: BRWs of
    /// one stream arrive several at a time and out of order, which the
    /// kernel's own readahead takes for random reads) and then the read
    /// waits for its part.
    fn read_cached(&self, slices: &mut [std::io::IoSliceMut<'_>], off: u64) -> rustix::io::Result<usize> {
        match rustix::io::preadv2(&self.file, slices, off, rustix::io::ReadWriteFlags::NOWAIT) {
            Err(e) if e == rustix::io::Errno::AGAIN => {
                // A cold stream: read ahead from here, and keep ahead of
                // the reads that follow (below).
                self.will_need(off, READ_AHEAD);
                self.ahead.store(off + READ_AHEAD, Ordering::Relaxed);
                rustix::io::preadv(&self.file, slices, off)
            }
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::INVAL => {
                rustix::io::preadv(&self.file, slices, off)
            }
            Ok(n) => {
                // Within half a window of where a cold stream's readahead
                // ends: ask for the next half window now, before a read
                // misses and waits for the disk.
                let until = self.ahead.load(Ordering::Relaxed);
                let half = READ_AHEAD / 2;
                if until != 0
                    && off + n as u64 + half >= until
                    && self.ahead.compare_exchange(until, until + half, Ordering::Relaxed, Ordering::Relaxed).is_ok()
                {
                    self.will_need(until, half);
                }
                Ok(n)
            }
            r => r,
        }
    }

    /// Starts the disk reads of `[off, off + len)` (`WILLNEED`).
    fn will_need(&self, off: u64, len: u64) {
        if let Err(e) =
            rustix::fs::fadvise(&self.file, off, std::num::NonZeroU64::new(len), rustix::fs::Advice::WillNeed)
        {
            tracing::debug!(oid = %self.oid, err = %e, "fadvise(WILLNEED)");
        }
    }

    /// Deallocates `[start, start + len)`; the size does not change.
    pub fn punch_hole(&self, start: u64, len: u64) -> Result<(), OstError> {
        if len == 0 {
            return Ok(());
        }
        rustix::fs::fallocate(&self.file, FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE, start, len)
            .map_err(|e| OstError::io("punching", &self.path, e.into()))
    }

    /// Sets the size (truncate or extend with a hole).
    pub fn set_len(&self, size: u64) -> Result<(), OstError> {
        self.file.set_len(size).map_err(|e| OstError::io("truncating", &self.path, e))
    }

    /// The file's length (may pass the recorded size: bytes of writes that
    /// never committed before a crash, or of a write that failed).
    pub fn file_len(&self) -> Result<u64, OstError> {
        let m = self.file.metadata().map_err(|e| OstError::io("stat", &self.path, e))?;
        Ok(m.len())
    }

    /// The bytes allocated once `runs` are written: allocated now, plus
    /// the file-system blocks the runs cover that hold no data now (holes,
    /// and everything past the end), found with `SEEK_DATA`/`SEEK_HOLE`
    /// (dirty pages not yet written back count as data).
    ///
    /// `recorded`: the object's recorded size. A file longer than that
    /// holds an uncommitted tail from before a crash, which a write ending
    /// past the recorded size cuts first
    /// ([`crate::target::Ost::write_object`]): its blocks are not counted
    /// and its place is a hole.
    pub fn allocated_after(&self, runs: &[Run], recorded: u64) -> Result<u64, OstError> {
        let m = self.file.metadata().map_err(|e| OstError::io("stat", &self.path, e))?;
        let bs = m.blksize().max(512);
        let (mut now, size) = (m.blocks() * 512, m.len());
        let end = runs.iter().map(|r| r.offset + r.len).max().unwrap_or(0);
        let (now, size) = if size > recorded && end > recorded {
            let from = recorded.div_ceil(bs) * bs;
            let to = size.div_ceil(bs) * bs;
            let tail = to.saturating_sub(from).saturating_sub(self.hole_bytes(from, to, size, bs)?);
            now = now.saturating_sub(tail);
            (now, recorded)
        } else {
            (now, size)
        };
        let mut ranges: Vec<(u64, u64)> = runs
            .iter()
            .filter(|r| r.len > 0)
            .map(|r| (r.offset / bs * bs, (r.offset + r.len).div_ceil(bs) * bs))
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (s, e) in ranges {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        let mut new = 0u64;
        for (s, e) in merged {
            new += self.hole_bytes(s, e, size, bs)?;
        }
        Ok(now + new)
    }

    /// Bytes of `[from, to)` (block-aligned) in holes or past the block
    /// holding the file's last byte (`size`), in whole blocks of `bs`.
    fn hole_bytes(&self, from: u64, to: u64, size: u64, bs: u64) -> Result<u64, OstError> {
        let seek = |w| rustix::fs::seek(&self.file, w).map_err(|e| OstError::io("seek", &self.path, e.into()));
        let end = size.div_ceil(bs) * bs;
        let mut pos = from;
        let mut holes = 0;
        while pos < to {
            if pos >= end {
                return Ok(holes + (to - pos));
            }
            let data = match rustix::fs::seek(&self.file, rustix::fs::SeekFrom::Data(pos)) {
                Ok(d) => d,
                // No data at or after `pos`.
                Err(rustix::io::Errno::NXIO) => return Ok(holes + (to - pos)),
                Err(e) => return Err(OstError::io("seek", &self.path, e.into())),
            };
            // Data and holes start on block boundaries, but the end of the
            // file need not: its last block holds data.
            let data = data / bs * bs;
            if data >= to {
                return Ok(holes + (to - pos));
            }
            holes += data.saturating_sub(pos);
            pos = seek(rustix::fs::SeekFrom::Hole(data.max(pos)))?.div_ceil(bs) * bs;
        }
        Ok(holes)
    }

    /// Bytes allocated on disk.
    pub fn allocated(&self) -> Result<u64, OstError> {
        let m = self.file.metadata().map_err(|e| OstError::io("stat", &self.path, e))?;
        Ok(m.blocks() * 512)
    }

    /// `fdatasync`.
    pub fn sync_data(&self) -> Result<(), OstError> {
        rustix::fs::fdatasync(&self.file).map_err(|e| OstError::io("fdatasync", &self.path, e.into()))
    }
}

/// The objects of one target.
#[derive(Debug)]
pub struct Objects {
    root: PathBuf,
    open: Mutex<HashMap<OstId, Arc<ObjFile>>>,
    /// Files made ahead of their CREATE ([`Objects::premake`]), which
    /// [`Objects::create`] then finds made.
    premade: Mutex<HashSet<OstId>>,
    direct_io: Arc<DirectIo>,
    /// The objects' directory, open for `syncfs` ([`Objects::sync_fs`]).
    root_fd: OnceLock<File>,
}

impl Objects {
    /// The object files under `dir`.
    pub fn new(dir: &Path) -> Objects {
        let root = dir.join(OBJECTS_DIR);
        let direct_io =
            Arc::new(DirectIo { on: AtomicBool::new(false), min: AtomicUsize::new(DIRECT_ALIGN), root: root.clone() });
        // Open from the start (when formatted) for `syncfs`'s error report.
        let root_fd = OnceLock::new();
        if let Ok(d) = File::open(&root) {
            let _ = root_fd.set(d);
        }
        Objects { root, open: Mutex::new(HashMap::new()), premade: Mutex::new(HashSet::new()), direct_io, root_fd }
    }

    /// Object I/O from now on with `O_DIRECT` where runs are aligned (see
    /// [`DIRECT_ALIGN`]) and at least `min` bytes long, if a probe file in the objects' directory takes an
    /// aligned `O_DIRECT` write and read; else buffered, with a warning.
    /// Objects opened earlier keep buffered I/O. A file system that refuses
    /// `O_DIRECT` later (on an open or an I/O) turns it off then, with one
    /// warning. Returns whether it is on.
    pub fn use_direct_io(&self, min: usize) -> bool {
        self.direct_io.min.store(min.max(DIRECT_ALIGN), Ordering::Relaxed);
        self.direct_io.on.store(true, Ordering::Relaxed);
        let probe = self.root.join(".direct_io_probe");
        match probe_direct(&probe) {
            Ok(()) => tracing::info!(dir = %self.root.display(), min, "direct_io: object I/O with O_DIRECT"),
            Err(e) if refuses_direct(&e) => self.direct_io.refused(&e),
            Err(e) => {
                self.direct_io.on.store(false, Ordering::Relaxed);
                tracing::warn!(dir = %self.root.display(), err = %e,
                    "direct_io: cannot probe O_DIRECT; using buffered I/O");
            }
        }
        let _ = fs::remove_file(&probe);
        self.direct_io.on()
    }

    /// Whether object I/O uses `O_DIRECT` (asked for and not refused).
    pub fn direct_io(&self) -> bool {
        self.direct_io.on()
    }

    /// Creates the objects' directory (format).
    pub fn format(dir: &Path) -> Result<(), OstError> {
        let root = dir.join(OBJECTS_DIR);
        fs::create_dir(&root).map_err(|e| OstError::io("creating", &root, e))
    }

    /// The path of object `id`.
    pub fn path(&self, id: OstId) -> PathBuf {
        let oid = id.oid;
        self.root.join(format!("{:x}", id.seq)).join(format!("{:02x}", oid & 0xff)).join(format!("{oid:x}"))
    }

    /// Creates object `oid`'s file (empty; an existing one is kept, which
    /// makes a re-run precreate after a crash harmless). One made ahead by
    /// [`Objects::premake`] costs nothing here.
    pub fn create(&self, oid: OstId) -> Result<(), OstError> {
        if self.premade.lock().remove(&oid) {
            return Ok(());
        }
        self.make(oid)
    }

    /// Makes object `oid`'s file ahead of the CREATE that will name it,
    /// outside the target's lock (a precreate batch's file creations would
    /// otherwise stall every request of the target), and keeps it open for
    /// its first write. The file is empty and unrecorded until that CREATE
    /// runs: the state a crash between a precreate and its commit leaves,
    /// which a later CREATE of the same ids takes over.
    pub fn premake(&self, oid: OstId) -> Result<(), OstError> {
        self.make(oid)?;
        self.premade.lock().insert(oid);
        self.open(oid).map(drop)
    }

    fn make(&self, oid: OstId) -> Result<(), OstError> {
        let path = self.path(oid);
        if let Some(parent) = path.parent()
            && !parent.is_dir()
        {
            fs::create_dir_all(parent).map_err(|e| OstError::io("creating", parent, e))?;
        }
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| OstError::io("creating", &path, e))?;
        Ok(())
    }

    /// Object `oid`'s file if it is open in the cache (nothing touches
    /// the disk).
    pub fn cached(&self, oid: OstId) -> Option<Arc<ObjFile>> {
        self.open.lock().get(&oid).cloned()
    }

    /// The open file of `oid`, opened now if it is not in the cache.
    pub fn open(&self, oid: OstId) -> Result<Arc<ObjFile>, OstError> {
        if let Some(f) = self.open.lock().get(&oid) {
            return Ok(Arc::clone(f));
        }
        let path = self.path(oid);
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(OstError::NoObject(oid)),
            Err(e) => return Err(OstError::io("opening", &path, e)),
        };
        // Object I/O is mostly large and sequential (stripes): a larger
        // readahead window keeps concurrent BRW reads of a stream fed.
        if let Err(e) = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::Sequential) {
            tracing::debug!(%oid, err = %e, "fadvise(SEQUENTIAL)");
        }
        let obj = Arc::new(ObjFile {
            oid,
            path,
            file,
            direct: OnceLock::new(),
            direct_io: Arc::clone(&self.direct_io),
            ahead: AtomicU64::new(0),
            order: Mutex::new(WriteOrder::default()),
            idle: Condvar::new(),
        });
        let mut open = self.open.lock();
        if open.len() >= MAX_OPEN {
            // Drop an arbitrary entry; users hold their own Arc.
            if let Some(k) = open.keys().next().copied() {
                open.remove(&k);
            }
        }
        Ok(Arc::clone(open.entry(oid).or_insert(obj)))
    }

    /// Flushes the whole file system the objects live on (`syncfs`: its
    /// dirty data and one journal commit), for a commit with many objects
    /// to make durable: on ext4 each `fdatasync` of an object with new
    /// blocks is a journal commit of its own, and a commit of thousands of
    /// small objects one by one held writes up for most of a second.
    /// The directory stays open from the start: `syncfs` reports a
    /// writeback error that happened anywhere on the file system since
    /// the descriptor was opened (once per descriptor), so an error in an
    /// object's asynchronous writeback between two commits is not missed.
    pub fn sync_fs(&self) -> Result<(), OstError> {
        let dir = match self.root_fd.get() {
            Some(d) => d,
            None => {
                let d = File::open(&self.root).map_err(|e| OstError::io("opening", &self.root, e))?;
                self.root_fd.get_or_init(|| d)
            }
        };
        rustix::fs::syncfs(dir).map_err(|e| OstError::io("syncfs", &self.root, e.into()))
    }

    /// Removes object `oid`'s file.
    pub fn remove(&self, oid: OstId) -> Result<(), OstError> {
        self.premade.lock().remove(&oid);
        self.open.lock().remove(&oid);
        let path = self.path(oid);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(OstError::io("removing", &path, e)),
        }
    }

    /// The directory objects live under (for statvfs).
    pub fn root(&self) -> &Path {
        &self.root
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(offset: u64, len: u64, buf_pos: u64) -> Run {
        Run { offset, len, buf_pos }
    }

    fn pages(pool: &lnet::PagePool, data: &[u8]) -> MdBuffer {
        let mut b = MdBuffer::from_pages_len(pool.alloc_bytes(data.len()).unwrap(), data.len());
        b.write_at(0, data);
        b
    }

    fn bytes(b: &MdBuffer) -> Vec<u8> {
        let mut v = vec![0; b.len()];
        b.read_at(0, &mut v);
        v
    }

    /// A file made ahead is what its CREATE finds (made once, kept open
    /// for its first write); one removed in between is made again by the
    /// CREATE.
    #[test]
    fn premade_objects_are_taken_over_by_their_create() {
        let dir = tempfile::tempdir().unwrap();
        Objects::format(dir.path()).unwrap();
        let objects = Objects::new(dir.path());
        let (a, b) = (OstId::new(2, 1), OstId::new(2, 2));
        objects.premake(a).unwrap();
        objects.premake(b).unwrap();
        assert!(objects.path(a).is_file() && objects.open.lock().contains_key(&a));
        // Written to behind the premade record's back: the CREATE keeps it.
        std::fs::write(objects.path(a), b"kept").unwrap();
        objects.create(a).unwrap();
        assert_eq!(std::fs::read(objects.path(a)).unwrap(), b"kept");
        objects.remove(b).unwrap();
        assert!(objects.premade.lock().is_empty());
        objects.create(b).unwrap();
        assert!(objects.path(b).is_file(), "made again");
    }

    /// The allocation a write's reply states is what the object has once
    /// it is written: a new object, an append, an overwrite, a write far
    /// past the end, one into a hole, one over a partial last block, two
    /// overlapping runs in one write.
    #[test]
    fn allocated_after_a_write_is_predicted() {
        let dir = tempfile::tempdir().unwrap();
        Objects::format(dir.path()).unwrap();
        let objects = Objects::new(dir.path());
        objects.create(OstId::new(1, 9)).unwrap();
        let obj = objects.open(OstId::new(1, 9)).unwrap();
        let pool = lnet::PagePool::new(0, 64, 256);
        let cases: [&[(u64, u64)]; 8] = [
            &[(0, 4096)],
            &[(4096, 100)],
            &[(0, 8192)],
            &[(1 << 20, 5000)],
            &[(65536, 4096)],
            &[(1 << 20 | 5000, 3000)],
            &[(200_000, 9000), (204_000, 12_000)],
            &[(3 << 20, 1)],
        ];
        for runs in cases {
            let mut pos = 0;
            let rs: Vec<Run> = runs
                .iter()
                .map(|&(o, l)| {
                    let r = run(o, l, pos);
                    pos += l;
                    r
                })
                .collect();
            let predicted = obj.allocated_after(&rs, obj.file_len().unwrap()).unwrap();
            obj.write_runs(&rs, &pages(&pool, &vec![7u8; pos as usize])).unwrap();
            assert_eq!(predicted, obj.allocated().unwrap(), "after writing {runs:?}");
        }
        // An uncommitted tail (the record says 8 KiB, the file is longer):
        // a write within the recorded size leaves it, one past it cuts it
        // first (as `Ost::write_object` does).
        let rs = [run(1000, 100, 0)];
        let predicted = obj.allocated_after(&rs, 8192).unwrap();
        obj.write_runs(&rs, &pages(&pool, &[1u8; 100])).unwrap();
        assert_eq!(predicted, obj.allocated().unwrap(), "a write within the recorded size");
        let rs = [run(8000, 500, 0)];
        let predicted = obj.allocated_after(&rs, 8192).unwrap();
        obj.set_len(8192).unwrap();
        obj.write_runs(&rs, &pages(&pool, &[1u8; 500])).unwrap();
        assert_eq!(predicted, obj.allocated().unwrap(), "after cutting the tail");
    }

    /// Aligned and unaligned runs, with `O_DIRECT` on, read back what was
    /// written (aligned parts direct, the rest buffered), and past the end
    /// of the object zeros.
    #[test]
    fn direct_io_moves_aligned_and_unaligned_runs() {
        let dir = tempfile::tempdir().unwrap();
        Objects::format(dir.path()).unwrap();
        let objects = Objects::new(dir.path());
        let on = objects.use_direct_io(DIRECT_ALIGN);
        assert_eq!(on, objects.direct_io());
        objects.create(OstId::new(1, 7)).unwrap();
        let obj = objects.open(OstId::new(1, 7)).unwrap();
        assert_eq!(obj.is_direct(), on);
        let pool = lnet::PagePool::new(0, 64, 256);
        let data: Vec<u8> = (0..5 * DIRECT_ALIGN + 300).map(|i| (i * 13 % 251) as u8).collect();
        let runs = [
            run(0, 2 * DIRECT_ALIGN as u64, 0), // aligned
            run(3 * DIRECT_ALIGN as u64 + 10, DIRECT_ALIGN as u64, 2 * DIRECT_ALIGN as u64), // unaligned offset
            run(8 * DIRECT_ALIGN as u64, 2 * DIRECT_ALIGN as u64 + 300, 3 * DIRECT_ALIGN as u64), // aligned + tail
        ];
        obj.write_ordered("c1", 1, &runs, &pages(&pool, &data)).unwrap();
        let mut back = pages(&pool, &vec![0xee; data.len()]);
        obj.read_runs(&runs, &mut back).unwrap();
        assert!(bytes(&back) == data, "read back what was written");
        // Through the page cache, the same bytes.
        let plain = std::fs::read(objects.path(OstId::new(1, 7))).unwrap();
        assert_eq!(&plain[..2 * DIRECT_ALIGN], &data[..2 * DIRECT_ALIGN]);
        assert_eq!(plain.len(), 10 * DIRECT_ALIGN + 300);
        // Past the end: zeros.
        let mut tail = pages(&pool, &vec![0xee; 2 * DIRECT_ALIGN]);
        obj.read_runs(&[run(10 * DIRECT_ALIGN as u64, 2 * DIRECT_ALIGN as u64, 0)], &mut tail).unwrap();
        let t = bytes(&tail);
        assert_eq!(&t[..300], &data[data.len() - 300..]);
        assert!(t[300..].iter().all(|&b| b == 0));
    }

    /// With a threshold, small runs go through the page cache and large
    /// ones around it, on the same object: each sees the other's bytes.
    #[test]
    fn small_runs_buffered_and_large_runs_direct_agree() {
        let dir = tempfile::tempdir().unwrap();
        Objects::format(dir.path()).unwrap();
        let objects = Objects::new(dir.path());
        objects.use_direct_io(4 * DIRECT_ALIGN);
        objects.create(OstId::new(1, 9)).unwrap();
        let obj = objects.open(OstId::new(1, 9)).unwrap();
        let pool = lnet::PagePool::new(0, 64, 256);
        let big: Vec<u8> = (0..8 * DIRECT_ALIGN).map(|i| (i * 7 % 253) as u8).collect();
        obj.write_ordered("c1", 1, &[run(0, big.len() as u64, 0)], &pages(&pool, &big)).unwrap();
        // A small write (buffered) into the middle of what went direct.
        let small = vec![0xabu8; DIRECT_ALIGN];
        obj.write_ordered("c1", 2, &[run(2 * DIRECT_ALIGN as u64, DIRECT_ALIGN as u64, 0)], &pages(&pool, &small))
            .unwrap();
        let mut want = big.clone();
        want[2 * DIRECT_ALIGN..3 * DIRECT_ALIGN].copy_from_slice(&small);
        // A large read (direct) sees the small write; a small read (buffered)
        // sees the large write.
        let mut back = pages(&pool, &vec![0xee; big.len()]);
        obj.read_runs(&[run(0, big.len() as u64, 0)], &mut back).unwrap();
        assert!(bytes(&back) == want, "a direct read sees a buffered write");
        let mut one = pages(&pool, &vec![0xee; DIRECT_ALIGN]);
        obj.read_runs(&[run(5 * DIRECT_ALIGN as u64, DIRECT_ALIGN as u64, 0)], &mut one).unwrap();
        assert_eq!(bytes(&one), &want[5 * DIRECT_ALIGN..6 * DIRECT_ALIGN]);
        assert!(direct_len(&pages(&pool, &small), 0, 0, DIRECT_ALIGN, 4 * DIRECT_ALIGN) == 0);
    }

    #[test]
    fn an_older_overlapping_write_of_the_same_client_loses() {
        let mut o = WriteOrder::default();
        assert_eq!(o.admit("c1", 10, &[run(100, 100, 0)]), vec![run(100, 100, 0)]);
        // xid 9 arrives late: only the parts outside [100, 200) apply.
        assert_eq!(o.admit("c1", 9, &[run(50, 200, 0)]), vec![run(50, 50, 0), run(200, 50, 150)]);
        // Another client's older write is not trimmed.
        assert_eq!(o.admit("c2", 1, &[run(100, 10, 0)]), vec![run(100, 10, 0)]);
    }
}
