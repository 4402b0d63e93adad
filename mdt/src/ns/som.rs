//! Size on MDT (Lustre's SOM): the exact size, space and data mtime of
//! regular files nobody is writing, so a stat needs no glimpse of the
//! OSTs.
//!
//! A file's size lives on its objects; the MDT learns it from the closer of
//! a handle opened for writing, which glimpses the objects after its writes
//! landed and sends what it saw ([`SomAttr`]). The MDT keeps that as exact
//! only when nothing else could have changed the objects since that
//! handle's open: no other handle was open for writing when it was opened,
//! none was opened while it was, and no truncate or utimes came in between
//! (each of those bumps the file's generation). While any handle is open
//! for writing, the file is not exact. Anything else — a write handle that
//! is closed only when its client's export goes (eviction, disconnect:
//! the close carries nothing seen), a truncate, a utimes, a
//! punch, an MDT restart (the table is in memory only, so a writer whose
//! open the MDT no longer knows can never be overlooked) — leaves the file
//! inexact until the next clean last close.
//!
//! Not yet: a close replayed after an MDT restart carries its pre-crash
//! glimpse; if a writer of the previous boot that never replays its open
//! (evicted at the end of recovery) wrote after that glimpse, the replayed
//! close can call the old size exact. Ignoring `seen` on replayed closes
//! needs the namespace to know a replay from a new request.
//!
//! Owns: [`SomTable`]. Must not: call exact a file some handle has open
//! for writing, or keep an exact size across anything that changes the
//! objects without this table hearing of it.

use std::collections::HashMap;

use ptlrpc::wire::Fid;
use ptlrpc::wire::mds::SomAttr;

/// Files with an exact size kept at most (more are left inexact: a stat
/// glimpses them).
pub const EXACT_KEPT: usize = 1 << 20;

/// What a handle opened for writing remembers of its open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOpen {
    /// The file's generation just after this open.
    generation: u64,
    /// No other handle was open for writing at this open.
    alone: bool,
}

#[derive(Debug, Default)]
struct FileSom {
    writers: u32,
    generation: u64,
    exact: Option<SomAttr>,
}

/// Per-file write handles, generations and exact sizes.
#[derive(Debug, Default)]
pub struct SomTable {
    files: HashMap<Fid, FileSom>,
    exact: usize,
}

impl SomTable {
    fn file(&mut self, f: Fid) -> &mut FileSom {
        self.files.entry(f).or_default()
    }

    fn clear_exact(&mut self, f: Fid) {
        if let Some(s) = self.files.get_mut(&f)
            && s.exact.take().is_some()
        {
            self.exact -= 1;
        }
    }

    /// Drops the entry of a file nobody writes and nothing is known of.
    fn tidy(&mut self, f: Fid) {
        if self.files.get(&f).is_some_and(|s| s.writers == 0 && s.exact.is_none()) {
            self.files.remove(&f);
        }
    }

    /// A handle of `f` was opened for writing.
    pub fn open_write(&mut self, f: Fid) -> WriteOpen {
        self.clear_exact(f);
        let s = self.file(f);
        let alone = s.writers == 0;
        s.writers += 1;
        s.generation += 1;
        WriteOpen { generation: s.generation, alone }
    }

    /// What [`SomTable::close_write`] of `w` with `seen` would make the
    /// exact size of `f` (`None`: it would stay inexact), changing nothing.
    pub fn would_be_exact(&self, f: Fid, w: WriteOpen, seen: Option<SomAttr>) -> Option<SomAttr> {
        let s = self.files.get(&f)?;
        let room = self.exact < EXACT_KEPT;
        seen.filter(|_| room && w.alone && s.writers <= 1 && s.generation == w.generation)
    }

    /// A handle of `f` opened for writing (`w`) was closed, by a client
    /// that saw `seen` on the objects after its writes landed.
    pub fn close_write(&mut self, f: Fid, w: WriteOpen, seen: Option<SomAttr>) {
        let exact = self.would_be_exact(f, w, seen);
        let s = self.file(f);
        s.writers = s.writers.saturating_sub(1);
        if let Some(seen) = exact {
            s.exact = Some(seen);
            self.exact += 1;
        }
        self.tidy(f);
    }

    /// The objects of `f` changed outside a write handle (truncate,
    /// utimes, punch) or `f` is gone.
    pub fn changed(&mut self, f: Fid) {
        self.clear_exact(f);
        if let Some(s) = self.files.get_mut(&f) {
            s.generation += 1;
        }
        self.tidy(f);
    }

    /// The exact size of `f`, if known and nobody has it open for writing.
    pub fn exact(&self, f: Fid) -> Option<SomAttr> {
        self.files.get(&f).filter(|s| s.writers == 0).and_then(|s| s.exact)
    }

    /// Files with an exact size.
    pub fn exact_len(&self) -> usize {
        self.exact
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptlrpc::wire::mds::Timestamp;

    const F: Fid = Fid { seq: 0x2_0000_0400, oid: 1, ver: 0 };

    fn seen(size: u64) -> Option<SomAttr> {
        Some(SomAttr { size, blocks: size.div_ceil(512), mtime: Timestamp::secs(5) })
    }

    #[test]
    fn the_last_clean_close_of_a_lone_writer_makes_the_size_exact() {
        let mut t = SomTable::default();
        let w = t.open_write(F);
        assert_eq!(t.exact(F), None);
        t.close_write(F, w, seen(4096));
        assert_eq!(t.exact(F), seen(4096));
        // A new writer hides it at once; its close brings the new size.
        let w = t.open_write(F);
        assert_eq!(t.exact(F), None, "open for writing: never exact");
        t.close_write(F, w, seen(8192));
        assert_eq!(t.exact(F), seen(8192));
        assert_eq!(t.exact_len(), 1);
    }

    #[test]
    fn overlapping_writers_leave_it_inexact() {
        let mut t = SomTable::default();
        // B opens while A is open: neither close may vouch for the other's data.
        let a = t.open_write(F);
        let b = t.open_write(F);
        t.close_write(F, b, seen(10));
        assert_eq!(t.exact(F), None, "A is still open");
        t.close_write(F, a, seen(20));
        assert_eq!(t.exact(F), None, "B wrote during A's open");
        // A writer that opened and closed inside another's open, after that
        // one glimpsed: the outer close's view may miss its data.
        let a = t.open_write(F);
        let c = t.open_write(F);
        t.close_write(F, c, seen(30));
        t.close_write(F, a, seen(20));
        assert_eq!(t.exact(F), None);
        // Alone again: exact.
        let a = t.open_write(F);
        t.close_write(F, a, seen(30));
        assert_eq!(t.exact(F), seen(30));
    }

    #[test]
    fn truncates_and_unknown_closes_leave_it_inexact() {
        let mut t = SomTable::default();
        let a = t.open_write(F);
        t.changed(F); // a truncate by another client while A is open
        t.close_write(F, a, seen(1));
        assert_eq!(t.exact(F), None);
        let a = t.open_write(F);
        t.close_write(F, a, seen(1));
        t.changed(F);
        assert_eq!(t.exact(F), None, "a truncate or utimes after the close");
        let a = t.open_write(F);
        t.close_write(F, a, None);
        assert_eq!(t.exact(F), None, "the closer did not say what it saw");
        t.changed(F);
        assert!(t.files.is_empty(), "nothing kept for files nobody writes and nothing is known of");
        assert_eq!(t.exact_len(), 0);
    }
}
