//! Bulk descriptors and the bulk read/write bodies.
//!
//! Owns: [`BulkDesc`], which a request carries to tell the server where the
//! client's pages are (match bits on the client's bulk portal, length) and,
//! when checksums are on, the CRC32C of a write; and the bodies of the
//! generic bulk RPCs ([`BrwBody`], [`BrwReply`]) that the echo service uses
//! now and the OST's BRW will grow from.
//!
//! Must not: move bytes or compute checksums (the driver does both).

use rkyv::{Archive, Deserialize, Serialize};

/// Checksum type bit for CRC32C (Lustre's `OBD_CKSUM_CRC32C`).
pub const CKSUM_CRC32C: u32 = 0x04;

/// Where a request's bulk pages are on the client.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct BulkDesc {
    /// Match bits of the client's bulk MD (the request's xid, as in Lustre).
    pub match_bits: u64,
    /// Bytes to move.
    pub len: u32,
    /// 0, or [`CKSUM_CRC32C`] when the connection negotiated checksums.
    pub cksum_type: u32,
    /// For writes: the client's checksum of the pages (0 for reads).
    pub cksum: u32,
}

impl BulkDesc {
    /// Whether the transfer is checksummed.
    pub fn checksummed(&self) -> bool {
        self.cksum_type & CKSUM_CRC32C != 0
    }
}

impl ArchivedBulkDesc {
    /// The owned descriptor (every field is plain data).
    pub fn to_native(&self) -> BulkDesc {
        BulkDesc {
            match_bits: self.match_bits.to_native(),
            len: self.len.to_native(),
            cksum_type: self.cksum_type.to_native(),
            cksum: self.cksum.to_native(),
        }
    }
}

/// A bulk read or write request: a byte offset in the target object and
/// the client's pages.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct BrwBody {
    /// Object offset in bytes.
    pub offset: u64,
    /// The client's pages.
    pub bulk: BulkDesc,
}

/// The reply to a bulk read or write.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct BrwReply {
    /// Bytes moved.
    pub len: u32,
    /// 0 or [`CKSUM_CRC32C`].
    pub cksum_type: u32,
    /// For reads: the server's checksum of the pages it sent.
    pub cksum: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archived_layout_is_pinned() {
        assert_eq!(size_of::<ArchivedBulkDesc>(), 24);
        assert_eq!(size_of::<ArchivedBrwBody>(), 32);
        assert_eq!(size_of::<ArchivedBrwReply>(), 12);
        let d = BulkDesc { match_bits: 0x0102_0304_0506_0708, len: 4096, cksum_type: CKSUM_CRC32C, cksum: 0xaabb_ccdd };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&d).expect("archives");
        #[rustfmt::skip]
        let golden: [u8; 24] = [
            8, 7, 6, 5, 4, 3, 2, 1,   0, 0x10, 0, 0,   4, 0, 0, 0,
            0xdd, 0xcc, 0xbb, 0xaa,   0, 0, 0, 0,
        ];
        assert_eq!(&bytes[..], &golden[..]);
        let back = rkyv::access::<ArchivedBulkDesc, rkyv::rancor::Error>(&bytes).expect("valid");
        assert_eq!(back.to_native(), d);
    }
}
