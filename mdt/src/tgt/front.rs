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
//! `LDLM_ENQUEUE` and `LDLM_CANCEL` are served on lnet's receive path
//! ([`TargetFront::inline`]), no worker hop.
//!
//! Must not: modify the namespace (SEQ_QUERY's durable grant excepted:
//! it is not a client transaction), or answer a request the target
//! refused.

use std::sync::Arc;

use ptlrpc::driver::{Errno, Gate, ReqCtx, Request, TargetFront};
use ptlrpc::target::{Admission, Target};

use super::intent::{Asker, Enqueued, enqueue, lock_for, try_lock_for};
use super::service::{LockGrant, MdtService};
use crate::locks::{Keeps, MdtLocks};
use crate::service::{MdtOps, is_read};
use ptlrpc::wire::ldlm::{LdlmCancelReq, LdlmEnqueueReq};
use ptlrpc::wire::mds::{MdsReq, ReintReq};
use ptlrpc::wire::{MsgFlags, Op};

/// How long a create waits, outside the lock, for empty precreate pools.
const POOL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The MDT's front.
#[derive(Debug)]
pub struct MdtFront {
    ops: Arc<MdtOps>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    locks: Option<Arc<MdtLocks>>,
}

impl MdtFront {
    /// The front over `ops`; once `stopping` is set every request is
    /// answered -ESHUTDOWN (the clients' notice of a stop).
    pub fn new(ops: Arc<MdtOps>, stopping: Arc<std::sync::atomic::AtomicBool>) -> MdtFront {
        MdtFront { ops, stopping, locks: None }
    }

    /// With a lock manager: `LDLM_ENQUEUE` intents and `LDLM_CANCEL` are
    /// served, and modifying requests lock what they change first
    /// (`super::intent`).
    pub fn with_locks(mut self, locks: Arc<MdtLocks>) -> MdtFront {
        self.locks = Some(locks);
        self
    }

    /// The lock manager's requests; `None` when `op` is not one.
    fn ldlm(&self, req: &Request, ctx: &mut ReqCtx<'_>, gate: &Gate<'_, MdtService>) -> Option<Result<(), Errno>> {
        let op = req.op();
        if !matches!(op, Op::LdlmEnqueue | Op::LdlmCancel) {
            return None;
        }
        let Some(locks) = &self.locks else {
            return Some(Err(Errno::EOPNOTSUPP));
        };
        Some(match gate.admit(ctx) {
            Admission::Admitted(a) => {
                let owner = req.header().handle.0;
                let res = if op == Op::LdlmCancel {
                    req.body::<LdlmCancelReq>().map(|c| {
                        locks.cancel(owner, &c.handles);
                        Enqueued { body: Vec::new(), handles: Vec::new() }
                    })
                } else {
                    let who = Asker { owner, uuid: &a.uuid, nid: req.peer() };
                    req.body::<LdlmEnqueueReq>().and_then(|r| enqueue(&self.ops, locks, who, &r.creds, &r.intent))
                };
                match res {
                    Ok(e) => {
                        gate.reply(ctx, &a, 0, &e.body);
                        if gate.has_declined() {
                            // Served inline and the reply not sent: the
                            // request runs again on a worker, granting anew.
                            locks.cancel(owner, &e.handles);
                        }
                    }
                    Err(e) => gate.reply(ctx, &a, -e.0, &[]),
                }
                Ok(())
            }
            Admission::Refused => Ok(()),
            Admission::Pass => gate.submit(ctx, None),
        })
    }
}

impl TargetFront<MdtService> for MdtFront {
    /// Lock requests are served on lnet's receive path: an intent reads
    /// the namespace (no lock) and grants read locks only when nothing
    /// conflicts, never waiting; a cancel drops locks. If the gate
    /// declines, the locks an intent granted are given back before it
    /// runs again on a worker; a cancel done twice drops nothing more.
    ///
    /// With the lock manager, updates (`MDS_REINT`, not replays) and
    /// `MDS_CLOSE` are taken there too when they need not wait: the
    /// exclusive locks granted at once ([`try_lock_for`]), the OST object
    /// pools not empty, the target's lock free; otherwise the front or the
    /// gate declines before anything is changed (early cancels done
    /// twice drop nothing more) and a worker runs them. The change itself
    /// is memory and a journal append (the commit is the commit
    /// thread's).
    fn inline(&self, req: &Request) -> bool {
        self.locks.is_some()
            && match req.op() {
                Op::LdlmEnqueue | Op::LdlmCancel | Op::MdsClose => true,
                Op::MdsReint => !req.header().flags.contains(MsgFlags::REPLAY),
                _ => false,
            }
    }

    fn handle(&self, req: &Request, ctx: &mut ReqCtx<'_>, gate: &Gate<'_, MdtService>) -> Result<(), Errno> {
        if self.stopping.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Errno(ptlrpc::wire::errno::ESHUTDOWN));
        }
        if let Some(done) = self.ldlm(req, ctx, gate) {
            return done;
        }
        let op = req.op();
        if op == Op::MdsReint && !req.header().flags.contains(MsgFlags::REPLAY) {
            // A create takes pooled OST objects under the target's lock and
            // never waits for an OST there: wait here for empty pools. A
            // replay does not: it reuses its original objects, and during
            // recovery the OSTs are not reached (orphan cleanup waits for
            // the replays).
            if gate.is_inline() {
                if !self.ops.ns.alloc().wait_pools(std::time::Duration::ZERO) {
                    gate.decline();
                    return Ok(());
                }
            } else {
                self.ops.ns.alloc().wait_pools(POOL_WAIT);
            }
        }
        if !is_read(op) {
            // Exclusive locks on what the update changes, held until it is
            // applied and answered: cached copies are called back first.
            let _held = match (&self.locks, op) {
                (Some(l), Op::MdsReint) if !req.header().flags.contains(MsgFlags::REPLAY) => {
                    let r: MdsReq<ReintReq> = req.body()?;
                    // Early lock cancel: what the client gave up with the
                    // request goes before the change's own locks, so they
                    // call nothing back to it.
                    if !r.cancels.is_empty() {
                        l.cancel(req.header().handle.0, &r.cancels);
                    }
                    // What the client keeps of its own (a directory whose
                    // names it caches and updates itself).
                    let keeps = Keeps { owner: req.header().handle.0, handles: &r.keeps };
                    if gate.is_inline() {
                        match try_lock_for(&self.ops, l, &r.req, keeps) {
                            Some(held) => Some(held),
                            None => {
                                gate.decline();
                                return Ok(());
                            }
                        }
                    } else {
                        Some(lock_for(&self.ops, l, &r.req, keeps)?)
                    }
                }
                _ => None,
            };
            // What the update may grant with its reply (not a replay's).
            let grant = match &self.locks {
                Some(l) if op == Op::MdsReint && !req.header().flags.contains(MsgFlags::REPLAY) => {
                    Some(LockGrant { locks: Arc::clone(l), owner: req.header().handle.0, nid: req.peer() })
                }
                _ => None,
            };
            let res = gate.submit(ctx, grant);
            if let (Some(l), true) = (&self.locks, op.is_disconnect()) {
                l.drop_owner(req.header().handle.0);
            }
            return res;
        }
        match gate.admit(ctx) {
            Admission::Admitted(a) => {
                let res = if op == Op::MdsSync {
                    gate.with_target(ctx, Target::sync);
                    Ok(Vec::new())
                } else {
                    self.ops.read(&a.uuid, &req.frame()?)
                };
                match res {
                    Ok(body) => gate.reply(ctx, &a, 0, &body),
                    Err(e) => gate.reply(ctx, &a, -e.0, &[]),
                }
                Ok(())
            }
            Admission::Refused => Ok(()),
            Admission::Pass => gate.submit(ctx, None),
        }
    }
}
