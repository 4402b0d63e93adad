//! The MDT's and MGS's errors and the one place they map to errno.
//!
//! Owns: [`MdtError`] (what a namespace, allocator or MGS operation can end
//! in) and [`MdtError::errno`], the positive errno a reply carries negated.
//!
//! Must not: log; whoever handles an error logs it once.

use thiserror::Error;

use crate::store::StoreError;

/// Linux errno values the MDT answers with.
pub mod errno {
    /// Operation not permitted.
    pub const EPERM: i32 = 1;
    /// No such file or directory.
    pub const ENOENT: i32 = 2;
    /// I/O error.
    pub const EIO: i32 = 5;
    /// Bad file handle.
    pub const EBADF: i32 = 9;
    /// Permission denied (mode bits).
    pub const EACCES: i32 = 13;
    /// Try again.
    pub const EAGAIN: i32 = 11;
    /// Device or resource busy.
    pub const EBUSY: i32 = 16;
    /// File exists.
    pub const EEXIST: i32 = 17;
    /// Not a directory.
    pub const ENOTDIR: i32 = 20;
    /// Is a directory.
    pub const EISDIR: i32 = 21;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// No space left (no OST can take objects).
    pub const ENOSPC: i32 = 28;
    /// Name too long.
    pub const ENAMETOOLONG: i32 = 36;
    /// Directory not empty.
    pub const ENOTEMPTY: i32 = 39;
    /// No such attribute.
    pub const ENODATA: i32 = 61;
    /// Value too large (and VBR's version mismatch).
    pub const EOVERFLOW: i32 = 75;
    /// Operation not supported.
    pub const EOPNOTSUPP: i32 = 95;
    /// Transport endpoint is not connected.
    pub const ENOTCONN: i32 = 107;
    /// Stale handle: an open handle closed when its client's export was
    /// evicted.
    pub const ESTALE: i32 = 116;
}

/// What an MDT or MGS operation can end in.
#[derive(Debug, Clone, Error)]
pub enum MdtError {
    /// A POSIX-level refusal (ENOENT, EEXIST, ENOTEMPTY...).
    #[error("{what}: errno {errno}")]
    Posix {
        /// Positive errno.
        errno: i32,
        /// What was refused.
        what: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An OST could not be reached or refused.
    #[error("ost {ost}: {why}")]
    Ost {
        /// OST index.
        ost: u32,
        /// What went wrong.
        why: String,
        /// Positive errno.
        errno: i32,
    },
}

impl MdtError {
    /// A POSIX refusal.
    pub fn posix(errno: i32, what: impl Into<String>) -> MdtError {
        MdtError::Posix { errno, what: what.into() }
    }

    /// The positive errno for the wire.
    pub fn errno(&self) -> i32 {
        match self {
            MdtError::Posix { errno, .. } | MdtError::Ost { errno, .. } => *errno,
            MdtError::Store(_) => errno::EIO,
        }
    }
}

impl From<MdtError> for ptlrpc::driver::Errno {
    fn from(e: MdtError) -> ptlrpc::driver::Errno {
        ptlrpc::driver::Errno(e.errno())
    }
}

/// Result of MDT operations.
pub type Result<T> = std::result::Result<T, MdtError>;
