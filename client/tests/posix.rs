//! POSIX semantics on a real mount: permissions and ownership, rename edge
//! cases, hard links, symlinks, device nodes and FIFOs, xattrs, sparse
//! files, truncate, O_APPEND, a file past 4 GiB, readdir while entries
//! change, unlinked-but-open files and concurrent writers. Each test mounts
//! its own file system (real `sheen-mds` + `sheen-oss`) on lnet port 8008.
//! Needs root and `/dev/fuse`; without them the tests say so and return.
//!
//! Other users are played by threads that switch their own credentials
//! (`setresuid` on the thread only), so the kernel's permission checks on
//! the mount see a different caller.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;
use rustix::fs::{FallocateFlags, XattrFlags};

const PORT: u16 = 8008;

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    n.sort();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn permissions_and_ownership() {
    if !can_mount() {
        return;
    }
    with_mount(1, PORT, |m| {
        fs::set_permissions(&m, fs::Permissions::from_mode(0o755)).unwrap();
        // A root-owned private file: another user can neither read nor write it.
        fs::write(m.join("secret"), b"s").unwrap();
        fs::set_permissions(m.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
        let p = m.join("secret");
        let e =
            as_user(NOBODY, NOBODY, &[], move || (errno(fs::read(&p)), errno(OpenOptions::new().write(true).open(&p))));
        assert_eq!(e, (libc::EACCES, libc::EACCES));
        // Given to that user it can; its mode bits apply to it, not to root.
        std::os::unix::fs::chown(m.join("secret"), Some(NOBODY), Some(NOBODY)).unwrap();
        let md = fs::metadata(m.join("secret")).unwrap();
        assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (NOBODY, NOBODY, 0o600));
        let p = m.join("secret");
        assert_eq!(as_user(NOBODY, NOBODY, &[], move || fs::read(&p).unwrap()), b"s");
        // Only root gives files away; the owner may change its mode.
        let p = m.join("secret");
        let (chown, chmod) = as_user(NOBODY, NOBODY, &[], move || {
            (
                errno(std::os::unix::fs::chown(&p, Some(OTHER), None)),
                fs::set_permissions(&p, fs::Permissions::from_mode(0o640)),
            )
        });
        assert_eq!(chown, libc::EPERM);
        chmod.unwrap();
        assert_eq!(fs::metadata(m.join("secret")).unwrap().mode() & 0o7777, 0o640);
        // Not the owner: no chmod.
        let p = m.join("secret");
        assert_eq!(
            as_user(OTHER, OTHER, &[], move || errno(fs::set_permissions(&p, fs::Permissions::from_mode(0o777)))),
            libc::EPERM
        );
        // Group bits apply to the group.
        let p = m.join("secret");
        assert_eq!(as_user(OTHER, NOBODY, &[], move || fs::read(&p).unwrap()), b"s");
        // A directory without write permission: no create, no unlink.
        fs::create_dir(m.join("ro")).unwrap();
        fs::write(m.join("ro/f"), b"x").unwrap();
        fs::set_permissions(m.join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
        let d = m.join("ro");
        let (c, u) = as_user(NOBODY, NOBODY, &[], move || {
            (errno(fs::write(d.join("new"), b"y")), errno(fs::remove_file(d.join("f"))))
        });
        assert_eq!((c, u), (libc::EACCES, libc::EACCES));
        // Without search (x) permission nothing under it is reachable.
        fs::set_permissions(m.join("ro"), fs::Permissions::from_mode(0o700)).unwrap();
        let d = m.join("ro");
        assert_eq!(as_user(NOBODY, NOBODY, &[], move || errno(fs::metadata(d.join("f")))), libc::EACCES);
        // A sticky, world-writable directory: users remove only their own files.
        fs::create_dir(m.join("tmp")).unwrap();
        fs::set_permissions(m.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        let d = m.join("tmp");
        as_user(NOBODY, NOBODY, &[], move || fs::write(d.join("mine"), b"n").unwrap());
        let md = fs::metadata(m.join("tmp/mine")).unwrap();
        assert_eq!((md.uid(), md.gid()), (NOBODY, NOBODY), "a create takes the caller's ids");
        let d = m.join("tmp");
        assert_eq!(as_user(OTHER, OTHER, &[], move || errno(fs::remove_file(d.join("mine")))), libc::EPERM);
        let d = m.join("tmp");
        as_user(NOBODY, NOBODY, &[], move || fs::remove_file(d.join("mine")).unwrap());
        // The umask applies to creates.
        let d = m.join("tmp");
        let mode = as_user(NOBODY, NOBODY, &[], move || {
            let f = OpenOptions::new().write(true).create_new(true).mode(0o666).open(d.join("u")).unwrap();
            f.metadata().unwrap().mode() & 0o777
        });
        assert_eq!(mode & 0o022, 0, "umask 022 clears group/other write");
        // A write by another user drops the set-user-ID and set-group-ID bits.
        fs::write(m.join("setid"), b"").unwrap();
        fs::set_permissions(m.join("setid"), fs::Permissions::from_mode(0o6777)).unwrap();
        let p = m.join("setid");
        as_user(NOBODY, NOBODY, &[], move || OpenOptions::new().write(true).open(&p).unwrap().write_all(b"x").unwrap());
        assert_eq!(fs::metadata(m.join("setid")).unwrap().mode() & 0o7777, 0o777);
        // Times: utimes sets what stat shows.
        let f = File::options().write(true).open(m.join("secret")).unwrap();
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t)).unwrap();
        drop(f);
        assert_eq!(fs::metadata(m.join("secret")).unwrap().mtime(), 1_000_000_000);
        // ... to the nanosecond, on a file and on a directory.
        let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_500_000_000, 123_456_789);
        let f = File::options().write(true).open(m.join("secret")).unwrap();
        f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t)).unwrap();
        drop(f);
        let md = fs::metadata(m.join("secret")).unwrap();
        assert_eq!((md.mtime(), md.mtime_nsec(), md.atime_nsec()), (1_500_000_000, 123_456_789, 123_456_789));
        File::open(m.join("tmp")).unwrap().set_modified(t).unwrap();
        assert_eq!(fs::metadata(m.join("tmp")).unwrap().mtime_nsec(), 123_456_789);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rename_edge_cases() {
    if !can_mount() {
        return;
    }
    with_mount(2, PORT, |m| {
        // Over an existing file: the target's content is replaced, the old
        // file is gone.
        fs::write(m.join("a"), b"new").unwrap();
        fs::write(m.join("b"), b"old").unwrap();
        let ino_a = fs::metadata(m.join("a")).unwrap().ino();
        fs::rename(m.join("a"), m.join("b")).unwrap();
        assert_eq!(errno(fs::metadata(m.join("a"))), libc::ENOENT);
        assert_eq!(fs::read(m.join("b")).unwrap(), b"new");
        assert_eq!(fs::metadata(m.join("b")).unwrap().ino(), ino_a);
        // Over an open file: the replaced file stays readable through its handle.
        fs::write(m.join("c"), b"c-data").unwrap();
        let mut held = File::open(m.join("b")).unwrap();
        fs::rename(m.join("c"), m.join("b")).unwrap();
        let mut s = String::new();
        held.read_to_string(&mut s).unwrap();
        assert_eq!(s, "new");
        drop(held);
        // A directory over an empty directory; not over a non-empty one.
        fs::create_dir_all(m.join("d1/sub")).unwrap();
        fs::create_dir(m.join("d2")).unwrap();
        let root_links = fs::metadata(&m).unwrap().nlink();
        fs::rename(m.join("d1"), m.join("d2")).unwrap();
        assert!(fs::metadata(m.join("d2/sub")).unwrap().is_dir());
        assert_eq!(fs::metadata(&m).unwrap().nlink(), root_links - 1, "the replaced directory's '..' link is gone");
        fs::create_dir_all(m.join("d3/x")).unwrap();
        assert_eq!(errno(fs::rename(m.join("d3"), m.join("d2"))), libc::ENOTEMPTY);
        // Type mismatches.
        assert_eq!(errno(fs::rename(m.join("d3"), m.join("b"))), libc::ENOTDIR);
        assert_eq!(errno(fs::rename(m.join("b"), m.join("d3"))), libc::EISDIR);
        // A directory into its own subtree.
        assert_eq!(errno(fs::rename(m.join("d2"), m.join("d2/sub/inside"))), libc::EINVAL);
        assert_eq!(errno(fs::rename(m.join("d2"), m.join("d2/inside"))), libc::EINVAL);
        // Across directories: parents' link counts follow the moved directory.
        let (l2, l3) = (fs::metadata(m.join("d2")).unwrap().nlink(), fs::metadata(m.join("d3")).unwrap().nlink());
        fs::rename(m.join("d2/sub"), m.join("d3/sub")).unwrap();
        assert_eq!(fs::metadata(m.join("d2")).unwrap().nlink(), l2 - 1);
        assert_eq!(fs::metadata(m.join("d3")).unwrap().nlink(), l3 + 1);
        fs::rename(m.join("b"), m.join("d3/sub/b")).unwrap();
        assert_eq!(fs::read(m.join("d3/sub/b")).unwrap(), b"c-data");
        assert_eq!(names(&m.join("d3/sub")), vec!["b"]);
        // Onto itself, and onto another link of the same file: nothing happens.
        fs::rename(m.join("d3/sub/b"), m.join("d3/sub/b")).unwrap();
        fs::hard_link(m.join("d3/sub/b"), m.join("d3/sub/b2")).unwrap();
        fs::rename(m.join("d3/sub/b"), m.join("d3/sub/b2")).unwrap();
        assert_eq!(names(&m.join("d3/sub")), vec!["b", "b2"]);
        // A missing source; RENAME_NOREPLACE onto an existing name.
        assert_eq!(errno(fs::rename(m.join("nope"), m.join("x"))), libc::ENOENT);
        let cwd = rustix::fs::CWD;
        let e = rustix::fs::renameat_with(
            cwd,
            m.join("d3/sub/b"),
            cwd,
            m.join("d3/sub/b2"),
            rustix::fs::RenameFlags::NOREPLACE,
        );
        assert_eq!(rerrno(e), libc::EEXIST);
        rustix::fs::renameat_with(
            cwd,
            m.join("d3/sub/b"),
            cwd,
            m.join("d3/sub/b3"),
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .unwrap();
        assert_eq!(names(&m.join("d3/sub")), vec!["b2", "b3"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hard_links_symlinks_and_special_files() {
    if !can_mount() {
        return;
    }
    with_mount(3, PORT, |m| {
        fs::write(m.join("f"), b"linked").unwrap();
        fs::create_dir(m.join("d")).unwrap();
        fs::hard_link(m.join("f"), m.join("d/g")).unwrap();
        fs::hard_link(m.join("f"), m.join("h")).unwrap();
        let (a, b) = (fs::metadata(m.join("f")).unwrap(), fs::metadata(m.join("d/g")).unwrap());
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 3));
        fs::remove_file(m.join("f")).unwrap();
        assert_eq!(fs::metadata(m.join("h")).unwrap().nlink(), 2);
        assert_eq!(fs::read(m.join("d/g")).unwrap(), b"linked");
        fs::write(m.join("h"), b"through h").unwrap();
        assert_eq!(fs::read(m.join("d/g")).unwrap(), b"through h");
        assert_eq!(errno(fs::hard_link(m.join("h"), m.join("d/g"))), libc::EEXIST);
        assert_eq!(errno(fs::hard_link(m.join("d"), m.join("d2"))), libc::EPERM);
        fs::remove_file(m.join("h")).unwrap();
        assert_eq!(fs::metadata(m.join("d/g")).unwrap().nlink(), 1);

        // Symlinks: relative and absolute, to files and directories, dangling.
        std::os::unix::fs::symlink("d/g", m.join("s")).unwrap();
        let lm = fs::symlink_metadata(m.join("s")).unwrap();
        assert!(lm.file_type().is_symlink());
        assert_eq!(lm.len(), 3);
        assert_eq!(fs::read_link(m.join("s")).unwrap(), PathBuf::from("d/g"));
        assert_eq!(fs::read(m.join("s")).unwrap(), b"through h");
        std::os::unix::fs::symlink(m.join("d"), m.join("sd")).unwrap();
        assert_eq!(names(&m.join("sd")), vec!["g"]);
        std::os::unix::fs::symlink("missing", m.join("dangling")).unwrap();
        assert_eq!(errno(fs::metadata(m.join("dangling"))), libc::ENOENT);
        assert_eq!(errno(std::os::unix::fs::symlink("x", m.join("s"))), libc::EEXIST);
        assert_eq!(errno(fs::read_link(m.join("d/g"))), libc::EINVAL);
        fs::remove_file(m.join("s")).unwrap();
        assert_eq!(fs::read(m.join("d/g")).unwrap(), b"through h", "removing a symlink leaves its target");
        let long = "x/".repeat(2000) + "y";
        std::os::unix::fs::symlink(&long, m.join("long")).unwrap();
        assert_eq!(fs::read_link(m.join("long")).unwrap(), PathBuf::from(&long));

        // mknod: a FIFO (the kernel runs it), a character device node.
        let cwd = rustix::fs::CWD;
        rustix::fs::mknodat(cwd, m.join("fifo"), rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o644), 0)
            .unwrap();
        assert!(fs::metadata(m.join("fifo")).unwrap().file_type().is_fifo());
        let dev = rustix::fs::makedev(1, 3);
        rustix::fs::mknodat(
            cwd,
            m.join("null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            dev,
        )
        .unwrap();
        let md = fs::metadata(m.join("null")).unwrap();
        assert!(md.file_type().is_char_device());
        assert_eq!(md.rdev(), dev);
        let w = m.join("fifo");
        let writer = std::thread::spawn(move || fs::write(w, b"through the pipe").unwrap());
        assert_eq!(fs::read(m.join("fifo")).unwrap(), b"through the pipe");
        writer.join().unwrap();

        // Extended attributes.
        let f = m.join("d/g");
        rustix::fs::setxattr(&f, "user.a", b"1", XattrFlags::empty()).unwrap();
        rustix::fs::setxattr(&f, "user.b", b"two", XattrFlags::CREATE).unwrap();
        assert_eq!(rerrno(rustix::fs::setxattr(&f, "user.b", b"x", XattrFlags::CREATE)), libc::EEXIST);
        assert_eq!(rerrno(rustix::fs::setxattr(&f, "user.c", b"x", XattrFlags::REPLACE)), libc::ENODATA);
        let mut buf = [0u8; 64];
        let n = rustix::fs::getxattr(&f, "user.b", &mut buf[..]).unwrap();
        assert_eq!(&buf[..n], b"two");
        assert_eq!(rustix::fs::getxattr_query(&f, "user.b").unwrap(), 3);
        assert_eq!(rerrno(rustix::fs::getxattr(&f, "user.b", &mut buf[..2])), libc::ERANGE);
        assert_eq!(rerrno(rustix::fs::getxattr(&f, "user.none", &mut buf[..])), libc::ENODATA);
        let n = rustix::fs::listxattr(&f, &mut buf[..]).unwrap();
        let mut listed: Vec<&[u8]> = buf[..n].split(|&b| b == 0).filter(|s| !s.is_empty()).collect();
        listed.sort();
        assert_eq!(listed, vec![&b"user.a"[..], &b"user.b"[..]]);
        rustix::fs::removexattr(&f, "user.a").unwrap();
        assert_eq!(rerrno(rustix::fs::removexattr(&f, "user.a")), libc::ENODATA);
        assert_eq!(rustix::fs::listxattr_query(&f).unwrap(), "user.b\0".len());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sparse_files_truncate_and_append() {
    if !can_mount() {
        return;
    }
    with_mount(4, PORT, |m| {
        // Sparse: a write far out leaves a hole of zeros and little space used.
        let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(m.join("sparse")).unwrap();
        f.write_all_at(b"tail", 1 << 30).unwrap();
        let md = f.metadata().unwrap();
        assert_eq!(md.len(), (1 << 30) + 4);
        assert!(md.blocks() * 512 < 16 << 20, "a 1 GiB hole takes no space ({} blocks)", md.blocks());
        let mut buf = vec![1u8; 1 << 20];
        f.read_exact_at(&mut buf, 512 << 20).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
        // Punch a hole into data; fallocate extends the size.
        f.write_all_at(&vec![7u8; 3 << 20], 0).unwrap();
        rustix::fs::fallocate(&f, FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE, 1 << 20, 1 << 20).unwrap();
        let mut three = vec![0u8; 3 << 20];
        f.read_exact_at(&mut three, 0).unwrap();
        assert!(three[..1 << 20].iter().all(|&b| b == 7));
        assert!(three[1 << 20..2 << 20].iter().all(|&b| b == 0));
        assert!(three[2 << 20..].iter().all(|&b| b == 7));
        rustix::fs::fallocate(&f, FallocateFlags::empty(), 0, 2 << 30).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 2 << 30);
        drop(f);

        // Truncate down then up: the old bytes never come back.
        let data = pattern(5 << 20, 9);
        fs::write(m.join("t"), &data).unwrap();
        let f = OpenOptions::new().read(true).write(true).open(m.join("t")).unwrap();
        f.set_len(1000).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 1000);
        f.set_len(4 << 20).unwrap();
        let mut back = Vec::new();
        (&f).read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), 4 << 20);
        assert_eq!(&back[..1000], &data[..1000]);
        assert!(back[1000..].iter().all(|&b| b == 0));
        drop(f);
        // O_TRUNC empties.
        OpenOptions::new().write(true).truncate(true).open(m.join("t")).unwrap();
        assert_eq!(fs::metadata(m.join("t")).unwrap().len(), 0);

        // O_APPEND: every write lands at the end, through two handles.
        let mut a = OpenOptions::new().append(true).create(true).open(m.join("log")).unwrap();
        let mut b = OpenOptions::new().append(true).open(m.join("log")).unwrap();
        a.write_all(b"one\n").unwrap();
        b.write_all(b"two\n").unwrap();
        a.write_all(b"three\n").unwrap();
        // A seek does not move an append.
        b.seek(SeekFrom::Start(0)).unwrap();
        b.write_all(b"four\n").unwrap();
        assert_eq!(fs::read_to_string(m.join("log")).unwrap(), "one\ntwo\nthree\nfour\n");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_past_4_gib() {
    if !can_mount() {
        return;
    }
    with_mount(5, PORT, |m| {
        let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(m.join("big")).unwrap();
        let at = (5u64 << 30) - 4096;
        let data = pattern(3 << 20, 5);
        f.write_all_at(&data, at).unwrap();
        f.sync_all().unwrap();
        drop(f);
        let f = File::open(m.join("big")).unwrap();
        assert_eq!(f.metadata().unwrap().len(), at + data.len() as u64);
        let mut back = vec![0u8; data.len()];
        f.read_exact_at(&mut back, at).unwrap();
        assert_eq!(back, data);
        // Around the 4 GiB boundary the hole reads as zeros.
        let mut z = vec![1u8; 8192];
        f.read_exact_at(&mut z, (4u64 << 30) - 4096).unwrap();
        assert!(z.iter().all(|&b| b == 0));
        // Truncate to just past 4 GiB keeps nothing of the data.
        OpenOptions::new().write(true).open(m.join("big")).unwrap().set_len((4u64 << 30) + 1).unwrap();
        assert_eq!(fs::metadata(m.join("big")).unwrap().len(), (4u64 << 30) + 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readdir_while_entries_change() {
    if !can_mount() {
        return;
    }
    with_mount(6, PORT, |m| {
        const N: usize = 2000;
        let d = m.join("d");
        fs::create_dir(&d).unwrap();
        for i in 0..N {
            File::create(d.join(format!("f{i}"))).unwrap();
        }
        let mut it = fs::read_dir(&d).unwrap();
        let mut seen = Vec::new();
        for _ in 0..N / 3 {
            seen.push(it.next().unwrap().unwrap().file_name().into_string().unwrap());
        }
        // Change the directory mid-listing: remove half the files not yet
        // seen (the odd ones), add new ones.
        let early: HashSet<String> = seen.iter().cloned().collect();
        let mut removed = HashSet::new();
        for i in (1..N).step_by(2) {
            let n = format!("f{i}");
            if !early.contains(&n) {
                fs::remove_file(d.join(&n)).unwrap();
                removed.insert(n);
            }
        }
        for i in 0..500 {
            File::create(d.join(format!("new{i}"))).unwrap();
        }
        for e in it {
            seen.push(e.unwrap().file_name().into_string().unwrap());
        }
        let set: HashSet<&String> = seen.iter().collect();
        assert_eq!(set.len(), seen.len(), "no entry is listed twice");
        for i in 0..N {
            let n = format!("f{i}");
            if !removed.contains(&n) {
                assert!(set.contains(&n), "{n} was not touched and must be listed");
            }
        }
        // Entries removed or added mid-listing may or may not be listed
        // (POSIX leaves it unspecified; libc buffers ahead).
        // "." and ".." are listed (by the raw readdir std hides them from).
        let raw = rustix::fs::Dir::read_from(File::open(&d).unwrap()).unwrap();
        let dots: Vec<String> = raw
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert_eq!(dots, vec![".", ".."]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unlinked_open_files_and_concurrent_writers() {
    if !can_mount() {
        return;
    }
    with_mount(7, PORT, |m| {
        // Unlinked but open: readable and writable until the last close.
        let data = pattern(2 << 20, 1);
        fs::write(m.join("u"), &data).unwrap();
        let f = OpenOptions::new().read(true).write(true).open(m.join("u")).unwrap();
        fs::remove_file(m.join("u")).unwrap();
        assert_eq!(errno(fs::metadata(m.join("u"))), libc::ENOENT);
        assert!(names(&m).is_empty());
        let mut back = vec![0u8; data.len()];
        f.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, data);
        f.write_all_at(b"more", data.len() as u64).unwrap();
        let md = f.metadata().unwrap();
        assert_eq!((md.len(), md.nlink()), (data.len() as u64 + 4, 0));
        drop(f);
        // A new file of the same name is a different file.
        fs::write(m.join("u"), b"fresh").unwrap();
        assert_eq!(fs::read(m.join("u")).unwrap(), b"fresh");

        // Concurrent writers to disjoint ranges of one file.
        const WRITERS: usize = 4;
        const EACH: usize = 6 << 20;
        File::create(m.join("c")).unwrap();
        let threads: Vec<_> = (0..WRITERS)
            .map(|w| {
                let p = m.join("c");
                std::thread::spawn(move || {
                    let f = OpenOptions::new().write(true).open(p).unwrap();
                    let chunk = pattern(EACH, w as u8);
                    // Interleaved pieces so the writers' requests overlap in time.
                    for (i, piece) in chunk.chunks(256 << 10).enumerate() {
                        f.write_all_at(piece, (w * EACH + i * (256 << 10)) as u64).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let all = fs::read(m.join("c")).unwrap();
        assert_eq!(all.len(), WRITERS * EACH);
        for w in 0..WRITERS {
            assert!(all[w * EACH..(w + 1) * EACH] == pattern(EACH, w as u8)[..], "writer {w}'s range");
        }

        // Errors the namespace gives.
        assert_eq!(errno(OpenOptions::new().write(true).create_new(true).open(m.join("u"))), libc::EEXIST);
        assert_eq!(errno(fs::remove_file(m.join("missing"))), libc::ENOENT);
        fs::create_dir_all(m.join("full/x")).unwrap();
        assert_eq!(errno(fs::remove_dir(m.join("full"))), libc::ENOTEMPTY);
        assert_eq!(errno(fs::remove_dir(m.join("u"))), libc::ENOTDIR);
        assert_eq!(errno(fs::remove_file(m.join("full"))), libc::EISDIR);
        assert_eq!(errno(fs::create_dir(m.join("full"))), libc::EEXIST);
        assert_eq!(errno(fs::write(m.join("x".repeat(256)), b"")), libc::ENAMETOOLONG);
        assert_eq!(errno(fs::metadata(m.join("x".repeat(256)))), libc::ENAMETOOLONG);
        assert_eq!(errno(fs::rename(m.join("y".repeat(300)), m.join("u2"))), libc::ENAMETOOLONG);
        assert_eq!(errno(File::open(m.join("u/under-a-file"))), libc::ENOTDIR);
        assert!(fs::metadata(m.join("u")).unwrap().is_file());
    })
    .await;
}

/// Readahead and write-behind keep what one client's opens see coherent:
/// a stat or another open's read sees writes not yet flushed, and a
/// sequential reader sees a write made after it read ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readahead_and_write_behind_stay_coherent_on_one_client() {
    if !can_mount() {
        return;
    }
    with_mount(8, PORT, |m| {
        let data = pattern(20 << 20, 2);
        let w = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(m.join("f")).unwrap();
        for (i, c) in data.chunks(1 << 20).enumerate() {
            w.write_all_at(c, (i << 20) as u64).unwrap();
        }
        // Not flushed yet: stat and another open see it all.
        assert_eq!(fs::metadata(m.join("f")).unwrap().len(), data.len() as u64);
        let mut r = File::open(m.join("f")).unwrap();
        let mut first = vec![0u8; 1 << 20];
        r.read_exact(&mut first).unwrap();
        assert_eq!(first, data[..1 << 20]);
        // The reader has read ahead; a write behind it must still show.
        let fresh = pattern(1 << 20, 99);
        w.write_all_at(&fresh, 3 << 20).unwrap();
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest.len(), data.len() - (1 << 20));
        assert_eq!(rest[..2 << 20], data[1 << 20..3 << 20]);
        assert_eq!(rest[2 << 20..3 << 20], fresh[..]);
        assert_eq!(rest[3 << 20..], data[4 << 20..]);
        // A truncate through one open ends the other's readahead too.
        let mut r2 = File::open(m.join("f")).unwrap();
        r2.read_exact(&mut first).unwrap();
        w.set_len(2 << 20).unwrap();
        let mut tail = Vec::new();
        r2.read_to_end(&mut tail).unwrap();
        assert_eq!(tail, data[1 << 20..2 << 20]);
        w.sync_all().unwrap();
        drop(w);
        assert_eq!(fs::read(m.join("f")).unwrap(), data[..2 << 20]);
    })
    .await;
}
