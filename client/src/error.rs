//! The client's errors and their errno: the one place a client failure
//! becomes a POSIX error number (for FUSE replies and the CLI's exit).
//!
//! Owns: [`ClientError`]. Must not: log (whoever handles an error logs it).

use ptlrpc::driver::{ImportRpcError, RpcError};

use crate::lov::LayoutError;

/// What a client operation can end in.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// A server answered with an error status (a positive errno).
    #[error("{what}: {} (server returned -{errno})", std::io::Error::from_raw_os_error(*errno))]
    Server {
        /// The operation.
        what: &'static str,
        /// Positive errno.
        errno: i32,
    },
    /// The RPC failed without an answer (lnet, timeout, bad reply).
    #[error("{what}: {source}")]
    Rpc {
        /// The operation.
        what: &'static str,
        /// The failure.
        source: RpcError,
    },
    /// No answer within the client's bound.
    #[error("{what}: no answer within {secs} s")]
    Timeout {
        /// The operation.
        what: &'static str,
        /// The bound, seconds.
        secs: u64,
    },
    /// The file system's configuration is unusable (no MDT, unknown OST).
    #[error("configuration: {0}")]
    Config(String),
    /// A layout the client cannot use.
    #[error("layout: {0}")]
    Layout(#[from] LayoutError),
    /// A path or argument the client refuses.
    #[error("invalid: {0}")]
    Invalid(String),
    /// A POSIX condition the client itself detects.
    #[error("{what}: {}", std::io::Error::from_raw_os_error(*errno))]
    Posix {
        /// What failed.
        what: String,
        /// Positive errno.
        errno: i32,
    },
    /// A local resource (lnet, buffers) failed.
    #[error("local: {0}")]
    Local(String),
    /// The file was opened before the MDT evicted this client: that open
    /// was closed with the evicted export, so nothing can be done through
    /// it (EIO; the file can be opened again).
    #[error("{what}: the open was lost: the MDT evicted this client after it was opened")]
    LostOpen {
        /// The operation.
        what: &'static str,
    },
    /// An import (connection with recovery) failed the request: evicted,
    /// closed, a replay refused.
    #[error("{what}: {source}")]
    Import {
        /// The operation.
        what: &'static str,
        /// The failure.
        source: ImportRpcError,
    },
}

/// A client result.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

impl ClientError {
    /// Wraps an RPC failure of operation `what`.
    ///
    /// An import's own failure (evicted, closed, a replay refused) is an
    /// [`ClientError::Import`] whichever call path carried it — the osc's
    /// calls come back as [`RpcError`] — so an OST eviction reads as the
    /// lost I/O it is (EIO), not as a transport error (ENOTCONN).
    pub fn rpc(what: &'static str, e: RpcError) -> ClientError {
        match e {
            RpcError::Server { errno, .. } => ClientError::Server { what, errno },
            RpcError::Import(i) => ClientError::Import { what, source: ImportRpcError::Import(i) },
            source => ClientError::Rpc { what, source },
        }
    }

    /// Wraps the failure of operation `what` through an import.
    pub fn import(what: &'static str, e: ImportRpcError) -> ClientError {
        match e {
            ImportRpcError::Server { errno, .. } => ClientError::Server { what, errno },
            source => ClientError::Import { what, source },
        }
    }

    /// A POSIX error the client detects itself.
    pub fn posix(what: impl Into<String>, errno: i32) -> ClientError {
        ClientError::Posix { what: what.into(), errno }
    }

    /// The positive errno this error maps to.
    pub fn errno(&self) -> i32 {
        match self {
            ClientError::Server { errno, .. } | ClientError::Posix { errno, .. } => *errno,
            ClientError::Rpc { source, .. } => source.errno(),
            ClientError::Timeout { .. } => libc::ETIMEDOUT,
            ClientError::Config(_) => libc::EIO,
            ClientError::Layout(_) | ClientError::Invalid(_) => libc::EINVAL,
            ClientError::Local(_) | ClientError::Import { .. } | ClientError::LostOpen { .. } => libc::EIO,
        }
    }

    /// Whether the request was in flight when the target evicted this
    /// client: its outcome is unknown (it may have taken effect).
    pub fn is_evicted_in_flight(&self) -> bool {
        matches!(self, ClientError::Import { source: ImportRpcError::Import(ptlrpc::import::ImportError::Evicted), .. })
    }

    /// Whether an open from before an eviction was used.
    pub fn is_lost_open(&self) -> bool {
        matches!(self, ClientError::LostOpen { .. })
    }

    /// Whether this is "no such file or directory".
    pub fn is_not_found(&self) -> bool {
        self.errno() == libc::ENOENT
    }
}

#[cfg(test)]
mod tests {
    use ptlrpc::import::ImportError;

    use super::*;

    #[test]
    fn an_osc_call_failed_by_an_eviction_is_eio_and_evicted_in_flight() {
        // The osc's calls return RpcError; the eviction inside must not
        // surface as the transport's ENOTCONN (a write behind flushed at
        // close after an OST evicted this client).
        let e = ClientError::rpc("ost write", RpcError::Import(ImportError::Evicted));
        assert_eq!(e.errno(), libc::EIO);
        assert!(e.is_evicted_in_flight());
        let e = ClientError::rpc("ost write", RpcError::Import(ImportError::Closed));
        assert_eq!(e.errno(), libc::EIO);
        assert!(!e.is_evicted_in_flight());
        let e = ClientError::import("close", ImportRpcError::Import(ImportError::Evicted));
        assert_eq!(e.errno(), libc::EIO);
    }
}
