//! The MGC follows the configuration log live, against real `sheen-mds`
//! and `sheen-oss` processes (lnet port 8020): an OST added after mount is
//! used without a remount (library API and FUSE), deactivate and remove
//! stop I/O to it with clear errors, and the MGC follows through a kill -9
//! of the MGS (restarted) without skipping or repeating a record. Every
//! wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use client::up::{find_binary, spawn_ready};
use client::{MountOptions, Sheen};
use common::*;
use ptlrpc::wire::mds::{StripeSpec, open_flags};
use ptlrpc::wire::mgs::{MgsAdminReq, TargetKind};

const PORT: u16 = 8020;
const BOUND: Duration = Duration::from_secs(30);

fn opts() -> MountOptions {
    MountOptions::parse("obd_timeout=8,ping_interval=1").unwrap()
}

/// A second `sheen-oss` serving OST `index` at host `.host` of the test's /24.
fn start_oss(dir: &Path, host: u8, index: u32, mgs: lnet::Nid) -> std::process::Child {
    let (a, b) = net();
    let cfg = dir.join(format!("oss{index}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "fs_uuid = \"sheen-one-node\"\nmgs = \"{mgs}\"\n[lnet]\nnets = [{{ lnd = \"tcp\", addr = \"127.{a}.{b}.{host}\", port = {PORT} }}]\n\
             [[targets]]\nname = \"sheen-OST{index:04x}\"\nindex = {index}\ndir = \"{d}\"\ncommit_interval = 0.2\nreserve_mib = 0\n",
            d = dir.join(format!("ost{index}")).display()
        ),
    )
    .unwrap();
    let bin = find_binary("sheen-oss").unwrap();
    let st = std::process::Command::new(&bin).args(["format", "--config"]).arg(&cfg).output().unwrap();
    assert!(st.status.success(), "format: {}", String::from_utf8_lossy(&st.stderr));
    let log = dir.join(format!("oss{index}.log"));
    let args = ["--config", cfg.to_str().unwrap()];
    spawn_ready(&bin, &args, &log, "ready", false).unwrap().0
}

fn admin(act: &str, index: u32) -> MgsAdminReq {
    let (fsname, kind) = ("sheen".to_string(), TargetKind::Ost);
    match act {
        "deactivate" => MgsAdminReq::Deactivate { fsname, kind, index },
        "activate" => MgsAdminReq::Activate { fsname, kind, index },
        _ => MgsAdminReq::Remove { fsname, kind, index },
    }
}

fn on_ost(index: u32) -> Option<StripeSpec> {
    Some(StripeSpec { stripe_size: 64 << 10, stripe_count: 1, stripe_offset: index as i32, pool: String::new() })
}

/// An OST added after mount gets an osc and takes new files (library API
/// and FUSE); deactivated, its files' I/O fails with EIO saying so and
/// nothing is sent to it; removed, its import is closed and stays silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ost_added_after_mount_is_used_without_remount() {
    let (tmp, cluster, lnet) = up_on(1, PORT).await;
    let fs = Sheen::mount_with(&lnet, cluster.layout.mgs_nid(), "sheen", opts()).await.unwrap();
    assert_eq!(fs.oscs().len(), 2);
    let mut oss2 = start_oss(tmp.path(), 8, 2, cluster.layout.mgs_nid());
    assert!(fs.wait_config(BOUND, |c| c.osts.contains_key(&2)).await, "the MGC saw OST 2 added");
    assert_eq!(fs.oscs().keys().copied().collect::<Vec<_>>(), vec![0, 1, 2], "an osc for OST 2, no remount");
    let usable = fs.mdc().wait_info("osts_usable", 3, 20_000).await.unwrap();
    assert_eq!(usable.value, 3, "the MDT allocates on OST 2");

    // Library API: a file on OST 2, and one striped over all three.
    let data = pattern(300 * KIB, 5);
    let f = fs.create("/on2", 0o644, on_ost(2)).await.unwrap();
    assert_eq!(f.striped().unwrap().stripes().count, 1);
    fs.write(&f, 0, &data).await.unwrap();
    fs.fsync(&f).await.unwrap();
    let mut back = vec![0; data.len()];
    assert_eq!(fs.read(&f, 0, &mut back).await.unwrap(), data.len());
    assert_eq!(back, data);
    let st = fs.stat("/on2").await.unwrap();
    assert_eq!(st.layout.as_ref().unwrap().objects[0].ost, 2);
    assert_eq!(st.size(), data.len() as u64);
    let wide = Some(StripeSpec { stripe_size: 64 << 10, stripe_count: 3, stripe_offset: -1, pool: String::new() });
    let w = fs.create("/wide", 0o644, wide).await.unwrap();
    fs.write(&w, 0, &data).await.unwrap();
    let osts: Vec<u32> = fs.stat("/wide").await.unwrap().layout.unwrap().objects.iter().map(|o| o.ost).collect();
    assert!(osts.contains(&2), "striped over the new OST: {osts:?}");
    fs.close(w).await.unwrap();

    // FUSE: a directory whose files go to OST 2.
    fs.mkdir("/d2", 0o755).await.unwrap();
    fs.setstripe_dir("/d2", on_ost(2).unwrap()).await.unwrap();
    let fs = Arc::new(fs);
    if can_mount() {
        use std::os::unix::fs::PermissionsExt;
        let mnt = tmp.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let session = client::fuse::mount(Arc::clone(&fs), tokio::runtime::Handle::current(), &mnt, 4).unwrap();
        let (m, d) = (mnt.clone(), data.clone());
        tokio::task::spawn_blocking(move || {
            std::fs::write(m.join("d2/viafuse"), &d).unwrap();
            assert_eq!(std::fs::read(m.join("d2/viafuse")).unwrap(), d);
        })
        .await
        .unwrap();
        tokio::task::spawn_blocking(move || session.umount_and_join()).await.unwrap().unwrap();
        let l = fs.stat("/d2/viafuse").await.unwrap().layout.unwrap();
        assert_eq!(l.objects[0].ost, 2, "the FUSE write went to OST 2");
    }

    // Deactivate: no new I/O goes to OST 2; its file's errors say why.
    let osc2 = fs.targets().osc(2).unwrap();
    let imp = osc2.import().unwrap().clone();
    fs.mgc().admin(&admin("deactivate", 2)).await.unwrap();
    assert!(fs.wait_config(BOUND, |c| !c.osts[&2].active).await);
    let sent = imp.stats().sent;
    assert!(imp.is_deactivated(), "no pings to a deactivated OST");
    let e = fs.read(&f, 0, &mut back).await.unwrap_err();
    assert_eq!(e.errno(), libc::EIO);
    assert!(e.to_string().contains("deactivated"), "{e}");
    let e = fs.write(&f, 0, &data).await.unwrap_err();
    assert!(e.to_string().contains("deactivated"), "{e}");
    // Reactivated, it serves again.
    fs.mgc().admin(&admin("activate", 2)).await.unwrap();
    assert!(fs.wait_config(BOUND, |c| c.osts[&2].active).await);
    assert!(!imp.is_deactivated());
    assert_eq!(fs.read(&f, 0, &mut back).await.unwrap(), data.len());
    assert_eq!(back, data);
    assert!(imp.stats().sent > sent);

    // Remove (after deactivating): the import closes; nothing more is sent.
    fs.mgc().admin(&admin("deactivate", 2)).await.unwrap();
    fs.mgc().admin(&admin("remove", 2)).await.unwrap();
    assert!(fs.wait_config(BOUND, |c| !c.osts.contains_key(&2)).await);
    assert_eq!(fs.oscs().keys().copied().collect::<Vec<_>>(), vec![0, 1]);
    // (Closing again is a no-op: this waits until its DISCONNECT left.)
    tokio::time::timeout(BOUND, imp.close_and_wait()).await.expect("the removed OST's import closes");
    assert_eq!(imp.state(), ptlrpc::import::ImportStateKind::Closed);
    let sent = imp.stats().sent;
    let e = fs.read(&f, 0, &mut back).await.unwrap_err();
    assert_eq!(e.errno(), libc::EIO);
    assert!(e.to_string().contains("removed"), "{e}");
    let g = fs.open("/on2", open_flags::RDWR, 0, None).await.unwrap();
    let err = fs.write(&g, 0, b"x").await.unwrap_err();
    assert!(err.to_string().contains("removed"), "{err}");
    fs.close(g).await.unwrap();
    assert_eq!(imp.stats().sent, sent, "nothing sent to a removed OST");
    // Files on the other OSTs are untouched.
    let mut b2 = vec![0; data.len()];
    let g = fs.open("/wide", 0, 0, None).await.unwrap();
    let e = fs.read(&g, 0, &mut b2).await.unwrap_err();
    assert!(e.to_string().contains("removed"), "a stripe on OST 2: {e}");
    fs.close(g).await.unwrap();
    let ok = fs.create("/after", 0o644, None).await.unwrap();
    fs.write(&ok, 0, &data).await.unwrap();
    fs.close(ok).await.unwrap();
    let l = fs.stat("/after").await.unwrap().layout.unwrap();
    assert!(l.objects.iter().all(|o| o.ost != 2), "no new object on a removed OST");

    assert_eq!(fs.follower().stats().gaps, 0);
    fs.unmount().await;
    lnet.shutdown();
    let _ = oss2.kill();
    let _ = oss2.wait();
    cluster.stop();
}

/// kill -9 of the MGS (with the MDT: one `sheen-mds`), then a restart:
/// the MGC gives its read up, reconnects, and resumes where it was —
/// every record after the restart applied once, in order, none skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_mgc_follows_through_an_mgs_restart() {
    let (_tmp, mut cluster, lnet) = up_on(2, PORT).await;
    let fs = Sheen::mount_with(&lnet, cluster.layout.mgs_nid(), "sheen", opts()).await.unwrap();
    let set = |k: &str| MgsAdminReq::SetParam { fsname: "sheen".into(), key: format!("test.{k}"), value: k.into() };
    fs.mgc().admin(&set("before")).await.unwrap();
    assert!(fs.wait_config(BOUND, |c| c.params.contains_key("test.before")).await);
    let start = fs.follower().next();

    cluster.mds.kill().unwrap();
    cluster.mds.wait().unwrap();
    let dir = cluster.dir.clone();
    let (mds, _) = tokio::task::spawn_blocking(move || {
        let cfg = dir.join("mds.toml");
        let args = ["run", "--config", cfg.to_str().unwrap()];
        spawn_ready(&find_binary("sheen-mds").unwrap(), &args, &dir.join("mds.log"), "sheen-mds ready", false)
    })
    .await
    .unwrap()
    .unwrap();
    cluster.mds = mds;
    for k in ["a", "b", "c"] {
        let r = tokio::time::timeout(BOUND, fs.mgc().admin(&set(k))).await;
        r.expect("the restarted MGS answers").unwrap();
    }
    let all = fs.wait_config(BOUND, |c| ["a", "b", "c"].iter().all(|k| c.params.contains_key(&format!("test.{k}"))));
    assert!(all.await, "the MGC followed through the restart");
    let applied = fs.targets().applied();
    let after: Vec<u64> = applied.iter().copied().filter(|&i| i >= start).collect();
    // The MDT's restart notice, then the three parameters: each once, in order.
    assert!(after.len() >= 4, "{after:?}");
    assert!(after.windows(2).all(|w| w[1] == w[0] + 1), "no record skipped or repeated: {applied:?}");
    assert_eq!(after[0], start, "resumed at the next record");
    let s = fs.follower().stats();
    assert_eq!(s.gaps, 0);
    println!(
        "MGC across an MGS restart: {} reads, {} given up or failed, {} stale answers",
        s.reads, s.failures, s.stale
    );
    assert!(s.failures >= 1, "the read held by the killed MGS was given up");
    // The mount works on after the MDT's recovery.
    let f = fs.create("/x", 0o644, None).await.unwrap();
    fs.write(&f, 0, b"after the restart").await.unwrap();
    fs.close(f).await.unwrap();
    fs.unmount().await;
    lnet.shutdown();
    cluster.stop();
}
