//! Imperative recovery with real processes (lnet port 8021): kill -9 of
//! `sheen-oss`, then of `sheen-mds` (MGS and MDT), each restarted; the
//! MGS's restart notice reaches the client's osc and mdc imports (and the
//! MDT's imports to the OSTs), which reconnect at once. The client runs
//! with Lustre's default timeouts (pings every 25 s), so nothing but the
//! notice brings it back this soon. Prints the time from the restarted
//! daemon's ready line to every import FULL again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use client::Sheen;
use client::up::{find_binary, spawn_ready};
use common::*;
use ptlrpc::driver::ImportDriver;
use ptlrpc::import::ImportStateKind;

const PORT: u16 = 8021;
const BOUND: Duration = Duration::from_secs(60);
/// Generous against a loaded machine; the figures printed are the point.
const FULL_WITHIN: Duration = Duration::from_secs(5);

/// Waits until `imp` is FULL on a connection newer than generation `g0`;
/// bounded.
async fn reconnected(imp: &ImportDriver, g0: u64) -> bool {
    let until = async {
        loop {
            if imp.generation() > g0 && imp.state() == ImportStateKind::Full {
                return;
            }
            // A short bound on each wait: the state may pass through FULL's
            // neighbours between two looks.
            let _ =
                tokio::time::timeout(Duration::from_millis(20), imp.wait_state(|k| k == ImportStateKind::Full)).await;
            let _ =
                tokio::time::timeout(Duration::from_millis(20), imp.wait_state(|k| k != ImportStateKind::Full)).await;
        }
    };
    tokio::time::timeout(BOUND, until).await.is_ok()
}

/// Restarts a daemon from its config in the cluster directory; returns it
/// once its ready line is out, with that moment.
async fn restart(
    dir: &std::path::Path,
    bin: &str,
    args: &[&str],
    log: &str,
    ready: &str,
) -> (std::process::Child, Instant) {
    let (dir, bin, log, ready) = (dir.to_path_buf(), bin.to_string(), log.to_string(), ready.to_string());
    let args: Vec<String> = args.iter().map(|a| a.replace("{dir}", &dir.display().to_string())).collect();
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (c, _) = spawn_ready(&find_binary(&bin).unwrap(), &a, &dir.join(log), &ready, false).unwrap();
        (c, Instant::now())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_targets_bring_clients_back_at_once() {
    let (_tmp, mut cluster, lnet) = up_on(3, PORT).await;
    let fs = Sheen::mount(&lnet, cluster.layout.mgs_nid(), "sheen").await.unwrap();
    assert_eq!(fs.options().ping().ping_interval(), Duration::from_secs(25), "Lustre's default pings");
    let data = pattern(512 * KIB, 9);
    let f = fs.create("/f", 0o644, two_stripes()).await.unwrap();
    fs.write(&f, 0, &data).await.unwrap();
    let imports: Vec<ImportDriver> = fs.oscs().values().map(|o| o.import().unwrap().clone()).collect();
    assert_eq!(imports.len(), 2);

    // kill -9 of the OSS, restarted at once.
    let g0: Vec<u64> = imports.iter().map(ImportDriver::generation).collect();
    cluster.oss.kill().unwrap();
    cluster.oss.wait().unwrap();
    let (oss, ready) = restart(&cluster.dir, "sheen-oss", &["--config", "{dir}/oss.toml"], "oss.log", "ready").await;
    cluster.oss = oss;
    let mut took = Vec::new();
    for (imp, g) in imports.iter().zip(&g0) {
        assert!(reconnected(imp, *g).await, "{} back", imp.client_uuid());
        took.push(ready.elapsed());
    }
    let osts = fs.mdc().wait_info("osts_usable", 2, 20_000).await.unwrap();
    let mdt_took = ready.elapsed();
    assert_eq!(osts.value, 2);
    println!(
        "imperative recovery, kill -9 sheen-oss: client osc imports FULL {:?} after the OSS was ready; the MDT allocates on both OSTs again after {mdt_took:?}",
        took.iter().max().unwrap()
    );
    assert!(took.iter().all(|t| *t < FULL_WITHIN), "{took:?}");
    fs.write(&f, 64 * KIB as u64, &data).await.unwrap();
    fs.fsync(&f).await.unwrap();
    fs.close(f).await.unwrap();

    // kill -9 of the MDS (MGS + MDT): the MGC notices the MGS gone, reads
    // the MDT's restart notice from the restarted MGS, and the mdc
    // reconnects.
    let g = fs.mdc().import().generation();
    cluster.mds.kill().unwrap();
    cluster.mds.wait().unwrap();
    let (mds, ready) =
        restart(&cluster.dir, "sheen-mds", &["run", "--config", "{dir}/mds.toml"], "mds.log", "sheen-mds ready").await;
    cluster.mds = mds;
    assert!(reconnected(fs.mdc().import(), g).await, "mdc back");
    let mdc_took = ready.elapsed();
    println!("imperative recovery, kill -9 sheen-mds: client mdc import FULL {mdc_took:?} after the MDS was ready");
    assert!(mdc_took < FULL_WITHIN, "{mdc_took:?}");

    // Everything written is there.
    let f = fs.open("/f", 0, 0, None).await.unwrap();
    let mut back = vec![0; data.len() + 64 * KIB];
    let n = fs.read(&f, 0, &mut back).await.unwrap();
    assert_eq!(n, back.len());
    assert_eq!(&back[..64 * KIB], &data[..64 * KIB]);
    assert_eq!(&back[64 * KIB..], &data[..]);
    fs.close(f).await.unwrap();
    fs.unmount().await;
    lnet.shutdown();
    cluster.stop();
}
