//! The OST's front hook on ptlrpc's target driver: the work of a request
//! that runs outside the target's lock.
//!
//! Owns: [`OstFront`] — for a WRITE, after the target admitted it (export,
//! stage; not executed already): the checks, the space admission (ENOSPC
//! before any data moves; replays of acknowledged writes are not
//! refused), the bulk GET of the client's pages with the driver's CRC32C
//! check and retries — or, for a short write (`OstBrw::inline`, short
//! I/O when negotiated: one round trip), the data from the request with
//! the same checks —, the per-niobuf CRC32C check, then the pages handed
//! to the target with the request (only the data write and the index
//! batch run under its lock); READ, GETATTR, STATFS, GET_INFO and SYNC
//! served here after the target's admission (refused during recovery by
//! the framework's rules; GETATTR on lnet's receive path, no worker
//! hop, [`TargetFront::inline`]), SYNC waiting for the commit thread, a READ
//! answered from its PUT's completion on lnet's thread (no worker waits
//! for the transfer; its accounted time ends when the PUT starts);
//! everything else passed to the target as it is; per-operation
//! accounting. A write's bulk transfer that fails (not a checksum
//! mismatch) gets no reply: the client's import resends the request; a
//! read's is answered with its errno. Once the target is stopping
//! every request is answered -ESHUTDOWN (the client's notice to reconnect
//! later).
//!
//! Must not: decide transnos, reconstruction or recovery (the target
//! does), or panic on any request: a bad one is an errno.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lnet::MdBuffer;
use ptlrpc::driver::{BulkError, Errno, Gate, ReqCtx, Request, TargetFront, checksum};
use ptlrpc::target::{Admission, Admitted};
use ptlrpc::wire::ost::SHORT_IO_BYTES;
use ptlrpc::wire::{Op, OstBrw, OstBrwReply, OstCreate, OstIds, OstObj, WireBody, connect_flags};

use crate::error::OstError;
use crate::service::{OstInput, OstService};
use crate::target::Ost;

/// How long SYNC waits for its commit.
pub const SYNC_BOUND: Duration = Duration::from_secs(60);

/// The front of one target.
#[derive(Debug)]
pub struct OstFront {
    ost: Arc<Ost>,
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

fn proto(e: Errno) -> OstError {
    OstError::Invalid(format!("malformed body (errno {})", e.0))
}

fn archived<T>(b: &T) -> Result<Vec<u8>, OstError>
where
    T: WireBody,
{
    rkyv::to_bytes::<rkyv::rancor::Error>(b).map(|v| v.to_vec()).map_err(|e| OstError::Invalid(e.to_string()))
}

impl OstFront {
    /// The front of `ost`.
    pub fn new(ost: Arc<Ost>) -> OstFront {
        OstFront { ost }
    }

    /// A CREATE (precreate): its object files are made here, outside the
    /// target's lock, before the target runs it (`Ost::premake`): an
    /// admitted, new one only (not a resend the target answers from the
    /// client's record, nor a replay).
    fn create(&self, req: &Request, ctx: &mut ReqCtx<'_>, gate: &Gate<'_, OstService>) -> Result<(), OstError> {
        match gate.admit(ctx) {
            Admission::Refused => return Ok(()),
            Admission::Admitted(a) if !a.executed && !a.replay => {
                let b: OstCreate = req.body().map_err(proto)?;
                self.ost.premake(b.seq, b.count);
            }
            Admission::Admitted(_) | Admission::Pass => {}
        }
        gate.submit(ctx, OstInput::default()).map_err(|e| OstError::Invalid(format!("errno {}", e.0)))
    }

    /// A WRITE the target admitted: space, data, checks, then the target.
    fn write(
        &self,
        req: &Request,
        ctx: &mut ReqCtx<'_>,
        gate: &Gate<'_, OstService>,
        a: &Admitted,
    ) -> Result<(), OstError> {
        let b: OstBrw = req.body().map_err(proto)?;
        // On the receive path only a short write to an object whose file
        // is open: a bulk GET or an open may wait. Declined before any
        // change (the data is written under the target's lock, by the
        // store, when the gate's submit runs).
        if gate.is_inline() && (b.inline.is_empty() || !self.ost.object_open(b.oid)) {
            gate.decline();
            return Ok(());
        }
        let cksum = a.data.flags & connect_flags::CKSUM != 0;
        if cksum && !b.bulk.checksummed() {
            return Err(OstError::Invalid("checksums negotiated but the BRW carries none".into()));
        }
        if !b.cksums.is_empty() && b.cksums.len() != b.niobufs.len() {
            return Err(OstError::Invalid("one checksum per niobuf".into()));
        }
        let runs = self.ost.runs(&b.niobufs, b.bulk.len, a.data.brw_size)?;
        self.ost.record(b.oid)?;
        // Space first: a write the target cannot keep is refused before
        // its data moves. A replay was acknowledged before: it goes on.
        let space = if a.replay { None } else { Some(self.ost.admit_write(&a.uuid, runs.len)?) };
        let fetched = if b.inline.is_empty() {
            match ctx.bulk_get(&b.bulk) {
                // The transfer itself failed (the client stopped answering,
                // a link went down): no reply, as Lustre aborts a bulk. The
                // client's import resends the request when its deadline
                // passes, its pages still posted.
                Err(e @ (BulkError::Lnet(_) | BulkError::Timeout | BulkError::Short { .. })) => {
                    if let Some(s) = space {
                        self.ost.written(&a.uuid, s);
                    }
                    tracing::warn!(peer = %req.peer(), xid = req.xid().0, err = %e, "bulk GET failed; no reply, the client resends");
                    return Ok(());
                }
                other => other.map_err(OstError::from),
            }
        } else {
            self.short_io(ctx, a, &b)
        };
        let fetched = fetched.and_then(|data| {
            let mut pos = 0usize;
            for (i, (n, want)) in b.niobufs.iter().zip(&b.cksums).enumerate() {
                let got = data.io_slices(pos, n.len as usize).iter().fold(0, |c, s| crc32c::crc32c_append(c, s));
                pos += n.len as usize;
                if got != *want {
                    return Err(OstError::Checksum { index: i });
                }
            }
            Ok(data)
        });
        let result = fetched.and_then(|data| {
            let grant = self.ost.grant_of(&a.uuid);
            gate.submit(ctx, OstInput { pages: Some(data), grant })
                .map_err(|e| OstError::Invalid(format!("errno {}", e.0)))
        });
        if let Some(s) = space {
            self.ost.written(&a.uuid, s);
        }
        result
    }

    /// A short write's data (`OstBrw::inline`), as pages; checked as a
    /// bulk GET's would be. A malformed one is an error reply (resending
    /// it would not help); a checksum mismatch is answered as a bulk one
    /// is (`EINPROGRESS`: the client resends).
    fn short_io(&self, ctx: &mut ReqCtx<'_>, a: &Admitted, b: &OstBrw) -> Result<MdBuffer, OstError> {
        if a.data.flags & connect_flags::SHORTIO == 0 {
            return Err(OstError::Invalid("data in a write request, short I/O not negotiated".into()));
        }
        if b.inline.len() != b.bulk.len as usize || b.inline.len() > SHORT_IO_BYTES {
            return Err(OstError::Invalid(format!(
                "{} bytes in a write request naming {} (at most {SHORT_IO_BYTES})",
                b.inline.len(),
                b.bulk.len
            )));
        }
        let mut buf = ctx.alloc_bulk(b.inline.len()).map_err(OstError::from)?;
        buf.write_at(0, &b.inline);
        if b.bulk.checksummed() && checksum(&buf) != b.bulk.cksum {
            return Err(OstError::Checksum { index: 0 });
        }
        Ok(buf)
    }

    /// A read-only request the target admitted: answered here — a READ
    /// once its pages have left for the client (`None`: the transfer
    /// answers it, [`Gate::bulk_put_then_reply`]; no worker waits for it),
    /// the others with the returned body.
    fn read(
        &self,
        req: &Request,
        ctx: &mut ReqCtx<'_>,
        gate: &Gate<'_, OstService>,
        a: &Admitted,
    ) -> Result<Option<Vec<u8>>, OstError> {
        self.ost.check_running()?;
        let body = match req.op() {
            Op::OstRead => {
                let b: OstBrw = req.body().map_err(proto)?;
                let prep = self.ost.prepare_read(b.oid, &b.niobufs, b.bulk.len, a.data.brw_size)?;
                let mut buf = ctx.alloc_bulk(b.bulk.len as usize)?;
                // Disk reads wait without holding a running slot of the service.
                ctx.blocking(|| self.ost.read(&prep, &mut buf))?;
                let (peer, xid, desc, size) = (req.peer(), req.xid(), b.bulk, prep.size);
                gate.bulk_put_then_reply(ctx, a, &desc, buf, move |sent| {
                    let (_, cksum) = sent.map_err(|e| {
                        tracing::warn!(%peer, xid = xid.0, err = %e, "bulk PUT of a read failed");
                        -Errno::from(e).0
                    })?;
                    let reply = OstBrwReply {
                        len: desc.len,
                        cksum_type: desc.cksum_type,
                        cksum,
                        size,
                        ..OstBrwReply::default()
                    };
                    archived(&reply).map_err(|e| -e.errno())
                })
                .map_err(|e| OstError::Invalid(format!("bulk PUT not started: errno {}", e.0)))?;
                return Ok(None);
            }
            Op::OstGetattr => {
                let b: OstObj = req.body().map_err(proto)?;
                if !gate.is_inline() {
                    archived(&self.ost.getattr(b.oid)?)
                } else {
                    match self.ost.getattr_cached(b.oid)? {
                        Some(a) => archived(&a),
                        // Opening the file may wait for the disk: a worker does it.
                        None => {
                            gate.decline();
                            return Ok(None);
                        }
                    }
                }
            }
            Op::OstStatfs => archived(&self.ost.statfs()?),
            Op::OstGetInfo => {
                let b: OstObj = req.body().map_err(proto)?;
                archived(&OstIds { last_id: self.ost.last_id(b.oid.seq).0, last_committed: self.ost.committed() })
            }
            Op::OstSync => {
                // Waiting for the commit thread holds no running slot.
                let b: OstObj = req.body().map_err(proto)?;
                let lc = ctx.blocking(|| self.ost.sync(SYNC_BOUND))?;
                archived(&OstIds { last_id: self.ost.last_id(b.oid.seq).0, last_committed: lc })
            }
            op => Err(OstError::Invalid(format!("{} is not an OST read", op.name()))),
        };
        body.map(Some)
    }

    fn handle_inner(&self, req: &Request, ctx: &mut ReqCtx<'_>, gate: &Gate<'_, OstService>) -> Result<(), OstError> {
        // Stopping (SIGTERM): every request, PING and CONNECT included, is
        // answered -ESHUTDOWN without being done; the client's import goes
        // to DISCON and reconnects, resends and replays once the target is
        // back, instead of timing out or failing its caller.
        self.ost.check_running()?;
        let op = req.op();
        let reads = matches!(op, Op::OstRead | Op::OstGetattr | Op::OstStatfs | Op::OstGetInfo | Op::OstSync);
        if op == Op::OstCreate {
            return self.create(req, ctx, gate);
        }
        if !reads && op != Op::OstWrite {
            return gate.submit(ctx, OstInput::default()).map_err(|e| OstError::Invalid(format!("errno {}", e.0)));
        }
        let a = match gate.admit(ctx) {
            Admission::Admitted(a) => a,
            Admission::Refused => return Ok(()),
            Admission::Pass => {
                return gate.submit(ctx, OstInput::default()).map_err(|e| OstError::Invalid(format!("errno {}", e.0)));
            }
        };
        if op == Op::OstWrite {
            if a.executed {
                // The target answers it from the client's record.
                return gate.submit(ctx, OstInput::default()).map_err(|e| OstError::Invalid(format!("errno {}", e.0)));
            }
            return self.write(req, ctx, gate, &a);
        }
        match self.read(req, ctx, gate, &a) {
            Ok(None) => {}
            Ok(Some(body)) => gate.reply(ctx, &a, 0, &body),
            Err(e) => {
                log_refusal(req, &e);
                gate.reply(ctx, &a, -e.errno(), &[]);
            }
        }
        Ok(())
    }
}

fn log_refusal(req: &Request, e: &OstError) {
    match e {
        OstError::NoSpace { .. } | OstError::NoObject(_) | OstError::NotConnected(_) | OstError::ShuttingDown => {
            tracing::debug!(peer = %req.peer(), xid = req.xid().0, op = req.op().name(), err = %e, "refused");
        }
        _ => tracing::warn!(peer = %req.peer(), xid = req.xid().0, op = req.op().name(), err = %e, "failed"),
    }
}

impl TargetFront<OstService> for OstFront {
    /// GETATTR (a glimpse) is served on lnet's receive path when the
    /// object's file is open in the cache: its record and an `fstat`,
    /// harmless to run again if the gate declines; an object whose file is
    /// not open is declined there and served by a worker (opening it may
    /// wait for the disk).
    ///
    /// A short WRITE (its data in the request) to an object whose file is
    /// open is served there too: the data is written to the page cache by
    /// the store under the target's lock, which the gate takes only if it
    /// is free; a bulk write, or one to an object not open, is declined
    /// before anything changes and runs on a worker.
    fn inline(&self, req: &Request) -> bool {
        matches!(req.op(), Op::OstGetattr | Op::OstWrite)
    }

    fn handle(&self, req: &Request, ctx: &mut ReqCtx<'_>, gate: &Gate<'_, OstService>) -> Result<(), Errno> {
        let started = Instant::now();
        let result = self.handle_inner(req, ctx, gate);
        self.ost.account(op_name(req.op()), started.elapsed(), result.is_err());
        result.map_err(|e| {
            log_refusal(req, &e);
            Errno(e.errno())
        })
    }
}
