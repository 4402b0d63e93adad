//! The ptlrpc wire format: a fixed little-endian header and an rkyv body.
//!
//! Owns: header layout and codec (`header`), flags and message kinds
//! (`flags`), identifier newtypes (`ids`), the opcode registry (`opcode`),
//! shared bodies (`body`), lock manager bodies (`ldlm`), bulk descriptors and BRW bodies (`bulk`),
//! whole-message encode/parse with validated body access (`message`), and
//! the typed errors (`error`).
//!
//! Must not: perform I/O, keep state, log, or panic on any input. Callers
//! (drivers) count and log decode failures and answer with an error reply
//! when [`DecodeError::reply_xid`] names an xid, otherwise drop.

mod body;
mod bounds;
mod bulk;
mod connect;
mod error;
mod flags;
mod header;
mod ids;
pub mod ldlm;
pub mod mds;
mod message;
pub mod mgs;
mod opcode;
pub mod ost;

pub use body::{ArchivedConnectData, ConnectData, Empty};
pub use bounds::{WireArchived, WireBody, WireDecode};
pub use bulk::{ArchivedBrwBody, ArchivedBrwReply, ArchivedBulkDesc, BrwBody, BrwReply, BulkDesc, CKSUM_CRC32C};
pub use connect::connect_flags;
pub use error::{DecodeError, EncodeError, errno};
pub use flags::{MsgFlags, MsgKind};
pub use header::{HEADER_LEN, Header, MAGIC, PRE_VERSIONS, VERSION};
pub use ids::{ConnCnt, ExportHandle, JOBID_LEN, JobId, ObjVersion, Portal, Transno, Xid};
pub use mds::Fid;
pub use message::{BODY_ALIGN, Frame, MAX_BODY_LEN, encode, encode_raw};
pub use opcode::{Op, Opcode, ReintOp, Service, UnknownOpcode, UnknownReintOp};
pub use ost::{
    Niobuf, OstAttr, OstBrw, OstBrwReply, OstCreate, OstCreateReply, OstId, OstIds, OstObj, OstPunch, OstSetattr,
    OstStatfs,
};

#[cfg(test)]
mod tests;
