//! Directory entries in the KV store, fast with millions of entries.
//!
//! An entry's key is `parent FID ++ cookie` where the cookie is the
//! name's 64-bit hash with the low 8 bits replaced by a collision-chain
//! slot (0..=255). Lookup reads the (normally one-entry) key range of the
//! name's hash; readdir is a range read from a cookie. A cookie never
//! changes while its entry lives, so readdir cookies stay valid while other
//! entries are added and removed (hash order, as Lustre's htree).
//!
//! Owns: the hash, the key encoding, [`Dirent`], lookup, free-slot search
//! and readdir.
//!
//! Must not: write; the namespace puts keys in its batches.

use ptlrpc::wire::Fid;
use rkyv::{Archive, Deserialize, Serialize};

use crate::error::{MdtError, Result, errno};
use crate::fid;
use crate::store::{Kv, Table, decode};

/// Chain slots per hash value.
const CHAIN: u64 = 256;
/// The longest name.
pub const NAME_MAX: usize = 255;

/// A stored entry.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Dirent {
    /// The name.
    pub name: String,
    /// The object.
    pub fid: Fid,
    /// `mode >> 12`.
    pub kind: u8,
}

/// 64-bit FNV-1a with a final avalanche (stable across builds and runs).
pub fn name_hash(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

/// The first cookie of `name`'s chain.
pub fn chain_base(name: &str) -> u64 {
    name_hash(name) & !(CHAIN - 1)
}

/// The key of `cookie` in `dir`.
pub fn key(dir: Fid, cookie: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(&fid::key(dir));
    k[16..].copy_from_slice(&cookie.to_be_bytes());
    k
}

/// The first key after every entry of `dir`.
fn dir_end(dir: Fid) -> Vec<u8> {
    let mut k = fid::key(dir).to_vec();
    k.push(0xff);
    k.extend_from_slice(&[0xff; 8]);
    k
}

/// Checks a name for a new entry.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(MdtError::posix(errno::EINVAL, format!("bad name {name:?}")));
    }
    if name.len() > NAME_MAX {
        return Err(MdtError::posix(errno::ENAMETOOLONG, "name longer than 255 bytes"));
    }
    Ok(())
}

fn cookie_of(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.get(16..24)?.try_into().ok()?))
}

/// The chain of `name` in `dir`: (cookie, entry) pairs.
fn chain(kv: &dyn Kv, dir: Fid, name: &str) -> Result<Vec<(u64, Dirent)>> {
    let base = chain_base(name);
    let from = key(dir, base);
    let to = if base.checked_add(CHAIN).is_some() { key(dir, base + CHAIN).to_vec() } else { dir_end(dir) };
    let mut out = Vec::new();
    for (k, v) in kv.range(Table::Dirents, &from, &to, CHAIN as usize)? {
        let cookie = cookie_of(&k).ok_or_else(|| MdtError::posix(errno::EIO, "short dirent key"))?;
        out.push((cookie, decode::<Dirent>(Table::Dirents, &v)?));
    }
    Ok(out)
}

/// `name` in `dir`: its cookie and entry. A name almost always sits in
/// its chain's first slot, so that slot is read with a point read (the
/// store's filters skip most segments); the chain's range is read only
/// when the slot is empty or holds another name.
pub fn lookup(kv: &dyn Kv, dir: Fid, name: &str) -> Result<Option<(u64, Dirent)>> {
    let base = chain_base(name);
    if let Some(v) = kv.get(Table::Dirents, &key(dir, base))? {
        let d = decode::<Dirent>(Table::Dirents, &v)?;
        if d.name == name {
            return Ok(Some((base, d)));
        }
    }
    Ok(chain(kv, dir, name)?.into_iter().find(|(_, d)| d.name == name))
}

/// Where a new `name` goes in `dir`: `Err(EEXIST)` if it is there, else a
/// free cookie of its chain (one read of the chain).
pub fn slot_for_new(kv: &dyn Kv, dir: Fid, name: &str) -> Result<u64> {
    let base = chain_base(name);
    if kv.get(Table::Dirents, &key(dir, base))?.is_none() && base.checked_add(CHAIN).is_some() {
        // The first slot is free; the name may still sit further along
        // the chain (its first slot's entry was removed).
        let rest = kv.range(Table::Dirents, &key(dir, base + 1), &key(dir, base + CHAIN), CHAIN as usize)?;
        for (_, v) in rest {
            if decode::<Dirent>(Table::Dirents, &v)?.name == name {
                return Err(MdtError::posix(errno::EEXIST, format!("{name:?} exists")));
            }
        }
        return Ok(base);
    }
    let used = chain(kv, dir, name)?;
    if used.iter().any(|(_, d)| d.name == name) {
        return Err(MdtError::posix(errno::EEXIST, format!("{name:?} exists")));
    }
    (0..CHAIN)
        .map(|i| base + i)
        .find(|c| !used.iter().any(|(u, _)| u == c))
        .ok_or_else(|| MdtError::posix(errno::ENOSPC, "hash chain full"))
}

/// A free cookie for `name` in `dir` (which must not hold `name`).
pub fn free_cookie(kv: &dyn Kv, dir: Fid, name: &str) -> Result<u64> {
    slot_for_new(kv, dir, name)
}

/// Up to `max` entries of `dir` from `cookie` on, and whether the
/// directory ends there.
pub fn readdir(kv: &dyn Kv, dir: Fid, cookie: u64, max: usize) -> Result<(Vec<(u64, Dirent)>, bool)> {
    let rows = kv.range(Table::Dirents, &key(dir, cookie), &dir_end(dir), max + 1)?;
    let end = rows.len() <= max;
    let mut out = Vec::with_capacity(rows.len().min(max));
    for (k, v) in rows.into_iter().take(max) {
        let c = cookie_of(&k).ok_or_else(|| MdtError::posix(errno::EIO, "short dirent key"))?;
        out.push((c, decode::<Dirent>(Table::Dirents, &v)?));
    }
    Ok((out, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_spreads() {
        assert_eq!(name_hash("a"), name_hash("a"));
        assert_ne!(chain_base("a"), chain_base("b"));
        let bases: std::collections::HashSet<u64> = (0..10_000).map(|i| chain_base(&format!("f{i}"))).collect();
        assert!(bases.len() > 9_990);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("ok").is_ok());
        for bad in ["", ".", "..", "a/b"] {
            assert_eq!(check_name(bad).map_err(|e| e.errno()), Err(errno::EINVAL));
        }
        assert_eq!(check_name(&"x".repeat(256)).map_err(|e| e.errno()), Err(errno::ENAMETOOLONG));
    }
}
