//! ENOSPC on a small target (an 8 MiB tmpfs, mounted by the test; needs
//! root and is skipped with a message otherwise): writes are refused with
//! ENOSPC before their data moves, and every acknowledged byte is kept.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Oss, bounded, pattern, target_config};

/// Unmounts on drop.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_target_refuses_before_acknowledging() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let ok = Command::new("mount").args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"]).arg(&mnt).status();
    if !matches!(ok, Ok(s) if s.success()) {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    }
    let _guard = Tmpfs(mnt.clone());
    let cfg = ost::OstConfig {
        reserve_bytes: 512 << 10,
        grant_per_export: 1 << 20,
        commit_interval: Duration::from_millis(50),
        ..target_config(&mnt.join("ost0"))
    };
    let oss = Oss::start(cfg, true).await;
    let c = oss.client_with("c1", ost::client::OstClientConfig { grant: 1 << 20, ..common::client_config() });
    bounded(c.connect()).await.unwrap();
    let oid = common::obj(bounded(c.create(common::SEQ, 1)).await.unwrap().first);
    let chunk = 256 << 10;
    let mut acked = 0u64;
    let mut refusals = 0;
    for k in 0..64u64 {
        match bounded(c.write(oid, k * chunk as u64, &pattern(k, chunk))).await {
            Ok(_) => {
                assert_eq!(refusals, 0, "no write is accepted after the target reported full");
                acked += 1;
            }
            Err(e) => {
                assert_eq!(e.errno(), 28, "ENOSPC, not {e}");
                refusals += 1;
                if refusals == 3 {
                    break;
                }
            }
        }
    }
    assert!(acked >= 8, "an 8 MiB target takes a few MiB first ({acked} chunks)");
    assert_eq!(refusals, 3, "the target filled up");
    // The refusals came from admission, before any bulk moved.
    let text = oss.server.render_metrics();
    assert!(text.contains("lustre_enospc_total{component=\"ost\",target=\"sheen-OST0000\"} 3"), "{text}");
    // The grant shrank on a full target.
    assert!(c.grant() < 1 << 20, "grant {}", c.grant());
    // Every acknowledged byte is there, before and after a commit.
    bounded(c.sync()).await.unwrap();
    for k in 0..acked {
        let got = bounded(c.read(oid, k * chunk as u64, chunk as u32)).await.unwrap();
        assert!(got == pattern(k, chunk), "chunk {k} intact");
    }
    assert_eq!(bounded(c.getattr(oid)).await.unwrap().size, acked * chunk as u64);
    oss.stop();
}
