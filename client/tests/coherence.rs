//! Two FUSE mounts of one file system (two clients, each with its own lnet
//! node and lock callback service): what one changes, the other sees at
//! once, although both cache attributes and names in the kernel under the
//! MDT's locks; and a stat served from that cache sends nothing to the
//! MDT (counted from its `/metrics`). Port 8046 (lnet), 8047 (the MDS's
//! admin endpoint).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use client::fuse::FuseCache;
use client::options::MountOptions;
use client::up::{Cluster, Layout};
use lnet::{Lnet, LnetConfig, NetConfig, TcpConfig};

const PORT: u16 = 8046;
const ADMIN: u16 = 8047;

/// The locks the MDT holds for its clients, from `/metrics`.
fn mdt_locks(addr: Ipv4Addr) -> u64 {
    metrics(addr)
        .lines()
        .filter(|l| l.starts_with("sheen_ldlm_locks{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn metrics(addr: Ipv4Addr) -> String {
    let mut s = std::net::TcpStream::connect((addr, ADMIN)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// The MDT's getattr and lookup count (intents included) from `/metrics`.
fn mdt_reads(addr: Ipv4Addr) -> u64 {
    let reads = ["\"MdsGetattr\"", "\"MdsGetattrName\"", "\"LdlmEnqueue\""];
    metrics(addr)
        .lines()
        .filter(|l| l.starts_with("ptlrpc_requests_handled_total{service=\"mdt"))
        .filter(|l| reads.iter().any(|r| l.contains(&format!("operation={r}"))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn client_lnet(addr: Ipv4Addr) -> Lnet {
    Lnet::start(LnetConfig {
        nets: vec![NetConfig::Tcp(TcpConfig { addr, port: PORT, accept: false, ..TcpConfig::default() })],
        ..LnetConfig::default()
    })
    .await
    .unwrap()
}

/// Runs `f(mount_a, mount_b, mds_addr)` on two mounts of a fresh file system.
async fn with_two_mounts<T: Send + 'static>(f: impl FnOnce(PathBuf, PathBuf, Ipv4Addr) -> T + Send + 'static) -> T {
    with_two_mounts_opts(MountOptions::default(), move |a, b, mds, _| f(a, b, mds)).await
}

/// Runs `f(mount_a, mount_b, mds_addr, a's lock cache)` on two mounts of a
/// fresh file system, A's mounted with `opts_a`.
async fn with_two_mounts_opts<T: Send + 'static>(
    opts_a: MountOptions,
    f: impl FnOnce(PathBuf, PathBuf, Ipv4Addr, Arc<FuseCache>) -> T + Send + 'static,
) -> T {
    common::ensure_daemons();
    let (a, b) = common::net();
    let tmp = common::test_dir();
    let host = |n: u8| Ipv4Addr::new(127, a, b, n);
    let layout = Layout {
        fsname: "sheen".into(),
        mds_addr: host(101),
        oss_addr: host(102),
        port: PORT,
        mds_admin_port: ADMIN,
        oss_admin_port: 0,
        client_admin_port: 0,
    };
    let cluster = Cluster::start(layout.clone(), tmp.path(), 200, false).await.unwrap_or_else(|e| {
        let log = |n: &str| std::fs::read_to_string(tmp.path().join(n)).unwrap_or_default();
        panic!("{e}\nmds.log:\n{}\noss.log:\n{}", log("mds.log"), log("oss.log"))
    });
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut mounts = Vec::new();
    for (i, n) in [(0, 103), (1, 104)] {
        let lnet = client_lnet(host(n)).await;
        let opts = if i == 0 { opts_a } else { MountOptions::default() };
        let fs = client::Sheen::mount_with(&lnet, layout.mgs_nid(), "sheen", opts).await.unwrap();
        let mnt = tmp.path().join(format!("mnt{i}"));
        std::fs::create_dir(&mnt).unwrap();
        let rt = tokio::runtime::Handle::current();
        let m = client::fuse::mount_cached(Arc::new(fs), rt, &mnt, 4, &lnet).unwrap();
        mounts.push((mnt, m, lnet));
    }
    let (ma, mb) = (mounts[0].0.clone(), mounts[1].0.clone());
    let mds = layout.mds_addr;
    let cache_a = mounts[0].1.cache.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(ma, mb, mds, cache_a)))
    })
    .await
    .unwrap();
    for (_, m, lnet) in mounts {
        let client::fuse::Mounted { session, cache, .. } = m;
        tokio::task::spawn_blocking(move || session.umount_and_join()).await.unwrap().unwrap();
        drop(cache);
        lnet.shutdown();
    }
    cluster.stop();
    out.unwrap_or_else(|p| std::panic::resume_unwind(p))
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_mount_changes_the_other_sees_it_at_once() {
    if !common::can_mount() {
        return;
    }
    with_two_mounts(|a, b, mds| {
        std::fs::create_dir(a.join("d")).unwrap();
        std::fs::write(a.join("d/f"), b"x").unwrap();

        // chmod: B cached the mode (a second stat asks the MDT nothing).
        assert_eq!(std::fs::metadata(b.join("d/f")).unwrap().mode() & 0o777, 0o644);
        let before = mdt_reads(mds);
        assert_eq!(std::fs::metadata(b.join("d/f")).unwrap().mode() & 0o777, 0o644);
        assert_eq!(mdt_reads(mds), before, "a cached stat sent a getattr or lookup to the MDT");
        std::fs::set_permissions(a.join("d/f"), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(std::fs::metadata(b.join("d/f")).unwrap().mode() & 0o777, 0o600, "chmod on A not seen on B");

        // rename: B's cached name goes, the new one is there.
        std::fs::rename(a.join("d/f"), a.join("d/g")).unwrap();
        assert!(std::fs::metadata(b.join("d/f")).is_err(), "renamed-away name still seen on B");
        assert_eq!(std::fs::metadata(b.join("d/g")).unwrap().mode() & 0o777, 0o600);

        // create in a directory B listed.
        assert_eq!(names(&b.join("d")), vec!["g"]);
        let nlink = std::fs::metadata(b.join("d")).unwrap().nlink();
        std::fs::write(a.join("d/h"), b"").unwrap();
        assert_eq!(names(&b.join("d")), vec!["g", "h"]);
        assert!(std::fs::metadata(b.join("d/h")).unwrap().is_file());
        std::fs::create_dir(a.join("d/sub")).unwrap();
        assert_eq!(std::fs::metadata(b.join("d")).unwrap().nlink(), nlink + 1, "B's cached nlink of d");

        // unlink: B stat'ed it, then it is gone there too.
        assert!(std::fs::metadata(b.join("d/g")).is_ok());
        std::fs::remove_file(a.join("d/g")).unwrap();
        assert!(std::fs::metadata(b.join("d/g")).is_err(), "unlinked name still seen on B");
        assert_eq!(names(&b.join("d")), vec!["h", "sub"]);

        // write + size: B knows the empty file (its size cached); A writes;
        // B sees the size while A has it open (after A's fsync) and after
        // A closed it.
        assert_eq!(std::fs::metadata(b.join("d/h")).unwrap().len(), 0);
        let mut w = std::fs::OpenOptions::new().write(true).open(a.join("d/h")).unwrap();
        w.write_all(&[7u8; 5000]).unwrap();
        // A's write-behind reaches the OSTs by its fsync (other clients see
        // unsynced data after the writer's close or fsync: no extent locks).
        w.sync_all().unwrap();
        assert_eq!(std::fs::metadata(b.join("d/h")).unwrap().len(), 5000, "size while A writes");
        w.write_all(&[8u8; 100]).unwrap();
        drop(w);
        assert_eq!(std::fs::metadata(b.join("d/h")).unwrap().len(), 5100, "size after A's close");
        assert_eq!(std::fs::read(b.join("d/h")).unwrap().len(), 5100);

        // and the other way round.
        std::fs::set_permissions(b.join("d/sub"), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(std::fs::metadata(a.join("d/sub")).unwrap().mode() & 0o777, 0o700);
        std::fs::remove_dir(b.join("d/sub")).unwrap();
        assert!(std::fs::metadata(a.join("d/sub")).is_err());

        // Updates are served on the MDT's receive path unless they must
        // wait: those that called the other mount back were declined
        // there and ran on a worker.
        let count = |name: &str| {
            metrics(mds)
                .lines()
                .filter(|l| l.starts_with(&format!("ptlrpc_{name}_total{{service=\"mdt0\"}}")))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        };
        assert!(count("inline_declined") > 0.0, "no update waited for a callback");
        assert!(count("requests_inline") > count("inline_declined"));
    })
    .await;
}

/// A file this mount created and closed is stat'ed from its cache (the
/// create's reply brought a lock, the close its exact size: no MDT read),
/// and follows what the other mount does to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_created_here_is_stat_ed_from_the_cache_and_follows_the_other_mount() {
    if !common::can_mount() {
        return;
    }
    with_two_mounts(|a, b, mds| {
        std::fs::create_dir(a.join("e")).unwrap();
        std::fs::write(a.join("e/f"), [1u8; 4096]).unwrap();
        // The kernel sends RELEASE (the close) after close(2) returned:
        // until it is done the file is open here and a stat asks the MDT.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let before = mdt_reads(mds);
            assert_eq!(std::fs::metadata(a.join("e/f")).unwrap().len(), 4096);
            if mdt_reads(mds) == before {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "every stat of a created and closed file asked the MDT");
        }
        // B appends (its open for writing calls A's lock back) and closes.
        let mut w = std::fs::OpenOptions::new().append(true).open(b.join("e/f")).unwrap();
        w.write_all(&[2u8; 100]).unwrap();
        drop(w);
        assert_eq!(std::fs::metadata(a.join("e/f")).unwrap().len(), 4196, "B's append not seen on A");
        // B truncates; A sees it.
        std::fs::OpenOptions::new().write(true).open(b.join("e/f")).unwrap().set_len(10).unwrap();
        assert_eq!(std::fs::metadata(a.join("e/f")).unwrap().len(), 10, "B's truncate not seen on A");
        // A creates another and B removes it: A's cached name goes.
        std::fs::write(a.join("e/g"), b"g").unwrap();
        assert_eq!(std::fs::metadata(a.join("e/g")).unwrap().len(), 1);
        std::fs::remove_file(b.join("e/g")).unwrap();
        assert!(std::fs::metadata(a.join("e/g")).is_err(), "a name B removed is still seen on A");
        assert_eq!(names(&a.join("e")), vec!["f"]);
    })
    .await;
}

/// A mount with `lru_size=8` keeps at most 8 locks however many files it
/// touches, and gives the MDT back those it pushes out (the MDT's table
/// shrinks to what the two mounts hold); a file whose lock went is still
/// seen as the other mount leaves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mount_keeps_at_most_lru_size_locks_and_gives_the_rest_back() {
    if !common::can_mount() {
        return;
    }
    let opts = MountOptions::parse("lru_size=8").unwrap();
    with_two_mounts_opts(opts, |a, b, mds, cache_a| {
        std::fs::create_dir(a.join("l")).unwrap();
        for n in 0..40 {
            std::fs::write(a.join(format!("l/f{n}")), b"x").unwrap();
            std::fs::metadata(a.join(format!("l/f{n}"))).unwrap();
            assert!(cache_a.locks_held() <= 8, "{} locks held with lru_size=8", cache_a.locks_held());
        }
        // The pushed-out locks are cancelled in batches, every 200 ms.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while mdt_locks(mds) > 8 + 2 {
            assert!(std::time::Instant::now() < deadline, "the MDT still holds {} locks", mdt_locks(mds));
            std::thread::yield_now();
        }
        std::fs::write(b.join("l/f0"), b"from b").unwrap();
        assert_eq!(std::fs::read(a.join("l/f0")).unwrap(), b"from b");
    })
    .await;
}

/// With the lock cache full (every grant pushes a lock out), a path
/// walked once is cached by the kernel all the same: the lookup's own
/// grant pushing a lock out does not make its answer uncacheable (it did,
/// and every walk of the path went to the MDT and granted two more locks
/// on each directory in it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_lock_cache_still_caches_a_walked_path() {
    if !common::can_mount() {
        return;
    }
    let opts = MountOptions::parse("lru_size=8").unwrap();
    with_two_mounts_opts(opts, |a, b, mds, cache_a| {
        std::fs::create_dir(a.join("w")).unwrap();
        for n in 0..20 {
            std::fs::write(a.join(format!("w/f{n}")), b"x").unwrap();
        }
        // A name A never saw: its first walk there looks it up, and the
        // locks granted push others out.
        std::fs::write(b.join("w/g"), b"from b").unwrap();
        std::fs::metadata(a.join("w/g")).unwrap();
        let reads = mdt_reads(mds);
        for _ in 0..10 {
            std::fs::metadata(a.join("w/g")).unwrap();
        }
        // Eight locks are few: the walk's own grants may push a lock of
        // the path out once or twice (uses within a second do not move a
        // lock in the LRU). Every walk asked the MDT three times or so
        // when a push-out made the answers uncacheable.
        let more = mdt_reads(mds) - reads;
        assert!(more <= 4, "ten walks of a path asked the MDT {more} times");
        assert!(cache_a.locks_held() <= 8);
    })
    .await;
}

/// The MDT's lock counter `event` (callbacks, cancels, ...) from `/metrics`.
fn ldlm_total(addr: Ipv4Addr, event: &str) -> u64 {
    let key = format!("event=\"{event}\"");
    metrics(addr)
        .lines()
        .filter(|l| l.starts_with("sheen_ldlm_total{") && l.contains(&key))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// In a directory this mount made, it knows every name: a lookup of a
/// new one is answered here (no MDT read), its own creates and unlinks
/// there keep its lock (no callback), and the other mount's change there
/// calls the lock back, after which A sees B's name and asks the MDT
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn names_in_a_directory_made_here_are_known_here_until_the_other_mount_changes_it() {
    if !common::can_mount() {
        return;
    }
    with_two_mounts_opts(MountOptions::default(), |a, b, mds, cache_a| {
        std::fs::create_dir(a.join("n")).unwrap();
        // The path to it, cached under its locks.
        std::fs::metadata(a.join("n")).unwrap();
        std::fs::metadata(a.join("n")).unwrap();
        let (callbacks, answered) = (ldlm_total(mds, "callbacks"), cache_a.absent_answered());
        for i in 0..20 {
            let mut f =
                std::fs::OpenOptions::new().write(true).create_new(true).open(a.join(format!("n/f{i}"))).unwrap();
            f.write_all(b"x").unwrap();
        }
        // Each create's lookup of its new name was answered here (a walk
        // may look "n" itself up again in the root: not counted here).
        assert!(cache_a.absent_answered() >= answered + 20, "{} lookups answered here", cache_a.absent_answered());
        std::fs::create_dir(a.join("n/sub")).unwrap();
        std::fs::remove_file(a.join("n/f0")).unwrap();
        // (The kernel may look up sub, a name made here, again.)
        std::fs::remove_dir(a.join("n/sub")).unwrap();
        assert!(a.join("n/f0").symlink_metadata().is_err(), "an unlinked name still seen");
        assert!(a.join("n/sub").symlink_metadata().is_err(), "a removed directory still seen");
        assert!(a.join("n/never").symlink_metadata().is_err());
        // A name too long is refused as the MDT would, not "absent".
        let long = a.join("n").join("x".repeat(256));
        assert_eq!(long.symlink_metadata().unwrap_err().raw_os_error(), Some(libc::ENAMETOOLONG));
        // A made f0 again: the name set knows it.
        std::fs::write(a.join("n/f0"), b"again").unwrap();
        assert_eq!(std::fs::read(a.join("n/f0")).unwrap(), b"again");
        assert!(cache_a.absent_answered() >= answered + 24, "{} lookups answered here", cache_a.absent_answered());
        assert_eq!(ldlm_total(mds, "callbacks"), callbacks, "this mount's own changes called its lock back");
        // B sees what A made, and makes a name there: A's lock is called back.
        let mut on_b = names(&b.join("n"));
        on_b.sort();
        let mut want: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
        want.sort();
        assert_eq!(on_b, want);
        std::fs::write(b.join("n/from-b"), b"b").unwrap();
        assert!(ldlm_total(mds, "callbacks") > callbacks, "B's create did not call A's lock back");
        assert_eq!(std::fs::read(a.join("n/from-b")).unwrap(), b"b", "B's name not seen on A");
        // A's lookups ask the MDT again, and stay right.
        let answered = cache_a.absent_answered();
        assert!(a.join("n/never").symlink_metadata().is_err());
        std::fs::write(b.join("n/never"), b"now").unwrap();
        assert_eq!(std::fs::read(a.join("n/never")).unwrap(), b"now");
        assert_eq!(cache_a.absent_answered(), answered, "answered here after the lock was called back");
    })
    .await;
}
