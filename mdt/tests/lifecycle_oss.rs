//! The seed's target lifecycle with real processes: `sheen-mds` (MGS +
//! MDT0) and two `sheen-oss` processes, allocation checked after each step
//! (add, activate, deactivate, remove), objects precreated on and destroyed
//! through the real OSTs. Each `sheen-oss` registers its OST with the MGS
//! itself (its config names the MGS) before its ready line. The `sheen-oss`
//! binary is built from this workspace if it is not beside `sheen-mds`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use mdt::inode::S_IFREG;
use ptlrpc::wire::mds::{GetInfoReply, GetInfoReq, ReintReply, ReintReq};
use ptlrpc::wire::mgs::{ConfigReadReply, ConfigReadReq, MgsAdminReq, TargetKind};
use ptlrpc::wire::{Fid, Op};

const NET: u8 = 65;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_with_real_osts_steers_allocation() {
    let bin = sheen_oss();
    let tmp = tempfile::tempdir().unwrap();
    let mds = Mds::start(NET, tmp.path(), 200);
    let node = client_node(NET, 2).await;
    let (mdc, mgc) = (mds_client(&node, mds.nid).await, mgs_client(&node, mds.nid));
    let mut seq = 0u32;
    let mut files = Vec::new();
    // Creates `n` files; returns the OSTs their objects landed on.
    let mut osts_of = async |n: usize, files: &mut Vec<(String, u32, ptlrpc::wire::OstId)>| -> BTreeSet<u32> {
        let mut out = BTreeSet::new();
        for _ in 0..n {
            seq += 1;
            let name = format!("f{seq}");
            let r: ReintReply = rpc(&mdc, Op::MdsReint, &create(Fid::ROOT, name.clone(), S_IFREG | 0o644), BOUND)
                .await
                .unwrap()
                .body()
                .unwrap();
            let o = r.layout.unwrap().objects[0];
            files.push((name, o.ost, o.id));
            out.insert(o.ost);
        }
        out
    };
    let info = async |key: &str, at_least: u64| -> GetInfoReply {
        let req = GetInfoReq { key: key.into(), at_least, wait_ms: 5000 };
        rpc(&mdc, Op::MdsGetInfo, &req, BOUND).await.unwrap().body().unwrap()
    };
    let sync = async || {
        let req = ConfigReadReq { fsname: "sheen".into(), from: 1, max: 1000, wait_ms: 0 };
        let r: ConfigReadReply = rpc(&mgc, Op::MgsConfigRead, &req, BOUND).await.unwrap().body().unwrap();
        let v = info("config_applied", r.next - 1).await;
        assert!(v.value >= r.next - 1);
    };
    let admin = async |r: MgsAdminReq| rpc(&mgc, Op::MgsSetInfo, &r, BOUND).await;
    let k = TargetKind::Ost;

    // add OST0: files land there.
    let oss0 = start_oss(&bin, NET, tmp.path(), 0, mds.nid);
    sync().await;
    assert_eq!(info("osts_usable", 1).await.value, 1, "OST0 reached");
    assert_eq!(osts_of(4, &mut files).await, BTreeSet::from([0]));
    // add OST1: round robin over both.
    let oss1 = start_oss(&bin, NET, tmp.path(), 1, mds.nid);
    sync().await;
    assert_eq!(info("osts_usable", 2).await.value, 2, "OST1 reached");
    assert_eq!(osts_of(4, &mut files).await, BTreeSet::from([0, 1]));
    // deactivate OST1: only OST0.
    admin(MgsAdminReq::Deactivate { fsname: "sheen".into(), kind: k, index: 1 }).await.unwrap();
    sync().await;
    assert_eq!(osts_of(4, &mut files).await, BTreeSet::from([0]));
    // remove refused while active; activate: both again.
    admin(MgsAdminReq::Activate { fsname: "sheen".into(), kind: k, index: 1 }).await.unwrap();
    sync().await;
    let rm = MgsAdminReq::Remove { fsname: "sheen".into(), kind: k, index: 1 };
    assert_eq!(errno_of(&admin(rm.clone()).await), 16);
    assert_eq!(osts_of(4, &mut files).await, BTreeSet::from([0, 1]));
    // deactivate + remove: gone from the MDT, only OST0 allocates.
    admin(MgsAdminReq::Deactivate { fsname: "sheen".into(), kind: k, index: 1 }).await.unwrap();
    admin(rm).await.unwrap();
    sync().await;
    let v = info("last_committed", 0).await;
    assert_eq!(v.osts.iter().map(|o| o.index).collect::<Vec<_>>(), vec![0]);
    assert_eq!(osts_of(4, &mut files).await, BTreeSet::from([0]));

    // Unlinks destroy the objects on the real OST through the destroy log.
    let on0: Vec<(String, u32, ptlrpc::wire::OstId)> = files.iter().filter(|f| f.1 == 0).cloned().collect();
    for (name, _, _) in on0.iter().take(3) {
        let r = ReintReq::Unlink {
            parent: Fid::ROOT,
            name: name.clone(),
            dir: false,
            time: ptlrpc::wire::mds::Timestamp::secs(2),
        };
        rpc(&mdc, Op::MdsReint, &r, BOUND).await.unwrap();
    }
    assert_eq!(info("process_destroys", 0).await.value, 0, "every logged destroy reached OST0");
    // Ask OST0 itself: destroyed objects are gone, live ones exist.
    let mut icfg = ptlrpc::import::ImportConfig::new(
        "lifecycle-test",
        Op::OstConnect,
        Op::OstDisconnect,
        ptlrpc::portals::OST_REQUEST_PORTAL,
        Vec::new(),
    );
    icfg.connect_data = ptlrpc::wire::ConnectData {
        flags: ptlrpc::wire::connect_flags::VERSION,
        version: 1,
        target: "sheen-OST0000".into(),
        ..Default::default()
    };
    let osc = ptlrpc::driver::ImportDriver::start(&node, vec![oss0.1], icfg, 16 << 10).unwrap();
    tokio::time::timeout(BOUND, osc.connect()).await.unwrap().unwrap();
    for (i, (name, _, oid)) in on0.iter().enumerate() {
        let body = ptlrpc::wire::OstObj { oid: *oid };
        let r = tokio::time::timeout(BOUND, osc.rpc(Op::OstGetattr, ptlrpc::import::ReqKind::Read, &body)).await;
        let got = match r.unwrap() {
            Ok(_) => 0,
            Err(ptlrpc::driver::ImportRpcError::Server { errno, .. }) => errno,
            Err(e) => panic!("getattr of {oid}: {e}"),
        };
        let want = if i < 3 { 2 } else { 0 };
        assert_eq!(got, want, "{name}: object {oid} on OST0");
    }
    osc.close();
    drop(oss1);
    mds.stop();
    node.shutdown();
    let (clean, report) = check(tmp.path());
    assert!(clean, "{report}");
    assert!(report.contains("\"objects\":"), "{report}");
    drop(oss0);
}
