//! The MDT's view of one OST: the few calls object allocation and
//! destruction need ([`OstApi`]), and the real implementation over a
//! ptlrpc import ([`ImportDriver`]) speaking the OST's opcodes and bodies
//! (`ptlrpc::wire::ost`): CONNECT by target name, CREATE of a precreate
//! range in a sequence (the OST picks the ids; replayed after an OST restart like any
//! update), DESTROY, STATFS.
//!
//! Must not: be called from an async context (calls block on the runtime
//! handle; the MDT's handlers run on service worker threads).

use std::fmt;
use std::time::Duration;

use lnet::{Lnet, Nid};
use parking_lot::Mutex;
use ptlrpc::driver::{ImportDriver, ImportRpcError};
use ptlrpc::import::{ImportConfig, PathId, ReqKind};
use ptlrpc::portals::OST_REQUEST_PORTAL;
use ptlrpc::wire::{ConnectData, Op, OstCreate, OstCreateReply, OstId, OstObj, WireBody, WireDecode, connect_flags};
use thiserror::Error;

/// An OST's space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OstStatfs {
    /// Capacity, KiB.
    pub kbytes: u64,
    /// Free, KiB.
    pub kbytes_free: u64,
}

/// An OST call's failure.
#[derive(Debug, Clone, Error)]
pub enum OstError {
    /// The OST answered with an errno.
    #[error("ost returned -{0}")]
    Errno(i32),
    /// The OST could not be reached.
    #[error("ost unreachable: {0}")]
    Unreachable(String),
}

impl OstError {
    /// The errno to report.
    pub fn errno(&self) -> i32 {
        match self {
            OstError::Errno(e) => *e,
            OstError::Unreachable(_) => crate::error::errno::ENOTCONN,
        }
    }
}

/// What the MDT needs from an OST.
pub trait OstApi: Send + Sync + fmt::Debug {
    /// Creates `count` objects in sequence `seq`; returns the first and
    /// last new ids (the OST picks them, ascending, after the sequence's
    /// last id).
    fn precreate(&self, seq: u64, count: u32) -> Result<(u64, u64), OstError>;
    /// Destroys object `id` (a missing object is success).
    fn destroy(&self, id: OstId) -> Result<(), OstError>;
    /// Space.
    fn statfs(&self) -> Result<OstStatfs, OstError>;
    /// Whether object `id` exists (a GETATTR; the namespace checker).
    fn exists(&self, id: OstId) -> Result<bool, OstError>;
    /// The highest object id the OST has created in sequence `seq` (orphan
    /// cleanup destroys the unused ones up to it). Default: 0 (unknown: the
    /// cleanup goes by the MDT's own record of its precreates).
    fn last_id(&self, _seq: u64) -> Result<u64, OstError> {
        Ok(0)
    }
    /// Imperative recovery: the OST restarted (the MGS said so); a
    /// connection reconnects now. Returns false when this client cannot
    /// (the caller then makes a new one).
    fn restarted(&self, _nids: &[String]) -> bool {
        false
    }
}

/// An OST over ptlrpc's import: connects (by target name) on first use;
/// reconnects, resends and replays (a precreate whose reply was lost, or
/// that the OST had not committed when it restarted) are the import's.
#[derive(Debug)]
pub struct RpcOst {
    lnet: Lnet,
    nids: Vec<Nid>,
    rt: tokio::runtime::Handle,
    bound: Duration,
    target: String,
    uuid: String,
    import: Mutex<Option<ImportDriver>>,
}

impl RpcOst {
    /// OST `target` (`fsname-OSTxxxx`) at `nids` (failover NIDs), as the
    /// client `uuid`, blocking on `rt`, each call bounded by `bound`.
    pub fn new(
        lnet: Lnet,
        nids: Vec<Nid>,
        rt: tokio::runtime::Handle,
        bound: Duration,
        target: String,
        uuid: String,
    ) -> RpcOst {
        RpcOst { lnet, nids, rt, bound, target, uuid, import: Mutex::new(None) }
    }

    /// The import, started and connected on first use.
    fn import(&self) -> Result<ImportDriver, OstError> {
        if let Some(i) = &*self.import.lock() {
            return Ok(i.clone());
        }
        let paths = (0..self.nids.len()).map(|i| PathId(u32::try_from(i).unwrap_or(u32::MAX))).collect();
        let mut cfg = ImportConfig::new(&self.uuid, Op::OstConnect, Op::OstDisconnect, OST_REQUEST_PORTAL, paths);
        cfg.connect_data = ConnectData {
            flags: connect_flags::VERSION | connect_flags::TRANSNO | connect_flags::VBR | connect_flags::IMP_RECOV,
            version: 1,
            target: self.target.clone(),
            ..ConnectData::default()
        };
        let imp = {
            let _in_rt = self.rt.enter();
            ImportDriver::start(&self.lnet, self.nids.clone(), cfg, 16 << 10)
                .map_err(|e| OstError::Unreachable(e.to_string()))?
        };
        let connected = self.rt.block_on(async { tokio::time::timeout(self.bound, imp.connect()).await });
        match connected {
            Ok(Ok(())) => {
                *self.import.lock() = Some(imp.clone());
                Ok(imp)
            }
            Ok(Err(state)) => Err(OstError::Unreachable(format!("{}: import {state:?}", self.target))),
            Err(_) => {
                imp.abort();
                Err(OstError::Unreachable(format!("{}: no connection within {:?}", self.target, self.bound)))
            }
        }
    }

    fn call<B, R>(&self, op: Op, kind: ReqKind, body: &B) -> Result<R, OstError>
    where
        B: WireBody,
        R: WireDecode,
    {
        let imp = self.import()?;
        let res = self.rt.block_on(async { tokio::time::timeout(self.bound, imp.rpc(op, kind, body)).await });
        match res {
            Err(_) => Err(OstError::Unreachable(format!("{op:?}: no answer within {:?}", self.bound))),
            Ok(Err(ImportRpcError::Server { errno, .. })) => Err(OstError::Errno(errno)),
            Ok(Err(e)) => Err(OstError::Unreachable(e.to_string())),
            Ok(Ok(reply)) => reply.body::<R>().map_err(|e| OstError::Unreachable(e.to_string())),
        }
    }
}

impl OstApi for RpcOst {
    fn restarted(&self, nids: &[String]) -> bool {
        let parsed: Vec<Nid> = nids.iter().filter_map(|n| n.parse().ok()).collect();
        if !parsed.iter().any(|n| self.nids.contains(n)) {
            return false;
        }
        // An import not started yet connects afresh on first use anyway.
        if let Some(i) = &*self.import.lock() {
            i.target_restarted(&parsed);
        }
        true
    }

    fn precreate(&self, seq: u64, count: u32) -> Result<(u64, u64), OstError> {
        let count = count.clamp(1, ptlrpc::wire::ost::MAX_PRECREATE);
        let r: OstCreateReply = self.call(Op::OstCreate, ReqKind::Modify, &OstCreate { seq, count })?;
        if r.count == 0 {
            return Err(OstError::Errno(crate::error::errno::ENOSPC));
        }
        Ok((r.first, r.first + u64::from(r.count) - 1))
    }

    fn destroy(&self, id: OstId) -> Result<(), OstError> {
        match self.call::<_, ()>(Op::OstDestroy, ReqKind::Modify, &OstObj { oid: id }) {
            Err(OstError::Errno(crate::error::errno::ENOENT)) => Ok(()),
            r => r,
        }
    }

    fn exists(&self, id: OstId) -> Result<bool, OstError> {
        match self.call::<_, ptlrpc::wire::OstAttr>(Op::OstGetattr, ReqKind::Read, &OstObj { oid: id }) {
            Ok(_) => Ok(true),
            Err(OstError::Errno(crate::error::errno::ENOENT)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn last_id(&self, seq: u64) -> Result<u64, OstError> {
        let ids: ptlrpc::wire::OstIds =
            self.call(Op::OstGetInfo, ReqKind::Read, &OstObj { oid: OstId::new(seq, 0) })?;
        Ok(ids.last_id)
    }

    fn statfs(&self) -> Result<OstStatfs, OstError> {
        let s: ptlrpc::wire::OstStatfs = self.call(Op::OstStatfs, ReqKind::Read, &OstObj::default())?;
        let kib = |blocks: u64| blocks.saturating_mul(u64::from(s.bsize)) / 1024;
        Ok(OstStatfs { kbytes: kib(s.blocks), kbytes_free: kib(s.bavail) })
    }
}
