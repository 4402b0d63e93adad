//! One bounded RPC with a typed reply: the helper mdc and mgc share (a
//! plain [`Client`] for the MGS, an [`ImportDriver`] for the MDT).
//!
//! Owns the bound on every client RPC (the driver resends within it) and
//! the mapping of a failed RPC to [`ClientError`]. Must not: retry on its
//! own (the driver's resends are the retries).

use std::time::Duration;

use ptlrpc::driver::{Client, ImportDriver, ImportRpcError, RpcReply};
use ptlrpc::import::{ReplayFixup, ReqKind};
use ptlrpc::wire::{Op, Transno, WireBody, WireDecode, Xid};
use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::error::{ClientError, Result};

/// The longest any single client RPC may take, resends included.
pub const RPC_BOUND: Duration = Duration::from_secs(60);

/// Sends `body` as `op` and waits (bounded) for the reply.
pub async fn raw<B>(c: &Client, what: &'static str, op: Op, body: &B) -> Result<RpcReply>
where
    B: WireBody,
{
    match tokio::time::timeout(RPC_BOUND, c.start(op, body)).await {
        Ok(r) => r.map_err(|e| ClientError::rpc(what, e)),
        Err(_) => Err(ClientError::Timeout { what, secs: RPC_BOUND.as_secs() }),
    }
}

/// Sends `body` as `op` and decodes the reply body as `R`.
pub async fn call<B, R>(c: &Client, what: &'static str, op: Op, body: &B) -> Result<R>
where
    B: WireBody,
    R: WireDecode,
{
    let r = raw(c, what, op, body).await?;
    r.body::<R>().map_err(|e| ClientError::rpc(what, e))
}

/// What [`imp_call_full`] answers besides the body: the request's xid and
/// the transno the target gave it (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// The request's xid.
    pub xid: Xid,
    /// Its transno.
    pub transno: Transno,
}

/// [`imp_call`] with a replay fixup (see `ImportDriver::rpc_with_fixup`),
/// also answering the request's xid and transno (an open's xid is what
/// its close releases). A server error answers its xid with the error.
pub async fn imp_call_full<B, R>(
    imp: &ImportDriver,
    what: &'static str,
    op: Op,
    kind: ReqKind,
    body: &B,
    fixup: Option<ReplayFixup>,
) -> std::result::Result<(R, Sent), (ClientError, Option<Xid>)>
where
    B: WireBody,
    R: WireDecode,
{
    let call = async {
        match fixup {
            Some(f) => imp.rpc_with_fixup(op, kind, body, f).await,
            None => imp.rpc(op, kind, body).await,
        }
    };
    let r = match tokio::time::timeout(RPC_BOUND, call).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let xid = match &e {
                ImportRpcError::Server { xid, .. } => Some(*xid),
                _ => None,
            };
            return Err((ClientError::import(what, e), xid));
        }
        Err(_) => return Err((ClientError::Timeout { what, secs: RPC_BOUND.as_secs() }, None)),
    };
    let mut a = AlignedVec::<16>::new();
    a.extend_from_slice(&r.body);
    let body = rkyv::from_bytes::<R, rancor::Error>(&a)
        .map_err(|e| (ClientError::Invalid(format!("{what}: bad reply body: {e}")), Some(r.xid)))?;
    Ok((body, Sent { xid: r.xid, transno: r.header.transno }))
}

/// Sends `body` as `op` of `kind` through `imp` and decodes the reply
/// body as `R`, bounded like [`call`]. The import resends and replays;
/// the bound covers a target's restart and recovery.
pub async fn imp_call<B, R>(imp: &ImportDriver, what: &'static str, op: Op, kind: ReqKind, body: &B) -> Result<R>
where
    B: WireBody,
    R: WireDecode,
{
    let r = match tokio::time::timeout(RPC_BOUND, imp.rpc(op, kind, body)).await {
        Ok(r) => r.map_err(|e| ClientError::import(what, e))?,
        Err(_) => return Err(ClientError::Timeout { what, secs: RPC_BOUND.as_secs() }),
    };
    let mut a = AlignedVec::<16>::new();
    a.extend_from_slice(&r.body);
    rkyv::from_bytes::<R, rancor::Error>(&a).map_err(|e| ClientError::Invalid(format!("{what}: bad reply body: {e}")))
}
