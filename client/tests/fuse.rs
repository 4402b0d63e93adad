//! The FUSE mount against real `sheen-mds` + `sheen-oss` processes: mount
//! under a temporary directory, use it with `std::fs`, unmount. Needs
//! root and `/dev/fuse` (the pure-Rust mount); without them the tests say
//! so on stderr and return.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use client::Sheen;
use common::*;

fn can_mount() -> bool {
    let root = std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
    if !root || !Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED: FUSE tests need root and /dev/fuse");
        return false;
    }
    true
}

/// Runs `f` on the mount point (on a blocking thread: FUSE calls back
/// into this runtime).
async fn with_mount<T: Send + 'static>(tag: u8, f: impl FnOnce(PathBuf) -> T + Send + 'static) -> T {
    let (tmp, cluster, lnet) = up(tag).await;
    let fs = Sheen::mount(&lnet, cluster.layout.mgs_nid(), "sheen").await.unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let session = client::fuse::mount(Arc::new(fs), tokio::runtime::Handle::current(), &mnt, 2).unwrap();
    let m = mnt.clone();
    let out = tokio::task::spawn_blocking(move || std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(m))))
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || session.umount_and_join()).await.unwrap().unwrap();
    lnet.shutdown();
    cluster.stop();
    out.unwrap_or_else(|p| std::panic::resume_unwind(p))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn directories_through_the_mount() {
    if !can_mount() {
        return;
    }
    with_mount(4, |m| {
        std::fs::create_dir(m.join("a")).unwrap();
        std::fs::create_dir_all(m.join("a/b/c")).unwrap();
        let md = std::fs::metadata(m.join("a/b")).unwrap();
        assert!(md.is_dir());
        assert_eq!(md.mode() & 0o777, 0o755 & !0o022 & 0o777);
        let mut names: Vec<String> =
            std::fs::read_dir(m.join("a")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, vec!["b"]);
        std::fs::rename(m.join("a/b"), m.join("b2")).unwrap();
        assert!(std::fs::metadata(m.join("a/b")).is_err());
        assert!(std::fs::metadata(m.join("b2/c")).unwrap().is_dir());
        assert_eq!(std::fs::remove_dir(m.join("b2")).unwrap_err().raw_os_error(), Some(libc::ENOTEMPTY));
        std::fs::remove_dir(m.join("b2/c")).unwrap();
        std::fs::remove_dir(m.join("b2")).unwrap();
        std::fs::remove_dir(m.join("a")).unwrap();
        assert_eq!(std::fs::read_dir(&m).unwrap().count(), 0);
    })
    .await;
}

/// Files through the mount: large, sparse, truncated, renamed, removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn files_through_the_mount() {
    if !can_mount() {
        return;
    }
    with_mount(5, |m| {
        let data = pattern(3 * (1 << 20) + 12_345, 3);
        std::fs::write(m.join("f"), &data).unwrap();
        assert_eq!(std::fs::metadata(m.join("f")).unwrap().len(), data.len() as u64);
        assert_eq!(std::fs::read(m.join("f")).unwrap(), data);
        // Sparse: a write past the end leaves zeros.
        {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::OpenOptions::new().write(true).open(m.join("f")).unwrap();
            f.seek(SeekFrom::Start(10 << 20)).unwrap();
            f.write_all(b"end").unwrap();
            f.sync_all().unwrap();
        }
        let back = std::fs::read(m.join("f")).unwrap();
        assert_eq!(back.len(), (10 << 20) + 3);
        assert_eq!(&back[..data.len()], &data[..]);
        assert!(back[data.len()..10 << 20].iter().all(|&b| b == 0));
        std::fs::OpenOptions::new().write(true).open(m.join("f")).unwrap().set_len(1000).unwrap();
        assert_eq!(std::fs::read(m.join("f")).unwrap(), &data[..1000]);
        std::fs::rename(m.join("f"), m.join("g")).unwrap();
        std::fs::remove_file(m.join("g")).unwrap();
        assert_eq!(std::fs::read_dir(&m).unwrap().count(), 0);
    })
    .await;
}
