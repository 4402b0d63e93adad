//! The MDT's side of the lock manager in requests: `LDLM_ENQUEUE` read
//! intents answered with the locks that protect them, `LDLM_CANCEL`, and
//! the exclusive locks every modifying request takes before it runs.
//!
//! An intent is answered by the same read path as `MDS_GETATTR` /
//! `MDS_GETATTR_NAME` (`MdtOps::read`, so its checks and metrics apply),
//! run after the locks are granted, so what the reply says stays true
//! until the client is called back. Locks granted: on the object, an
//! UPDATE lock (attributes; a directory's entries) unless it is a regular
//! file whose size the MDT does not know exactly (open for writing, or
//! no lone writer's close since a change: its size comes from the OSTs
//! and is not cached); for a lookup also a LOOKUP lock on the child (the
//! name leading to it). They are separate locks, so a create in a
//! directory revokes its attributes without revoking the name that leads
//! to it. An open that creates a file and asks (`open_flags::LOCK`, a
//! client with a callback service) gets one LOOKUP|UPDATE lock on it with
//! its reply (Lustre's open lock; granted in the plan,
//! `crate::service::MdtOps::modify_granting`, never in a reconstructed
//! reply): the creator caches the name and, once its close makes the
//! size exact, the attributes. Nobody else can change the file without
//! calling it back (an open for writing or a setattr locks its UPDATE).
//!
//! Modifying requests lock, exclusively, before they run: setattr and
//! setxattr the object's UPDATE (a setattr of mode or owner its LOOKUP
//! too: clients cache names under a directory while they hold either lock
//! on it, relying on its mode); create the parent's UPDATE; link the
//! parent's and the object's UPDATE; unlink the parent's UPDATE and the
//! child's LOOKUP and UPDATE; rename both parents' UPDATE, the renamed
//! child's and a replaced target's LOOKUP and UPDATE; an open that
//! creates the parent's UPDATE, an open for writing or truncating the
//! file's UPDATE (not an exclusive create's: it changes no file that
//! exists). Children are found before locking and checked again
//! after (retried when a name moved meanwhile). Replays take no locks
//! (a restarted MDT has none). The locks a request says its client keeps
//! (`MdsReq::keeps`: its own locks on a directory it adds a name to or
//! removes one from, whose cache it updates itself) are neither waited
//! for nor called back.
//!
//! Must not: wait for a lock on a read (reads are granted or answered
//! without a lock), or run a modifying request before its locks are
//! granted.

use ptlrpc::driver::Errno;
use ptlrpc::ldlm::InodeBits;
use ptlrpc::wire::ldlm::{LdlmEnqueueReply, LdlmIntent, LdlmLockDesc};
use ptlrpc::wire::mds::{AttrReply, Creds, MdsReq, ReintReq, attr_valid, open_flags};
use ptlrpc::wire::{Fid, Frame, Header, MsgKind, Op, WireBody, Xid};

use crate::locks::{Keeps, LocalLocks, MdtLocks};
use crate::service::MdtOps;

/// Who asks: the export (owner key), its client's UUID and NID.
#[derive(Debug, Clone, Copy)]
pub struct Asker<'a> {
    /// The export handle.
    pub owner: u64,
    /// The client's UUID.
    pub uuid: &'a str,
    /// Where its callbacks go.
    pub nid: lnet::Nid,
}

fn read_as(ops: &MdtOps, uuid: &str, op: Op, body: &impl WireBody) -> Result<AttrReply, Errno> {
    let bytes =
        ptlrpc::wire::encode(&Header::new(MsgKind::Request, op.opcode(), Xid(0)), body).map_err(|_| Errno::EIO)?;
    let frame = Frame::parse(&bytes).map_err(|_| Errno::EIO)?;
    let rep = ops.read(uuid, &frame)?;
    rkyv::from_bytes::<AttrReply, rkyv::rancor::Error>(&rep).map_err(|_| Errno::EIO)
}

/// Whether a reply's attributes may be cached under an UPDATE lock.
fn cacheable(a: &AttrReply) -> bool {
    a.attr.size_exact()
}

/// Answers an `LDLM_ENQUEUE` intent: the reply body.
pub fn enqueue(
    ops: &MdtOps,
    locks: &MdtLocks,
    who: Asker<'_>,
    creds: &Creds,
    intent: &LdlmIntent,
) -> Result<Enqueued, Errno> {
    let grant = |fid: Fid, bits: InodeBits| locks.grant_read(who.owner, who.uuid, who.nid, fid, bits);
    let give_back = |got: &[LdlmLockDesc]| {
        let hs: Vec<u64> = got.iter().map(|l| l.handle).collect();
        locks.cancel(who.owner, &hs);
    };
    let (attr, mut got) = match intent {
        LdlmIntent::Getattr(r) => {
            let got: Vec<LdlmLockDesc> = grant(r.fid, InodeBits::UPDATE).into_iter().collect();
            match read_as(ops, who.uuid, Op::MdsGetattr, &MdsReq::new(creds.clone(), r.clone())) {
                Ok(a) => (a, got),
                Err(e) => {
                    give_back(&got);
                    return Err(e);
                }
            }
        }
        LdlmIntent::Lookup(r) => {
            let child = ops.ns.lookup_fid(r.parent, &r.name).map_err(Errno::from)?;
            let got: Vec<LdlmLockDesc> =
                [grant(child, InodeBits::LOOKUP), grant(child, InodeBits::UPDATE)].into_iter().flatten().collect();
            let req = MdsReq::new(creds.clone(), r.clone());
            match read_as(ops, who.uuid, Op::MdsGetattrName, &req) {
                Ok(a) if a.attr.fid == child => (a, got),
                other => {
                    // The name moved between the look and the locks: answer
                    // what is there now, without locks.
                    give_back(&got);
                    let body = ops_encode(&LdlmEnqueueReply { locks: Vec::new(), attr: other? })?;
                    return Ok(Enqueued { body, handles: Vec::new() });
                }
            }
        }
    };
    if !cacheable(&attr) {
        let (update, keep): (Vec<_>, Vec<_>) = got.into_iter().partition(|l| l.bits == InodeBits::UPDATE.wire());
        give_back(&update);
        got = keep;
    }
    let handles = got.iter().map(|l| l.handle).collect();
    Ok(Enqueued { body: ops_encode(&LdlmEnqueueReply { locks: got, attr })?, handles })
}

/// An answered intent: the reply body and the handles of the locks it
/// grants (given back if the reply is not sent after all).
#[derive(Debug)]
pub struct Enqueued {
    /// The encoded `LdlmEnqueueReply`.
    pub body: Vec<u8>,
    /// The locks granted in it.
    pub handles: Vec<u64>,
}

fn ops_encode(r: &LdlmEnqueueReply) -> Result<Vec<u8>, Errno> {
    crate::service::encode(r)
}

const LU: InodeBits = InodeBits::KNOWN;

/// A name a request depends on: parent, name, the child found.
type Named = (Fid, String, Option<Fid>);

/// What a modifying request locks, with the children it found by name
/// (checked again once locked).
fn wants(ops: &MdtOps, r: &ReintReq) -> (Vec<(Fid, InodeBits)>, Vec<Named>) {
    let look = |p: Fid, n: &str| ops.ns.lookup_fid(p, n).ok();
    let mut w = Vec::new();
    let mut names = Vec::new();
    let mut child = |w: &mut Vec<(Fid, InodeBits)>, p: Fid, n: &str, bits: InodeBits| {
        let c = look(p, n);
        if let Some(c) = c {
            w.push((c, bits));
        }
        names.push((p, n.to_string(), c));
    };
    match r {
        // A new mode or owner changes who may search a directory (or open
        // a file): the names cached under the object's locks go too
        // (Lustre's setattr adds LOOKUP and PERM for these).
        ReintReq::Setattr { fid, valid, .. } if valid & (attr_valid::MODE | attr_valid::UID | attr_valid::GID) != 0 => {
            w.push((*fid, LU));
        }
        ReintReq::Setattr { fid, .. } | ReintReq::Setxattr { fid, .. } => w.push((*fid, InodeBits::UPDATE)),
        ReintReq::Create { parent, .. } => w.push((*parent, InodeBits::UPDATE)),
        ReintReq::Link { fid, parent, .. } => {
            w.push((*parent, InodeBits::UPDATE));
            w.push((*fid, InodeBits::UPDATE));
        }
        ReintReq::Unlink { parent, name, .. } => {
            w.push((*parent, InodeBits::UPDATE));
            child(&mut w, *parent, name, LU);
        }
        ReintReq::Rename { src_parent, src_name, dst_parent, dst_name, .. } => {
            w.push((*src_parent, InodeBits::UPDATE));
            w.push((*dst_parent, InodeBits::UPDATE));
            child(&mut w, *src_parent, src_name, LU);
            child(&mut w, *dst_parent, dst_name, LU);
        }
        ReintReq::Open { parent, name, by_fid, flags, .. } => {
            if flags & open_flags::CREAT != 0 {
                w.push((*parent, InodeBits::UPDATE));
            }
            // An exclusive create changes no file that exists (EEXIST), and
            // the one it makes is new: nothing of a child's to lock (nor
            // to look up, three times, in a create loop).
            let exclusive = flags & (open_flags::CREAT | open_flags::EXCL) == open_flags::CREAT | open_flags::EXCL;
            if !exclusive && flags & (open_flags::WRONLY | open_flags::RDWR | open_flags::TRUNC) != 0 {
                match by_fid {
                    Some(f) => w.push((*f, InodeBits::UPDATE)),
                    None => child(&mut w, *parent, name, InodeBits::UPDATE),
                }
            }
        }
    }
    (w, names)
}

/// [`lock_for`] without waiting, for a request on the receive path:
/// `None` when a lock conflicts or a name it depends on moved meanwhile
/// (a worker then takes them with [`lock_for`]).
pub fn try_lock_for(ops: &MdtOps, locks: &MdtLocks, r: &ReintReq, keeps: Keeps<'_>) -> Option<LocalLocks> {
    let (w, names) = wants(ops, r);
    let held = locks.try_lock_local(&w, keeps)?;
    let moved = names.iter().any(|(p, n, c)| ops.ns.lookup_fid(*p, n).ok() != *c);
    if moved { None } else { Some(held) }
}

/// Takes the exclusive locks a modifying request needs (see the module
/// docs), retrying when a name it depends on changed while it waited.
/// The changing client's locks `keeps` names stay in place.
pub fn lock_for(ops: &MdtOps, locks: &MdtLocks, r: &ReintReq, keeps: Keeps<'_>) -> Result<LocalLocks, Errno> {
    let mut tries = 0;
    loop {
        let (w, names) = wants(ops, r);
        let held = locks.lock_local(&w, keeps)?;
        let moved = names.iter().any(|(p, n, c)| ops.ns.lookup_fid(*p, n).ok() != *c);
        tries += 1;
        if !moved || tries >= 8 {
            return Ok(held);
        }
        drop(held);
    }
}
