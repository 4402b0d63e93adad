//! FIDs from sequences: MDT0 is the sequence controller handing out
//! sequences of [`SEQ_WIDTH`] object ids; each MDT allocates FIDs from its
//! current sequence and asks for a new one when it runs out.
//!
//! Owns: the key encoding of a FID, [`SeqController`] (the super-sequence
//! cursor MDT0 keeps) and [`FidCursor`] (an MDT's current sequence and next
//! oid). Both cursors are written in the same batch as the inode that uses
//! them, so a FID is never handed out twice across a crash.
//!
//! Must not: allocate FIDs outside the namespace's write lock.

use ptlrpc::wire::Fid;
use rkyv::{Archive, Deserialize, Serialize};

/// Object ids per sequence (Lustre's `LUSTRE_SEQ_MAX_WIDTH`).
pub const SEQ_WIDTH: u32 = 0x2_0000;
/// The first sequence for normal files (Lustre's `FID_SEQ_NORMAL`).
pub const FIRST_SEQ: u64 = 0x2_0000_0400;

/// A FID as a 16-byte big-endian key (orders by seq, then oid).
pub fn key(f: Fid) -> [u8; 16] {
    f.as_u128().to_be_bytes()
}

/// The FID of a 16-byte key prefix.
pub fn from_key(k: &[u8]) -> Option<Fid> {
    let b: [u8; 16] = k.get(..16)?.try_into().ok()?;
    Some(Fid::from_u128(u128::from_be_bytes(b)))
}

/// MDT0's super-sequence cursor: the next sequence to hand out.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqController {
    /// Next unallocated sequence.
    pub next: u64,
}

impl Default for SeqController {
    fn default() -> SeqController {
        SeqController { next: FIRST_SEQ }
    }
}

impl SeqController {
    /// Hands out the next sequence.
    pub fn alloc(&mut self) -> u64 {
        let s = self.next;
        self.next += 1;
        s
    }
}

/// An MDT's FID cursor.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FidCursor {
    /// The current sequence (0: none yet).
    pub seq: u64,
    /// The next oid in it.
    pub next_oid: u32,
}

impl FidCursor {
    /// The next FID, taking a new sequence from `ctl` when the current one
    /// is used up.
    pub fn next(&mut self, ctl: &mut SeqController) -> Fid {
        if self.seq == 0 || self.next_oid >= SEQ_WIDTH {
            self.seq = ctl.alloc();
            self.next_oid = 1;
        }
        let f = Fid { seq: self.seq, oid: self.next_oid, ver: 0 };
        self.next_oid += 1;
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fids_are_unique_across_sequences() {
        let mut ctl = SeqController::default();
        let mut c = FidCursor::default();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..(SEQ_WIDTH as usize + 10) {
            assert!(seen.insert(c.next(&mut ctl)));
        }
        assert_eq!(ctl.next, FIRST_SEQ + 2);
        let f = Fid { seq: 5, oid: 7, ver: 0 };
        assert_eq!(from_key(&key(f)), Some(f));
    }
}
