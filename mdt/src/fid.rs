//! FIDs: their key encoding and the MDT's own FID cursor.
//!
//! Sequences come from `crate::seq` (MDT0's controller, this MDT's
//! sequence server, per-client grants). Owns: the key encoding of a FID
//! and [`FidCursor`] (the sequence the MDT allocates its own FIDs from and
//! the next oid). The cursor is written in the same batch as the inode
//! that uses it; its sequences are granted durably beforehand, so a FID is
//! never handed out twice across a crash.
//!
//! Must not: allocate FIDs outside the namespace's write lock.

use ptlrpc::wire::Fid;
use rkyv::{Archive, Deserialize, Serialize};

pub use crate::seq::{FIRST_SEQ, SEQ_WIDTH};

/// A FID as a 16-byte big-endian key (orders by seq, then oid).
pub fn key(f: Fid) -> [u8; 16] {
    f.as_u128().to_be_bytes()
}

/// The FID of a 16-byte key prefix.
pub fn from_key(k: &[u8]) -> Option<Fid> {
    let b: [u8; 16] = k.get(..16)?.try_into().ok()?;
    Some(Fid::from_u128(u128::from_be_bytes(b)))
}

/// The MDT's own FID cursor.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FidCursor {
    /// The current sequence (0: none yet).
    pub seq: u64,
    /// The next oid in it.
    pub next_oid: u32,
}

impl FidCursor {
    /// The next FID, or `None` when the sequence is used up (or there is
    /// none yet): [`FidCursor::start`] a new one first.
    pub fn take(&mut self) -> Option<Fid> {
        if self.seq == 0 || self.next_oid >= SEQ_WIDTH {
            return None;
        }
        let f = Fid { seq: self.seq, oid: self.next_oid, ver: 0 };
        self.next_oid += 1;
        Some(f)
    }

    /// Moves to the new sequence `seq`.
    pub fn start(&mut self, seq: u64) {
        (self.seq, self.next_oid) = (seq, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_runs_through_its_sequence() {
        let mut c = FidCursor::default();
        assert_eq!(c.take(), None);
        c.start(FIRST_SEQ);
        let mut seen = std::collections::HashSet::new();
        while let Some(f) = c.take() {
            assert!(seen.insert(f));
        }
        assert_eq!(seen.len(), SEQ_WIDTH as usize - 1);
        let f = Fid { seq: 5, oid: 7, ver: 0 };
        assert_eq!(from_key(&key(f)), Some(f));
    }
}
