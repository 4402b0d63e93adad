//! Wire errors and the errno values they map to.
//!
//! Owns: [`DecodeError`] and [`EncodeError`], and the one place where a
//! decode failure becomes an errno for an error reply.
//!
//! Must not: log or count (the driver that sees the error does both, once).

use thiserror::Error;

use super::ids::Xid;

/// Linux errno values used on the wire (as positive numbers; the header
/// carries them negated).
pub mod errno {
    /// Try again: the target is recovering and cannot serve this yet.
    pub const EAGAIN: i32 = 11;
    /// I/O error (a bulk transfer that failed for good).
    pub const EIO: i32 = 5;
    /// Out of memory (no bulk pages).
    pub const ENOMEM: i32 = 12;
    /// Busy: a service queue is full.
    pub const EBUSY: i32 = 16;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// Bad message: a bulk checksum mismatch.
    pub const EBADMSG: i32 = 74;
    /// Shutting down: the target is stopping (SIGTERM) and did nothing;
    /// the import goes to DISCON and resends once it is back.
    pub const ESHUTDOWN: i32 = 108;
    /// Protocol error: a malformed message.
    pub const EPROTO: i32 = 71;
    /// Operation not supported: an unknown opcode.
    pub const EOPNOTSUPP: i32 = 95;
    /// Not connected: a stale or unknown export.
    pub const ENOTCONN: i32 = 107;
    /// Timed out.
    pub const ETIMEDOUT: i32 = 110;
    /// Version mismatch in VBR.
    pub const EOVERFLOW: i32 = 75;
    /// No such device (no such target here).
    pub const ENODEV: i32 = 19;
    /// In progress: the target could not do it this time (a write's bulk
    /// data kept arriving corrupt) and did nothing; the import resends the
    /// request at once (a new bulk transfer), a bounded number of times.
    pub const EINPROGRESS: i32 = 115;
}

/// Why a message could not be decoded. Never a panic: every malformed input
/// lands here.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Fewer bytes than a header.
    #[error("short message: need {need} bytes, have {have}")]
    Short {
        /// Bytes required.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// Not a Sheen message.
    #[error("bad magic {0:#010x}")]
    BadMagic(u32),
    /// A byte-swapped magic: a big-endian peer, which this protocol does
    /// not speak (it is little-endian only).
    #[error("byte-swapped magic: big-endian peers are not supported")]
    Swabbed,
    /// A header version this build does not speak.
    #[error("unsupported header version {0}")]
    BadVersion(u32),
    /// A message kind other than request, reply or error.
    #[error("bad message kind {0}")]
    BadKind(u32),
    /// Flag bits this build does not define.
    #[error("unknown flag bits {0:#x}")]
    UnknownFlags(u32),
    /// Reserved header bytes are not zero.
    #[error("reserved header bytes are not zero")]
    Reserved,
    /// The header's body length disagrees with the bytes that follow it.
    #[error("xid {xid}: header says {declared} body bytes, message has {actual}")]
    BodyLength {
        /// The message's xid.
        xid: Xid,
        /// Body length in the header.
        declared: u32,
        /// Bytes after the header.
        actual: usize,
    },
    /// The body is larger than any message may be.
    #[error("xid {xid}: body of {len} bytes exceeds the {max} byte limit")]
    BodyTooLarge {
        /// The message's xid.
        xid: Xid,
        /// Body length in the header.
        len: u32,
        /// The limit.
        max: usize,
    },
    /// The opcode is not in the registry.
    #[error("xid {xid}: unknown opcode {opcode}")]
    UnknownOpcode {
        /// The message's xid.
        xid: Xid,
        /// The raw opcode.
        opcode: u32,
    },
    /// The body failed rkyv validation (bytecheck) or deserialization.
    #[error("xid {xid}: invalid body: {reason}")]
    Body {
        /// The message's xid.
        xid: Xid,
        /// What the validator reported.
        reason: String,
    },
}

impl DecodeError {
    /// The xid to answer with an error reply, when the header was readable
    /// enough to name one; `None` means the message can only be dropped.
    pub fn reply_xid(&self) -> Option<Xid> {
        match self {
            DecodeError::BodyLength { xid, .. }
            | DecodeError::BodyTooLarge { xid, .. }
            | DecodeError::UnknownOpcode { xid, .. }
            | DecodeError::Body { xid, .. } => Some(*xid),
            _ => None,
        }
    }

    /// The errno an error reply carries (positive; negate for the header).
    pub fn errno(&self) -> i32 {
        match self {
            DecodeError::UnknownOpcode { .. } => errno::EOPNOTSUPP,
            _ => errno::EPROTO,
        }
    }
}

/// Why a message could not be encoded.
#[derive(Debug, Error)]
pub enum EncodeError {
    /// The archived body is larger than any message may be.
    #[error("body of {len} bytes exceeds the {max} byte limit")]
    BodyTooLarge {
        /// Archived body length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// rkyv could not serialize the body.
    #[error("serializing body: {0}")]
    Serialize(#[from] rkyv::rancor::Error),
}
