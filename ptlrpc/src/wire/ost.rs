//! The OST's request and reply bodies (Lustre's `ost_body`, `obdo`,
//! `niobuf_remote`, `obd_statfs`, in Sheen's shapes).
//!
//! Owns: the name of an OST object ([`OstId`]: sequence and id, Lustre's
//! `ost_id`) and every body the OST service reads or writes —
//! create/precreate ranges in a sequence, object attributes, setattr, punch, bulk read/write with niobufs (offset,
//! length runs laid end to end in one bulk buffer, each with its own
//! CRC32C when checksums are on), sync, statfs and the last object id.
//!
//! CONNECT carries [`super::ConnectData`] (its `target` names the OST);
//! later requests name their export by the header's handle (the import
//! sets it), not in the body.
//!
//! Must not: hold behaviour beyond plain data and size limits; the `ost`
//! crate interprets these, the client builds them.

use rkyv::{Archive, Deserialize, Serialize};

use super::BulkDesc;

/// An OST object's name (Lustre's `ost_id`): the sequence it was created
/// in and its id there (from 1). Each MDT precreates on each OST in a
/// sequence of its own, granted by its sequence server; a used-up
/// sequence is followed by a fresh one, so a name is never reused.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[rkyv(derive(Debug))]
pub struct OstId {
    /// The sequence.
    pub seq: u64,
    /// The id within it.
    pub oid: u64,
}

impl OstId {
    /// Object `oid` of sequence `seq`.
    pub const fn new(seq: u64, oid: u64) -> OstId {
        OstId { seq, oid }
    }

    /// A key that sorts by sequence, then id (big-endian `seq`, `oid`).
    pub fn key(&self) -> [u8; 16] {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&self.seq.to_be_bytes());
        k[8..].copy_from_slice(&self.oid.to_be_bytes());
        k
    }

    /// The id a [`OstId::key`] names (None: not 16 bytes).
    pub fn from_key(k: &[u8]) -> Option<OstId> {
        let seq = u64::from_be_bytes(k.get(..8)?.try_into().ok()?);
        let oid = u64::from_be_bytes(k.get(8..16)?.try_into().ok()?);
        (k.len() == 16).then_some(OstId { seq, oid })
    }
}

impl std::fmt::Display for OstId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}:{:#x}", self.seq, self.oid)
    }
}

impl ArchivedOstId {
    /// The native id.
    pub fn to_native(&self) -> OstId {
        OstId { seq: self.seq.to_native(), oid: self.oid.to_native() }
    }
}

/// Most niobufs one BRW may carry.
pub const MAX_NIOBUFS: usize = 256;

/// The largest write carried in its request ([`OstBrw::inline`]), with
/// room left in a 16 KiB request buffer for the rest of the body.
pub const SHORT_IO_BYTES: usize = 8 << 10;

/// [`OstPunch::mode`]: cut the object at `start` (`len` is ignored).
pub const PUNCH_TRUNCATE: u32 = 0;
/// [`OstPunch::mode`]: deallocate `[start, start + len)`, size unchanged.
pub const PUNCH_HOLE: u32 = 1;

/// [`OstSetattr::valid`] bits.
pub mod attr_valid {
    /// `size` is meaningful (truncate or extend).
    pub const SIZE: u32 = 0x1;
    /// `uid` and `gid` are meaningful.
    pub const OWNER: u32 = 0x2;
    /// `mtime_ns` is meaningful.
    pub const MTIME: u32 = 0x4;
}

/// A request about one object (DESTROY, GETATTR), or none (SYNC, STATFS:
/// the default), or a sequence (OST_GET_INFO: the last id of `oid.seq`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct OstObj {
    /// The object.
    pub oid: OstId,
}

/// CREATE: `count` new objects in sequence `seq` (1 for one object, more
/// to precreate a range for the MDT), after the sequence's last id.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct OstCreate {
    /// The sequence (not 0).
    pub seq: u64,
    /// Objects to create (1..=[`super::ost::MAX_PRECREATE`]).
    pub count: u32,
}

/// Most objects one CREATE may make.
pub const MAX_PRECREATE: u32 = 20_000;

/// The objects CREATE made: ids `first..first + count` of its sequence.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct OstCreateReply {
    /// The first new object id.
    pub first: u64,
    /// How many.
    pub count: u32,
    /// The sequence's last object id after the create.
    pub last_id: u64,
}

/// An object's attributes (GETATTR, SETATTR and PUNCH replies).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct OstAttr {
    /// The object.
    pub oid: OstId,
    /// Size in bytes.
    pub size: u64,
    /// Bytes allocated on disk (sparse objects hold less than `size`).
    pub allocated: u64,
    /// Version (`epoch << 32 | transno` of the last change).
    pub version: u64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, ns since the epoch.
    pub mtime_ns: u64,
}

/// SETATTR: the fields named by `valid` ([`attr_valid`]).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct OstSetattr {
    /// The object.
    pub oid: OstId,
    /// Which fields to set.
    pub valid: u32,
    /// New size.
    pub size: u64,
    /// New owner.
    pub uid: u32,
    /// New group.
    pub gid: u32,
    /// New modification time.
    pub mtime_ns: u64,
}

/// PUNCH: truncate, or punch a hole.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct OstPunch {
    /// The object.
    pub oid: OstId,
    /// [`PUNCH_TRUNCATE`] or [`PUNCH_HOLE`].
    pub mode: u32,
    /// Truncate: the new size. Hole: its first byte.
    pub start: u64,
    /// Hole: its length.
    pub len: u64,
}

/// One run of a BRW: `len` bytes at object offset `offset`. The runs of a
/// request lie end to end in its bulk buffer, in order.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct Niobuf {
    /// Object offset.
    pub offset: u64,
    /// Bytes.
    pub len: u32,
    /// Reserved (0).
    pub flags: u32,
}

/// OST_READ / OST_WRITE.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct OstBrw {
    /// The object.
    pub oid: OstId,
    /// The runs (at most [`MAX_NIOBUFS`], lengths summing to `bulk.len`).
    pub niobufs: Vec<Niobuf>,
    /// Writes with checksums on: the CRC32C of each run (else empty).
    pub cksums: Vec<u32>,
    /// The client's pages. With `inline` data: no pages are posted;
    /// `len` and the checksum describe `inline`.
    pub bulk: BulkDesc,
    /// Short I/O (Lustre's `OBD_CONNECT_SHORTIO`): a write's data carried
    /// in the request itself, at most [`SHORT_IO_BYTES`] — no bulk
    /// transfer, so one round trip instead of two. Empty: the data moves
    /// by bulk.
    pub inline: Vec<u8>,
}

/// [`OstBrwReply::allocated`] when the OST could not tell.
pub const ALLOCATED_UNKNOWN: u64 = u64::MAX;

/// The answer to a BRW.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct OstBrwReply {
    /// Bytes moved.
    pub len: u32,
    /// 0 or [`super::CKSUM_CRC32C`].
    pub cksum_type: u32,
    /// Reads: the CRC32C of the pages sent.
    pub cksum: u32,
    /// The object's size after the request.
    pub size: u64,
    /// The object's version after a write.
    pub version: u64,
    /// The export's grant after the request, in bytes.
    pub grant: u64,
    /// Writes: the bytes the object has allocated once the write is in
    /// (what a GETATTR would answer next, if nobody else writes);
    /// [`ALLOCATED_UNKNOWN`] when the OST could not tell.
    pub allocated: u64,
    /// Writes: the object's modification time the write set, ns since the
    /// epoch.
    pub mtime_ns: u64,
}

/// The answer to STATFS.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct OstStatfs {
    /// Fragment size in bytes.
    pub bsize: u32,
    /// Total blocks.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Blocks available to clients (after the target's reserve and the
    /// grants given out).
    pub bavail: u64,
    /// Total inodes of the backing file system.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Objects on the target.
    pub objects: u64,
    /// Bytes granted to clients.
    pub granted: u64,
}

/// The answer to SYNC and to the last-id query (OST_GET_INFO).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct OstIds {
    /// The last object id of the sequence asked about (0: none created).
    pub last_id: u64,
    /// The target's last committed transno.
    pub last_committed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_bodies_have_pinned_sizes() {
        assert_eq!(size_of::<ArchivedOstId>(), 16);
        assert_eq!(size_of::<ArchivedOstObj>(), 16);
        assert_eq!(size_of::<ArchivedOstCreate>(), 16);
        assert_eq!(size_of::<ArchivedNiobuf>(), 16);
        assert_eq!(size_of::<ArchivedOstAttr>(), 56);
        assert_eq!(size_of::<ArchivedOstPunch>(), 40);
        assert_eq!(size_of::<ArchivedOstBrwReply>(), 56);
        assert_eq!(size_of::<ArchivedOstIds>(), 16);
        let id = OstId::new(0x2_0000_0401, 9);
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&OstObj { oid: id }).expect("archives");
        #[rustfmt::skip]
        let golden: [u8; 16] = [1, 4, 0, 0, 2, 0, 0, 0,  9, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(&bytes[..], &golden[..]);
        assert_eq!(OstId::from_key(&id.key()), Some(id));
        assert!(OstId::new(1, 2).key() < OstId::new(2, 1).key(), "keys sort by sequence first");
        assert_eq!(OstId::from_key(&[0; 15]), None);
        let n = Niobuf { offset: 0x0102_0304_0506_0708, len: 4096, flags: 0 };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&n).expect("archives");
        #[rustfmt::skip]
        let golden: [u8; 16] = [8, 7, 6, 5, 4, 3, 2, 1,  0, 0x10, 0, 0,  0, 0, 0, 0];
        assert_eq!(&bytes[..], &golden[..]);
    }

    #[test]
    fn brw_round_trips_and_rejects_truncation() {
        let b = OstBrw {
            oid: OstId::new(0x2_0000_0401, 9),
            niobufs: vec![Niobuf { offset: 0, len: 4096, flags: 0 }, Niobuf { offset: 8192, len: 100, flags: 0 }],
            cksums: vec![1, 2],
            bulk: BulkDesc { match_bits: 5, len: 4196, cksum_type: 4, cksum: 3 },
            inline: vec![7; 10],
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&b).expect("archives");
        let back = rkyv::from_bytes::<OstBrw, rkyv::rancor::Error>(&bytes).expect("valid");
        assert_eq!(back, b);
        assert!(rkyv::access::<ArchivedOstBrw, rkyv::rancor::Error>(&bytes[..bytes.len() - 8]).is_err());
    }
}
