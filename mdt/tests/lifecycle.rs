//! The seed's target lifecycle (`seeds/000`) across real processes: a
//! `sheen-mds` process hosting the MGS and MDT0, and this test as the
//! administrator and as the starting OSTs' registrations (`sheen-oss` does
//! not exist yet, so no OST process serves objects: allocation on the MDT
//! is checked as "no reachable OST -> ENOSPC", and the MDT's OST table is
//! checked after each step). Allocation following each step with objects
//! is covered by the unit test
//! `ns::tests::lifecycle_add_activate_deactivate_remove_steers_allocation`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use mdt::inode::{S_IFDIR, S_IFREG};
use ptlrpc::wire::mds::{GetInfoReply, ReintReq};
use ptlrpc::wire::mgs::{
    ConfigReadReply, ConfigReadReq, MgsAdminReply, MgsAdminReq, TargetKind, TargetRegReply, TargetRegReq,
};
use ptlrpc::wire::{Fid, Op};

const NET: u8 = 63;

fn create(name: &str, mode: u32) -> ReintReq {
    ReintReq::Create {
        parent: Fid::ROOT,
        name: name.into(),
        mode,
        rdev: 0,
        uid: 0,
        gid: 0,
        time: ptlrpc::wire::mds::Timestamp::secs(1),
        symlink: String::new(),
        stripe: None,
        fid: None,
        replay: None,
        lock: false,
    }
}

fn ost_reg(index: u32, instance: u32) -> TargetRegReq {
    TargetRegReq {
        fsname: "sheen".into(),
        kind: TargetKind::Ost,
        index,
        nids: vec![format!("127.{NET}.{}.{}@tcp", pid_octet(), 10 + index)],
        failover: vec![format!("127.{NET}.{}.{}@tcp", pid_octet(), 20 + index)],
        instance,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_across_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let mds = Mds::start(NET, tmp.path(), 200);
    let node = client_node(NET, 2).await;
    let (mdc, mgc) = (mds_client(&node, mds.nid).await, mgs_client(&node, mds.nid));
    let admin = |r: MgsAdminReq| {
        let mgc = mgc.clone();
        async move { rpc(&mgc, Op::MgsSetInfo, &r, BOUND).await }
    };
    let log_len = || {
        let mgc = mgc.clone();
        async move {
            let req = ConfigReadReq { fsname: "sheen".into(), from: 1, max: 1000, wait_ms: 0 };
            let r: ConfigReadReply = rpc(&mgc, Op::MgsConfigRead, &req, BOUND).await.unwrap().body().unwrap();
            r.next - 1
        }
    };
    let fs = || "sheen".to_string();
    let k = TargetKind::Ost;

    // add: two OSTs register; the MDT adds them, active, to the global pool.
    for i in 0..2 {
        let r: TargetRegReply = rpc(&mgc, Op::MgsTargetReg, &ost_reg(i, 1), BOUND).await.unwrap().body().unwrap();
        assert!(r.added);
    }
    let v = mdt_applied(&mdc, log_len().await).await;
    let st: Vec<(u32, bool, bool)> = v.osts.iter().map(|o| (o.index, o.active, o.connected)).collect();
    assert_eq!(st, vec![(0, true, false), (1, true, false)], "added, active, not reachable (no OSS)");
    // No reachable OST: a file cannot get objects; a directory needs none.
    assert_eq!(errno_of(&rpc(&mdc, Op::MdsReint, &create("f", S_IFREG | 0o644), BOUND).await), 28);
    rpc(&mdc, Op::MdsReint, &create("d", S_IFDIR | 0o755), BOUND).await.unwrap();

    // remove is refused while active; pools.
    let rm = || MgsAdminReq::Remove { fsname: fs(), kind: k, index: 1 };
    assert_eq!(errno_of(&admin(rm()).await), 16, "EBUSY: deactivate first");
    admin(MgsAdminReq::PoolNew { fsname: fs(), pool: "fast".into() }).await.unwrap();
    admin(MgsAdminReq::PoolAdd { fsname: fs(), pool: "fast".into(), ost: 1 }).await.unwrap();
    admin(MgsAdminReq::PoolAdd { fsname: fs(), pool: "fast".into(), ost: 0 }).await.unwrap();

    // deactivate -> activate -> deactivate, followed by the MDT.
    admin(MgsAdminReq::Deactivate { fsname: fs(), kind: k, index: 1 }).await.unwrap();
    let v = mdt_applied(&mdc, log_len().await).await;
    assert!(!v.osts[1].active && v.osts[0].active);
    admin(MgsAdminReq::Activate { fsname: fs(), kind: k, index: 1 }).await.unwrap();
    assert!(mdt_applied(&mdc, log_len().await).await.osts[1].active);
    admin(MgsAdminReq::Deactivate { fsname: fs(), kind: k, index: 1 }).await.unwrap();

    // remove: gone from the MDT and from every pool.
    admin(rm()).await.unwrap();
    let v: GetInfoReply = mdt_applied(&mdc, log_len().await).await;
    assert_eq!(v.osts.iter().map(|o| o.index).collect::<Vec<_>>(), vec![0]);
    assert_eq!(v.pools, vec![("fast".to_string(), vec![0])]);
    let pools: MgsAdminReply = admin(MgsAdminReq::PoolList { fsname: fs() }).await.unwrap().body().unwrap();
    assert_eq!(pools.pools[0].osts, vec![0]);
    assert_eq!(errno_of(&admin(MgsAdminReq::PoolDestroy { fsname: fs(), pool: "fast".into() }).await), 39);
    admin(MgsAdminReq::PoolRemove { fsname: fs(), pool: "fast".into(), ost: 0 }).await.unwrap();
    admin(MgsAdminReq::PoolDestroy { fsname: fs(), pool: "fast".into() }).await.unwrap();

    // Imperative recovery: OST0 restarts with a new instance; the MDT is told.
    let before = mds.metrics().await;
    let restarts = |m: &str| -> u64 {
        m.lines()
            .find(|l| l.starts_with("sheen_mdt_target_restarts_total"))
            .and_then(|l| l.split_whitespace().last()?.parse().ok())
            .unwrap()
    };
    let r: TargetRegReply = rpc(&mgc, Op::MgsTargetReg, &ost_reg(0, 2), BOUND).await.unwrap().body().unwrap();
    assert!(!r.added && r.record > 0);
    mdt_applied(&mdc, r.record).await;
    let after = mds.metrics().await;
    assert_eq!(restarts(&after), restarts(&before) + 1);
    for want in [
        "sheen_mdt_stats_total{component=\"mdt\",operation=\"mkdir\"} 1",
        "sheen_mdt_errors_total{component=\"mdt\",operation=\"create\"} 1",
        "sheen_mdt_stats_total{component=\"mgs\",operation=\"admin\"}",
        "sheen_mdt_ost_admin_active{ost=\"0\"} 1",
        "sheen_mdt_exports 1",
        "sheen_mdt_recovery_status 0",
        "ptlrpc_requests_handled_total{service=\"mdt0\",operation=\"MdsReint\"}",
    ] {
        assert!(after.contains(want), "metrics lack {want}:\n{after}");
    }

    // The log survives a restart of the daemon: the MDT rebuilds the same view.
    let expected = log_len().await;
    mdc.close();
    mds.stop();
    let mds = Mds::start(NET, tmp.path(), 200);
    let mdc = mds_client(&node, mds.nid).await;
    let v = mdt_applied(&mdc, expected).await;
    assert_eq!(v.osts.iter().map(|o| (o.index, o.active)).collect::<Vec<_>>(), vec![(0, true)]);
    assert!(v.pools.is_empty());
    mds.stop();
    node.shutdown();
    let (clean, report) = check(tmp.path());
    assert!(clean, "{report}");
}
