//! An in-memory OST for unit tests only: objects in a set, space set by
//! the test, reachability switchable.

use std::collections::BTreeSet;

use parking_lot::Mutex;

use super::ost::{OstApi, OstError, OstStatfs};

/// A fake OST.
#[derive(Debug, Default)]
pub struct FakeOst {
    /// Existing objects.
    pub objects: Mutex<BTreeSet<u64>>,
    /// Reported space.
    pub space: Mutex<OstStatfs>,
    /// Unreachable when set.
    pub down: Mutex<bool>,
}

impl FakeOst {
    /// A reachable OST with `free` KiB of `total`.
    pub fn new(total: u64, free: u64) -> FakeOst {
        FakeOst { space: Mutex::new(OstStatfs { kbytes: total, kbytes_free: free }), ..FakeOst::default() }
    }

    fn up(&self) -> Result<(), OstError> {
        if *self.down.lock() { Err(OstError::Unreachable("down".into())) } else { Ok(()) }
    }
}

impl OstApi for FakeOst {
    fn precreate(&self, start: u64, count: u32) -> Result<u64, OstError> {
        self.up()?;
        let mut o = self.objects.lock();
        for id in start..start + u64::from(count) {
            o.insert(id);
        }
        Ok(start + u64::from(count) - 1)
    }

    fn destroy(&self, id: u64) -> Result<(), OstError> {
        self.up()?;
        self.objects.lock().remove(&id);
        Ok(())
    }

    fn statfs(&self) -> Result<OstStatfs, OstError> {
        self.up()?;
        Ok(*self.space.lock())
    }

    fn cleanup_orphans(&self, last_used: u64) -> Result<(), OstError> {
        self.up()?;
        self.objects.lock().retain(|&id| id <= last_used);
        Ok(())
    }
}
