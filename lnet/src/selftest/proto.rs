//! The selftest wire format and the bulk data pattern.
//!
//! Owns the fixed 64-byte little-endian request and reply that both the
//! LNet path and the raw TCP baseline carry, and the pattern written into
//! bulk pages when `--check` is on. Decoding never panics: bytes from the
//! network that do not parse are an error naming what is wrong.
//!
//! ```text
//! request:  0 u32 magic "LSTQ"   4 u16 version   6 u16 op
//!           8 u64 xid (reply match bits)   16 u64 bulk match bits
//!          24 u32 reply portal   28 u32 bulk portal   32 u32 size   36 u32 flags
//!          40 u64 pattern seed   48..64 zero
//! reply:    0 u32 magic "LSTR"   4 u16 version   6 u16 op
//!           8 u64 xid   16 i32 status (0 or negative errno)   20 u32 size moved
//!          24 u64 server time the request arrived   32 u64 server time the reply left
//!          (wall-clock ns, for the latency breakdown)   40..64 zero
//! ```

use crate::md::MdBuffer;
use crate::wire::{u16_at, u32_at, u64_at};

/// Size of a request and of a reply on the wire.
pub const MSG_SIZE: usize = 64;
const REQ_MAGIC: u32 = u32::from_le_bytes(*b"LSTQ");
const REP_MAGIC: u32 = u32::from_le_bytes(*b"LSTR");
const VERSION: u16 = 1;
/// Request flag: fill or verify the bulk data pattern.
pub const FLAG_CHECK: u32 = 1;
/// Largest bulk a request may ask for (the default LNet `max_payload`).
pub const MAX_BULK: u32 = 4 << 20;

/// Reply status for a bulk whose bytes did not match the pattern (-EBADMSG).
pub const STATUS_BAD_DATA: i32 = -74;
/// Reply status for a bulk transfer that failed (-EIO).
pub const STATUS_IO: i32 = -5;
/// Reply status for a request the server cannot serve (-EINVAL).
pub const STATUS_INVALID: i32 = -22;
/// Reply status when the server has no pages left (-ENOMEM).
pub const STATUS_NOMEM: i32 = -12;

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A small round trip.
    Ping,
    /// Client to server bulk: the server GETs the client's pages.
    BrwWrite,
    /// Server to client bulk: the server PUTs into the client's pages.
    BrwRead,
}

impl Op {
    fn code(self) -> u16 {
        match self {
            Op::Ping => 1,
            Op::BrwWrite => 2,
            Op::BrwRead => 3,
        }
    }

    fn from_code(c: u16) -> Option<Op> {
        match c {
            1 => Some(Op::Ping),
            2 => Some(Op::BrwWrite),
            3 => Some(Op::BrwRead),
            _ => None,
        }
    }

    /// True for the bulk operations.
    pub fn is_bulk(self) -> bool {
        self != Op::Ping
    }
}

/// A selftest request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// The operation.
    pub op: Op,
    /// Request id; the reply is PUT with these match bits.
    pub xid: u64,
    /// Match bits of the client's bulk MD.
    pub bulk_bits: u64,
    /// Portal the client's reply MD waits on.
    pub reply_portal: u32,
    /// Portal the client's bulk MD waits on.
    pub bulk_portal: u32,
    /// Bulk bytes (0 for ping).
    pub size: u32,
    /// `FLAG_*`.
    pub flags: u32,
    /// Seed of the data pattern.
    pub seed: u64,
}

/// A selftest reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The operation answered.
    pub op: Op,
    /// The request's xid.
    pub xid: u64,
    /// 0 or a negative errno.
    pub status: i32,
    /// Bulk bytes the server moved.
    pub size: u32,
    /// Wall-clock ns when the server saw the request (0: unknown).
    pub t_in_ns: u64,
    /// Wall-clock ns when the server sent the reply (0: unknown).
    pub t_out_ns: u64,
}

fn head(b: &[u8], magic: u32, what: &str) -> Result<Op, String> {
    if b.len() < MSG_SIZE {
        return Err(format!("{what} of {} bytes is shorter than {MSG_SIZE}", b.len()));
    }
    let m = u32_at(b, 0);
    if m != magic {
        return Err(format!("{what} has bad magic {m:#010x}"));
    }
    let v = u16_at(b, 4);
    if v != VERSION {
        return Err(format!("{what} has version {v}, expected {VERSION}"));
    }
    let c = u16_at(b, 6);
    Op::from_code(c).ok_or_else(|| format!("{what} has unknown op {c}"))
}

impl Request {
    /// The wire form.
    pub fn encode(&self) -> [u8; MSG_SIZE] {
        let mut b = [0u8; MSG_SIZE];
        b[0..4].copy_from_slice(&REQ_MAGIC.to_le_bytes());
        b[4..6].copy_from_slice(&VERSION.to_le_bytes());
        b[6..8].copy_from_slice(&self.op.code().to_le_bytes());
        b[8..16].copy_from_slice(&self.xid.to_le_bytes());
        b[16..24].copy_from_slice(&self.bulk_bits.to_le_bytes());
        b[24..28].copy_from_slice(&self.reply_portal.to_le_bytes());
        b[28..32].copy_from_slice(&self.bulk_portal.to_le_bytes());
        b[32..36].copy_from_slice(&self.size.to_le_bytes());
        b[36..40].copy_from_slice(&self.flags.to_le_bytes());
        b[40..48].copy_from_slice(&self.seed.to_le_bytes());
        b
    }

    /// Parses and validates a request.
    pub fn decode(b: &[u8]) -> Result<Request, String> {
        let op = head(b, REQ_MAGIC, "request")?;
        let r = Request {
            op,
            xid: u64_at(b, 8),
            bulk_bits: u64_at(b, 16),
            reply_portal: u32_at(b, 24),
            bulk_portal: u32_at(b, 28),
            size: u32_at(b, 32),
            flags: u32_at(b, 36),
            seed: u64_at(b, 40),
        };
        if op.is_bulk() && (r.size == 0 || r.size > MAX_BULK) {
            return Err(format!("bulk size {} is not in 1..={MAX_BULK}", r.size));
        }
        Ok(r)
    }

    /// True when the data pattern is to be written and verified.
    pub fn check(&self) -> bool {
        self.flags & FLAG_CHECK != 0
    }
}

impl Reply {
    /// The wire form.
    pub fn encode(&self) -> [u8; MSG_SIZE] {
        let mut b = [0u8; MSG_SIZE];
        b[0..4].copy_from_slice(&REP_MAGIC.to_le_bytes());
        b[4..6].copy_from_slice(&VERSION.to_le_bytes());
        b[6..8].copy_from_slice(&self.op.code().to_le_bytes());
        b[8..16].copy_from_slice(&self.xid.to_le_bytes());
        b[16..20].copy_from_slice(&self.status.to_le_bytes());
        b[20..24].copy_from_slice(&self.size.to_le_bytes());
        b[24..32].copy_from_slice(&self.t_in_ns.to_le_bytes());
        b[32..40].copy_from_slice(&self.t_out_ns.to_le_bytes());
        b
    }

    /// Parses and validates a reply.
    pub fn decode(b: &[u8]) -> Result<Reply, String> {
        let op = head(b, REP_MAGIC, "reply")?;
        Ok(Reply {
            op,
            xid: u64_at(b, 8),
            status: u32_at(b, 16) as i32,
            size: u32_at(b, 20),
            t_in_ns: u64_at(b, 24),
            t_out_ns: u64_at(b, 32),
        })
    }

    /// The reply to `req` with `status`.
    pub fn to(req: &Request, status: i32) -> Reply {
        Reply {
            op: req.op,
            xid: req.xid,
            status,
            size: if status == 0 { req.size } else { 0 },
            t_in_ns: 0,
            t_out_ns: 0,
        }
    }

    /// With the server's timestamps (`t_out_ns` is now).
    pub fn stamped(mut self, t_in_ns: u64) -> Reply {
        self.t_in_ns = t_in_ns;
        self.t_out_ns = wall_ns();
        self
    }
}

/// Wall-clock nanoseconds: comparable between processes of one machine,
/// for the latency breakdown only.
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// A human name for a reply status.
pub fn status_name(status: i32) -> &'static str {
    match status {
        0 => "ok",
        STATUS_BAD_DATA => "bulk data did not match the pattern",
        STATUS_IO => "bulk transfer failed",
        STATUS_INVALID => "invalid request",
        STATUS_NOMEM => "server out of pages",
        _ => "unknown error",
    }
}

// ---- data pattern --------------------------------------------------------

/// The 8 pattern bytes of the word at byte offset `off` (a multiple of 8).
fn word(seed: u64, off: usize) -> [u8; 8] {
    ((off as u64) ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29).to_le_bytes()
}

/// Writes the pattern for `seed` into `buf`, whose first byte sits at
/// offset `base` (a multiple of 8) of the whole transfer.
pub fn fill(buf: &mut [u8], base: usize, seed: u64) {
    for (i, c) in buf.chunks_mut(8).enumerate() {
        let w = word(seed, base + i * 8);
        c.copy_from_slice(&w[..c.len()]);
    }
}

/// True when `buf`, at offset `base` (a multiple of 8) of the transfer,
/// holds the pattern for `seed`.
pub fn verify(buf: &[u8], base: usize, seed: u64) -> bool {
    buf.chunks(8).enumerate().all(|(i, c)| word(seed, base + i * 8)[..c.len()] == *c)
}

/// Fills the first `len` bytes of an MD buffer with the pattern.
pub fn fill_md(buf: &mut MdBuffer, len: usize, seed: u64) {
    let mut off = 0;
    for mut s in buf.io_slices_mut(0, len) {
        let n = s.len();
        fill(&mut s[..], off, seed);
        off += n;
    }
}

/// True when the first `len` bytes of an MD buffer hold the pattern.
pub fn verify_md(buf: &MdBuffer, len: usize, seed: u64) -> bool {
    if buf.len() < len {
        return false;
    }
    let mut off = 0;
    for s in buf.io_slices(0, len) {
        if !verify(&s[..], off, seed) {
            return false;
        }
        off += s.len();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::PagePool;

    #[test]
    fn request_and_reply_round_trip() {
        let q = Request {
            op: Op::BrwRead,
            xid: 0x1234_5678_9abc,
            bulk_bits: 77,
            reply_portal: 51,
            bulk_portal: 52,
            size: 1 << 20,
            flags: FLAG_CHECK,
            seed: 99,
        };
        assert_eq!(Request::decode(&q.encode()), Ok(q));
        let r = Reply::to(&q, STATUS_BAD_DATA);
        assert_eq!(Reply::decode(&r.encode()), Ok(r));
        assert!(Reply::decode(&q.encode()).is_err(), "a request is not a reply");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(Request::decode(&[0u8; 10]).is_err());
        assert!(Request::decode(&[0xffu8; 64]).is_err());
        let mut b = Request {
            op: Op::BrwWrite,
            xid: 1,
            bulk_bits: 1,
            reply_portal: 0,
            bulk_portal: 0,
            size: MAX_BULK + 1,
            flags: 0,
            seed: 0,
        }
        .encode();
        assert!(Request::decode(&b).is_err(), "oversized bulk");
        b[6] = 9;
        assert!(Request::decode(&b).is_err(), "unknown op");
    }

    #[test]
    fn pattern_matches_across_pages_and_catches_changes() {
        let pool = PagePool::new(0, 4, 4);
        let len = 3 * 4096 - 5;
        let mut b = MdBuffer::from_pages_len(pool.alloc(3).unwrap(), len);
        fill_md(&mut b, len, 42);
        assert!(verify_md(&b, len, 42));
        assert!(!verify_md(&b, len, 43));
        let mut flat = vec![0u8; len];
        b.read_at(0, &mut flat);
        assert!(verify(&flat, 0, 42), "page-wise and flat patterns agree");
        b.write_at(5000, &[0]);
        assert!(!verify_md(&b, len, 42));
    }
}
