//! The management service: target registry, the persistent ordered config
//! log of each file system, pools, and imperative-recovery notices.
//!
//! Every change is a numbered record appended to the file system's log in
//! one durable write (the log is small and rarely written, so each append
//! is persisted at once); the registry, pools and parameters are the fold
//! of the log, rebuilt at start. Followers (MDTs, clients) read the log
//! from an index on and wait (bounded) for new records ([`Mgs::read`]).
//! Lifecycle rules (`seeds/000`): a target is added active; deactivate
//! stops allocation; remove is refused unless the target is deactivated,
//! and drops it from every pool. A registration with a new boot instance
//! appends a `TargetRestart` record, which tells every follower at once
//! that the target restarted.
//!
//! Must not: block a caller longer than the wait it asked for (capped at
//! [`MAX_WAIT`]).

pub mod follow;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use ptlrpc::wire::mgs::{
    ConfigCmd, ConfigReadReply, ConfigRecord, MgsAdminReply, MgsAdminReq, PoolInfo, TargetInfo, TargetKind,
    TargetRegReply, TargetRegReq,
};

use crate::error::{MdtError, Result, errno};
use crate::store::{Batch, Kv, Table, decode, encode, scan};

/// The longest a config read waits for new records.
pub const MAX_WAIT: Duration = Duration::from_secs(5);
/// The longest pool name (Lustre's `LOV_MAXPOOLNAME`).
pub const POOL_NAME_MAX: usize = 15;
/// Records returned per read at most.
pub const MAX_READ: usize = 1024;

/// One file system's folded state.
#[derive(Debug, Default, Clone)]
pub struct FsState {
    /// The next record index.
    pub next: u64,
    /// Records, in order (the log is small: one per admin action).
    pub records: Vec<ConfigRecord>,
    /// Registered targets.
    pub targets: BTreeMap<(TargetKind, u32), TargetInfo>,
    /// Pools.
    pub pools: BTreeMap<String, BTreeSet<u32>>,
    /// Parameters.
    pub params: BTreeMap<String, String>,
}

impl FsState {
    fn fold(&mut self, r: &ConfigRecord) {
        self.next = self.next.max(r.index + 1);
        match &r.cmd {
            ConfigCmd::AddTarget { kind, index, nids, failover } => {
                self.targets.insert(
                    (*kind, *index),
                    TargetInfo {
                        kind: *kind,
                        index: *index,
                        nids: nids.clone(),
                        failover: failover.clone(),
                        active: true,
                        instance: 0,
                    },
                );
            }
            ConfigCmd::Activate { kind, index } | ConfigCmd::Deactivate { kind, index } => {
                if let Some(t) = self.targets.get_mut(&(*kind, *index)) {
                    t.active = matches!(r.cmd, ConfigCmd::Activate { .. });
                }
            }
            ConfigCmd::Remove { kind, index } => {
                self.targets.remove(&(*kind, *index));
                if *kind == TargetKind::Ost {
                    for p in self.pools.values_mut() {
                        p.remove(index);
                    }
                }
            }
            ConfigCmd::SetParam { key, value } => {
                self.params.insert(key.clone(), value.clone());
            }
            ConfigCmd::PoolNew { pool } => {
                self.pools.entry(pool.clone()).or_default();
            }
            ConfigCmd::PoolAdd { pool, ost } => {
                self.pools.entry(pool.clone()).or_default().insert(*ost);
            }
            ConfigCmd::PoolRemove { pool, ost } => {
                if let Some(p) = self.pools.get_mut(pool) {
                    p.remove(ost);
                }
            }
            ConfigCmd::PoolDestroy { pool } => {
                self.pools.remove(pool);
            }
            ConfigCmd::TargetRestart { kind, index, instance, nids } => {
                if let Some(t) = self.targets.get_mut(&(*kind, *index)) {
                    t.instance = *instance;
                    t.nids = nids.clone();
                }
            }
        }
        self.records.push(r.clone());
    }
}

fn log_key(fsname: &str, index: u64) -> Vec<u8> {
    let mut k = fsname.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// The MGS.
#[derive(Debug)]
pub struct Mgs {
    kv: Arc<dyn Kv>,
    fs: Mutex<BTreeMap<String, FsState>>,
    cv: Condvar,
}

fn check_fsname(fsname: &str) -> Result<()> {
    if fsname.is_empty() || fsname.len() > 8 || !fsname.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(MdtError::posix(errno::EINVAL, format!("bad fsname {fsname:?} (1-8 of [A-Za-z0-9_])")));
    }
    Ok(())
}

impl Mgs {
    /// Opens the MGS on `kv`, folding every stored log.
    pub fn open(kv: Arc<dyn Kv>) -> Result<Mgs> {
        let mut fs: BTreeMap<String, FsState> = BTreeMap::new();
        scan(&*kv, Table::MgsLog, &[], crate::store::KEY_END, |k, v| {
            let Some(nul) = k.iter().position(|&b| b == 0) else { return Ok(()) };
            let name = String::from_utf8_lossy(&k[..nul]).into_owned();
            let rec = decode::<ConfigRecord>(Table::MgsLog, v)?;
            fs.entry(name).or_insert_with(|| FsState { next: 1, ..FsState::default() }).fold(&rec);
            Ok(())
        })?;
        Ok(Mgs { kv, fs: Mutex::new(fs), cv: Condvar::new() })
    }

    /// A copy of `fsname`'s state.
    pub fn state(&self, fsname: &str) -> Option<FsState> {
        self.fs.lock().get(fsname).cloned()
    }

    fn append(&self, fs: &mut BTreeMap<String, FsState>, fsname: &str, cmd: ConfigCmd) -> Result<u64> {
        let st = fs.entry(fsname.to_string()).or_insert_with(|| FsState { next: 1, ..FsState::default() });
        let rec = ConfigRecord { index: st.next, cmd };
        let mut b = Batch::new();
        b.put(Table::MgsLog, log_key(fsname, rec.index), encode(&rec));
        self.kv.write(b)?;
        self.kv.persist()?;
        st.fold(&rec);
        self.cv.notify_all();
        Ok(rec.index)
    }

    /// A target starts: adds it (first time) or records its restart.
    pub fn register(&self, req: &TargetRegReq) -> Result<TargetRegReply> {
        check_fsname(&req.fsname)?;
        if req.nids.is_empty() {
            return Err(MdtError::posix(errno::EINVAL, "a target registers with at least one NID"));
        }
        let mut fs = self.fs.lock();
        let known = fs.get(&req.fsname).and_then(|s| s.targets.get(&(req.kind, req.index))).cloned();
        match known {
            None => {
                let record = self.append(
                    &mut fs,
                    &req.fsname,
                    ConfigCmd::AddTarget {
                        kind: req.kind,
                        index: req.index,
                        nids: req.nids.clone(),
                        failover: req.failover.clone(),
                    },
                )?;
                let restart = ConfigCmd::TargetRestart {
                    kind: req.kind,
                    index: req.index,
                    instance: req.instance,
                    nids: req.nids.clone(),
                };
                self.append(&mut fs, &req.fsname, restart)?;
                Ok(TargetRegReply { record, added: true })
            }
            Some(t) if t.instance == req.instance && t.nids == req.nids => {
                Ok(TargetRegReply { record: 0, added: false })
            }
            Some(_) => {
                let cmd = ConfigCmd::TargetRestart {
                    kind: req.kind,
                    index: req.index,
                    instance: req.instance,
                    nids: req.nids.clone(),
                };
                let record = self.append(&mut fs, &req.fsname, cmd)?;
                Ok(TargetRegReply { record, added: false })
            }
        }
    }

    /// Records of `fsname` from `from` on, waiting up to `wait` (capped at
    /// [`MAX_WAIT`]) when there are none yet.
    pub fn read(&self, fsname: &str, from: u64, max: u32, wait: Duration) -> ConfigReadReply {
        let deadline = Instant::now() + wait.min(MAX_WAIT);
        let max = (max as usize).clamp(1, MAX_READ);
        let mut fs = self.fs.lock();
        loop {
            let from = from.max(1);
            let recs: Vec<ConfigRecord> = fs
                .get(fsname)
                .map(|s| s.records.iter().filter(|r| r.index >= from).take(max).cloned().collect())
                .unwrap_or_default();
            if !recs.is_empty() || self.cv.wait_until(&mut fs, deadline).timed_out() {
                let next = recs.last().map_or(from, |r| r.index + 1);
                return ConfigReadReply { records: recs, next };
            }
        }
    }

    /// An administrative request.
    pub fn admin(&self, req: &MgsAdminReq) -> Result<MgsAdminReply> {
        use MgsAdminReq as A;
        let fsname = match req {
            A::Activate { fsname, .. }
            | A::Deactivate { fsname, .. }
            | A::Remove { fsname, .. }
            | A::SetParam { fsname, .. }
            | A::PoolNew { fsname, .. }
            | A::PoolAdd { fsname, .. }
            | A::PoolRemove { fsname, .. }
            | A::PoolDestroy { fsname, .. }
            | A::PoolList { fsname }
            | A::Targets { fsname } => fsname.clone(),
        };
        let mut fs = self.fs.lock();
        let st = fs.get(&fsname).cloned().ok_or_else(|| MdtError::posix(errno::ENOENT, format!("no fs {fsname}")))?;
        let target = |kind: TargetKind, index: u32| {
            st.targets
                .get(&(kind, index))
                .cloned()
                .ok_or_else(|| MdtError::posix(errno::ENOENT, format!("no {kind:?} {index}")))
        };
        let pool =
            |p: &str| st.pools.get(p).cloned().ok_or_else(|| MdtError::posix(errno::ENOENT, format!("no pool {p}")));
        let cmd = match req {
            A::Activate { kind, index, .. } => {
                target(*kind, *index)?;
                ConfigCmd::Activate { kind: *kind, index: *index }
            }
            A::Deactivate { kind, index, .. } => {
                target(*kind, *index)?;
                ConfigCmd::Deactivate { kind: *kind, index: *index }
            }
            A::Remove { kind, index, .. } => {
                if target(*kind, *index)?.active {
                    return Err(MdtError::posix(
                        errno::EBUSY,
                        format!("{kind:?} {index} is active: deactivate it first"),
                    ));
                }
                ConfigCmd::Remove { kind: *kind, index: *index }
            }
            A::SetParam { key, value, .. } => {
                if key.is_empty() || !key.contains('.') {
                    return Err(MdtError::posix(errno::EINVAL, "parameter keys are component.name"));
                }
                ConfigCmd::SetParam { key: key.clone(), value: value.clone() }
            }
            A::PoolNew { pool: p, .. } => {
                if p.is_empty() || p.len() > POOL_NAME_MAX || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(MdtError::posix(errno::EINVAL, format!("bad pool name {p:?}")));
                }
                if st.pools.contains_key(p) {
                    return Err(MdtError::posix(errno::EEXIST, format!("pool {p} exists")));
                }
                ConfigCmd::PoolNew { pool: p.clone() }
            }
            A::PoolAdd { pool: p, ost, .. } => {
                if pool(p)?.contains(ost) {
                    return Err(MdtError::posix(errno::EEXIST, format!("OST {ost} already in {p}")));
                }
                target(TargetKind::Ost, *ost)?;
                ConfigCmd::PoolAdd { pool: p.clone(), ost: *ost }
            }
            A::PoolRemove { pool: p, ost, .. } => {
                if !pool(p)?.contains(ost) {
                    return Err(MdtError::posix(errno::ENOENT, format!("OST {ost} not in {p}")));
                }
                ConfigCmd::PoolRemove { pool: p.clone(), ost: *ost }
            }
            A::PoolDestroy { pool: p, .. } => {
                if !pool(p)?.is_empty() {
                    return Err(MdtError::posix(errno::ENOTEMPTY, format!("pool {p} is not empty")));
                }
                ConfigCmd::PoolDestroy { pool: p.clone() }
            }
            A::PoolList { .. } => {
                let pools = st
                    .pools
                    .iter()
                    .map(|(n, m)| PoolInfo { name: n.clone(), osts: m.iter().copied().collect() })
                    .collect();
                return Ok(MgsAdminReply { pools, ..MgsAdminReply::default() });
            }
            A::Targets { .. } => {
                return Ok(MgsAdminReply {
                    targets: st.targets.values().cloned().collect(),
                    ..MgsAdminReply::default()
                });
            }
        };
        let record = self.append(&mut fs, &fsname, cmd)?;
        Ok(MgsAdminReply { record, ..MgsAdminReply::default() })
    }
}

#[cfg(test)]
mod tests;
