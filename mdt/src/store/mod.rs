//! Storage behind a trait: the ordered key-value tables the MDT and MGS
//! keep their state in.
//!
//! Owns: [`Kv`] (point reads, bounded range reads, atomic batches, and
//! `persist`, the durable commit), [`Table`] (the named tables), [`Batch`],
//! [`StoreError`], the fjall implementation ([`FjallKv`]) and the value
//! codec (`codec`: rkyv, validated on read); for tests, `lossy` (a store
//! a crash takes every unpersisted write from).
//!
//! Must not: know what keys mean. A batch is applied atomically but not
//! made durable; only [`Kv::persist`] is a durability point (the commit
//! thread calls it, `txn`).

mod codec;
mod fjall_kv;
#[cfg(test)]
pub mod lossy;

use std::fmt;

use thiserror::Error;

pub use codec::{decode, encode};
pub use fjall_kv::FjallKv;

/// The tables (fjall keyspaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Counters and cursors: epoch, last transno, FID cursor, sequences,
    /// reply bodies too large for a client record.
    Meta,
    /// FID -> inode.
    Inodes,
    /// parent FID ++ cookie -> entry.
    Dirents,
    /// FID ++ name -> value.
    Xattrs,
    /// FID of an unlinked inode kept open.
    Orphans,
    /// sequence -> (OST, object): destroys not yet confirmed by the OST.
    DestroyLog,
    /// OST index -> last object id allocated.
    Osts,
    /// fsname ++ 0 ++ index -> MGS config record.
    MgsLog,
    /// client UUID -> the target framework's per-client record.
    Clients,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 9] = [
        Table::Meta,
        Table::Inodes,
        Table::Dirents,
        Table::Xattrs,
        Table::Orphans,
        Table::DestroyLog,
        Table::Osts,
        Table::MgsLog,
        Table::Clients,
    ];

    /// The keyspace name.
    pub const fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Inodes => "inodes",
            Table::Dirents => "dirents",
            Table::Xattrs => "xattrs",
            Table::Orphans => "orphans",
            Table::DestroyLog => "destroy_log",
            Table::Osts => "osts",
            Table::MgsLog => "mgs_log",
            Table::Clients => "clients",
        }
    }
}

/// What the store can fail with.
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// The engine failed (I/O, corruption it detected, locking).
    #[error("store: {0}")]
    Backend(String),
    /// A value did not decode.
    #[error("corrupt value in table {table}: {why}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// Why.
        why: String,
    },
}

/// One change in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Insert or replace.
    Put(Table, Vec<u8>, Vec<u8>),
    /// Remove.
    Del(Table, Vec<u8>),
}

/// Changes applied atomically, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// The changes.
    pub changes: Vec<Change>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Insert or replace `key` in `t`.
    pub fn put(&mut self, t: Table, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.changes.push(Change::Put(t, key.into(), value.into()));
    }

    /// Remove `key` from `t`.
    pub fn del(&mut self, t: Table, key: impl Into<Vec<u8>>) {
        self.changes.push(Change::Del(t, key.into()));
    }

    /// No changes.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// A key-value pair.
pub type Pair = (Vec<u8>, Vec<u8>);

/// The storage binding: ordered tables of byte keys.
pub trait Kv: Send + Sync + fmt::Debug {
    /// The value of `key`.
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Up to `limit` pairs with `from <= key < to`, ascending.
    fn range(&self, t: Table, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Pair>, StoreError>;
    /// Applies `batch` atomically (visible at once; durable at the next
    /// [`Kv::persist`]).
    fn write(&self, batch: Batch) -> Result<(), StoreError>;
    /// Makes every write so far durable.
    fn persist(&self) -> Result<(), StoreError>;
    /// Roughly how many keys `t` holds.
    fn approx_len(&self, t: Table) -> usize;
}

/// Visits every pair of `t` in `[from, to)`, in chunks of 4096.
pub fn scan(
    kv: &dyn Kv,
    t: Table,
    from: &[u8],
    to: &[u8],
    mut f: impl FnMut(&[u8], &[u8]) -> Result<(), crate::error::MdtError>,
) -> Result<(), crate::error::MdtError> {
    let mut start = from.to_vec();
    loop {
        let chunk = kv.range(t, &start, to, 4096)?;
        let Some((last, _)) = chunk.last() else { return Ok(()) };
        let mut next = last.clone();
        next.push(0);
        for (k, v) in &chunk {
            f(k, v)?;
        }
        if chunk.len() < 4096 {
            return Ok(());
        }
        start = next;
    }
}

/// The end of every key range (longer than any key the MDT writes).
pub const KEY_END: &[u8] = &[0xff; 64];
