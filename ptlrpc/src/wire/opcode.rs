//! The opcode registry: every RPC any Sheen service understands.
//!
//! Owns: the raw [`Opcode`] carried in the header, the [`Op`] enum naming
//! each known opcode (numbers follow Lustre's `lustre_idl.h`), the
//! [`Service`] each opcode belongs to, and MDS reint sub-operations
//! ([`ReintOp`]).
//!
//! Must not: describe bodies or dispatch requests; services do that by
//! matching on [`Op`].

use std::fmt;

use thiserror::Error;

/// The opcode as carried on the wire; may name no known operation.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Opcode(pub u32);

impl fmt::Debug for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Op::try_from(*self) {
            Ok(op) => write!(f, "Opcode({}={op:?})", self.0),
            Err(_) => write!(f, "Opcode({}=unknown)", self.0),
        }
    }
}

/// An opcode that no service in the registry defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("unknown opcode {0}")]
pub struct UnknownOpcode(pub u32);

/// Which service (and so which target) an opcode is served by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    /// Object storage target.
    Ost,
    /// Metadata target.
    Mds,
    /// Management server (configuration logs, target registry).
    Mgs,
    /// Lock manager: enqueue and cancel on the MDT, callbacks on clients.
    Ldlm,
    /// Opcodes every service answers (PING).
    Obd,
}

macro_rules! registry {
    ($( $(#[$doc:meta])* $variant:ident = $num:literal, $svc:ident; )*) => {
        /// A known operation. Discriminants are the wire opcode numbers.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(u32)]
        pub enum Op {
            $( $(#[$doc])* $variant = $num, )*
        }

        impl Op {
            /// Every known operation, in opcode order.
            pub const ALL: &'static [Op] = &[ $( Op::$variant, )* ];

            /// The operation's name (for logs, traces and metric labels).
            pub const fn name(self) -> &'static str {
                match self {
                    $( Op::$variant => stringify!($variant), )*
                }
            }

            /// The service this operation is served by.
            pub const fn service(self) -> Service {
                match self {
                    $( Op::$variant => Service::$svc, )*
                }
            }
        }

        impl TryFrom<Opcode> for Op {
            type Error = UnknownOpcode;
            fn try_from(code: Opcode) -> Result<Op, UnknownOpcode> {
                match code.0 {
                    $( $num => Ok(Op::$variant), )*
                    other => Err(UnknownOpcode(other)),
                }
            }
        }
    };
}

registry! {
    /// Read object attributes.
    OstGetattr = 1, Ost;
    /// Set object attributes.
    OstSetattr = 2, Ost;
    /// Bulk read (the server PUTs into the client's pages).
    OstRead = 3, Ost;
    /// Bulk write (the server GETs the client's pages).
    OstWrite = 4, Ost;
    /// Create objects (precreate).
    OstCreate = 5, Ost;
    /// Destroy an object.
    OstDestroy = 6, Ost;
    /// Query a named value.
    OstGetInfo = 7, Ost;
    /// Connect to an OST.
    OstConnect = 8, Ost;
    /// Disconnect from an OST.
    OstDisconnect = 9, Ost;
    /// Truncate or punch a hole.
    OstPunch = 10, Ost;
    /// Filesystem statistics of an OST.
    OstStatfs = 13, Ost;
    /// Flush an object (or the whole OST) to stable storage.
    OstSync = 16, Ost;
    /// Set a named value.
    OstSetInfo = 17, Ost;
    /// Quota control.
    OstQuotactl = 19, Ost;
    /// Access advice.
    OstLadvise = 21, Ost;
    /// Preallocate space.
    OstFallocate = 22, Ost;
    /// SEEK_DATA / SEEK_HOLE.
    OstSeek = 23, Ost;

    /// Attributes by fid.
    MdsGetattr = 33, Mds;
    /// Attributes by parent fid and name.
    MdsGetattrName = 34, Mds;
    /// Close an open file handle.
    MdsClose = 35, Mds;
    /// A modifying operation; the body names a [`ReintOp`].
    MdsReint = 36, Mds;
    /// Read directory pages.
    MdsReadpage = 37, Mds;
    /// Connect to an MDT.
    MdsConnect = 38, Mds;
    /// Disconnect from an MDT.
    MdsDisconnect = 39, Mds;
    /// The root fid.
    MdsGetRoot = 40, Mds;
    /// Filesystem statistics of an MDT.
    MdsStatfs = 41, Mds;
    /// Flush to stable storage.
    MdsSync = 44, Mds;
    /// Set a named value.
    MdsSetInfo = 46, Mds;
    /// Quota control.
    MdsQuotactl = 48, Mds;
    /// Read an extended attribute.
    MdsGetxattr = 49, Mds;
    /// Set an extended attribute.
    MdsSetxattr = 50, Mds;
    /// Is one directory under another.
    MdsIsSubdir = 52, Mds;
    /// Query a named value.
    MdsGetInfo = 53, Mds;
    /// Swap two files' layouts.
    MdsSwapLayouts = 61, Mds;

    /// Lock enqueue (reserved).
    LdlmEnqueue = 101, Ldlm;
    /// Lock convert (reserved).
    LdlmConvert = 102, Ldlm;
    /// Lock cancel (reserved).
    LdlmCancel = 103, Ldlm;
    /// Blocking AST (reserved).
    LdlmBlCallback = 104, Ldlm;
    /// Completion AST (reserved).
    LdlmCpCallback = 105, Ldlm;
    /// Glimpse AST (reserved).
    LdlmGlCallback = 106, Ldlm;

    /// Connect to the MGS.
    MgsConnect = 250, Mgs;
    /// Disconnect from the MGS.
    MgsDisconnect = 251, Mgs;
    /// Register a target (an MDT or OST announcing itself).
    MgsTargetReg = 253, Mgs;
    /// Remove a target.
    MgsTargetDel = 254, Mgs;
    /// Set a configuration parameter.
    MgsSetInfo = 255, Mgs;
    /// Read a configuration log.
    MgsConfigRead = 256, Mgs;

    /// Liveness probe every service answers; also the pinger's RPC.
    ObdPing = 400, Obd;

    /// Sequences for FIDs from MDT0's sequence controller (served on the
    /// MDS portal).
    SeqQuery = 700, Mds;
}

impl Op {
    /// The raw wire opcode.
    pub const fn opcode(self) -> Opcode {
        Opcode(self as u32)
    }

    /// CONNECT for any service.
    pub const fn is_connect(self) -> bool {
        matches!(self, Op::OstConnect | Op::MdsConnect | Op::MgsConnect)
    }

    /// DISCONNECT for any service.
    pub const fn is_disconnect(self) -> bool {
        matches!(self, Op::OstDisconnect | Op::MdsDisconnect | Op::MgsDisconnect)
    }

    /// Served from the high-priority queue (PING, CONNECT, and lock
    /// cancels and callbacks: a server's workers may all be waiting for a
    /// cancel, so cancels must not queue behind them — Lustre's
    /// `ldlm_canceld`).
    pub const fn is_high_priority(self) -> bool {
        matches!(self, Op::ObdPing | Op::LdlmCancel | Op::LdlmBlCallback) || self.is_connect()
    }
}

impl From<Op> for Opcode {
    fn from(op: Op) -> Opcode {
        op.opcode()
    }
}

/// MDS_REINT sub-operations (Lustre's `REINT_*`), carried in the reint body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u32)]
pub enum ReintOp {
    /// Change attributes.
    Setattr = 1,
    /// Create a file, directory, symlink or device.
    Create = 2,
    /// Hard link.
    Link = 3,
    /// Remove a name.
    Unlink = 4,
    /// Rename.
    Rename = 5,
    /// Open (possibly creating).
    Open = 6,
    /// Set an extended attribute.
    Setxattr = 7,
    /// Remove a name without touching the object.
    Rmentry = 8,
    /// Migrate a file between MDTs.
    Migrate = 9,
}

/// A reint sub-operation number no MDS defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("unknown reint operation {0}")]
pub struct UnknownReintOp(pub u32);

impl TryFrom<u32> for ReintOp {
    type Error = UnknownReintOp;
    fn try_from(v: u32) -> Result<ReintOp, UnknownReintOp> {
        Ok(match v {
            1 => ReintOp::Setattr,
            2 => ReintOp::Create,
            3 => ReintOp::Link,
            4 => ReintOp::Unlink,
            5 => ReintOp::Rename,
            6 => ReintOp::Open,
            7 => ReintOp::Setxattr,
            8 => ReintOp::Rmentry,
            9 => ReintOp::Migrate,
            other => return Err(UnknownReintOp(other)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lustre_numbers_are_pinned() {
        assert_eq!(Op::OstRead.opcode(), Opcode(3));
        assert_eq!(Op::OstWrite.opcode(), Opcode(4));
        assert_eq!(Op::MdsReint.opcode(), Opcode(36));
        assert_eq!(Op::MdsConnect.opcode(), Opcode(38));
        assert_eq!(Op::MgsConfigRead.opcode(), Opcode(256));
        assert_eq!(Op::ObdPing.opcode(), Opcode(400));
        assert_eq!(ReintOp::Rename as u32, 5);
    }

    #[test]
    fn registry_round_trips_and_rejects_unknown() {
        for &op in Op::ALL {
            assert_eq!(Op::try_from(op.opcode()), Ok(op));
        }
        assert_eq!(Op::try_from(Opcode(0)), Err(UnknownOpcode(0)));
        assert_eq!(Op::try_from(Opcode(399)), Err(UnknownOpcode(399)));
        let known = (0..2000).filter(|&n| Op::try_from(Opcode(n)).is_ok());
        assert_eq!(known.count(), Op::ALL.len());
        for n in 0..20 {
            if let Ok(r) = ReintOp::try_from(n) {
                assert_eq!(r as u32, n);
            }
        }
    }

    #[test]
    fn services_and_priorities() {
        assert_eq!(Op::OstPunch.service(), Service::Ost);
        assert_eq!(Op::MdsReadpage.service(), Service::Mds);
        assert_eq!(Op::MgsTargetReg.service(), Service::Mgs);
        assert!(Op::ObdPing.is_high_priority());
        assert!(Op::MgsConnect.is_high_priority());
        assert!(!Op::OstWrite.is_high_priority());
        assert!(Op::LdlmCancel.is_high_priority());
        assert!(!Op::LdlmEnqueue.is_high_priority());
        assert!(Op::MdsDisconnect.is_disconnect());
    }
}
