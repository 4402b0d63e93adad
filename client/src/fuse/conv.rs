//! Conversions between the kernel's FUSE view and Sheen's: inode
//! numbers from FIDs, attributes and times, open and xattr flags, errnos,
//! and the small rules the mount applies itself (set-ID bits a write drops,
//! `access(2)` from fresh attributes).
//!
//! Owns: pure functions only. Must not: do I/O.

use std::ffi::OsStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo, ReplyXattr, Request, TimeOrNow};
use ptlrpc::wire::Fid;
use ptlrpc::wire::mds::{MdtAttr, Timestamp, open_flags, xattr_flags};

use crate::error::ClientError;
use crate::fs::{Cred, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};

/// No caching: every attribute and entry is asked for again.
pub(super) const TTL: Duration = Duration::ZERO;
/// The largest FUSE request (max_pages_limit 256 x 4 KiB).
pub const MAX_WRITE: u32 = 1 << 20;

/// Lustre's `fid_flatten`: a FID as a 64-bit inode number.
pub fn flatten(fid: Fid) -> u64 {
    if fid == Fid::ROOT {
        return 1;
    }
    let ino = (fid.seq << 24).wrapping_add((fid.seq >> 24).wrapping_mul(0xff_ffff)).wrapping_add(u64::from(fid.oid));
    if ino <= 1 { ino.wrapping_add(2) } else { ino }
}

pub(super) fn errno(e: &ClientError) -> Errno {
    Errno::from_i32(e.errno())
}

/// A wire time as the kernel takes it (before 1970 too).
pub(super) fn time(t: Timestamp) -> SystemTime {
    let nsec = Duration::from_nanos(u64::from(t.nsec.min(999_999_999)));
    match u64::try_from(t.sec) {
        Ok(s) => UNIX_EPOCH + Duration::from_secs(s) + nsec,
        Err(_) => UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + nsec,
    }
}

/// A time the kernel gives (or now) as a wire time, to the nanosecond.
pub(super) fn timestamp(t: TimeOrNow) -> Timestamp {
    let t = match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => return crate::fs::now(),
    };
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp { sec: d.as_secs() as i64, nsec: d.subsec_nanos() },
        Err(e) => {
            // Before 1970: whole seconds down, nanoseconds up.
            let d = e.duration();
            let (mut sec, mut nsec) = (-(d.as_secs() as i64), d.subsec_nanos());
            if nsec > 0 {
                sec -= 1;
                nsec = 1_000_000_000 - nsec;
            }
            Timestamp { sec, nsec }
        }
    }
}

/// The file type of a `st_mode`.
pub fn kind(mode: u32) -> FileType {
    match mode & S_IFMT {
        S_IFDIR => FileType::Directory,
        S_IFLNK => FileType::Symlink,
        S_IFREG => FileType::RegularFile,
        0o020000 => FileType::CharDevice,
        0o060000 => FileType::BlockDevice,
        0o010000 => FileType::NamedPipe,
        0o140000 => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

/// Attributes as the kernel takes them (`blocks`: 512-byte blocks used).
pub fn file_attr(a: &MdtAttr, blocks: u64) -> FileAttr {
    FileAttr {
        ino: INodeNo(flatten(a.fid)),
        size: a.size,
        blocks,
        atime: time(a.atime),
        mtime: time(a.mtime),
        ctime: time(a.ctime),
        crtime: time(a.ctime),
        kind: kind(a.mode),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev as u32,
        blksize: MAX_WRITE,
        flags: 0,
    }
}

/// The longest name (`NAME_MAX`).
pub(super) const NAME_MAX: usize = 255;

pub(super) fn name(n: &OsStr) -> Result<&str, Errno> {
    if n.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    n.to_str().ok_or(Errno::EINVAL)
}

/// The mode a write by an unprivileged caller leaves (Linux's
/// `file_remove_privs`): set-user-ID goes, set-group-ID too when the group
/// may execute. `None` when nothing changes.
pub(super) fn killpriv(mode: u32) -> Option<u32> {
    let mut m = mode & 0o7777;
    m &= !libc::S_ISUID;
    if mode & libc::S_IXGRP != 0 {
        m &= !libc::S_ISGID;
    }
    (m != mode & 0o7777).then_some(m)
}

pub(super) fn cred(req: &Request) -> Cred {
    Cred { uid: req.uid(), gid: req.gid() }
}

/// Linux open flags -> the MDT's.
pub(super) fn mdt_flags(flags: i32) -> u32 {
    let f = flags as u32;
    let mut out = f & (open_flags::WRONLY | open_flags::RDWR);
    for bit in [open_flags::CREAT, open_flags::EXCL, open_flags::TRUNC, open_flags::EXEC] {
        out |= f & bit;
    }
    out
}

/// Offsets readdir gives "." (1) and ".." (2).
pub(super) const DOT_OFFSETS: u64 = 2;

/// Linux `setxattr` flags -> the MDT's.
pub(super) fn xattr_set_flags(flags: i32) -> u32 {
    let mut out = 0;
    if flags & libc::XATTR_CREATE != 0 {
        out |= xattr_flags::CREATE;
    }
    if flags & libc::XATTR_REPLACE != 0 {
        out |= xattr_flags::REPLACE;
    }
    out
}

/// Names as `listxattr` returns them: each followed by a NUL.
pub(super) fn xattr_list(names: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for n in names {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
    }
    out
}

/// A getxattr/listxattr answer: the size when asked with 0, the bytes when
/// they fit, else ERANGE.
pub(super) fn xattr_reply(v: &[u8], size: u32, reply: ReplyXattr) {
    let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
    if size == 0 {
        reply.size(len);
    } else if len <= size {
        reply.data(v);
    } else {
        reply.error(Errno::ERANGE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_convert_both_ways_to_the_nanosecond() {
        let t = Timestamp { sec: 1_500_000_000, nsec: 123_456_789 };
        assert_eq!(timestamp(TimeOrNow::SpecificTime(time(t))), t);
        let before = Timestamp { sec: -2, nsec: 250_000_000 };
        assert_eq!(time(before), UNIX_EPOCH - Duration::from_millis(1750));
        assert_eq!(timestamp(TimeOrNow::SpecificTime(time(before))), before);
    }

    #[test]
    fn fids_flatten_like_lustre_and_the_root_is_one() {
        assert_eq!(flatten(Fid::ROOT), 1);
        let a = flatten(Fid { seq: 0x2_0000_0400, oid: 1, ver: 0 });
        let b = flatten(Fid { seq: 0x2_0000_0400, oid: 2, ver: 0 });
        assert_eq!(b, a + 1);
        assert!(a > 1);
    }

    #[test]
    fn unprivileged_writes_drop_set_id_bits() {
        assert_eq!(killpriv(0o100644), None);
        assert_eq!(killpriv(0o104777), Some(0o777));
        assert_eq!(killpriv(0o102777), Some(0o777));
        assert_eq!(killpriv(0o102767 & !0o010), None, "set-group-ID without group execute is mandatory locking");
        assert_eq!(killpriv(0o106755), Some(0o755));
    }

    #[test]
    fn open_flags_map_to_the_mdt() {
        assert_eq!(mdt_flags(libc::O_RDWR | libc::O_CREAT | libc::O_NOFOLLOW), open_flags::RDWR | open_flags::CREAT);
        assert_eq!(mdt_flags(libc::O_WRONLY | libc::O_TRUNC), open_flags::WRONLY | open_flags::TRUNC);
        // The kernel's open for execve (`__FMODE_EXEC`, 0o40).
        assert_eq!(mdt_flags(libc::O_LARGEFILE | 0o40), open_flags::EXEC);
    }
}
