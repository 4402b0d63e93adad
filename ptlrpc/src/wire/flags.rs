//! Message flags and the message kind.
//!
//! Owns: [`MsgFlags`], a typed bit set with named flags, and [`MsgKind`]
//! (request, reply, error reply).
//!
//! Must not: decide what a flag means for a request's life (imports and
//! services do that); it only names and validates bits.

use std::fmt;
use std::ops::{BitOr, BitOrAssign};

use super::DecodeError;

/// Flags in the message header. Unknown bits are rejected when decoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MsgFlags(u32);

macro_rules! flags {
    ($( $(#[$doc:meta])* $name:ident = $bit:expr; )*) => {
        impl MsgFlags {
            $( $(#[$doc])* pub const $name: MsgFlags = MsgFlags($bit); )*

            /// Every defined flag with its name.
            const NAMED: &'static [(MsgFlags, &'static str)] =
                &[ $( (MsgFlags::$name, stringify!($name)), )* ];

            /// The union of every defined flag.
            pub const ALL: MsgFlags = MsgFlags(0 $( | $bit )*);
        }
    };
}

flags! {
    /// The last request a client replays during recovery.
    LAST_REPLAY = 0x0001;
    /// A resend of a request whose reply never arrived (same xid).
    RESEND = 0x0002;
    /// A replay of a committed-at-the-client, uncommitted-at-the-server request.
    REPLAY = 0x0004;
    /// An early reply: extends the request's deadline, carries no result.
    EARLY_REPLY = 0x0008;
    /// Replay delayed past the recovery window.
    DELAY_REPLAY = 0x0010;
    /// Replay checked by object versions (VBR).
    VERSION_REPLAY = 0x0020;
    /// The client has finished replaying requests.
    REQ_REPLAY_DONE = 0x0040;
    /// The client has finished replaying locks.
    LOCK_REPLAY_DONE = 0x0080;
    /// CONNECT reply: the target is in recovery and knows this client;
    /// replay.
    CONNECT_RECOVERING = 0x0100;
    /// CONNECT reply: the client's export was still alive; resend only.
    CONNECT_RECONNECT = 0x0200;
    /// CONNECT reply: the target finished recovery without this client;
    /// replay with version checks (delayed recovery).
    CONNECT_DELAYED = 0x0400;
    /// CONNECT request: the import's first connect (or first after an
    /// eviction): it holds no state to recover.
    CONNECT_INITIAL = 0x0800;
}

impl MsgFlags {
    /// No flags.
    pub const EMPTY: MsgFlags = MsgFlags(0);

    /// Flags from wire bits; unknown bits are an error.
    pub fn from_bits(bits: u32) -> Result<MsgFlags, DecodeError> {
        if bits & !MsgFlags::ALL.0 != 0 {
            return Err(DecodeError::UnknownFlags(bits & !MsgFlags::ALL.0));
        }
        Ok(MsgFlags(bits))
    }

    /// The wire bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every flag in `other` is set.
    pub const fn contains(self, other: MsgFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Sets the flags in `other`.
    pub fn insert(&mut self, other: MsgFlags) {
        self.0 |= other.0;
    }

    /// Clears the flags in `other`.
    pub fn remove(&mut self, other: MsgFlags) {
        self.0 &= !other.0;
    }

    /// No flag set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for MsgFlags {
    type Output = MsgFlags;
    fn bitor(self, rhs: MsgFlags) -> MsgFlags {
        MsgFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for MsgFlags {
    fn bitor_assign(&mut self, rhs: MsgFlags) {
        self.insert(rhs);
    }
}

impl fmt::Debug for MsgFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut set = f.debug_set();
        for (flag, name) in MsgFlags::NAMED {
            if self.contains(*flag) {
                set.entry(&format_args!("{name}"));
            }
        }
        set.finish()
    }
}

/// What a message is (Lustre's `PTL_RPC_MSG_*` numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MsgKind {
    /// A request from a client.
    Request = 4711,
    /// A reply (including early replies).
    Reply = 4712,
    /// An error reply: the status says why, the body is empty.
    Error = 4713,
}

impl MsgKind {
    /// The kind from its wire number.
    pub fn from_wire(v: u32) -> Result<MsgKind, DecodeError> {
        match v {
            4711 => Ok(MsgKind::Request),
            4712 => Ok(MsgKind::Reply),
            4713 => Ok(MsgKind::Error),
            other => Err(DecodeError::BadKind(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_validate_and_print() {
        let f = MsgFlags::RESEND | MsgFlags::REPLAY;
        assert_eq!(f.bits(), 0x6);
        assert!(f.contains(MsgFlags::RESEND));
        assert!(!f.contains(MsgFlags::EARLY_REPLY));
        assert_eq!(format!("{f:?}"), "{RESEND, REPLAY}");
        assert_eq!(MsgFlags::from_bits(0x6), Ok(f));
        assert_eq!(MsgFlags::from_bits(0x10006), Err(DecodeError::UnknownFlags(0x10000)));
        let mut g = f;
        g.remove(MsgFlags::RESEND);
        assert_eq!(g, MsgFlags::REPLAY);
    }
}
