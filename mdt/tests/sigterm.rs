//! SIGTERM of `sheen-mds` while a client creates directories, then a
//! restart on the same store: the daemon commits, answers every request
//! -ESHUTDOWN for a second (the client's import goes to DISCON rather than
//! waiting for a timeout), exits 0; the import reconnects, resends and
//! replays once it is back, and every create completes with no error to
//! the caller. The namespace checker finds the store clean.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use mdt::inode::S_IFDIR;
use ptlrpc::import::ImportStateKind;
use ptlrpc::wire::{Fid, Op};

const NET: u8 = 66;
const CREATES: u64 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_across_sigterm_and_restart_all_land_without_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mds = Mds::start(NET, tmp.path(), 200);
    let node = client_node(NET, 2).await;
    let imp = mds_client(&node, mds.nid).await;
    let done = Arc::new(AtomicU64::new(0));
    let (imp2, done2) = (imp.clone(), Arc::clone(&done));
    let creator = tokio::spawn(async move {
        for k in 0..CREATES {
            if let Err(e) =
                rpc(&imp2, Op::MdsReint, &create(Fid::ROOT, format!("d{k}"), S_IFDIR | 0o755), BOUND * 2).await
            {
                panic!("create d{k} failed: {e:?}");
            }
            done2.fetch_add(1, Ordering::Relaxed);
        }
    });
    tokio::time::timeout(BOUND, async {
        while done.load(Ordering::Relaxed) < 30 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("creates run");
    tokio::task::spawn_blocking(move || mds.stop()).await.unwrap();
    let at_stop = done.load(Ordering::Relaxed);
    assert!(at_stop < CREATES, "creates were still going when the daemon stopped");
    assert_ne!(imp.state(), ImportStateKind::Full, "the notice sent the import to DISCON");
    let mds = Mds::start(NET, tmp.path(), 200);
    tokio::time::timeout(BOUND * 2, creator).await.expect("every create finishes").unwrap();
    eprintln!(
        "{at_stop} creates done at SIGTERM, all {CREATES} after the restart; resends {}, replays {}",
        imp.import_stats().resends,
        imp.import_stats().replays
    );
    assert_eq!(imp.stats().lost_replays, 0);
    // Every directory is there once: creating it again is EEXIST.
    for k in [0, at_stop.saturating_sub(1), at_stop, CREATES - 1] {
        let r = rpc(&imp, Op::MdsReint, &create(Fid::ROOT, format!("d{k}"), S_IFDIR | 0o755), BOUND).await;
        assert_eq!(errno_of(&r), 17, "d{k} exists");
    }
    imp.close();
    tokio::task::spawn_blocking(move || mds.stop()).await.unwrap();
    let (clean, json) = check(tmp.path());
    assert!(clean, "{json}");
}
