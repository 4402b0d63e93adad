//! The namespace checker: directories, inodes and OST objects agree.
//!
//! Checks, over a store at rest (or a live one, for a best effort): every
//! entry's parent is a directory and its target exists (no dangling
//! entries); every inode is reachable (entry count = link count; a
//! directory has one name and `2 + subdirectories` links; unreachable
//! inodes must be orphans with no links); directory entry counts match;
//! no OST object is used twice, none lies beyond its OST's allocation
//! cursor, and none is both live and waiting in the destroy log.
//!
//! [`check_osts`] then asks the OSTs themselves (Lustre's LFSCK layout
//! pass, by id): for every OST and every object sequence it was granted,
//! every id up to the OST's last one either exists and is named by a
//! layout (or waits in the destroy log), or does not exist and is named by
//! none — a layout naming a missing object is *dangling* (lost data), an
//! existing object no layout names and that is not above the allocation
//! cursor of the current sequence (precreated, pooled) is *leaked*. One
//! GETATTR per id: exact on an idle MDT, a best effort under load.
//!
//! Must not: change anything.

use std::collections::{HashMap, HashSet};

use ptlrpc::wire::{Fid, OstId};

use crate::error::Result;
use crate::fid;
use crate::inode::Inode;
use crate::ns::Namespace;
use crate::store::{KEY_END, Kv, Table, decode, scan};

/// What the checker found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Inodes seen.
    pub inodes: u64,
    /// Directory entries seen.
    pub entries: u64,
    /// OST objects referenced by layouts.
    pub objects: u64,
    /// Objects waiting in the destroy log.
    pub pending_destroys: u64,
    /// Orphans (open-unlinked) seen.
    pub orphans: u64,
    /// Every inconsistency, one line each.
    pub problems: Vec<String>,
}

impl Report {
    /// Nothing wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Default)]
struct Seen {
    names: u32,
    subdirs: u32,
    entries: u64,
}

/// Checks the namespace in `kv`.
pub fn check(kv: &dyn Kv) -> Result<Report> {
    let mut r = Report::default();
    let mut inodes: HashMap<Fid, Inode> = HashMap::new();
    scan(kv, Table::Inodes, &[], KEY_END, |_, v| {
        let i: Inode = decode(Table::Inodes, v)?;
        inodes.insert(i.fid, i);
        Ok(())
    })?;
    r.inodes = inodes.len() as u64;
    let mut seen: HashMap<Fid, Seen> = HashMap::new();
    let mut problems = Vec::new();
    scan(kv, Table::Dirents, &[], KEY_END, |k, v| {
        let d: crate::dir::Dirent = decode(Table::Dirents, v)?;
        r.entries += 1;
        let parent = fid::from_key(k).unwrap_or_default();
        match inodes.get(&parent) {
            Some(p) if p.is_dir() => {}
            Some(_) => problems.push(format!("entry {:?} under non-directory {parent}", d.name)),
            None => problems.push(format!("entry {:?} under missing directory {parent}", d.name)),
        }
        match inodes.get(&d.fid) {
            None => problems.push(format!("dangling entry {parent}/{:?} -> {}", d.name, d.fid)),
            Some(c) => {
                seen.entry(d.fid).or_default().names += 1;
                if c.is_dir() {
                    seen.entry(parent).or_default().subdirs += 1;
                    if c.parent != parent {
                        problems.push(format!("directory {} is in {parent} but names {} as parent", d.fid, c.parent));
                    }
                }
            }
        }
        seen.entry(parent).or_default().entries += 1;
        Ok(())
    })?;
    let mut orphans = HashSet::new();
    scan(kv, Table::Orphans, &[], KEY_END, |k, _| {
        orphans.extend(fid::from_key(k));
        Ok(())
    })?;
    r.orphans = orphans.len() as u64;
    let mut objects: HashMap<(u32, ptlrpc::wire::OstId), Fid> = HashMap::new();
    for (f, i) in &inodes {
        let s = seen.remove(f).unwrap_or_default();
        if i.is_dir() {
            let want_names = u32::from(*f != Fid::ROOT);
            if s.names != want_names {
                problems.push(format!("directory {f} has {} names", s.names));
            }
            if i.nlink != 2 + s.subdirs {
                problems.push(format!("directory {f}: nlink {} but {} subdirectories", i.nlink, s.subdirs));
            }
            if i.entries != s.entries {
                problems.push(format!("directory {f}: {} entries recorded, {} found", i.entries, s.entries));
            }
        } else if orphans.contains(f) {
            if s.names != 0 || i.nlink != 0 {
                problems.push(format!("orphan {f} still has {} names, nlink {}", s.names, i.nlink));
            }
        } else if s.names == 0 {
            problems.push(format!("unreachable inode {f} (nlink {})", i.nlink));
        } else if i.nlink != s.names {
            problems.push(format!("inode {f}: nlink {} but {} names", i.nlink, s.names));
        }
        for o in i.layout.iter().flat_map(|l| &l.objects) {
            r.objects += 1;
            if let Some(other) = objects.insert((o.ost, o.id), *f) {
                problems.push(format!("object {}:{} used by {f} and {other}", o.ost, o.id));
            }
            let cursor = crate::alloc::stored_last_used(kv, o.ost, o.id.seq)?;
            if o.id.oid > cursor {
                problems.push(format!("object {}:{} of {f} beyond the OST cursor {cursor:#x}", o.ost, o.id));
            }
        }
    }
    scan(kv, Table::DestroyLog, &[], KEY_END, |_, v| {
        r.pending_destroys += 1;
        if let Some((ost, id)) = crate::ns::parse_destroy_record(v)
            && let Some(f) = objects.get(&(ost, id))
        {
            problems.push(format!("object {ost}:{id} is live in {f} and in the destroy log"));
        }
        Ok(())
    })?;
    r.problems = problems;
    Ok(r)
}

/// What [`check_osts`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OstsReport {
    /// Object ids asked about.
    pub asked: u64,
    /// Objects precreated and not handed out yet (above the cursor).
    pub pooled: u64,
    /// Dangling and leaked objects, and OSTs that did not answer.
    pub problems: Vec<String>,
}

/// Asks every OST of `ns` about every object id of every sequence it was
/// granted (see the module docs).
pub fn check_osts(ns: &Namespace) -> Result<OstsReport> {
    let kv = &**ns.kv();
    let mut named: HashMap<(u32, OstId), Fid> = HashMap::new();
    scan(kv, Table::Inodes, &[], KEY_END, |_, v| {
        let i: Inode = decode(Table::Inodes, v)?;
        for o in i.layout.iter().flat_map(|l| &l.objects) {
            named.insert((o.ost, o.id), i.fid);
        }
        Ok(())
    })?;
    let mut destroying: HashSet<(u32, OstId)> = HashSet::new();
    scan(kv, Table::DestroyLog, &[], KEY_END, |_, v| {
        if let Some(k) = crate::ns::parse_destroy_record(v) {
            destroying.insert(k);
        }
        Ok(())
    })?;
    let mut r = OstsReport::default();
    let alloc = ns.alloc();
    for ost in alloc.report() {
        let Some(api) = alloc.api(ost.index) else { continue };
        let seqs = alloc.ost_seqs(ost.index)?;
        for &(i, id) in named.keys() {
            if i == ost.index && !seqs.contains(&id.seq) {
                r.problems
                    .push(format!("object {i}:{id} of {} is in a sequence OST {i} was never granted", named[&(i, id)]));
            }
        }
        for seq in seqs {
            let last = match api.last_id(seq) {
                Ok(l) => l,
                Err(e) => {
                    r.problems.push(format!("OST {}: last id of {seq:#x}: {e}", ost.index));
                    continue;
                }
            };
            let cursor = crate::alloc::stored_last_used(kv, ost.index, seq)?;
            for oid in 1..=last {
                let id = OstId::new(seq, oid);
                r.asked += 1;
                let exists = match api.exists(id) {
                    Ok(x) => x,
                    Err(e) => {
                        r.problems.push(format!("OST {}: object {id}: {e}", ost.index));
                        break;
                    }
                };
                let key = (ost.index, id);
                match (exists, named.get(&key)) {
                    (false, Some(f)) => {
                        r.problems.push(format!("object {}:{id} of {f} is missing (dangling)", ost.index))
                    }
                    (true, None) if destroying.contains(&key) => {}
                    (true, None) if seq == ost.seq && oid > cursor => r.pooled += 1,
                    (true, None) => r.problems.push(format!("object {}:{id} is named by no file (leaked)", ost.index)),
                    _ => {}
                }
            }
        }
    }
    Ok(r)
}

/// Checks a mounted namespace.
pub fn check_ns(ns: &Namespace) -> Result<Report> {
    check(&**ns.kv())
}
