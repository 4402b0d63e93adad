//! The FUSE mount against real `sheen-mds` + `sheen-oss` processes: mount
//! under a temporary directory, use it with `std::fs`, unmount. Needs
//! root and `/dev/fuse` (the pure-Rust mount); without them the tests say
//! so on stderr and return.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::MetadataExt;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn directories_through_the_mount() {
    if !can_mount() {
        return;
    }
    with_mount(4, 7998, |m| {
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
    with_mount(5, 7998, |m| {
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

/// The mount's `/metrics` text counts what went through it: FUSE
/// operations and their failures, bytes written, the locks it holds and
/// every import's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_mount_counts_its_operations_for_its_metrics() {
    if !can_mount() {
        return;
    }
    with_mount_metrics(6, 7998, |m, metrics| {
        for i in 0..5 {
            std::fs::write(m.join(format!("f{i}")), b"abcd").unwrap();
        }
        assert!(std::fs::read(m.join("none")).is_err());
        let text = metrics();
        let value = |key: &str| -> u64 {
            let line = text.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key} in\n{text}"));
            line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap() as u64
        };
        assert_eq!(value("sheen_client_fuse_ops_total{operation=\"create\"}"), 5);
        // close(2) waits for FLUSH (RELEASE comes after, unwaited).
        assert_eq!(value("sheen_client_fuse_ops_total{operation=\"flush\"}"), 5);
        assert_eq!(value("sheen_client_fuse_bytes_total{direction=\"write\"}"), 20);
        assert!(value("sheen_client_fuse_errors_total{operation=\"lookup\"}") >= 1, "the lookup of 'none'");
        assert_eq!(value("sheen_client_fuse_op_seconds_count{operation=\"create\"}"), 5);
        assert!(value("sheen_client_locks") >= 5);
        assert_eq!(value("sheen_client_import_state{target=\"sheen-MDT0000\",state=\"Full\"}"), 1);
        assert!(value("sheen_client_import_sent_total{target=\"sheen-MDT0000\"}") >= 6, "a connect, five creates");
        assert!(text.contains("ptlrpc_requests_handled_total") || text.contains("ptlrpc_queue"), "callback service");
    })
    .await;
}
