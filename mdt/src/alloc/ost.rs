//! The MDT's view of one OST: the few calls object allocation and
//! destruction need ([`OstApi`]), and the real implementation over a
//! ptlrpc [`Client`] ([`RpcOst`]).
//!
//! The OST crate is being written concurrently and `ptlrpc::wire::ost`
//! does not exist yet, so [`RpcOst`] speaks the OST opcodes (`OST_CREATE`,
//! `OST_DESTROY`, `OST_STATFS`, `OST_SET_INFO`) with the provisional bodies
//! of [`wire`] below; they move to `ptlrpc::wire::ost` (and change to its
//! definitions) when that lands.
//!
//! Must not: be called from an async context (calls block on the runtime
//! handle; the MDT's handlers run on service worker threads).

use std::fmt;
use std::time::Duration;

use ptlrpc::driver::{Client, RpcError};
use ptlrpc::wire::Op;
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
    /// Makes objects `start .. start + count` exist; returns the last id
    /// that now exists.
    fn precreate(&self, start: u64, count: u32) -> Result<u64, OstError>;
    /// Destroys object `id` (a missing object is success).
    fn destroy(&self, id: u64) -> Result<(), OstError>;
    /// Space.
    fn statfs(&self) -> Result<OstStatfs, OstError>;
    /// Destroys precreated objects above `last_used` (the MDT's last
    /// allocated id, read back from its store at connect): Lustre's orphan
    /// cleanup, so precreated-but-unused objects do not leak across an MDT
    /// crash.
    fn cleanup_orphans(&self, last_used: u64) -> Result<(), OstError>;
}

/// Provisional MDT -> OST bodies (see the module docs).
pub mod wire {
    use rkyv::{Archive, Deserialize, Serialize};

    /// `OST_CREATE`: precreate `start .. start + count`.
    #[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    #[rkyv(derive(Debug))]
    pub struct PrecreateReq {
        /// First id.
        pub start: u64,
        /// How many.
        pub count: u32,
    }

    /// Reply to `OST_CREATE`.
    #[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    #[rkyv(derive(Debug))]
    pub struct PrecreateReply {
        /// The last id that exists.
        pub last_id: u64,
    }

    /// `OST_DESTROY` of one object.
    #[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    #[rkyv(derive(Debug))]
    pub struct DestroyReq {
        /// Object id.
        pub id: u64,
    }

    /// Reply to `OST_STATFS`.
    #[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    #[rkyv(derive(Debug))]
    pub struct StatfsReply {
        /// Capacity, KiB.
        pub kbytes: u64,
        /// Free, KiB.
        pub kbytes_free: u64,
    }

    /// `OST_SET_INFO` "orphan cleanup": destroy precreated ids above `last_used`.
    #[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    #[rkyv(derive(Debug))]
    pub struct CleanupReq {
        /// The MDT's last allocated id.
        pub last_used: u64,
    }
}

/// An OST over ptlrpc.
#[derive(Debug, Clone)]
pub struct RpcOst {
    client: Client,
    rt: tokio::runtime::Handle,
    bound: Duration,
}

impl RpcOst {
    /// Calls go through `client`, blocking on `rt`, each bounded by `bound`.
    pub fn new(client: Client, rt: tokio::runtime::Handle, bound: Duration) -> RpcOst {
        RpcOst { client, rt, bound }
    }

    fn call<B, R>(&self, op: Op, body: &B) -> Result<R, OstError>
    where
        B: for<'a> rkyv::Serialize<
                rkyv::api::high::HighSerializer<
                    rkyv::util::AlignedVec,
                    rkyv::ser::allocator::ArenaHandle<'a>,
                    rkyv::rancor::Error,
                >,
            >,
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
}

impl OstApi for RpcOst {
    fn precreate(&self, start: u64, count: u32) -> Result<u64, OstError> {
        let r: wire::PrecreateReply = self.call(Op::OstCreate, &wire::PrecreateReq { start, count })?;
        Ok(r.last_id)
    }

    fn destroy(&self, id: u64) -> Result<(), OstError> {
        match self.call::<_, ()>(Op::OstDestroy, &wire::DestroyReq { id }) {
            Err(OstError::Errno(crate::error::errno::ENOENT)) => Ok(()),
            r => r,
        }
    }

    fn statfs(&self) -> Result<OstStatfs, OstError> {
        let r: wire::StatfsReply = self.call(Op::OstStatfs, &())?;
        Ok(OstStatfs { kbytes: r.kbytes, kbytes_free: r.kbytes_free })
    }

    fn cleanup_orphans(&self, last_used: u64) -> Result<(), OstError> {
        self.call::<_, ()>(Op::OstSetInfo, &wire::CleanupReq { last_used })
    }
}
