//! The MDT's request handler (`MDS_*` opcodes on the MDS portal).
//!
//! Every reply carries `last_committed`; a modifying request's reply also
//! carries its transno and, in the body, the objects' pre-op versions and
//! post-op version. Reply reconstruction for resent requests, per-client
//! records and replay after a restart are the target framework's
//! (`ptlrpc::target`), whose driver integration has not landed: this
//! handler executes what it receives (a resend after a lost reply runs
//! again — see the crate's report).
//!
//! Must not: block on the network except through the allocator's
//! precreate.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use lnet::Nid;
use parking_lot::Mutex;
use ptlrpc::driver::{Errno, Handler, Reply, ReqCtx, Request};
use ptlrpc::wire::mds::{
    CloseReq, GetInfoReply, GetInfoReq, GetattrReq, GetxattrReq, LookupReq, MdtOstState, ReaddirReq, ReintReply,
    ReintReq, SeqQueryReq, SeqRange, XattrReply, seq_op,
};
use ptlrpc::wire::{ConnectData, Fid, Op, Transno, connect_flags};

use super::metrics::MdtMetrics;
use crate::inode::{Kind, S_IFMT};
use crate::mgs::follow::Progress;
use crate::ns::{CreateArgs, Done, Namespace, SetattrArgs};
use crate::txn::Committer;

/// The MDT handler.
pub struct MdtHandler {
    ns: Arc<Namespace>,
    committer: Arc<Committer>,
    metrics: Arc<MdtMetrics>,
    progress: Arc<Progress>,
    peers: Mutex<HashSet<Nid>>,
}

impl std::fmt::Debug for MdtHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MdtHandler").field("ns", &self.ns).finish_non_exhaustive()
    }
}

fn reint_reply(done: &Done, attr: Option<ptlrpc::wire::mds::MdtAttr>) -> ReintReply {
    ReintReply { attr, layout: None, handle: 0, pre_versions: done.pre_versions.clone(), post_version: done.transno }
}

fn op_name(op: Op, reint: Option<&ReintReq>) -> &'static str {
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

impl MdtHandler {
    /// A handler over `ns`.
    pub fn new(
        ns: Arc<Namespace>,
        committer: Arc<Committer>,
        metrics: Arc<MdtMetrics>,
        progress: Arc<Progress>,
    ) -> MdtHandler {
        MdtHandler { ns, committer, metrics, progress, peers: Mutex::new(HashSet::new()) }
    }

    fn get_info(&self, r: &GetInfoReq) -> Result<Reply, Errno> {
        let bound = std::time::Duration::from_millis(u64::from(r.wait_ms)).min(crate::mgs::MAX_WAIT);
        let value = match r.key.as_str() {
            "config_applied" => self.progress.wait_applied(r.at_least, bound),
            "last_committed" => self.ns.txn().committed(),
            "osts_usable" => self.ns.alloc().wait_usable(r.at_least as usize, bound) as u64,
            // An administrator's "flush the destroy log now": answers what is
            // still pending afterwards.
            "process_destroys" => self.ns.process_destroys(4096)?.1 as u64,
            _ => return Err(Errno::EINVAL),
        };
        let osts = self
            .ns
            .alloc()
            .report()
            .into_iter()
            .map(|o| MdtOstState { index: o.index, active: o.active, connected: o.connected, last_used: o.last_used })
            .collect();
        let pools = self.ns.alloc().pools().into_iter().map(|(n, m)| (n, m.into_iter().collect())).collect();
        self.reply(&GetInfoReply { value, osts, pools }, 0)
    }

    fn committed(&self) -> Transno {
        Transno(self.ns.txn().committed())
    }

    fn reply<B>(&self, body: &B, transno: u64) -> Result<Reply, Errno>
    where
        B: for<'a> rkyv::Serialize<
                rkyv::api::high::HighSerializer<
                    rkyv::util::AlignedVec,
                    rkyv::ser::allocator::ArenaHandle<'a>,
                    rkyv::rancor::Error,
                >,
            >,
    {
        Ok(Reply::new(body)?.with_transno(Transno(transno), self.committed()))
    }

    fn reint(&self, r: ReintReq) -> Result<Reply, Errno> {
        let ns = &self.ns;
        match r {
            ReintReq::Create { parent, name, mode, rdev, uid, gid, time, symlink, stripe, fid } => {
                let a = CreateArgs { mode, rdev, uid, gid, time, symlink, stripe, fid };
                let (i, done) = ns.create(parent, &name, &a)?;
                let mut rep = reint_reply(&done, Some(i.attr()));
                rep.layout = i.layout;
                self.reply(&rep, done.transno)
            }
            ReintReq::Setattr { fid, valid, mode, uid, gid, size, atime, mtime, ctime, default_stripe } => {
                let a = SetattrArgs { valid, mode, uid, gid, size, atime, mtime, ctime, default_stripe };
                let (i, done) = ns.setattr(fid, &a)?;
                self.reply(&reint_reply(&done, Some(i.attr())), done.transno)
            }
            ReintReq::Link { fid, parent, name, time } => {
                let done = ns.link(fid, parent, &name, time)?;
                self.reply(&reint_reply(&done, None), done.transno)
            }
            ReintReq::Unlink { parent, name, dir, time } => {
                let done = ns.unlink(parent, &name, dir, time)?;
                self.reply(&reint_reply(&done, None), done.transno)
            }
            ReintReq::Rename { src_parent, src_name, dst_parent, dst_name, time } => {
                let done = ns.rename(src_parent, &src_name, dst_parent, &dst_name, time)?;
                self.reply(&reint_reply(&done, None), done.transno)
            }
            ReintReq::Open { parent, name, by_fid, flags, mode, uid, gid, time, stripe, fid } => {
                let a = CreateArgs { mode, uid, gid, time, stripe, fid, ..CreateArgs::default() };
                let o = ns.open(parent, &name, by_fid, flags, &a)?;
                let mut rep = reint_reply(&o.done, Some(o.inode.attr()));
                rep.layout = o.inode.layout;
                rep.handle = o.handle;
                self.reply(&rep, o.done.transno)
            }
            ReintReq::Setxattr { fid, name, value, flags } => {
                let done = ns.setxattr(fid, &name, &value, flags)?;
                self.reply(&reint_reply(&done, None), done.transno)
            }
        }
    }

    fn dispatch(&self, req: &Request, reint: Option<ReintReq>) -> Result<Reply, Errno> {
        let ns = &self.ns;
        match req.op() {
            Op::ObdPing | Op::MdsDisconnect => self.reply(&(), 0),
            Op::MdsConnect => {
                let cd: ConnectData = req.body()?;
                let flags = cd.flags & (connect_flags::VERSION | connect_flags::TRANSNO | connect_flags::MAX_EASIZE);
                let out = ConnectData {
                    flags,
                    version: cd.version,
                    max_easize: 64 << 10,
                    transno: ns.txn().committed(),
                    instance: ns.txn().epoch(),
                    client_uuid: cd.client_uuid,
                    ..ConnectData::default()
                };
                self.reply(&out, 0)
            }
            Op::MdsGetRoot => self.reply(&Fid::ROOT, 0),
            Op::SeqQuery => {
                let r: SeqQueryReq = req.body()?;
                if r.op != seq_op::ALLOC_META {
                    return Err(Errno::EINVAL);
                }
                let g = ns.grant_seqs(r.count)?;
                self.reply(&SeqRange { start: g.start, end: g.end, width: crate::fid::SEQ_WIDTH, mdt_index: 0 }, 0)
            }
            Op::MdsGetattr => {
                let r: GetattrReq = req.body()?;
                self.reply(&ns.getattr(r.fid)?, 0)
            }
            Op::MdsGetattrName => {
                let r: LookupReq = req.body()?;
                self.reply(&ns.lookup(r.parent, &r.name)?, 0)
            }
            Op::MdsReint => match reint {
                Some(r) => self.reint(r),
                None => Err(Errno::EPROTO),
            },
            Op::MdsClose => {
                let r: CloseReq = req.body()?;
                let done = ns.close(r.handle)?;
                self.reply(&reint_reply(&done, None), done.transno)
            }
            Op::MdsReadpage => {
                let r: ReaddirReq = req.body()?;
                self.reply(&ns.readdir(r.fid, r.cookie, r.max_entries)?, 0)
            }
            Op::MdsStatfs => self.reply(&ns.statfs(), 0),
            Op::MdsGetxattr => {
                let r: GetxattrReq = req.body()?;
                let rep = if r.name.is_empty() {
                    XattrReply { names: ns.listxattr(r.fid)?, ..XattrReply::default() }
                } else {
                    XattrReply { value: ns.getxattr(r.fid, &r.name)?, ..XattrReply::default() }
                };
                self.reply(&rep, 0)
            }
            Op::MdsGetInfo => self.get_info(&req.body::<GetInfoReq>()?),
            Op::MdsSync => {
                if !self.committer.commit_now(std::time::Duration::from_secs(30)) {
                    return Err(Errno::EIO);
                }
                self.reply(&(), 0)
            }
            _ => Err(Errno::EOPNOTSUPP),
        }
    }
}

impl Handler for MdtHandler {
    fn handle(&self, req: &Request, _ctx: &mut ReqCtx<'_>) -> Result<Reply, Errno> {
        let start = Instant::now();
        {
            let mut p = self.peers.lock();
            if p.insert(req.peer()) {
                self.metrics.exports.set(p.len() as i64);
            }
        }
        let reint = if req.op() == Op::MdsReint { Some(req.body::<ReintReq>()?) } else { None };
        let name = op_name(req.op(), reint.as_ref());
        let res = self.dispatch(req, reint);
        self.metrics.observe("mdt", name, start.elapsed(), res.is_err());
        if let Err(e) = &res {
            tracing::debug!(op = name, errno = e.0, peer = %req.peer(), "mdt request failed");
        }
        res
    }
}
