//! Portals and match entries.
//!
//! Owns the portal table: for each portal index, an ordered list of match
//! entries (who may match, match bits, ignore bits) each bound to one MD
//! cookie. Matching here is pure: it answers "which entries could take this
//! message, in order"; whether the MD has room is the core's question.

use crate::nid::Nid;

/// Portals per LNet instance (LNet's `MAX_PORTALS`).
pub const MAX_PORTALS: u32 = 64;

/// Which initiators an entry accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchPeer {
    /// Any peer.
    Any,
    /// Only this NID.
    Nid(Nid),
}

/// Where a new entry goes in its portal's list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertPos {
    /// Behind every existing entry (searched last).
    Tail,
    /// In front of every existing entry (searched first).
    Head,
}

/// What a match entry matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatchSpec {
    /// Accepted initiators.
    pub peer: MatchPeer,
    /// Bits that must equal the message's match bits...
    pub match_bits: u64,
    /// ...except these, which are ignored.
    pub ignore_bits: u64,
}

impl MatchSpec {
    /// Matches exactly `bits` from any peer.
    pub fn bits(bits: u64) -> MatchSpec {
        MatchSpec { peer: MatchPeer::Any, match_bits: bits, ignore_bits: 0 }
    }

    /// Matches everything from any peer.
    pub fn any() -> MatchSpec {
        MatchSpec { peer: MatchPeer::Any, match_bits: 0, ignore_bits: u64::MAX }
    }

    /// True when a message from `src` with `bits` matches.
    pub fn matches(&self, src: Nid, bits: u64) -> bool {
        let peer_ok = match self.peer {
            MatchPeer::Any => true,
            MatchPeer::Nid(n) => n == src,
        };
        peer_ok && (self.match_bits ^ bits) & !self.ignore_bits == 0
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct MatchEntry {
    pub(crate) spec: MatchSpec,
    pub(crate) md: u64,
}

/// The portal table.
#[derive(Debug)]
pub(crate) struct PortalTable {
    portals: Vec<Vec<MatchEntry>>,
}

impl PortalTable {
    pub(crate) fn new() -> PortalTable {
        PortalTable { portals: (0..MAX_PORTALS).map(|_| Vec::new()).collect() }
    }

    pub(crate) fn attach(&mut self, portal: u32, spec: MatchSpec, md: u64, pos: InsertPos) {
        let list = &mut self.portals[portal as usize];
        let me = MatchEntry { spec, md };
        match pos {
            InsertPos::Tail => list.push(me),
            InsertPos::Head => list.insert(0, me),
        }
    }

    pub(crate) fn detach(&mut self, portal: u32, md: u64) {
        if let Some(list) = self.portals.get_mut(portal as usize) {
            list.retain(|me| me.md != md);
        }
    }

    /// MD cookies whose entries match, in search order.
    pub(crate) fn candidates(&self, portal: u32, src: Nid, bits: u64) -> impl Iterator<Item = u64> + '_ {
        self.portals
            .get(portal as usize)
            .into_iter()
            .flatten()
            .filter(move |me| me.spec.matches(src, bits))
            .map(|me| me.md)
    }

    pub(crate) fn entries(&self) -> usize {
        self.portals.iter().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn order_and_peer_filter() {
        let a: Nid = "1.2.3.4@tcp".parse().unwrap();
        let b: Nid = "1.2.3.5@tcp".parse().unwrap();
        let mut t = PortalTable::new();
        t.attach(3, MatchSpec::any(), 1, InsertPos::Tail);
        t.attach(3, MatchSpec { peer: MatchPeer::Nid(a), match_bits: 7, ignore_bits: 0 }, 2, InsertPos::Head);
        assert_eq!(t.candidates(3, a, 7).collect::<Vec<_>>(), vec![2, 1]);
        assert_eq!(t.candidates(3, b, 7).collect::<Vec<_>>(), vec![1]);
        assert_eq!(t.candidates(4, a, 7).count(), 0);
        assert_eq!(t.candidates(99, a, 7).count(), 0);
        t.detach(3, 1);
        assert_eq!(t.entries(), 1);
    }

    proptest! {
        #[test]
        fn ignore_bits_mask_exactly(mb in any::<u64>(), ib in any::<u64>(), msg in any::<u64>()) {
            let spec = MatchSpec { peer: MatchPeer::Any, match_bits: mb, ignore_bits: ib };
            let expect = (0..64).all(|i| {
                let bit = 1u64 << i;
                ib & bit != 0 || (mb & bit) == (msg & bit)
            });
            prop_assert_eq!(spec.matches(Nid::LO, msg), expect);
        }

        #[test]
        fn everything_matches_any_and_exact_matches_itself(msg in any::<u64>()) {
            prop_assert!(MatchSpec::any().matches(Nid::LO, msg));
            prop_assert!(MatchSpec::bits(msg).matches(Nid::LO, msg));
            prop_assert!(!MatchSpec::bits(msg).matches(Nid::LO, !msg));
        }
    }
}
