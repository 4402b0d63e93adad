//! What a client's directory must hold: its operation log replayed into an
//! expected namespace and expected block generations, and the comparison
//! of that expectation with what the file system holds.
//!
//! Owns: [`Model`] (built from one client's [`Rec`]s in order; checks
//! reads made during the run as it goes), [`Observed`] (what the verifier
//! found under the client's directory) and [`Finding`] (one thing wrong,
//! naming the record responsible). A successful operation must be
//! visible; an operation that failed may or may not have happened (the
//! worker looks and logs a `Resolve`); a block must hold the last
//! generation whose write succeeded, or a later one whose write failed.
//!
//! Must not: do I/O or decide what a finding means for a fault (the run
//! does, from its fault windows).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::oplog::{Entry, Found, Op, Outcome, Rec};

/// Permission bits of new files and directories.
pub const FILE_MODE: u32 = 0o644;
/// Permission bits of new directories.
pub const DIR_MODE: u32 = 0o755;

/// One thing wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// An operation returned an error.
    CallFailed {
        /// The record.
        rec: Rec,
        /// Whether it took effect all the same (the lookup after it, or
        /// the block read at the end, shows it).
        applied: bool,
    },
    /// A successful namespace operation is not visible.
    LostOp {
        /// The record that made the entry (or changed its mode).
        rec: Rec,
        /// Whether an fsync that returned success followed it (the MDT
        /// had committed it).
        committed: bool,
        /// What is there instead.
        detail: String,
    },
    /// An entry exists that no successful operation left there.
    Extra {
        /// The path.
        path: String,
        /// The operation that removed it (lost, or ran twice), if any.
        removed_by: Option<Rec>,
        /// What is there.
        detail: String,
    },
    /// A block does not hold what the last successful write put there.
    LostWrite {
        /// The client.
        client: u32,
        /// The file's path.
        path: String,
        /// The block.
        blk: u32,
        /// The write that is lost.
        rec: Rec,
        /// Whether an fsync that returned success followed it.
        fsynced: bool,
        /// What the block holds.
        found: Found,
    },
    /// A block read during the run or at the end fails its checksum or
    /// names another block.
    Corrupt {
        /// The client.
        client: u32,
        /// The file's path.
        path: String,
        /// The block.
        blk: u32,
        /// What it holds.
        found: Found,
        /// During the run (the read's record) or at the end.
        rec: Option<Rec>,
    },
    /// A read during the run returned data that is not the latest
    /// successful write (stale) or a generation never written.
    BadRead {
        /// The read's record.
        rec: Rec,
        /// The generations it was allowed to see (0: a hole).
        allowed: Vec<u32>,
    },
    /// A namespace operation failed with the error its own second
    /// execution would give (EEXIST, ENOENT) and the lookup after it shows
    /// that it took effect: it ran twice (a resend executed again).
    RanTwice {
        /// The record.
        rec: Rec,
    },
    /// The verifier could not read something.
    Unreadable {
        /// What.
        path: String,
        /// Why.
        why: String,
    },
}

#[derive(Debug, Clone)]
struct NsEntry {
    dir: bool,
    mode: u32,
    set_by: Rec,
    committed: bool,
}

#[derive(Debug, Clone, Default)]
struct BlockModel {
    /// Successful writes, oldest first: (generation, record, fsynced).
    ok: Vec<(u32, Rec, bool)>,
    /// Failed writes after the last successful one (they may have landed).
    maybe: Vec<u32>,
    /// Through a FUSE mount: writes that returned success (copied, written
    /// behind) but are not yet known to have landed — until a successful
    /// fsync or close of the file (then they join `ok`) or a failed write,
    /// fsync or close (then they may have landed or not: `maybe`).
    pending: Vec<(u32, Rec)>,
}

impl BlockModel {
    fn allowed(&self) -> Vec<u32> {
        let mut a = vec![self.ok.last().map_or(0, |(g, _, _)| *g)];
        a.extend(&self.maybe);
        a.extend(self.pending.iter().map(|(g, _)| *g));
        a
    }

    /// The pending writes landed (generations grow: a failed write
    /// before the last of them was overwritten by it).
    fn settle(&mut self) {
        let Some(last) = self.pending.iter().map(|(g, _)| *g).max() else { return };
        self.ok.extend(self.pending.drain(..).map(|(g, r)| (g, r, false)));
        self.maybe.retain(|g| *g > last);
    }

    /// The file's writes behind failed somewhere: the pending ones may
    /// have landed or not.
    fn taint(&mut self) {
        self.maybe.extend(self.pending.drain(..).map(|(g, _)| g));
    }
}

#[derive(Debug, Clone, Default)]
struct FileModel {
    path: Option<String>,
    blocks: BTreeMap<u32, BlockModel>,
}

/// What one client's directory must hold.
#[derive(Debug, Clone, Default)]
pub struct Model {
    client: u32,
    /// The client wrote through a FUSE mount (writes behind).
    fuse: bool,
    root: Option<String>,
    names: BTreeMap<String, NsEntry>,
    gone: BTreeMap<String, Rec>,
    /// Paths whose state the client could not learn after a failed call
    /// (its lookup failed too): either state is accepted at the end.
    unknown: BTreeMap<String, Rec>,
    files: BTreeMap<u32, FileModel>,
    /// Findings made while replaying (failed calls, bad reads).
    pub findings: Vec<Finding>,
    /// The last failed namespace call: (its finding's index, the record,
    /// whether its primary path existed before it).
    pending: Option<(usize, Rec, bool)>,
}

/// What the verifier found under a client's directory.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Every entry below the root (not the root itself), by path.
    pub entries: BTreeMap<String, Entry>,
    /// Every regular file's blocks, by path: index -> what it holds.
    pub blocks: BTreeMap<String, Vec<Found>>,
    /// Paths the verifier could not read, and why.
    pub unreadable: Vec<(String, String)>,
}

fn found_of(client: u32, file: u32, blk: u32, d: crate::block::Decoded) -> Found {
    use crate::block::Decoded;
    match d {
        Decoded::Hole => Found::Hole,
        Decoded::Corrupt { stored, computed } => Found::Corrupt { stored, computed },
        Decoded::Block(id) if id.client == client && id.file == file && id.blk == blk => {
            Found::Gen { generation: id.generation }
        }
        Decoded::Block(id) => {
            Found::Misplaced { client: id.client, file: id.file, blk: id.blk, generation: id.generation }
        }
    }
}

/// What a block read as `bytes` is, for block `blk` of `file` of `client`.
pub fn classify(client: u32, file: u32, blk: u32, bytes: &[u8]) -> Found {
    found_of(client, file, blk, crate::block::decode(bytes))
}

impl Model {
    /// Replays one client's records, in order.
    pub fn build(client: u32, recs: &[Rec]) -> Model {
        let mut m = Model { client, ..Model::default() };
        for r in recs {
            m.apply(r);
        }
        m
    }

    /// The client's directory, once it mounted.
    pub fn root(&self) -> Option<&str> {
        self.root.as_deref()
    }

    fn put(&mut self, path: &str, dir: bool, mode: u32, r: &Rec) {
        self.gone.remove(path);
        self.unknown.remove(path);
        self.names.insert(path.to_string(), NsEntry { dir, mode, set_by: r.clone(), committed: false });
    }

    fn take(&mut self, path: &str, r: &Rec) -> Option<NsEntry> {
        self.unknown.remove(path);
        self.gone.insert(path.to_string(), r.clone());
        self.names.remove(path)
    }

    fn apply(&mut self, r: &Rec) {
        if !matches!(r.op, Op::Resolve { .. }) {
            self.pending = None;
        }
        if let Outcome::Err { .. } = r.outcome {
            let primary = match &r.op {
                Op::Create { path, .. } | Op::Mkdir { path } | Op::Unlink { path, .. } | Op::Rmdir { path } => {
                    Some(path)
                }
                Op::Rename { from, .. } => Some(from),
                Op::Chmod { path, .. } => Some(path),
                _ => None,
            };
            if let Some(p) = primary {
                self.pending = Some((self.findings.len(), r.clone(), self.names.contains_key(p)));
            }
            self.findings.push(Finding::CallFailed { rec: r.clone(), applied: false });
            if let Op::Resolve { path, .. } = &r.op {
                self.unknown.insert(path.clone(), r.clone());
            }
            if let Op::Write { file, blk, generation } = r.op {
                self.files.entry(file).or_default().blocks.entry(blk).or_default().maybe.push(generation);
            }
            // An error through an open reports a failed write behind too.
            if let (true, Op::Write { file, .. } | Op::Fsync { file } | Op::Close { file }) = (self.fuse, &r.op)
                && let Some(f) = self.files.get_mut(file)
            {
                f.blocks.values_mut().for_each(BlockModel::taint);
            }
            return;
        }
        match &r.op {
            Op::Mount { root, fuse } => {
                self.fuse = *fuse;
                self.root = Some(root.clone());
                self.put(root, true, DIR_MODE, r);
            }
            Op::Mkdir { path } => self.put(path, true, DIR_MODE, r),
            Op::Create { path, file, .. } => {
                self.put(path, false, FILE_MODE, r);
                self.files.insert(*file, FileModel { path: Some(path.clone()), blocks: BTreeMap::new() });
            }
            Op::Rmdir { path } => {
                self.take(path, r);
            }
            Op::Unlink { path, file } => {
                self.take(path, r);
                self.files.remove(file);
            }
            Op::Rename { from, to, file } => {
                let mut e = self.take(from, r).unwrap_or(NsEntry {
                    dir: false,
                    mode: FILE_MODE,
                    set_by: r.clone(),
                    committed: false,
                });
                e.set_by = r.clone();
                e.committed = false;
                self.gone.remove(to);
                self.names.insert(to.clone(), e);
                if let Some(f) = self.files.get_mut(file) {
                    f.path = Some(to.clone());
                }
            }
            Op::Chmod { path, mode } => {
                if let Some(e) = self.names.get_mut(path) {
                    e.mode = *mode;
                    e.set_by = r.clone();
                    e.committed = false;
                }
            }
            Op::Resolve { path, found, file } => {
                self.ran_twice(path, found.as_ref());
                self.resolved(r, path, found, *file);
            }
            Op::Write { file, blk, generation } => {
                let b = self.files.entry(*file).or_default().blocks.entry(*blk).or_default();
                if self.fuse {
                    b.pending.push((*generation, r.clone()));
                } else {
                    b.ok.push((*generation, r.clone(), false));
                    b.maybe.clear();
                }
            }
            Op::Close { file } => {
                if let Some(f) = self.files.get_mut(file) {
                    f.blocks.values_mut().for_each(BlockModel::settle);
                }
            }
            Op::Fsync { file } => {
                if let Some(f) = self.files.get_mut(file) {
                    for b in f.blocks.values_mut() {
                        b.settle();
                        for w in &mut b.ok {
                            w.2 = true;
                        }
                    }
                }
                // The MDT committed too: everything this client did before.
                for e in self.names.values_mut() {
                    e.committed = true;
                }
            }
            Op::Read { file, blk, found } => {
                let path = self.files.get(file).and_then(|f| f.path.clone()).unwrap_or_default();
                let allowed =
                    self.files.get(file).and_then(|f| f.blocks.get(blk)).map_or_else(|| vec![0], BlockModel::allowed);
                match found {
                    Found::Corrupt { .. } | Found::Misplaced { .. } => self.findings.push(Finding::Corrupt {
                        client: self.client,
                        path,
                        blk: *blk,
                        found: *found,
                        rec: Some(r.clone()),
                    }),
                    Found::Hole if allowed.contains(&0) => {}
                    Found::Gen { generation } if allowed.contains(generation) => {}
                    _ => self.findings.push(Finding::BadRead { rec: r.clone(), allowed }),
                }
            }
            Op::Open { .. } | Op::Import { .. } => {}
        }
    }

    fn resolved(&mut self, r: &Rec, path: &str, found: &Option<Entry>, file: Option<u32>) {
        match found {
            Some(en) => {
                let file = file.filter(|_| !en.dir);
                if let Some(id) = file {
                    self.files.entry(id).or_default().path = Some(path.to_string());
                }
                self.put(path, en.dir, en.mode & 0o7777, r);
            }
            None => {
                self.take(path, r);
            }
        }
    }

    /// Whether the failed call a `Resolve` of `path` follows ran twice.
    fn ran_twice(&mut self, path: &str, found: Option<&Entry>) {
        let Some((idx, rec, before)) = self.pending.clone() else { return };
        let errno = match rec.outcome {
            Outcome::Err { errno, .. } => errno,
            Outcome::Ok => return,
        };
        let there = found.is_some();
        // Whether the failed call took effect, and whether its error is
        // what its own second execution would answer.
        let (applied, second) = match &rec.op {
            Op::Create { path: p, .. } | Op::Mkdir { path: p } if p == path => {
                (there && !before, errno == libc::EEXIST)
            }
            Op::Unlink { path: p, .. } | Op::Rmdir { path: p } if p == path => {
                (!there && before, errno == libc::ENOENT)
            }
            Op::Rename { to, .. } if to == path => (there && before, errno == libc::ENOENT),
            Op::Chmod { path: p, mode } if p == path => (found.is_some_and(|e| e.mode & 0o7777 == *mode), false),
            _ => (false, false),
        };
        let rename_pending = matches!(&rec.op, Op::Rename { to, .. } if to != path);
        if applied && second {
            self.findings[idx] = Finding::RanTwice { rec };
        } else if applied {
            self.findings[idx] = Finding::CallFailed { rec, applied: true };
        }
        if applied || !rename_pending {
            self.pending = None;
        }
    }

    /// Compares the expectation with what the file system holds; returns
    /// the findings of the replay and of the comparison.
    pub fn compare(&self, obs: &Observed) -> Vec<Finding> {
        let mut out = self.findings.clone();
        for (path, why) in &obs.unreadable {
            out.push(Finding::Unreadable { path: path.clone(), why: why.clone() });
        }
        for (path, e) in &self.names {
            if Some(path.as_str()) == self.root.as_deref() || self.unknown.contains_key(path) {
                continue;
            }
            match obs.entries.get(path) {
                None => out.push(Finding::LostOp {
                    rec: e.set_by.clone(),
                    committed: e.committed,
                    detail: format!("{path} is missing"),
                }),
                Some(o) if o.dir != e.dir => out.push(Finding::LostOp {
                    rec: e.set_by.clone(),
                    committed: e.committed,
                    detail: format!("{path} is a {}", if o.dir { "directory" } else { "file" }),
                }),
                Some(o) if o.mode & 0o7777 != e.mode => out.push(Finding::LostOp {
                    rec: e.set_by.clone(),
                    committed: e.committed,
                    detail: format!("{path} has mode {:o}, not {:o}", o.mode & 0o7777, e.mode),
                }),
                Some(_) => {}
            }
        }
        for (path, o) in &obs.entries {
            if !self.names.contains_key(path) && !self.unknown.contains_key(path) {
                out.push(Finding::Extra {
                    path: path.clone(),
                    removed_by: self.gone.get(path).cloned(),
                    detail: format!("a {} with mode {:o}", if o.dir { "directory" } else { "file" }, o.mode & 0o7777),
                });
            }
        }
        for (id, f) in &self.files {
            let Some(path) = f.path.as_ref() else { continue };
            let Some(blocks) = obs.blocks.get(path) else { continue };
            for (blk, b) in &f.blocks {
                let found = blocks.get(*blk as usize).copied().unwrap_or(Found::Hole);
                let allowed = b.allowed();
                let ok = match found {
                    Found::Hole => allowed.contains(&0),
                    Found::Gen { generation } => allowed.contains(&generation),
                    _ => false,
                };
                if ok {
                    if let Found::Gen { generation } = found
                        && b.maybe.contains(&generation)
                    {
                        for x in &mut out {
                            if let Finding::CallFailed { rec, applied } = x
                                && matches!(rec.op, Op::Write { generation: g, .. } if g == generation)
                            {
                                *applied = true;
                            }
                        }
                    }
                    continue;
                }
                match (found, b.ok.last()) {
                    (Found::Corrupt { .. } | Found::Misplaced { .. }, _) => out.push(Finding::Corrupt {
                        client: self.client,
                        path: path.clone(),
                        blk: *blk,
                        found,
                        rec: None,
                    }),
                    (_, Some((_, rec, fsynced))) => out.push(Finding::LostWrite {
                        client: self.client,
                        path: path.clone(),
                        blk: *blk,
                        rec: rec.clone(),
                        fsynced: *fsynced,
                        found,
                    }),
                    (_, None) => out.push(Finding::Corrupt {
                        client: self.client,
                        path: path.clone(),
                        blk: *blk,
                        found,
                        rec: None,
                    }),
                }
            }
            // Blocks past what the model knows must be holes or failed writes.
            for (i, found) in blocks.iter().enumerate() {
                let i = i as u32;
                if f.blocks.contains_key(&i) || *found == Found::Hole {
                    continue;
                }
                out.push(Finding::Corrupt {
                    client: self.client,
                    path: path.clone(),
                    blk: i,
                    found: *found,
                    rec: None,
                });
            }
            let _ = id;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, op: Op, ok: bool) -> Rec {
        let outcome = if ok { Outcome::Ok } else { Outcome::Err { errno: 5, msg: "eio".into(), cause: None } };
        Rec { client: 0, seq, t0: seq * 10, t1: seq * 10 + 5, op, outcome }
    }

    fn run() -> Vec<Rec> {
        let p = |s: &str| s.to_string();
        vec![
            rec(0, Op::Mount { root: p("/c0"), fuse: false }, true),
            rec(1, Op::Mkdir { path: p("/c0/d1") }, true),
            rec(2, Op::Create { path: p("/c0/f1"), file: 1, stripes: 2 }, true),
            rec(3, Op::Write { file: 1, blk: 0, generation: 1 }, true),
            rec(4, Op::Fsync { file: 1 }, true),
            rec(5, Op::Write { file: 1, blk: 0, generation: 2 }, true),
            rec(6, Op::Write { file: 1, blk: 1, generation: 3 }, false),
            rec(7, Op::Rename { from: p("/c0/f1"), to: p("/c0/d1/f1r1"), file: 1 }, true),
            rec(8, Op::Chmod { path: p("/c0/d1"), mode: 0o700 }, true),
            rec(9, Op::Read { file: 1, blk: 0, found: Found::Gen { generation: 2 } }, true),
        ]
    }

    fn good() -> Observed {
        let mut o = Observed::default();
        o.entries.insert("/c0/d1".into(), Entry { dir: true, mode: 0o700 });
        o.entries.insert("/c0/d1/f1r1".into(), Entry { dir: false, mode: 0o100644 });
        o.blocks.insert("/c0/d1/f1r1".into(), vec![Found::Gen { generation: 2 }, Found::Hole]);
        o
    }

    #[test]
    fn a_faithful_file_system_has_only_the_failed_call() {
        let m = Model::build(0, &run());
        let f = m.compare(&good());
        assert_eq!(f.len(), 1, "{f:#?}");
        assert!(matches!(&f[0], Finding::CallFailed { rec, .. } if rec.seq == 6));
        // The failed write may have landed.
        let mut o = good();
        o.blocks.insert("/c0/d1/f1r1".into(), vec![Found::Gen { generation: 2 }, Found::Gen { generation: 3 }]);
        let f = m.compare(&o);
        assert!(matches!(&f[..], [Finding::CallFailed { rec, applied: true }] if rec.seq == 6), "{f:#?}");
    }

    #[test]
    fn lost_and_extra_things_name_their_records() {
        let m = Model::build(0, &run());
        let mut o = good();
        o.blocks.insert("/c0/d1/f1r1".into(), vec![Found::Gen { generation: 1 }]);
        o.entries.insert("/c0/f1".into(), Entry { dir: false, mode: 0o644 });
        o.entries.insert("/c0/d1".into(), Entry { dir: true, mode: 0o755 });
        let f = m.compare(&o);
        assert!(f.iter().any(|x| matches!(x, Finding::LostWrite { rec, fsynced: false, found: Found::Gen { generation: 1 }, .. } if rec.seq == 5)), "{f:#?}");
        assert!(f.iter().any(|x| matches!(x, Finding::Extra { removed_by: Some(r), .. } if r.seq == 7)), "{f:#?}");
        assert!(f.iter().any(|x| matches!(x, Finding::LostOp { rec, .. } if rec.seq == 8)), "{f:#?}");
        let mut o = good();
        o.blocks.insert("/c0/d1/f1r1".into(), vec![Found::Corrupt { stored: 1, computed: 2 }]);
        o.entries.remove("/c0/d1/f1r1");
        let f = m.compare(&o);
        assert!(f.iter().any(|x| matches!(x, Finding::LostOp { rec, committed: false, .. } if rec.seq == 7)), "{f:#?}");
    }

    #[test]
    fn a_failed_call_that_took_effect_ran_twice() {
        let p = |s: &str| s.to_string();
        let enoent = Outcome::Err { errno: libc::ENOENT, msg: "enoent".into(), cause: None };
        let mut recs = run();
        recs.push(Rec { outcome: enoent.clone(), ..rec(10, Op::Unlink { path: p("/c0/d1/f1r1"), file: 1 }, true) });
        recs.push(rec(11, Op::Resolve { path: p("/c0/d1/f1r1"), found: None, file: Some(1) }, true));
        let m = Model::build(0, &recs);
        assert!(
            m.findings.iter().any(|x| matches!(x, Finding::RanTwice { rec } if rec.seq == 10)),
            "{:#?}",
            m.findings
        );
        // The same error with the entry still there: a plain failure.
        let mut recs = run();
        recs.push(Rec { outcome: enoent, ..rec(10, Op::Unlink { path: p("/c0/d1/f1r1"), file: 1 }, true) });
        let e = Entry { dir: false, mode: 0o644 };
        recs.push(rec(11, Op::Resolve { path: p("/c0/d1/f1r1"), found: Some(e), file: Some(1) }, true));
        let m = Model::build(0, &recs);
        assert!(m.findings.iter().any(|x| matches!(x, Finding::CallFailed { rec, applied: false } if rec.seq == 10)));
        assert!(m.compare(&good()).iter().all(|x| !matches!(x, Finding::LostOp { .. })));
    }

    #[test]
    fn a_stale_read_during_the_run_is_found() {
        let mut recs = run();
        recs.push(rec(10, Op::Read { file: 1, blk: 0, found: Found::Gen { generation: 1 } }, true));
        let m = Model::build(0, &recs);
        assert!(
            m.findings
                .iter()
                .any(|x| matches!(x, Finding::BadRead { rec, allowed } if rec.seq == 10 && allowed == &vec![2]))
        );
    }

    #[test]
    fn fuse_writes_behind_land_at_fsync_or_close_and_may_be_lost_on_an_error() {
        let p = |s: &str| s.to_string();
        let w = |seq, generation, ok| rec(seq, Op::Write { file: 1, blk: 0, generation }, ok);
        let recs = vec![
            rec(0, Op::Mount { root: p("/c0"), fuse: true }, true),
            rec(1, Op::Create { path: p("/c0/f1"), file: 1, stripes: 1 }, true),
            w(2, 1, true),
            rec(3, Op::Close { file: 1 }, true), // generation 1 landed
            rec(4, Op::Open { path: p("/c0/f1"), file: 1 }, true),
            w(5, 2, true),
            rec(6, Op::Fsync { file: 1 }, false), // 2 may not have landed
        ];
        let m = Model::build(0, &recs);
        let holds = |g| {
            let mut o = Observed::default();
            o.entries.insert("/c0/f1".into(), Entry { dir: false, mode: 0o100644 });
            o.blocks.insert("/c0/f1".into(), vec![if g == 0 { Found::Hole } else { Found::Gen { generation: g } }]);
            o
        };
        let lost = |f: &[Finding]| f.iter().any(|x| matches!(x, Finding::LostWrite { .. }));
        assert!(!lost(&m.compare(&holds(1))), "the failed fsync: 2 may be lost");
        assert!(!lost(&m.compare(&holds(2))));
        assert!(lost(&m.compare(&holds(0))), "1 landed at the close");
        // A successful fsync instead: 2 must be there.
        let mut ok = recs.clone();
        ok[6] = rec(6, Op::Fsync { file: 1 }, true);
        let m = Model::build(0, &ok);
        assert!(lost(&m.compare(&holds(1))));
        assert!(m.compare(&holds(2)).is_empty());
        // Through the library a write returns once the OSTs have it.
        let mut lib = recs;
        lib[0] = rec(0, Op::Mount { root: p("/c0"), fuse: false }, true);
        let m = Model::build(0, &lib);
        assert!(lost(&m.compare(&holds(1))));
    }
}
