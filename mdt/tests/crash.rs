//! kill -9 of `sheen-mds` under metadata load, then restart: the clients
//! (imports on ptlrpc's target framework, each with several modifying
//! requests in flight: `max_mod_rpcs` 8, as the mdc asks) reconnect and
//! replay, and every
//! operation that was acknowledged is present afterwards — committed or
//! not at the kill. Files have objects on a real `sheen-oss`: after
//! recovery and the destroy log, every object the OST holds up to the
//! MDT's allocation cursor belongs to a live file and every live file's
//! object exists (no leaked, no dangling objects: a lost create's replay
//! reuses its original objects). Each client holds a file open across the
//! kill (half of them unlinked while open): the opens are replayed, the
//! open-unlinked files survive recovery, and the closes work afterwards.
//! The crashed store passes the namespace checker as found (atomic
//! batches), and again after recovery and a clean stop; no client lost a
//! replay.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;
use mdt::inode::{S_IFDIR, S_IFREG};
use parking_lot::Mutex;
use ptlrpc::driver::ImportDriver;
use ptlrpc::import::ReqKind;
use ptlrpc::wire::mds::{
    AttrReply, GetInfoReply, GetInfoReq, GetattrReq, LookupReq, ReaddirReply, ReaddirReq, ReintReply, ReintReq,
};
use ptlrpc::wire::{Fid, Op, Xid};

const NET: u8 = 64;
const CLIENTS: u64 = 4;
/// Load tasks sharing each client's import (several modifying requests in
/// flight per import: the negotiated `max_mod_rpcs` reply slots).
const LOADS_PER_CLIENT: u64 = 3;
const KILL_AFTER: u64 = 1500;

/// The last acknowledged operation on a name: exists afterwards.
type Outcome = Arc<Mutex<HashMap<(u64, String), bool>>>;

struct Load {
    out: Outcome,
    done: AtomicU64,
    uncommitted_at_kill: AtomicU64,
    stop: AtomicBool,
    kill: tokio::sync::Notify,
}

/// Creates, unlinks and renames in the client's own directory until told
/// to stop; every request runs to its end (through the restart).
async fn load(c: ImportDriver, k: u64, l: Arc<Load>) {
    let seen = || {
        if l.done.fetch_add(1, Ordering::AcqRel) + 1 == KILL_AFTER {
            l.kill.notify_one();
        }
    };
    let r = rpc(&c, Op::MdsReint, &create(Fid::ROOT, format!("c{k}"), S_IFDIR | 0o755), BOUND * 4).await.unwrap();
    seen();
    let dir = r.body::<ReintReply>().unwrap().attr.unwrap().fid;
    for i in 0u64.. {
        if l.stop.load(Ordering::Acquire) {
            return;
        }
        let name = format!("f{i}");
        rpc(&c, Op::MdsReint, &create(dir, name.clone(), S_IFREG | 0o644), BOUND * 4).await.unwrap();
        seen();
        l.out.lock().insert((k, name.clone()), true);
        if i % 5 == 4 {
            let req = ReintReq::Unlink {
                parent: dir,
                name: name.clone(),
                dir: false,
                time: ptlrpc::wire::mds::Timestamp::secs(2),
            };
            rpc(&c, Op::MdsReint, &req, BOUND * 4).await.unwrap();
            seen();
            l.out.lock().insert((k, name), false);
        } else if i % 7 == 6 {
            let to = format!("r{i}");
            let req = ReintReq::Rename {
                src_parent: dir,
                src_name: name.clone(),
                dst_parent: dir,
                dst_name: to.clone(),
                time: ptlrpc::wire::mds::Timestamp::secs(3),
            };
            rpc(&c, Op::MdsReint, &req, BOUND * 4).await.unwrap();
            seen();
            l.out.lock().insert((k, name), false);
            l.out.lock().insert((k, to), true);
        }
    }
}

/// A file held open across the kill.
struct Held {
    fid: Fid,
    handle: u64,
    open_xid: Xid,
    unlinked: bool,
}

/// Creates and opens `o{k}` as a real client does (kept for replay until
/// closed); unlinks it while open for even `k`.
async fn open_one(c: &ImportDriver, k: u64) -> Held {
    let req = ReintReq::Open {
        parent: Fid::ROOT,
        name: format!("o{k}"),
        by_fid: None,
        flags: ptlrpc::wire::mds::open_flags::CREAT | ptlrpc::wire::mds::open_flags::RDWR,
        mode: S_IFREG | 0o644,
        uid: 0,
        gid: 0,
        time: ptlrpc::wire::mds::Timestamp::secs(1),
        stripe: None,
        fid: None,
        replay: None,
    };
    let req = ptlrpc::wire::mds::MdsReq::new(ptlrpc::wire::mds::Creds::ROOT, req);
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&req).unwrap().to_vec();
    let fixup = ptlrpc::wire::mds::reint_replay_fixup;
    let r = tokio::time::timeout(BOUND, c.rpc_raw_with_fixup(Op::MdsReint, ReqKind::Open, bytes, fixup));
    let r = r.await.unwrap().unwrap();
    let rep: ReintReply = r.body().unwrap();
    let unlinked = k.is_multiple_of(2);
    if unlinked {
        let req = ReintReq::Unlink { parent: Fid::ROOT, name: format!("o{k}"), dir: false, time: Default::default() };
        rpc(c, Op::MdsReint, &req, BOUND).await.unwrap();
    }
    Held { fid: rep.attr.unwrap().fid, handle: rep.handle, open_xid: r.xid, unlinked }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_load_then_replay_keeps_every_acknowledged_op() {
    let tmp = tempfile::tempdir().unwrap();
    let mds = Mds::start(NET, tmp.path(), 100);
    let oss = start_oss(&sheen_oss(), NET, tmp.path(), 0, mds.nid);
    let mut nodes = Vec::new();
    for i in 0..=CLIENTS {
        nodes.push(client_node(NET, 2 + i as u8).await);
    }
    let l = Arc::new(Load {
        out: Arc::default(),
        done: AtomicU64::new(0),
        uncommitted_at_kill: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        kill: tokio::sync::Notify::new(),
    });
    let mut imps = Vec::new();
    for k in 0..CLIENTS {
        imps.push(mds_import(&nodes[k as usize], mds.nid, &format!("crash-client-{k}")).await);
    }
    let info = async |c: &ImportDriver, key: &str, at_least: u64| -> GetInfoReply {
        let req = GetInfoReq { key: key.into(), at_least, wait_ms: 10_000 };
        rpc(c, Op::MdsGetInfo, &req, BOUND).await.unwrap().body().unwrap()
    };
    assert_eq!(info(&imps[0], "osts_usable", 1).await.value, 1, "the MDT reached the OST");
    let mut held = Vec::new();
    for (k, c) in imps.iter().enumerate() {
        held.push(open_one(c, k as u64).await);
    }
    for c in &imps {
        assert_eq!(c.max_mod_rpcs(), 8, "the MDT grants 8 modifying requests in flight");
    }
    let tasks: Vec<_> = (0..CLIENTS * LOADS_PER_CLIENT)
        .map(|k| tokio::spawn(load(imps[(k % CLIENTS) as usize].clone(), k, Arc::clone(&l))))
        .collect();
    tokio::time::timeout(BOUND * 4, l.kill.notified()).await.expect("load reached the kill point");
    l.stop.store(true, Ordering::Release);
    for c in &imps {
        l.uncommitted_at_kill.fetch_add(c.replay_len() as u64, Ordering::AcqRel);
    }
    mds.kill9();
    let (clean, report) = check(tmp.path());
    assert!(clean, "crashed store inconsistent: {report}");

    // Restart; tell the clients at once (what the MGS's restart notice does).
    let mds = Mds::start(NET, tmp.path(), 100);
    for c in &imps {
        c.handle_target_restarted();
    }
    for t in tasks {
        tokio::time::timeout(BOUND * 4, t).await.expect("load ends after recovery").unwrap();
    }
    for c in &imps {
        assert!(c.take_lost().is_empty(), "{} lost replays", c.client_uuid());
    }
    // The opens came back: an open-unlinked file is still there, and every
    // close works (no EBADF); the last close of an orphan destroys it.
    for (c, h) in imps.iter().zip(&held) {
        let r = rpc(c, Op::MdsGetattr, &GetattrReq { fid: h.fid, access: 0 }, BOUND).await;
        assert_eq!(errno_of(&r), 0, "{} survived the restart (unlinked: {})", h.fid, h.unlinked);
        let close = ptlrpc::wire::mds::CloseReq { handle: h.handle, som: None };
        let r = rpc(c, Op::MdsClose, &close, BOUND).await;
        assert_eq!(errno_of(&r), 0, "close of an open from before the restart: {r:?}");
        let close_xid = r.unwrap().header().xid;
        c.release_open(h.open_xid, Some(close_xid));
        let r = rpc(c, Op::MdsGetattr, &GetattrReq { fid: h.fid, access: 0 }, BOUND).await;
        assert_eq!(errno_of(&r), if h.unlinked { 2 } else { 0 }, "{} after its close", h.fid);
    }
    let c = &imps[0];
    let outcomes = l.out.lock().clone();
    let mut checked = 0;
    for ((k, name), exists) in outcomes {
        let dir = rpc(c, Op::MdsGetattrName, &LookupReq { parent: Fid::ROOT, name: format!("c{k}") }, BOUND).await;
        let dir = dir.unwrap().body::<AttrReply>().unwrap().attr.fid;
        let r = rpc(c, Op::MdsGetattrName, &LookupReq { parent: dir, name: name.clone() }, BOUND).await;
        assert_eq!(
            errno_of(&r) == 0,
            exists,
            "c{k}/{name}: acknowledged as {}",
            if exists { "present" } else { "gone" }
        );
        checked += 1;
    }
    assert!(checked > 100, "only {checked} outcomes to check");
    // Every live file's objects, from a full listing of each client's dir.
    let mut live = BTreeSet::new();
    for k in 0..CLIENTS * LOADS_PER_CLIENT {
        let dir = rpc(c, Op::MdsGetattrName, &LookupReq { parent: Fid::ROOT, name: format!("c{k}") }, BOUND).await;
        let dir = dir.unwrap().body::<AttrReply>().unwrap().attr.fid;
        let mut cookie = 0;
        loop {
            let req = ReaddirReq { fid: dir, cookie, max_entries: 512 };
            let page: ReaddirReply = rpc(c, Op::MdsReadpage, &req, BOUND).await.unwrap().body().unwrap();
            for e in &page.entries {
                let r = rpc(c, Op::MdsGetattr, &GetattrReq { fid: e.fid, access: 0 }, BOUND).await;
                let a: AttrReply = r.unwrap().body().unwrap();
                live.extend(a.layout.unwrap().objects.iter().map(|o| o.id));
            }
            cookie = page.next;
            if page.end {
                break;
            }
        }
    }
    for h in held.iter().filter(|h| !h.unlinked) {
        let a: AttrReply =
            rpc(c, Op::MdsGetattr, &GetattrReq { fid: h.fid, access: 0 }, BOUND).await.unwrap().body().unwrap();
        live.extend(a.layout.unwrap().objects.iter().map(|o| o.id));
    }
    assert_eq!(info(c, "process_destroys", 0).await.value, 0, "every logged destroy reached the OST");
    let seq = info(c, "last_committed", 0).await.osts[0].seq;
    // The MDT works with a small sequence width (tests/common): the load
    // rolled over several OST object sequences.
    let mut seqs: std::collections::BTreeSet<u64> = live.iter().map(|o| o.seq).collect();
    seqs.insert(seq);
    assert!(seqs.len() > 1, "the load used more than one sequence: {seqs:?}");
    // `sheen check`'s pass: the namespace checker, then the OST asked
    // about every id of every sequence it was granted: no dangling, no
    // leaked objects.
    let r = info(c, "check", 0).await;
    assert!(r.problems.is_empty() && r.value == 0, "check: {:#?}", r.problems);
    assert!(!live.is_empty());
    eprintln!("{} live objects in {} sequences agree with the OST", live.len(), seqs.len());
    let metrics = mds.metrics().await;
    eprintln!(
        "checked {checked} acknowledged outcomes; {} replayable requests held by clients at the kill",
        l.uncommitted_at_kill.load(Ordering::Acquire)
    );
    assert!(metrics.contains("recovery"), "target metrics exported");
    for c in &imps {
        c.close();
    }
    mds.stop();
    drop(oss);
    for n in &nodes {
        n.shutdown();
    }
    let (clean, report) = check(tmp.path());
    assert!(clean, "{report}");
}
