//! The LNet message header, as it travels between nodes.
//!
//! Owns the fixed 64-byte little-endian layout, its typed form
//! ([`LnetHdr`], [`MsgBody`]) and the validating decoder every LND uses on
//! bytes from the network. Decoding never panics: any malformed header is a
//! [`WireError`]. Knows nothing of sockets or MDs.
//!
//! ```text
//!  0  u32 magic "SHLN"        4  u16 version       6  u8 type   7  u8 flags
//!  8  u64 src nid            16  u64 dst nid
//! 24  u32 portal             28  u32 payload length (bytes after the header)
//! 32  u64 match bits         40  u32 offset        44  u32 aux
//! 48  u64 hdr data           56  u64 wmd cookie
//! ```
//! `aux` is the sink length of a GET, the matched length of an ACK and the
//! status (negative errno) of a REPLY. `wmd` is the initiator's MD cookie
//! that an ACK or REPLY must name.

use crate::nid::Nid;

/// Header size on the wire.
pub const HDR_SIZE: usize = 64;
/// "SHLN", little endian.
pub const MAGIC: u32 = 0x4e4c_4853;
/// Wire version.
pub const VERSION: u16 = 1;
/// Hard ceiling on any payload, whatever the configuration says.
pub const MAX_PAYLOAD_HARD: u32 = 64 << 20;

const T_PUT: u8 = 1;
const T_ACK: u8 = 2;
const T_GET: u8 = 3;
const T_REPLY: u8 = 4;
const T_HELLO: u8 = 5;
const F_ACK_REQ: u8 = 1;

/// A decoded header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LnetHdr {
    /// The sender.
    pub src: Nid,
    /// The destination.
    pub dst: Nid,
    /// Bytes of payload that follow the header.
    pub payload_len: u32,
    /// The message itself.
    pub body: MsgBody,
}

/// The message types and their fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgBody {
    /// Data for the target's MD matched on `portal`/`match_bits`.
    Put {
        /// Portal index.
        portal: u32,
        /// Match bits.
        match_bits: u64,
        /// Remote offset (used when the target MD manages offsets remotely).
        offset: u32,
        /// Out-of-band data for the target's event.
        hdr_data: u64,
        /// The initiator's MD to ACK, when an ACK is wanted.
        ack_wmd: Option<u64>,
    },
    /// A request for `sink_len` bytes of the target's matched MD.
    Get {
        /// Portal index.
        portal: u32,
        /// Match bits.
        match_bits: u64,
        /// Remote offset.
        offset: u32,
        /// Room in the initiator's MD.
        sink_len: u32,
        /// The initiator's MD the REPLY lands in.
        reply_wmd: u64,
    },
    /// The data answering a GET (status 0), or why there is none.
    Reply {
        /// The initiator's MD.
        wmd: u64,
        /// 0 or a negative errno (no match on the target).
        status: i32,
    },
    /// Acknowledges a PUT.
    Ack {
        /// The initiator's MD.
        wmd: u64,
        /// Match bits of the acknowledged PUT.
        match_bits: u64,
        /// Bytes the target accepted.
        mlength: u32,
    },
    /// Connection handshake (LND use; never reaches the core).
    Hello {
        /// The sender's incarnation (changes at each start).
        incarnation: u64,
    },
}

/// Why a header was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer than [`HDR_SIZE`] bytes.
    #[error("short header: {0} bytes")]
    Short(usize),
    /// Not our magic: garbage or another protocol.
    #[error("bad magic {0:#010x}")]
    BadMagic(u32),
    /// A version we do not speak.
    #[error("unsupported version {0}")]
    BadVersion(u16),
    /// An unknown message type.
    #[error("unknown message type {0}")]
    BadType(u8),
    /// A NID with an unknown network type.
    #[error("undecodable NID {0:#018x}")]
    BadNid(u64),
    /// Payload longer than allowed.
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Claimed length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// A message type that carries no payload claimed one.
    #[error("{0} message must not carry a payload")]
    UnexpectedPayload(&'static str),
}

/// Reads a little-endian u16 at `o` (the caller checked the length).
pub(crate) fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
/// Reads a little-endian u32 at `o` (the caller checked the length).
pub(crate) fn u32_at(b: &[u8], o: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[o..o + 4]);
    u32::from_le_bytes(a)
}
/// Reads a little-endian u64 at `o` (the caller checked the length).
pub(crate) fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

impl LnetHdr {
    /// Encodes into the fixed layout.
    pub fn encode(&self) -> [u8; HDR_SIZE] {
        let mut b = [0u8; HDR_SIZE];
        let (ty, flags, portal, match_bits, offset, aux, hdr_data, wmd) = match self.body {
            MsgBody::Put { portal, match_bits, offset, hdr_data, ack_wmd } => (
                T_PUT,
                if ack_wmd.is_some() { F_ACK_REQ } else { 0 },
                portal,
                match_bits,
                offset,
                0,
                hdr_data,
                ack_wmd.unwrap_or(0),
            ),
            MsgBody::Get { portal, match_bits, offset, sink_len, reply_wmd } => {
                (T_GET, 0, portal, match_bits, offset, sink_len, 0, reply_wmd)
            }
            MsgBody::Reply { wmd, status } => (T_REPLY, 0, 0, 0, 0, status as u32, 0, wmd),
            MsgBody::Ack { wmd, match_bits, mlength } => (T_ACK, 0, 0, match_bits, 0, mlength, 0, wmd),
            MsgBody::Hello { incarnation } => (T_HELLO, 0, 0, 0, 0, 0, incarnation, 0),
        };
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..6].copy_from_slice(&VERSION.to_le_bytes());
        b[6] = ty;
        b[7] = flags;
        b[8..16].copy_from_slice(&self.src.to_u64().to_le_bytes());
        b[16..24].copy_from_slice(&self.dst.to_u64().to_le_bytes());
        b[24..28].copy_from_slice(&portal.to_le_bytes());
        b[28..32].copy_from_slice(&self.payload_len.to_le_bytes());
        b[32..40].copy_from_slice(&match_bits.to_le_bytes());
        b[40..44].copy_from_slice(&offset.to_le_bytes());
        b[44..48].copy_from_slice(&aux.to_le_bytes());
        b[48..56].copy_from_slice(&hdr_data.to_le_bytes());
        b[56..64].copy_from_slice(&wmd.to_le_bytes());
        b
    }

    /// Decodes and validates a header; `max_payload` bounds the payload length.
    pub fn decode(b: &[u8], max_payload: u32) -> Result<LnetHdr, WireError> {
        if b.len() < HDR_SIZE {
            return Err(WireError::Short(b.len()));
        }
        let magic = u32_at(b, 0);
        if magic != MAGIC {
            return Err(WireError::BadMagic(magic));
        }
        let version = u16_at(b, 4);
        if version != VERSION {
            return Err(WireError::BadVersion(version));
        }
        let nid = |o| {
            let v = u64_at(b, o);
            Nid::from_u64(v).ok_or(WireError::BadNid(v))
        };
        let src = nid(8)?;
        let dst = nid(16)?;
        let portal = u32_at(b, 24);
        let payload_len = u32_at(b, 28);
        let max = max_payload.min(MAX_PAYLOAD_HARD);
        if payload_len > max {
            return Err(WireError::TooLong { len: payload_len, max });
        }
        let match_bits = u64_at(b, 32);
        let offset = u32_at(b, 40);
        let aux = u32_at(b, 44);
        let hdr_data = u64_at(b, 48);
        let wmd = u64_at(b, 56);
        let no_payload = |name| {
            if payload_len == 0 { Ok(()) } else { Err(WireError::UnexpectedPayload(name)) }
        };
        let body = match b[6] {
            T_PUT => {
                MsgBody::Put { portal, match_bits, offset, hdr_data, ack_wmd: (b[7] & F_ACK_REQ != 0).then_some(wmd) }
            }
            T_GET => {
                no_payload("GET")?;
                MsgBody::Get { portal, match_bits, offset, sink_len: aux, reply_wmd: wmd }
            }
            T_REPLY => MsgBody::Reply { wmd, status: aux as i32 },
            T_ACK => {
                no_payload("ACK")?;
                MsgBody::Ack { wmd, match_bits, mlength: aux }
            }
            T_HELLO => {
                no_payload("HELLO")?;
                MsgBody::Hello { incarnation: hdr_data }
            }
            t => return Err(WireError::BadType(t)),
        };
        Ok(LnetHdr { src, dst, payload_len, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nid(s: &str) -> Nid {
        s.parse().unwrap()
    }

    #[test]
    fn golden_put_bytes() {
        let h = LnetHdr {
            src: nid("10.0.0.1@tcp"),
            dst: nid("10.0.0.2@tcp1"),
            payload_len: 4096,
            body: MsgBody::Put {
                portal: 4,
                match_bits: 0x1122_3344_5566_7788,
                offset: 8,
                hdr_data: 0xdead_beef,
                ack_wmd: Some(0x99),
            },
        };
        let b = h.encode();
        #[rustfmt::skip]
        let golden: [u8; HDR_SIZE] = [
            0x53, 0x48, 0x4c, 0x4e, 0x01, 0x00, 0x01, 0x01,
            0x01, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x02, 0x00,
            0x02, 0x00, 0x00, 0x0a, 0x01, 0x00, 0x02, 0x00,
            0x04, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00,
            0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,
            0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0xef, 0xbe, 0xad, 0xde, 0x00, 0x00, 0x00, 0x00,
            0x99, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(b, golden);
        assert_eq!(LnetHdr::decode(&b, 1 << 20).unwrap(), h);
    }

    #[test]
    fn rejects_garbage_and_absurd_lengths() {
        let h =
            LnetHdr { src: Nid::LO, dst: Nid::LO, payload_len: 2 << 20, body: MsgBody::Reply { wmd: 1, status: 0 } };
        let mut b = h.encode();
        assert!(matches!(LnetHdr::decode(&b, 1 << 20), Err(WireError::TooLong { .. })));
        b[0] = b'G';
        assert!(matches!(LnetHdr::decode(&b, 1 << 20), Err(WireError::BadMagic(_))));
        assert!(matches!(LnetHdr::decode(&b[..10], 1 << 20), Err(WireError::Short(10))));
        let mut g = LnetHdr {
            payload_len: 5,
            body: MsgBody::Get { portal: 1, match_bits: 2, offset: 0, sink_len: 9, reply_wmd: 3 },
            ..h
        }
        .encode();
        assert!(matches!(LnetHdr::decode(&g, 1 << 20), Err(WireError::UnexpectedPayload("GET"))));
        g[6] = 77;
        assert!(matches!(LnetHdr::decode(&g, 1 << 20), Err(WireError::BadType(77))));
    }

    fn arb_nid() -> impl Strategy<Value = Nid> {
        (0u8..3, any::<u16>(), any::<u32>()).prop_map(|(k, n, a)| Nid {
            net: crate::nid::Net::new(
                [crate::nid::NetType::Lo, crate::nid::NetType::Tcp, crate::nid::NetType::O2ib][k as usize],
                n,
            ),
            addr: a,
        })
    }

    fn arb_body() -> impl Strategy<Value = (MsgBody, bool)> {
        prop_oneof![
            (any::<u32>(), any::<u64>(), any::<u32>(), any::<u64>(), proptest::option::of(any::<u64>())).prop_map(
                |(portal, match_bits, offset, hdr_data, ack_wmd)| (
                    MsgBody::Put { portal, match_bits, offset, hdr_data, ack_wmd },
                    true
                )
            ),
            (any::<u32>(), any::<u64>(), any::<u32>(), any::<u32>(), any::<u64>()).prop_map(
                |(portal, match_bits, offset, sink_len, reply_wmd)| (
                    MsgBody::Get { portal, match_bits, offset, sink_len, reply_wmd },
                    false
                )
            ),
            (any::<u64>(), any::<i32>()).prop_map(|(wmd, status)| (MsgBody::Reply { wmd, status }, true)),
            (any::<u64>(), any::<u64>(), any::<u32>())
                .prop_map(|(wmd, match_bits, mlength)| (MsgBody::Ack { wmd, match_bits, mlength }, false)),
            any::<u64>().prop_map(|incarnation| (MsgBody::Hello { incarnation }, false)),
        ]
    }

    proptest! {
        #[test]
        fn round_trips(src in arb_nid(), dst in arb_nid(), (body, payload) in arb_body(), len in 0u32..=(1 << 20)) {
            let h = LnetHdr { src, dst, payload_len: if payload { len } else { 0 }, body };
            prop_assert_eq!(LnetHdr::decode(&h.encode(), 1 << 20).unwrap(), h);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = LnetHdr::decode(&bytes, 1 << 20);
        }

        #[test]
        fn mutated_headers_never_panic(idx in 0usize..HDR_SIZE, val in any::<u8>()) {
            let mut b = LnetHdr { src: Nid::LO, dst: Nid::LO, payload_len: 0, body: MsgBody::Hello { incarnation: 1 } }.encode();
            b[idx] = val;
            let _ = LnetHdr::decode(&b, 1 << 20);
        }
    }
}
