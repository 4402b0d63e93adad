//! mdc: the client of one metadata target — one thin call per MDS opcode.
//!
//! Owns: [`Mdc`]. Each call builds the body from `ptlrpc::wire::mds`,
//! sends it bounded (`crate::rpc`) and returns the decoded reply. Also the
//! client's FID sequence: [`Mdc::new_fid`] hands out FIDs for creates from
//! a sequence MDT0 granted (`SEQ_QUERY`), so a create replayed after an
//! MDT restart recreates the same FID.
//! Must not: cache attributes, names or layouts (another client may
//! change them; caching comes with the lock manager).

use std::sync::Arc;

use lnet::{Lnet, Nid};
use ptlrpc::driver::{Client, ClientConfig};
use ptlrpc::fault::FaultInjector;
use ptlrpc::portals::MDS_REQUEST_PORTAL;
use ptlrpc::wire::mds::{
    AttrReply, CloseReq, GetInfoReply, GetInfoReq, GetattrReq, GetxattrReq, LookupReq, ReaddirReply, ReaddirReq,
    ReintReply, ReintReq, SeqQueryReq, SeqRange, StatfsReply, XattrReply, seq_op,
};
use ptlrpc::wire::{ConnectData, Fid, Op, connect_flags};

use crate::error::Result;
use crate::rpc;

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
    rpc: Client,
    uuid: String,
    fids: Arc<tokio::sync::Mutex<FidSeq>>,
}

impl Mdc {
    /// A client of the MDT at `nid`, calling itself `uuid`.
    pub fn new(lnet: &Lnet, nid: Nid, uuid: &str) -> Mdc {
        // Readdir and layouts of wide files need more than the default 8 KiB.
        let cfg = ClientConfig { reply_buf_len: 256 << 10, jobid: crate::jobid::from_env(), ..ClientConfig::default() };
        Mdc {
            rpc: Client::new(lnet, nid, MDS_REQUEST_PORTAL, cfg, Arc::new(FaultInjector::default())),
            uuid: uuid.to_string(),
            fids: Arc::default(),
        }
    }

    /// A FID for a new object, from the client's granted sequence (asking
    /// MDT0 for more with `SEQ_QUERY` when it is used up).
    pub async fn new_fid(&self) -> Result<Fid> {
        let mut s = self.fids.lock().await;
        if s.next.seq == 0 || s.next.oid >= s.width {
            let next_seq = s.next.seq + 1;
            if s.next.seq == 0 || next_seq >= s.end {
                let q = SeqQueryReq { op: seq_op::ALLOC_META, count: 1 };
                let r: SeqRange = rpc::call(&self.rpc, "seq query", Op::SeqQuery, &q).await?;
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
        self.rpc.target()
    }

    /// MDS_CONNECT.
    pub async fn connect(&self) -> Result<ConnectData> {
        let cd = ConnectData {
            flags: connect_flags::VERSION | connect_flags::TRANSNO | connect_flags::MAX_EASIZE,
            version: 1,
            client_uuid: self.uuid.clone(),
            ..ConnectData::default()
        };
        rpc::call(&self.rpc, "mds connect", Op::MdsConnect, &cd).await
    }

    /// MDS_GET_ROOT.
    pub async fn root(&self) -> Result<Fid> {
        rpc::call(&self.rpc, "getroot", Op::MdsGetRoot, &()).await
    }

    /// MDS_GETATTR.
    pub async fn getattr(&self, fid: Fid) -> Result<AttrReply> {
        rpc::call(&self.rpc, "getattr", Op::MdsGetattr, &GetattrReq { fid }).await
    }

    /// MDS_GETATTR_NAME.
    pub async fn lookup(&self, parent: Fid, name: &str) -> Result<AttrReply> {
        rpc::call(&self.rpc, "lookup", Op::MdsGetattrName, &LookupReq { parent, name: name.into() }).await
    }

    /// MDS_REINT (create, mkdir, setattr, link, unlink, rename, open, setxattr).
    pub async fn reint(&self, what: &'static str, req: &ReintReq) -> Result<ReintReply> {
        rpc::call(&self.rpc, what, Op::MdsReint, req).await
    }

    /// MDS_CLOSE.
    pub async fn close(&self, handle: u64) -> Result<ReintReply> {
        rpc::call(&self.rpc, "close", Op::MdsClose, &CloseReq { handle }).await
    }

    /// MDS_READPAGE: up to `max` entries from `cookie`.
    pub async fn readdir(&self, fid: Fid, cookie: u64, max: u32) -> Result<ReaddirReply> {
        rpc::call(&self.rpc, "readdir", Op::MdsReadpage, &ReaddirReq { fid, cookie, max_entries: max }).await
    }

    /// MDS_GETXATTR of `name` (ENODATA when `fid` has no such attribute).
    pub async fn getxattr(&self, fid: Fid, name: &str) -> Result<Vec<u8>> {
        let r: XattrReply =
            rpc::call(&self.rpc, "getxattr", Op::MdsGetxattr, &GetxattrReq { fid, name: name.into() }).await?;
        Ok(r.value)
    }

    /// MDS_GETXATTR with no name: every attribute name of `fid`.
    pub async fn listxattr(&self, fid: Fid) -> Result<Vec<String>> {
        let req = GetxattrReq { fid, name: String::new() };
        let r: XattrReply = rpc::call(&self.rpc, "listxattr", Op::MdsGetxattr, &req).await?;
        Ok(r.names)
    }

    /// MDS_STATFS.
    pub async fn statfs(&self) -> Result<StatfsReply> {
        rpc::call(&self.rpc, "statfs", Op::MdsStatfs, &()).await
    }

    /// MDS_SYNC: a durable commit of everything the MDT applied.
    pub async fn sync(&self) -> Result<()> {
        rpc::raw(&self.rpc, "mds sync", Op::MdsSync, &()).await.map(drop)
    }

    /// MDS_GET_INFO `key` (no wait).
    pub async fn get_info(&self, key: &str) -> Result<GetInfoReply> {
        let req = GetInfoReq { key: key.into(), at_least: 0, wait_ms: 0 };
        rpc::call(&self.rpc, "get_info", Op::MdsGetInfo, &req).await
    }

    /// MDS_GET_INFO `key`, waiting (bounded by the MDT) until its value
    /// is at least `n` (`config_applied`: config records applied;
    /// `osts_usable`: OSTs that take objects).
    pub async fn wait_info(&self, key: &str, n: u64, wait_ms: u32) -> Result<GetInfoReply> {
        let req = GetInfoReq { key: key.into(), at_least: n, wait_ms };
        rpc::call(&self.rpc, "get_info", Op::MdsGetInfo, &req).await
    }
}
