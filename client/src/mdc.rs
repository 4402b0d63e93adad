//! mdc: the client of one metadata target — one thin call per MDS opcode.
//!
//! Owns: [`Mdc`]. Each call builds the body from `ptlrpc::wire::mds`,
//! sends it bounded (`crate::rpc`) through an [`ImportDriver`] (connect,
//! pinger, reconnect, resend, and replay of replied-uncommitted updates
//! after an MDT restart: the MDT runs on ptlrpc's target framework) and
//! returns the decoded reply. Also the
//! client's FID sequence: [`Mdc::new_fid`] hands out FIDs for creates from
//! a sequence MDT0 granted (`SEQ_QUERY`), so a create replayed after an
//! MDT restart recreates the same FID. Opens stay on the import's replay
//! list until their close is committed ([`Mdc::open`], [`Mdc::close`]);
//! creates and opens replay with what their reply said
//! (`reint_replay_fixup`: the layout, the open handle).
//! Getattr, lookup, getxattr and every reint carry the caller's
//! credentials (`MdsReq`): the running request's ([`crate::creds::current`],
//! a FUSE caller's) or else the mount's ([`Mdc::set_creds`]; at first
//! this process's). The MDT checks permissions with them.
//! Lock enqueues with read intents and cancels ([`Mdc::enqueue`],
//! [`Mdc::cancel`]) are here too.
//! Must not: cache attributes, names or layouts (the FUSE layer caches
//! under the locks it holds, `crate::locks`).
//!
//! Not yet: open files count against the import's limit of held requests
//! (`max_requests`, 65536: a client holding that many files open waits
//! for a close before its next request), and while any file is open the
//! replay list is never empty, so the pinger stays at its shorter
//! "uncommitted" interval.

use std::sync::Arc;

use lnet::{Lnet, Nid};
use ptlrpc::driver::ImportDriver;
use ptlrpc::import::{ImportConfig, ReplayFixup, ReqKind};
use ptlrpc::portals::MDS_REQUEST_PORTAL;
use ptlrpc::wire::ldlm::{LdlmCancelReq, LdlmEnqueueReply, LdlmEnqueueReq, LdlmIntent};
use ptlrpc::wire::mds::{
    AttrReply, CloseReq, Creds, GetInfoReply, GetInfoReq, GetattrReq, GetxattrReq, LookupReq, MdsReq, ReaddirReply,
    ReaddirReq, ReintReply, ReintReq, SeqQueryReq, SeqRange, SomAttr, StatfsReply, XattrReply, reint_replay_fixup,
    seq_op,
};
use ptlrpc::wire::{ConnectData, Fid, Op, Xid, connect_flags};

use crate::error::Result;
use crate::rpc;

/// Modifying requests in flight per mdc to ask the MDT for (Lustre's
/// `max_mod_rpcs_in_flight` default; the MDT grants up to 8).
pub const MAX_MOD_RPCS: u16 = 8;

/// The sequence the client allocates FIDs from.
#[derive(Debug, Default)]
struct FidSeq {
    /// The granted sequences not used up yet (`next.seq..end`).
    end: u64,
    /// The next FID (`seq == 0`: nothing granted yet).
    next: Fid,
    /// Object ids per sequence.
    width: u32,
}

/// A client of one MDT.
#[derive(Debug, Clone)]
pub struct Mdc {
    imp: ImportDriver,
    nid: Nid,
    fids: Arc<tokio::sync::Mutex<FidSeq>>,
    creds: Arc<parking_lot::RwLock<Creds>>,
}

impl Mdc {
    /// A client of the MDT at `nid`, calling itself `uuid` (not connected
    /// yet: [`Mdc::connect`]). Must be called inside a tokio runtime.
    pub fn new(lnet: &Lnet, nid: Nid, uuid: &str) -> Result<Mdc> {
        Mdc::with_options(lnet, nid, uuid, &crate::options::MountOptions::default())
    }

    /// [`Mdc::new`] with the mount's timeouts.
    pub fn with_options(lnet: &Lnet, nid: Nid, uuid: &str, opts: &crate::options::MountOptions) -> Result<Mdc> {
        let mut cfg = ImportConfig::new(uuid, Op::MdsConnect, Op::MdsDisconnect, MDS_REQUEST_PORTAL, vec![]);
        cfg.connect_data = ConnectData {
            flags: connect_flags::VERSION | connect_flags::TRANSNO | connect_flags::MAX_EASIZE,
            version: 1,
            ..ConnectData::default()
        };
        cfg.backoff_max = opts.reconnect_max();
        cfg.jobid = crate::jobid::from_env();
        cfg.ping = opts.ping();
        cfg.at = opts.at();
        // Replies are kept for replay until the MDT commits (every second by
        // default): room for a commit interval of updates.
        cfg.max_requests = 1 << 16;
        // Several modifying requests in flight (Lustre's
        // max_mod_rpcs_in_flight, 8 by default): each takes a reply slot
        // the MDT keeps for resends and replay.
        cfg.max_mod_rpcs = MAX_MOD_RPCS;
        // Readdir and layouts of wide files need more than the default 8 KiB.
        let imp = ImportDriver::start(lnet, vec![nid], cfg, 256 << 10)
            .map_err(|e| crate::error::ClientError::Local(format!("mdc import: {e}")))?;
        let creds = Arc::new(parking_lot::RwLock::new(crate::creds::process()));
        Ok(Mdc { imp, nid, fids: Arc::default(), creds })
    }

    /// Acts as `c` for requests made outside a caller's scope
    /// ([`crate::creds::with_creds`]).
    pub fn set_creds(&self, c: Creds) {
        *self.creds.write() = c;
    }

    /// `req` with the credentials it acts for.
    fn as_caller<T>(&self, req: T) -> MdsReq<T> {
        let creds = crate::creds::current().unwrap_or_else(|| self.creds.read().clone());
        MdsReq::new(creds, req)
    }

    /// A modifying `req` with its caller's credentials and the early lock
    /// cancels and kept locks of the scope it runs in
    /// ([`crate::creds::with_cancels`]).
    fn as_changer<T>(&self, req: T) -> MdsReq<T> {
        MdsReq { cancels: crate::creds::take_cancels(), keeps: crate::creds::take_keeps(), ..self.as_caller(req) }
    }

    /// The import (state, replay list, imperative recovery).
    pub fn import(&self) -> &ImportDriver {
        &self.imp
    }

    /// Disconnects (the MDT drops this client's record) and waits,
    /// bounded, until the import is closed.
    pub async fn disconnect(&self) {
        // Until the driver has sent DISCONNECT: the caller may drop us next.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.imp.close_and_wait()).await;
    }

    /// A FID for a new object, from the client's granted sequence (asking
    /// MDT0 for more with `SEQ_QUERY` when it is used up).
    pub async fn new_fid(&self) -> Result<Fid> {
        let mut s = self.fids.lock().await;
        if s.next.seq == 0 || s.next.oid >= s.width {
            let next_seq = s.next.seq + 1;
            if s.next.seq == 0 || next_seq >= s.end {
                let q = SeqQueryReq { op: seq_op::ALLOC_META, count: 1 };
                let r: SeqRange = rpc::imp_call(&self.imp, "seq query", Op::SeqQuery, ReqKind::Read, &q).await?;
                if r.end <= r.start || r.width < 2 {
                    return Err(crate::error::ClientError::Invalid(format!("bad sequence grant {r:?}")));
                }
                *s = FidSeq { end: r.end, next: Fid { seq: r.start, oid: 1, ver: 0 }, width: r.width };
            } else {
                s.next = Fid { seq: next_seq, oid: 1, ver: 0 };
            }
        }
        let f = s.next;
        s.next.oid += 1;
        Ok(f)
    }

    /// The MDT's NID.
    pub fn nid(&self) -> Nid {
        self.nid
    }

    /// Connects (MDS_CONNECT through the import) and waits until FULL.
    pub async fn connect(&self) -> Result<()> {
        match tokio::time::timeout(rpc::RPC_BOUND, self.imp.connect()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(state)) => Err(crate::error::ClientError::Local(format!("mdc import ended {state:?}"))),
            Err(_) => Err(crate::error::ClientError::Timeout { what: "mds connect", secs: rpc::RPC_BOUND.as_secs() }),
        }
    }

    /// MDS_GET_ROOT.
    pub async fn root(&self) -> Result<Fid> {
        rpc::imp_call(&self.imp, "getroot", Op::MdsGetRoot, ReqKind::Read, &()).await
    }

    /// MDS_GETATTR.
    pub async fn getattr(&self, fid: Fid) -> Result<AttrReply> {
        self.access(fid, 0).await
    }

    /// MDS_GETATTR by a caller who must have `mask` (`access_mask`) on
    /// `fid` (EACCES if not): `access(2)`, opendir.
    pub async fn access(&self, fid: Fid, mask: u32) -> Result<AttrReply> {
        let req = self.as_caller(GetattrReq { fid, access: mask });
        rpc::imp_call(&self.imp, "getattr", Op::MdsGetattr, ReqKind::Read, &req).await
    }

    /// MDS_GETATTR_NAME (search permission on `parent` checked).
    pub async fn lookup(&self, parent: Fid, name: &str) -> Result<AttrReply> {
        let req = self.as_caller(LookupReq { parent, name: name.into() });
        rpc::imp_call(&self.imp, "lookup", Op::MdsGetattrName, ReqKind::Read, &req).await
    }

    /// MDS_REINT (create, mkdir, setattr, link, unlink, rename, setxattr;
    /// opens go through [`Mdc::open`]). A create's replay after an MDT
    /// restart carries the layout its reply gave (the same OST objects).
    pub async fn reint(&self, what: &'static str, req: &ReintReq) -> Result<ReintReply> {
        let fixup = Some(reint_replay_fixup as ReplayFixup);
        let req = &self.as_changer(req.clone());
        let r = rpc::imp_call_full(&self.imp, what, Op::MdsReint, ReqKind::Modify, req, fixup).await;
        r.map(|(rep, _)| rep).map_err(|(e, _)| e)
    }

    /// MDS_REINT open. The import keeps the open for replay until its close
    /// ([`Mdc::close`] with the xid answered here): after an MDT restart
    /// the open is replayed (with the FID, handle and layout it was
    /// answered), so the MDT restores the handle.
    pub async fn open(&self, req: &ReintReq) -> Result<(ReintReply, Xid)> {
        let fixup = Some(reint_replay_fixup as ReplayFixup);
        let req = &self.as_changer(req.clone());
        let r = rpc::imp_call_full(&self.imp, "open", Op::MdsReint, ReqKind::Open, req, fixup).await;
        r.map(|(rep, sent)| (rep, sent.xid)).map_err(|(e, _)| e)
    }

    /// MDS_CLOSE of the handle the open `open_xid` answered, with a write
    /// handle's view of the objects (size on MDT). Whatever the answer,
    /// the open leaves the import's replay list once the close is
    /// committed (at once if the close failed).
    pub async fn close(&self, handle: u64, open_xid: Xid, som: Option<SomAttr>) -> Result<ReintReply> {
        let req = CloseReq { handle, som };
        let r = rpc::imp_call_full(&self.imp, "close", Op::MdsClose, ReqKind::Modify, &req, None).await;
        let close = match &r {
            Ok((_, sent)) if sent.transno.0 > 0 => Some(sent.xid),
            _ => None,
        };
        self.imp.release_open(open_xid, close);
        r.map(|(rep, _)| rep).map_err(|(e, _)| e)
    }

    /// MDS_READPAGE: up to `max` entries from `cookie`.
    pub async fn readdir(&self, fid: Fid, cookie: u64, max: u32) -> Result<ReaddirReply> {
        rpc::imp_call(
            &self.imp,
            "readdir",
            Op::MdsReadpage,
            ReqKind::Read,
            &ReaddirReq { fid, cookie, max_entries: max },
        )
        .await
    }

    /// LDLM_ENQUEUE with a getattr or lookup intent: the MDT's answer and
    /// the protected-read locks it granted with it (none when something
    /// conflicts; the cache is the caller's, `crate::locks`).
    pub async fn enqueue(&self, intent: LdlmIntent) -> Result<LdlmEnqueueReply> {
        let creds = crate::creds::current().unwrap_or_else(|| self.creds.read().clone());
        let req = LdlmEnqueueReq {
            creds,
            mode: ptlrpc::ldlm::LockMode::Pr.wire(),
            bits: ptlrpc::ldlm::InodeBits::KNOWN.wire(),
            intent,
        };
        rpc::imp_call(&self.imp, "enqueue", Op::LdlmEnqueue, ReqKind::Read, &req).await
    }

    /// LDLM_CANCEL: gives locks back.
    pub async fn cancel(&self, handles: Vec<u64>) -> Result<()> {
        let req = LdlmCancelReq { handles };
        match tokio::time::timeout(rpc::RPC_BOUND, self.imp.rpc(Op::LdlmCancel, ReqKind::Read, &req)).await {
            Ok(r) => r.map(|_| ()).map_err(|e| crate::error::ClientError::import("cancel", e)),
            Err(_) => Err(crate::error::ClientError::Timeout { what: "cancel", secs: rpc::RPC_BOUND.as_secs() }),
        }
    }

    /// MDS_GETXATTR of `name` (ENODATA when `fid` has no such attribute).
    pub async fn getxattr(&self, fid: Fid, name: &str) -> Result<Vec<u8>> {
        let req = self.as_caller(GetxattrReq { fid, name: name.into() });
        let r: XattrReply = rpc::imp_call(&self.imp, "getxattr", Op::MdsGetxattr, ReqKind::Read, &req).await?;
        Ok(r.value)
    }

    /// MDS_GETXATTR with no name: every attribute name of `fid`.
    pub async fn listxattr(&self, fid: Fid) -> Result<Vec<String>> {
        let req = self.as_caller(GetxattrReq { fid, name: String::new() });
        let r: XattrReply = rpc::imp_call(&self.imp, "listxattr", Op::MdsGetxattr, ReqKind::Read, &req).await?;
        Ok(r.names)
    }

    /// MDS_STATFS.
    pub async fn statfs(&self) -> Result<StatfsReply> {
        rpc::imp_call(&self.imp, "statfs", Op::MdsStatfs, ReqKind::Read, &()).await
    }

    /// MDS_SYNC: a durable commit of everything the MDT applied.
    pub async fn sync(&self) -> Result<()> {
        rpc::imp_call::<_, ()>(&self.imp, "mds sync", Op::MdsSync, ReqKind::Read, &()).await.map(drop)
    }

    /// MDS_GET_INFO `key` (no wait).
    pub async fn get_info(&self, key: &str) -> Result<GetInfoReply> {
        let req = GetInfoReq { key: key.into(), at_least: 0, wait_ms: 0 };
        rpc::imp_call(&self.imp, "get_info", Op::MdsGetInfo, ReqKind::Read, &req).await
    }

    /// MDS_GET_INFO `key`, waiting (bounded by the MDT) until its value
    /// is at least `n` (`config_applied`: config records applied;
    /// `osts_usable`: OSTs that take objects).
    pub async fn wait_info(&self, key: &str, n: u64, wait_ms: u32) -> Result<GetInfoReply> {
        let req = GetInfoReq { key: key.into(), at_least: n, wait_ms };
        rpc::imp_call(&self.imp, "get_info", Op::MdsGetInfo, ReqKind::Read, &req).await
    }
}
