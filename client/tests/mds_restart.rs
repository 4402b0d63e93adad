//! kill -9 of `sheen-mds` (real processes) while a library client holds
//! files open: the client's import replays its opens, so after the
//! restart the handles opened before it still write, read and close (no
//! EBADF), and a file unlinked while open survives recovery (the MDT
//! destroys the previous boot's orphans only once recovery is over, and
//! not those a replayed open holds) until its last close.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use client::up::{find_binary, spawn_ready};
use common::*;

/// This test file's lnet port (README "Tests").
const PORT: u16 = 8016;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn files_open_across_an_mds_kill9_still_write_read_and_close() {
    let (_tmp, mut cluster, lnet) = up_on(0, PORT).await;
    let fs = client::Sheen::mount(&lnet, cluster.layout.mgs_nid(), "sheen").await.unwrap();
    let data = pattern(200 * KIB, 3);
    let a = fs.create("/a", 0o644, None).await.unwrap();
    fs.write(&a, 0, &data).await.unwrap();
    let b = fs.create("/b", 0o644, None).await.unwrap();
    fs.write(&b, 0, &data).await.unwrap();
    fs.unlink("/b").await.unwrap();
    let b_fid = b.fid();

    // kill -9 and restart the MDS (the MGS with it) on the same store.
    cluster.mds.kill().unwrap();
    cluster.mds.wait().unwrap();
    let toml = cluster.dir.join("mds.toml");
    let args = ["run", "--config", toml.to_str().unwrap()];
    let log = cluster.dir.join("mds.log");
    let (mds, _) = spawn_ready(&find_binary("sheen-mds").unwrap(), &args, &log, "sheen-mds ready", false).unwrap();
    cluster.mds = mds;
    // What the MGS's restart notice does, without waiting for the MGC.
    fs.mdc().import().handle_target_restarted();

    // Recovery over (the client replayed), orphans cleaned up.
    let r = fs.mdc().wait_info("recovered", 1, 30_000).await.unwrap();
    assert_eq!(r.value, 1, "end-of-recovery orphan cleanup ran");
    fs.mdc().get_info("process_destroys").await.unwrap();
    assert_eq!(fs.stat_fid(b_fid).await.unwrap().attr.nlink, 0, "the open-unlinked file survived the restart");
    let mut buf = vec![0; data.len()];
    assert_eq!(fs.read(&b, 0, &mut buf).await.unwrap(), data.len());
    assert!(buf == data, "its data too");
    fs.write(&a, data.len() as u64, b"tail").await.unwrap();
    fs.close(a).await.unwrap();
    fs.close(b).await.unwrap();
    assert_eq!(fs.stat("/a").await.unwrap().attr.size, data.len() as u64 + 4);
    assert!(fs.stat_fid(b_fid).await.is_err(), "the last close destroyed the orphan");
    // Once their closes are committed, the opens leave the replay list.
    fs.mdc().sync().await.unwrap();
    assert_eq!(fs.mdc().import().replay_len(), 0, "nothing held for replay");
    // The MDT reaches the OSTs again once recovery is over (before the
    // OSS stops, or its stop waits out connects to a stopped OSS).
    assert_eq!(fs.mdc().wait_info("osts_usable", 2, 20_000).await.unwrap().value, 2);
    fs.unmount().await;
    lnet.shutdown();
    cluster.stop();
}
