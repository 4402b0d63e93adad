//! `sheen-oss` as a process over tcp on loopback: kill -9 while a client
//! writes, restart on the same directory; every committed byte is on disk
//! before anything is replayed, and the client's import reconnects and
//! replays its uncommitted writes (pages and all) through the target's
//! recovery, checked byte for byte and in the recovery metrics. Then
//! SIGTERM: the daemon commits and exits 0, and a restart finds everything
//! committed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

use common::daemon::{OssToml, client_lnet, format, start};
use common::{bounded, client_config, pattern};
use ost::OstClient;
use parking_lot::Mutex;
use ptlrpc::import::ImportStateKind;
use tokio::process::Command;

const PORT: u16 = 7993;
const CHUNK: usize = 64 << 10;
const ADMIN_PORT: u16 = 7995;

fn addrs() -> (Ipv4Addr, Ipv4Addr) {
    common::daemon::addrs(200, 40)
}

fn write_config(path: &Path, addr: Ipv4Addr, dir: &Path) {
    let toml = OssToml {
        fs_uuid: "kill9-fs",
        admin: Some((addr, ADMIN_PORT)),
        addr,
        port: PORT,
        dir,
        commit_interval: 0.2,
        obd_timeout: 4.0,
    };
    toml.write(path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_names_bad_keys_and_refuses_unformatted_or_foreign_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: Vec<std::ffi::OsString>| async move {
        let out = Command::new(env!("CARGO_BIN_EXE_sheen-oss")).args(args).output().await.unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let config = dir.path().join("oss.toml");
    let o = addrs().0.octets();
    let saddr = Ipv4Addr::new(o[0], o[1], o[2], 3);
    // An unknown key.
    std::fs::write(&config, "fs_uuid = \"u\"\nbogus = 1\ntargets = []\n").unwrap();
    let (ok, err) = run(vec!["--config".into(), config.clone().into()]).await;
    assert!(!ok && err.contains("bogus"), "{err}");
    // A bad value, named by its key.
    write_config(&config, saddr, &dir.path().join("ost0"));
    let text = std::fs::read_to_string(&config).unwrap().replace("commit_interval = 0.2", "commit_interval = 0");
    std::fs::write(&config, text).unwrap();
    let (ok, err) = run(vec!["--config".into(), config.clone().into()]).await;
    assert!(!ok && err.contains("targets[0].commit_interval"), "{err}");
    // A target directory that was never formatted: refused, nothing created.
    write_config(&config, saddr, &dir.path().join("ost0"));
    let (ok, err) = run(vec!["--config".into(), config.clone().into()]).await;
    assert!(!ok && err.contains("format"), "{err}");
    assert!(!dir.path().join("ost0").exists());
    // Formatted for another target: refused, label untouched.
    let other = dir.path().join("other.toml");
    write_config(&other, saddr, &dir.path().join("ost0"));
    let text = std::fs::read_to_string(&other).unwrap().replace("sheen-OST0000", "sheen-OST0007");
    std::fs::write(&other, text.replace("index = 0", "index = 7")).unwrap();
    let (ok, _) = run(vec!["format".into(), "--config".into(), other.into()]).await;
    assert!(ok);
    let label = std::fs::read(dir.path().join("ost0/LABEL")).unwrap();
    let (ok, err) = run(vec!["--config".into(), config.clone().into()]).await;
    assert!(!ok && err.contains("formatted for target sheen-OST0007"), "{err}");
    let (ok, err) = run(vec!["format".into(), "--config".into(), config.into()]).await;
    assert!(!ok && err.contains("already formatted"), "{err}");
    assert_eq!(std::fs::read(dir.path().join("ost0/LABEL")).unwrap(), label);
}

fn object_path(dir: &Path, oid: ptlrpc::wire::OstId) -> std::path::PathBuf {
    common::object_file(&dir.join("ost0"), oid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_then_restart_recovers_committed_data_and_replays_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("oss.toml");
    let (saddr, caddr) = addrs();
    write_config(&config, saddr, &dir.path().join("ost0"));
    format(&config).await;
    let (child, nid) = start(&config).await;

    let lnet = client_lnet(caddr, PORT).await;
    let c = Arc::new(OstClient::new(&lnet, vec![nid], "sheen-OST0000", "kill9-client", client_config()));
    let first = bounded(c.connect()).await.unwrap();
    let oid = common::obj(bounded(c.create(common::SEQ, 1)).await.unwrap().first);
    let imp = c.import().unwrap().clone();

    // A writer: chunk k at k * CHUNK, recording (k, transno) when
    // acknowledged, until told to stop. Across the kill it does not fail:
    // its write waits in the import, which reconnects and replays.
    let acked: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (c2, a2, s2) = (Arc::clone(&c), Arc::clone(&acked), Arc::clone(&stop));
    let writer = tokio::spawn(async move {
        for k in 0..100_000u64 {
            if s2.load(std::sync::atomic::Ordering::Acquire) {
                return k;
            }
            let r = c2.write(oid, k * CHUNK as u64, &pattern(k, CHUNK)).await.expect("writes never fail");
            a2.lock().push((k, r.version));
        }
        panic!("the writer was never stopped");
    });
    // Kill once some writes are committed and some are not.
    bounded(async {
        loop {
            let n = acked.lock().len();
            if n >= 200 && c.last_committed() > 0 && c.uncommitted() > 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    let mut child = child;
    child.start_kill().unwrap();
    bounded(child.wait()).await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Release);
    let committed_at_kill = c.last_committed();
    let acked_at_kill = acked.lock().clone();
    let kept = c.uncommitted();
    eprintln!(
        "kill -9 after {} acknowledged writes; last_committed {committed_at_kill:#x}; {kept} kept for replay",
        acked_at_kill.len()
    );
    assert!(kept > 0, "some acknowledged writes were not committed at the kill");
    assert!(acked_at_kill.iter().any(|&(_, t)| t <= committed_at_kill), "some were");
    // Every committed byte is on disk, before anything is replayed.
    let file = std::fs::read(object_path(dir.path(), oid)).unwrap();
    for &(k, t) in &acked_at_kill {
        if t <= committed_at_kill {
            let at = k as usize * CHUNK;
            assert!(file.get(at..at + CHUNK) == Some(&pattern(k, CHUNK)[..]), "committed chunk {k} intact");
        }
    }

    // Restart: the import reconnects by itself (its pings fail, then it
    // connects again), replays its replied-uncommitted writes with their
    // pages in transno order, and goes back to FULL; the writer's last
    // write then completes.
    let restart_began = std::time::Instant::now();
    let (child, nid2) = start(&config).await;
    assert_eq!(nid2, nid);
    let written = bounded(writer).await.unwrap();
    bounded(imp.wait_state(|k| k == ImportStateKind::Full)).await;
    let second = imp.connect_data().unwrap();
    eprintln!(
        "restart: {written} writes acknowledged in all; replays sent {}; kill to FULL: {:?}",
        imp.import_stats().replays,
        restart_began.elapsed()
    );
    assert!(second.instance > first.instance, "a new boot epoch");
    assert!(imp.import_stats().replays > 0, "the import replayed its uncommitted writes");
    assert_eq!(imp.stats().lost_replays, 0, "no acknowledged write was lost");
    let acked = acked.lock().clone();
    for &(k, _) in &acked {
        let got = bounded(c.read(oid, k * CHUNK as u64, CHUNK as u32)).await.unwrap();
        assert!(got == pattern(k, CHUNK), "chunk {k} intact after recovery");
    }

    // The daemon's admin endpoint: the OST's metrics and the framework's
    // recovery status (one recovery, the client recovered).
    let metrics = bounded(http_get(saddr, "/metrics")).await;
    for fam in [
        "lustre_write_bytes_total{",
        "lustre_stats_total{component=\"ost\"",
        "lustre_capacity_kilobytes{",
        "lustre_recovery_status_finished_total{component=\"ost\",target=\"sheen-OST0000\"} 1",
        "lustre_recovery_status_completed_clients{component=\"ost\",target=\"sheen-OST0000\"} 1",
        "lustre_recovery_status_evicted_clients{component=\"ost\",target=\"sheen-OST0000\"} 0",
        "lustre_exports{component=\"ost\",target=\"sheen-OST0000\"} 1",
    ] {
        assert!(metrics.contains(fam), "{fam} in\n{metrics}");
    }

    // SIGTERM: commit, exit 0; a restart finds everything committed.
    let before = bounded(c.write(oid, 0, &pattern(7, CHUNK))).await.unwrap().version;
    let pid = child.id().unwrap();
    let st = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await.unwrap();
    assert!(st.success());
    let mut child = child;
    let code = bounded(child.wait()).await.unwrap();
    assert!(code.success(), "sheen-oss exits 0 on SIGTERM: {code}");
    let (mut child, _) = start(&config).await;
    // A read goes out once the import is FULL again.
    assert_eq!(bounded(c.read(oid, 0, CHUNK as u32)).await.unwrap(), pattern(7, CHUNK));
    let third = imp.connect_data().unwrap();
    assert!(third.instance > second.instance);
    assert!(third.transno >= before, "everything was committed at SIGTERM");
    assert_eq!(c.uncommitted(), 0);
    c.close();
    child.start_kill().unwrap();
    bounded(child.wait()).await.unwrap();
    lnet.shutdown();
}

/// A bare HTTP/1.0 GET; returns the whole response.
async fn http_get(addr: Ipv4Addr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect((addr, ADMIN_PORT)).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}
