//! Errors of the driver layer and their errno (the one place they map).
//!
//! Owns: [`RpcError`] (what a client's RPC can end in), [`Errno`] (what a
//! handler answers with), [`BulkError`] (a server-side transfer) and
//! [`ServiceError`] (starting a service).
//!
//! Must not: log; whoever handles an error logs it once.

use lnet::LnetError;
use thiserror::Error;

use crate::wire::{DecodeError, EncodeError, Op, Xid, errno};

/// A positive errno a handler answers with; the reply header carries it
/// negated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("errno {0}")]
pub struct Errno(pub i32);

impl Errno {
    /// A malformed request.
    pub const EPROTO: Errno = Errno(errno::EPROTO);
    /// An operation this service does not implement.
    pub const EOPNOTSUPP: Errno = Errno(errno::EOPNOTSUPP);
    /// An I/O failure.
    pub const EIO: Errno = Errno(errno::EIO);
    /// An invalid request.
    pub const EINVAL: Errno = Errno(errno::EINVAL);
}

impl From<DecodeError> for Errno {
    fn from(e: DecodeError) -> Errno {
        Errno(e.errno())
    }
}

/// How a client's RPC failed.
#[derive(Debug, Clone, Error)]
pub enum RpcError {
    /// The server answered with an error status.
    #[error("{op:?} xid {xid}: server returned -{errno}")]
    Server {
        /// The operation.
        op: Op,
        /// The request's xid.
        xid: Xid,
        /// Positive errno.
        errno: i32,
    },
    /// No reply within the deadline, after every allowed send.
    #[error("{op:?} xid {xid}: no reply after {sends} sends")]
    Timeout {
        /// The operation.
        op: Op,
        /// The request's xid.
        xid: Xid,
        /// Sends made.
        sends: u32,
    },
    /// lnet refused or failed the operation.
    #[error("lnet: {0}")]
    Lnet(#[from] LnetError),
    /// The reply did not decode.
    #[error("malformed reply: {0}")]
    BadReply(#[from] DecodeError),
    /// The reply was larger than the reply buffer.
    #[error("reply of {len} bytes truncated to {cap}")]
    Truncated {
        /// Bytes the server sent.
        len: u32,
        /// Room in the reply buffer.
        cap: u32,
    },
    /// The request body could not be encoded.
    #[error("encoding the request: {0}")]
    Encode(String),
    /// Bulk data arrived corrupt on every allowed attempt.
    #[error("bulk checksum mismatch on {attempts} attempts")]
    BulkChecksum {
        /// Attempts made.
        attempts: u32,
    },
    /// A read's reply came but its bulk PUT did not land whole in the
    /// client's pages (within `ClientConfig::bulk_release_wait`).
    #[error("xid {xid}: bulk data not received ({got} of {want} bytes)")]
    BulkMissing {
        /// The request's xid.
        xid: Xid,
        /// Bytes that landed.
        got: u32,
        /// Bytes the read asked for.
        want: u32,
    },
    /// The client was shut down.
    #[error("client shut down")]
    Shutdown,
    /// The import failed the request (evicted, closed, a replay refused):
    /// its outcome on the target is unknown.
    #[error("import: {0}")]
    Import(crate::import::ImportError),
}

impl From<super::ImportRpcError> for RpcError {
    fn from(e: super::ImportRpcError) -> RpcError {
        use super::ImportRpcError as E;
        match e {
            E::Import(i) => RpcError::Import(i),
            E::Server { op, xid, errno } => RpcError::Server { op, xid, errno },
            E::Encode(s) => RpcError::Encode(s),
            E::Shutdown => RpcError::Shutdown,
            E::Bulk(l) => RpcError::Lnet(l),
            E::BulkMissing { xid, got, want, .. } => RpcError::BulkMissing { xid, got, want },
        }
    }
}

impl From<EncodeError> for RpcError {
    fn from(e: EncodeError) -> RpcError {
        RpcError::Encode(e.to_string())
    }
}

impl RpcError {
    /// The positive errno this error maps to.
    pub fn errno(&self) -> i32 {
        match self {
            RpcError::Server { errno, .. } => *errno,
            RpcError::Timeout { .. } => errno::ETIMEDOUT,
            RpcError::Lnet(e) => -e.errno(),
            RpcError::BadReply(_) => errno::EPROTO,
            RpcError::Truncated { .. } => errno::EOVERFLOW,
            RpcError::Encode(_) => errno::EINVAL,
            RpcError::BulkChecksum { .. } | RpcError::BulkMissing { .. } => errno::EIO,
            RpcError::Shutdown => errno::ESHUTDOWN,
            RpcError::Import(crate::import::ImportError::VersionMismatch) => errno::EOVERFLOW,
            RpcError::Import(crate::import::ImportError::Full(_)) => errno::EBUSY,
            RpcError::Import(_) => errno::ENOTCONN,
        }
    }
}

/// How a server-side bulk transfer failed.
#[derive(Debug, Clone, Error)]
pub enum BulkError {
    /// lnet failed the transfer (no match, peer down, timeout).
    #[error("lnet: {0}")]
    Lnet(#[from] LnetError),
    /// The data's checksum did not match on every allowed attempt.
    #[error("checksum mismatch on {attempts} attempts")]
    Checksum {
        /// Attempts made.
        attempts: u32,
    },
    /// The transfer did not complete within the bulk timeout.
    #[error("bulk transfer timed out")]
    Timeout,
    /// Fewer bytes moved than the descriptor names.
    #[error("bulk moved {got} of {want} bytes")]
    Short {
        /// Bytes moved.
        got: u32,
        /// Bytes expected.
        want: u32,
    },
    /// The descriptor asks for more than the buffer or a limit allows.
    #[error("bulk of {len} bytes does not fit {cap}")]
    TooBig {
        /// Bytes asked for.
        len: u32,
        /// The limit.
        cap: usize,
    },
    /// A handler serving a request inline, on lnet's receive path (see
    /// `Handler::inline`), asked for a bulk transfer it waits for
    /// (`ReqCtx::bulk_get`/`bulk_put`): it would wait on the thread that
    /// completes it. The deferred ones (`bulk_get_then`/`bulk_put_then`)
    /// are allowed inline.
    #[error("waiting bulk transfer asked for by a handler running inline on lnet's receive path")]
    Inline,
}

impl From<BulkError> for Errno {
    fn from(e: BulkError) -> Errno {
        match e {
            BulkError::Lnet(LnetError::NoPages { .. }) => Errno(errno::ENOMEM),
            BulkError::Lnet(l) => Errno(-l.errno()),
            BulkError::Checksum { .. } => Errno(errno::EBADMSG),
            BulkError::Timeout => Errno(errno::ETIMEDOUT),
            BulkError::Short { .. } => Errno(errno::EIO),
            BulkError::TooBig { .. } => Errno(errno::EINVAL),
            BulkError::Inline => Errno(errno::EIO),
        }
    }
}

/// Why a service could not start.
#[derive(Debug, Error)]
pub enum ServiceError {
    /// Posting request buffers failed.
    #[error("posting request buffers: {0}")]
    Lnet(#[from] LnetError),
    /// A worker thread could not be spawned.
    #[error("spawning {name}: {err}")]
    Spawn {
        /// The thread's name.
        name: String,
        /// The OS error.
        err: String,
    },
    /// The configuration is unusable.
    #[error("invalid service config: {0}")]
    Config(String),
    /// Not called inside a tokio runtime.
    #[error("a service must be started inside a tokio runtime")]
    NoRuntime,
}
