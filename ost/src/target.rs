//! One object storage target's storage: format, open, the data and index
//! work of every operation, grants, and commits — without the network and
//! without protocol.
//!
//! Owns: [`Ost`] — the label check at open, the object files, the index,
//! space and per-client grants, the changes the store applies for
//! ptlrpc's target framework (each one's index records staged with the
//! client's and server's records: [`Ost::stage`]), the reads the front
//! serves outside the target's lock, and commits: the commit thread
//! ([`Ost::commit_loop`]) fdatasyncs the objects written since the last
//! commit, then writes every record staged since in one index batch with
//! the committed mark and persists it, then advances [`Ost::committed`].
//! Records wait in memory (looked up before the index) until their
//! commit, so the index on disk is always exactly the last commit: after
//! a crash of any kind the target restarts from a committed state and
//! clients replay the rest. Transnos, client records, reconstruction and
//! recovery are the framework's (`store`, `service`, `front` bind them).
//!
//! Must not: move bulk data (the front does), acknowledge a write whose
//! space was not admitted first, or let `committed` name a transno whose
//! data is not durable.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lnet::MdBuffer;
use parking_lot::{Condvar, Mutex};
use ptlrpc::wire::ost::{MAX_PRECREATE, PUNCH_HOLE, PUNCH_TRUNCATE, attr_valid};
use ptlrpc::wire::{Niobuf, OstAttr, OstId, OstPunch, OstSetattr, OstStatfs};

use crate::error::OstError;
use crate::index::{Index, ObjRecord, Put, ServerRec};
use crate::label::Label;
use crate::metrics::{OpLabel, OstMetrics, TargetLabel};
use crate::objects::{ObjFile, Objects, Run};
use crate::space::{Admitted, Space};

/// Largest object the target stores.
pub const MAX_OBJECT_BYTES: u64 = 1 << 50;

/// Bytes written since the last commit after which a commit starts at
/// once (bounds what clients hold for replay and what a commit syncs).
pub const COMMIT_DIRTY_BYTES: u64 = 256 << 20;
/// A commit with at most this many written objects `fdatasync`s each;
/// with more, it flushes the target's file system once
/// ([`Objects::sync_fs`]).
pub const SYNC_EACH_MAX: usize = 16;

/// How one target is set up.
#[derive(Debug, Clone)]
pub struct OstConfig {
    /// The target's name (`fsname-OST0000`).
    pub name: String,
    /// Its index.
    pub index: u32,
    /// The file system UUID it belongs to (checked when set).
    pub fs_uuid: Option<String>,
    /// Its directory.
    pub dir: PathBuf,
    /// Bytes never promised to clients.
    pub reserve_bytes: u64,
    /// Grant each export is topped up to.
    pub grant_per_export: u64,
    /// Largest BRW the target accepts.
    pub brw_size: u32,
    /// Offer CRC32C checksums.
    pub checksums: bool,
    /// How often the commit thread commits.
    pub commit_interval: Duration,
    /// Object data with `O_DIRECT` (aligned runs of at least
    /// `direct_io_min` bytes around the page cache), falling back to
    /// buffered I/O when the file system refuses it.
    pub direct_io: bool,
    /// Runs shorter than this go through the page cache even with
    /// `direct_io` (small files stay cached).
    pub direct_io_min: usize,
}

/// [`OstConfig::direct_io_min`] by default: a run of 64 KiB or more is bulk
/// data (a stripe's share of a large write or read) and moves around the
/// page cache; smaller ones — small files, unaligned heads and tails —
/// are kept in it. Lustre's OSS draws the same line by I/O size
/// (`readcache_max_io_mb`, `writethrough_max_io_mb`).
pub const DIRECT_IO_MIN: usize = 64 << 10;

impl OstConfig {
    /// Defaults for `name` (index `index`) in `dir`.
    pub fn new(name: impl Into<String>, index: u32, dir: impl Into<PathBuf>) -> OstConfig {
        OstConfig {
            name: name.into(),
            index,
            fs_uuid: None,
            dir: dir.into(),
            reserve_bytes: 1 << 20,
            grant_per_export: 64 << 20,
            brw_size: 4 << 20,
            checksums: true,
            commit_interval: Duration::from_secs(1),
            direct_io: true,
            direct_io_min: DIRECT_IO_MIN,
        }
    }
}

/// What was staged since the last commit.
#[derive(Debug)]
struct Staged {
    /// The highest transno staged.
    transno: u64,
    /// Each sequence's last object id and its id allocator's version.
    last_id: HashMap<u64, (u64, u64)>,
    /// Objects written since the last commit.
    dirty: HashMap<OstId, Arc<ObjFile>>,
    /// Bytes written since the last commit.
    dirty_bytes: u64,
    /// Records staged since the last commit, in order.
    puts: Vec<Put>,
    /// Object records staged and not yet in the index (`None`: removed),
    /// with the staging sequence number that last set them.
    objects: HashMap<OstId, (Option<ObjRecord>, u64)>,
    /// Staging sequence.
    seq: u64,
    /// Objects created since the last commit.
    created: u64,
}

#[derive(Debug, Default)]
struct CommitState {
    requested: bool,
    stop: bool,
}

/// A read ready to fill pages.
#[derive(Debug)]
pub struct ReadPrep {
    obj: Arc<ObjFile>,
    runs: Vec<Run>,
    /// Bytes to send.
    pub len: u64,
    /// The object's size.
    pub size: u64,
}

/// A write's checked runs.
#[derive(Debug, Clone)]
pub struct WriteRuns {
    /// The runs, laid end to end in the bulk buffer.
    pub runs: Vec<Run>,
    /// Bytes.
    pub len: u64,
    /// The end of the furthest run.
    pub end: u64,
}

/// An open target.
#[derive(Debug)]
pub struct Ost {
    cfg: OstConfig,
    index: Index,
    objects: Objects,
    space: Space,
    staged: Mutex<Staged>,
    committed: AtomicU64,
    /// One commit at a time (the thread's, or a synchronous one).
    committing: Mutex<()>,
    commit_lock: Mutex<CommitState>,
    commit_cv: Condvar,
    grants: Mutex<HashMap<String, u64>>,
    stopping: AtomicBool,
    metrics: Arc<OstMetrics>,
    label: TargetLabel,
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

impl Ost {
    /// Formats `cfg.dir` for the target: the directory may be missing or
    /// empty; anything already in it is an error and nothing is touched.
    pub fn format(cfg: &OstConfig, fs_uuid: &str) -> Result<Label, OstError> {
        let dir = &cfg.dir;
        let ident = |why: String| OstError::Identity { path: dir.clone(), why };
        if dir.exists() {
            let mut entries = std::fs::read_dir(dir).map_err(|e| OstError::io("listing", dir, e))?;
            if entries.next().is_some() {
                return Err(match Label::read(dir) {
                    Ok(l) => ident(format!("already formatted for target {} (index {})", l.target, l.index)),
                    Err(_) => ident("not empty; refusing to format over existing files".into()),
                });
            }
        } else {
            std::fs::create_dir(dir).map_err(|e| OstError::io("creating", dir, e))?;
        }
        Objects::format(dir)?;
        drop(Index::create(dir)?);
        let label = Label {
            fs_uuid: fs_uuid.to_string(),
            target: cfg.name.clone(),
            index: cfg.index,
            format_version: crate::label::FORMAT_VERSION,
        };
        // The label goes last: a directory with a label is complete.
        label.write_new(dir)?;
        Ok(label)
    }

    /// Opens a formatted target: the label must name this target and the
    /// index must open. What the index holds counts as committed: after
    /// a process crash the page cache kept every object write staged
    /// before its records (data first, then the index batch).
    pub fn open(cfg: OstConfig, metrics: Arc<OstMetrics>) -> Result<Ost, OstError> {
        let label = Label::read(&cfg.dir)?;
        label.check(&cfg.dir, &cfg.name, cfg.index, cfg.fs_uuid.as_deref())?;
        let index = Index::open(&cfg.dir)?;
        let server = index.server()?;
        let last_id: HashMap<u64, (u64, u64)> = index.last_ids()?.into_iter().collect();
        let committed = index.committed()?.max(server.last_transno);
        let objects = Objects::new(&cfg.dir);
        if cfg.direct_io {
            // Logs whether O_DIRECT is on or refused by the file system.
            objects.use_direct_io(cfg.direct_io_min);
        }
        let space = Space::new(&cfg.dir, cfg.reserve_bytes, cfg.grant_per_export)?;
        let label_m = TargetLabel { component: "ost", target: cfg.name.clone() };
        tracing::info!(target_name = %cfg.name, epoch = server.epoch, last_transno = server.last_transno, committed,
            sequences = last_id.len(), "target opened");
        Ok(Ost {
            index,
            objects,
            space,
            staged: Mutex::new(Staged {
                transno: committed,
                last_id,
                dirty: HashMap::new(),
                dirty_bytes: 0,
                puts: Vec::new(),
                objects: HashMap::new(),
                seq: 0,
                created: 0,
            }),
            committed: AtomicU64::new(committed),
            committing: Mutex::new(()),
            commit_lock: Mutex::new(CommitState::default()),
            commit_cv: Condvar::new(),
            grants: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            metrics,
            label: label_m,
            cfg,
        })
    }

    /// The target's name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Its config.
    pub fn config(&self) -> &OstConfig {
        &self.cfg
    }

    /// The index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// Whether object I/O uses `O_DIRECT` (configured and not refused by
    /// the file system).
    pub fn direct_io(&self) -> bool {
        self.objects.direct_io()
    }

    /// The last committed (durable) transno.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// The highest transno staged.
    pub fn last_transno(&self) -> u64 {
        self.staged.lock().transno
    }

    /// Sequence `seq`'s last object id and its id allocator's version
    /// (`(0, 0)`: nothing created in it).
    pub fn last_id(&self, seq: u64) -> (u64, u64) {
        self.staged.lock().last_id.get(&seq).copied().unwrap_or((0, 0))
    }

    /// Stops taking requests (they answer ESHUTDOWN).
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// `Err(ShuttingDown)` once stopping.
    pub fn check_running(&self) -> Result<(), OstError> {
        if self.stopping.load(Ordering::Acquire) { Err(OstError::ShuttingDown) } else { Ok(()) }
    }

    fn op_label(&self, operation: &'static str) -> OpLabel {
        OpLabel { component: "ost", target: self.cfg.name.clone(), operation }
    }

    /// Counts one request of `operation` that took `took`.
    pub fn account(&self, operation: &'static str, took: Duration, failed: bool) {
        let l = self.op_label(operation);
        self.metrics.stats.get_or_create(&l).inc();
        if failed {
            self.metrics.errors.get_or_create(&l).inc();
        }
        self.metrics.latency.get_or_create(&l).observe(took.as_secs_f64());
    }

    /// An object's record (staged, else in the index), if it exists.
    pub fn record_opt(&self, oid: OstId) -> Result<Option<ObjRecord>, OstError> {
        if let Some((r, _)) = self.staged.lock().objects.get(&oid) {
            return Ok(*r);
        }
        self.index.object(oid)
    }

    /// An object's record.
    pub fn record(&self, oid: OstId) -> Result<ObjRecord, OstError> {
        self.record_opt(oid)?.ok_or(OstError::NoObject(oid))
    }

    // ---- grants ----

    /// A client connected: a new one gets its first grant (`want` capped
    /// by the grant target and free space); a returning one keeps its own.
    pub fn connect_grant(&self, uuid: &str, want: u64) -> u64 {
        let mut g = self.grants.lock();
        if let Some(&have) = g.get(uuid) {
            return have;
        }
        let give = self.space.connect_grant(want).unwrap_or(0);
        g.insert(uuid.to_string(), give);
        give
    }

    /// A client's export went: its grant comes back.
    pub fn release_grant(&self, uuid: &str) {
        if let Some(g) = self.grants.lock().remove(uuid) {
            self.space.release_grant(g);
        }
    }

    /// A client's current grant.
    pub fn grant_of(&self, uuid: &str) -> u64 {
        self.grants.lock().get(uuid).copied().unwrap_or(0)
    }

    /// Admits `len` bytes of `uuid`'s write before its data moves: its
    /// grant first, free space after, or ENOSPC (and the grant shrunk to
    /// what the target can still honour).
    pub fn admit_write(&self, uuid: &str, len: u64) -> Result<Admitted, OstError> {
        let mut g = self.grants.lock();
        let grant = g.entry(uuid.to_string()).or_insert(0);
        match self.space.admit(grant, len) {
            Ok(a) => Ok(a),
            Err(e) => {
                self.space.shrink(grant);
                self.metrics.enospc.get_or_create(&self.label).inc();
                Err(e)
            }
        }
    }

    /// The admitted write is done (written, refused or failed): its bytes
    /// stop being pending and the grant is topped up.
    pub fn written(&self, uuid: &str, adm: Admitted) {
        let mut g = self.grants.lock();
        let mut spare = 0;
        let grant = g.get_mut(uuid).unwrap_or(&mut spare);
        self.space.written(adm, grant);
    }

    // ---- checks ----

    /// A BRW's niobufs as runs: each non-empty, inside the largest object,
    /// together exactly `bulk_len` bytes and at most `brw_size`.
    pub fn runs(&self, niobufs: &[Niobuf], bulk_len: u32, brw_size: u32) -> Result<WriteRuns, OstError> {
        if niobufs.is_empty() || niobufs.len() > ptlrpc::wire::ost::MAX_NIOBUFS {
            return Err(OstError::Invalid(format!("{} niobufs", niobufs.len())));
        }
        let mut pos = 0u64;
        let mut end = 0u64;
        let mut runs = Vec::with_capacity(niobufs.len());
        for n in niobufs {
            let e = n.offset.checked_add(u64::from(n.len)).filter(|e| *e <= MAX_OBJECT_BYTES);
            let Some(e) = e else { return Err(OstError::Invalid("niobuf past the largest object".into())) };
            if n.len == 0 {
                return Err(OstError::Invalid("empty niobuf".into()));
            }
            runs.push(Run { offset: n.offset, len: u64::from(n.len), buf_pos: pos });
            pos += u64::from(n.len);
            end = end.max(e);
        }
        if pos != u64::from(bulk_len) {
            return Err(OstError::Invalid(format!("niobufs hold {pos} bytes, bulk {bulk_len}")));
        }
        let cap = if brw_size == 0 { self.cfg.brw_size } else { brw_size.min(self.cfg.brw_size) };
        if pos > u64::from(cap) {
            return Err(OstError::Invalid(format!("BRW of {pos} bytes exceeds {cap}")));
        }
        Ok(WriteRuns { runs, len: pos, end })
    }

    // ---- changes (applied by the store under the target's lock) ----

    /// Stages `puts` (the change's records plus the client's and server's)
    /// in one batch as transaction `transno`; `dirty` was written by it.
    pub fn stage(&self, transno: u64, puts: Vec<Put>, dirty: Option<(&Arc<ObjFile>, u64)>) {
        let mut s = self.staged.lock();
        s.transno = s.transno.max(transno);
        Self::stage_locked(&mut s, puts);
        let mut kick = false;
        if let Some((o, bytes)) = dirty {
            s.dirty.entry(o.oid).or_insert_with(|| Arc::clone(o));
            s.dirty_bytes += bytes;
            kick = s.dirty_bytes >= COMMIT_DIRTY_BYTES;
        }
        drop(s);
        if kick {
            self.request_commit();
        }
    }

    /// Stages records outside any transaction (client records at connect,
    /// disconnect and eviction; the server record at boot).
    pub fn stage_records(&self, puts: Vec<Put>) {
        Self::stage_locked(&mut self.staged.lock(), puts);
    }

    fn stage_locked(s: &mut Staged, puts: Vec<Put>) {
        s.seq += 1;
        let seq = s.seq;
        for p in &puts {
            match p {
                Put::LastId(sq, id, v) => {
                    let last = s.last_id.entry(*sq).or_insert((0, 0));
                    let grew = id.saturating_sub(last.0);
                    *last = (*id, *v);
                    s.created += grew;
                }
                Put::Obj(oid, r) => {
                    s.objects.insert(*oid, (Some(*r), seq));
                }
                Put::DelObj(oid) => {
                    s.objects.insert(*oid, (None, seq));
                }
                _ => {}
            }
        }
        s.puts.extend(puts);
    }

    /// Makes ahead, outside the target's lock, the files of a CREATE of
    /// `count` objects of `seq` (the ids after the sequence's last id, as
    /// the CREATE will name them unless another runs first): see
    /// [`Objects::premake`]. Best effort: what fails is left to the CREATE.
    pub fn premake(&self, seq: u64, count: u32) {
        if seq == 0 || count == 0 || count > MAX_PRECREATE {
            return;
        }
        let first = self.last_id(seq).0 + 1;
        for oid in first..first + u64::from(count) {
            if let Err(e) = self.objects.premake(OstId::new(seq, oid)) {
                tracing::warn!(target_name = %self.cfg.name, seq, oid, err = %e, "making an object ahead of its CREATE");
                return;
            }
        }
    }

    /// CREATE's files: `count` objects of sequence `seq` from `first`,
    /// with their records at `version`; returns the records to stage.
    pub fn create_objects(&self, seq: u64, first: u64, count: u32, version: u64) -> Result<Vec<Put>, OstError> {
        let mut puts = Vec::with_capacity(count as usize + 1);
        for oid in first..first + u64::from(count) {
            let id = OstId::new(seq, oid);
            self.objects.create(id)?;
            puts.push(Put::Obj(id, ObjRecord { version, mtime_ns: now_ns(), ..ObjRecord::default() }));
        }
        puts.push(Put::LastId(seq, first + u64::from(count) - 1, version));
        Ok(puts)
    }

    /// DESTROY's file, after its record's removal was staged.
    pub fn remove_object(&self, oid: OstId) {
        self.staged.lock().dirty.remove(&oid);
        if let Err(e) = self.objects.remove(oid) {
            tracing::warn!(target_name = %self.cfg.name, %oid, err = %e, "removing a destroyed object's file");
        }
    }

    /// SETATTR's data part (size); returns the new record at `version`.
    pub fn setattr_object(&self, s: &OstSetattr, version: u64) -> Result<(ObjRecord, Arc<ObjFile>), OstError> {
        let mut r = self.record(s.oid)?;
        let obj = self.objects.open(s.oid)?;
        if s.valid & attr_valid::SIZE != 0 {
            if s.size > MAX_OBJECT_BYTES {
                return Err(OstError::Invalid(format!("size {} too large", s.size)));
            }
            obj.set_len(s.size)?;
            r.size = s.size;
        }
        if s.valid & attr_valid::OWNER != 0 {
            r.uid = s.uid;
            r.gid = s.gid;
        }
        r.mtime_ns = if s.valid & attr_valid::MTIME != 0 { s.mtime_ns } else { now_ns() };
        r.version = version;
        Ok((r, obj))
    }

    /// PUNCH's data part; returns the new record at `version`.
    pub fn punch_object(&self, p: &OstPunch, version: u64) -> Result<(ObjRecord, Arc<ObjFile>), OstError> {
        let mut r = self.record(p.oid)?;
        let obj = self.objects.open(p.oid)?;
        match p.mode {
            PUNCH_TRUNCATE => {
                if p.start > MAX_OBJECT_BYTES {
                    return Err(OstError::Invalid("truncate past the largest object".into()));
                }
                obj.set_len(p.start)?;
                r.size = p.start;
            }
            PUNCH_HOLE => {
                if p.start.checked_add(p.len).is_none_or(|e| e > MAX_OBJECT_BYTES) {
                    return Err(OstError::Invalid("hole past the largest object".into()));
                }
                obj.punch_hole(p.start, p.len)?;
            }
            m => return Err(OstError::Invalid(format!("punch mode {m}"))),
        }
        r.version = version;
        r.mtime_ns = now_ns();
        Ok((r, obj))
    }

    /// A write's data: writes the runs from `data` as write `xid` of
    /// `client` (parts a newer overlapping write of the same client wrote
    /// already are skipped: with several writes in flight they may apply
    /// out of xid order); returns the new record at `version`.
    pub fn write_object(
        &self,
        oid: OstId,
        w: &WriteRuns,
        data: &MdBuffer,
        (version, mtime_ns): (u64, u64),
        (client, xid): (&str, u64),
    ) -> Result<(ObjRecord, Arc<ObjFile>), OstError> {
        let mut r = self.record(oid)?;
        let obj = self.objects.open(oid)?;
        if w.end > r.size && obj.file_len()? > r.size {
            // Bytes past the recorded size are no one's: writes that never
            // committed before a crash (their clients replay them), or a
            // write that failed. The size now grows over them, so they go
            // first and the gap reads as zeros.
            tracing::info!(target_name = %self.cfg.name, %oid, size = r.size, "dropping an uncommitted tail");
            obj.set_len(r.size)?;
        }
        obj.write_ordered(client, xid, &w.runs, data)?;
        r.size = r.size.max(w.end);
        r.version = version;
        r.mtime_ns = mtime_ns;
        self.metrics.write_bytes.get_or_create(&self.label).inc_by(w.len);
        self.metrics.brw_size.get_or_create(&self.op_label("write")).observe(w.len as f64);
        Ok((r, obj))
    }

    // ---- reads (served outside the target's lock) ----

    /// GETATTR.
    pub fn getattr(&self, oid: OstId) -> Result<OstAttr, OstError> {
        self.check_running()?;
        let r = self.record(oid)?;
        let allocated = self.objects.open(oid)?.allocated()?;
        Ok(OstAttr { oid, size: r.size, allocated, version: r.version, uid: r.uid, gid: r.gid, mtime_ns: r.mtime_ns })
    }

    /// The bytes object `oid` will have allocated once `w` is written:
    /// what it has now plus the file-system blocks `w` covers that are
    /// holes now ([`ObjFile::allocated_after`]).
    pub fn allocated_after(&self, oid: OstId, w: &WriteRuns) -> Result<u64, OstError> {
        let recorded = self.record(oid)?.size;
        self.objects.open(oid)?.allocated_after(&w.runs, recorded)
    }

    /// Whether object `oid`'s file is open in the cache.
    pub fn object_open(&self, oid: OstId) -> bool {
        self.objects.cached(oid).is_some()
    }

    /// [`Ost::getattr`] when the object's file is open in the cache (an
    /// `fstat`; the record from the index, which keeps recent records in
    /// memory); `None` when answering would open the file.
    pub fn getattr_cached(&self, oid: OstId) -> Result<Option<OstAttr>, OstError> {
        self.check_running()?;
        let Some(f) = self.objects.cached(oid) else { return Ok(None) };
        let r = self.record(oid)?;
        let allocated = f.allocated()?;
        Ok(Some(OstAttr {
            oid,
            size: r.size,
            allocated,
            version: r.version,
            uid: r.uid,
            gid: r.gid,
            mtime_ns: r.mtime_ns,
        }))
    }

    /// First half of a read: checks the request.
    pub fn prepare_read(
        &self,
        oid: OstId,
        niobufs: &[Niobuf],
        bulk_len: u32,
        brw_size: u32,
    ) -> Result<ReadPrep, OstError> {
        self.check_running()?;
        let w = self.runs(niobufs, bulk_len, brw_size)?;
        let r = self.record(oid)?;
        let obj = self.objects.open(oid)?;
        Ok(ReadPrep { obj, runs: w.runs, len: w.len, size: r.size })
    }

    /// Second half: fills `buf` (holes and bytes past the end are zeros).
    pub fn read(&self, prep: &ReadPrep, buf: &mut MdBuffer) -> Result<(), OstError> {
        prep.obj.read_runs(&prep.runs, buf)?;
        // Past the recorded size the object holds nothing, whatever the
        // file does (bytes of writes that never committed before a crash).
        for r in prep.runs.iter().filter(|r| r.offset + r.len > prep.size) {
            let from = r.offset.max(prep.size);
            let zeros = vec![0u8; (r.offset + r.len - from) as usize];
            buf.write_at((r.buf_pos + (from - r.offset)) as usize, &zeros);
        }
        self.metrics.read_bytes.get_or_create(&self.label).inc_by(prep.len);
        self.metrics.brw_size.get_or_create(&self.op_label("read")).observe(prep.len as f64);
        Ok(())
    }

    /// STATFS.
    pub fn statfs(&self) -> Result<OstStatfs, OstError> {
        let s = self.space.statfs()?;
        let granted = self.space.granted();
        let reserve_blocks = self.cfg.reserve_bytes.div_ceil(s.bsize);
        Ok(OstStatfs {
            bsize: u32::try_from(s.bsize).unwrap_or(u32::MAX),
            blocks: s.blocks,
            bfree: s.bfree,
            bavail: s.bavail.saturating_sub(reserve_blocks).saturating_sub(granted / s.bsize),
            files: s.files,
            ffree: s.ffree,
            objects: self.objects_approx(),
            granted,
        })
    }

    /// Objects (approximate: the index's count plus those created since
    /// the last commit).
    pub fn objects_approx(&self) -> u64 {
        self.index.objects_approx() + self.staged.lock().created
    }

    /// Refreshes the scrape-time gauges.
    pub fn refresh_gauges(&self) {
        let m = &self.metrics;
        if let Ok(s) = self.space.statfs() {
            let kb = |blocks: u64| (blocks.saturating_mul(s.bsize) / 1024) as i64;
            m.capacity_kb.get_or_create(&self.label).set(kb(s.blocks));
            m.free_kb.get_or_create(&self.label).set(kb(s.bfree));
            m.avail_kb.get_or_create(&self.label).set(kb(s.bavail));
        }
        m.grant.get_or_create(&self.label).set(self.space.granted() as i64);
        m.objects.get_or_create(&self.label).set(self.objects_approx() as i64);
        m.last_committed.get_or_create(&self.label).set(self.committed() as i64);
    }

    // ---- commit ----

    /// SYNC: commits now and waits (at most `bound`) until everything
    /// staged so far is committed. Returns the committed transno.
    pub fn sync(&self, bound: Duration) -> Result<u64, OstError> {
        let want = self.last_transno();
        self.request_commit();
        let deadline = Instant::now() + bound;
        let mut g = self.commit_lock.lock();
        while self.committed() < want {
            if g.stop || self.commit_cv.wait_until(&mut g, deadline).timed_out() {
                break;
            }
        }
        drop(g);
        let lc = self.committed();
        if lc < want {
            return Err(OstError::io("sync", &self.cfg.dir, std::io::ErrorKind::TimedOut.into()));
        }
        Ok(lc)
    }

    /// Asks the commit thread to commit now.
    pub fn request_commit(&self) {
        let mut g = self.commit_lock.lock();
        g.requested = true;
        self.commit_cv.notify_all();
    }

    /// One commit: fdatasync every object written since the last one (or,
    /// past [`SYNC_EACH_MAX`] of them, the file system at once), then
    /// persist the index; advances `committed` to the last transno staged
    /// before it began. On failure nothing advances and the objects stay
    /// dirty.
    pub fn commit_once(&self) -> Result<u64, OstError> {
        let _one = self.committing.lock();
        let (upto, dirty, mut puts, seq, created) = {
            let mut s = self.staged.lock();
            if s.transno <= self.committed() && s.dirty.is_empty() && s.puts.is_empty() {
                return Ok(s.transno);
            }
            s.dirty_bytes = 0;
            (s.transno, std::mem::take(&mut s.dirty), std::mem::take(&mut s.puts), s.seq, s.created)
        };
        // Data first, then the records that describe it.
        puts.push(Put::Committed(upto));
        let data = if dirty.len() > SYNC_EACH_MAX {
            self.objects.sync_fs()
        } else {
            dirty.values().try_for_each(|o| o.sync_data())
        };
        let synced = data.and_then(|()| self.index.stage(&puts)).and_then(|()| self.index.persist());
        let mut s = self.staged.lock();
        if let Err(e) = synced {
            puts.pop();
            puts.append(&mut s.puts);
            s.puts = puts;
            for (k, v) in dirty {
                s.dirty.entry(k).or_insert(v);
            }
            return Err(e);
        }
        // The index has them now: staged records not set again since go.
        s.objects.retain(|_, (_, at)| *at > seq);
        s.created -= created.min(s.created);
        drop(s);
        self.committed.fetch_max(upto, Ordering::AcqRel);
        self.metrics.commits.get_or_create(&self.label).inc();
        let _g = self.commit_lock.lock();
        self.commit_cv.notify_all();
        Ok(upto)
    }

    /// The commit thread's loop: commits every `commit_interval`, or at
    /// once when asked, until [`Ost::stop_commits`]; commits a last time on
    /// the way out.
    pub fn commit_loop(&self) {
        loop {
            let stop = {
                let mut g = self.commit_lock.lock();
                if !g.requested && !g.stop {
                    let _ = self.commit_cv.wait_for(&mut g, self.cfg.commit_interval);
                }
                g.requested = false;
                g.stop
            };
            if let Err(e) = self.commit_once() {
                tracing::error!(target_name = %self.cfg.name, err = %e, "commit failed");
            }
            if stop {
                break;
            }
        }
    }

    /// Makes the commit loop commit once more and return.
    pub fn stop_commits(&self) {
        let mut g = self.commit_lock.lock();
        g.stop = true;
        self.commit_cv.notify_all();
    }

    /// The server record as staged (for the store's `load`).
    pub fn server_record(&self) -> Result<ServerRec, OstError> {
        self.index.server()
    }
}
