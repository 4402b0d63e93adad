//! Self-describing, checksummed data blocks: what the workload writes and
//! the verifier reads back.
//!
//! Owns: the block layout — a 32-byte header (magic, client, file id, block
//! index, generation, CRC32C over everything but the CRC field) followed
//! by a payload drawn from a PRNG seeded by those fields — [`encode`] and
//! [`decode`]. A block read back says which write produced it, so a lost,
//! stale, misplaced or corrupt block is named exactly.
//!
//! Must not: do I/O.

/// Bytes per block: one write operation writes one block, aligned to the
/// stripe size so that a block lives on exactly one OST object.
pub const BLOCK: usize = 64 << 10;

const MAGIC: &[u8; 8] = b"SHCHAOS1";
const HEADER: usize = 32;

/// Which write a block says it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlockId {
    /// Client index.
    pub client: u32,
    /// File id (unique per client).
    pub file: u32,
    /// Block index in the file.
    pub blk: u32,
    /// Generation: the client's write counter (unique per write).
    pub generation: u32,
}

/// What a block read back is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// All zero: never written (a hole).
    Hole,
    /// A valid block.
    Block(BlockId),
    /// Not a valid block: bad magic, short, or the CRC does not match.
    Corrupt {
        /// The CRC stored in the block (0 when the magic is wrong).
        stored: u32,
        /// The CRC computed over the block.
        computed: u32,
    },
}

fn fill(id: BlockId, out: &mut [u8]) {
    let mut x = (u64::from(id.client) << 48)
        ^ (u64::from(id.file) << 32)
        ^ (u64::from(id.blk) << 20)
        ^ u64::from(id.generation);
    x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for chunk in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// The block `id` names.
pub fn encode(id: BlockId) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK];
    b[..8].copy_from_slice(MAGIC);
    b[8..12].copy_from_slice(&id.client.to_le_bytes());
    b[12..16].copy_from_slice(&id.file.to_le_bytes());
    b[16..20].copy_from_slice(&id.blk.to_le_bytes());
    b[20..24].copy_from_slice(&id.generation.to_le_bytes());
    fill(id, &mut b[HEADER..]);
    let crc = crc_of(&b);
    b[24..28].copy_from_slice(&crc.to_le_bytes());
    b
}

/// CRC32C over the block without its CRC field.
fn crc_of(b: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&b[..24]), &b[28..])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

/// What `b` (one block's bytes as read; shorter at the end of a file) is.
pub fn decode(b: &[u8]) -> Decoded {
    if b.iter().all(|&x| x == 0) {
        return Decoded::Hole;
    }
    if b.len() != BLOCK || &b[..8] != MAGIC {
        return Decoded::Corrupt { stored: 0, computed: crc32c::crc32c(b) };
    }
    let stored = u32_at(b, 24);
    let computed = crc_of(b);
    if stored != computed {
        return Decoded::Corrupt { stored, computed };
    }
    Decoded::Block(BlockId { client: u32_at(b, 8), file: u32_at(b, 12), blk: u32_at(b, 16), generation: u32_at(b, 20) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_name_their_write_and_detect_any_flip() {
        let id = BlockId { client: 1, file: 7, blk: 3, generation: 42 };
        let mut b = encode(id);
        assert_eq!(decode(&b), Decoded::Block(id));
        assert_ne!(encode(BlockId { generation: 43, ..id })[HEADER..], b[HEADER..]);
        assert_eq!(decode(&vec![0; BLOCK]), Decoded::Hole);
        assert_eq!(decode(&[]), Decoded::Hole);
        for at in [0, 9, 24, 27, 28, 100, BLOCK - 1] {
            b[at] ^= 0x10;
            assert!(matches!(decode(&b), Decoded::Corrupt { .. }), "flip at {at}");
            b[at] ^= 0x10;
        }
        assert!(matches!(decode(&b[..BLOCK - 1]), Decoded::Corrupt { .. }));
    }
}
