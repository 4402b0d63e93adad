//! The o2ib LND's wire format (kiblnd's `kib_msg_t` counterpart) and the
//! rdma_cm handshake's private data.
//!
//! Every message starts with a 32-byte little-endian header:
//! ```text
//!  0 u32 magic "SHIB"   4 u16 version   6 u8 type   7 u8 reserved
//!  8 u32 credits returned              12 u32 message length (nob)
//! 16 u64 cookie (rendezvous id)        24 i32 status   28 u32 nfrags
//! ```
//! then a body by type: IMMEDIATE = LNet header + payload; PUT_REQ = LNet
//! header; PUT_ACK = `nfrags` × {u64 addr, u32 len, u32 rkey}; PUT_NAK,
//! PUT_DONE and NOOP have none. Decoding never panics: bad input is a
//! [`ProtoError`]. Knows nothing of verbs or connections.

use crate::nid::Nid;
use crate::wire::{HDR_SIZE, LnetHdr};
use crate::wire::{u32_at, u64_at};

/// "SHIB", little endian.
pub const MAGIC: u32 = 0x4249_4853;
/// Wire version (messages and handshake).
pub const VERSION: u16 = 1;
/// Message header size.
pub const MSG_HDR: usize = 32;
/// One fragment descriptor in a PUT_ACK.
pub const FRAG_SIZE: usize = 16;

/// Message types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgType {
    /// Returns credits only.
    Noop = 1,
    /// LNet header plus the whole payload.
    Immediate = 2,
    /// LNet header; the payload follows by RDMA once the receiver answers.
    PutReq = 3,
    /// The receiver's sink fragments for a PUT_REQ.
    PutAck = 4,
    /// The receiver wants no payload (status 0) or failed (negative errno).
    PutNak = 5,
    /// The RDMA writes of a rendezvous are done (status as for NAK).
    PutDone = 6,
}

impl MsgType {
    fn from_u8(v: u8) -> Option<MsgType> {
        Some(match v {
            1 => MsgType::Noop,
            2 => MsgType::Immediate,
            3 => MsgType::PutReq,
            4 => MsgType::PutAck,
            5 => MsgType::PutNak,
            6 => MsgType::PutDone,
            _ => return None,
        })
    }
}

/// A remote memory fragment the sender RDMA-writes into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frag {
    /// Remote virtual address.
    pub addr: u64,
    /// Bytes.
    pub len: u32,
    /// Remote key of the memory region.
    pub rkey: u32,
}

/// The fixed header of every message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsgHdr {
    /// Type.
    pub ty: MsgType,
    /// Credits returned to the receiver of this message.
    pub credits: u32,
    /// Total message bytes, header included.
    pub nob: u32,
    /// Rendezvous cookie.
    pub cookie: u64,
    /// Status (NAK, DONE).
    pub status: i32,
    /// Fragments following (PUT_ACK).
    pub nfrags: u32,
}

/// Why a message or handshake was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// Too short for what it claims.
    #[error("short message: {got} bytes, need {need}")]
    Short { got: usize, need: usize },
    /// Wrong magic.
    #[error("bad magic {0:#010x}")]
    Magic(u32),
    /// Wrong version.
    #[error("unsupported version {0}")]
    Version(u16),
    /// Unknown type.
    #[error("unknown message type {0}")]
    Type(u8),
    /// Length fields disagree.
    #[error("inconsistent length: header says {nob}, received {got}")]
    Length { nob: u32, got: usize },
    /// The embedded LNet header is bad.
    #[error("bad LNet header: {0}")]
    Lnet(String),
}

impl MsgHdr {
    /// A header of type `ty` with everything else zero.
    pub fn new(ty: MsgType) -> MsgHdr {
        MsgHdr { ty, credits: 0, nob: MSG_HDR as u32, cookie: 0, status: 0, nfrags: 0 }
    }

    /// Writes the header into `b[..MSG_HDR]`.
    pub fn encode(&self, b: &mut [u8]) {
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..6].copy_from_slice(&VERSION.to_le_bytes());
        b[6] = self.ty as u8;
        b[7] = 0;
        b[8..12].copy_from_slice(&self.credits.to_le_bytes());
        b[12..16].copy_from_slice(&self.nob.to_le_bytes());
        b[16..24].copy_from_slice(&self.cookie.to_le_bytes());
        b[24..28].copy_from_slice(&self.status.to_le_bytes());
        b[28..32].copy_from_slice(&self.nfrags.to_le_bytes());
    }

    /// Decodes and checks the header of a received message of `got` bytes.
    pub fn decode(b: &[u8], got: usize) -> Result<MsgHdr, ProtoError> {
        let got = got.min(b.len());
        if got < MSG_HDR {
            return Err(ProtoError::Short { got, need: MSG_HDR });
        }
        let magic = u32_at(b, 0);
        if magic != MAGIC {
            return Err(ProtoError::Magic(magic));
        }
        let v = u16::from_le_bytes([b[4], b[5]]);
        if v != VERSION {
            return Err(ProtoError::Version(v));
        }
        let ty = MsgType::from_u8(b[6]).ok_or(ProtoError::Type(b[6]))?;
        let h = MsgHdr {
            ty,
            credits: u32_at(b, 8),
            nob: u32_at(b, 12),
            cookie: u64_at(b, 16),
            status: u32_at(b, 24) as i32,
            nfrags: u32_at(b, 28),
        };
        if h.nob as usize != got {
            return Err(ProtoError::Length { nob: h.nob, got });
        }
        let need = match ty {
            MsgType::Immediate | MsgType::PutReq => MSG_HDR + HDR_SIZE,
            MsgType::PutAck => MSG_HDR + (h.nfrags as usize).saturating_mul(FRAG_SIZE),
            _ => MSG_HDR,
        };
        if got < need || (ty == MsgType::PutAck && got != need) {
            return Err(ProtoError::Short { got, need });
        }
        Ok(h)
    }
}

/// Decodes the LNet header of an IMMEDIATE or PUT_REQ.
pub fn lnet_hdr(b: &[u8], max_payload: u32) -> Result<LnetHdr, ProtoError> {
    let s = b.get(MSG_HDR..MSG_HDR + HDR_SIZE).ok_or(ProtoError::Short { got: b.len(), need: MSG_HDR + HDR_SIZE })?;
    LnetHdr::decode(s, max_payload).map_err(|e| ProtoError::Lnet(e.to_string()))
}

/// Writes fragment `i` of a PUT_ACK.
pub fn put_frag(b: &mut [u8], i: usize, f: Frag) {
    let o = MSG_HDR + i * FRAG_SIZE;
    b[o..o + 8].copy_from_slice(&f.addr.to_le_bytes());
    b[o + 8..o + 12].copy_from_slice(&f.len.to_le_bytes());
    b[o + 12..o + 16].copy_from_slice(&f.rkey.to_le_bytes());
}

/// Reads the fragments of a decoded PUT_ACK.
pub fn frags(b: &[u8], h: &MsgHdr) -> Vec<Frag> {
    (0..h.nfrags as usize)
        .map(|i| {
            let o = MSG_HDR + i * FRAG_SIZE;
            Frag { addr: u64_at(b, o), len: u32_at(b, o + 8), rkey: u32_at(b, o + 12) }
        })
        .collect()
}

/// Connection parameters carried in the connect request and its accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnParams {
    /// The sender of this request or reply.
    pub src: Nid,
    /// Who it is meant for.
    pub dst: Nid,
    /// Receive buffers (credits) each side posts.
    pub queue_depth: u16,
    /// Size of every message buffer.
    pub msg_size: u32,
    /// Changes at each start of the sender.
    pub incarnation: u64,
}

/// Encoded [`ConnParams`] size (fits rdma_cm's 56-byte RC connect limit).
pub const CONN_PARAMS_SIZE: usize = 36;

impl ConnParams {
    /// Encodes for private data.
    pub fn encode(&self) -> [u8; CONN_PARAMS_SIZE] {
        let mut b = [0u8; CONN_PARAMS_SIZE];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..6].copy_from_slice(&VERSION.to_le_bytes());
        b[6..8].copy_from_slice(&self.queue_depth.to_le_bytes());
        b[8..12].copy_from_slice(&self.msg_size.to_le_bytes());
        b[12..20].copy_from_slice(&self.src.to_u64().to_le_bytes());
        b[20..28].copy_from_slice(&self.dst.to_u64().to_le_bytes());
        b[28..36].copy_from_slice(&self.incarnation.to_le_bytes());
        b
    }

    /// Decodes private data (which may carry trailing padding).
    pub fn decode(b: &[u8]) -> Result<ConnParams, String> {
        if b.len() < CONN_PARAMS_SIZE {
            return Err(format!("connection parameters too short ({} bytes)", b.len()));
        }
        if u32_at(b, 0) != MAGIC {
            return Err(format!("bad magic {:#010x}", u32_at(b, 0)));
        }
        let v = u16::from_le_bytes([b[4], b[5]]);
        if v != VERSION {
            return Err(format!("unsupported version {v}"));
        }
        let nid = |o| Nid::from_u64(u64_at(b, o)).ok_or_else(|| format!("undecodable NID {:#x}", u64_at(b, o)));
        Ok(ConnParams {
            queue_depth: u16::from_le_bytes([b[6], b[7]]),
            msg_size: u32_at(b, 8),
            src: nid(12)?,
            dst: nid(20)?,
            incarnation: u64_at(b, 28),
        })
    }
}

/// Why an acceptor rejected a connection (carried in the reject's private data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// Bad magic/version or undecodable parameters.
    Protocol = 1,
    /// The request names another NID.
    WrongNid = 2,
    /// The claimed source NID does not match the connection's address.
    WrongSource = 3,
    /// Message sizes or queue depths cannot work together.
    Params = 4,
    /// The acceptor is shutting down.
    Shutdown = 5,
    /// Out of resources (QP, memory).
    NoResources = 6,
}

impl RejectReason {
    /// Encodes for the reject's private data.
    pub fn encode(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..6].copy_from_slice(&VERSION.to_le_bytes());
        b[6] = self as u8;
        b
    }

    /// Decodes a reject's private data; `None` when it is not ours
    /// (e.g. a reject from the kernel: no listener, timeout).
    pub fn decode(b: &[u8]) -> Option<RejectReason> {
        if b.len() < 8 || u32_at(b, 0) != MAGIC {
            return None;
        }
        Some(match b[6] {
            1 => RejectReason::Protocol,
            2 => RejectReason::WrongNid,
            3 => RejectReason::WrongSource,
            4 => RejectReason::Params,
            5 => RejectReason::Shutdown,
            6 => RejectReason::NoResources,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_garbage() {
        let mut b = vec![0u8; MSG_HDR + 2 * FRAG_SIZE];
        let h = MsgHdr { ty: MsgType::PutAck, credits: 3, nob: b.len() as u32, cookie: 77, status: -5, nfrags: 2 };
        h.encode(&mut b);
        put_frag(&mut b, 0, Frag { addr: 0x1000, len: 4096, rkey: 9 });
        put_frag(&mut b, 1, Frag { addr: 0x9000, len: 10, rkey: 11 });
        let d = MsgHdr::decode(&b, b.len()).unwrap();
        assert_eq!(d, h);
        assert_eq!(frags(&b, &d)[1], Frag { addr: 0x9000, len: 10, rkey: 11 });
        assert!(matches!(MsgHdr::decode(&b, 10), Err(ProtoError::Short { .. })));
        assert!(matches!(MsgHdr::decode(&b, b.len() - 1), Err(ProtoError::Length { .. })));
        b[6] = 99;
        assert_eq!(MsgHdr::decode(&b, b.len()), Err(ProtoError::Type(99)));
        b[0] = 0;
        assert!(matches!(MsgHdr::decode(&b, b.len()), Err(ProtoError::Magic(_))));
    }

    #[test]
    fn nfrags_cannot_overrun() {
        let mut b = vec![0u8; MSG_HDR];
        let h = MsgHdr { ty: MsgType::PutAck, credits: 0, nob: MSG_HDR as u32, cookie: 0, status: 0, nfrags: u32::MAX };
        h.encode(&mut b);
        assert!(MsgHdr::decode(&b, b.len()).is_err());
    }

    #[test]
    fn conn_params_round_trip() {
        let p = ConnParams {
            src: "10.11.0.1@o2ib".parse().unwrap(),
            dst: "10.11.0.2@o2ib".parse().unwrap(),
            queue_depth: 8,
            msg_size: 20480,
            incarnation: 5,
        };
        let mut pad = p.encode().to_vec();
        pad.extend_from_slice(&[0; 20]);
        assert_eq!(ConnParams::decode(&pad), Ok(p));
        assert!(ConnParams::decode(&pad[..10]).is_err());
        assert_eq!(RejectReason::decode(&RejectReason::WrongNid.encode()), Some(RejectReason::WrongNid));
        assert_eq!(RejectReason::decode(&[0; 8]), None);
    }
}
