//! The OST's errors and their errno (the one place they map).
//!
//! Owns: [`OstError`] — what opening, formatting and serving a target can
//! end in — and [`OstError::errno`], the value that goes on the wire.
//!
//! Must not: log; whoever handles an error logs it once.

use std::path::PathBuf;

use ptlrpc::driver::{BulkError, Errno};
use ptlrpc::wire::errno;
use thiserror::Error;

/// Linux errnos the wire registry (`ptlrpc::wire::errno`) does not name yet.
pub mod more_errno {
    /// No such file or directory.
    pub const ENOENT: i32 = 2;
    /// No space left on device.
    pub const ENOSPC: i32 = 28;
}

/// What went wrong in the object store or a request.
#[derive(Debug, Error)]
pub enum OstError {
    /// A file-system call failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The object index failed or is corrupt.
    #[error("object index {}: {reason}", path.display())]
    Index {
        /// The index directory.
        path: PathBuf,
        /// fjall's error, or what is wrong with a record.
        reason: String,
    },
    /// The directory does not hold the target it was opened as.
    #[error("{}: {why}", path.display())]
    Identity {
        /// The target directory.
        path: PathBuf,
        /// What does not match (or is missing).
        why: String,
    },
    /// No such object.
    #[error("object {0} does not exist")]
    NoObject(ptlrpc::wire::OstId),
    /// Not enough space for data the request would have the target keep.
    #[error("no space: {need} bytes needed, {avail} available")]
    NoSpace {
        /// Bytes the request needs.
        need: u64,
        /// Bytes available for it.
        avail: u64,
    },
    /// The request names no connected export.
    #[error("export {0:#x} is not connected")]
    NotConnected(u64),
    /// A request that makes no sense (bad niobufs, bad sizes...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A run's checksum did not match its data.
    #[error("checksum mismatch in niobuf {index}")]
    Checksum {
        /// The niobuf.
        index: usize,
    },
    /// A bulk transfer failed.
    #[error("bulk: {0}")]
    Bulk(#[from] BulkError),
    /// The target is shutting down.
    #[error("target is shutting down")]
    ShuttingDown,
}

impl OstError {
    /// An I/O error on `path`.
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> OstError {
        OstError::Io { what, path: path.into(), source }
    }

    /// The positive errno this error answers with.
    pub fn errno(&self) -> i32 {
        match self {
            OstError::Io { source, .. } => match source.raw_os_error() {
                Some(e) if e > 0 => e,
                _ => errno::EIO,
            },
            OstError::Index { .. } | OstError::Identity { .. } => errno::EIO,
            OstError::NoObject(_) => more_errno::ENOENT,
            OstError::NoSpace { .. } => more_errno::ENOSPC,
            OstError::NotConnected(_) => errno::ENOTCONN,
            OstError::Invalid(_) => errno::EINVAL,
            // A write whose data kept arriving corrupt: nothing was done,
            // the client resends it (a new bulk transfer).
            OstError::Checksum { .. } | OstError::Bulk(BulkError::Checksum { .. }) => errno::EINPROGRESS,
            OstError::Bulk(b) => Errno::from(b.clone()).0,
            OstError::ShuttingDown => errno::ESHUTDOWN,
        }
    }
}

impl From<OstError> for Errno {
    fn from(e: OstError) -> Errno {
        Errno(e.errno())
    }
}
