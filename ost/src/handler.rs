//! The OST service's request handler: decodes a request, runs it on its
//! target, moves bulk data, and answers with transnos.
//!
//! Owns: [`OstHandler`] — routing (CONNECT by target name, everything
//! else by the export handle's slot), the BRW sequence (admit space, then
//! GET the client's pages with the driver's CRC32C check and retries, then
//! verify each niobuf's CRC32C (sent when a BRW has more than one niobuf),
//! then write and record; reads fill pool
//! pages and PUT them), answers to resent modifying requests from the
//! reply cache (`resend`), and per-operation accounting.
//!
//! Must not: panic on any request; a bad one is an errno.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ptlrpc::driver::{Errno, Handler, Reply, ReqCtx, Request};
use ptlrpc::wire::{
    Op, OstBrw, OstBrwReply, OstConnect, OstConnectReply, OstCreate, OstCreateReply, OstIds, OstObj, OstPunch,
    OstSetattr,
};

use crate::error::OstError;
use crate::resend::{ReplyCache, Saved};
use crate::target::Ost;

/// How long SYNC waits for its commit.
pub const SYNC_BOUND: Duration = Duration::from_secs(60);

/// The handler of one OSS: its targets, by slot.
#[derive(Debug)]
pub struct OstHandler {
    targets: Vec<Arc<Ost>>,
    saved: ReplyCache,
}

impl OstHandler {
    /// A handler over `targets` (slot = position).
    pub fn new(targets: Vec<Arc<Ost>>) -> OstHandler {
        OstHandler { targets, saved: ReplyCache::default() }
    }

    /// The targets.
    pub fn targets(&self) -> &[Arc<Ost>] {
        &self.targets
    }

    fn by_handle(&self, handle: u64) -> Result<&Arc<Ost>, OstError> {
        self.targets.get(usize::from(Ost::slot_of(handle))).ok_or(OstError::NotConnected(handle))
    }

    fn committed(ost: &Ost, reply: Reply, transno: u64) -> Reply {
        reply.with_transno(transno.into(), ost.last_committed().into())
    }

    /// The reply saved for a resent request.
    fn resent(&self, handle: u64, xid: u64) -> Result<Option<(&Arc<Ost>, Reply)>, OstError> {
        let Some(saved) = self.saved.get(handle, xid) else { return Ok(None) };
        let ost = self.by_handle(handle)?;
        let bad = |e: Errno| OstError::Invalid(format!("reply (errno {})", e.0));
        let (r, t) = match saved {
            Saved::Create(b, t) => (Reply::new(&b).map_err(bad)?, t),
            Saved::Write(b, t) => (Reply::new(&b).map_err(bad)?, t),
            Saved::Attr(b, t) => (Reply::new(&b).map_err(bad)?, t),
            Saved::Empty(t) => (Reply::empty(), t),
        };
        tracing::debug!(handle, xid, "resent request answered from the reply cache");
        Ok(Some((ost, Self::committed(ost, r, t))))
    }

    fn dispatch(&self, req: &Request, ctx: &mut ReqCtx<'_>) -> Result<(Option<&Arc<Ost>>, Reply), OstError> {
        let xid = req.xid().0;
        let proto = |e: Errno| OstError::Invalid(format!("malformed body (errno {})", e.0));
        match req.op() {
            Op::OstConnect => {
                let b: OstConnect = req.body().map_err(proto)?;
                let ost = self
                    .targets
                    .iter()
                    .find(|t| t.name() == b.target)
                    .ok_or_else(|| OstError::Invalid(format!("no target {}", b.target)))?;
                let (handle, data) = ost.connect(&b.data)?;
                let r = Reply::new(&OstConnectReply { handle, data }).map_err(proto)?;
                Ok((Some(ost), Self::committed(ost, r, 0)))
            }
            Op::OstDisconnect => {
                let b: OstObj = req.body().map_err(proto)?;
                let ost = self.by_handle(b.handle)?;
                ost.disconnect(b.handle)?;
                Ok((Some(ost), Reply::empty()))
            }
            Op::OstCreate => {
                let b: OstCreate = req.body().map_err(proto)?;
                if let Some((o, r)) = self.resent(b.handle, xid)? {
                    return Ok((Some(o), r));
                }
                let ost = self.by_handle(b.handle)?;
                let (first, last_id, transno) = ost.create(b.handle, xid, b.count)?;
                let body = OstCreateReply { first, count: b.count, last_id };
                self.saved.put(b.handle, xid, Saved::Create(body, transno));
                let r = Reply::new(&body).map_err(proto)?;
                Ok((Some(ost), Self::committed(ost, r, transno)))
            }
            Op::OstDestroy => {
                let b: OstObj = req.body().map_err(proto)?;
                if let Some((o, r)) = self.resent(b.handle, xid)? {
                    return Ok((Some(o), r));
                }
                let ost = self.by_handle(b.handle)?;
                let transno = ost.destroy(b.handle, xid, b.oid)?;
                self.saved.put(b.handle, xid, Saved::Empty(transno));
                Ok((Some(ost), Self::committed(ost, Reply::empty(), transno)))
            }
            Op::OstGetattr => {
                let b: OstObj = req.body().map_err(proto)?;
                let ost = self.by_handle(b.handle)?;
                let a = ost.getattr(b.handle, b.oid)?;
                Ok((Some(ost), Self::committed(ost, Reply::new(&a).map_err(proto)?, 0)))
            }
            Op::OstSetattr => {
                let b: OstSetattr = req.body().map_err(proto)?;
                if let Some((o, r)) = self.resent(b.handle, xid)? {
                    return Ok((Some(o), r));
                }
                let ost = self.by_handle(b.handle)?;
                let (a, transno) = ost.setattr(xid, &b)?;
                self.saved.put(b.handle, xid, Saved::Attr(a, transno));
                Ok((Some(ost), Self::committed(ost, Reply::new(&a).map_err(proto)?, transno)))
            }
            Op::OstPunch => {
                let b: OstPunch = req.body().map_err(proto)?;
                if let Some((o, r)) = self.resent(b.handle, xid)? {
                    return Ok((Some(o), r));
                }
                let ost = self.by_handle(b.handle)?;
                let (a, transno) = ost.punch(xid, &b)?;
                self.saved.put(b.handle, xid, Saved::Attr(a, transno));
                Ok((Some(ost), Self::committed(ost, Reply::new(&a).map_err(proto)?, transno)))
            }
            Op::OstWrite => self.write(req, ctx),
            Op::OstRead => self.read(req, ctx),
            Op::OstSync => {
                let b: OstObj = req.body().map_err(proto)?;
                let ost = self.by_handle(b.handle)?;
                let lc = ost.sync(SYNC_BOUND)?;
                let r = Reply::new(&OstIds { last_id: ost.last_id(), last_committed: lc }).map_err(proto)?;
                Ok((Some(ost), Self::committed(ost, r, 0)))
            }
            Op::OstStatfs => {
                let b: OstObj = req.body().map_err(proto)?;
                let ost = self.by_handle(b.handle)?;
                let s = ost.statfs()?;
                Ok((Some(ost), Self::committed(ost, Reply::new(&s).map_err(proto)?, 0)))
            }
            Op::OstGetInfo => {
                let b: OstObj = req.body().map_err(proto)?;
                let ost = self.by_handle(b.handle)?;
                let r = Reply::new(&OstIds { last_id: ost.last_id(), last_committed: ost.last_committed() })
                    .map_err(proto)?;
                Ok((Some(ost), Self::committed(ost, r, 0)))
            }
            Op::ObdPing => Ok((None, Reply::empty())),
            op => Err(OstError::Invalid(format!("{} is not an OST operation", op.name()))),
        }
    }

    fn write(&self, req: &Request, ctx: &mut ReqCtx<'_>) -> Result<(Option<&Arc<Ost>>, Reply), OstError> {
        let b: OstBrw = req.body().map_err(|e| OstError::Invalid(format!("BRW body (errno {})", e.0)))?;
        if let Some((o, r)) = self.resent(b.handle, req.xid().0)? {
            return Ok((Some(o), r));
        }
        let ost = self.by_handle(b.handle)?;
        let cksum = ost.export_cksum(b.handle)?;
        if cksum && !b.bulk.checksummed() {
            return Err(OstError::Invalid("checksums negotiated but the BRW carries none".into()));
        }
        if !b.cksums.is_empty() && b.cksums.len() != b.niobufs.len() {
            return Err(OstError::Invalid("one checksum per niobuf".into()));
        }
        // Space first: a write the target cannot keep is refused before
        // its data moves.
        let prep = ost.prepare_write(b.handle, b.oid, &b.niobufs, b.bulk.len)?;
        let data = match ctx.bulk_get(&b.bulk) {
            Ok(d) => d,
            Err(e) => {
                ost.abort_write(prep);
                return Err(e.into());
            }
        };
        if !b.cksums.is_empty() {
            let mut pos = 0usize;
            for (i, (n, want)) in b.niobufs.iter().zip(&b.cksums).enumerate() {
                let got = data.io_slices(pos, n.len as usize).iter().fold(0, |c, s| crc32c::crc32c_append(c, s));
                pos += n.len as usize;
                if got != *want {
                    ost.abort_write(prep);
                    return Err(OstError::Checksum { index: i });
                }
            }
        }
        let w = ost.apply_write(prep, req.xid().0, &data)?;
        let body =
            OstBrwReply { len: b.bulk.len, cksum_type: 0, cksum: 0, size: w.size, version: w.version, grant: w.grant };
        self.saved.put(b.handle, req.xid().0, Saved::Write(body, w.transno));
        let r = Reply::new(&body).map_err(|e| OstError::Invalid(format!("reply (errno {})", e.0)))?;
        Ok((Some(ost), Self::committed(ost, r, w.transno)))
    }

    fn read(&self, req: &Request, ctx: &mut ReqCtx<'_>) -> Result<(Option<&Arc<Ost>>, Reply), OstError> {
        let b: OstBrw = req.body().map_err(|e| OstError::Invalid(format!("BRW body (errno {})", e.0)))?;
        let ost = self.by_handle(b.handle)?;
        let prep = ost.prepare_read(b.handle, b.oid, &b.niobufs, b.bulk.len)?;
        let mut buf = ctx.alloc_bulk(b.bulk.len as usize)?;
        // Disk reads wait: without holding a running slot of the service.
        ctx.blocking(|| ost.read(&prep, &mut buf))?;
        let (_, cksum) = ctx.bulk_put(&b.bulk, buf)?;
        let r = Reply::new(&OstBrwReply {
            len: b.bulk.len,
            cksum_type: b.bulk.cksum_type,
            cksum,
            size: prep.size,
            version: 0,
            grant: 0,
        })
        .map_err(|e| OstError::Invalid(format!("reply (errno {})", e.0)))?;
        Ok((Some(ost), Self::committed(ost, r, 0)))
    }
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::OstConnect => "connect",
        Op::OstDisconnect => "disconnect",
        Op::OstCreate => "create",
        Op::OstDestroy => "destroy",
        Op::OstGetattr => "getattr",
        Op::OstSetattr => "setattr",
        Op::OstPunch => "punch",
        Op::OstWrite => "write",
        Op::OstRead => "read",
        Op::OstSync => "sync",
        Op::OstStatfs => "statfs",
        Op::OstGetInfo => "get_info",
        Op::ObdPing => "ping",
        _ => "other",
    }
}

impl Handler for OstHandler {
    fn handle(&self, req: &Request, ctx: &mut ReqCtx<'_>) -> Result<Reply, Errno> {
        let started = Instant::now();
        let result = self.dispatch(req, ctx);
        let took = started.elapsed();
        match result {
            Ok((ost, reply)) => {
                if let Some(o) = ost {
                    o.account(op_name(req.op()), took, false);
                }
                Ok(reply)
            }
            Err(e) => {
                let errno = e.errno();
                match &e {
                    OstError::NoSpace { .. } | OstError::NoObject(_) | OstError::NotConnected(_) => {
                        tracing::debug!(peer = %req.peer(), xid = req.xid().0, op = req.op().name(), err = %e, "refused")
                    }
                    _ => {
                        tracing::warn!(peer = %req.peer(), xid = req.xid().0, op = req.op().name(), err = %e, "failed")
                    }
                }
                if let Some(o) = self.targets.first() {
                    // Errors before routing are counted on the first target.
                    o.account(op_name(req.op()), took, true);
                }
                Err(Errno(errno))
            }
        }
    }
}
