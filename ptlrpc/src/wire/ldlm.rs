//! LDLM bodies: lock enqueue with an intent, cancel, and the blocking
//! callback the MDT sends a lock's holder.
//!
//! Owns: [`LdlmEnqueueReq`] (`LDLM_ENQUEUE`: an MDS read intent —
//! getattr or lookup — answered together with the locks granted for it,
//! so caching costs no extra round trip, as Lustre's `IT_GETATTR` /
//! `IT_LOOKUP`), [`LdlmEnqueueReply`], [`LdlmLockDesc`],
//! [`LdlmCancelReq`] (`LDLM_CANCEL`, client to MDT) and
//! [`LdlmBlCallbackReq`] (`LDLM_BL_CALLBACK`, MDT to the client's
//! callback service on `portals::LDLM_CB_REQUEST_PORTAL`). Modes and bits
//! travel as Lustre's numbers (`ldlm::LockMode::wire`,
//! `ldlm::InodeBits::wire`).
//!
//! Must not: hold behaviour beyond plain data; errors travel as the
//! header's status (an intent's ENOENT is an error reply, no lock).

use rkyv::{Archive, Deserialize, Serialize};

use super::mds::{AttrReply, Creds, Fid, GetattrReq, LookupReq};

/// What an enqueue is for: the MDS read whose answer the locks protect.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum LdlmIntent {
    /// `MDS_GETATTR` of an object: an UPDATE lock on it.
    Getattr(GetattrReq),
    /// `MDS_GETATTR_NAME`: a LOOKUP lock on the child found (the name
    /// leading to it) and an UPDATE lock on it (its attributes).
    Lookup(LookupReq),
}

/// `LDLM_ENQUEUE`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct LdlmEnqueueReq {
    /// The caller (the intent's read checks permissions as its own
    /// request would).
    pub creds: Creds,
    /// The mode wanted (`LockMode::Pr` for reads).
    pub mode: u32,
    /// The bits wanted; the MDT grants a subset.
    pub bits: u64,
    /// The read it serves.
    pub intent: LdlmIntent,
}

/// A granted lock.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct LdlmLockDesc {
    /// The lock's handle (never 0).
    pub handle: u64,
    /// The object it covers.
    pub res: Fid,
    /// Its mode.
    pub mode: u32,
    /// Its bits.
    pub bits: u64,
}

/// Reply to `LDLM_ENQUEUE`: the intent's answer and the locks granted
/// for it (none when a conflicting lock is held or wanted: the answer is
/// then valid only at this instant).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct LdlmEnqueueReply {
    /// Locks granted, read before the answer was.
    pub locks: Vec<LdlmLockDesc>,
    /// The intent's answer.
    pub attr: AttrReply,
}

/// `LDLM_CANCEL`: locks the client gives back.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct LdlmCancelReq {
    /// Their handles.
    pub handles: Vec<u64>,
}

/// `LDLM_BL_CALLBACK`: give this lock back (another lock waits for it).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct LdlmBlCallbackReq {
    /// The lock.
    pub handle: u64,
    /// Its object.
    pub res: Fid,
    /// Its bits.
    pub bits: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Frame, Header, MsgKind, Op, Xid, encode};

    #[test]
    fn lock_desc_is_pinned() {
        let d = LdlmLockDesc { handle: 0x0102_0304_0506_0708, res: Fid { seq: 9, oid: 10, ver: 0 }, mode: 4, bits: 3 };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&d).expect("archives");
        #[rustfmt::skip]
        let golden: [u8; 40] = [
            8, 7, 6, 5, 4, 3, 2, 1,
            9, 0, 0, 0, 0, 0, 0, 0,  10, 0, 0, 0,  0, 0, 0, 0,
            4, 0, 0, 0,  0, 0, 0, 0,
            3, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(&bytes[..], &golden[..]);
    }

    #[test]
    fn bl_callback_is_pinned() {
        let b = LdlmBlCallbackReq { handle: 7, res: Fid { seq: 1, oid: 2, ver: 3 }, bits: 2 };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&b).expect("archives");
        #[rustfmt::skip]
        let golden: [u8; 32] = [
            7, 0, 0, 0, 0, 0, 0, 0,
            1, 0, 0, 0, 0, 0, 0, 0,  2, 0, 0, 0,  3, 0, 0, 0,
            2, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(&bytes[..], &golden[..]);
    }

    #[test]
    fn cancel_is_pinned() {
        let c = LdlmCancelReq { handles: vec![5, 6] };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&c).expect("archives");
        // The two handles, then the vector's relative pointer and length.
        #[rustfmt::skip]
        let golden: [u8; 24] = [
            5, 0, 0, 0, 0, 0, 0, 0,
            6, 0, 0, 0, 0, 0, 0, 0,
            0xf0, 0xff, 0xff, 0xff,  2, 0, 0, 0,
        ];
        assert_eq!(&bytes[..], &golden[..]);
    }

    #[test]
    fn enqueue_round_trips_and_truncation_is_rejected() {
        let reqs = [
            LdlmEnqueueReq {
                creds: Creds { uid: 1, gid: 2, groups: vec![3] },
                mode: 4,
                bits: 2,
                intent: LdlmIntent::Getattr(GetattrReq { fid: Fid::ROOT, access: 0 }),
            },
            LdlmEnqueueReq {
                creds: Creds::ROOT,
                mode: 4,
                bits: 3,
                intent: LdlmIntent::Lookup(LookupReq { parent: Fid::ROOT, name: "a-long-enough-name".into() }),
            },
        ];
        for r in reqs {
            let bytes = encode(&Header::new(MsgKind::Request, Op::LdlmEnqueue.opcode(), Xid(1)), &r).expect("encodes");
            let f = Frame::parse(&bytes).expect("parses");
            assert_eq!(f.deserialize::<LdlmEnqueueReq>().expect("validates"), r);
            let short = &f.body_bytes()[..f.body_bytes().len() - 3];
            assert!(rkyv::from_bytes::<LdlmEnqueueReq, rkyv::rancor::Error>(short).is_err());
        }
        let rep = LdlmEnqueueReply {
            locks: vec![LdlmLockDesc { handle: 1, res: Fid::ROOT, mode: 4, bits: 1 }],
            attr: AttrReply::default(),
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&rep).expect("archives");
        assert_eq!(rkyv::from_bytes::<LdlmEnqueueReply, rkyv::rancor::Error>(&bytes).expect("validates"), rep);
    }
}
