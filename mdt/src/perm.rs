//! Permission checks with the caller's credentials, as Linux's VFS makes
//! them (`generic_permission`, `may_delete`, `may_create`, `chown_ok`,
//! `chgrp_ok`, `setattr_prepare`, `may_open`, `xattr_permission`) and
//! Lustre's MDT repeats them: the FUSE mount leaves them to the MDT (no
//! `default_permissions`), and the library API sends its process's
//! credentials too. Root is uid 0 with every capability (no root squash).
//!
//! Owns: the rules, as pure functions of inodes and [`Creds`], each
//! answering the errno Linux answers (EACCES for a mode-bit refusal, EPERM
//! for an ownership one). Must not: read the store or change inodes; the
//! namespace (`ns`) calls these under its write lock with the inodes it
//! read, so a check and the change it guards see the same state.
//!
//! Not yet: POSIX ACLs, `fs.protected_hardlinks`/`protected_symlinks`,
//! immutable/append-only flags, root squash.

use ptlrpc::wire::mds::{Creds, access_mask, attr_valid, open_flags};

use crate::error::{MdtError, Result, errno};
use crate::inode::{Inode, Kind};

/// Set-user-ID.
pub const S_ISUID: u32 = 0o4000;
/// Set-group-ID.
pub const S_ISGID: u32 = 0o2000;
/// Sticky.
pub const S_ISVTX: u32 = 0o1000;
/// Group execute.
const S_IXGRP: u32 = 0o010;
/// Any execute bit.
const S_IXUGO: u32 = 0o111;

/// Read, see [`access_mask`].
pub const MAY_READ: u32 = access_mask::READ;
/// Write.
pub const MAY_WRITE: u32 = access_mask::WRITE;
/// Execute / search.
pub const MAY_EXEC: u32 = access_mask::EXEC;

fn is_root(c: &Creds) -> bool {
    c.uid == 0
}

fn owns(c: &Creds, i: &Inode) -> bool {
    c.uid == i.uid
}

/// Whether `c` owns `i` or is root (`inode_owner_or_capable`).
pub fn owner_or_root(c: &Creds, i: &Inode) -> bool {
    is_root(c) || owns(c, i)
}

/// `generic_permission`: `mask` ([`MAY_READ`] | [`MAY_WRITE`] |
/// [`MAY_EXEC`]) on `i` for `c`, from the owner's bits if `c` owns it,
/// else the group's if `c` is in its group, else the others'. Root may
/// read and write anything, search any directory and execute a file with
/// any execute bit. EACCES otherwise.
pub fn permission(c: &Creds, i: &Inode, mask: u32) -> Result<()> {
    let mask = mask & (MAY_READ | MAY_WRITE | MAY_EXEC);
    let ok = if is_root(c) {
        mask & MAY_EXEC == 0 || i.is_dir() || i.mode & S_IXUGO != 0
    } else {
        let bits = if owns(c, i) {
            (i.mode >> 6) & 7
        } else if c.in_group(i.gid) {
            (i.mode >> 3) & 7
        } else {
            i.mode & 7
        };
        bits & mask == mask
    };
    if ok { Ok(()) } else { Err(MdtError::posix(errno::EACCES, format!("uid {} may not {mask:o} {}", c.uid, i.fid))) }
}

/// A lookup in `dir`: search permission.
pub fn may_lookup(c: &Creds, dir: &Inode) -> Result<()> {
    permission(c, dir, MAY_EXEC)
}

/// A new name in `dir` (create, mkdir, mknod, symlink, link, the target
/// of a rename): write and search permission.
pub fn may_create(c: &Creds, dir: &Inode) -> Result<()> {
    permission(c, dir, MAY_WRITE | MAY_EXEC)
}

/// A device node (character or block) is made by root only (`vfs_mknod`:
/// `CAP_MKNOD`, EPERM); FIFOs and sockets by anyone.
pub fn may_mknod(c: &Creds, mode: u32) -> Result<()> {
    let fmt = mode & crate::inode::S_IFMT;
    if (fmt == 0o020000 || fmt == 0o060000) && !is_root(c) {
        return Err(MdtError::posix(errno::EPERM, format!("uid {} may not make a device node", c.uid)));
    }
    Ok(())
}

/// Removing `victim`'s name from `dir` (unlink, rmdir, either side of a
/// rename): write and search permission on `dir` (EACCES), and in a sticky
/// directory only the owner of the directory or of `victim`, or root
/// (EPERM).
pub fn may_delete(c: &Creds, dir: &Inode, victim: &Inode) -> Result<()> {
    permission(c, dir, MAY_WRITE | MAY_EXEC)?;
    if dir.mode & S_ISVTX != 0 && !is_root(c) && !owns(c, dir) && !owns(c, victim) {
        return Err(MdtError::posix(errno::EPERM, format!("sticky {}: uid {} owns neither", dir.fid, c.uid)));
    }
    Ok(())
}

/// Moving directory `child` to another parent rewrites its `..`: write
/// permission on it.
pub fn may_move_dir(c: &Creds, child: &Inode, new_parent_differs: bool) -> Result<()> {
    if child.is_dir() && new_parent_differs { permission(c, child, MAY_WRITE) } else { Ok(()) }
}

/// The owner and group a new object in `dir` gets, and its mode: a caller
/// other than root creates as itself (root as it asks); a set-group-ID
/// directory gives its group, and its set-group-ID bit to new directories;
/// a non-directory keeps set-group-ID only if its creator is in its group
/// or root (`inode_init_owner`).
pub fn new_owner(c: &Creds, dir: &Inode, uid: u32, gid: u32, mode: u32) -> (u32, u32, u32) {
    let (uid, mut gid) = if is_root(c) { (uid, gid) } else { (c.uid, c.gid) };
    let mut mode = mode;
    let is_dir = Kind::of(mode) == Some(Kind::Dir);
    if dir.mode & S_ISGID != 0 {
        gid = dir.gid;
        if is_dir {
            mode |= S_ISGID;
        }
    }
    if !is_dir && mode & S_ISGID != 0 && mode & S_IXGRP != 0 && !is_root(c) && !c.in_group(gid) {
        mode &= !S_ISGID;
    }
    (uid, gid, mode)
}

/// What a setattr asks, as `setattr_prepare` checks it.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetattrAsk {
    /// [`attr_valid`] bits.
    pub valid: u32,
    /// The new mode (with `MODE`).
    pub mode: u32,
    /// The new owner (with `UID`).
    pub uid: u32,
    /// The new group (with `GID`).
    pub gid: u32,
}

/// Whether `c` may make the change `a` to `i`: truncate needs write
/// permission (EACCES) unless through a write handle (`FROM_OPEN`); chmod
/// and explicit times need the owner or root (EPERM); times set to "now"
/// also allow write permission or a write handle (EACCES otherwise); a new owner only by
/// root, a new group by root or by the owner to a group it is in (EPERM);
/// a directory's default striping by the owner or root.
pub fn may_setattr(c: &Creds, i: &Inode, a: &SetattrAsk) -> Result<()> {
    let eperm = |what: &str| Err(MdtError::posix(errno::EPERM, format!("uid {} may not {what} {}", c.uid, i.fid)));
    if a.valid & attr_valid::SIZE != 0 && a.valid & attr_valid::FROM_OPEN == 0 {
        permission(c, i, MAY_WRITE)?;
    }
    if a.valid & attr_valid::UID != 0 && a.uid != i.uid && !is_root(c) {
        return eperm("chown");
    }
    if a.valid & attr_valid::UID != 0 && !owner_or_root(c, i) {
        return eperm("chown");
    }
    if a.valid & attr_valid::GID != 0 && !is_root(c) && !(owns(c, i) && (a.gid == i.gid || c.in_group(a.gid))) {
        return eperm("chgrp");
    }
    if a.valid & attr_valid::MODE != 0 && !owner_or_root(c, i) {
        return eperm("chmod");
    }
    if a.valid & (attr_valid::ATIME | attr_valid::MTIME) != 0 && !owner_or_root(c, i) {
        if a.valid & attr_valid::TIMES_NOW == 0 {
            return eperm("set the times of");
        }
        if a.valid & attr_valid::FROM_OPEN == 0 {
            permission(c, i, MAY_WRITE)?;
        }
    }
    if a.valid & attr_valid::DEFAULT_STRIPE != 0 && !owner_or_root(c, i) {
        return eperm("set the default striping of");
    }
    Ok(())
}

/// The mode after an allowed setattr `a` on `i` (which may have changed
/// owner and group already: `new_gid` is the group after it): chmod by a
/// caller who is neither root nor in the file's group drops
/// set-group-ID; a change of owner or group of a non-directory drops
/// set-user-ID, and set-group-ID when group execute is set (also for
/// root: `chown_common`'s kill bits).
pub fn mode_after_setattr(c: &Creds, i: &Inode, a: &SetattrAsk, new_gid: u32) -> u32 {
    let mut mode = i.mode;
    if a.valid & attr_valid::MODE != 0 {
        mode = (i.mode & crate::inode::S_IFMT) | (a.mode & !crate::inode::S_IFMT);
        if mode & S_ISGID != 0 && !is_root(c) && !c.in_group(new_gid) {
            mode &= !S_ISGID;
        }
    }
    if a.valid & (attr_valid::UID | attr_valid::GID) != 0 && !i.is_dir() {
        mode &= !S_ISUID;
        if mode & S_IXGRP != 0 {
            mode &= !S_ISGID;
        }
    }
    mode
}

/// Opening the existing `i` with `flags`: read and/or write permission as
/// the access mode asks (a truncate asks write; an open for `execve`
/// execute instead of read).
pub fn may_open(c: &Creds, i: &Inode, flags: u32) -> Result<()> {
    let mask = match flags & (open_flags::WRONLY | open_flags::RDWR) {
        0 if flags & open_flags::EXEC != 0 => MAY_EXEC,
        0 => MAY_READ,
        open_flags::WRONLY => MAY_WRITE,
        _ => MAY_READ | MAY_WRITE,
    };
    let mask = if flags & open_flags::TRUNC != 0 { mask | MAY_WRITE } else { mask };
    permission(c, i, mask)
}

/// Reading (`write == false`) or writing extended attribute `name` of `i`
/// (`xattr_permission`): `trusted.*` is root's (EPERM to write, ENODATA to
/// read for others); `user.*` follows the mode bits (EACCES), and exists
/// only on files and directories (EPERM to write, ENODATA to read);
/// others (`security.*`, `system.*`) are written by the owner or root.
pub fn may_xattr(c: &Creds, i: &Inode, name: &str, write: bool) -> Result<()> {
    let refuse = |e: i32| Err(MdtError::posix(e, format!("uid {} may not use xattr {name:?} of {}", c.uid, i.fid)));
    if name.starts_with("trusted.") {
        if is_root(c) {
            return Ok(());
        }
        return refuse(if write { errno::EPERM } else { errno::ENODATA });
    }
    if name.starts_with("user.") {
        if !matches!(i.kind(), Kind::File | Kind::Dir) {
            return refuse(if write { errno::EPERM } else { errno::ENODATA });
        }
        return permission(c, i, if write { MAY_WRITE } else { MAY_READ });
    }
    if write && !owner_or_root(c, i) {
        return refuse(errno::EPERM);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inode::{S_IFDIR, S_IFREG};

    fn ino(mode: u32, uid: u32, gid: u32) -> Inode {
        Inode { mode, uid, gid, ..Inode::default() }
    }

    fn user(uid: u32, gid: u32, groups: &[u32]) -> Creds {
        Creds { uid, gid, groups: groups.to_vec() }
    }

    fn err<T: std::fmt::Debug>(r: Result<T>) -> i32 {
        r.expect_err("refused").errno()
    }

    #[test]
    fn mode_bits_by_owner_group_and_others() {
        let f = ino(S_IFREG | 0o640, 10, 20);
        permission(&user(10, 99, &[]), &f, MAY_READ | MAY_WRITE).unwrap();
        assert_eq!(err(permission(&user(10, 20, &[]), &f, MAY_EXEC)), errno::EACCES);
        // Group bits, by primary or supplementary group.
        permission(&user(11, 20, &[]), &f, MAY_READ).unwrap();
        permission(&user(11, 5, &[7, 20]), &f, MAY_READ).unwrap();
        assert_eq!(err(permission(&user(11, 5, &[7, 20]), &f, MAY_WRITE)), errno::EACCES);
        // Others.
        assert_eq!(err(permission(&user(12, 5, &[]), &f, MAY_READ)), errno::EACCES);
        // The owner's class is the owner's even when the group's is wider.
        let g = ino(S_IFREG | 0o070, 10, 20);
        assert_eq!(err(permission(&user(10, 20, &[]), &g, MAY_READ)), errno::EACCES);
    }

    #[test]
    fn root_reads_and_writes_anything_but_executes_only_with_an_x_bit() {
        let f = ino(S_IFREG, 10, 20);
        permission(&Creds::ROOT, &f, MAY_READ | MAY_WRITE).unwrap();
        assert_eq!(err(permission(&Creds::ROOT, &f, MAY_EXEC)), errno::EACCES);
        permission(&Creds::ROOT, &ino(S_IFREG | 0o001, 10, 20), MAY_EXEC).unwrap();
        permission(&Creds::ROOT, &ino(S_IFDIR, 10, 20), MAY_EXEC).unwrap();
    }

    #[test]
    fn lookup_create_and_delete_in_directories() {
        let d = ino(S_IFDIR | 0o755, 10, 20);
        let u = user(11, 11, &[]);
        may_lookup(&u, &d).unwrap();
        assert_eq!(err(may_lookup(&u, &ino(S_IFDIR | 0o754, 10, 20))), errno::EACCES);
        assert_eq!(err(may_create(&u, &d)), errno::EACCES);
        may_create(&user(10, 1, &[]), &d).unwrap();
        assert_eq!(err(may_mknod(&u, 0o020000 | 0o644)), errno::EPERM);
        assert_eq!(err(may_mknod(&u, 0o060000 | 0o644)), errno::EPERM);
        may_mknod(&u, 0o010000 | 0o644).unwrap();
        may_mknod(&Creds::ROOT, 0o020000 | 0o644).unwrap();
        // w without x is not enough.
        assert_eq!(err(may_create(&u, &ino(S_IFDIR | 0o776, 10, 20))), errno::EACCES);
        let f = ino(S_IFREG | 0o600, 12, 12);
        assert_eq!(err(may_delete(&u, &d, &f)), errno::EACCES);
        may_delete(&u, &ino(S_IFDIR | 0o777, 10, 20), &f).unwrap();
    }

    #[test]
    fn sticky_directories_keep_others_files() {
        let tmp = ino(S_IFDIR | 0o1777, 10, 20);
        let theirs = ino(S_IFREG | 0o666, 12, 12);
        assert_eq!(err(may_delete(&user(11, 11, &[]), &tmp, &theirs)), errno::EPERM);
        may_delete(&user(12, 1, &[]), &tmp, &theirs).unwrap();
        may_delete(&user(10, 1, &[]), &tmp, &theirs).unwrap();
        may_delete(&Creds::ROOT, &tmp, &theirs).unwrap();
        // Without write permission the answer is EACCES first.
        let ro = ino(S_IFDIR | 0o1755, 10, 20);
        assert_eq!(err(may_delete(&user(11, 11, &[]), &ro, &theirs)), errno::EACCES);
    }

    #[test]
    fn moving_a_directory_elsewhere_needs_write_on_it() {
        let d = ino(S_IFDIR | 0o555, 11, 11);
        assert_eq!(err(may_move_dir(&user(11, 11, &[]), &d, true)), errno::EACCES);
        may_move_dir(&user(11, 11, &[]), &d, false).unwrap();
        may_move_dir(&user(11, 11, &[]), &ino(S_IFREG | 0o444, 11, 11), true).unwrap();
    }

    #[test]
    fn new_objects_take_the_callers_ids_and_a_setgid_directorys_group() {
        let d = ino(S_IFDIR | 0o777, 10, 20);
        assert_eq!(new_owner(&user(11, 12, &[]), &d, 0, 0, S_IFREG | 0o644), (11, 12, S_IFREG | 0o644));
        assert_eq!(new_owner(&Creds::ROOT, &d, 5, 6, S_IFREG | 0o644), (5, 6, S_IFREG | 0o644));
        let sg = ino(S_IFDIR | 0o2777, 10, 20);
        assert_eq!(new_owner(&user(11, 12, &[]), &sg, 11, 12, S_IFDIR | 0o755), (11, 20, S_IFDIR | 0o2755));
        // A set-group-ID file for a group its creator is not in loses the bit.
        assert_eq!(new_owner(&user(11, 12, &[]), &sg, 11, 12, S_IFREG | 0o2755), (11, 20, S_IFREG | 0o755));
        assert_eq!(new_owner(&user(11, 12, &[20]), &sg, 11, 12, S_IFREG | 0o2755), (11, 20, S_IFREG | 0o2755));
    }

    #[test]
    fn chmod_chown_and_times_follow_posix() {
        let f = ino(S_IFREG | 0o644, 10, 20);
        let owner = user(10, 10, &[30]);
        let other = user(11, 11, &[]);
        let ask = |valid, mode, uid, gid| SetattrAsk { valid, mode, uid, gid };
        // chmod: owner or root.
        may_setattr(&owner, &f, &ask(attr_valid::MODE, 0o600, 0, 0)).unwrap();
        assert_eq!(err(may_setattr(&other, &f, &ask(attr_valid::MODE, 0o600, 0, 0))), errno::EPERM);
        // chown: root only, except to the same owner.
        assert_eq!(err(may_setattr(&owner, &f, &ask(attr_valid::UID, 0, 11, 0))), errno::EPERM);
        may_setattr(&owner, &f, &ask(attr_valid::UID, 0, 10, 0)).unwrap();
        assert_eq!(err(may_setattr(&other, &f, &ask(attr_valid::UID, 0, 10, 0))), errno::EPERM);
        may_setattr(&Creds::ROOT, &f, &ask(attr_valid::UID | attr_valid::GID, 0, 11, 11)).unwrap();
        // chgrp: the owner to a group it is in (or the file's own).
        may_setattr(&owner, &f, &ask(attr_valid::GID, 0, 0, 30)).unwrap();
        may_setattr(&owner, &f, &ask(attr_valid::GID, 0, 0, 20)).unwrap();
        assert_eq!(err(may_setattr(&owner, &f, &ask(attr_valid::GID, 0, 0, 31))), errno::EPERM);
        assert_eq!(err(may_setattr(&user(11, 30, &[]), &f, &ask(attr_valid::GID, 0, 0, 30))), errno::EPERM);
        // Explicit times: owner or root (EPERM); "now": also write permission (EACCES).
        let times = attr_valid::ATIME | attr_valid::MTIME;
        may_setattr(&owner, &f, &ask(times, 0, 0, 0)).unwrap();
        assert_eq!(err(may_setattr(&other, &f, &ask(times, 0, 0, 0))), errno::EPERM);
        assert_eq!(err(may_setattr(&other, &f, &ask(times | attr_valid::TIMES_NOW, 0, 0, 0))), errno::EACCES);
        let shared = ino(S_IFREG | 0o666, 10, 20);
        may_setattr(&other, &shared, &ask(times | attr_valid::TIMES_NOW, 0, 0, 0)).unwrap();
        // Truncate: write permission, unless through a write handle.
        assert_eq!(err(may_setattr(&other, &f, &ask(attr_valid::SIZE, 0, 0, 0))), errno::EACCES);
        may_setattr(&other, &f, &ask(attr_valid::SIZE | attr_valid::FROM_OPEN, 0, 0, 0)).unwrap();
        let punch = attr_valid::MTIME | attr_valid::TIMES_NOW | attr_valid::FROM_OPEN;
        may_setattr(&other, &f, &ask(punch, 0, 0, 0)).unwrap();
        may_setattr(&other, &shared, &ask(attr_valid::SIZE, 0, 0, 0)).unwrap();
    }

    #[test]
    fn set_id_bits_are_dropped_as_linux_drops_them() {
        let f = ino(S_IFREG | 0o644, 10, 20);
        let chmod = SetattrAsk { valid: attr_valid::MODE, mode: 0o2755, ..SetattrAsk::default() };
        // Not in the file's group: set-group-ID is cleared.
        assert_eq!(mode_after_setattr(&user(10, 10, &[]), &f, &chmod, 20), S_IFREG | 0o755);
        assert_eq!(mode_after_setattr(&user(10, 10, &[20]), &f, &chmod, 20), S_IFREG | 0o2755);
        assert_eq!(mode_after_setattr(&Creds::ROOT, &f, &chmod, 20), S_IFREG | 0o2755);
        // chown of a non-directory drops set-user-ID, and set-group-ID with group exec.
        let s = ino(S_IFREG | 0o6755, 10, 20);
        let chown = SetattrAsk { valid: attr_valid::UID, uid: 11, ..SetattrAsk::default() };
        assert_eq!(mode_after_setattr(&Creds::ROOT, &s, &chown, 20), S_IFREG | 0o755);
        let s = ino(S_IFREG | 0o6745, 10, 20);
        assert_eq!(mode_after_setattr(&Creds::ROOT, &s, &chown, 20), S_IFREG | 0o2745);
        let d = ino(S_IFDIR | 0o6755, 10, 20);
        assert_eq!(mode_after_setattr(&Creds::ROOT, &d, &chown, 20), S_IFDIR | 0o6755);
    }

    #[test]
    fn open_modes() {
        let f = ino(S_IFREG | 0o604, 10, 20);
        let other = user(11, 11, &[]);
        may_open(&other, &f, 0).unwrap();
        assert_eq!(err(may_open(&other, &f, open_flags::WRONLY)), errno::EACCES);
        assert_eq!(err(may_open(&other, &f, open_flags::RDWR)), errno::EACCES);
        assert_eq!(err(may_open(&other, &f, open_flags::TRUNC)), errno::EACCES);
        may_open(&user(10, 10, &[]), &f, open_flags::RDWR | open_flags::TRUNC).unwrap();
        assert_eq!(err(may_open(&user(10, 10, &[]), &ino(S_IFREG | 0o200, 10, 20), 0)), errno::EACCES);
        // execve of a 0711 file: execute, not read.
        let x = ino(S_IFREG | 0o711, 10, 20);
        may_open(&other, &x, open_flags::EXEC).unwrap();
        assert_eq!(err(may_open(&other, &x, 0)), errno::EACCES);
    }

    #[test]
    fn xattr_namespaces() {
        let f = ino(S_IFREG | 0o644, 10, 20);
        let other = user(11, 11, &[]);
        may_xattr(&other, &f, "user.a", false).unwrap();
        assert_eq!(err(may_xattr(&other, &f, "user.a", true)), errno::EACCES);
        may_xattr(&user(10, 10, &[]), &f, "user.a", true).unwrap();
        assert_eq!(err(may_xattr(&other, &f, "trusted.a", false)), errno::ENODATA);
        assert_eq!(err(may_xattr(&user(10, 10, &[]), &f, "trusted.a", true)), errno::EPERM);
        may_xattr(&Creds::ROOT, &f, "trusted.a", true).unwrap();
        let fifo = ino(0o010000 | 0o666, 10, 20);
        assert_eq!(err(may_xattr(&user(10, 10, &[]), &fifo, "user.a", true)), errno::EPERM);
        assert_eq!(err(may_xattr(&other, &f, "security.a", true)), errno::EPERM);
        may_xattr(&other, &f, "security.a", false).unwrap();
    }
}
