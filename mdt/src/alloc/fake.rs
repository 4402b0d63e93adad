//! An in-memory OST for unit tests only: objects in a set, space set by
//! the test, reachability switchable.

use std::collections::{BTreeMap, BTreeSet};

use parking_lot::Mutex;
use ptlrpc::wire::OstId;

use super::ost::{OstApi, OstError, OstStatfs};

/// A fake OST.
#[derive(Debug, Default)]
pub struct FakeOst {
    /// Existing objects.
    pub objects: Mutex<BTreeSet<OstId>>,
    /// Reported space.
    pub space: Mutex<OstStatfs>,
    /// Unreachable when set.
    pub down: Mutex<bool>,
    /// The last id created, per sequence.
    pub last: Mutex<BTreeMap<u64, u64>>,
    /// The name of the thread of each precreate call.
    pub precreate_threads: Mutex<Vec<String>>,
    /// While set, every call waits until the test clears it (an OST that
    /// does not answer yet).
    pub held: Mutex<bool>,
    held_cv: parking_lot::Condvar,
}

impl FakeOst {
    /// A reachable OST with `free` KiB of `total`.
    pub fn new(total: u64, free: u64) -> FakeOst {
        FakeOst { space: Mutex::new(OstStatfs { kbytes: total, kbytes_free: free }), ..FakeOst::default() }
    }

    fn up(&self) -> Result<(), OstError> {
        let mut held = self.held.lock();
        while *held {
            self.held_cv.wait(&mut held);
        }
        drop(held);
        if *self.down.lock() { Err(OstError::Unreachable("down".into())) } else { Ok(()) }
    }

    /// Holds (`true`) or releases every call.
    pub fn hold(&self, on: bool) {
        *self.held.lock() = on;
        self.held_cv.notify_all();
    }
}

impl OstApi for FakeOst {
    fn precreate(&self, seq: u64, count: u32) -> Result<(u64, u64), OstError> {
        self.up()?;
        let me = std::thread::current().name().unwrap_or("?").to_string();
        self.precreate_threads.lock().push(me);
        let mut all = self.last.lock();
        let last = all.entry(seq).or_insert(0);
        let first = *last + 1;
        *last += u64::from(count);
        self.objects.lock().extend((first..=*last).map(|oid| OstId::new(seq, oid)));
        Ok((first, *last))
    }

    fn destroy(&self, id: OstId) -> Result<(), OstError> {
        self.up()?;
        self.objects.lock().remove(&id);
        Ok(())
    }

    fn exists(&self, id: OstId) -> Result<bool, OstError> {
        self.up()?;
        Ok(self.objects.lock().contains(&id))
    }

    fn statfs(&self) -> Result<OstStatfs, OstError> {
        self.up()?;
        Ok(*self.space.lock())
    }

    fn last_id(&self, seq: u64) -> Result<u64, OstError> {
        self.up()?;
        Ok(self.last.lock().get(&seq).copied().unwrap_or(0))
    }
}
