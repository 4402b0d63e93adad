//! osc: the client of one OST — `ost::client::OstClient` (an import:
//! CONNECT with grant, brw size and CRC32C, pinger, reconnect, replay of
//! replied-but-uncommitted writes with their pages after an OST restart;
//! BRW over bulk; getattr, setattr, punch, sync, statfs) behind a lazy,
//! once-only connect and typed errors.
//!
//! Owns: [`Osc`] and its [`OstStanding`] (the config log's activate,
//! deactivate, remove: an OST out of service gets no new request, and its
//! callers a clear EIO). Must not: cache data or object sizes, or keep
//! written data itself (the import keeps a write's pages until the OST
//! commits it).

use std::sync::atomic::{AtomicU8, Ordering};

use lnet::{Lnet, MdBuffer, Nid};
use ost::client::{OstClient, OstClientConfig};
use ptlrpc::wire::ost::attr_valid;
use ptlrpc::wire::{Niobuf, OstAttr, OstBrwReply, OstIds, OstSetattr, OstStatfs};
use tokio::sync::OnceCell;

use crate::error::{ClientError, Result};
use crate::options::MountOptions;

/// Largest BRW the client issues (Lustre's 1 MiB RPC).
pub const MAX_BRW: u64 = 1 << 20;
/// Grant asked for at connect.
const GRANT: u64 = 64 << 20;

/// An OST's standing in the configuration log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OstStanding {
    /// In service.
    Active = 0,
    /// Deactivated by the administrator: no I/O is sent to it.
    Inactive = 1,
    /// Removed from the file system: no I/O is sent to it, ever.
    Removed = 2,
}

/// A client of one OST.
#[derive(Debug)]
pub struct Osc {
    index: u32,
    name: String,
    nid: Nid,
    ost: OstClient,
    connected: OnceCell<()>,
    standing: AtomicU8,
}

/// The name of OST `index` of `fsname` (`sheen-OST0000`).
pub fn ost_name(fsname: &str, index: u32) -> String {
    format!("{fsname}-OST{index:04x}")
}

impl Osc {
    /// A client of OST `index` of `fsname` at `nid`, calling itself `uuid`.
    pub fn new(lnet: &Lnet, fsname: &str, index: u32, nid: Nid, uuid: &str) -> Osc {
        Osc::with_options(lnet, fsname, index, nid, uuid, &MountOptions::default())
    }

    /// [`Osc::new`] with the mount's timeouts.
    pub fn with_options(lnet: &Lnet, fsname: &str, index: u32, nid: Nid, uuid: &str, opts: &MountOptions) -> Osc {
        let name = ost_name(fsname, index);
        let brw_size = u32::try_from(MAX_BRW).unwrap_or(u32::MAX);
        let cfg = OstClientConfig {
            grant: GRANT,
            brw_size,
            checksums: true,
            jobid: crate::jobid::from_env(),
            at: opts.at(),
            ping: opts.ping(),
            reconnect_max: opts.reconnect_max(),
            ..OstClientConfig::default()
        };
        Osc {
            index,
            nid,
            ost: OstClient::new(lnet, vec![nid], &name, uuid, cfg),
            name,
            connected: OnceCell::new(),
            standing: AtomicU8::new(OstStanding::Active as u8),
        }
    }

    /// Its standing in the configuration log.
    pub fn standing(&self) -> OstStanding {
        match self.standing.load(Ordering::Acquire) {
            0 => OstStanding::Active,
            1 => OstStanding::Inactive,
            _ => OstStanding::Removed,
        }
    }

    /// Sets its standing (the config log's activate, deactivate, remove).
    /// A removed OST stays removed.
    pub fn set_standing(&self, s: OstStanding) {
        let _ = self.standing.fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
            (cur != OstStanding::Removed as u8).then_some(s as u8)
        });
        // A deactivated target is not pinged (an import not started yet
        // never starts while the OST is out of service).
        if let Some(i) = self.ost.import() {
            i.set_deactivated(self.standing() != OstStanding::Active);
        }
    }

    /// Imperative recovery: the OST restarted at `nids`; the import (if
    /// started) reconnects now.
    pub fn target_restarted(&self, nids: &[Nid]) {
        if let Some(i) = self.ost.import() {
            i.target_restarted(nids);
        }
    }

    fn in_service(&self, what: &'static str) -> Result<()> {
        match self.standing() {
            OstStanding::Active => Ok(()),
            OstStanding::Inactive => Err(ClientError::posix(
                format!("{what}: {} is deactivated (sheen targets activate {})", self.name, self.index),
                libc::EIO,
            )),
            OstStanding::Removed => Err(ClientError::posix(
                format!("{what}: {} was removed from the file system; its objects are gone", self.name),
                libc::EIO,
            )),
        }
    }

    /// Disconnects (if connected): the OST commits and drops this client's
    /// record, so its next restart does not wait for this client.
    pub async fn disconnect(&self) {
        self.ost.disconnect(std::time::Duration::from_secs(5)).await;
    }

    /// The OST's index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The target's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it serves.
    pub fn nid(&self) -> Nid {
        self.nid
    }

    /// The import to the OST, once the first call connected it.
    pub fn import(&self) -> Option<&ptlrpc::driver::ImportDriver> {
        self.ost.import()
    }

    /// Connects once (later calls return at once).
    pub async fn connect(&self) -> Result<()> {
        self.connected
            .get_or_try_init(|| async {
                match tokio::time::timeout(crate::rpc::RPC_BOUND, self.ost.connect()).await {
                    Ok(r) => r.map(drop).map_err(|e| ClientError::rpc("ost connect", e)),
                    Err(_) => Err(ClientError::Timeout { what: "ost connect", secs: crate::rpc::RPC_BOUND.as_secs() }),
                }
            })
            .await
            .copied()
    }

    async fn bounded<T>(
        &self,
        what: &'static str,
        f: impl std::future::Future<Output = std::result::Result<T, ptlrpc::driver::RpcError>>,
    ) -> Result<T> {
        self.in_service(what)?;
        self.connect().await?;
        match tokio::time::timeout(crate::rpc::RPC_BOUND, f).await {
            Ok(r) => r.map_err(|e| ClientError::rpc(what, e)),
            Err(_) => Err(ClientError::Timeout { what, secs: crate::rpc::RPC_BOUND.as_secs() }),
        }
    }

    /// Pages holding a copy of `data`.
    pub fn pages(&self, data: &[u8]) -> Result<MdBuffer> {
        self.ost.pages(data).map_err(|e| ClientError::rpc("bulk pages", e))
    }

    /// Writes `buf` at `offset` of object `oid`.
    pub async fn write(&self, oid: ptlrpc::wire::OstId, offset: u64, buf: MdBuffer) -> Result<OstBrwReply> {
        let len = u32::try_from(buf.len()).map_err(|_| ClientError::Invalid("BRW over 4 GiB".into()))?;
        let n = [Niobuf { offset, len, flags: 0 }];
        self.bounded("ost write", self.ost.write_pages(oid, &n, buf)).await.map(|(r, _)| r)
    }

    /// Reads `len` bytes at `offset` of `oid` (holes and bytes past the
    /// object's end read as zeros).
    pub async fn read(&self, oid: ptlrpc::wire::OstId, offset: u64, len: u32) -> Result<Vec<u8>> {
        self.bounded("ost read", self.ost.read(oid, offset, len)).await
    }

    /// CREATE `count` objects in sequence `seq`; returns the first (what
    /// the MDT's precreate does; tools and tests use it).
    pub async fn create(&self, seq: u64, count: u32) -> Result<ptlrpc::wire::OstId> {
        self.bounded("ost create", self.ost.create(seq, count)).await.map(|r| ptlrpc::wire::OstId::new(seq, r.first))
    }

    /// DESTROY.
    pub async fn destroy(&self, oid: ptlrpc::wire::OstId) -> Result<()> {
        self.bounded("ost destroy", self.ost.destroy(oid)).await
    }

    /// GETATTR.
    pub async fn getattr(&self, oid: ptlrpc::wire::OstId) -> Result<OstAttr> {
        self.bounded("ost getattr", self.ost.getattr(oid)).await
    }

    /// Sets the object's size (truncate or extend).
    pub async fn set_size(&self, oid: ptlrpc::wire::OstId, size: u64) -> Result<OstAttr> {
        let s = OstSetattr { oid, valid: attr_valid::SIZE, size, ..OstSetattr::default() };
        self.bounded("ost setattr", self.ost.setattr(s)).await
    }

    /// Sets the object's modification time (utimes on a file: its objects
    /// carry the mtime stat reports).
    pub async fn set_mtime(&self, oid: ptlrpc::wire::OstId, mtime_ns: u64) -> Result<OstAttr> {
        let s = OstSetattr { oid, valid: attr_valid::MTIME, mtime_ns, ..OstSetattr::default() };
        self.bounded("ost setattr", self.ost.setattr(s)).await
    }

    /// Deallocates `[start, start + len)` of `oid` (it reads as zeros; the
    /// size is unchanged).
    pub async fn punch_hole(&self, oid: ptlrpc::wire::OstId, start: u64, len: u64) -> Result<OstAttr> {
        self.bounded("ost punch", self.ost.punch(oid, ptlrpc::wire::ost::PUNCH_HOLE, start, len)).await
    }

    /// SYNC: commits the target; returns its last committed transno.
    pub async fn sync(&self) -> Result<OstIds> {
        self.bounded("ost sync", self.ost.sync()).await
    }

    /// STATFS.
    pub async fn statfs(&self) -> Result<OstStatfs> {
        self.bounded("ost statfs", self.ost.statfs()).await
    }
}
