//! [`MdtService`]: the MDT as a [`TargetService`] — what a request means.
//!
//! `plan` runs under the target's lock: reads answer at once
//! ([`Plan::Read`]); `MDS_REINT` and `MDS_CLOSE` run on the namespace
//! mounted deferred, which validates them and builds their transaction
//! without writing it ([`crate::ns::Namespace::take_pending`]); the plan
//! hands it to the store as the change, with the objects it versions (per
//! the VBR seed: create/link/unlink parent and child, rename every object
//! involved, setattr/setxattr the object unless only times or size
//! change). Opens and closes are always updates (an empty transaction
//! when they change nothing else), so each has a transno, a kept reply
//! for a resend, and a place in replay; any other operation that changed
//! nothing (a rename onto itself) is a read. A replay of an update that
//! ran already restores an open's handle (`replay_executed`). Each
//! request is run as its client (the export's UUID): open handles belong
//! to it, and when its export goes (`export_gone`) they are closed.
//!
//! Reconstruction: the reply body is kept with the client record (or, when
//! larger, in the store: [`super::store::reply_key`]).
//!
//! Must not: write the store (apply does), or keep a plan's change when
//! the plan fails.

use std::sync::Arc;

use ptlrpc::target::{ObjId, Plan, ReplySlot, TargetService, TargetStore};
use ptlrpc::wire::{Frame, Op};

use super::store::{MdtChange, MdtStore, reply_key};
use crate::locks::MdtLocks;
use crate::service::{Grant, MdtOps};
use crate::store::Table;

/// The MDT's target service.
#[derive(Debug)]
pub struct MdtService {
    ops: Arc<MdtOps>,
}

impl MdtService {
    /// The service over `ops` (its namespace mounted deferred).
    pub fn new(ops: Arc<MdtOps>) -> MdtService {
        MdtService { ops }
    }
}

/// What a modifying request may grant its client with its reply: read
/// locks from the lock manager, as the export `owner` at `nid` (the front
/// passes it; `None` for replays and without a lock manager).
#[derive(Debug, Clone)]
pub struct LockGrant {
    /// The lock manager.
    pub locks: Arc<MdtLocks>,
    /// The export handle (the locks' owner).
    pub owner: u64,
    /// Where callbacks go.
    pub nid: lnet::Nid,
}

impl TargetService for MdtService {
    type Store = MdtStore;
    type Input = Option<LockGrant>;

    fn plan(
        &mut self,
        _store: &MdtStore,
        uuid: &str,
        op: Op,
        req: &Frame<'_>,
        input: Option<LockGrant>,
    ) -> Result<Plan<MdtChange>, i32> {
        let ns = &self.ops.ns;
        // A failed plan leaves nothing pending for the next one.
        drop(ns.take_pending());
        match op {
            Op::MdsReint | Op::MdsClose => {
                let grant =
                    input.as_ref().map(|g| move |fid, bits| g.locks.grant_read(g.owner, uuid, g.nid, fid, bits));
                let res = self.ops.modify_granting(uuid, req, grant.as_ref().map(|g| g as Grant<'_>));
                let pending = ns.take_pending();
                let m = res.map_err(|e| e.0)?;
                Ok(match pending {
                    Some(tx) => {
                        let objects = tx.objects().iter().map(|f| ObjId(f.as_u128())).collect();
                        Plan::Update { objects, change: MdtChange { tx, reply: m.kept }, body: m.body }
                    }
                    None => Plan::Read { body: m.body },
                })
            }
            Op::MdsSync => Ok(Plan::Read { body: Vec::new() }),
            op if crate::service::is_read(op) => Ok(Plan::Read { body: self.ops.read(uuid, req).map_err(|e| e.0)? }),
            _ => Err(crate::error::errno::EOPNOTSUPP),
        }
    }

    fn replay_executed(&mut self, _store: &MdtStore, uuid: &str, _op: Op, req: &Frame<'_>) {
        self.ops.replay_executed(uuid, req);
    }

    fn export_gone(&mut self, store: &mut MdtStore, uuid: &str) {
        self.ops.export_gone(uuid);
        // The closes (and the client record's removal) durable soon: a
        // crash before leaves orphans to the end-of-recovery cleanup.
        store.commit_async();
    }

    fn reconstruct(&mut self, uuid: &str, slot: &ReplySlot, req: &Frame<'_>) -> Vec<u8> {
        let body = if slot.reply.is_empty() {
            self.ops.ns.kv().get(Table::Meta, &reply_key(uuid, slot.tag)).ok().flatten().unwrap_or_default()
        } else {
            slot.reply.clone()
        };
        // A resent open whose reply was lost (in a restart, say): the
        // client will use the handle the reply names, which lives only in
        // memory; open it again, as Lustre's mdt_reconstruct_open does.
        if slot.result == 0 {
            self.ops.reconstruct_open(uuid, req, &body);
        }
        body
    }
}
