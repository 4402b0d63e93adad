//! The MDT's view of one OST: the few calls object allocation and
//! destruction need ([`OstApi`]), and the real implementation over a
//! ptlrpc [`Client`] speaking the OST's opcodes and bodies
//! (`ptlrpc::wire::ost`): CONNECT by target name for an export handle,
//! CREATE of a precreate range (the OST picks the ids), DESTROY, STATFS.
//!
//! Must not: be called from an async context (calls block on the runtime
//! handle; the MDT's handlers run on service worker threads).

use std::fmt;
use std::time::Duration;

use parking_lot::Mutex;
use ptlrpc::driver::{Client, RpcError};
use ptlrpc::wire::{ConnectData, Op, OstConnect, OstConnectReply, OstCreate, OstCreateReply, OstObj, connect_flags};
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
    /// Creates `count` objects; returns the first and last new ids (the
    /// OST picks them, ascending).
    fn precreate(&self, count: u32) -> Result<(u64, u64), OstError>;
    /// Destroys object `id` (a missing object is success).
    fn destroy(&self, id: u64) -> Result<(), OstError>;
    /// Space.
    fn statfs(&self) -> Result<OstStatfs, OstError>;
}

/// An OST over ptlrpc: connects (by target name) on first use and again
/// when the OST says the export is gone (ENOTCONN, e.g. after its restart).
#[derive(Debug)]
pub struct RpcOst {
    client: Client,
    rt: tokio::runtime::Handle,
    bound: Duration,
    target: String,
    uuid: String,
    handle: Mutex<Option<u64>>,
}

type Ser<'a> =
    rkyv::api::high::HighSerializer<rkyv::util::AlignedVec, rkyv::ser::allocator::ArenaHandle<'a>, rkyv::rancor::Error>;

impl RpcOst {
    /// OST `target` (`fsname-OSTxxxx`) through `client`, as the client
    /// `uuid`, blocking on `rt`, each call bounded by `bound`.
    pub fn new(client: Client, rt: tokio::runtime::Handle, bound: Duration, target: String, uuid: String) -> RpcOst {
        RpcOst { client, rt, bound, target, uuid, handle: Mutex::new(None) }
    }

    fn call<B, R>(&self, op: Op, body: &B) -> Result<R, OstError>
    where
        B: for<'a> rkyv::Serialize<Ser<'a>>,
        R: rkyv::Archive,
        R::Archived: for<'b> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'b, rkyv::rancor::Error>>
            + rkyv::Deserialize<R, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
    {
        let fut = self.client.start(op, body);
        let res = self.rt.block_on(async { tokio::time::timeout(self.bound, fut).await });
        match res {
            Err(_) => Err(OstError::Unreachable(format!("{op:?}: no answer within {:?}", self.bound))),
            Ok(Err(RpcError::Server { errno, .. })) => Err(OstError::Errno(errno)),
            Ok(Err(e)) => Err(OstError::Unreachable(e.to_string())),
            Ok(Ok(reply)) => reply.body::<R>().map_err(|e| OstError::Unreachable(e.to_string())),
        }
    }

    fn handle(&self) -> Result<u64, OstError> {
        if let Some(h) = *self.handle.lock() {
            return Ok(h);
        }
        let data = ConnectData {
            flags: connect_flags::VERSION,
            version: 1,
            client_uuid: self.uuid.clone(),
            ..ConnectData::default()
        };
        let r: OstConnectReply = self.call(Op::OstConnect, &OstConnect { target: self.target.clone(), data })?;
        *self.handle.lock() = Some(r.handle);
        Ok(r.handle)
    }

    /// Runs `f` with the export handle, reconnecting once if the OST no
    /// longer knows it.
    fn with_handle<T>(&self, f: impl Fn(u64) -> Result<T, OstError>) -> Result<T, OstError> {
        match f(self.handle()?) {
            Err(OstError::Errno(crate::error::errno::ENOTCONN)) => {
                *self.handle.lock() = None;
                f(self.handle()?)
            }
            Err(e @ OstError::Unreachable(_)) => {
                *self.handle.lock() = None;
                Err(e)
            }
            r => r,
        }
    }
}

impl OstApi for RpcOst {
    fn precreate(&self, count: u32) -> Result<(u64, u64), OstError> {
        let count = count.clamp(1, ptlrpc::wire::ost::MAX_PRECREATE);
        let r: OstCreateReply = self.with_handle(|handle| self.call(Op::OstCreate, &OstCreate { handle, count }))?;
        if r.count == 0 {
            return Err(OstError::Errno(crate::error::errno::ENOSPC));
        }
        Ok((r.first, r.first + u64::from(r.count) - 1))
    }

    fn destroy(&self, id: u64) -> Result<(), OstError> {
        match self.with_handle(|handle| self.call::<_, ()>(Op::OstDestroy, &OstObj { handle, oid: id })) {
            Err(OstError::Errno(crate::error::errno::ENOENT)) => Ok(()),
            r => r,
        }
    }

    fn statfs(&self) -> Result<OstStatfs, OstError> {
        let s: ptlrpc::wire::OstStatfs =
            self.with_handle(|handle| self.call(Op::OstStatfs, &OstObj { handle, oid: 0 }))?;
        let kib = |blocks: u64| blocks.saturating_mul(u64::from(s.bsize)) / 1024;
        Ok(OstStatfs { kbytes: kib(s.blocks), kbytes_free: kib(s.bavail) })
    }
}
