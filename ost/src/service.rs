//! The OST's binding of ptlrpc's `TargetService`: what each modifying
//! request means.
//!
//! Owns: [`OstService`] — plans for CREATE (a range after its sequence's
//! last id; that sequence's id allocator's version is checked on replay), DESTROY, SETATTR, PUNCH
//! and WRITE (the front's pages, [`OstInput`]), each naming the objects it
//! touches so VBR can check them, with its reply body (kept in the
//! client's record, so a resent CREATE gets the same range back); the
//! grant a client gets at connect and gives back when its export goes.
//!
//! Must not: do the change (the store applies it) or move data (the front
//! does); reads never reach it.

use std::sync::Arc;

use lnet::MdBuffer;
use ptlrpc::target::{Plan, TargetService};
use ptlrpc::wire::ost::MAX_PRECREATE;
use ptlrpc::wire::ost::{ALLOCATED_UNKNOWN, PUNCH_TRUNCATE, attr_valid};
use ptlrpc::wire::{
    ConnectData, Frame, Op, OstAttr, OstBrw, OstBrwReply, OstCreate, OstCreateReply, OstId, OstObj, OstPunch,
    OstSetattr, WireBody, connect_flags, errno,
};

use crate::store::{OstChange, OstStore, last_id_obj, obj_id};
use crate::target::{Ost, now_ns};

/// What the front hands the target with a request.
#[derive(Debug, Default)]
pub struct OstInput {
    /// A write's pages, fetched and verified.
    pub pages: Option<MdBuffer>,
    /// The client's grant as the front left it (for the reply).
    pub grant: u64,
}

/// One target's service.
#[derive(Debug)]
pub struct OstService {
    ost: Arc<Ost>,
}

impl OstService {
    /// The service of `ost`.
    pub fn new(ost: Arc<Ost>) -> OstService {
        OstService { ost }
    }

    fn attr(&self, oid: OstId) -> Result<OstAttr, i32> {
        self.ost.getattr(oid).map_err(|e| e.errno())
    }
}

fn body<T>(b: &T) -> Result<Vec<u8>, i32>
where
    T: WireBody,
{
    rkyv::to_bytes::<rkyv::rancor::Error>(b).map(|v| v.to_vec()).map_err(|_| errno::EINVAL)
}

impl TargetService for OstService {
    type Store = OstStore;
    type Input = OstInput;

    fn plan(
        &mut self,
        _store: &OstStore,
        _uuid: &str,
        op: Op,
        req: &Frame<'_>,
        input: OstInput,
    ) -> Result<Plan<OstChange>, i32> {
        let proto = |_| errno::EPROTO;
        self.ost.check_running().map_err(|e| e.errno())?;
        match op {
            Op::OstCreate => {
                let b: OstCreate = req.deserialize().map_err(proto)?;
                if b.seq == 0 || b.count == 0 || b.count > MAX_PRECREATE {
                    return Err(errno::EINVAL);
                }
                let first = self.ost.last_id(b.seq).0 + 1;
                let reply = OstCreateReply { first, count: b.count, last_id: first + u64::from(b.count) - 1 };
                Ok(Plan::Update {
                    objects: vec![last_id_obj(b.seq)],
                    change: OstChange::Create { seq: b.seq, first, count: b.count },
                    body: body(&reply)?,
                })
            }
            Op::OstDestroy => {
                let b: OstObj = req.deserialize().map_err(proto)?;
                self.ost.record(b.oid).map_err(|e| e.errno())?;
                Ok(Plan::Update {
                    objects: vec![obj_id(b.oid)],
                    change: OstChange::Destroy { oid: b.oid },
                    body: vec![],
                })
            }
            Op::OstSetattr => {
                let s: OstSetattr = req.deserialize().map_err(proto)?;
                let mut a = self.attr(s.oid)?;
                if s.valid & attr_valid::SIZE != 0 {
                    a.size = s.size;
                }
                if s.valid & attr_valid::OWNER != 0 {
                    (a.uid, a.gid) = (s.uid, s.gid);
                }
                a.mtime_ns = if s.valid & attr_valid::MTIME != 0 { s.mtime_ns } else { now_ns() };
                Ok(Plan::Update { objects: vec![obj_id(s.oid)], change: OstChange::Setattr(s), body: body(&a)? })
            }
            Op::OstPunch => {
                let p: OstPunch = req.deserialize().map_err(proto)?;
                let mut a = self.attr(p.oid)?;
                if p.mode == PUNCH_TRUNCATE {
                    a.size = p.start;
                }
                a.mtime_ns = now_ns();
                Ok(Plan::Update { objects: vec![obj_id(p.oid)], change: OstChange::Punch(p), body: body(&a)? })
            }
            Op::OstWrite => {
                let b: OstBrw = req.deserialize().map_err(proto)?;
                let runs = self.ost.runs(&b.niobufs, b.bulk.len, 0).map_err(|e| e.errno())?;
                let size = self.ost.record(b.oid).map_err(|e| e.errno())?.size.max(runs.end);
                // What a glimpse after it would see: the writer's close then
                // needs no glimpse (size on MDT).
                // Not known (the object's file could not be looked at): the
                // writer's close glimpses instead; the write goes on.
                let allocated = self.ost.allocated_after(b.oid, &runs).unwrap_or_else(|e| {
                    tracing::warn!(oid = %b.oid, err = %e, "allocation after a write not known");
                    ALLOCATED_UNKNOWN
                });
                let mtime_ns = now_ns();
                let reply = OstBrwReply {
                    len: b.bulk.len,
                    size,
                    grant: input.grant,
                    allocated,
                    mtime_ns,
                    ..OstBrwReply::default()
                };
                Ok(Plan::Update {
                    objects: vec![obj_id(b.oid)],
                    change: OstChange::Write { oid: b.oid, runs, data: input.pages, mtime_ns },
                    body: body(&reply)?,
                })
            }
            _ => Err(errno::EOPNOTSUPP),
        }
    }

    fn connected(&mut self, _store: &OstStore, uuid: &str, asked: &ConnectData, negotiated: &mut ConnectData) {
        if negotiated.flags & connect_flags::GRANT != 0 {
            negotiated.grant = self.ost.connect_grant(uuid, asked.grant);
        }
    }

    fn export_gone(&mut self, _store: &mut OstStore, uuid: &str) {
        self.ost.release_grant(uuid);
    }
}
