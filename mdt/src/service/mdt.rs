//! The MDT's operations on decoded bodies (`MDS_*` opcodes and
//! `SEQ_QUERY`), shared by the target framework's service (updates, under
//! the target's lock: `crate::tgt::service`) and front (reads, outside
//! it: `crate::tgt::front`).
//!
//! Getattr, lookup, getxattr and every reint arrive as [`MdsReq`] with
//! the caller's credentials, which the namespace checks (`crate::perm`).
//!
//! A modifying request's transno, pre-op versions and `last_committed`
//! travel in the reply header (the target sets them); the body carries
//! the attributes, layout and open handle.
//!
//! Must not: block on the network except through the allocator's
//! precreate of an empty pool, or decide anything about exports,
//! transnos or recovery (the target does).

use std::sync::Arc;
use std::time::Instant;

use ptlrpc::driver::Errno;
use ptlrpc::ldlm::InodeBits;
use ptlrpc::wire::ldlm::LdlmLockDesc;
use ptlrpc::wire::mds::{
    CloseReq, Creds, GetInfoReply, GetInfoReq, GetattrReq, GetxattrReq, LookupReq, MdsReq, MdtOstState, ReaddirReq,
    ReintReply, ReintReq, SeqQueryReq, SeqRange, XattrReply, open_flags, seq_op,
};
use ptlrpc::wire::{Fid, Frame, Op, WireBody};

use super::metrics::MdtMetrics;
use crate::inode::{Kind, S_IFDIR, S_IFMT};
use crate::mgs::follow::Progress;
use crate::ns::{CreateArgs, Done, Namespace, SetattrArgs};

/// Archives a reply body.
pub fn encode<B>(body: &B) -> Result<Vec<u8>, Errno>
where
    B: WireBody,
{
    rkyv::to_bytes::<rkyv::rancor::Error>(body).map(|b| b.to_vec()).map_err(|_| Errno::EIO)
}

/// Grants a protected-read lock on a FID with the given bits to the
/// client of the request being run (`None`: refused).
pub type Grant<'a> = &'a dyn Fn(Fid, InodeBits) -> Option<LdlmLockDesc>;

/// A modifying request's reply.
#[derive(Debug, Clone)]
pub struct Modified {
    /// The body sent.
    pub body: Vec<u8>,
    /// The body kept for a resend's reconstruction (no locks).
    pub kept: Vec<u8>,
}

fn reint_reply(done: &Done, attr: Option<ptlrpc::wire::mds::MdtAttr>) -> ReintReply {
    ReintReply {
        attr,
        layout: None,
        handle: 0,
        pre_versions: done.pre_versions.clone(),
        post_version: done.transno,
        locks: Vec::new(),
    }
}

/// The metrics name of a request.
pub fn op_name(op: Op, reint: Option<&ReintReq>) -> &'static str {
    match reint {
        Some(ReintReq::Create { mode, .. }) => match Kind::of(*mode & S_IFMT) {
            Some(Kind::Dir) => "mkdir",
            Some(Kind::Symlink) => "symlink",
            Some(Kind::Special) => "mknod",
            _ => "create",
        },
        Some(ReintReq::Setattr { .. }) => "setattr",
        Some(ReintReq::Link { .. }) => "link",
        Some(ReintReq::Unlink { dir: true, .. }) => "rmdir",
        Some(ReintReq::Unlink { .. }) => "unlink",
        Some(ReintReq::Rename { .. }) => "rename",
        Some(ReintReq::Open { .. }) => "open",
        Some(ReintReq::Setxattr { .. }) => "setxattr",
        None => match op {
            Op::MdsGetattr => "getattr",
            Op::MdsGetattrName => "lookup",
            Op::MdsClose => "close",
            Op::MdsReadpage => "readdir",
            Op::MdsStatfs => "statfs",
            Op::MdsGetxattr => "getxattr",
            Op::MdsGetRoot => "getroot",
            Op::MdsConnect => "connect",
            Op::MdsDisconnect => "disconnect",
            Op::MdsSync => "sync",
            Op::MdsGetInfo => "get_info",
            Op::SeqQuery => "seq_query",
            Op::ObdPing => "ping",
            _ => "other",
        },
    }
}

/// Whether `op` only reads (served by the front outside the target lock).
/// `MDS_SYNC` is here too: the front asks the target to commit.
pub fn is_read(op: Op) -> bool {
    matches!(
        op,
        Op::MdsGetattr
            | Op::MdsGetattrName
            | Op::MdsReadpage
            | Op::MdsStatfs
            | Op::MdsGetxattr
            | Op::MdsGetRoot
            | Op::MdsGetInfo
            | Op::MdsSync
            | Op::SeqQuery
    )
}

/// The MDT's operations.
pub struct MdtOps {
    /// The namespace.
    pub ns: Arc<Namespace>,
    /// Metrics.
    pub metrics: Arc<MdtMetrics>,
    /// Config-log progress (for `config_applied`).
    pub progress: Arc<Progress>,
}

impl std::fmt::Debug for MdtOps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MdtOps").field("ns", &self.ns).finish_non_exhaustive()
    }
}

impl MdtOps {
    fn get_info(&self, r: &GetInfoReq) -> Result<Vec<u8>, Errno> {
        let ns = &self.ns;
        let bound = std::time::Duration::from_millis(u64::from(r.wait_ms)).min(crate::mgs::MAX_WAIT);
        let mut problems = Vec::new();
        let value = match r.key.as_str() {
            "config_applied" => self.progress.wait_applied(r.at_least, bound),
            "last_committed" => ns.txn().committed(),
            "osts_usable" => ns.alloc().wait_usable(r.at_least as usize, bound) as u64,
            // Recovery over: the previous boot's orphans no replayed open
            // holds are destroyed, and OSTs are reached.
            "recovered" => ns.wait_orphan_cleanups(r.at_least, bound),
            // An administrator's "flush the destroy log now": answers what is
            // still pending afterwards.
            "process_destroys" => ns.process_destroys(4096)?.1 as u64,
            // The namespace checker, then every OST asked about every
            // object of its sequences (`crate::check`): the value is the
            // number of problems, listed in `problems`.
            "check" => {
                problems = crate::check::check_ns(ns)?.problems;
                problems.extend(crate::check::check_osts(ns)?.problems);
                problems.len() as u64
            }
            _ => return Err(Errno::EINVAL),
        };
        let osts = ns
            .alloc()
            .report()
            .into_iter()
            .map(|o| MdtOstState {
                index: o.index,
                active: o.active,
                connected: o.connected,
                seq: o.seq,
                last_used: o.last_used,
            })
            .collect();
        let pools = ns.alloc().pools().into_iter().map(|(n, m)| (n, m.into_iter().collect())).collect();
        encode(&GetInfoReply { value, osts, pools, problems })
    }

    /// A read (see [`is_read`] — `MDS_SYNC` excepted, which needs the
    /// target): its reply body.
    /// `uuid` is the client asking (a `SEQ_QUERY` grant is its own).
    pub fn read(&self, uuid: &str, frame: &Frame<'_>) -> Result<Vec<u8>, Errno> {
        let start = Instant::now();
        let op = frame.op();
        let res = self.read_inner(uuid, op, frame);
        self.metrics.observe("mdt", op_name(op, None), start.elapsed(), res.is_err());
        res
    }

    fn read_inner(&self, uuid: &str, op: Op, frame: &Frame<'_>) -> Result<Vec<u8>, Errno> {
        let ns = &self.ns;
        match op {
            Op::MdsGetRoot => encode(&Fid::ROOT),
            Op::MdsGetattr => {
                let MdsReq { creds, req: r, .. } = frame.deserialize::<MdsReq<GetattrReq>>()?;
                encode(&ns.getattr_as(&creds, r.fid, r.access)?)
            }
            Op::MdsGetattrName => {
                let MdsReq { creds, req: r, .. } = frame.deserialize::<MdsReq<LookupReq>>()?;
                encode(&ns.lookup_as(&creds, r.parent, &r.name)?)
            }
            Op::MdsReadpage => {
                let r: ReaddirReq = frame.deserialize()?;
                encode(&ns.readdir(r.fid, r.cookie, r.max_entries)?)
            }
            Op::MdsStatfs => encode(&ns.statfs()),
            Op::MdsGetxattr => {
                let MdsReq { creds, req: r, .. } = frame.deserialize::<MdsReq<GetxattrReq>>()?;
                let rep = if r.name.is_empty() {
                    XattrReply { names: ns.listxattr(r.fid)?, ..XattrReply::default() }
                } else {
                    XattrReply { value: ns.getxattr_as(&creds, r.fid, &r.name)?, ..XattrReply::default() }
                };
                encode(&rep)
            }
            Op::MdsGetInfo => self.get_info(&frame.deserialize::<GetInfoReq>()?),
            Op::SeqQuery => {
                let r: SeqQueryReq = frame.deserialize()?;
                if r.op != seq_op::ALLOC_META {
                    return Err(Errno::EINVAL);
                }
                let g = ns.grant_seqs(uuid, r.count)?;
                encode(&SeqRange { start: g.start, end: g.end, width: crate::fid::SEQ_WIDTH, mdt_index: 0 })
            }
            _ => Err(Errno::EOPNOTSUPP),
        }
    }

    /// A replay by client `uuid` of an update that ran already (committed
    /// before the restart, or earlier in this recovery): an open's handle
    /// is restored for `uuid` (the file by FID, if it still exists);
    /// nothing else to do.
    pub fn replay_executed(&self, uuid: &str, frame: &Frame<'_>) {
        if frame.op() != Op::MdsReint {
            return;
        }
        if let Ok(MdsReq { req: ReintReq::Open { replay: Some(r), flags, .. }, .. }) =
            frame.deserialize::<MdsReq<ReintReq>>()
        {
            self.ns.restore_open(uuid, r.handle, r.fid, flags);
        }
    }

    /// A resent open answered from its reply slot (`reply`): the handle
    /// that reply names is opened again for `uuid` if this process does
    /// not have it (its reply was lost in a restart).
    pub fn reconstruct_open(&self, uuid: &str, frame: &Frame<'_>, reply: &[u8]) {
        if frame.op() != Op::MdsReint {
            return;
        }
        let Ok(MdsReq { req: ReintReq::Open { flags, .. }, .. }) = frame.deserialize::<MdsReq<ReintReq>>() else {
            return;
        };
        let mut aligned = rkyv::util::AlignedVec::<{ ptlrpc::wire::BODY_ALIGN }>::with_capacity(reply.len());
        aligned.extend_from_slice(reply);
        let Ok(r) = rkyv::from_bytes::<ReintReply, rkyv::rancor::Error>(&aligned) else { return };
        if let (Some(attr), true) = (r.attr, r.handle != 0) {
            self.ns.restore_open(uuid, r.handle, attr.fid, flags);
        }
    }

    /// The export of `uuid` is gone: its open handles are closed
    /// (`crate::ns::Namespace::close_owner`).
    pub fn export_gone(&self, uuid: &str) {
        match self.ns.close_owner(uuid) {
            Ok(c) => {
                self.metrics.gone_handles_closed.inc_by(c.handles as u64);
                self.metrics.gone_orphans_destroyed.inc_by(c.destroyed as u64);
            }
            Err(e) => tracing::error!(client = uuid, error = %e, "closing a gone export's open handles"),
        }
    }

    /// A modifying request (`MDS_REINT`, `MDS_CLOSE`) of client `uuid`:
    /// runs it on the namespace (deferred: the change is left in the
    /// namespace for the target) and returns the reply body.
    pub fn modify(&self, uuid: &str, frame: &Frame<'_>) -> Result<Vec<u8>, Errno> {
        self.modify_granting(uuid, frame, None).map(|m| m.body)
    }

    /// [`MdtOps::modify`], with the read locks the request may come back
    /// with granted through `grant` (a file an open with
    /// [`open_flags::LOCK`] created: LOOKUP|UPDATE on it, Lustre's open
    /// lock; `None`: no lock manager, or a replay).
    pub fn modify_granting(&self, uuid: &str, frame: &Frame<'_>, grant: Option<Grant<'_>>) -> Result<Modified, Errno> {
        let start = Instant::now();
        let op = frame.op();
        let (name, res) = match op {
            Op::MdsReint => {
                let MdsReq { creds, req: r, .. } = frame.deserialize::<MdsReq<ReintReq>>()?;
                let name = op_name(op, Some(&r));
                (name, self.reint(uuid, &creds, r, grant))
            }
            Op::MdsClose => {
                let r: CloseReq = frame.deserialize()?;
                // Asked first: the close changes the open table.
                let after = self.ns.attr_after_close(uuid, r.handle, r.som);
                let res = self.ns.close_by(uuid, r.handle, r.som).map_err(Errno::from);
                if matches!(res, Err(e) if e.0 == crate::error::errno::ESTALE) {
                    self.metrics.stale_handles_refused.inc();
                }
                ("close", res.map(|d| reint_reply(&d, after)))
            }
            _ => ("other", Err(Errno::EOPNOTSUPP)),
        };
        let res = res.and_then(|rep| {
            let body = encode(&rep)?;
            // A reconstructed reply grants nothing (the locks may be gone
            // with a restart, and the client has dropped its own).
            let kept =
                if rep.locks.is_empty() { body.clone() } else { encode(&ReintReply { locks: Vec::new(), ..rep })? };
            Ok(Modified { body, kept })
        });
        self.metrics.observe("mdt", name, start.elapsed(), res.is_err());
        if let Err(e) = &res {
            tracing::debug!(op = name, errno = e.0, "mdt request failed");
        }
        res
    }

    fn reint(&self, uuid: &str, c: &Creds, r: ReintReq, grant: Option<Grant<'_>>) -> Result<ReintReply, Errno> {
        let ns = &self.ns;
        match r {
            ReintReq::Create { parent, name, mode, rdev, uid, gid, time, symlink, stripe, fid, replay, lock } => {
                let replayed = replay.is_some();
                let replay_layout = replay.map(|r| r.layout);
                let a = CreateArgs {
                    creds: c.clone(),
                    mode,
                    rdev,
                    uid,
                    gid,
                    time,
                    symlink,
                    stripe,
                    fid,
                    replay_layout,
                    client: uuid.to_string(),
                };
                let (i, done) = ns.create(parent, &name, &a)?;
                let mut rep = reint_reply(&done, Some(i.attr()));
                // A new directory, locked for its creator (who then knows
                // every name in it until another client's change there
                // calls the lock back).
                let dir = mode & S_IFMT == S_IFDIR;
                if let Some(g) = grant.filter(|_| lock && dir && !replayed) {
                    rep.locks.extend(g(i.fid, InodeBits::LOOKUP | InodeBits::UPDATE));
                }
                rep.layout = i.layout;
                Ok(rep)
            }
            ReintReq::Setattr { fid, valid, mode, uid, gid, size, atime, mtime, ctime, default_stripe } => {
                let a =
                    SetattrArgs { creds: c.clone(), valid, mode, uid, gid, size, atime, mtime, ctime, default_stripe };
                let (i, done) = ns.setattr(fid, &a)?;
                Ok(reint_reply(&done, Some(i.attr())))
            }
            ReintReq::Link { fid, parent, name, time } => {
                Ok(reint_reply(&ns.link_as(c, fid, parent, &name, time)?, None))
            }
            ReintReq::Unlink { parent, name, dir, time } => {
                Ok(reint_reply(&ns.unlink_as(c, parent, &name, dir, time)?, None))
            }
            ReintReq::Rename { src_parent, src_name, dst_parent, dst_name, time } => {
                Ok(reint_reply(&ns.rename_as(c, src_parent, &src_name, dst_parent, &dst_name, time)?, None))
            }
            ReintReq::Open { parent, name, by_fid, flags, mode, uid, gid, time, stripe, fid, replay } => {
                let a = CreateArgs { creds: c.clone(), mode, uid, gid, time, stripe, fid, ..CreateArgs::default() };
                let replayed = replay.is_some();
                let o = ns.open_as(uuid, parent, &name, by_fid, flags, &a, replay.as_ref())?;
                let mut rep = reint_reply(&o.done, Some(o.inode.attr()));
                // Created by this open (it has the FID the client chose).
                let created = fid.is_some_and(|f| f == o.inode.fid) && flags & open_flags::CREAT != 0;
                if let Some(g) = grant.filter(|_| created && !replayed && flags & open_flags::LOCK != 0) {
                    rep.locks.extend(g(o.inode.fid, InodeBits::LOOKUP | InodeBits::UPDATE));
                }
                rep.layout = o.inode.layout;
                rep.handle = o.handle;
                Ok(rep)
            }
            ReintReq::Setxattr { fid, name, value, flags } => {
                Ok(reint_reply(&ns.setxattr_as(c, fid, &name, &value, flags)?, None))
            }
        }
    }
}
