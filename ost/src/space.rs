//! Space and grants: what the target may promise and to whom.
//!
//! Owns: [`Space`] — free space from `fstatvfs` less the target's reserve,
//! the bytes granted to exports and the bytes of writes admitted but not
//! yet on disk — and the rules: a write is charged against its export's
//! grant first and the unpromised free space after; if the two cannot
//! cover it the write is refused with ENOSPC *before* any data moves.
//! After each write the export's grant is topped up towards its target
//! from what is still unpromised (shrinking to nothing on a full target).
//!
//! Must not: promise more than statvfs says is free; hold its lock across
//! I/O other than one `fstatvfs`.

use std::fs::File;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::error::OstError;

/// statvfs figures of the backing file system.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Statfs {
    /// Fragment size.
    pub bsize: u64,
    /// Total fragments.
    pub blocks: u64,
    /// Free fragments.
    pub bfree: u64,
    /// Fragments available to unprivileged users.
    pub bavail: u64,
    /// Inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
}

impl Statfs {
    /// Available bytes.
    pub fn avail_bytes(&self) -> u64 {
        self.bavail.saturating_mul(self.bsize)
    }
}

#[derive(Debug, Default)]
struct Acct {
    /// Sum of every export's grant.
    granted: u64,
    /// Bytes of admitted writes not yet written.
    pending: u64,
}

/// The target's space accounting.
#[derive(Debug)]
pub struct Space {
    dir: File,
    path: PathBuf,
    reserve: u64,
    grant_target: u64,
    acct: Mutex<Acct>,
}

/// A write's admission: the bytes it may write; released by
/// [`Space::written`].
#[derive(Debug)]
#[must_use]
pub struct Admitted {
    bytes: u64,
}

impl Space {
    /// Accounting for the file system holding `dir`: `reserve` bytes are
    /// never promised; each export is granted up to `grant_target`.
    pub fn new(dir: &Path, reserve: u64, grant_target: u64) -> Result<Space, OstError> {
        let f = File::open(dir).map_err(|e| OstError::io("opening", dir, e))?;
        Ok(Space { dir: f, path: dir.to_path_buf(), reserve, grant_target, acct: Mutex::new(Acct::default()) })
    }

    /// Current statvfs figures.
    pub fn statfs(&self) -> Result<Statfs, OstError> {
        let s = rustix::fs::fstatvfs(&self.dir).map_err(|e| OstError::io("statvfs", &self.path, e.into()))?;
        Ok(Statfs {
            bsize: s.f_frsize.max(1),
            blocks: s.f_blocks,
            bfree: s.f_bfree,
            bavail: s.f_bavail,
            files: s.f_files,
            ffree: s.f_ffree,
        })
    }

    /// Bytes granted to exports.
    pub fn granted(&self) -> u64 {
        self.acct.lock().granted
    }

    /// Free bytes nobody has been promised.
    fn unpromised(&self, acct: &Acct) -> Result<u64, OstError> {
        let avail = self.statfs()?.avail_bytes().saturating_sub(self.reserve);
        Ok(avail.saturating_sub(acct.granted).saturating_sub(acct.pending))
    }

    /// A new export's first grant (`want` capped by the grant target and
    /// what is unpromised).
    pub fn connect_grant(&self, want: u64) -> Result<u64, OstError> {
        let mut a = self.acct.lock();
        let give = want.min(self.grant_target).min(self.unpromised(&a)?);
        a.granted += give;
        Ok(give)
    }

    /// Returns `grant` bytes of a departing export.
    pub fn release_grant(&self, grant: u64) {
        let mut a = self.acct.lock();
        a.granted = a.granted.saturating_sub(grant);
    }

    /// Admits a write of `need` bytes for an export holding `*grant`:
    /// spends the grant first, unpromised space after, or refuses with
    /// ENOSPC leaving everything as it was.
    pub fn admit(&self, grant: &mut u64, need: u64) -> Result<Admitted, OstError> {
        let mut a = self.acct.lock();
        let from_grant = need.min(*grant);
        let rest = need - from_grant;
        if rest > 0 {
            let free = self.unpromised(&a)?;
            if rest > free {
                return Err(OstError::NoSpace { need, avail: free + *grant });
            }
        }
        *grant -= from_grant;
        a.granted -= from_grant.min(a.granted);
        a.pending += need;
        Ok(Admitted { bytes: need })
    }

    /// The write is on disk (or failed): its bytes stop being pending and
    /// the export's grant is topped up from unpromised space.
    pub fn written(&self, adm: Admitted, grant: &mut u64) {
        let mut a = self.acct.lock();
        a.pending = a.pending.saturating_sub(adm.bytes);
        let want = self.grant_target.saturating_sub(*grant);
        let give = match self.unpromised(&a) {
            Ok(free) => want.min(free),
            Err(_) => 0,
        };
        *grant += give;
        a.granted += give;
    }

    /// Shrinks an export's grant to what is still free (a full target
    /// takes back what it cannot honour).
    pub fn shrink(&self, grant: &mut u64) {
        let mut a = self.acct.lock();
        let avail = match self.statfs() {
            Ok(s) => s.avail_bytes().saturating_sub(self.reserve),
            Err(_) => return,
        };
        let over = (a.granted + a.pending).saturating_sub(avail);
        let take = over.min(*grant);
        *grant -= take;
        a.granted -= take.min(a.granted);
    }
}
