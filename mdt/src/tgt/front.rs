//! [`MdtFront`]: the MDT's front hook — reads served outside the target's
//! lock.
//!
//! A read (getattr, lookup, readdir, statfs, getxattr, get_info,
//! SEQ_QUERY) is admitted by the target (export, conn_cnt, recovery
//! stage) and then answered here from the namespace, whose reads take no
//! lock (a transaction is visible whole or not at all). `MDS_SYNC` asks the
//! target to commit. Everything else (updates, CONNECT, PING, resends the
//! target rebuilds) goes to the target; before an `MDS_REINT` the front
//! waits for empty OST precreate pools to refill, since the plan under the
//! target's lock never waits for an OST (a lock held across an OST RPC
//! would stall the driver's timer task on the runtime the RPC needs).
//!
//! Must not: modify the namespace (SEQ_QUERY's durable grant excepted:
//! it is not a client transaction), or answer a request the target
//! refused.

use std::sync::Arc;

use ptlrpc::driver::{Errno, Gate, ReqCtx, Request, TargetFront};
use ptlrpc::target::{Admission, Target};

use super::service::MdtService;
use crate::service::{MdtOps, is_read};
use ptlrpc::wire::{MsgFlags, Op};

/// How long a create waits, outside the lock, for empty precreate pools.
const POOL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The MDT's front.
#[derive(Debug)]
pub struct MdtFront {
    ops: Arc<MdtOps>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
}

impl MdtFront {
    /// The front over `ops`; once `stopping` is set every request is
    /// answered -ESHUTDOWN (the clients' notice of a stop).
    pub fn new(ops: Arc<MdtOps>, stopping: Arc<std::sync::atomic::AtomicBool>) -> MdtFront {
        MdtFront { ops, stopping }
    }
}

impl TargetFront<MdtService> for MdtFront {
    fn handle(&self, req: &Request, ctx: &mut ReqCtx<'_>, gate: &Gate<'_, MdtService>) -> Result<(), Errno> {
        if self.stopping.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Errno(ptlrpc::wire::errno::ESHUTDOWN));
        }
        let op = req.op();
        if op == Op::MdsReint && !req.header().flags.contains(MsgFlags::REPLAY) {
            // A create takes pooled OST objects under the target's lock and
            // never waits for an OST there: wait here for empty pools. A
            // replay does not: it reuses its original objects, and during
            // recovery the OSTs are not reached (orphan cleanup waits for
            // the replays).
            self.ops.ns.alloc().wait_pools(POOL_WAIT);
        }
        if !is_read(op) {
            return gate.submit(ctx, ());
        }
        match gate.admit(ctx) {
            Admission::Admitted(a) => {
                let res = if op == Op::MdsSync {
                    gate.with_target(ctx, Target::sync);
                    Ok(Vec::new())
                } else {
                    self.ops.read(&req.frame()?)
                };
                match res {
                    Ok(body) => gate.reply(ctx, &a, 0, &body),
                    Err(e) => gate.reply(ctx, &a, -e.0, &[]),
                }
                Ok(())
            }
            Admission::Refused => Ok(()),
            Admission::Pass => gate.submit(ctx, ()),
        }
    }
}
