//! Sequences (Lustre's seq/FLD, one MDT): where FIDs come from.
//!
//! Three levels, each handing the next ranges it never hands out again:
//!
//! - the **controller** on MDT0 ([`SeqController`]) hands out
//!   super-sequences of [`SUPER_WIDTH`] sequences to sequence servers;
//! - an MDT's **sequence server** ([`SeqServer`]) holds one super-sequence
//!   and grants sequences from it — to clients (`SEQ_QUERY`
//!   `ALLOC_META`, at most [`META_MAX`] a time) and to the MDT itself for
//!   the FIDs it chooses (the cursor in `crate::fid`); when its
//!   super-sequence is used up it takes the next from the controller;
//! - a **client** allocates FIDs `seq:1..SEQ_WIDTH` from its grant and asks
//!   again when it runs out (`client::mdc`).
//!
//! Every grant is durable before it is answered: the new controller and
//! server cursors and the grantee's record are written and persisted in
//! one batch ([`Sequences::grant`] returns the batch; the namespace
//! persists it before using the grant), so a restart never grants a range
//! twice. Each grantee's grants are kept ([`GRANTS_KEPT`] most recent
//! runs, contiguous grants merged), and a create naming a FID is accepted
//! only from a sequence granted to that client — or, for a replay, from
//! one the MDT took for itself (a replayed open recreates a file under the
//! FID the MDT chose at first).
//!
//! Owns: the cursors' and grant records' encoding and the grant rules.
//! Must not: write the store (the namespace does, under its write lock),
//! or hand out a range before the batch recording it is durable.

use std::collections::HashMap;
use std::ops::Range;

use ptlrpc::wire::Fid;
use rkyv::{Archive, Deserialize, Serialize};

use crate::store::{Batch, Kv, Table, decode, encode};

/// Object ids per sequence (Lustre's `LUSTRE_SEQ_MAX_WIDTH`).
pub const SEQ_WIDTH: u32 = 0x2_0000;
/// The first sequence for normal files (Lustre's `FID_SEQ_NORMAL`).
pub const FIRST_SEQ: u64 = 0x2_0000_0400;
/// Sequences per super-sequence (what the controller hands a server).
pub const SUPER_WIDTH: u64 = 1 << 20;
/// Sequences one client grant holds at most.
pub const META_MAX: u32 = 16;
/// Grant runs kept per grantee (older ones are forgotten: a create from
/// them is refused).
pub const GRANTS_KEPT: usize = 64;
/// The grantee name of the MDT's own sequences.
pub const OWN: &str = "\0mdt";

const CTL_KEY: &[u8] = b"seq_controller";
const SRV_KEY: &[u8] = b"seq_server";
const GRANT_PREFIX: &[u8] = b"seqgrant:";
const GRANT_END: &[u8] = b"seqgrant;";

/// MDT0's super-sequence cursor: the next sequence no server holds.
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
    /// Hands out the next super-sequence.
    pub fn alloc_super(&mut self) -> Range<u64> {
        let s = self.next;
        self.next += SUPER_WIDTH;
        s..self.next
    }
}

/// An MDT's sequence server: what is left of its super-sequence.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeqServer {
    /// Next sequence to grant.
    pub start: u64,
    /// End of the super-sequence held (`start == end`: none left).
    pub end: u64,
}

impl SeqServer {
    /// Grants up to `count` (at least 1) sequences, taking a new
    /// super-sequence from `ctl` when none is left.
    pub fn grant(&mut self, count: u32, ctl: &mut SeqController) -> Range<u64> {
        if self.start >= self.end {
            let r = ctl.alloc_super();
            (self.start, self.end) = (r.start, r.end);
        }
        let n = u64::from(count.max(1)).min(self.end - self.start);
        let g = self.start..self.start + n;
        self.start = g.end;
        g
    }
}

/// A grantee's grants: runs of sequences, oldest first.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Grants {
    /// `(start, end)` runs.
    pub runs: Vec<(u64, u64)>,
}

impl Grants {
    fn add(&mut self, g: &Range<u64>) {
        match self.runs.last_mut() {
            Some(last) if last.1 == g.start => last.1 = g.end,
            _ => self.runs.push((g.start, g.end)),
        }
        if self.runs.len() > GRANTS_KEPT {
            self.runs.drain(..self.runs.len() - GRANTS_KEPT);
        }
    }

    /// Whether `seq` was granted (and not forgotten).
    pub fn contains(&self, seq: u64) -> bool {
        self.runs.iter().any(|&(s, e)| (s..e).contains(&seq))
    }
}

/// Why a client-named FID is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a FID a client may name at all (below [`FIRST_SEQ`], oid 0 or
    /// past the width, a version): EINVAL.
    Insane,
    /// From a sequence not granted to this client: EPERM.
    NotGranted,
}

/// The controller, this MDT's server and every grantee's grants, as
/// persisted.
#[derive(Debug, Default)]
pub struct Sequences {
    ctl: SeqController,
    srv: SeqServer,
    grants: HashMap<String, Grants>,
}

/// A grant decided but not yet durable: apply it with
/// [`Sequences::granted`] once [`PendingGrant::batch`] is persisted.
#[derive(Debug)]
pub struct PendingGrant {
    /// The sequences granted.
    pub range: Range<u64>,
    ctl: SeqController,
    srv: SeqServer,
    owner: String,
    grants: Grants,
}

impl PendingGrant {
    /// The batch recording it (cursors and the grantee's grants).
    pub fn batch(&self) -> Batch {
        let mut b = Batch::new();
        b.put(Table::Meta, CTL_KEY, encode(&self.ctl));
        b.put(Table::Meta, SRV_KEY, encode(&self.srv));
        b.put(Table::Meta, grant_key(&self.owner), encode(&self.grants));
        b
    }
}

fn grant_key(owner: &str) -> Vec<u8> {
    let mut k = GRANT_PREFIX.to_vec();
    k.extend_from_slice(owner.as_bytes());
    k
}

impl Sequences {
    /// Reads the cursors and grants back (defaults on a fresh store; a
    /// store from before the server existed starts its server empty, so
    /// its first grant takes a super-sequence above everything granted).
    pub fn load(kv: &dyn Kv) -> crate::error::Result<Sequences> {
        let ctl = match kv.get(Table::Meta, CTL_KEY)? {
            Some(v) => decode::<SeqController>(Table::Meta, &v)?,
            None => SeqController::default(),
        };
        let srv = match kv.get(Table::Meta, SRV_KEY)? {
            Some(v) => decode::<SeqServer>(Table::Meta, &v)?,
            None => SeqServer::default(),
        };
        let mut grants = HashMap::new();
        crate::store::scan(kv, Table::Meta, GRANT_PREFIX, GRANT_END, |k, v| {
            let owner = String::from_utf8_lossy(k.get(GRANT_PREFIX.len()..).unwrap_or_default()).into_owned();
            grants.insert(owner, decode::<Grants>(Table::Meta, v)?);
            Ok(())
        })?;
        Ok(Sequences { ctl, srv, grants })
    }

    /// Decides a grant of up to `count` sequences to `owner` (clamped to
    /// `1..=META_MAX`) without changing anything yet.
    pub fn grant(&self, owner: &str, count: u32) -> PendingGrant {
        let (mut ctl, mut srv) = (self.ctl, self.srv);
        let range = srv.grant(count.clamp(1, META_MAX), &mut ctl);
        let mut grants = self.grants.get(owner).cloned().unwrap_or_default();
        grants.add(&range);
        PendingGrant { range, ctl, srv, owner: owner.to_string(), grants }
    }

    /// A grant's batch was persisted: it takes effect.
    pub fn granted(&mut self, p: PendingGrant) -> Range<u64> {
        self.ctl = p.ctl;
        self.srv = p.srv;
        self.grants.insert(p.owner, p.grants);
        p.range
    }

    /// Whether client `owner` may create `f` (`replay`: a replayed
    /// create or open, which may also name a FID the MDT chose).
    pub fn check(&self, owner: &str, f: Fid, replay: bool) -> Result<(), Refusal> {
        if f.seq < FIRST_SEQ || f.oid == 0 || f.oid >= SEQ_WIDTH || f.ver != 0 {
            return Err(Refusal::Insane);
        }
        let mine = |o: &str| self.grants.get(o).is_some_and(|g| g.contains(f.seq));
        if mine(owner) || (replay && mine(OWN)) { Ok(()) } else { Err(Refusal::NotGranted) }
    }

    /// The sequences granted to `owner` (the ones still remembered).
    pub fn granted_to(&self, owner: &str) -> Vec<u64> {
        self.grants.get(owner).map_or_else(Vec::new, |g| g.runs.iter().flat_map(|&(s, e)| s..e).collect())
    }

    /// The controller's cursor (the next super-sequence's start).
    pub fn controller(&self) -> SeqController {
        self.ctl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_grant_from_super_sequences_and_never_twice() {
        let mut s = Sequences::default();
        let mut seen = std::collections::HashSet::new();
        let mut last_end = 0;
        // Across a super-sequence boundary.
        for i in 0..(SUPER_WIDTH / u64::from(META_MAX) + 3) {
            let owner = if i % 2 == 0 { "a" } else { "b" };
            let p = s.grant(owner, META_MAX);
            assert!(!p.range.is_empty() && p.range.end - p.range.start <= u64::from(META_MAX));
            assert!(p.range.start >= last_end);
            last_end = p.range.end;
            for q in p.range.clone() {
                assert!(seen.insert(q));
            }
            s.granted(p);
        }
        assert_eq!(s.controller().next, FIRST_SEQ + 2 * SUPER_WIDTH);
    }

    #[test]
    fn a_fid_is_accepted_only_from_its_clients_grants() {
        let mut s = Sequences::default();
        let p = s.grant("a", 2);
        let a = s.granted(p);
        let p = s.grant(OWN, 1);
        let own = s.granted(p);
        let fa = Fid { seq: a.start + 1, oid: 5, ver: 0 };
        assert_eq!(s.check("a", fa, false), Ok(()));
        assert_eq!(s.check("b", fa, false), Err(Refusal::NotGranted));
        let fo = Fid { seq: own.start, oid: 1, ver: 0 };
        assert_eq!(s.check("a", fo, false), Err(Refusal::NotGranted));
        assert_eq!(s.check("a", fo, true), Ok(()), "a replay may name an MDT-chosen FID");
        for bad in [Fid { seq: 1, oid: 1, ver: 0 }, Fid { oid: 0, ..fa }, Fid { oid: SEQ_WIDTH, ..fa }] {
            assert_eq!(s.check("a", bad, false), Err(Refusal::Insane));
        }
        // Contiguous grants merge; only the last GRANTS_KEPT runs are kept.
        let mut g = Grants::default();
        g.add(&(10..12));
        g.add(&(12..13));
        assert_eq!(g.runs, vec![(10, 13)]);
        for i in 0..GRANTS_KEPT as u64 + 1 {
            g.add(&(100 + 2 * i..101 + 2 * i));
        }
        assert_eq!(g.runs.len(), GRANTS_KEPT);
        assert!(!g.contains(10) && g.contains(100 + 2 * GRANTS_KEPT as u64));
    }
}
