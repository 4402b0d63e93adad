//! MGS unit tests on a real fjall store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ptlrpc::wire::mgs::{ConfigCmd, MgsAdminReq, TargetKind, TargetRegReq};

use super::*;
use crate::store::FjallKv;

fn reg(index: u32, instance: u32) -> TargetRegReq {
    TargetRegReq {
        fsname: "sheen".into(),
        kind: TargetKind::Ost,
        index,
        nids: vec![format!("10.0.0.{index}@tcp")],
        failover: vec![],
        instance,
    }
}

fn open(dir: &std::path::Path) -> Mgs {
    Mgs::open(Arc::new(FjallKv::open(dir).unwrap())).unwrap()
}

fn admin(m: &Mgs, r: MgsAdminReq) -> std::result::Result<u64, i32> {
    m.admin(&r).map(|r| r.record).map_err(|e| e.errno())
}

const FS: &str = "sheen";

#[test]
fn lifecycle_follows_the_seed_rules() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path());
    assert!(m.register(&reg(0, 1)).unwrap().added);
    assert!(m.register(&reg(1, 1)).unwrap().added);
    assert_eq!(m.register(&reg(1, 1)).unwrap().record, 0, "same instance: nothing new");
    let restart = m.register(&reg(1, 2)).unwrap();
    assert!(!restart.added && restart.record > 0, "new instance: restart notice");
    let k = TargetKind::Ost;
    let rm = |i| MgsAdminReq::Remove { fsname: FS.into(), kind: k, index: i };
    assert_eq!(admin(&m, rm(1)), Err(errno::EBUSY), "remove refused while active");
    admin(&m, MgsAdminReq::PoolNew { fsname: FS.into(), pool: "fast".into() }).unwrap();
    admin(&m, MgsAdminReq::PoolAdd { fsname: FS.into(), pool: "fast".into(), ost: 1 }).unwrap();
    assert_eq!(admin(&m, MgsAdminReq::PoolAdd { fsname: FS.into(), pool: "fast".into(), ost: 1 }), Err(errno::EEXIST));
    assert_eq!(admin(&m, MgsAdminReq::PoolAdd { fsname: FS.into(), pool: "x".into(), ost: 1 }), Err(errno::ENOENT));
    assert_eq!(admin(&m, MgsAdminReq::PoolDestroy { fsname: FS.into(), pool: "fast".into() }), Err(errno::ENOTEMPTY));
    admin(&m, MgsAdminReq::Deactivate { fsname: FS.into(), kind: k, index: 1 }).unwrap();
    admin(&m, MgsAdminReq::Activate { fsname: FS.into(), kind: k, index: 1 }).unwrap();
    admin(&m, MgsAdminReq::Deactivate { fsname: FS.into(), kind: k, index: 1 }).unwrap();
    admin(&m, rm(1)).unwrap();
    assert_eq!(admin(&m, rm(1)), Err(errno::ENOENT));
    let pools = m.admin(&MgsAdminReq::PoolList { fsname: FS.into() }).unwrap().pools;
    assert_eq!((pools[0].name.as_str(), pools[0].osts.len()), ("fast", 0), "removed OST left every pool");
    admin(&m, MgsAdminReq::PoolDestroy { fsname: FS.into(), pool: "fast".into() }).unwrap();
    admin(&m, MgsAdminReq::SetParam { fsname: FS.into(), key: "lov.stripecount".into(), value: "2".into() }).unwrap();
    let targets = m.admin(&MgsAdminReq::Targets { fsname: FS.into() }).unwrap().targets;
    assert_eq!(targets.iter().map(|t| t.index).collect::<Vec<_>>(), vec![0]);
    // The log, in order, survives a restart of the MGS.
    let before = m.read(FS, 1, 1000, Duration::ZERO);
    drop(m);
    let m = open(dir.path());
    let after = m.read(FS, 1, 1000, Duration::ZERO);
    assert_eq!(before, after);
    let idx: Vec<u64> = after.records.iter().map(|r| r.index).collect();
    assert_eq!(idx, (1..=idx.len() as u64).collect::<Vec<_>>());
    assert!(matches!(after.records.last().unwrap().cmd, ConfigCmd::SetParam { .. }));
    assert_eq!(m.state(FS).unwrap().params["lov.stripecount"], "2");
}

#[test]
fn reads_wait_for_new_records_within_bound() {
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(open(dir.path()));
    m.register(&reg(0, 1)).unwrap();
    let next = m.read(FS, 1, 100, Duration::ZERO).next;
    let t0 = Instant::now();
    assert!(m.read(FS, next, 100, Duration::from_millis(50)).records.is_empty());
    assert!(t0.elapsed() >= Duration::from_millis(50));
    let m2 = Arc::clone(&m);
    let waiter = std::thread::spawn(move || m2.read(FS, next, 100, Duration::from_secs(5)));
    // The waiter is woken by the append, not by its bound.
    let t1 = Instant::now();
    m.register(&reg(0, 2)).unwrap();
    let r = waiter.join().unwrap();
    assert!(t1.elapsed() < Duration::from_secs(5));
    assert!(matches!(r.records[0].cmd, ConfigCmd::TargetRestart { instance: 2, .. }));
    assert_eq!(errno_of(m.register(&TargetRegReq { fsname: "bad name".into(), ..reg(0, 1) })), errno::EINVAL);
}

fn errno_of<T: std::fmt::Debug>(r: crate::error::Result<T>) -> i32 {
    r.expect_err("should fail").errno()
}
