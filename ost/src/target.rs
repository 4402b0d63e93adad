//! One object storage target: format, open, and every operation, without
//! the network.
//!
//! Owns: [`Ost`] — the label check at open, the boot epoch, exports with
//! their grants and negotiated checksums, transnos (`epoch << 32 | n`,
//! used as object versions), the per-client records written in the same
//! index batch as each change, and the operations (connect, create and
//! precreate, destroy, getattr, setattr, punch, write in two halves around
//! the bulk transfer, read, sync, statfs, last id). `last_committed` is
//! advanced only by the commit thread (`commit`).
//!
//! This is the seam to ptlrpc's target framework: the framework's
//! `TargetStore`/`TargetService` are not driven over the network yet, so
//! the OST keeps its own transnos, client records and commit here, shaped
//! so that a driver-side binding can take them over.
//!
//! Must not: move bulk data (the handler does), or acknowledge a write
//! whose space was not admitted first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lnet::MdBuffer;
use parking_lot::{Condvar, Mutex};
use ptlrpc::wire::ost::{PUNCH_HOLE, PUNCH_TRUNCATE, attr_valid};
use ptlrpc::wire::{CKSUM_CRC32C, ConnectData, Niobuf, OstAttr, OstPunch, OstSetattr, OstStatfs, connect_flags};

use crate::error::OstError;
use crate::index::{ClientRec, Index, ObjRecord, Put, ServerRec};
use crate::label::Label;
use crate::metrics::{OpLabel, OstMetrics, TargetLabel};
use crate::objects::{ObjFile, Objects, Run};
use crate::space::{Admitted, Space};

/// Largest object the target stores.
pub const MAX_OBJECT_BYTES: u64 = 1 << 50;

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
    /// Object data with `O_DIRECT` (aligned runs around the page cache),
    /// falling back to buffered I/O when the file system refuses it.
    pub direct_io: bool,
}

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
            direct_io: false,
        }
    }
}

/// One connected client.
#[derive(Debug, Clone)]
pub struct Export {
    /// Its UUID.
    pub uuid: String,
    /// Bytes it may write without asking.
    pub grant: u64,
    /// Whether its BRWs are checksummed.
    pub cksum: bool,
    /// Its largest BRW.
    pub brw_size: u32,
}

#[derive(Debug)]
struct Txns {
    /// The last transno executed (at open: the last committed one).
    last_transno: u64,
    /// The next transno to give out.
    next_transno: u64,
    last_id: u64,
    dirty: HashMap<u64, Arc<ObjFile>>,
}

#[derive(Debug, Default)]
struct Exports {
    by_handle: HashMap<u64, Export>,
    by_uuid: HashMap<String, u64>,
    next: u64,
}

/// A write admitted and waiting for its data.
#[derive(Debug)]
pub struct WritePrep {
    handle: u64,
    obj: Arc<ObjFile>,
    runs: Vec<Run>,
    end: u64,
    admitted: Admitted,
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

/// A write's outcome.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    /// Its transno.
    pub transno: u64,
    /// The object's size after it.
    pub size: u64,
    /// The object's version after it.
    pub version: u64,
    /// The export's grant after it.
    pub grant: u64,
}

/// An open target.
#[derive(Debug)]
pub struct Ost {
    cfg: OstConfig,
    slot: u16,
    epoch: u32,
    index: Index,
    objects: Objects,
    space: Space,
    txns: Mutex<Txns>,
    exports: Mutex<Exports>,
    last_committed: AtomicU64,
    commit_lock: Mutex<CommitState>,
    commit_cv: Condvar,
    stopping: AtomicBool,
    metrics: Arc<OstMetrics>,
    label: TargetLabel,
}

#[derive(Debug, Default)]
struct CommitState {
    requested: bool,
    stop: bool,
}

fn now_ns() -> u64 {
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

    /// Opens a formatted target: the label must name this target, the
    /// index must open; a new boot epoch is made durable before anything
    /// else happens. `slot` is the target's place in its daemon (handles
    /// carry it).
    pub fn open(cfg: OstConfig, slot: u16, metrics: Arc<OstMetrics>) -> Result<Ost, OstError> {
        let label = Label::read(&cfg.dir)?;
        label.check(&cfg.dir, &cfg.name, cfg.index, cfg.fs_uuid.as_deref())?;
        let index = Index::open(&cfg.dir)?;
        let server = index.server()?;
        let last_id = index.last_id()?;
        // What the last commit promised, not what happened to reach the
        // index after it: clients resend everything above it.
        let committed = index.committed()?;
        let epoch = server.epoch.checked_add(1).ok_or_else(|| OstError::Invalid("boot epoch overflow".into()))?;
        index
            .stage(&[Put::Server(ServerRec { epoch, last_transno: server.last_transno }), Put::Committed(committed)])?;
        index.persist()?;
        let objects = Objects::new(&cfg.dir);
        if cfg.direct_io {
            // Logs whether O_DIRECT is on or refused by the file system.
            objects.use_direct_io();
        }
        let space = Space::new(&cfg.dir, cfg.reserve_bytes, cfg.grant_per_export)?;
        let next = server.last_transno.max(u64::from(epoch) << 32) + 1;
        let label_m = TargetLabel { component: "ost", target: cfg.name.clone() };
        tracing::info!(target_name = %cfg.name, epoch, last_transno = server.last_transno, committed, last_id,
            clients = index.clients().map(|c| c.len()).unwrap_or(0), "target opened");
        Ok(Ost {
            slot,
            epoch,
            index,
            objects,
            space,
            txns: Mutex::new(Txns { last_transno: committed, next_transno: next, last_id, dirty: HashMap::new() }),
            exports: Mutex::new(Exports::default()),
            last_committed: AtomicU64::new(committed),
            commit_lock: Mutex::new(CommitState::default()),
            commit_cv: Condvar::new(),
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

    /// The boot epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The last committed transno.
    pub fn last_committed(&self) -> u64 {
        self.last_committed.load(Ordering::Acquire)
    }

    /// The last transno given out.
    pub fn last_transno(&self) -> u64 {
        self.txns.lock().last_transno
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

    /// Stops taking requests (they answer ESHUTDOWN).
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    fn check_running(&self) -> Result<(), OstError> {
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

    fn export(&self, handle: u64) -> Result<Export, OstError> {
        self.exports.lock().by_handle.get(&handle).cloned().ok_or(OstError::NotConnected(handle))
    }

    /// Whether `handle` names one of this target's exports' slot.
    pub fn slot_of(handle: u64) -> u16 {
        (handle >> 48) as u16
    }

    // ---- connect ----

    /// CONNECT: one export per client UUID (a reconnect keeps its grant);
    /// answers the connect data the target honours.
    pub fn connect(&self, want: &ConnectData) -> Result<(u64, ConnectData), OstError> {
        self.check_running()?;
        if want.client_uuid.is_empty() || want.client_uuid.len() > 64 {
            return Err(OstError::Invalid("client UUID must be 1..=64 bytes".into()));
        }
        let cksum =
            self.cfg.checksums && want.flags & connect_flags::CKSUM != 0 && want.cksum_types & CKSUM_CRC32C != 0;
        let brw_size = if want.flags & connect_flags::BRW_SIZE != 0 && want.brw_size > 0 {
            want.brw_size.min(self.cfg.brw_size)
        } else {
            self.cfg.brw_size
        };
        let mut ex = self.exports.lock();
        let handle = match ex.by_uuid.get(&want.client_uuid).copied() {
            Some(h) => h,
            None => {
                let grant =
                    if want.flags & connect_flags::GRANT != 0 { self.space.connect_grant(want.grant)? } else { 0 };
                ex.next += 1;
                let h = (u64::from(self.slot) << 48) | (u64::from(self.epoch & 0xffff) << 32) | (ex.next & 0xffff_ffff);
                ex.by_uuid.insert(want.client_uuid.clone(), h);
                ex.by_handle.insert(h, Export { uuid: want.client_uuid.clone(), grant, cksum, brw_size });
                h
            }
        };
        let e = ex.by_handle.get_mut(&handle).ok_or(OstError::NotConnected(handle))?;
        e.cksum = cksum;
        e.brw_size = brw_size;
        let mut flags = want.flags
            & (connect_flags::GRANT
                | connect_flags::BRW_SIZE
                | connect_flags::VERSION
                | connect_flags::TRANSNO
                | connect_flags::MAXBYTES
                | connect_flags::VBR);
        if cksum {
            flags |= connect_flags::CKSUM;
        }
        let committed_xid = self
            .index
            .clients()?
            .into_iter()
            .find(|(u, _)| *u == want.client_uuid)
            .map_or(0, |(_, c)| if c.last_transno <= self.last_committed() { c.last_xid } else { 0 });
        let reply = ConnectData {
            flags,
            version: want.version,
            brw_size,
            grant: e.grant,
            cksum_types: if cksum { CKSUM_CRC32C } else { 0 },
            max_easize: 0,
            transno: self.last_committed(),
            max_bytes: MAX_OBJECT_BYTES,
            committed_xid,
            instance: self.epoch,
            client_uuid: want.client_uuid.clone(),
            target: self.cfg.name.clone(),
        };
        self.metrics.exports.get_or_create(&self.label).set(ex.by_handle.len() as i64);
        Ok((handle, reply))
    }

    /// DISCONNECT: the export goes, its grant comes back.
    pub fn disconnect(&self, handle: u64) -> Result<(), OstError> {
        let mut ex = self.exports.lock();
        let e = ex.by_handle.remove(&handle).ok_or(OstError::NotConnected(handle))?;
        ex.by_uuid.remove(&e.uuid);
        self.space.release_grant(e.grant);
        self.metrics.exports.get_or_create(&self.label).set(ex.by_handle.len() as i64);
        Ok(())
    }

    // ---- transactions ----

    /// Runs one transaction: a transno, the change's records built with
    /// that version, the client's and server's records, staged atomically.
    fn transact(
        &self,
        uuid: &str,
        xid: u64,
        dirty: Option<&Arc<ObjFile>>,
        change: impl FnOnce(&Index, u64, &mut u64) -> Result<Vec<Put>, OstError>,
    ) -> Result<u64, OstError> {
        let mut t = self.txns.lock();
        let transno = t.next_transno;
        let mut last_id = t.last_id;
        let mut puts = change(&self.index, transno, &mut last_id)?;
        puts.push(Put::Client(uuid.to_string(), ClientRec { last_xid: xid, last_transno: transno }));
        puts.push(Put::Server(ServerRec { epoch: self.epoch, last_transno: transno }));
        self.index.stage(&puts)?;
        t.last_transno = transno;
        t.next_transno = transno + 1;
        t.last_id = last_id;
        if let Some(o) = dirty {
            t.dirty.insert(o.oid, Arc::clone(o));
        }
        Ok(transno)
    }

    fn record(&self, oid: u64) -> Result<ObjRecord, OstError> {
        self.index.object(oid)?.ok_or(OstError::NoObject(oid))
    }

    // ---- create / destroy ----

    /// CREATE / precreate: `count` objects after the last id. Files first,
    /// then one transaction for their records and the new last id.
    pub fn create(&self, handle: u64, xid: u64, count: u32) -> Result<(u64, u64, u64), OstError> {
        self.check_running()?;
        if count == 0 || count > ptlrpc::wire::ost::MAX_PRECREATE {
            return Err(OstError::Invalid(format!("create count {count}")));
        }
        let e = self.export(handle)?;
        // Serialise creators on the transaction lock for the id range; files
        // are created under it too (rare, small).
        let mut first = 0;
        let transno = self.transact(&e.uuid, xid, None, |_, version, last_id| {
            first = *last_id + 1;
            let mut puts = Vec::with_capacity(count as usize + 1);
            for oid in first..first + u64::from(count) {
                self.objects.create(oid)?;
                puts.push(Put::Obj(oid, ObjRecord { version, mtime_ns: now_ns(), ..ObjRecord::default() }));
            }
            *last_id = first + u64::from(count) - 1;
            puts.push(Put::LastId(*last_id));
            Ok(puts)
        })?;
        Ok((first, self.txns.lock().last_id, transno))
    }

    /// DESTROY: the record goes in a transaction, then the file.
    pub fn destroy(&self, handle: u64, xid: u64, oid: u64) -> Result<u64, OstError> {
        self.check_running()?;
        let e = self.export(handle)?;
        self.record(oid)?;
        let transno = self.transact(&e.uuid, xid, None, |_, _, _| Ok(vec![Put::DelObj(oid)]))?;
        self.txns.lock().dirty.remove(&oid);
        self.objects.remove(oid)?;
        Ok(transno)
    }

    // ---- attributes ----

    /// GETATTR.
    pub fn getattr(&self, handle: u64, oid: u64) -> Result<OstAttr, OstError> {
        self.check_running()?;
        self.export(handle)?;
        let r = self.record(oid)?;
        let allocated = self.objects.open(oid)?.allocated()?;
        Ok(OstAttr { oid, size: r.size, allocated, version: r.version, uid: r.uid, gid: r.gid, mtime_ns: r.mtime_ns })
    }

    /// SETATTR: size (truncate/extend), owner, mtime.
    pub fn setattr(&self, xid: u64, s: &OstSetattr) -> Result<(OstAttr, u64), OstError> {
        self.check_running()?;
        let e = self.export(s.handle)?;
        let obj = self.objects.open(s.oid)?;
        self.record(s.oid)?;
        if s.valid & attr_valid::SIZE != 0 {
            if s.size > MAX_OBJECT_BYTES {
                return Err(OstError::Invalid(format!("size {} too large", s.size)));
            }
            obj.set_len(s.size)?;
        }
        let transno = self.transact(&e.uuid, xid, Some(&obj), |idx, version, _| {
            let mut r = idx.object(s.oid)?.ok_or(OstError::NoObject(s.oid))?;
            if s.valid & attr_valid::SIZE != 0 {
                r.size = s.size;
            }
            if s.valid & attr_valid::OWNER != 0 {
                r.uid = s.uid;
                r.gid = s.gid;
            }
            r.mtime_ns = if s.valid & attr_valid::MTIME != 0 { s.mtime_ns } else { now_ns() };
            r.version = version;
            Ok(vec![Put::Obj(s.oid, r)])
        })?;
        Ok((self.getattr(s.handle, s.oid)?, transno))
    }

    /// PUNCH: truncate at `start`, or deallocate a hole.
    pub fn punch(&self, xid: u64, p: &OstPunch) -> Result<(OstAttr, u64), OstError> {
        self.check_running()?;
        let e = self.export(p.handle)?;
        let obj = self.objects.open(p.oid)?;
        let rec = self.record(p.oid)?;
        let new_size = match p.mode {
            PUNCH_TRUNCATE => {
                if p.start > MAX_OBJECT_BYTES {
                    return Err(OstError::Invalid("truncate past the largest object".into()));
                }
                obj.set_len(p.start)?;
                p.start
            }
            PUNCH_HOLE => {
                let end = p.start.checked_add(p.len).filter(|e| *e <= MAX_OBJECT_BYTES);
                if end.is_none() {
                    return Err(OstError::Invalid("hole past the largest object".into()));
                }
                obj.punch_hole(p.start, p.len)?;
                rec.size
            }
            m => return Err(OstError::Invalid(format!("punch mode {m}"))),
        };
        let transno = self.transact(&e.uuid, xid, Some(&obj), |idx, version, _| {
            let mut r = idx.object(p.oid)?.ok_or(OstError::NoObject(p.oid))?;
            r.size = new_size;
            r.version = version;
            r.mtime_ns = now_ns();
            Ok(vec![Put::Obj(p.oid, r)])
        })?;
        Ok((self.getattr(p.handle, p.oid)?, transno))
    }

    // ---- data ----

    fn runs(&self, niobufs: &[Niobuf], bulk_len: u32, brw_size: u32) -> Result<(Vec<Run>, u64, u64), OstError> {
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
        if pos > u64::from(brw_size) {
            return Err(OstError::Invalid(format!("BRW of {pos} bytes exceeds {brw_size}")));
        }
        Ok((runs, pos, end))
    }

    /// First half of a write: checks the request and admits its space.
    /// ENOSPC here is answered before any data moves.
    pub fn prepare_write(
        &self,
        handle: u64,
        oid: u64,
        niobufs: &[Niobuf],
        bulk_len: u32,
    ) -> Result<WritePrep, OstError> {
        self.check_running()?;
        let e = self.export(handle)?;
        let (runs, len, end) = self.runs(niobufs, bulk_len, e.brw_size)?;
        self.record(oid)?;
        let obj = self.objects.open(oid)?;
        let mut ex = self.exports.lock();
        let exp = ex.by_handle.get_mut(&handle).ok_or(OstError::NotConnected(handle))?;
        let admitted = match self.space.admit(&mut exp.grant, len) {
            Ok(a) => a,
            Err(err) => {
                self.space.shrink(&mut exp.grant);
                self.metrics.enospc.get_or_create(&self.label).inc();
                return Err(err);
            }
        };
        Ok(WritePrep { handle, obj, runs, end, admitted })
    }

    /// Gives back an admitted write's space (its bulk failed).
    pub fn abort_write(&self, prep: WritePrep) {
        let mut ex = self.exports.lock();
        let mut spare = 0;
        let grant = ex.by_handle.get_mut(&prep.handle).map_or(&mut spare, |e| &mut e.grant);
        self.space.written(prep.admitted, grant);
    }

    /// Second half: writes the data (one client's overlapping writes in
    /// xid order) and records the change in a transaction.
    pub fn apply_write(&self, prep: WritePrep, xid: u64, data: &MdBuffer) -> Result<Written, OstError> {
        let WritePrep { handle, obj, runs, end, admitted } = prep;
        let res = obj.write_ordered(handle, xid, &runs, data);
        let grant = {
            let mut ex = self.exports.lock();
            let mut spare = 0;
            let g = ex.by_handle.get_mut(&handle).map_or(&mut spare, |e| &mut e.grant);
            self.space.written(admitted, g);
            *g
        };
        res?;
        let uuid = self.export(handle)?.uuid;
        let mut out = (0, 0);
        let transno = self.transact(&uuid, xid, Some(&obj), |idx, version, _| {
            let mut r = idx.object(obj.oid)?.ok_or(OstError::NoObject(obj.oid))?;
            r.size = r.size.max(end);
            r.version = version;
            r.mtime_ns = now_ns();
            out = (r.size, r.version);
            Ok(vec![Put::Obj(obj.oid, r)])
        })?;
        let len: u64 = runs.iter().map(|r| r.len).sum();
        self.metrics.write_bytes.get_or_create(&self.label).inc_by(len);
        self.metrics.brw_size.get_or_create(&self.op_label("write")).observe(len as f64);
        Ok(Written { transno, size: out.0, version: out.1, grant })
    }

    /// Whether `handle`'s BRWs are checksummed.
    pub fn export_cksum(&self, handle: u64) -> Result<bool, OstError> {
        Ok(self.export(handle)?.cksum)
    }

    /// First half of a read: checks the request.
    pub fn prepare_read(&self, handle: u64, oid: u64, niobufs: &[Niobuf], bulk_len: u32) -> Result<ReadPrep, OstError> {
        self.check_running()?;
        let e = self.export(handle)?;
        let (runs, len, _) = self.runs(niobufs, bulk_len, e.brw_size)?;
        let r = self.record(oid)?;
        let obj = self.objects.open(oid)?;
        Ok(ReadPrep { obj, runs, len, size: r.size })
    }

    /// Second half: fills `buf` (holes and bytes past the end are zeros).
    pub fn read(&self, prep: &ReadPrep, buf: &mut MdBuffer) -> Result<(), OstError> {
        prep.obj.read_runs(&prep.runs, buf)?;
        self.metrics.read_bytes.get_or_create(&self.label).inc_by(prep.len);
        self.metrics.brw_size.get_or_create(&self.op_label("read")).observe(prep.len as f64);
        Ok(())
    }

    // ---- sync, statfs, ids ----

    /// SYNC: commits now and waits (at most `bound`) until everything
    /// executed so far is committed.
    pub fn sync(&self, bound: Duration) -> Result<u64, OstError> {
        let want = self.last_transno();
        self.request_commit();
        let deadline = Instant::now() + bound;
        let mut g = self.commit_lock.lock();
        while self.last_committed() < want {
            if g.stop || self.commit_cv.wait_until(&mut g, deadline).timed_out() {
                break;
            }
        }
        drop(g);
        let lc = self.last_committed();
        if lc < want {
            return Err(OstError::io("sync", &self.cfg.dir, std::io::ErrorKind::TimedOut.into()));
        }
        Ok(lc)
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
            objects: self.index.objects_approx(),
            granted,
        })
    }

    /// The last object id.
    pub fn last_id(&self) -> u64 {
        self.txns.lock().last_id
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
        m.objects.get_or_create(&self.label).set(self.index.objects_approx() as i64);
        m.exports.get_or_create(&self.label).set(self.exports.lock().by_handle.len() as i64);
        m.last_committed.get_or_create(&self.label).set(self.last_committed() as i64);
    }

    // ---- commit ----

    /// Asks the commit thread to commit now.
    pub fn request_commit(&self) {
        let mut g = self.commit_lock.lock();
        g.requested = true;
        self.commit_cv.notify_all();
    }

    /// One commit: fdatasync every object written since the last one, then
    /// persist the index; advances `last_committed` to the last transno
    /// executed before it began. On failure nothing advances and the
    /// objects stay dirty.
    pub fn commit_once(&self) -> Result<u64, OstError> {
        let (upto, dirty) = {
            let mut t = self.txns.lock();
            (t.last_transno, std::mem::take(&mut t.dirty))
        };
        if upto <= self.last_committed() && dirty.is_empty() {
            return Ok(upto);
        }
        let synced = dirty
            .values()
            .try_for_each(|o| o.sync_data())
            .and_then(|()| self.index.stage(&[Put::Committed(upto)]))
            .and_then(|()| self.index.persist());
        if let Err(e) = synced {
            let mut t = self.txns.lock();
            for (k, v) in dirty {
                t.dirty.entry(k).or_insert(v);
            }
            return Err(e);
        }
        self.last_committed.fetch_max(upto, Ordering::AcqRel);
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
}
