//! Permissions and ownership on a real mount, checked by the MDT with each
//! caller's credentials (the mount has no `default_permissions`): search
//! and write permission through supplementary groups, `access(2)`,
//! opendir, execve, chown/chgrp/chmod rules and the set-ID bits they drop, set-group-ID
//! directories, utimes "now" against explicit times, truncate against
//! ftruncate on a write handle, O_CREAT of an existing file, the sticky bit
//! on rename, and `user.*` xattrs. Each test mounts its own file system
//! (real `sheen-mds` + `sheen-oss`) on lnet port 8044. Needs root and
//! `/dev/fuse`; without them the tests say so and return.
//!
//! Other users are played by threads that switch their own credentials
//! (`setresuid`, `setgroups` on the thread only); the FUSE request names
//! the thread, whose `/proc` status gives the supplementary groups.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use common::*;
use rustix::fs::{Access, AtFlags, CWD, Timespec, Timestamps, UTIME_NOW, XattrFlags};

const PORT: u16 = 8044;
const GRP: u32 = 4300;
const GRP2: u32 = 4301;

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().mode() & 0o7777
}

fn chmod(p: &Path, m: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn groups_access_and_opendir() {
    if !can_mount() {
        return;
    }
    with_mount(1, PORT, |m| {
        chmod(&m, 0o755);
        // A directory for group GRP only.
        let g = m.join("g");
        fs::create_dir(&g).unwrap();
        std::os::unix::fs::chown(&g, Some(0), Some(GRP)).unwrap();
        chmod(&g, 0o770);
        let d = g.clone();
        // A member through a supplementary group creates in it ...
        as_user(NOBODY, NOBODY, &[GRP], move || fs::write(d.join("f"), b"x").unwrap());
        let md = fs::metadata(g.join("f")).unwrap();
        assert_eq!((md.uid(), md.gid()), (NOBODY, NOBODY));
        // ... a non-member can neither search nor list it.
        let d = g.clone();
        let (stat, list, create) = as_user(NOBODY, NOBODY, &[], move || {
            (errno(fs::metadata(d.join("f"))), errno(fs::read_dir(&d)), errno(fs::write(d.join("n"), b"y")))
        });
        assert_eq!((stat, list, create), (libc::EACCES, libc::EACCES, libc::EACCES));
        // access(2) answers for the caller, groups included.
        let d = g.clone();
        let (member, outsider) = (
            as_user(OTHER, OTHER, &[GRP], {
                let d = d.clone();
                move || rustix::fs::access(&d, Access::READ_OK | Access::WRITE_OK | Access::EXEC_OK)
            }),
            as_user(OTHER, OTHER, &[], move || rustix::fs::access(&d, Access::EXEC_OK)),
        );
        member.unwrap();
        assert_eq!(rerrno(outsider), libc::EACCES);
        // Root may not execute a file with no execute bit, reads anything.
        fs::write(m.join("plain"), b"p").unwrap();
        chmod(&m.join("plain"), 0o000);
        assert_eq!(rerrno(rustix::fs::access(m.join("plain"), Access::EXEC_OK)), libc::EACCES);
        rustix::fs::access(m.join("plain"), Access::READ_OK | Access::WRITE_OK).unwrap();
        assert_eq!(fs::read(m.join("plain")).unwrap(), b"p");
        // execve needs execute permission, not read: a 0711 program runs
        // for others, a 0700 one does not.
        fs::copy("/bin/true", m.join("prog")).unwrap();
        chmod(&m.join("prog"), 0o711);
        let run = |p: std::path::PathBuf| {
            use std::os::unix::process::CommandExt;
            std::process::Command::new(p).uid(NOBODY).gid(NOBODY).status()
        };
        assert!(run(m.join("prog")).unwrap().success());
        chmod(&m.join("prog"), 0o700);
        assert_eq!(errno(run(m.join("prog"))), libc::EACCES);
        // A directory readable but not searchable: listed, not entered.
        let l = m.join("listonly");
        fs::create_dir(&l).unwrap();
        fs::write(l.join("e"), b"").unwrap();
        chmod(&l, 0o744);
        let (names, stat) = as_user(NOBODY, NOBODY, &[], move || {
            let n: Vec<String> =
                fs::read_dir(&l).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            (n, errno(fs::metadata(l.join("e"))))
        });
        assert_eq!((names, stat), (vec!["e".to_string()], libc::EACCES));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ownership_and_set_id_bits() {
    if !can_mount() {
        return;
    }
    with_mount(1, PORT, |m| {
        chmod(&m, 0o777);
        let f = m.join("f");
        as_user(NOBODY, NOBODY, &[GRP], {
            let f = f.clone();
            move || fs::write(&f, b"x").unwrap()
        });
        // chgrp by the owner: to a group it is in, not to another.
        let p = f.clone();
        let (to_member, to_other, give_away) = as_user(NOBODY, NOBODY, &[GRP], move || {
            (
                std::os::unix::fs::chown(&p, None, Some(GRP)),
                errno(std::os::unix::fs::chown(&p, None, Some(GRP2))),
                errno(std::os::unix::fs::chown(&p, Some(OTHER), None)),
            )
        });
        to_member.unwrap();
        assert_eq!((to_other, give_away), (libc::EPERM, libc::EPERM));
        assert_eq!(fs::metadata(&f).unwrap().gid(), GRP);
        // Not the owner: no chgrp even to its own group.
        let p = f.clone();
        assert_eq!(as_user(OTHER, GRP, &[], move || errno(std::os::unix::fs::chown(&p, None, Some(GRP)))), libc::EPERM);
        // chmod g+s by an owner no longer in the file's group: the bit is dropped.
        let p = f.clone();
        as_user(NOBODY, NOBODY, &[], move || fs::set_permissions(&p, fs::Permissions::from_mode(0o2755)).unwrap());
        assert_eq!(mode(&f), 0o755);
        let p = f.clone();
        as_user(NOBODY, NOBODY, &[GRP], move || fs::set_permissions(&p, fs::Permissions::from_mode(0o2755)).unwrap());
        assert_eq!(mode(&f), 0o2755);
        // chown (even root's) of a non-directory drops set-user-ID and set-group-ID.
        chmod(&f, 0o6755);
        std::os::unix::fs::chown(&f, Some(OTHER), None).unwrap();
        assert_eq!((fs::metadata(&f).unwrap().uid(), mode(&f)), (OTHER, 0o755));
        // A set-group-ID directory gives its group to what is made in it,
        // and its bit to new directories.
        let sg = m.join("sg");
        fs::create_dir(&sg).unwrap();
        std::os::unix::fs::chown(&sg, None, Some(GRP)).unwrap();
        chmod(&sg, 0o2777);
        let d = sg.clone();
        as_user(NOBODY, NOBODY, &[], move || {
            fs::write(d.join("file"), b"").unwrap();
            fs::create_dir(d.join("sub")).unwrap();
        });
        let (file, sub) = (fs::metadata(sg.join("file")).unwrap(), fs::metadata(sg.join("sub")).unwrap());
        assert_eq!((file.uid(), file.gid()), (NOBODY, GRP));
        assert_eq!((sub.gid(), sub.mode() & 0o2000), (GRP, 0o2000));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn times_truncates_opens_renames_and_xattrs() {
    if !can_mount() {
        return;
    }
    with_mount(1, PORT, |m| {
        chmod(&m, 0o777);
        // Root's file writable by all: others may set its times to now
        // (write permission), not to a value (owner only).
        let shared = m.join("shared");
        fs::write(&shared, b"s").unwrap();
        chmod(&shared, 0o666);
        let now = Timespec { tv_sec: 0, tv_nsec: UTIME_NOW };
        let now = Timestamps { last_access: now, last_modification: now };
        let explicit = Timestamps {
            last_access: Timespec { tv_sec: 5, tv_nsec: 0 },
            last_modification: Timespec { tv_sec: 5, tv_nsec: 0 },
        };
        let (p, n2) = (shared.clone(), now.clone());
        let (touch, set) = as_user(NOBODY, NOBODY, &[], move || {
            (
                rustix::fs::utimensat(CWD, &p, &n2, AtFlags::empty()),
                rerrno(rustix::fs::utimensat(CWD, &p, &explicit, AtFlags::empty())),
            )
        });
        touch.unwrap();
        assert_eq!(set, libc::EPERM);
        chmod(&shared, 0o644);
        let p = shared.clone();
        assert_eq!(
            as_user(NOBODY, NOBODY, &[], move || rerrno(rustix::fs::utimensat(CWD, &p, &now, AtFlags::empty()))),
            libc::EACCES
        );
        // truncate(2) needs write permission; O_CREAT of an existing file
        // checks its mode; nothing changed by the refusals.
        let p = shared.clone();
        let (trunc, creat) = as_user(NOBODY, NOBODY, &[], move || {
            (
                errno(OpenOptions::new().write(true).open(&p).and_then(|f| f.set_len(0))),
                errno(OpenOptions::new().write(true).create(true).truncate(false).open(&p)),
            )
        });
        assert_eq!((trunc, creat), (libc::EACCES, libc::EACCES));
        // truncate(2) by path (coreutils' truncate run as that user).
        use std::os::unix::process::CommandExt;
        let out = std::process::Command::new("truncate")
            .args(["-s", "0"])
            .arg(&shared)
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .unwrap();
        assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Permission denied"), "{out:?}");
        assert_eq!(fs::read(&shared).unwrap(), b"s");
        // The creator of a mode-0 file writes and ftruncates through its handle.
        let p = m.join("zero");
        let len = as_user(NOBODY, NOBODY, &[], move || {
            let mut f = OpenOptions::new().read(true).write(true).create_new(true).mode(0o0).open(&p).unwrap();
            f.write_all(b"12345").unwrap();
            f.set_len(2).unwrap();
            f.metadata().unwrap().len()
        });
        assert_eq!((len, mode(&m.join("zero"))), (2, 0));
        // rmdir and rename in a directory the caller cannot write: EACCES;
        // out of a sticky directory, another's file: EPERM.
        let ro = m.join("ro");
        fs::create_dir_all(ro.join("sub")).unwrap();
        chmod(&ro, 0o755);
        let tmp = m.join("tmp");
        fs::create_dir(&tmp).unwrap();
        chmod(&tmp, 0o1777);
        fs::write(tmp.join("roots"), b"").unwrap();
        let (r, t) = (ro.clone(), tmp.clone());
        let (rmdir, rename_ro, rename_sticky, own) = as_user(NOBODY, NOBODY, &[], move || {
            fs::write(t.join("mine"), b"").unwrap();
            (
                errno(fs::remove_dir(r.join("sub"))),
                errno(fs::rename(r.join("sub"), t.join("sub"))),
                errno(fs::rename(t.join("roots"), t.join("taken"))),
                fs::rename(t.join("mine"), t.join("still-mine")),
            )
        });
        assert_eq!((rmdir, rename_ro, rename_sticky), (libc::EACCES, libc::EACCES, libc::EPERM));
        own.unwrap();
        // user.* xattrs follow the mode bits.
        let x = m.join("x");
        fs::write(&x, b"").unwrap();
        chmod(&x, 0o640);
        rustix::fs::setxattr(&x, "user.k", b"v", XattrFlags::empty()).unwrap();
        let p = x.clone();
        let (set, get) = as_user(NOBODY, NOBODY, &[], move || {
            let mut buf = [0u8; 8];
            (
                rerrno(rustix::fs::setxattr(&p, "user.k", b"w", XattrFlags::empty())),
                rerrno(rustix::fs::getxattr(&p, "user.k", &mut buf)),
            )
        });
        assert_eq!((set, get), (libc::EACCES, libc::EACCES));
        let p = x.clone();
        let mut buf = [0u8; 8];
        let n = as_user(OTHER, OTHER, &[0], move || {
            rustix::fs::getxattr(&p, "user.k", &mut buf).map(|n| buf[..n].to_vec())
        });
        assert_eq!(n.unwrap(), b"v", "group 0 through a supplementary group reads it");
    })
    .await;
}
