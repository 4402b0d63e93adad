//! A minimal OST client (an osc without page cache), for tests, the
//! benchmark and tools.
//!
//! Owns: [`OstClient`] — CONNECT (asks for grant, brw size and CRC32C),
//! object operations, BRW write/read with niobufs over the driver's
//! client-exposed bulk, and a replay list: every acknowledged write whose
//! transno is above the target's `last_committed` is kept (data and all)
//! and [`OstClient::recover`] reconnects and resends them in transno
//! order after a target restart. This stands in for the import's replay
//! list until ptlrpc's import driver carries OST requests.
//!
//! Must not: keep more than it must: entries leave the replay list as soon
//! as a reply reports them committed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lnet::{Lnet, MdBuffer, Nid};
use parking_lot::Mutex;
use ptlrpc::driver::{Client, ClientConfig, RpcError, RpcReply};
use ptlrpc::fault::FaultInjector;
use ptlrpc::portals::OST_REQUEST_PORTAL;
use ptlrpc::wire::{
    BulkDesc, CKSUM_CRC32C, ConnectData, Niobuf, Op, OstAttr, OstBrw, OstBrwReply, OstConnect, OstConnectReply,
    OstCreate, OstCreateReply, OstIds, OstObj, OstPunch, OstSetattr, OstStatfs, connect_flags,
};

/// A write kept until committed.
#[derive(Debug, Clone)]
struct Kept {
    oid: u64,
    offset: u64,
    data: Vec<u8>,
}

/// One client's connection to one OST.
#[derive(Debug)]
pub struct OstClient {
    lnet: Lnet,
    rpc: Client,
    target: String,
    uuid: String,
    handle: AtomicU64,
    cksum: Mutex<bool>,
    grant: AtomicU64,
    last_committed: AtomicU64,
    keep: bool,
    replay: Mutex<BTreeMap<u64, Kept>>,
}

impl OstClient {
    /// A client of target `target` on server `nid`. With `keep_uncommitted`
    /// acknowledged writes are kept until committed (for [`recover`]).
    ///
    /// [`recover`]: OstClient::recover
    pub fn new(
        lnet: &Lnet,
        nid: Nid,
        target: &str,
        uuid: &str,
        cfg: ClientConfig,
        keep_uncommitted: bool,
    ) -> OstClient {
        let rpc = Client::new(lnet, nid, OST_REQUEST_PORTAL, cfg, Arc::new(FaultInjector::default()));
        OstClient {
            lnet: lnet.clone(),
            rpc,
            target: target.to_string(),
            uuid: uuid.to_string(),
            handle: AtomicU64::new(0),
            cksum: Mutex::new(false),
            grant: AtomicU64::new(0),
            last_committed: AtomicU64::new(0),
            keep: keep_uncommitted,
            replay: Mutex::new(BTreeMap::new()),
        }
    }

    /// The export handle.
    pub fn handle(&self) -> u64 {
        self.handle.load(Ordering::Acquire)
    }

    /// The grant the target last reported.
    pub fn grant(&self) -> u64 {
        self.grant.load(Ordering::Acquire)
    }

    /// The target's last committed transno, as last reported.
    pub fn last_committed(&self) -> u64 {
        self.last_committed.load(Ordering::Acquire)
    }

    /// Writes kept for replay.
    pub fn uncommitted(&self) -> usize {
        self.replay.lock().len()
    }

    /// The transnos of the writes kept for replay.
    pub fn uncommitted_transnos(&self) -> Vec<u64> {
        self.replay.lock().keys().copied().collect()
    }

    /// Whether checksums were negotiated.
    pub fn checksums(&self) -> bool {
        *self.cksum.lock()
    }

    /// The RPC client (for statistics).
    pub fn rpc(&self) -> &Client {
        &self.rpc
    }

    /// A reply's `last_committed` commits the kept writes of the same boot
    /// epoch (`transno >> 32`) up to it. Writes of an earlier epoch are
    /// only dropped by a CONNECT's answer (what the restarted target holds
    /// durably): a new epoch's transnos say nothing about them.
    fn saw(&self, r: &RpcReply) {
        let lc = r.header().last_committed.0;
        self.last_committed.fetch_max(lc, Ordering::AcqRel);
        if self.keep {
            self.replay.lock().retain(|&t, _| !(t >> 32 == lc >> 32 && t <= lc));
        }
    }

    /// CONNECT, asking for `grant` bytes, `brw_size` and CRC32C when
    /// `checksums`.
    pub async fn connect(&self, grant: u64, brw_size: u32, checksums: bool) -> Result<ConnectData, RpcError> {
        let mut flags =
            connect_flags::GRANT | connect_flags::BRW_SIZE | connect_flags::VERSION | connect_flags::TRANSNO;
        if checksums {
            flags |= connect_flags::CKSUM;
        }
        let data = ConnectData {
            flags,
            version: 1,
            brw_size,
            grant,
            cksum_types: if checksums { CKSUM_CRC32C } else { 0 },
            client_uuid: self.uuid.clone(),
            ..ConnectData::default()
        };
        let r = self.rpc.rpc(Op::OstConnect, &OstConnect { target: self.target.clone(), data }).await?;
        let body: OstConnectReply = r.body()?;
        self.handle.store(body.handle, Ordering::Release);
        self.grant.store(body.data.grant, Ordering::Release);
        *self.cksum.lock() = body.data.flags & connect_flags::CKSUM != 0;
        self.last_committed.store(body.data.transno, Ordering::Release);
        if self.keep {
            let committed = body.data.transno;
            self.replay.lock().retain(|&t, _| t > committed);
        }
        Ok(body.data)
    }

    /// After a target restart: connect again and resend every kept write
    /// in transno order. Returns how many were resent.
    pub async fn recover(&self, grant: u64, brw_size: u32) -> Result<usize, RpcError> {
        let cksum = self.checksums();
        self.connect(grant, brw_size, cksum).await?;
        let kept: Vec<Kept> = std::mem::take(&mut *self.replay.lock()).into_values().collect();
        let n = kept.len();
        for k in kept {
            self.write(k.oid, k.offset, &k.data).await?;
        }
        Ok(n)
    }

    fn obj(&self, oid: u64) -> OstObj {
        OstObj { handle: self.handle(), oid }
    }

    /// CREATE `count` objects.
    pub async fn create(&self, count: u32) -> Result<OstCreateReply, RpcError> {
        let r = self.rpc.rpc(Op::OstCreate, &OstCreate { handle: self.handle(), count }).await?;
        self.saw(&r);
        r.body()
    }

    /// DESTROY.
    pub async fn destroy(&self, oid: u64) -> Result<(), RpcError> {
        let r = self.rpc.rpc(Op::OstDestroy, &self.obj(oid)).await?;
        self.saw(&r);
        Ok(())
    }

    /// GETATTR.
    pub async fn getattr(&self, oid: u64) -> Result<OstAttr, RpcError> {
        let r = self.rpc.rpc(Op::OstGetattr, &self.obj(oid)).await?;
        self.saw(&r);
        r.body()
    }

    /// SETATTR.
    pub async fn setattr(&self, mut s: OstSetattr) -> Result<OstAttr, RpcError> {
        s.handle = self.handle();
        let r = self.rpc.rpc(Op::OstSetattr, &s).await?;
        self.saw(&r);
        r.body()
    }

    /// PUNCH.
    pub async fn punch(&self, oid: u64, mode: u32, start: u64, len: u64) -> Result<OstAttr, RpcError> {
        let r = self.rpc.rpc(Op::OstPunch, &OstPunch { handle: self.handle(), oid, mode, start, len }).await?;
        self.saw(&r);
        r.body()
    }

    /// SYNC: returns the last committed transno.
    pub async fn sync(&self) -> Result<OstIds, RpcError> {
        let r = self.rpc.rpc(Op::OstSync, &self.obj(0)).await?;
        self.saw(&r);
        r.body()
    }

    /// STATFS.
    pub async fn statfs(&self) -> Result<OstStatfs, RpcError> {
        let r = self.rpc.rpc(Op::OstStatfs, &self.obj(0)).await?;
        r.body()
    }

    /// The last object id (OST_GET_INFO).
    pub async fn last_id(&self) -> Result<OstIds, RpcError> {
        let r = self.rpc.rpc(Op::OstGetInfo, &self.obj(0)).await?;
        self.saw(&r);
        r.body()
    }

    /// Pages holding `data`.
    pub fn pages(&self, data: &[u8]) -> Result<MdBuffer, RpcError> {
        let mut b = MdBuffer::from_pages_len(self.lnet.pool(0).alloc_bytes(data.len())?, data.len());
        b.write_at(0, data);
        Ok(b)
    }

    /// Writes `data` at `offset` of `oid` (one niobuf).
    pub async fn write(&self, oid: u64, offset: u64, data: &[u8]) -> Result<OstBrwReply, RpcError> {
        let len = u32::try_from(data.len()).map_err(|_| RpcError::Encode("write over 4 GiB".into()))?;
        let buf = self.pages(data)?;
        let (reply, _) = self.write_pages(oid, &[Niobuf { offset, len, flags: 0 }], buf).await?;
        let (t, lc) = (reply.1, self.last_committed());
        if self.keep && !(t >> 32 == lc >> 32 && t <= lc) {
            self.replay.lock().insert(reply.1, Kept { oid, offset, data: data.to_vec() });
        }
        Ok(reply.0)
    }

    /// Writes the runs `niobufs` from `buf` (laid end to end); returns the
    /// reply, its transno and the pages. Not kept for replay.
    pub async fn write_pages(
        &self,
        oid: u64,
        niobufs: &[Niobuf],
        buf: MdBuffer,
    ) -> Result<((OstBrwReply, u64), MdBuffer), RpcError> {
        let cksum = self.checksums();
        // One niobuf: the bulk descriptor's CRC32C covers it already.
        let cksums = if cksum && niobufs.len() > 1 {
            let mut pos = 0usize;
            niobufs
                .iter()
                .map(|n| {
                    let c = buf.io_slices(pos, n.len as usize).iter().fold(0, |c, s| crc32c::crc32c_append(c, s));
                    pos += n.len as usize;
                    c
                })
                .collect()
        } else {
            Vec::new()
        };
        let handle = self.handle();
        let niobufs = niobufs.to_vec();
        let (r, buf) = self
            .rpc
            .bulk_write(Op::OstWrite, buf, cksum, move |bulk: BulkDesc| OstBrw { handle, oid, niobufs, cksums, bulk })
            .await?;
        let body: OstBrwReply = r.body()?;
        self.grant.store(body.grant, Ordering::Release);
        let transno = r.header().transno.0;
        self.saw(&r);
        Ok(((body, transno), buf))
    }

    /// Reads `len` bytes at `offset` of `oid`.
    pub async fn read(&self, oid: u64, offset: u64, len: u32) -> Result<Vec<u8>, RpcError> {
        let buf = MdBuffer::from_pages_len(self.lnet.pool(0).alloc_bytes(len as usize)?, len as usize);
        let (_, buf) = self.read_pages(oid, &[Niobuf { offset, len, flags: 0 }], buf).await?;
        let mut v = vec![0; len as usize];
        buf.read_at(0, &mut v);
        Ok(v)
    }

    /// Reads the runs `niobufs` into `buf` (end to end).
    pub async fn read_pages(
        &self,
        oid: u64,
        niobufs: &[Niobuf],
        buf: MdBuffer,
    ) -> Result<(OstBrwReply, MdBuffer), RpcError> {
        let cksum = self.checksums();
        let handle = self.handle();
        let niobufs = niobufs.to_vec();
        let (r, buf) = self
            .rpc
            .bulk_read(
                Op::OstRead,
                buf,
                cksum,
                move |bulk: BulkDesc| OstBrw { handle, oid, niobufs: niobufs.clone(), cksums: Vec::new(), bulk },
                |r: &RpcReply| Ok(r.body::<OstBrwReply>()?.cksum),
            )
            .await?;
        self.saw(&r);
        Ok((r.body()?, buf))
    }
}
