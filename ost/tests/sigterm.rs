//! `sheen-oss` as a process over tcp on loopback: SIGTERM while a client
//! keeps eight writes in flight, then a restart on the same directory.
//! The daemon commits and exits 0; the writes that reach it while it stops
//! are answered -ESHUTDOWN and the client's import goes to DISCON, then
//! reconnects and resends (and replays) once the daemon is back: every
//! write completes with no error to the caller, and every byte is there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::daemon::{OssToml, client_lnet, format, start};
use common::{bounded, client_config, pattern};
use ost::OstClient;
use ptlrpc::import::ImportStateKind;
use tokio::process::Command;

const PORT: u16 = 8025;
const CHUNK: usize = 64 << 10;
const WRITES: u64 = 600;

fn addrs() -> (Ipv4Addr, Ipv4Addr) {
    common::daemon::addrs(160, 30)
}

fn write_config(path: &Path, addr: Ipv4Addr, dir: &Path) {
    let toml =
        OssToml { fs_uuid: "sigterm-fs", admin: None, addr, port: PORT, dir, commit_interval: 0.5, obd_timeout: 20.0 };
    toml.write(path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_across_sigterm_and_restart_all_land_without_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("oss.toml");
    let (saddr, caddr) = addrs();
    write_config(&config, saddr, &dir.path().join("ost0"));
    format(&config).await;
    let (child, nid) = start(&config).await;
    let lnet = client_lnet(caddr, PORT).await;
    // Default adaptive timeouts (a request waits 5 s and more) and pings
    // every 5 s: without the notice the import would still be FULL when
    // the daemon has gone.
    let ping = ptlrpc::pinger::PingSettings { obd_timeout: Duration::from_secs(20), ..client_config().ping };
    let cfg = ost::client::OstClientConfig { ping, ..ost::client::OstClientConfig::default() };
    let c = Arc::new(OstClient::new(&lnet, vec![nid], "sheen-OST0000", "sigterm-client", cfg));
    bounded(c.connect()).await.unwrap();
    assert_eq!(c.import().unwrap().connect_data().map(|d| d.max_mod_rpcs), Some(8));
    let oid = common::obj(bounded(c.create(common::SEQ, 1)).await.unwrap().first);
    let imp = c.import().unwrap().clone();

    // Eight writers: chunk k at k * CHUNK until WRITES; a failed write
    // fails the test.
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..8 {
        let (c, next, done) = (Arc::clone(&c), Arc::clone(&next), Arc::clone(&done));
        writers.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= WRITES {
                    return;
                }
                if let Err(e) = c.write(oid, k * CHUNK as u64, &pattern(k, CHUNK)).await {
                    panic!("write {k} failed: {e}");
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    bounded(async {
        while done.load(Ordering::Relaxed) < 100 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let pid = child.id().unwrap();
    let st = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await.unwrap();
    assert!(st.success());
    let mut child = child;
    let code = bounded(child.wait()).await.unwrap();
    assert!(code.success(), "sheen-oss exits 0 on SIGTERM: {code}");
    let at_stop = done.load(Ordering::Relaxed);
    assert_ne!(imp.state(), ImportStateKind::Full, "the notice sent the import to DISCON, no timeout needed");
    assert!(imp.history().count(ImportStateKind::Full, ImportStateKind::Discon) >= 1);
    assert!(at_stop < WRITES, "writes were still going when the daemon stopped");
    let restarted = std::time::Instant::now();
    let (mut child, _) = start(&config).await;
    for w in writers {
        bounded(w).await.unwrap();
    }
    eprintln!(
        "{at_stop} writes done at SIGTERM; all {WRITES} done {:?} after the restart; resends {}, replays {}",
        restarted.elapsed(),
        imp.import_stats().resends,
        imp.import_stats().replays
    );
    assert_eq!(imp.stats().lost_replays, 0);
    for k in 0..WRITES {
        let got = bounded(c.read(oid, k * CHUNK as u64, CHUNK as u32)).await.unwrap();
        assert!(got == pattern(k, CHUNK), "chunk {k} intact");
    }
    c.close();
    child.start_kill().unwrap();
    bounded(child.wait()).await.unwrap();
    lnet.shutdown();
}
