//! Shared by the client's process tests: a one-node file system of real
//! `sheen-mds` and `sheen-oss` processes on a loopback /24 of its own, and a
//! client lnet node. Waits are bounded (ready lines, the MDT's own wait).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::path::Path;

use client::up::{Cluster, Layout};
use lnet::{Lnet, LnetConfig, NetConfig, TcpConfig};
use ptlrpc::wire::mds::StripeSpec;

pub const KIB: usize = 1024;

/// A user no test file belongs to.
pub const NOBODY: u32 = 65534;
/// Another user.
pub const OTHER: u32 = 4242;

/// The errno of a failed std call.
pub fn errno<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    r.expect_err("the call should fail").raw_os_error().expect("an OS error")
}

/// The errno of a failed rustix call.
pub fn rerrno<T: std::fmt::Debug>(r: rustix::io::Result<T>) -> i32 {
    r.expect_err("the call should fail").raw_os_error()
}

/// Runs `f` on a thread acting as `uid`/`gid` with supplementary `groups`.
pub fn as_user<T: Send + 'static>(uid: u32, gid: u32, groups: &[u32], f: impl FnOnce() -> T + Send + 'static) -> T {
    let groups: Vec<rustix::process::Gid> = groups.iter().map(|&g| rustix::process::Gid::from_raw(g)).collect();
    std::thread::spawn(move || {
        use rustix::process::{Gid, Uid};
        rustix::thread::set_thread_groups(&groups).unwrap();
        let g = Gid::from_raw(gid);
        rustix::thread::set_thread_res_gid(g, g, g).unwrap();
        let u = Uid::from_raw(uid);
        rustix::thread::set_thread_res_uid(u, u, u).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// A test's data directory. Dropped — at the test's end, or while a
/// panic unwinds — it first detaches every mount under it (`umount -l`)
/// and SIGKILLs every process still running with it on its command line
/// (the `sheen-mds`/`sheen-oss` it started, a `sheen mount`), so a failed
/// test leaves no daemon holding its addresses for the next run.
pub struct TestDir(pub tempfile::TempDir);

impl std::ops::Deref for TestDir {
    type Target = tempfile::TempDir;
    fn deref(&self) -> &tempfile::TempDir {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        reap(self.0.path());
    }
}

/// A fresh [`TestDir`].
pub fn test_dir() -> TestDir {
    TestDir(tempfile::tempdir().unwrap())
}

/// Detaches the mounts under `dir` and kills the processes naming it.
pub fn reap(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
        for mp in mounts.lines().filter_map(|l| l.split(' ').nth(1)).filter(|mp| mp.starts_with(&needle)) {
            let _ = std::process::Command::new("umount").args(["-l", mp]).status();
        }
    }
    let me = std::process::id().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else { return };
    for p in procs.flatten() {
        let pid = p.file_name().to_string_lossy().into_owned();
        if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmd) = std::fs::read(p.path().join("cmdline")) else { continue };
        if String::from_utf8_lossy(&cmd).replace('\0', " ").contains(&needle) {
            eprintln!("reaping pid {pid} left running by the test");
            let _ = std::process::Command::new("kill").args(["-KILL", &pid]).status();
        }
    }
}

pub fn net() -> (u8, u8) {
    let p = std::process::id();
    (((p >> 8) as u8) | 0x40, p as u8)
}

/// Builds `sheen-mds` and `sheen-oss` into this test's target directory
/// (`cargo test -p client` alone does not), every time: cargo does nothing
/// when they are current, and a daemon left over from an older tree would
/// speak an older wire format (a stale `sheen-mds` answered ENOENT).
pub fn ensure_daemons() {
    let exe = std::env::current_exe().unwrap();
    let target_dir = exe.ancestors().nth(3).unwrap();
    let st = std::process::Command::new(env!("CARGO"))
        .args(["build", "-p", "mdt", "-p", "ost", "--bin", "sheen-mds", "--bin", "sheen-oss", "--target-dir"])
        .arg(target_dir)
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
        .status()
        .unwrap();
    assert!(st.success(), "building sheen-mds and sheen-oss");
}

pub async fn up(tag: u8) -> (TestDir, Cluster, Lnet) {
    up_on(tag, 7998).await
}

/// A file system on the test file's own lnet `port`.
pub async fn up_on(tag: u8, port: u16) -> (TestDir, Cluster, Lnet) {
    ensure_daemons();
    let (a, b) = net();
    let tmp = test_dir();
    let layout = Layout {
        fsname: "sheen".into(),
        // The pid picks the /24, the tag the hosts in it, so two test
        // processes never share an address.
        mds_addr: Ipv4Addr::new(127, a, b, tag.wrapping_mul(4).wrapping_add(1)),
        oss_addr: Ipv4Addr::new(127, a, b, tag.wrapping_mul(4).wrapping_add(2)),
        port,
        mds_admin_port: 0,
        oss_admin_port: 0,
        client_admin_port: 0,
    };
    let c = Cluster::start(layout.clone(), tmp.path(), 200, false).await.unwrap_or_else(|e| {
        let log = |n: &str| std::fs::read_to_string(tmp.path().join(n)).unwrap_or_default();
        panic!("{e}\nmds.log:\n{}\noss.log:\n{}", log("mds.log"), log("oss.log"))
    });
    let me = Ipv4Addr::new(127, a, b, tag.wrapping_mul(4).wrapping_add(3));
    let lnet = Lnet::start(LnetConfig {
        nets: vec![NetConfig::Tcp(TcpConfig { addr: me, port: layout.port, accept: false, ..TcpConfig::default() })],
        ..LnetConfig::default()
    })
    .await
    .unwrap();
    (tmp, c, lnet)
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8).collect()
}

pub fn two_stripes() -> Option<StripeSpec> {
    Some(StripeSpec { stripe_size: 64 << 10, stripe_count: 2, stripe_offset: -1, pool: String::new() })
}

/// Whether FUSE mounts can be made here (root and `/dev/fuse`); says so
/// on stderr when not.
pub fn can_mount() -> bool {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
    if !root || !std::path::Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED: FUSE tests need root and /dev/fuse");
        return false;
    }
    true
}

/// Runs `f` on a FUSE mount of a fresh file system on lnet `port` (on a
/// blocking thread: FUSE calls back into this runtime), then unmounts.
/// The mount point is reachable by every user (mode 0755 on the way).
pub async fn with_mount<T: Send + 'static>(
    tag: u8,
    port: u16,
    f: impl FnOnce(std::path::PathBuf) -> T + Send + 'static,
) -> T {
    with_mount_metrics(tag, port, |m, _| f(m)).await
}

/// [`with_mount`], `f` also given the mount's `/metrics` text source.
pub async fn with_mount_metrics<T: Send + 'static>(
    tag: u8,
    port: u16,
    f: impl FnOnce(std::path::PathBuf, ptlrpc::admin::MetricsSource) -> T + Send + 'static,
) -> T {
    use std::os::unix::fs::PermissionsExt;
    let (tmp, cluster, lnet) = up_on(tag, port).await;
    let fs = std::sync::Arc::new(client::Sheen::mount(&lnet, cluster.layout.mgs_nid(), "sheen").await.unwrap());
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let rt = tokio::runtime::Handle::current();
    let mounted = client::fuse::mount_cached(std::sync::Arc::clone(&fs), rt, &mnt, 4, &lnet).unwrap();
    let metrics = mounted.metrics_source(fs, lnet.clone());
    let client::fuse::Mounted { session, cache, .. } = mounted;
    let m = mnt.clone();
    let out =
        tokio::task::spawn_blocking(move || std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(m, metrics))))
            .await
            .unwrap();
    tokio::task::spawn_blocking(move || session.umount_and_join()).await.unwrap().unwrap();
    drop(cache);
    lnet.shutdown();
    cluster.stop();
    out.unwrap_or_else(|p| std::panic::resume_unwind(p))
}
