//! The destroy log: OST objects of destroyed inodes, recorded in the same
//! batch as the destruction and removed only after the OST confirmed the
//! destroy. Replayed after a crash, so no object leaks.
//!
//! Must not: hold the namespace's write lock while calling an OST.

use ptlrpc::wire::OstId;

use super::Namespace;
use crate::error::Result;
use crate::store::{Batch, Table};

/// A log record: OST index and object (sequence, id).
pub(super) fn record(ost: u32, id: OstId) -> Vec<u8> {
    let mut v = ost.to_be_bytes().to_vec();
    v.extend_from_slice(&id.key());
    v
}

/// Parses a log record.
pub fn parse_record(v: &[u8]) -> Option<(u32, OstId)> {
    let ost = u32::from_be_bytes(v.get(..4)?.try_into().ok()?);
    let id = OstId::from_key(v.get(4..)?)?;
    Some((ost, id))
}

impl Namespace {
    /// Sends up to `max` logged destroys; returns (done, still pending).
    pub fn process_destroys(&self, max: usize) -> Result<(usize, usize)> {
        let rows = self.kv.range(Table::DestroyLog, &[], crate::store::KEY_END, max)?;
        let mut b = Batch::new();
        let mut pending = 0;
        for (k, v) in &rows {
            let done = match parse_record(v) {
                Some((ost, id)) => self.alloc.destroy(ost, id),
                None => {
                    tracing::error!("corrupt destroy-log record dropped");
                    true
                }
            };
            if done {
                b.del(Table::DestroyLog, k.clone());
            } else {
                pending += 1;
            }
        }
        let done = b.changes.len();
        if !b.is_empty() {
            self.kv.write(b)?;
        }
        Ok((done, pending))
    }

    /// Records waiting in the destroy log (approximate).
    pub fn destroys_pending(&self) -> usize {
        self.kv.approx_len(Table::DestroyLog)
    }
}
