//! One bounded RPC with a typed reply: the helper mdc and mgc share (a
//! plain [`Client`] for the MGS, an [`ImportDriver`] for the MDT).
//!
//! Owns the bound on every client RPC (the driver resends within it) and
//! the mapping of a failed RPC to [`ClientError`]. Must not: retry on its
//! own (the driver's resends are the retries).

use std::time::Duration;

use ptlrpc::driver::{Client, ImportDriver, RpcReply};
use ptlrpc::import::ReqKind;
use ptlrpc::wire::Op;
use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;

use crate::error::{ClientError, Result};

/// The longest any single client RPC may take, resends included.
pub const RPC_BOUND: Duration = Duration::from_secs(60);

/// Sends `body` as `op` and waits (bounded) for the reply.
pub async fn raw<B>(c: &Client, what: &'static str, op: Op, body: &B) -> Result<RpcReply>
where
    B: for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    match tokio::time::timeout(RPC_BOUND, c.start(op, body)).await {
        Ok(r) => r.map_err(|e| ClientError::rpc(what, e)),
        Err(_) => Err(ClientError::Timeout { what, secs: RPC_BOUND.as_secs() }),
    }
}

/// Sends `body` as `op` and decodes the reply body as `R`.
pub async fn call<B, R>(c: &Client, what: &'static str, op: Op, body: &B) -> Result<R>
where
    B: for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
    R: rkyv::Archive,
    R::Archived:
        for<'b> CheckBytes<HighValidator<'b, rancor::Error>> + rkyv::Deserialize<R, HighDeserializer<rancor::Error>>,
{
    let r = raw(c, what, op, body).await?;
    r.body::<R>().map_err(|e| ClientError::rpc(what, e))
}

/// Sends `body` as `op` of `kind` through `imp` and decodes the reply
/// body as `R`, bounded like [`call`]. The import resends and replays;
/// the bound covers a target's restart and recovery.
pub async fn imp_call<B, R>(imp: &ImportDriver, what: &'static str, op: Op, kind: ReqKind, body: &B) -> Result<R>
where
    B: for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
    R: rkyv::Archive,
    R::Archived:
        for<'b> CheckBytes<HighValidator<'b, rancor::Error>> + rkyv::Deserialize<R, HighDeserializer<rancor::Error>>,
{
    let r = match tokio::time::timeout(RPC_BOUND, imp.rpc(op, kind, body)).await {
        Ok(r) => r.map_err(|e| ClientError::import(what, e))?,
        Err(_) => return Err(ClientError::Timeout { what, secs: RPC_BOUND.as_secs() }),
    };
    let mut a = AlignedVec::<16>::new();
    a.extend_from_slice(&r.body);
    rkyv::from_bytes::<R, rancor::Error>(&a).map_err(|e| ClientError::Invalid(format!("{what}: bad reply body: {e}")))
}
