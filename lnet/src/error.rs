//! Errors of the lnet crate and their errno mapping (the one place it lives).

use crate::nid::{Net, Nid, NidError};

/// Everything that can go wrong in lnet, as seen by a caller or in an event status.
///
/// Cloneable so one failure can be reported in the events of several MDs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LnetError {
    /// A NID or network did not parse.
    #[error(transparent)]
    Nid(#[from] NidError),
    /// No local NI on the network a destination lives on.
    #[error("no local network interface on {0}; configure one or add a route")]
    NoRoute(Net),
    /// The peer is unreachable or its connection died.
    #[error("peer {nid} is down: {why}")]
    PeerDown {
        /// The peer.
        nid: Nid,
        /// What happened (connection refused, reset, closed...).
        why: String,
    },
    /// The peer did not complete the operation in time.
    #[error("timed out waiting for {0}")]
    Timeout(Nid),
    /// The peer had no matching entry for a GET.
    #[error("no match on {nid} for portal {portal} bits {match_bits:#x}")]
    NoMatch {
        /// The peer.
        nid: Nid,
        /// The portal index.
        portal: u32,
        /// The match bits sent.
        match_bits: u64,
    },
    /// The message was larger than the MD or a protocol limit.
    #[error("message of {len} bytes is larger than the limit of {max}")]
    TooBig {
        /// Bytes asked for.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An argument was invalid (bad portal, MD not usable for this op, ...).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The MD was unlinked before the operation completed.
    #[error("memory descriptor unlinked")]
    Unlinked,
    /// A malformed message or connection handshake.
    #[error("protocol error from {peer}: {why}")]
    Proto {
        /// Where it came from (an address if the NID is not known yet).
        peer: String,
        /// What was wrong.
        why: String,
    },
    /// A local I/O error (socket, bind).
    #[error("{context}: {kind}")]
    Io {
        /// What was being done.
        context: String,
        /// The io::ErrorKind, printed.
        kind: String,
    },
    /// The page pool could not satisfy an allocation.
    #[error("page pool of CPT {cpt} exhausted ({limit} pages)")]
    NoPages {
        /// The CPU partition.
        cpt: u32,
        /// The pool's limit.
        limit: usize,
    },
    /// LNet is shutting down.
    #[error("lnet is shutting down")]
    Shutdown,
    /// The LND for this network type is not available on this host.
    #[error("LND {0} is not available: {1}")]
    LndUnavailable(&'static str, String),
}

impl LnetError {
    /// A local I/O error with context.
    pub fn io(context: impl Into<String>, e: &std::io::Error) -> LnetError {
        LnetError::Io { context: context.into(), kind: e.to_string() }
    }

    /// The peer is down, and why.
    pub fn peer_down(nid: Nid, why: impl std::fmt::Display) -> LnetError {
        LnetError::PeerDown { nid, why: why.to_string() }
    }

    /// The negative errno this error travels as on the wire and in ptlrpc.
    pub fn errno(&self) -> i32 {
        -(match self {
            LnetError::Nid(_) | LnetError::Invalid(_) => libc_errno::EINVAL,
            LnetError::NoRoute(_) => libc_errno::EHOSTUNREACH,
            LnetError::PeerDown { .. } => libc_errno::ECONNRESET,
            LnetError::Timeout(_) => libc_errno::ETIMEDOUT,
            LnetError::NoMatch { .. } => libc_errno::ENOENT,
            LnetError::TooBig { .. } => libc_errno::EMSGSIZE,
            LnetError::Unlinked => libc_errno::ECANCELED,
            LnetError::Proto { .. } => libc_errno::EPROTO,
            LnetError::Io { .. } => libc_errno::EIO,
            LnetError::NoPages { .. } => libc_errno::ENOMEM,
            LnetError::Shutdown => libc_errno::ESHUTDOWN,
            LnetError::LndUnavailable(..) => libc_errno::ENODEV,
        })
    }
}

/// Linux errno values used on the wire (fixed by the ABI, so spelled out here
/// instead of pulling in libc for a dozen constants).
pub mod libc_errno {
    #![allow(missing_docs)]
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const ENOMEM: i32 = 12;
    pub const ENODEV: i32 = 19;
    pub const EINVAL: i32 = 22;
    pub const EPROTO: i32 = 71;
    pub const EMSGSIZE: i32 = 90;
    pub const ECONNRESET: i32 = 104;
    pub const ESHUTDOWN: i32 = 108;
    pub const ETIMEDOUT: i32 = 110;
    pub const EHOSTUNREACH: i32 = 113;
    pub const ECANCELED: i32 = 125;
}

/// Result alias for lnet.
pub type Result<T, E = LnetError> = std::result::Result<T, E>;
