//! Namespace unit tests on a real fjall store in a temporary directory,
//! with in-memory fake OSTs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use parking_lot::Mutex;
use ptlrpc::wire::Fid;
use ptlrpc::wire::mds::{StripeSpec, Timestamp, attr_valid, open_flags, xattr_flags};
use ptlrpc::wire::mgs::{ConfigCmd, TargetKind};

use super::*;
use crate::alloc::fake::FakeOst;
use crate::alloc::{AllocConfig, Allocator, OstApi, OstFactory};
use crate::check::check_ns;
use crate::error::errno;
use crate::inode::{S_IFLNK, S_IFREG};
use crate::store::FjallKv;
use ptlrpc::wire::OstId;

type Osts = Arc<Mutex<BTreeMap<u32, Arc<FakeOst>>>>;

struct Fx {
    dir: tempfile::TempDir,
    osts: Osts,
    ns: Namespace,
}

fn factory(osts: &Osts) -> OstFactory {
    let osts = Arc::clone(osts);
    Arc::new(move |i, _| {
        let o = Arc::clone(osts.lock().entry(i).or_insert_with(|| Arc::new(FakeOst::new(1 << 30, 1 << 29))));
        o as Arc<dyn OstApi>
    })
}

fn mount(dir: &std::path::Path, osts: &Osts) -> Namespace {
    let kv: Arc<dyn Kv> = Arc::new(FjallKv::open(dir).unwrap());
    let cfg = AllocConfig { precreate_batch: 16, ..AllocConfig::default() };
    let alloc = Arc::new(Allocator::new(Arc::clone(&kv), factory(osts), cfg));
    Namespace::mount(kv, alloc).unwrap()
}

fn add_ost(ns: &Namespace, i: u32) {
    let cmd = ConfigCmd::AddTarget { kind: TargetKind::Ost, index: i, nids: vec![format!("{i}@lo")], failover: vec![] };
    ns.alloc().apply(&cmd).unwrap();
    ns.alloc().refresh();
}

fn fx(n_osts: u32) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let osts: Osts = Arc::default();
    let ns = mount(dir.path(), &osts);
    for i in 0..n_osts {
        add_ost(&ns, i);
    }
    Fx { dir, osts, ns }
}

fn file() -> CreateArgs {
    CreateArgs { mode: S_IFREG | 0o644, time: Timestamp::secs(10), ..CreateArgs::default() }
}

fn dir() -> CreateArgs {
    CreateArgs { mode: S_IFDIR | 0o755, time: Timestamp::secs(10), ..CreateArgs::default() }
}

fn assert_clean(ns: &Namespace) {
    let r = check_ns(ns).unwrap();
    assert!(r.is_clean(), "{:#?}", r.problems);
}

fn errno_of<T: std::fmt::Debug>(r: Result<T>) -> i32 {
    r.expect_err("should fail").errno()
}

#[test]
fn create_lookup_readdir_unlink_with_versions() {
    let f = fx(2);
    let ns = &f.ns;
    let root_v = ns.inode(Fid::ROOT).unwrap().version;
    let (a, done) = ns.create(Fid::ROOT, "a", &file()).unwrap();
    assert_eq!(done.pre_versions, vec![root_v, 0]);
    assert_eq!(a.version, done.transno);
    assert_eq!(ns.inode(Fid::ROOT).unwrap().version, done.transno, "create sets the parent's version");
    assert_eq!(done.transno >> 32, u64::from(ns.txn().epoch()));
    assert_eq!(a.layout.as_ref().unwrap().objects.len(), 1);
    assert_eq!(ns.lookup(Fid::ROOT, "a").unwrap().attr.fid, a.fid);
    assert_eq!(errno_of(ns.create(Fid::ROOT, "a", &file())), errno::EEXIST);
    assert_eq!(errno_of(ns.lookup(Fid::ROOT, "zz")), errno::ENOENT);
    assert_eq!(errno_of(ns.create(a.fid, "x", &file())), errno::ENOTDIR);
    let d = ns.readdir(Fid::ROOT, 0, 100).unwrap();
    assert!(d.end);
    assert_eq!(d.entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), vec!["a"]);
    let done = ns.unlink(Fid::ROOT, "a", false, Timestamp::secs(11)).unwrap();
    assert_eq!(done.pre_versions[1], a.version);
    assert_eq!(errno_of(ns.inode(a.fid)), errno::ENOENT);
    assert_eq!(ns.process_destroys(100).unwrap(), (1, 0));
    let o = a.layout.unwrap().objects[0];
    assert!(!f.osts.lock()[&o.ost].objects.lock().contains(&o.id), "object destroyed on its OST");
    assert_clean(ns);
}

#[test]
fn directories_links_and_counts() {
    let f = fx(0);
    let ns = &f.ns;
    let (d, _) = ns.create(Fid::ROOT, "d", &dir()).unwrap();
    let (sub, _) = ns.create(d.fid, "sub", &dir()).unwrap();
    let (x, _) = ns.create(d.fid, "x", &file()).unwrap();
    assert!(x.layout.is_none(), "no OSTs: a file without objects");
    assert_eq!(ns.inode(d.fid).unwrap().nlink, 3);
    assert_eq!(ns.inode(Fid::ROOT).unwrap().nlink, 3);
    assert_eq!(errno_of(ns.unlink(Fid::ROOT, "d", true, Timestamp::secs(1))), errno::ENOTEMPTY);
    assert_eq!(errno_of(ns.unlink(Fid::ROOT, "d", false, Timestamp::secs(1))), errno::EISDIR);
    assert_eq!(errno_of(ns.unlink(d.fid, "x", true, Timestamp::secs(1))), errno::ENOTDIR);
    assert_eq!(errno_of(ns.link(d.fid, Fid::ROOT, "dl", Timestamp::secs(1))), errno::EPERM);
    ns.link(x.fid, Fid::ROOT, "x2", Timestamp::secs(1)).unwrap();
    assert_eq!(ns.inode(x.fid).unwrap().nlink, 2);
    assert_clean(ns);
    ns.unlink(d.fid, "x", false, Timestamp::secs(2)).unwrap();
    assert_eq!(ns.inode(x.fid).unwrap().nlink, 1);
    ns.unlink(d.fid, "sub", true, Timestamp::secs(2)).unwrap();
    assert_eq!(errno_of(ns.inode(sub.fid)), errno::ENOENT);
    ns.unlink(Fid::ROOT, "d", true, Timestamp::secs(3)).unwrap();
    assert_eq!(ns.inode(Fid::ROOT).unwrap().nlink, 2);
    assert_clean(ns);
}

#[test]
fn rename_same_and_cross_dir_replacing_targets() {
    let f = fx(1);
    let ns = &f.ns;
    let (a, _) = ns.create(Fid::ROOT, "a", &dir()).unwrap();
    let (b, _) = ns.create(Fid::ROOT, "b", &dir()).unwrap();
    let (x, _) = ns.create(a.fid, "x", &file()).unwrap();
    let (y, _) = ns.create(b.fid, "y", &file()).unwrap();
    // Same directory.
    ns.rename(a.fid, "x", a.fid, "x1", Timestamp::secs(5)).unwrap();
    assert_eq!(ns.lookup_fid(a.fid, "x1").unwrap(), x.fid);
    // Cross directory, replacing a file: all four objects get the version.
    let vs: Vec<u64> = [a.fid, b.fid, x.fid, y.fid].iter().map(|f| ns.inode(*f).unwrap().version).collect();
    let done = ns.rename(a.fid, "x1", b.fid, "y", Timestamp::secs(6)).unwrap();
    assert_eq!(done.pre_versions, vs);
    for f in [a.fid, b.fid, x.fid] {
        assert_eq!(ns.inode(f).unwrap().version, done.transno);
    }
    assert_eq!(errno_of(ns.inode(y.fid)), errno::ENOENT, "replaced file destroyed");
    assert_eq!(ns.lookup_fid(b.fid, "y").unwrap(), x.fid);
    // Directories: into its own subtree is refused; over an empty dir works.
    let (c, _) = ns.create(a.fid, "c", &dir()).unwrap();
    assert_eq!(errno_of(ns.rename(Fid::ROOT, "a", c.fid, "loop", Timestamp::secs(7))), errno::EINVAL);
    ns.create(Fid::ROOT, "e", &dir()).unwrap();
    assert_eq!(errno_of(ns.rename(Fid::ROOT, "b", Fid::ROOT, "a", Timestamp::secs(7))), errno::ENOTEMPTY);
    ns.rename(a.fid, "c", Fid::ROOT, "e", Timestamp::secs(8)).unwrap();
    assert_eq!(ns.inode(c.fid).unwrap().parent, Fid::ROOT);
    assert_eq!(errno_of(ns.rename(b.fid, "y", Fid::ROOT, "e", Timestamp::secs(9))), errno::EISDIR);
    assert_eq!(errno_of(ns.rename(Fid::ROOT, "e", b.fid, "y", Timestamp::secs(9))), errno::ENOTDIR);
    // A rename onto another name of the same inode does nothing.
    ns.link(x.fid, Fid::ROOT, "xl", Timestamp::secs(9)).unwrap();
    assert_eq!(ns.rename(b.fid, "y", Fid::ROOT, "xl", Timestamp::secs(10)).unwrap().transno, 0);
    assert_clean(ns);
}

#[test]
fn setattr_versions_skip_times_and_size() {
    let f = fx(0);
    let ns = &f.ns;
    let (x, _) = ns.create(Fid::ROOT, "x", &file()).unwrap();
    let t = SetattrArgs {
        valid: attr_valid::MTIME | attr_valid::SIZE,
        mtime: Timestamp { sec: 99, nsec: 7 },
        size: 5,
        ..SetattrArgs::default()
    };
    let (i, done) = ns.setattr(x.fid, &t).unwrap();
    assert_eq!((i.mtime, i.size, i.version), (Timestamp { sec: 99, nsec: 7 }, 5, x.version));
    assert!(done.transno > x.version, "still a transaction");
    let m = SetattrArgs { valid: attr_valid::MODE | attr_valid::UID, mode: 0o600, uid: 7, ..SetattrArgs::default() };
    let (i, done) = ns.setattr(x.fid, &m).unwrap();
    assert_eq!((i.mode, i.uid, i.version), (S_IFREG | 0o600, 7, done.transno));
}

#[test]
fn xattrs_symlinks_and_devices() {
    let f = fx(0);
    let ns = &f.ns;
    let (x, _) = ns.create(Fid::ROOT, "x", &file()).unwrap();
    ns.setxattr(x.fid, "user.a", b"1", 0).unwrap();
    assert_eq!(errno_of(ns.setxattr(x.fid, "user.a", b"2", xattr_flags::CREATE)), errno::EEXIST);
    assert_eq!(errno_of(ns.setxattr(x.fid, "user.b", b"2", xattr_flags::REPLACE)), errno::ENODATA);
    let done = ns.setxattr(x.fid, "user.b", b"2", 0).unwrap();
    assert_eq!(ns.inode(x.fid).unwrap().version, done.transno, "setxattr sets the version");
    assert_eq!(ns.getxattr(x.fid, "user.a").unwrap(), b"1");
    assert_eq!(ns.listxattr(x.fid).unwrap(), vec!["user.a", "user.b"]);
    ns.setxattr(x.fid, "user.a", b"", xattr_flags::REMOVE).unwrap();
    assert_eq!(errno_of(ns.getxattr(x.fid, "user.a")), errno::ENODATA);
    let s = CreateArgs { mode: S_IFLNK | 0o777, symlink: "/target/path".into(), ..CreateArgs::default() };
    let (l, _) = ns.create(Fid::ROOT, "l", &s).unwrap();
    let g = ns.getattr(l.fid).unwrap();
    assert_eq!((g.symlink.as_str(), g.attr.size), ("/target/path", 12));
    let dev = CreateArgs { mode: 0o020000 | 0o600, rdev: 0x0801, ..CreateArgs::default() };
    let (n, _) = ns.create(Fid::ROOT, "null", &dev).unwrap();
    assert_eq!(ns.getattr(n.fid).unwrap().attr.rdev, 0x0801);
    ns.unlink(Fid::ROOT, "x", false, Timestamp::secs(1)).unwrap();
    assert!(
        ns.kv().range(Table::Xattrs, &[], crate::store::KEY_END, 10).unwrap().is_empty(),
        "xattrs go with the inode"
    );
    assert_clean(ns);
}

#[test]
fn size_on_mdt_is_exact_only_after_a_lone_writer_closes_cleanly() {
    use ptlrpc::wire::mds::{SomAttr, attr_flags};
    let f = fx(1);
    let ns = &f.ns;
    let c = CreateArgs { mode: 0o644, ..CreateArgs::default() };
    let exact = |fid| {
        let a = ns.getattr(fid).unwrap().attr;
        (a.flags & attr_flags::SOM_EXACT != 0).then_some((a.size, a.blocks, a.mtime))
    };
    let seen = SomAttr { size: 4096, blocks: 8, mtime: Timestamp { sec: 20, nsec: 5 } };
    let w = ns.open(Fid::ROOT, "f", None, open_flags::CREAT | open_flags::WRONLY, &c).unwrap();
    let fid = w.inode.fid;
    assert_eq!(exact(fid), None, "open for writing");
    let r = ns.open(Fid::ROOT, "f", None, 0, &c).unwrap();
    // What the close will leave, asked before it (the close's reply).
    let after = ns.attr_after_close(crate::ns::LOCAL, w.handle, Some(seen));
    assert_eq!(ns.attr_after_close("someone else", w.handle, Some(seen)), None, "not its handle");
    ns.close(w.handle, Some(seen)).unwrap();
    assert_eq!(exact(fid), Some((4096, 8, seen.mtime)), "a reader does not matter");
    assert_eq!(after, Some(ns.getattr(fid).unwrap().attr), "the close's reply says what a getattr says");
    assert_eq!(ns.lookup(Fid::ROOT, "f").unwrap().attr.size, 4096, "lookups answer it too");
    ns.close(r.handle, None).unwrap();
    // Another writer hides it until its own clean close.
    let w = ns.open(Fid::ROOT, "f", None, open_flags::RDWR, &c).unwrap();
    assert_eq!(exact(fid), None);
    ns.close(w.handle, Some(SomAttr { size: 10, ..seen })).unwrap();
    assert_eq!(exact(fid).map(|e| e.0), Some(10));
    // A truncate or utimes (objects changed outside a handle): inexact.
    let t = SetattrArgs { valid: attr_valid::SIZE, size: 3, ..SetattrArgs::default() };
    ns.setattr(fid, &t).unwrap();
    assert_eq!(exact(fid), None);
    assert_eq!(ns.getattr(fid).unwrap().attr.size, 3, "the MDT's own record otherwise");
    // Two writers overlapping: neither close vouches for the other.
    let a = ns.open(Fid::ROOT, "f", None, open_flags::RDWR, &c).unwrap();
    let b = ns.open(Fid::ROOT, "f", None, open_flags::RDWR, &c).unwrap();
    assert_eq!(ns.attr_after_close(crate::ns::LOCAL, b.handle, Some(seen)), None, "A is still open");
    ns.close(b.handle, Some(seen)).unwrap();
    ns.close(a.handle, Some(seen)).unwrap();
    assert_eq!(exact(fid), None);
    assert_eq!(ns.som_exact_files(), 0);
    // Unlinked: forgotten.
    let w = ns.open(Fid::ROOT, "f", None, open_flags::RDWR, &c).unwrap();
    ns.close(w.handle, Some(seen)).unwrap();
    assert_eq!(ns.som_exact_files(), 1);
    ns.unlink(Fid::ROOT, "f", false, Timestamp::secs(1)).unwrap();
    assert_eq!(ns.som_exact_files(), 0);
    assert_clean(ns);
}

#[test]
fn open_unlinked_file_lives_until_last_close() {
    let f = fx(1);
    let ns = &f.ns;
    let c = CreateArgs { mode: 0o644, ..CreateArgs::default() };
    let o1 = ns.open(Fid::ROOT, "f", None, open_flags::CREAT | open_flags::RDWR, &c).unwrap();
    assert!(o1.done.transno > 0);
    assert_eq!(errno_of(ns.open(Fid::ROOT, "f", None, open_flags::CREAT | open_flags::EXCL, &c)), errno::EEXIST);
    let o2 = ns.open(Fid::ROOT, "f", None, 0, &c).unwrap();
    assert_eq!(ns.open_files(), 2);
    ns.unlink(Fid::ROOT, "f", false, Timestamp::secs(1)).unwrap();
    assert_eq!(ns.getattr(o1.inode.fid).unwrap().attr.nlink, 0, "kept while open");
    assert_clean(ns);
    assert_eq!(ns.close(o1.handle, None).unwrap().transno, 0);
    assert!(ns.inode(o1.inode.fid).is_ok());
    assert!(ns.close(o2.handle, None).unwrap().transno > 0, "last close destroys");
    assert_eq!(errno_of(ns.inode(o1.inode.fid)), errno::ENOENT);
    assert_eq!(errno_of(ns.close(o2.handle, None)), errno::EBADF);
    assert_eq!(ns.process_destroys(10).unwrap(), (1, 0));
    assert_clean(ns);
}

#[test]
fn readdir_cookies_survive_concurrent_change() {
    let f = fx(0);
    let ns = &f.ns;
    let (d, _) = ns.create(Fid::ROOT, "d", &dir()).unwrap();
    for i in 0..3000 {
        ns.create(d.fid, &format!("f{i}"), &file()).unwrap();
    }
    let cookies_of = |ns: &Namespace| -> BTreeMap<String, u64> {
        let (mut out, mut c) = (BTreeMap::new(), 0);
        loop {
            let p = ns.readdir(d.fid, c, 4096).unwrap();
            out.extend(p.entries.iter().map(|e| (e.name.clone(), e.cookie)));
            c = p.next;
            if p.end {
                return out;
            }
        }
    };
    let before = cookies_of(ns);
    let mut seen = BTreeSet::new();
    let first = ns.readdir(d.fid, 0, 1000).unwrap();
    seen.extend(first.entries.iter().map(|e| e.name.clone()));
    // Between pages: remove some names (seen or not), add others.
    let mut removed = BTreeSet::new();
    for i in (0..3000).step_by(7) {
        ns.unlink(d.fid, &format!("f{i}"), false, Timestamp::secs(1)).unwrap();
        removed.insert(format!("f{i}"));
    }
    for i in 0..500 {
        ns.create(d.fid, &format!("new{i}"), &file()).unwrap();
    }
    let mut cookie = first.next;
    loop {
        let page = ns.readdir(d.fid, cookie, 700).unwrap();
        for e in &page.entries {
            assert!(seen.insert(e.name.clone()), "{} returned twice", e.name);
        }
        cookie = page.next;
        if page.end {
            break;
        }
    }
    for i in 0..3000 {
        let n = format!("f{i}");
        assert!(seen.contains(&n) || removed.contains(&n), "{n} lost");
    }
    assert_eq!(ns.inode(d.fid).unwrap().entries, 3000 - removed.len() as u64 + 500);
    // Every surviving entry kept its cookie.
    let after = cookies_of(ns);
    for (name, c) in &before {
        assert!(removed.contains(name) || after.get(name) == Some(c), "{name} changed cookie");
    }
    assert_clean(ns);
}

#[test]
fn layouts_inherit_directory_defaults_and_pools() {
    let f = fx(4);
    let ns = &f.ns;
    let wide = StripeSpec { stripe_count: 3, stripe_size: 4 << 20, stripe_offset: -1, pool: String::new() };
    let (d, _) = ns.create(Fid::ROOT, "wide", &CreateArgs { stripe: Some(wide), ..dir() }).unwrap();
    let (sub, _) = ns.create(d.fid, "sub", &dir()).unwrap();
    assert_eq!(sub.default_stripe.as_ref().map(|s| s.stripe_count), Some(3), "subdirectories inherit");
    let (x, _) = ns.create(sub.fid, "x", &file()).unwrap();
    let l = x.layout.unwrap();
    assert_eq!((l.objects.len(), l.stripe_size), (3, 4 << 20));
    assert_eq!(l.objects.iter().map(|o| o.ost).collect::<BTreeSet<_>>().len(), 3, "distinct OSTs");
    let all = StripeSpec { stripe_count: u32::MAX, ..StripeSpec::default() };
    let (y, _) = ns.create(Fid::ROOT, "y", &CreateArgs { stripe: Some(all), ..file() }).unwrap();
    assert_eq!(y.layout.unwrap().objects.len(), 4);
    ns.alloc().apply(&ConfigCmd::PoolNew { pool: "fast".into() }).unwrap();
    ns.alloc().apply(&ConfigCmd::PoolAdd { pool: "fast".into(), ost: 2 }).unwrap();
    let pooled = StripeSpec { pool: "fast".into(), stripe_count: 2, ..StripeSpec::default() };
    let (z, _) = ns.create(Fid::ROOT, "z", &CreateArgs { stripe: Some(pooled), ..file() }).unwrap();
    let zl = z.layout.unwrap();
    assert_eq!((zl.objects.len(), zl.objects[0].ost, zl.pool.as_str()), (1, 2, "fast"));
    let bad = StripeSpec { pool: "nope".into(), ..StripeSpec::default() };
    assert_eq!(errno_of(ns.create(Fid::ROOT, "w", &CreateArgs { stripe: Some(bad), ..file() })), errno::EINVAL);
    let at = StripeSpec { stripe_offset: 3, stripe_count: 2, ..StripeSpec::default() };
    let (v, _) = ns.create(Fid::ROOT, "v", &CreateArgs { stripe: Some(at), ..file() }).unwrap();
    assert_eq!(v.layout.unwrap().objects.iter().map(|o| o.ost).collect::<Vec<_>>(), vec![3, 0]);
    assert_clean(ns);
}

fn osts_of(ns: &Namespace, n: usize) -> BTreeSet<u32> {
    (0..n)
        .map(|i| {
            let name = format!("q{}-{i}", ns.txn().last());
            ns.create(Fid::ROOT, &name, &file()).unwrap().0.layout.unwrap().objects[0].ost
        })
        .collect()
}

#[test]
fn lifecycle_add_activate_deactivate_remove_steers_allocation() {
    let f = fx(2);
    let ns = &f.ns;
    assert_eq!(osts_of(ns, 4), BTreeSet::from([0, 1]));
    add_ost(ns, 2);
    assert_eq!(osts_of(ns, 6), BTreeSet::from([0, 1, 2]), "added OST takes objects");
    let a = ns.alloc();
    a.apply(&ConfigCmd::Deactivate { kind: TargetKind::Ost, index: 1 }).unwrap();
    assert_eq!(osts_of(ns, 6), BTreeSet::from([0, 2]), "deactivated OST skipped");
    a.apply(&ConfigCmd::Activate { kind: TargetKind::Ost, index: 1 }).unwrap();
    assert_eq!(osts_of(ns, 6), BTreeSet::from([0, 1, 2]));
    a.apply(&ConfigCmd::PoolNew { pool: "p".into() }).unwrap();
    a.apply(&ConfigCmd::PoolAdd { pool: "p".into(), ost: 2 }).unwrap();
    a.apply(&ConfigCmd::Remove { kind: TargetKind::Ost, index: 2 }).unwrap();
    assert!(a.last_used(2).is_some(), "remove of an active OST is ignored");
    a.apply(&ConfigCmd::Deactivate { kind: TargetKind::Ost, index: 2 }).unwrap();
    a.apply(&ConfigCmd::Remove { kind: TargetKind::Ost, index: 2 }).unwrap();
    assert!(a.last_used(2).is_none());
    assert!(a.pools()["p"].is_empty(), "removed OST dropped from pools");
    assert_eq!(osts_of(ns, 4), BTreeSet::from([0, 1]));
    // A full OST is skipped; an unreachable one too.
    f.osts.lock()[&0].space.lock().kbytes_free = 0;
    a.refresh();
    assert_eq!(osts_of(ns, 4), BTreeSet::from([1]));
    *f.osts.lock()[&1].down.lock() = true;
    a.refresh();
    assert_eq!(errno_of(ns.create(Fid::ROOT, "nospace", &file())), errno::ENOSPC);
}

/// An OST that does not answer does not hold up another's reconnection:
/// while OST 0's orphan cleanup waits, OST 1 is reached and files are
/// created on it.
#[test]
fn a_silent_ost_does_not_hold_up_the_others_reconnection() {
    let f = fx(2);
    let a = f.ns.alloc();
    for i in [0, 1] {
        *f.osts.lock()[&i].down.lock() = true;
    }
    a.refresh();
    assert_eq!(errno_of(f.ns.create(Fid::ROOT, "none", &file())), errno::ENOSPC, "both OSTs lost");
    let ost0 = Arc::clone(&f.osts.lock()[&0]);
    ost0.hold(true);
    for i in [0, 1] {
        *f.osts.lock()[&i].down.lock() = false;
    }
    let created = std::thread::scope(|scope| {
        let round = scope.spawn(|| a.refresh());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let created = loop {
            if let Ok((x, _)) = f.ns.create(Fid::ROOT, "on1", &file()) {
                break Some(x);
            }
            if std::time::Instant::now() >= deadline {
                break None;
            }
            std::thread::yield_now();
        };
        // Released before any assertion: the round must end.
        ost0.hold(false);
        round.join().unwrap();
        created
    });
    let x = created.expect("OST 1 not reached while OST 0 was silent");
    assert_eq!(x.layout.unwrap().objects[0].ost, 1);
}

#[test]
fn weighted_allocation_beyond_imbalance() {
    let f = fx(2);
    let ns = &f.ns;
    f.osts.lock()[&0].space.lock().kbytes_free = 1 << 29;
    f.osts.lock()[&1].space.lock().kbytes_free = 1 << 25;
    ns.alloc().refresh();
    let mut hits = [0u32; 2];
    for i in 0..400 {
        let (x, _) = ns.create(Fid::ROOT, &format!("w{i}"), &file()).unwrap();
        hits[x.layout.unwrap().objects[0].ost as usize] += 1;
    }
    assert!(hits[0] > 5 * hits[1], "{hits:?}");
}

#[test]
fn remount_keeps_namespace_and_cleans_orphans_and_precreated_objects() {
    let mut f = fx(1);
    let c = CreateArgs { mode: 0o644, ..CreateArgs::default() };
    let (keep, _) = f.ns.create(Fid::ROOT, "keep", &file()).unwrap();
    let o = f.ns.open(Fid::ROOT, "orphan", None, open_flags::CREAT, &c).unwrap();
    f.ns.unlink(Fid::ROOT, "orphan", false, Timestamp::secs(1)).unwrap();
    let (gone, _) = f.ns.create(Fid::ROOT, "gone", &file()).unwrap();
    f.ns.unlink(Fid::ROOT, "gone", false, Timestamp::secs(1)).unwrap();
    let epoch = f.ns.txn().epoch();
    let ost = Arc::clone(&f.osts.lock()[&0]);
    assert!(ost.objects.lock().len() > 3, "a precreated range");
    // "Crash": drop without closing or processing destroys.
    drop(std::mem::replace(&mut f.ns, mount(tempfile::tempdir().unwrap().path(), &f.osts)));
    let ns = mount(f.dir.path(), &f.osts);
    add_ost(&ns, 0);
    assert_eq!(ns.txn().epoch(), epoch + 1);
    assert!(ns.txn().last() >= u64::from(epoch + 1) << 32);
    assert_eq!(ns.lookup_fid(Fid::ROOT, "keep").unwrap(), keep.fid);
    assert_eq!(ns.cleanup_orphans().unwrap(), 1);
    assert_eq!(errno_of(ns.inode(o.inode.fid)), errno::ENOENT);
    let (done, pending) = ns.process_destroys(100).unwrap();
    assert_eq!((done, pending), (2, 0), "destroys of 'gone' and the orphan replayed");
    let live: BTreeSet<ptlrpc::wire::OstId> = ost.objects.lock().clone();
    assert_eq!(live, BTreeSet::from([keep.layout.unwrap().objects[0].id]), "no leaked or precreated objects");
    assert!(gone.layout.is_some());
    let (n, _) = ns.create(Fid::ROOT, "new", &file()).unwrap();
    assert_ne!(n.fid, keep.fid);
    assert_clean(&ns);
}

#[test]
fn client_fids_come_from_granted_sequences_and_survive_a_remount() {
    let f = fx(1);
    let g = f.ns.grant_seqs(LOCAL, 2).unwrap();
    assert_eq!(g.end - g.start, 2);
    let mine = Fid { seq: g.start + 1, oid: 7, ver: 0 };
    let (x, _) = f.ns.create(Fid::ROOT, "x", &CreateArgs { fid: Some(mine), ..file() }).unwrap();
    assert_eq!(x.fid, mine);
    assert_eq!(f.ns.lookup_fid(Fid::ROOT, "x").unwrap(), mine);
    // The same FID again (a second create with it) is refused.
    assert_eq!(errno_of(f.ns.create(Fid::ROOT, "y", &CreateArgs { fid: Some(mine), ..file() })), errno::EEXIST);
    // Another client's FID, or one from a sequence nobody was granted, is
    // EPERM (counted); oid 0, oids past the width, system sequences EINVAL.
    let other = CreateArgs { fid: Some(Fid { seq: g.start, oid: 9, ver: 0 }), client: "other".into(), ..file() };
    assert_eq!(errno_of(f.ns.create(Fid::ROOT, "z", &other)), errno::EPERM);
    let ungranted = Fid { seq: g.end + 5, oid: 1, ver: 0 };
    assert_eq!(errno_of(f.ns.create(Fid::ROOT, "z", &CreateArgs { fid: Some(ungranted), ..file() })), errno::EPERM);
    assert_eq!(f.ns.fids_refused(), 2);
    for bad in [
        Fid { seq: g.start, oid: 0, ver: 0 },
        Fid { seq: g.start, oid: crate::fid::SEQ_WIDTH, ver: 0 },
        Fid { seq: 1, oid: 1, ver: 0 },
    ] {
        assert_eq!(errno_of(f.ns.create(Fid::ROOT, "z", &CreateArgs { fid: Some(bad), ..file() })), errno::EINVAL);
    }
    // MDT-chosen FIDs never collide with granted ones.
    let (own, _) = f.ns.create(Fid::ROOT, "own", &file()).unwrap();
    assert!(own.fid.seq < g.start || own.fid.seq >= g.end);
    assert_clean(&f.ns);
    // Grants are durable: after a remount the controller does not repeat them.
    drop(f.ns);
    let ns = mount(f.dir.path(), &f.osts);
    let g2 = ns.grant_seqs(LOCAL, 1).unwrap();
    assert!(g2.start >= g.end);
}

#[test]
fn a_crash_never_regrants_a_sequence() {
    let (live, disk) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let osts: Osts = Arc::default();
    let kv: Arc<dyn Kv> = Arc::new(crate::store::lossy::LossyKv::open(live.path(), disk.path()).unwrap());
    let cfg = AllocConfig { precreate_batch: 16, ..AllocConfig::default() };
    let ns = Namespace::mount(Arc::clone(&kv), Arc::new(Allocator::new(kv, factory(&osts), cfg))).unwrap();
    add_ost(&ns, 0);
    let f = Fx { dir: live, osts, ns };
    let mut granted = Vec::new();
    for (who, n) in [("a", 16), ("b", 1), ("a", 3)] {
        granted.push((who, f.ns.grant_seqs(who, n).unwrap()));
    }
    // The MDT's own FIDs come from a sequence granted to itself.
    let (own, _) = f.ns.create(Fid::ROOT, "own", &file()).unwrap();
    granted.push(("mdt", own.fid.seq..own.fid.seq + 1));
    // A create with a granted FID, not committed when the MDT crashes.
    let fa = Fid { seq: granted[0].1.start, oid: 1, ver: 0 };
    f.ns.create(Fid::ROOT, "x", &CreateArgs { fid: Some(fa), client: "a".into(), ..file() }).unwrap();
    // The crash: only what was persisted survives (nothing was committed
    // but the grants themselves).
    drop(f.ns);
    let ns = mount(disk.path(), &f.osts);
    assert!(ns.inode(own.fid).is_err() && ns.lookup_fid(Fid::ROOT, "x").is_err(), "the creates were lost");
    // Nothing granted before is granted again, to anyone (the MDT itself
    // included), and the clients' grants still hold: "a" may (re)create
    // with its FIDs (its replay), "b" may not use them.
    let (own2, _) = ns.create(Fid::ROOT, "own2", &file()).unwrap();
    // The MDT goes on in its own sequence (the cursor is written with the
    // inodes that use it), never into a client's.
    assert!(ns.inode(own.fid).is_err() || own2.fid != own.fid);
    let mut after = Vec::new();
    for who in ["a", "b", "c"] {
        after.push(ns.grant_seqs(who, 16).unwrap());
    }
    let clients_before: Vec<_> = granted.iter().filter(|(w, _)| *w != "mdt").collect();
    for (who, old) in &clients_before {
        assert!(!old.contains(&own2.fid.seq), "the MDT's FID {} is in {who}'s {old:?}", own2.fid);
    }
    for new in &after {
        for (who, old) in &granted {
            assert!(new.end <= old.start || new.start >= old.end, "{new:?} overlaps {who}'s {old:?}");
        }
    }
    let fa2 = Fid { seq: granted[2].1.start, oid: 1, ver: 0 };
    assert_eq!(
        errno_of(ns.create(Fid::ROOT, "y", &CreateArgs { fid: Some(fa2), client: "b".into(), ..file() })),
        errno::EPERM
    );
    ns.create(Fid::ROOT, "y", &CreateArgs { fid: Some(fa2), client: "a".into(), ..file() }).unwrap();
    assert_clean(&ns);
}

#[test]
fn the_precreator_keeps_pools_ahead_of_creates() {
    let f = fx(1);
    let alloc = Arc::clone(f.ns.alloc());
    let a2 = Arc::clone(&alloc);
    let t = std::thread::Builder::new().name("mdt-precreate".into()).spawn(move || a2.run_precreator()).unwrap();
    // Batch 16: the precreator fills the pool to at least half a batch.
    assert!(alloc.wait_pooled(0, 8, std::time::Duration::from_secs(30)) >= 8);
    let ost = Arc::clone(f.osts.lock().get(&0).unwrap());
    let calls_before = ost.precreate_threads.lock().len();
    // Creates in rounds smaller than the low mark never wait for the OST:
    // every precreate from now on runs on the precreator thread.
    for round in 0..10 {
        for i in 0..6 {
            f.ns.create(Fid::ROOT, &format!("r{round}f{i}"), &file()).unwrap();
        }
        assert!(alloc.wait_pooled(0, 8, std::time::Duration::from_secs(30)) >= 8);
    }
    let calls = ost.precreate_threads.lock().clone();
    assert!(calls.len() > calls_before, "pools were refilled");
    assert!(calls[calls_before..].iter().all(|n| n == "mdt-precreate"), "{calls:?}");
    alloc.stop_precreator();
    t.join().unwrap();
    assert_clean(&f.ns);
}

/// A copy of the store in `dir` as it is now (what a crash keeps once
/// the namespace on it is dropped).
fn copy_store(dir: &std::path::Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    let st =
        std::process::Command::new("cp").arg("-a").arg(format!("{}/.", dir.display())).arg(to.path()).status().unwrap();
    assert!(st.success());
    to
}

/// "b" created after the store was copied: the copy is a crash that lost
/// it while the OST kept its objects.
fn lost_create() -> (Fx, tempfile::TempDir, Inode) {
    let mut f = fx(1);
    f.ns.create(Fid::ROOT, "a", &file()).unwrap();
    drop(std::mem::replace(&mut f.ns, mount(tempfile::tempdir().unwrap().path(), &f.osts)));
    let crashed = copy_store(f.dir.path());
    f.ns = mount(f.dir.path(), &f.osts);
    add_ost(&f.ns, 0);
    let (b, _) = f.ns.create(Fid::ROOT, "b", &file()).unwrap();
    (f, crashed, b)
}

#[test]
fn a_replayed_create_reuses_its_objects_and_cleanup_after_recovery_spares_them() {
    let (f, crashed, b) = lost_create();
    let ost = Arc::clone(&f.osts.lock()[&0]);
    let old = b.layout.clone().unwrap();
    let ns = mount(crashed.path(), &f.osts);
    // Recovery: the OST is known (config log) but not reached yet.
    let cmd = ConfigCmd::AddTarget { kind: TargetKind::Ost, index: 0, nids: vec!["0@lo".into()], failover: vec![] };
    ns.alloc().apply(&cmd).unwrap();
    let replay = CreateArgs { replay_layout: Some(Some(old.clone())), ..file() };
    let (b2, _) = ns.create(Fid::ROOT, "b", &replay).unwrap();
    assert_eq!(b2.layout.as_ref(), Some(&old), "the original objects");
    assert_eq!(ns.alloc().last_used(0), Some(old.objects[0].id), "the cursor moved up to them");
    // Recovery over: the cleanup runs above the recovered cursor.
    ns.alloc().refresh();
    let a = ns.lookup(Fid::ROOT, "a").unwrap().layout.unwrap().objects[0].id;
    let live: BTreeSet<ptlrpc::wire::OstId> =
        ost.objects.lock().iter().copied().filter(|&id| id <= old.objects[0].id).collect();
    assert_eq!(live, BTreeSet::from([a, old.objects[0].id]), "no leaked objects, none destroyed under a file");
    assert_clean(&ns);
}

#[test]
fn a_replay_after_the_cleanup_gets_a_new_object() {
    let (f, crashed, b) = lost_create();
    let ost = Arc::clone(&f.osts.lock()[&0]);
    let old = b.layout.clone().unwrap().objects[0].id;
    let ns = mount(crashed.path(), &f.osts);
    add_ost(&ns, 0);
    assert!(!ost.objects.lock().contains(&old), "the cleanup destroyed the lost create's object");
    let replay = CreateArgs { replay_layout: Some(b.layout.clone()), ..file() };
    let (b2, _) = ns.create(Fid::ROOT, "b", &replay).unwrap();
    let new = b2.layout.unwrap().objects[0].id;
    assert!(new != old && ost.objects.lock().contains(&new), "a live object instead of a destroyed one");
}

#[test]
fn objects_of_a_dropped_transaction_go_back_to_the_pool() {
    let f = fx(1);
    let (a, _) = f.ns.create(Fid::ROOT, "a", &file()).unwrap();
    let first = a.layout.unwrap().objects[0].id;
    let pooled = f.ns.alloc().pooled(0);
    // Objects are taken before the client FID is checked: the failed
    // create hands them back.
    let bad = CreateArgs { fid: Some(Fid { seq: 1, oid: 1, ver: 0 }), ..file() };
    assert_eq!(errno_of(f.ns.create(Fid::ROOT, "bad", &bad)), errno::EINVAL);
    assert_eq!((f.ns.alloc().pooled(0), f.ns.alloc().last_used(0)), (pooled, Some(first)));
    let (b, _) = f.ns.create(Fid::ROOT, "b", &file()).unwrap();
    assert_eq!(
        b.layout.unwrap().objects[0].id,
        OstId::new(first.seq, first.oid + 1),
        "the same object, not a leaked one"
    );
}

#[test]
fn a_deferred_plan_dropped_by_the_target_returns_its_objects() {
    let f = fx(1);
    drop(f.ns);
    let kv: Arc<dyn Kv> = Arc::new(FjallKv::open(f.dir.path()).unwrap());
    let cfg = AllocConfig { precreate_batch: 16, ..AllocConfig::default() };
    let alloc = Arc::new(Allocator::new(Arc::clone(&kv), factory(&f.osts), cfg));
    let ns = Namespace::mount_deferred(kv, alloc).unwrap();
    add_ost(&ns, 0);
    let a = Arc::clone(ns.alloc());
    let precreator = std::thread::spawn(move || a.run_precreator());
    assert!(ns.alloc().wait_pools(std::time::Duration::from_secs(10)));
    ns.alloc().wait_pooled(0, 16, std::time::Duration::from_secs(10));
    ns.alloc().stop_precreator();
    precreator.join().unwrap();
    ns.create(Fid::ROOT, "a", &file()).unwrap();
    let tx = ns.take_pending().unwrap();
    let (before, last) = (ns.alloc().pooled(0), ns.alloc().last_used(0));
    drop(tx);
    assert_eq!(ns.alloc().pooled(0), before + 1, "a VBR-refused or failed plan: back in the pool");
    ns.create(Fid::ROOT, "a", &file()).unwrap();
    let (b, e) = ns.take_pending().unwrap().into_parts(1);
    ns.kv().write(b).unwrap();
    ns.applied(e);
    assert_eq!((ns.alloc().pooled(0), ns.alloc().last_used(0)), (before, last), "written: kept");
}

#[test]
fn destroys_wait_for_an_ost_the_config_log_has_not_added_yet() {
    let f = fx(0);
    let a = f.ns.alloc();
    assert!(!a.destroy(0, OstId::new(1, 5)), "not added yet (a restart replaying the config log): kept for later");
    add_ost(&f.ns, 0);
    assert!(a.destroy(0, OstId::new(1, 5)));
    a.apply(&ConfigCmd::Deactivate { kind: TargetKind::Ost, index: 0 }).unwrap();
    a.apply(&ConfigCmd::Remove { kind: TargetKind::Ost, index: 0 }).unwrap();
    assert!(a.destroy(0, OstId::new(1, 6)), "removed: its objects went with it");
}

/// Every object a layout names, by file.
fn layout_objects(ns: &Namespace, names: &[String]) -> Vec<OstId> {
    names.iter().flat_map(|n| ns.lookup(Fid::ROOT, n).unwrap().layout.unwrap().objects).map(|o| o.id).collect()
}

#[test]
fn a_used_up_ost_sequence_rolls_over_and_no_object_is_named_twice() {
    let (live, disk) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let osts: Osts = Arc::default();
    let kv: Arc<dyn Kv> = Arc::new(crate::store::lossy::LossyKv::open(live.path(), disk.path()).unwrap());
    // Five ids per sequence, precreated three at a time.
    let cfg = AllocConfig { precreate_batch: 3, ost_seq_width: 5, ..AllocConfig::default() };
    let ns = Namespace::mount(Arc::clone(&kv), Arc::new(Allocator::new(kv, factory(&osts), cfg.clone()))).unwrap();
    add_ost(&ns, 0);
    let names: Vec<String> = (0..12).map(|i| format!("f{i}")).collect();
    for n in &names {
        ns.create(Fid::ROOT, n, &file()).unwrap();
    }
    ns.kv().persist().unwrap();
    let before = layout_objects(&ns, &names);
    let distinct: BTreeSet<OstId> = before.iter().copied().collect();
    assert_eq!(distinct.len(), before.len(), "no object named twice: {before:?}");
    let seqs: BTreeSet<u64> = before.iter().map(|o| o.seq).collect();
    assert!(seqs.len() >= 3, "12 objects at 5 a sequence take 3 sequences: {seqs:?}");
    assert!(before.iter().all(|o| (1..=5).contains(&o.oid)), "ids stay within the width: {before:?}");
    // OST sequences come from the sequence server, never a client's.
    let client = ns.grant_seqs("client-a", 1).unwrap();
    assert!(seqs.iter().all(|s| !client.contains(s) && *s >= crate::seq::FIRST_SEQ));
    assert_clean(&ns);
    // Created but not committed when the MDT crashes: its objects and
    // any sequence it took are lost with it, but none is handed out again.
    for i in 12..16 {
        ns.create(Fid::ROOT, &format!("f{i}"), &file()).unwrap();
    }
    // Every object the OST ever made for this MDT: used, lost or pooled.
    let made: BTreeSet<OstId> = {
        let o = Arc::clone(&osts.lock()[&0]);
        let last = o.last.lock().clone();
        last.iter().flat_map(|(&seq, &n)| (1..=n).map(move |i| OstId::new(seq, i))).collect()
    };
    drop(ns);
    let kv: Arc<dyn Kv> = Arc::new(FjallKv::open(disk.path()).unwrap());
    let ns = Namespace::mount(Arc::clone(&kv), Arc::new(Allocator::new(kv, factory(&osts), cfg))).unwrap();
    add_ost(&ns, 0);
    let again: Vec<String> = (0..8).map(|i| format!("g{i}")).collect();
    for n in &again {
        ns.create(Fid::ROOT, n, &file()).unwrap();
    }
    for o in layout_objects(&ns, &again) {
        assert!(!made.contains(&o), "{o} named again after the restart");
    }
    let after: BTreeSet<u64> = layout_objects(&ns, &again).iter().map(|o| o.seq).collect();
    assert!(after.iter().all(|s| !client.contains(s)), "a client's sequence given to an OST: {after:?}");
    assert_clean(&ns);
}

#[test]
fn the_checker_asks_the_osts_and_finds_dangling_and_leaked_objects() {
    let f = fx(1);
    for n in ["a", "b", "c"] {
        f.ns.create(Fid::ROOT, n, &file()).unwrap();
    }
    let r = crate::check::check_osts(&f.ns).unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert!(r.asked >= 3 && r.pooled > 0, "{r:?}");
    let obj = |n: &str| f.ns.lookup(Fid::ROOT, n).unwrap().layout.unwrap().objects[0].id;
    let ost = Arc::clone(&f.osts.lock()[&0]);
    // An unlinked file's object waiting in the destroy log is no problem.
    let c = obj("c");
    f.ns.unlink(Fid::ROOT, "c", false, Timestamp::secs(11)).unwrap();
    assert!(crate::check::check_osts(&f.ns).unwrap().problems.is_empty());
    // Destroyed, then back on the OST with no log entry: leaked.
    f.ns.process_destroys(16).unwrap();
    ost.objects.lock().insert(c);
    // A file whose object the OST lost: dangling.
    let a = obj("a");
    ost.objects.lock().remove(&a);
    let p = crate::check::check_osts(&f.ns).unwrap().problems;
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p.iter().any(|l| l.contains(&a.to_string()) && l.contains("dangling")), "{p:?}");
    assert!(p.iter().any(|l| l.contains(&c.to_string()) && l.contains("leaked")), "{p:?}");
}
