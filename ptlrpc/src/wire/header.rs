//! The fixed little-endian message header, encoded and decoded by hand.
//!
//! Owns: [`Header`], its byte layout (pinned by golden-bytes tests) and the
//! checks a header must pass on its own: length, magic, version, kind,
//! flags, reserved bytes.
//!
//! Must not: look at the body (that is `message`), or panic on any input.
//!
//! Layout (offsets in bytes, all integers little-endian):
//!
//! | off | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic [`MAGIC`] |
//! | 4 | 4 | version [`VERSION`] |
//! | 8 | 4 | kind ([`MsgKind`]) |
//! | 12 | 4 | opcode |
//! | 16 | 8 | xid |
//! | 24 | 4 | status (negative errno, i32) |
//! | 28 | 4 | flags ([`MsgFlags`]) |
//! | 32 | 4 | conn_cnt |
//! | 36 | 4 | body_len |
//! | 40 | 8 | export handle cookie |
//! | 48 | 8 | transno |
//! | 56 | 8 | last_committed |
//! | 64 | 4 | service_time (µs, saturating) |
//! | 68 | 4 | timeout (µs, saturating) |
//! | 72 | 32 | pre_versions\[4\] (u64 each) |
//! | 104 | 32 | jobid (NUL padded) |
//! | 136 | 8 | replied_xid (requests) |
//! | 144 | 2 | tag (modifying requests' reply slot) |
//! | 146 | 14 | reserved, must be zero |
//!
//! [`HEADER_LEN`] is 160, a multiple of 16, so a body that follows a header
//! in a 16-aligned buffer is itself aligned for rkyv.

use std::time::Duration;

use super::DecodeError;
use super::flags::{MsgFlags, MsgKind};
use super::ids::{ConnCnt, ExportHandle, JOBID_LEN, JobId, ObjVersion, Transno, Xid};
use super::opcode::Opcode;

/// Magic number: the bytes `"SHNM"` read as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"SHNM");
/// The only header version this build speaks.
pub const VERSION: u32 = 1;
/// Encoded header size in bytes.
pub const HEADER_LEN: usize = 160;
/// Number of pre-op object versions a header carries.
pub const PRE_VERSIONS: usize = 4;

/// A decoded message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Request, reply or error reply.
    pub kind: MsgKind,
    /// The raw opcode (checked against the registry by `message`).
    pub opcode: Opcode,
    /// Transfer id; a reply carries its request's xid.
    pub xid: Xid,
    /// 0 or a negative errno.
    pub status: i32,
    /// Message flags.
    pub flags: MsgFlags,
    /// The client's connection count.
    pub conn_cnt: ConnCnt,
    /// Length of the body that follows the header.
    pub body_len: u32,
    /// The export this message belongs to.
    pub handle: ExportHandle,
    /// Transaction number of a modifying request (in replies).
    pub transno: Transno,
    /// The target's last committed transno (in replies).
    pub last_committed: Transno,
    /// Server time spent on the request (replies) or service estimate
    /// (early replies). Microsecond resolution on the wire.
    pub service_time: Duration,
    /// The timeout the client allows (requests) or the extended timeout
    /// (early replies). Microsecond resolution on the wire.
    pub timeout: Duration,
    /// Object versions before a modifying request, for VBR.
    pub pre_versions: [ObjVersion; PRE_VERSIONS],
    /// Job id for jobstats.
    pub jobid: JobId,
    /// Requests: every request of this client's with an xid at or below
    /// it has had its reply (Lustre's `pb_last_xid`: the lowest unreplied
    /// xid minus one); the target frees reply slots up to it.
    pub replied_xid: Xid,
    /// Modifying requests: the reply slot (Lustre's `pb_tag`, 1 up to the
    /// negotiated `max_mod_rpcs`; 0 for other messages). The target keeps
    /// one reply per slot per client for reconstruction.
    pub tag: u16,
}

impl Header {
    /// A header with every field zeroed or empty.
    pub fn new(kind: MsgKind, opcode: Opcode, xid: Xid) -> Header {
        Header {
            kind,
            opcode,
            xid,
            status: 0,
            flags: MsgFlags::EMPTY,
            conn_cnt: ConnCnt(0),
            body_len: 0,
            handle: ExportHandle::NONE,
            transno: Transno(0),
            last_committed: Transno(0),
            service_time: Duration::ZERO,
            timeout: Duration::ZERO,
            pre_versions: [ObjVersion(0); PRE_VERSIONS],
            jobid: JobId::EMPTY,
            replied_xid: Xid(0),
            tag: 0,
        }
    }

    /// Encodes the header. Durations round down to microseconds and saturate
    /// at `u32::MAX` µs (about 71 minutes, past any AT limit).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        put(&mut b, 0, &MAGIC.to_le_bytes());
        put(&mut b, 4, &VERSION.to_le_bytes());
        put(&mut b, 8, &(self.kind as u32).to_le_bytes());
        put(&mut b, 12, &self.opcode.0.to_le_bytes());
        put(&mut b, 16, &self.xid.0.to_le_bytes());
        put(&mut b, 24, &self.status.to_le_bytes());
        put(&mut b, 28, &self.flags.bits().to_le_bytes());
        put(&mut b, 32, &self.conn_cnt.0.to_le_bytes());
        put(&mut b, 36, &self.body_len.to_le_bytes());
        put(&mut b, 40, &self.handle.0.to_le_bytes());
        put(&mut b, 48, &self.transno.0.to_le_bytes());
        put(&mut b, 56, &self.last_committed.0.to_le_bytes());
        put(&mut b, 64, &duration_to_us(self.service_time).to_le_bytes());
        put(&mut b, 68, &duration_to_us(self.timeout).to_le_bytes());
        for (i, v) in self.pre_versions.iter().enumerate() {
            put(&mut b, 72 + 8 * i, &v.0.to_le_bytes());
        }
        put(&mut b, 104, self.jobid.as_bytes());
        put(&mut b, 136, &self.replied_xid.0.to_le_bytes());
        put(&mut b, 144, &self.tag.to_le_bytes());
        b
    }

    /// Decodes the header at the start of `bytes` (which may hold more).
    pub fn decode(bytes: &[u8]) -> Result<Header, DecodeError> {
        let b: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(DecodeError::Short { need: HEADER_LEN, have: bytes.len() })?;
        let magic = u32_at(b, 0);
        if magic != MAGIC {
            return Err(if magic == MAGIC.swap_bytes() { DecodeError::Swabbed } else { DecodeError::BadMagic(magic) });
        }
        let version = u32_at(b, 4);
        if version != VERSION {
            return Err(DecodeError::BadVersion(version));
        }
        if b[146..].iter().any(|&x| x != 0) {
            return Err(DecodeError::Reserved);
        }
        let mut pre_versions = [ObjVersion(0); PRE_VERSIONS];
        for (i, v) in pre_versions.iter_mut().enumerate() {
            *v = ObjVersion(u64_at(b, 72 + 8 * i));
        }
        let mut jobid = [0u8; JOBID_LEN];
        jobid.copy_from_slice(&b[104..104 + JOBID_LEN]);
        Ok(Header {
            kind: MsgKind::from_wire(u32_at(b, 8))?,
            opcode: Opcode(u32_at(b, 12)),
            xid: Xid(u64_at(b, 16)),
            status: i32::from_le_bytes(array_at(b, 24)),
            flags: MsgFlags::from_bits(u32_at(b, 28))?,
            conn_cnt: ConnCnt(u32_at(b, 32)),
            body_len: u32_at(b, 36),
            handle: ExportHandle(u64_at(b, 40)),
            transno: Transno(u64_at(b, 48)),
            last_committed: Transno(u64_at(b, 56)),
            service_time: Duration::from_micros(u64::from(u32_at(b, 64))),
            timeout: Duration::from_micros(u64::from(u32_at(b, 68))),
            pre_versions,
            jobid: JobId::from_bytes(jobid),
            replied_xid: Xid(u64_at(b, 136)),
            tag: u16::from_le_bytes(array_at(b, 144)),
        })
    }
}

fn put(b: &mut [u8; HEADER_LEN], off: usize, v: &[u8]) {
    b[off..off + v.len()].copy_from_slice(v);
}

fn array_at<const N: usize>(b: &[u8; HEADER_LEN], off: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[off..off + N]);
    a
}

fn u32_at(b: &[u8; HEADER_LEN], off: usize) -> u32 {
    u32::from_le_bytes(array_at(b, off))
}

fn u64_at(b: &[u8; HEADER_LEN], off: usize) -> u64 {
    u64::from_le_bytes(array_at(b, off))
}

fn duration_to_us(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const _: () = assert!(HEADER_LEN == 160 && HEADER_LEN.is_multiple_of(16));

    fn sample() -> Header {
        Header {
            kind: MsgKind::Reply,
            opcode: Opcode(400),
            xid: Xid(0x0102_0304_0506_0708),
            status: -71,
            flags: MsgFlags::RESEND | MsgFlags::EARLY_REPLY,
            conn_cnt: ConnCnt(3),
            body_len: 16,
            handle: ExportHandle(0xdead_beef_cafe_f00d),
            transno: Transno(42),
            last_committed: Transno(41),
            service_time: Duration::from_millis(1500),
            timeout: Duration::from_secs(30),
            pre_versions: [ObjVersion(1), ObjVersion(2), ObjVersion(3), ObjVersion(4)],
            jobid: JobId::new("job.7"),
            replied_xid: Xid(0x0a0b),
            tag: 7,
        }
    }

    #[rustfmt::skip]
    const GOLDEN: [u8; HEADER_LEN] = [
        b'S', b'H', b'N', b'M',   1, 0, 0, 0,             // magic, version
        0x68, 0x12, 0, 0,         0x90, 0x01, 0, 0,       // kind 4712, opcode 400
        8, 7, 6, 5, 4, 3, 2, 1,                           // xid
        0xb9, 0xff, 0xff, 0xff,   0x0a, 0, 0, 0,          // status -71, flags
        3, 0, 0, 0,               16, 0, 0, 0,            // conn_cnt, body_len
        0x0d, 0xf0, 0xfe, 0xca, 0xef, 0xbe, 0xad, 0xde,   // handle
        42, 0, 0, 0, 0, 0, 0, 0,                          // transno
        41, 0, 0, 0, 0, 0, 0, 0,                          // last_committed
        0x60, 0xe3, 0x16, 0,      0x80, 0xc3, 0xc9, 0x01, // service 1.5 s, timeout 30 s
        1, 0, 0, 0, 0, 0, 0, 0,   2, 0, 0, 0, 0, 0, 0, 0, // pre_versions
        3, 0, 0, 0, 0, 0, 0, 0,   4, 0, 0, 0, 0, 0, 0, 0,
        b'j', b'o', b'b', b'.', b'7', 0, 0, 0,  0, 0, 0, 0, 0, 0, 0, 0, // jobid
        0, 0, 0, 0, 0, 0, 0, 0,   0, 0, 0, 0, 0, 0, 0, 0,
        0x0b, 0x0a, 0, 0, 0, 0, 0, 0,                     // replied_xid
        7, 0,                                             // tag
        0, 0, 0, 0, 0, 0,   0, 0, 0, 0, 0, 0, 0, 0,       // reserved
    ];

    #[test]
    fn golden_bytes() {
        assert_eq!(sample().encode(), GOLDEN);
        assert_eq!(Header::decode(&GOLDEN), Ok(sample()));
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(Header::decode(&GOLDEN[..100]), Err(DecodeError::Short { need: 160, have: 100 }));
        let mut b = GOLDEN;
        b[0] = b'X';
        assert!(matches!(Header::decode(&b), Err(DecodeError::BadMagic(_))));
        let mut b = GOLDEN;
        b[..4].copy_from_slice(&MAGIC.to_be_bytes());
        assert_eq!(Header::decode(&b), Err(DecodeError::Swabbed));
        let mut b = GOLDEN;
        b[4] = 2;
        assert_eq!(Header::decode(&b), Err(DecodeError::BadVersion(2)));
        let mut b = GOLDEN;
        b[8] = 0;
        assert!(matches!(Header::decode(&b), Err(DecodeError::BadKind(_))));
        let mut b = GOLDEN;
        b[30] = 1;
        assert!(matches!(Header::decode(&b), Err(DecodeError::UnknownFlags(_))));
        let mut b = GOLDEN;
        b[159] = 1;
        assert_eq!(Header::decode(&b), Err(DecodeError::Reserved));
    }

    #[test]
    fn durations_saturate() {
        let mut h = sample();
        h.timeout = Duration::from_secs(1 << 40);
        let back = Header::decode(&h.encode()).ok().map(|h| h.timeout);
        assert_eq!(back, Some(Duration::from_micros(u64::from(u32::MAX))));
    }
}
