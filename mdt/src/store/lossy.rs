//! [`LossyKv`] (tests only): a store that loses, at a crash, every write
//! not persisted — the disk's contract, which a process kill or a copy of
//! the directory does not exercise (the OS keeps unsynced writes).
//!
//! Writes go to a live fjall store at once and are queued; `persist`
//! applies the queue to a second fjall store (the "disk"). A crash is
//! dropping it and mounting the second store.
//!
//! Must not: be used outside tests.

use std::sync::Arc;

use parking_lot::Mutex;

use super::{Batch, FjallKv, Kv, Pair, StoreError, Table};

/// A store whose unpersisted writes a crash loses.
#[derive(Debug)]
pub struct LossyKv {
    live: FjallKv,
    disk: Arc<FjallKv>,
    pending: Mutex<Vec<Batch>>,
}

impl LossyKv {
    /// Live state in `live`, what survives a crash in `disk`.
    pub fn open(live: &std::path::Path, disk: &std::path::Path) -> Result<LossyKv, StoreError> {
        Ok(LossyKv {
            live: FjallKv::open(live)?,
            disk: Arc::new(FjallKv::open(disk)?),
            pending: Mutex::new(Vec::new()),
        })
    }
}

impl Kv for LossyKv {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.live.get(t, key)
    }

    fn range(&self, t: Table, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Pair>, StoreError> {
        self.live.range(t, from, to, limit)
    }

    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        self.pending.lock().push(batch.clone());
        self.live.write(batch)
    }

    fn persist(&self) -> Result<(), StoreError> {
        let mut p = self.pending.lock();
        for b in p.drain(..) {
            self.disk.write(b)?;
        }
        self.disk.persist()
    }

    fn approx_len(&self, t: Table) -> usize {
        self.live.approx_len(t)
    }
}
