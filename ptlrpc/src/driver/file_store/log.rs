//! The on-disk form of [`super::FileStore`]'s log: framed, checksummed
//! rkyv records, and reading a log back.
//!
//! Owns: [`LogRec`] (one record: a transaction, a client record (in
//! `ClientRecord::encode`'s one form) or server record
//! on its own, a removal, a commit mark), the frame `len u32 | crc32c u32
//! | rkyv bytes` (little endian), [`encode`] and [`read_log`], which stops
//! at the first torn or corrupt frame and returns only what the last
//! commit mark covers.
//!
//! Must not: panic on any bytes: a log is disk input.

use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use super::StoreError;
use crate::target::ServerRecord;
use crate::wire::Transno;

/// Largest record accepted when reading (a frame claiming more is corrupt).
pub(super) const MAX_RECORD: usize = 16 << 20;
/// Frame header: length and CRC32C.
const FRAME_HEADER: usize = 8;

/// One log record.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(super) enum LogRec {
    /// A transaction: the change, the touched objects' new version, the
    /// client's record and the server record, atomically.
    Txn {
        transno: u64,
        version: u64,
        replay: bool,
        objects: Vec<u128>,
        pre_versions: Vec<u64>,
        change: Vec<(u128, Vec<u8>)>,
        xid: u64,
        /// The client's record, [`crate::target::ClientRecord::encode`]d.
        client: Vec<u8>,
        epoch: u32,
        last_transno: u64,
    },
    /// A client record written on its own (encoded as in `Txn`).
    PutClient(Vec<u8>),
    /// A client record removed.
    RemoveClient(String),
    /// The server record written on its own.
    PutServer { epoch: u32, last_transno: u64 },
    /// Everything before this is durable; `last_transno` is what it covers.
    Commit { last_transno: u64 },
}

impl LogRec {
    pub(super) fn server(epoch: u32, last_transno: Transno) -> LogRec {
        LogRec::PutServer { epoch, last_transno: last_transno.0 }
    }
}

/// A record's frame.
pub(super) fn encode(rec: &LogRec) -> Result<Vec<u8>, StoreError> {
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(rec).map_err(|e| StoreError::Encode(e.to_string()))?;
    if bytes.len() > MAX_RECORD {
        return Err(StoreError::Encode(format!("record of {} bytes", bytes.len())));
    }
    let len = u32::try_from(bytes.len()).map_err(|_| StoreError::Encode("record too large".into()))?;
    let mut out = Vec::with_capacity(FRAME_HEADER + bytes.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
    out.extend_from_slice(&bytes);
    Ok(out)
}

/// What a log holds up to its last commit mark.
#[derive(Debug, Default)]
pub(super) struct LogContents {
    /// The committed records, in order (commit marks left out).
    pub(super) records: Vec<LogRec>,
    /// Byte length of the committed prefix (where appending resumes).
    pub(super) committed_len: u64,
    /// Records after the last commit mark, discarded.
    pub(super) discarded: usize,
    /// Whether reading stopped at a torn or corrupt frame.
    pub(super) torn: bool,
}

/// Parses `bytes`; only records covered by a commit mark are returned.
pub(super) fn read_log(bytes: &[u8]) -> LogContents {
    let mut out = LogContents::default();
    let mut pending = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let Some(rec) = frame_at(bytes, at) else {
            out.torn = true;
            break;
        };
        let (rec, next) = rec;
        at = next;
        match rec {
            LogRec::Commit { .. } => {
                out.records.append(&mut pending);
                out.committed_len = at as u64;
            }
            r => pending.push(r),
        }
    }
    out.discarded = pending.len();
    out
}

/// The record starting at `at` and where the next begins, if whole and
/// intact.
fn frame_at(bytes: &[u8], at: usize) -> Option<(LogRec, usize)> {
    let head = bytes.get(at..at.checked_add(FRAME_HEADER)?)?;
    let len = u32::from_le_bytes(head.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(head.get(4..8)?.try_into().ok()?);
    if len > MAX_RECORD {
        return None;
    }
    let start = at + FRAME_HEADER;
    let body = bytes.get(start..start.checked_add(len)?)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    let mut aligned = AlignedVec::<16>::with_capacity(len);
    aligned.extend_from_slice(body);
    let rec = rkyv::from_bytes::<LogRec, rkyv::rancor::Error>(&aligned).ok()?;
    Some((rec, start + len))
}

/// A server record from a logged one.
pub(super) fn server_record(epoch: u32, last_transno: u64) -> ServerRecord {
    ServerRecord { epoch, last_transno: Transno(last_transno) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_tail_and_uncommitted_records_are_dropped() {
        let mut log = Vec::new();
        log.extend(encode(&LogRec::server(1, Transno(5))).unwrap());
        log.extend(encode(&LogRec::Commit { last_transno: 5 }).unwrap());
        let committed = log.len() as u64;
        log.extend(encode(&LogRec::RemoveClient("c".into())).unwrap());
        let whole = read_log(&log);
        assert_eq!((whole.records.len(), whole.committed_len, whole.discarded, whole.torn), (1, committed, 1, false));
        log.extend(encode(&LogRec::Commit { last_transno: 5 }).unwrap());
        log.truncate(log.len() - 3);
        let torn = read_log(&log);
        assert_eq!((torn.records.len(), torn.committed_len, torn.discarded, torn.torn), (1, committed, 1, true));
        let mut flipped = log.clone();
        flipped[10] ^= 0xff;
        assert!(read_log(&flipped).records.is_empty());
        assert!(read_log(&[0xff; 64]).torn);
    }
}
