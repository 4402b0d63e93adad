//! [`Kv`] on fjall: one keyspace per [`Table`], batches as fjall write
//! batches (written to the journal, not fsynced), `persist` as
//! `PersistMode::SyncAll`.
//!
//! Must not: be opened by two processes at once (fjall locks the
//! directory; the second open fails cleanly).

use std::collections::HashMap;
use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{Batch, Change, Kv, Pair, StoreError, Table};

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// The block cache by default: a million-entry directory's dirents and
/// inodes stay cached (fjall's own default, 32 MiB, holds about a tenth).
pub const DEFAULT_CACHE: u64 = 256 << 20;

/// The journal fjall keeps before it flushes the tables still holding the
/// oldest one (its minimum; its default is 512 MiB). A start replays what
/// the journal holds, so this bounds an MDT's restart: a soak's MDT had
/// grown an 82 MB journal that took 10 s to replay in a debug build.
pub const MAX_JOURNAL: u64 = 64 << 20;

/// Each table's memtable (fjall's default is 64 MiB): flushed sooner, the
/// active journal is rotated and dropped sooner. Set when a table is
/// created; an existing store keeps what it was created with.
pub const MEMTABLE: u64 = 16 << 20;

/// A fjall database with the MDT's tables.
pub struct FjallKv {
    db: Database,
    tables: HashMap<Table, Keyspace>,
}

impl std::fmt::Debug for FjallKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallKv").finish_non_exhaustive()
    }
}

impl FjallKv {
    /// Opens (or creates) the database in `dir` with a block cache of
    /// [`DEFAULT_CACHE`] bytes.
    pub fn open(dir: &Path) -> Result<FjallKv, StoreError> {
        FjallKv::open_with_cache(dir, DEFAULT_CACHE)
    }

    /// Opens (or creates) the database in `dir` with a block cache of
    /// `cache` bytes (allocated as used).
    pub fn open_with_cache(dir: &Path, cache: u64) -> Result<FjallKv, StoreError> {
        let db = Database::builder(dir).cache_size(cache).max_journaling_size(MAX_JOURNAL).open().map_err(backend)?;
        let mut tables = HashMap::new();
        for t in Table::ALL {
            let ks = db
                .keyspace(t.name(), || KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE))
                .map_err(backend)?;
            tables.insert(t, ks);
        }
        Ok(FjallKv { db, tables })
    }

    fn ks(&self, t: Table) -> Result<&Keyspace, StoreError> {
        self.tables.get(&t).ok_or_else(|| backend(format!("table {} not open", t.name())))
    }
}

impl Kv for FjallKv {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.ks(t)?.get(key).map_err(backend)?.map(|v| v.to_vec()))
    }

    fn range(&self, t: Table, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Pair>, StoreError> {
        let mut out = Vec::new();
        if from >= to {
            return Ok(out);
        }
        for g in self.ks(t)?.range(from..to) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = g.into_inner().map_err(backend)?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        let mut b = self.db.batch();
        for c in batch.changes {
            match c {
                Change::Put(t, k, v) => b.insert(self.ks(t)?, k, v),
                Change::Del(t, k) => b.remove(self.ks(t)?, k),
            }
        }
        b.commit().map_err(backend)
    }

    fn persist(&self) -> Result<(), StoreError> {
        self.db.persist(PersistMode::SyncAll).map_err(backend)
    }

    fn approx_len(&self, t: Table) -> usize {
        self.tables.get(&t).map_or(0, |k| k.approximate_len())
    }
}
