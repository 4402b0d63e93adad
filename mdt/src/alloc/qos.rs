//! Choosing OSTs for a file's stripes (Lustre's `lod_qos`).
//!
//! Round-robin while the candidates are balanced; once the free space of
//! the fullest and emptiest differ by more than the threshold (17 % of the
//! largest by default, Lustre's `qos_threshold_rr`), a weighted random
//! choice by free space, without replacement. An explicit first OST
//! (`stripe_offset`) takes consecutive OSTs from it.
//!
//! Must not: decide which OSTs are candidates (the allocator filters
//! deactivated, disconnected, full and out-of-pool ones).

use rand::Rng;
use rand::rngs::SmallRng;

/// A candidate: OST index and its free space (KiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// OST index.
    pub ost: u32,
    /// Free KiB.
    pub free: u64,
}

/// Whether the candidates are within `threshold_pct` of each other.
pub fn balanced(c: &[Candidate], threshold_pct: u32) -> bool {
    let max = c.iter().map(|c| c.free).max().unwrap_or(0);
    let min = c.iter().map(|c| c.free).min().unwrap_or(0);
    max == 0 || u128::from(max - min) * 100 <= u128::from(threshold_pct) * u128::from(max)
}

/// Picks `count` distinct OSTs from `c` (sorted by index, non-empty,
/// `count <= c.len()`).
pub fn choose(
    c: &[Candidate],
    count: usize,
    offset: Option<u32>,
    threshold_pct: u32,
    rr: &mut usize,
    rng: &mut SmallRng,
) -> Vec<u32> {
    let n = c.len();
    if n == 0 || count == 0 {
        return Vec::new();
    }
    let count = count.min(n);
    if let Some(off) = offset {
        let start = c.iter().position(|x| x.ost >= off).unwrap_or(0);
        return (0..count).map(|i| c[(start + i) % n].ost).collect();
    }
    if balanced(c, threshold_pct) {
        let start = *rr % n;
        *rr = rr.wrapping_add(count);
        return (0..count).map(|i| c[(start + i) % n].ost).collect();
    }
    let mut pool: Vec<Candidate> = c.to_vec();
    let mut out = Vec::with_capacity(count);
    while out.len() < count && !pool.is_empty() {
        let total: u128 = pool.iter().map(|x| u128::from(x.free) + 1).sum();
        let mut pick = rng.random_range(0..total);
        let mut idx = pool.len() - 1;
        for (i, x) in pool.iter().enumerate() {
            let w = u128::from(x.free) + 1;
            if pick < w {
                idx = i;
                break;
            }
            pick -= w;
        }
        out.push(pool.swap_remove(idx).ost);
    }
    out
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn cands(free: &[u64]) -> Vec<Candidate> {
        free.iter().enumerate().map(|(i, &f)| Candidate { ost: i as u32, free: f }).collect()
    }

    #[test]
    fn round_robin_while_balanced() {
        let c = cands(&[100, 95, 90, 88]);
        assert!(balanced(&c, 17));
        let (mut rr, mut rng) = (0, SmallRng::seed_from_u64(1));
        let picks: Vec<u32> = (0..8).flat_map(|_| choose(&c, 1, None, 17, &mut rr, &mut rng)).collect();
        assert_eq!(picks, vec![0, 1, 2, 3, 0, 1, 2, 3]);
        assert_eq!(choose(&c, 2, Some(3), 17, &mut rr, &mut rng), vec![3, 0]);
    }

    #[test]
    fn weighted_by_free_space_when_imbalanced() {
        let c = cands(&[1000, 100]);
        assert!(!balanced(&c, 17));
        let (mut rr, mut rng) = (0, SmallRng::seed_from_u64(7));
        let mut hits = [0u32; 2];
        for _ in 0..10_000 {
            hits[choose(&c, 1, None, 17, &mut rr, &mut rng)[0] as usize] += 1;
        }
        assert!(hits[0] > 8 * hits[1] && hits[1] > 500, "{hits:?}");
        let two = choose(&c, 2, None, 17, &mut rr, &mut rng);
        assert_eq!(two.len(), 2);
        assert_ne!(two[0], two[1]);
    }
}
