//! Permission checks through the namespace's operations (the rules
//! themselves are tested in `crate::perm`): each operation checks the
//! caller it is given, under its write lock, and refuses with Linux's
//! errno before changing anything.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use ptlrpc::wire::Fid;
use ptlrpc::wire::mds::{Creds, Timestamp, access_mask, attr_valid, open_flags};
use ptlrpc::wire::mgs::{ConfigCmd, TargetKind};

use super::*;
use crate::alloc::fake::FakeOst;
use crate::alloc::{AllocConfig, Allocator, OstApi};
use crate::error::errno;
use crate::inode::S_IFREG;
use crate::store::FjallKv;

fn ns() -> (tempfile::TempDir, Namespace) {
    let dir = tempfile::tempdir().unwrap();
    let kv: Arc<dyn Kv> = Arc::new(FjallKv::open(dir.path()).unwrap());
    let ost = Arc::new(FakeOst::new(1 << 30, 1 << 29));
    let factory: crate::alloc::OstFactory = Arc::new(move |_, _| Arc::clone(&ost) as Arc<dyn OstApi>);
    let alloc = Arc::new(Allocator::new(Arc::clone(&kv), factory, AllocConfig::default()));
    let ns = Namespace::mount(kv, alloc).unwrap();
    let cmd = ConfigCmd::AddTarget { kind: TargetKind::Ost, index: 0, nids: vec!["0@lo".into()], failover: vec![] };
    ns.alloc().apply(&cmd).unwrap();
    ns.alloc().refresh();
    (dir, ns)
}

fn user(uid: u32) -> Creds {
    Creds { uid, gid: uid, groups: vec![] }
}

fn as_user(c: &Creds, mode: u32) -> CreateArgs {
    CreateArgs { creds: c.clone(), mode, uid: c.uid, gid: c.gid, time: Timestamp::secs(1), ..CreateArgs::default() }
}

fn chmod(ns: &Namespace, f: Fid, mode: u32) {
    ns.setattr(f, &SetattrArgs { valid: attr_valid::MODE, mode, ..SetattrArgs::default() }).unwrap();
}

fn err<T: std::fmt::Debug>(r: Result<T>) -> i32 {
    r.expect_err("refused").errno()
}

#[test]
fn creates_need_write_and_search_on_the_parent_and_take_the_callers_ids() {
    let (_d, ns) = ns();
    let u = user(1000);
    // The root directory is 0755 root's.
    assert_eq!(err(ns.create(Fid::ROOT, "f", &as_user(&u, S_IFREG | 0o644))), errno::EACCES);
    assert_eq!(err(ns.create(Fid::ROOT, "d", &as_user(&u, S_IFDIR | 0o755))), errno::EACCES);
    assert_eq!(err(ns.open(Fid::ROOT, "o", None, open_flags::CREAT, &as_user(&u, 0o644))), errno::EACCES);
    chmod(&ns, Fid::ROOT, 0o777);
    // A non-root caller creates as itself, whatever the body says.
    let mut a = as_user(&u, S_IFREG | 0o644);
    a.uid = 0;
    let (f, _) = ns.create(Fid::ROOT, "f", &a).unwrap();
    assert_eq!((f.uid, f.gid), (1000, 1000));
    // An existing name is EEXIST before the write check, a missing parent
    // search permission EACCES before both.
    chmod(&ns, Fid::ROOT, 0o755);
    assert_eq!(err(ns.create(Fid::ROOT, "f", &as_user(&u, S_IFREG | 0o644))), errno::EEXIST);
    chmod(&ns, Fid::ROOT, 0o754);
    assert_eq!(err(ns.create(Fid::ROOT, "f", &as_user(&u, S_IFREG | 0o644))), errno::EACCES);
    assert_eq!(err(ns.lookup_as(&u, Fid::ROOT, "f")), errno::EACCES);
    ns.lookup_as(&Creds::ROOT, Fid::ROOT, "f").unwrap();
}

#[test]
fn a_setgid_directory_gives_its_group() {
    let (_d, ns) = ns();
    let (d, _) = ns.create(Fid::ROOT, "sg", &as_user(&Creds::ROOT, S_IFDIR | 0o2777)).unwrap();
    ns.setattr(d.fid, &SetattrArgs { valid: attr_valid::GID, gid: 50, ..SetattrArgs::default() }).unwrap();
    let u = user(1000);
    let (sub, _) = ns.create(d.fid, "sub", &as_user(&u, S_IFDIR | 0o755)).unwrap();
    assert_eq!((sub.uid, sub.gid, sub.mode & 0o7777), (1000, 50, 0o2755));
    let (f, _) = ns.create(d.fid, "f", &as_user(&u, S_IFREG | 0o2755)).unwrap();
    assert_eq!((f.gid, f.mode & 0o7777), (50, 0o755), "not in group 50: no set-group-ID");
}

#[test]
fn unlink_rename_and_link_check_the_directories_and_the_sticky_bit() {
    let (_d, ns) = ns();
    let (tmp, _) = ns.create(Fid::ROOT, "tmp", &as_user(&Creds::ROOT, S_IFDIR | 0o1777)).unwrap();
    let (a, b) = (user(1000), user(1001));
    let (f, _) = ns.create(tmp.fid, "mine", &as_user(&a, S_IFREG | 0o644)).unwrap();
    let t = Timestamp::secs(2);
    assert_eq!(err(ns.unlink_as(&b, tmp.fid, "mine", false, t)), errno::EPERM);
    assert_eq!(err(ns.rename_as(&b, tmp.fid, "mine", tmp.fid, "x", t)), errno::EPERM);
    // A name that is not there: ENOENT, not a permission error.
    assert_eq!(err(ns.unlink_as(&b, tmp.fid, "none", false, t)), errno::ENOENT);
    // Replacing someone else's file in a sticky directory is refused too.
    ns.create(tmp.fid, "theirs", &as_user(&b, S_IFREG | 0o644)).unwrap();
    assert_eq!(err(ns.rename_as(&b, tmp.fid, "theirs", tmp.fid, "mine", t)), errno::EPERM);
    // In a directory the caller cannot write: EACCES.
    assert_eq!(err(ns.link_as(&a, f.fid, Fid::ROOT, "l", t)), errno::EACCES);
    assert_eq!(err(ns.rename_as(&a, tmp.fid, "mine", Fid::ROOT, "m", t)), errno::EACCES);
    ns.link_as(&a, f.fid, tmp.fid, "l", t).unwrap();
    ns.rename_as(&a, tmp.fid, "mine", tmp.fid, "m2", t).unwrap();
    ns.unlink_as(&a, tmp.fid, "m2", false, t).unwrap();
    // A directory moved to another parent must be writable by the mover.
    let (d, _) = ns.create(tmp.fid, "d", &as_user(&a, S_IFDIR | 0o555)).unwrap();
    let (e, _) = ns.create(tmp.fid, "e", &as_user(&a, S_IFDIR | 0o777)).unwrap();
    assert_eq!(err(ns.rename_as(&a, tmp.fid, "d", e.fid, "d", t)), errno::EACCES);
    ns.rename_as(&a, tmp.fid, "d", tmp.fid, "d2", t).unwrap();
    assert_eq!(ns.inode(d.fid).unwrap().parent, tmp.fid);
}

#[test]
fn opens_check_the_mode_except_for_the_creator() {
    let (_d, ns) = ns();
    chmod(&ns, Fid::ROOT, 0o777);
    let (a, b) = (user(1000), user(1001));
    // The creator opens a new mode-0 file for writing.
    let o = ns.open(Fid::ROOT, "f", None, open_flags::CREAT | open_flags::RDWR, &as_user(&a, 0)).unwrap();
    ns.close(o.handle, None).unwrap();
    // Opened again it is refused, to its owner too; root may.
    assert_eq!(err(ns.open(Fid::ROOT, "f", None, open_flags::RDWR, &as_user(&a, 0))), errno::EACCES);
    assert_eq!(err(ns.open(Fid::ROOT, "f", None, open_flags::CREAT, &as_user(&a, 0))), errno::EACCES);
    assert_eq!(err(ns.open(Fid::ROOT, "", Some(o.inode.fid), 0, &as_user(&a, 0))), errno::EACCES);
    let r = ns.open(Fid::ROOT, "f", None, open_flags::RDWR, &as_user(&Creds::ROOT, 0)).unwrap();
    ns.close(r.handle, None).unwrap();
    chmod(&ns, o.inode.fid, 0o604);
    let r = ns.open(Fid::ROOT, "", Some(o.inode.fid), 0, &as_user(&b, 0)).unwrap();
    ns.close(r.handle, None).unwrap();
    assert_eq!(err(ns.open(Fid::ROOT, "", Some(o.inode.fid), open_flags::WRONLY, &as_user(&b, 0))), errno::EACCES);
    assert_eq!(err(ns.open(Fid::ROOT, "f", None, open_flags::TRUNC, &as_user(&b, 0))), errno::EACCES);
    // access(2).
    ns.getattr_as(&b, o.inode.fid, access_mask::READ).unwrap();
    assert_eq!(err(ns.getattr_as(&b, o.inode.fid, access_mask::WRITE)), errno::EACCES);
    assert_eq!(err(ns.getattr_as(&Creds::ROOT, o.inode.fid, access_mask::EXEC)), errno::EACCES);
}

#[test]
fn setattr_checks_ownership_and_drops_set_id_bits() {
    let (_d, ns) = ns();
    chmod(&ns, Fid::ROOT, 0o777);
    let (a, b) = (user(1000), Creds { uid: 1001, gid: 1001, groups: vec![60] });
    let (f, _) = ns.create(Fid::ROOT, "f", &as_user(&a, S_IFREG | 0o644)).unwrap();
    let by = |c: &Creds, valid, mode, uid, gid| SetattrArgs {
        creds: c.clone(),
        valid,
        mode,
        uid,
        gid,
        ..SetattrArgs::default()
    };
    assert_eq!(err(ns.setattr(f.fid, &by(&b, attr_valid::MODE, 0o777, 0, 0))), errno::EPERM);
    assert_eq!(err(ns.setattr(f.fid, &by(&a, attr_valid::UID, 0, 1001, 0))), errno::EPERM);
    assert_eq!(err(ns.setattr(f.fid, &by(&a, attr_valid::GID, 0, 0, 60))), errno::EPERM);
    assert_eq!(err(ns.setattr(f.fid, &by(&b, attr_valid::SIZE, 0, 0, 0))), errno::EACCES);
    let now = attr_valid::ATIME | attr_valid::MTIME | attr_valid::TIMES_NOW;
    assert_eq!(err(ns.setattr(f.fid, &by(&b, now, 0, 0, 0))), errno::EACCES);
    assert_eq!(err(ns.setattr(f.fid, &by(&b, now & !attr_valid::TIMES_NOW, 0, 0, 0))), errno::EPERM);
    // The owner's chmod to set-group-ID of a group it is not in drops the bit.
    ns.setattr(f.fid, &by(&Creds::ROOT, attr_valid::GID, 0, 0, 50)).unwrap();
    let (i, _) = ns.setattr(f.fid, &by(&a, attr_valid::MODE, 0o2755, 0, 0)).unwrap();
    assert_eq!(i.mode & 0o7777, 0o755);
    // Root's chown of a set-user-ID file drops it.
    ns.setattr(f.fid, &by(&Creds::ROOT, attr_valid::MODE, 0o4755, 0, 0)).unwrap();
    let (i, _) = ns.setattr(f.fid, &by(&Creds::ROOT, attr_valid::UID | attr_valid::GID, 0, 1001, 60)).unwrap();
    assert_eq!((i.uid, i.gid, i.mode & 0o7777), (1001, 60, 0o755));
    // Nothing changed by the refused calls.
    assert_eq!(ns.inode(f.fid).unwrap().size, 0);
}

#[test]
fn user_xattrs_follow_the_mode_bits() {
    let (_d, ns) = ns();
    chmod(&ns, Fid::ROOT, 0o777);
    let (a, b) = (user(1000), user(1001));
    let (f, _) = ns.create(Fid::ROOT, "f", &as_user(&a, S_IFREG | 0o640)).unwrap();
    ns.setxattr_as(&a, f.fid, "user.k", b"v", 0).unwrap();
    assert_eq!(err(ns.setxattr_as(&b, f.fid, "user.k", b"w", 0)), errno::EACCES);
    assert_eq!(err(ns.getxattr_as(&b, f.fid, "user.k")), errno::EACCES);
    assert_eq!(ns.getxattr_as(&a, f.fid, "user.k").unwrap(), b"v");
    assert_eq!(err(ns.setxattr_as(&a, f.fid, "trusted.k", b"v", 0)), errno::EPERM);
}
