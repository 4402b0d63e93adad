//! Lock modes, inode bits and the compatibility rule between two locks.
//!
//! Owns: [`LockMode`] (Lustre's six modes and their wire values),
//! [`InodeBits`] (which parts of an inode a lock covers) and
//! [`conflicts`], the rule the namespace grants by.
//!
//! Must not: know about queues, owners or time.

use std::fmt;

/// A lock mode, with Lustre's wire values (`LCK_EX` .. `LCK_NL`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
#[repr(u32)]
pub enum LockMode {
    /// Exclusive: the holder changes the resource.
    Ex = 1,
    /// Protected write.
    Pw = 2,
    /// Protected read: the holder caches the resource.
    Pr = 4,
    /// Concurrent write.
    Cw = 8,
    /// Concurrent read.
    Cr = 16,
    /// Null: conflicts with nothing.
    Nl = 32,
}

impl LockMode {
    /// Every mode, strongest first.
    pub const ALL: [LockMode; 6] = [LockMode::Ex, LockMode::Pw, LockMode::Pr, LockMode::Cw, LockMode::Cr, LockMode::Nl];

    /// The wire value.
    pub const fn wire(self) -> u32 {
        self as u32
    }

    /// The mode a wire value names.
    pub fn from_wire(v: u32) -> Option<LockMode> {
        LockMode::ALL.into_iter().find(|m| m.wire() == v)
    }

    /// Whether a lock in `self` may be granted beside one in `other`
    /// (Lustre's `lck_compat_array`; symmetric).
    pub const fn compatible(self, other: LockMode) -> bool {
        use LockMode::*;
        match (self, other) {
            (Nl, _) | (_, Nl) => true,
            (Ex, _) | (_, Ex) => false,
            (Cr, _) | (_, Cr) => true,
            (Pw, _) | (_, Pw) => false,
            (Pr, Pr) | (Cw, Cw) => true,
            (Pr, Cw) | (Cw, Pr) => false,
        }
    }
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            LockMode::Ex => "EX",
            LockMode::Pw => "PW",
            LockMode::Pr => "PR",
            LockMode::Cw => "CW",
            LockMode::Cr => "CR",
            LockMode::Nl => "NL",
        };
        f.write_str(s)
    }
}

/// Which parts of an inode a lock covers (Lustre's `MDS_INODELOCK_*`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, PartialOrd, Ord)]
pub struct InodeBits(u64);

impl InodeBits {
    /// No bits.
    pub const NONE: InodeBits = InodeBits(0);
    /// The name that leads to the inode (the dentry in its parent).
    pub const LOOKUP: InodeBits = InodeBits(0x1);
    /// The inode's attributes, and for a directory its entries (what
    /// readdir shows and which names do not exist).
    pub const UPDATE: InodeBits = InodeBits(0x2);
    /// Every bit this namespace knows.
    pub const KNOWN: InodeBits = InodeBits(0x3);

    /// The bits of a wire value, or `None` when it has bits this
    /// namespace does not know.
    pub const fn from_wire(v: u64) -> Option<InodeBits> {
        if v & !Self::KNOWN.0 == 0 { Some(InodeBits(v)) } else { None }
    }

    /// The wire value.
    pub const fn wire(self) -> u64 {
        self.0
    }

    /// Both sets of bits.
    pub const fn union(self, other: InodeBits) -> InodeBits {
        InodeBits(self.0 | other.0)
    }

    /// Whether any bit is in both.
    pub const fn intersects(self, other: InodeBits) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether every bit of `other` is in `self`.
    pub const fn contains(self, other: InodeBits) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for InodeBits {
    type Output = InodeBits;
    fn bitor(self, rhs: InodeBits) -> InodeBits {
        self.union(rhs)
    }
}

impl fmt::Display for InodeBits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.intersects(InodeBits::LOOKUP) {
            parts.push("LOOKUP");
        }
        if self.intersects(InodeBits::UPDATE) {
            parts.push("UPDATE");
        }
        if parts.is_empty() { f.write_str("-") } else { f.write_str(&parts.join("|")) }
    }
}

/// Whether two inodebits locks on one resource conflict: their bits
/// overlap and their modes are incompatible.
pub const fn conflicts(a: (LockMode, InodeBits), b: (LockMode, InodeBits)) -> bool {
    a.1.intersects(b.1) && !a.0.compatible(b.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use LockMode::*;

    #[test]
    fn compatibility_matches_lustre_table() {
        // Rows and columns in LockMode::ALL order: EX PW PR CW CR NL.
        let table = [
            [0, 0, 0, 0, 0, 1],
            [0, 0, 0, 0, 1, 1],
            [0, 0, 1, 0, 1, 1],
            [0, 0, 0, 1, 1, 1],
            [0, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1],
        ];
        for (i, a) in LockMode::ALL.into_iter().enumerate() {
            for (j, b) in LockMode::ALL.into_iter().enumerate() {
                assert_eq!(a.compatible(b), table[i][j] == 1, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn bits_must_overlap_to_conflict() {
        assert!(!conflicts((Ex, InodeBits::LOOKUP), (Pr, InodeBits::UPDATE)));
        assert!(conflicts((Ex, InodeBits::UPDATE), (Pr, InodeBits::KNOWN)));
        assert!(!conflicts((Pr, InodeBits::KNOWN), (Pr, InodeBits::KNOWN)));
    }

    #[test]
    fn wire_values_round_trip() {
        for m in LockMode::ALL {
            assert_eq!(LockMode::from_wire(m.wire()), Some(m));
        }
        assert_eq!(LockMode::from_wire(3), None);
        assert_eq!(InodeBits::from_wire(0x4), None);
        assert_eq!(InodeBits::from_wire(0x3), Some(InodeBits::KNOWN));
    }
}
