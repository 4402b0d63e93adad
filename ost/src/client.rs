//! A minimal OST client (an osc without page cache) on ptlrpc's import:
//! for the file system client, tests, the benchmark and tools.
//!
//! Owns: [`OstClient`] — an `ImportDriver` for one OST (started at the
//! first [`OstClient::connect`]: CONNECT asking for grant, brw size and
//! CRC32C, then the pinger, reconnects, and replay of replied-but-
//! uncommitted requests after a target restart, all the import's), and
//! the OST's calls over it: object operations, BRW writes whose pages the
//! import keeps until the target commits them (a replay re-sends them),
//! and BRW reads whose CRC32C is checked here, the read issued again on a
//! mismatch.
//!
//! Must not: keep anything the import already keeps, or resend anything
//! itself: resends, replays and reconnects are the import's.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use lnet::{Lnet, MdBuffer, Nid};
use ptlrpc::at::AtSettings;
use ptlrpc::driver::{BulkAttachment, BulkDir, ImportDriver, ImportReply, RpcError, checksum};
use ptlrpc::import::{ImportConfig, ImportError, ImportStateKind, PathId, ReqKind};
use ptlrpc::pinger::PingSettings;
use ptlrpc::portals::OST_REQUEST_PORTAL;
use ptlrpc::wire::{
    BulkDesc, CKSUM_CRC32C, ConnectData, JobId, Niobuf, Op, OstAttr, OstBrw, OstBrwReply, OstCreate, OstCreateReply,
    OstId, OstIds, OstObj, OstPunch, OstSetattr, OstStatfs, Transno, WireBody, WireDecode, connect_flags,
};

/// How an OST client connects.
#[derive(Debug, Clone)]
pub struct OstClientConfig {
    /// Grant asked for at connect.
    pub grant: u64,
    /// Largest BRW asked for.
    pub brw_size: u32,
    /// Ask for CRC32C on bulk data.
    pub checksums: bool,
    /// Adaptive timeouts.
    pub at: AtSettings,
    /// Ping interval and obd_timeout.
    pub ping: PingSettings,
    /// Longest pause between reconnect rounds (keep it below the target's
    /// eviction time, 6 ping intervals, or a client that is only
    /// backing off gets evicted).
    pub reconnect_max: std::time::Duration,
    /// Room for a reply body.
    pub reply_buf_len: usize,
    /// Extra attempts of a read whose checksum does not match.
    pub read_retries: u32,
    /// Job id every request carries.
    pub jobid: JobId,
    /// Modifying requests (writes ...) in flight at once to ask for; the
    /// target may grant fewer.
    pub max_mod_rpcs: u16,
    /// Writes up to this many bytes carry their data in the request
    /// (short I/O, when the target agrees; at most
    /// [`ptlrpc::wire::ost::SHORT_IO_BYTES`]; 0: always bulk). Lustre's
    /// `osc.*.short_io_bytes`.
    pub short_io_bytes: usize,
}

impl Default for OstClientConfig {
    fn default() -> OstClientConfig {
        OstClientConfig {
            grant: 64 << 20,
            brw_size: 1 << 20,
            checksums: true,
            at: AtSettings::default(),
            ping: PingSettings::default(),
            reconnect_max: std::time::Duration::from_secs(25),
            reply_buf_len: 16 << 10,
            read_retries: 3,
            jobid: JobId::EMPTY,
            max_mod_rpcs: 8,
            short_io_bytes: ptlrpc::wire::ost::SHORT_IO_BYTES,
        }
    }
}

/// One client's connection to one OST.
#[derive(Debug)]
pub struct OstClient {
    lnet: Lnet,
    nids: Vec<Nid>,
    target: String,
    uuid: String,
    cfg: OstClientConfig,
    import: OnceLock<ImportDriver>,
    grant: AtomicU64,
}

fn rpc_err(e: impl Into<RpcError>) -> RpcError {
    e.into()
}

fn body<T>(r: &ImportReply) -> Result<T, RpcError>
where
    T: WireDecode,
{
    r.body::<T>().map_err(RpcError::BadReply)
}

impl OstClient {
    /// A client of target `target` served at `nids` (failover NIDs, tried
    /// in turn), calling itself `uuid`. Nothing is sent until
    /// [`OstClient::connect`].
    pub fn new(lnet: &Lnet, nids: Vec<Nid>, target: &str, uuid: &str, cfg: OstClientConfig) -> OstClient {
        OstClient {
            lnet: lnet.clone(),
            nids,
            target: target.to_string(),
            uuid: uuid.to_string(),
            cfg,
            import: OnceLock::new(),
            grant: AtomicU64::new(0),
        }
    }

    fn import_config(&self) -> ImportConfig {
        let paths = (0..self.nids.len()).map(|i| PathId(u32::try_from(i).unwrap_or(u32::MAX))).collect();
        let mut ic = ImportConfig::new(&self.uuid, Op::OstConnect, Op::OstDisconnect, OST_REQUEST_PORTAL, paths);
        let mut flags = connect_flags::GRANT
            | connect_flags::BRW_SIZE
            | connect_flags::VERSION
            | connect_flags::TRANSNO
            | connect_flags::MAXBYTES
            | connect_flags::VBR
            | connect_flags::IMP_RECOV;
        if self.cfg.max_mod_rpcs > 1 {
            flags |= connect_flags::MULTIMODRPCS;
        }
        if self.cfg.checksums {
            flags |= connect_flags::CKSUM;
        }
        if self.cfg.short_io_bytes > 0 {
            flags |= connect_flags::SHORTIO;
        }
        ic.connect_data = ConnectData {
            flags,
            version: 1,
            brw_size: self.cfg.brw_size,
            grant: self.cfg.grant,
            cksum_types: if self.cfg.checksums { CKSUM_CRC32C } else { 0 },
            target: self.target.clone(),
            ..ConnectData::default()
        };
        ic.at = self.cfg.at;
        ic.ping = self.cfg.ping;
        ic.backoff_max = self.cfg.reconnect_max.max(ic.backoff_min);
        ic.jobid = self.cfg.jobid;
        ic.max_mod_rpcs = self.cfg.max_mod_rpcs;
        ic
    }

    /// The import (after the first connect).
    pub fn import(&self) -> Option<&ImportDriver> {
        self.import.get()
    }

    fn imp(&self) -> Result<&ImportDriver, RpcError> {
        self.import.get().ok_or(RpcError::Import(ImportError::Closed))
    }

    /// Connects (the first call starts the import; must run inside lnet's
    /// tokio runtime) and waits until the import is FULL. Returns what the
    /// target agreed to.
    pub async fn connect(&self) -> Result<ConnectData, RpcError> {
        let imp = match self.import.get() {
            Some(i) => i,
            None => {
                let started =
                    ImportDriver::start(&self.lnet, self.nids.clone(), self.import_config(), self.cfg.reply_buf_len)
                        .map_err(|e| RpcError::Encode(e.to_string()))?;
                // A concurrent first connect may have won: use its import.
                let _ = self.import.set(started);
                self.imp()?
            }
        };
        imp.connect().await.map_err(|k| match k {
            ImportStateKind::Closed => RpcError::Import(ImportError::Closed),
            _ => RpcError::Import(ImportError::Evicted),
        })?;
        let data = imp.connect_data().unwrap_or_default();
        self.grant.store(data.grant, Ordering::Release);
        Ok(data)
    }

    /// Disconnects (pending requests fail).
    pub fn close(&self) {
        if let Some(i) = self.import.get() {
            i.close();
        }
    }

    /// Disconnects and waits (at most `bound`) until the import is closed:
    /// the target commits and drops this client's record, so its next
    /// restart does not wait for this client to replay.
    pub async fn disconnect(&self, bound: std::time::Duration) {
        if let Some(i) = self.import.get() {
            // Until the DISCONNECT has left, not just until the import
            // says closed.
            let _ = tokio::time::timeout(bound, i.close_and_wait()).await;
        }
    }

    /// The grant the target last reported.
    pub fn grant(&self) -> u64 {
        self.grant.load(Ordering::Acquire)
    }

    /// The target's last committed transno, as last reported.
    pub fn last_committed(&self) -> u64 {
        self.import.get().map_or(0, |i| i.last_committed().0)
    }

    /// Replied, uncommitted requests the import keeps for replay.
    pub fn uncommitted(&self) -> usize {
        self.import.get().map_or(0, ImportDriver::replay_len)
    }

    /// Whether checksums were negotiated.
    pub fn checksums(&self) -> bool {
        self.negotiated(connect_flags::CKSUM)
    }

    fn negotiated(&self, flag: u64) -> bool {
        self.import.get().and_then(ImportDriver::connect_data).is_some_and(|d| d.flags & flag != 0)
    }

    /// Whether a write of `len` bytes goes in its request (short I/O).
    fn short_io(&self, len: usize) -> bool {
        len > 0
            && len <= self.cfg.short_io_bytes.min(ptlrpc::wire::ost::SHORT_IO_BYTES)
            && self.negotiated(connect_flags::SHORTIO)
    }

    async fn call<B, R>(&self, op: Op, kind: ReqKind, b: &B) -> Result<(R, Transno), RpcError>
    where
        B: WireBody,
        R: WireDecode,
    {
        let r = self.imp()?.rpc(op, kind, b).await.map_err(rpc_err)?;
        Ok((body(&r)?, r.header.transno))
    }

    fn obj(oid: OstId) -> OstObj {
        OstObj { oid }
    }

    /// CREATE `count` objects in sequence `seq`.
    pub async fn create(&self, seq: u64, count: u32) -> Result<OstCreateReply, RpcError> {
        Ok(self.call(Op::OstCreate, ReqKind::Modify, &OstCreate { seq, count }).await?.0)
    }

    /// DESTROY.
    pub async fn destroy(&self, oid: OstId) -> Result<(), RpcError> {
        self.imp()?.rpc(Op::OstDestroy, ReqKind::Modify, &Self::obj(oid)).await.map_err(rpc_err)?;
        Ok(())
    }

    /// GETATTR.
    pub async fn getattr(&self, oid: OstId) -> Result<OstAttr, RpcError> {
        Ok(self.call(Op::OstGetattr, ReqKind::Read, &Self::obj(oid)).await?.0)
    }

    /// SETATTR (the reply's version is the change's transno).
    pub async fn setattr(&self, s: OstSetattr) -> Result<OstAttr, RpcError> {
        let (mut a, t): (OstAttr, _) = self.call(Op::OstSetattr, ReqKind::Modify, &s).await?;
        a.version = t.0;
        Ok(a)
    }

    /// PUNCH.
    pub async fn punch(&self, oid: OstId, mode: u32, start: u64, len: u64) -> Result<OstAttr, RpcError> {
        let p = OstPunch { oid, mode, start, len };
        let (mut a, t): (OstAttr, _) = self.call(Op::OstPunch, ReqKind::Modify, &p).await?;
        a.version = t.0;
        Ok(a)
    }

    /// SYNC: returns the last committed transno.
    pub async fn sync(&self) -> Result<OstIds, RpcError> {
        Ok(self.call(Op::OstSync, ReqKind::Read, &Self::obj(OstId::default())).await?.0)
    }

    /// STATFS.
    pub async fn statfs(&self) -> Result<OstStatfs, RpcError> {
        Ok(self.call(Op::OstStatfs, ReqKind::Read, &Self::obj(OstId::default())).await?.0)
    }

    /// Sequence `seq`'s last object id (OST_GET_INFO).
    pub async fn last_id(&self, seq: u64) -> Result<OstIds, RpcError> {
        Ok(self.call(Op::OstGetInfo, ReqKind::Read, &Self::obj(OstId::new(seq, 0))).await?.0)
    }

    /// Pages holding `data`.
    pub fn pages(&self, data: &[u8]) -> Result<MdBuffer, RpcError> {
        let mut b = MdBuffer::from_pages_len(self.lnet.pool(0).alloc_bytes(data.len())?, data.len());
        b.write_at(0, data);
        Ok(b)
    }

    /// Writes `data` at `offset` of `oid` (one niobuf).
    pub async fn write(&self, oid: OstId, offset: u64, data: &[u8]) -> Result<OstBrwReply, RpcError> {
        let len = u32::try_from(data.len()).map_err(|_| RpcError::Encode("write over 4 GiB".into()))?;
        let buf = self.pages(data)?;
        Ok(self.write_pages(oid, &[Niobuf { offset, len, flags: 0 }], buf).await?.0)
    }

    /// Writes the runs `niobufs` from `buf` (laid end to end); returns the
    /// reply (its version is the write's transno) and the transno. The
    /// import keeps the pages until the write is committed.
    pub async fn write_pages(
        &self,
        oid: OstId,
        niobufs: &[Niobuf],
        buf: MdBuffer,
    ) -> Result<(OstBrwReply, u64), RpcError> {
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
        let niobufs = niobufs.to_vec();
        let header = if self.short_io(buf.len()) {
            // Short I/O: the data in the request (kept with it for a
            // resend or replay), no bulk round trip.
            let mut inline = vec![0; buf.len()];
            buf.read_at(0, &mut inline);
            let len = u32::try_from(inline.len()).map_err(|_| RpcError::Encode("short write over 4 GiB".into()))?;
            let bulk = BulkDesc {
                match_bits: 0,
                len,
                cksum_type: if cksum { CKSUM_CRC32C } else { 0 },
                cksum: if cksum { checksum(&buf) } else { 0 },
            };
            let b = OstBrw { oid, niobufs, cksums, bulk, inline };
            self.imp()?.rpc(Op::OstWrite, ReqKind::Modify, &b).await.map_err(rpc_err)?
        } else {
            let bulk = BulkAttachment { pages: buf, dir: BulkDir::Source, checksum: cksum };
            let make = move |bulk: BulkDesc| OstBrw { oid, niobufs, cksums, bulk, inline: Vec::new() };
            self.imp()?.rpc_bulk(Op::OstWrite, ReqKind::Modify, bulk, make).await.map_err(rpc_err)?.reply
        };
        let mut reply: OstBrwReply = body(&header)?;
        let transno = header.header.transno.0;
        reply.version = transno;
        self.grant.store(reply.grant, Ordering::Release);
        Ok((reply, transno))
    }

    /// Pages for `len` bytes of read data.
    fn read_buffer(&self, len: usize) -> Result<MdBuffer, RpcError> {
        Ok(MdBuffer::from_pages_len(self.lnet.pool(0).alloc_bytes(len)?, len))
    }

    /// Reads `len` bytes at `offset` of `oid`.
    pub async fn read(&self, oid: OstId, offset: u64, len: u32) -> Result<Vec<u8>, RpcError> {
        let buf = self.read_buffer(len as usize)?;
        let (_, buf) = self.read_pages(oid, &[Niobuf { offset, len, flags: 0 }], buf).await?;
        let mut v = vec![0; len as usize];
        buf.read_at(0, &mut v);
        Ok(v)
    }

    /// Reads the runs `niobufs` into `buf` (end to end). With checksums
    /// the pages' CRC32C must match the target's, else the read is issued
    /// again (up to `read_retries` more times); so is a read whose reply
    /// came without its data. The pages returned hold the data (not
    /// always `buf`'s).
    pub async fn read_pages(
        &self,
        oid: OstId,
        niobufs: &[Niobuf],
        mut buf: MdBuffer,
    ) -> Result<(OstBrwReply, MdBuffer), RpcError> {
        let cksum = self.checksums();
        let attempts = 1 + self.cfg.read_retries;
        let want = buf.len();
        for attempt in 1..=attempts {
            let niobufs = niobufs.to_vec();
            let bulk = BulkAttachment { pages: buf, dir: BulkDir::Sink, checksum: cksum };
            let r = self
                .imp()?
                .rpc_bulk(Op::OstRead, ReqKind::Read, bulk, move |bulk: BulkDesc| OstBrw {
                    oid,
                    niobufs,
                    cksums: Vec::new(),
                    bulk,
                    inline: Vec::new(),
                })
                .await;
            let r = match r.map_err(rpc_err) {
                // The reply came but the data did not land whole (the
                // connection failed after the target sent it): the pages
                // are back and the read is issued again, as Lustre redoes
                // a BRW that ended in a recoverable error.
                Err(e @ RpcError::BulkMissing { .. }) if attempt < attempts => {
                    tracing::warn!(target_name = %self.target, %oid, attempt, err = %e, "bulk read lost; reading again");
                    buf = self.read_buffer(want)?;
                    continue;
                }
                r => r?,
            };
            let reply: OstBrwReply = body(&r.reply)?;
            buf = r.pages.ok_or_else(|| RpcError::Encode("a read's pages did not come back".into()))?;
            if !cksum || checksum(&buf) == reply.cksum {
                return Ok((reply, buf));
            }
            tracing::warn!(target_name = %self.target, %oid, attempt, "bulk read checksum mismatch");
        }
        Err(RpcError::BulkChecksum { attempts })
    }
}
