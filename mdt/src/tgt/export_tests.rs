//! What the MDT keeps per export, on the sans-IO target with a fake OST.
//!
//! FID grants: a client's SEQ_QUERY grant is its own — a create naming a
//! FID from another client's grant is refused EPERM and counted.
//!
//! A gone export's open handles:
//! eviction and disconnect close every handle the client held (the last
//! close of its open-unlinked file destroys it and frees its objects, a
//! second client's handles stay), durably across a remount; a close from
//! the evicted client's next export naming an old handle is ESTALE, and
//! one client cannot close another's handle.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use ptlrpc::target::{PeerId, Reply, Target, TargetConfig};
use ptlrpc::time::Time;
use ptlrpc::wire::mds::{CloseReq, Creds, MdsReq, ReintReply, ReintReq, SeqQueryReq, SeqRange, open_flags, seq_op};
use ptlrpc::wire::mgs::{ConfigCmd, TargetKind};
use ptlrpc::wire::{
    ConnCnt, ConnectData, ExportHandle, Fid, Frame, Header, MsgKind, Op, WireBody, Xid, connect_flags, encode_raw,
};

use super::{MdtService, MdtStore};
use crate::alloc::fake::FakeOst;
use crate::alloc::{AllocConfig, Allocator, OstApi, OstFactory};
use crate::error::errno;
use crate::inode::S_IFREG;
use crate::mgs::follow::Progress;
use crate::ns::Namespace;
use crate::service::{MdtMetrics, MdtOps};
use crate::store::{FjallKv, Kv, Table};
use crate::txn::Committer;

struct Fx {
    ns: Arc<Namespace>,
    ost: Arc<FakeOst>,
    metrics: Arc<MdtMetrics>,
    tg: Target<MdtService>,
    now: Time,
}

fn mount(dir: &std::path::Path, ost: &Arc<FakeOst>) -> Fx {
    let kv: Arc<dyn Kv> = Arc::new(FjallKv::open(dir).unwrap());
    let o = Arc::clone(ost);
    let factory: OstFactory = Arc::new(move |_, _| Arc::clone(&o) as Arc<dyn OstApi>);
    let cfg = AllocConfig { precreate_batch: 16, ..AllocConfig::default() };
    let alloc = Arc::new(Allocator::new(Arc::clone(&kv), factory, cfg));
    let ns = Arc::new(Namespace::mount_deferred(kv, alloc).unwrap());
    let cmd = ConfigCmd::AddTarget { kind: TargetKind::Ost, index: 0, nids: vec!["0@lo".into()], failover: vec![] };
    ns.alloc().apply(&cmd).unwrap();
    ns.alloc().refresh();
    let a = Arc::clone(ns.alloc());
    let precreator = std::thread::spawn(move || a.run_precreator());
    assert!(ns.alloc().wait_pools(Duration::from_secs(10)));
    ns.alloc().wait_pooled(0, 16, Duration::from_secs(10));
    ns.alloc().stop_precreator();
    precreator.join().unwrap();
    let committer = Arc::new(Committer::start(Arc::clone(ns.kv()), Arc::clone(ns.txn()), Duration::from_millis(50)));
    let metrics = Arc::new(MdtMetrics::new());
    let ops = Arc::new(MdtOps {
        ns: Arc::clone(&ns),
        metrics: Arc::clone(&metrics),
        progress: Arc::new(Progress::default()),
    });
    let store = MdtStore::new(Arc::clone(&ns), committer);
    let now = Time::from_secs(1);
    let tg = Target::boot(now, TargetConfig::default(), MdtService::new(ops), store, 7);
    Fx { ns, ost: Arc::clone(ost), metrics, tg, now }
}

/// One client: its export and the next xid.
struct Client {
    peer: PeerId,
    handle: ExportHandle,
    cnt: u32,
    xid: u64,
}

fn send(f: &mut Fx, peer: PeerId, h: &Header, body: &[u8]) -> Reply {
    let b = encode_raw(h, body).unwrap();
    let fr = Frame::parse(&b).unwrap();
    f.tg.handle_request(f.now, peer, &fr);
    let mut out: Vec<Reply> = std::iter::from_fn(|| f.tg.poll_transmit()).collect();
    assert_eq!(out.len(), 1, "one reply");
    out.remove(0)
}

fn connect(f: &mut Fx, uuid: &str, peer: u64, cnt: u32) -> Client {
    let mut h = Header::new(MsgKind::Request, Op::MdsConnect.opcode(), Xid(1));
    h.conn_cnt = ConnCnt(cnt);
    let data = ConnectData {
        flags: connect_flags::VERSION | connect_flags::TRANSNO,
        version: 1,
        client_uuid: uuid.into(),
        ..ConnectData::default()
    };
    let r = send(f, PeerId(peer), &h, &rkyv::to_bytes::<rkyv::rancor::Error>(&data).unwrap());
    assert_eq!(r.header.status, 0);
    Client { peer: PeerId(peer), handle: r.header.handle, cnt, xid: 10 }
}

fn call(f: &mut Fx, c: &mut Client, op: Op, body: &[u8]) -> Reply {
    c.xid += 1;
    let mut h = Header::new(MsgKind::Request, op.opcode(), Xid(c.xid));
    h.handle = c.handle;
    h.conn_cnt = ConnCnt(c.cnt);
    send(f, c.peer, &h, body)
}

fn reply_body(r: &Reply) -> ReintReply {
    let mut a = rkyv::util::AlignedVec::<16>::new();
    a.extend_from_slice(&r.body);
    rkyv::from_bytes::<ReintReply, rkyv::rancor::Error>(&a).unwrap()
}

fn bytes<T>(v: &T) -> Vec<u8>
where
    T: WireBody,
{
    rkyv::to_bytes::<rkyv::rancor::Error>(v).unwrap().to_vec()
}

/// Opens (creating) `name` for writing: the handle and the FID.
fn open(f: &mut Fx, c: &mut Client, name: &str) -> (u64, Fid) {
    let r = ReintReq::Open {
        parent: Fid::ROOT,
        name: name.into(),
        by_fid: None,
        flags: open_flags::CREAT | open_flags::RDWR,
        mode: S_IFREG | 0o644,
        uid: 0,
        gid: 0,
        time: ptlrpc::wire::mds::Timestamp::secs(1),
        stripe: None,
        fid: None,
        replay: None,
    };
    let rep = call(f, c, Op::MdsReint, &bytes(&MdsReq::new(Creds::ROOT, r)));
    assert_eq!(rep.header.status, 0);
    let b = reply_body(&rep);
    (b.handle, b.attr.unwrap().fid)
}

fn unlink(f: &mut Fx, c: &mut Client, name: &str) {
    let r = ReintReq::Unlink { parent: Fid::ROOT, name: name.into(), dir: false, time: Default::default() };
    assert_eq!(call(f, c, Op::MdsReint, &bytes(&MdsReq::new(Creds::ROOT, r))).header.status, 0);
}

fn close(f: &mut Fx, c: &mut Client, handle: u64) -> i32 {
    call(f, c, Op::MdsClose, &bytes(&CloseReq { handle, som: None })).header.status
}

/// The OST objects of `fid`.
fn objects(ns: &Namespace, fid: Fid) -> Vec<ptlrpc::wire::OstId> {
    ns.inode(fid).unwrap().layout.unwrap().objects.iter().map(|o| o.id).collect()
}

#[test]
fn an_evicted_clients_handles_are_closed_and_its_open_unlinked_file_destroyed() {
    let dir = tempfile::tempdir().unwrap();
    let ost = Arc::new(FakeOst::new(1 << 30, 1 << 29));
    let mut f = mount(dir.path(), &ost);
    let mut c1 = connect(&mut f, "c1", 1, 1);
    let mut c2 = connect(&mut f, "c2", 2, 1);
    // c1: "tmp" open and unlinked (an orphan), "kept" open; c2: "kept" too.
    let (h_tmp, tmp) = open(&mut f, &mut c1, "tmp");
    let tmp_objects = objects(&f.ns, tmp);
    assert!(!tmp_objects.is_empty());
    unlink(&mut f, &mut c1, "tmp");
    let (h_kept1, kept) = open(&mut f, &mut c1, "kept");
    let (h_kept2, _) = open(&mut f, &mut c2, "kept");
    assert_eq!((f.ns.open_files_of("c1"), f.ns.open_files_of("c2")), (2, 1));
    // A client cannot close another's handle.
    assert_eq!(close(&mut f, &mut c2, h_tmp), -errno::EBADF);
    assert!(f.ns.inode(tmp).is_ok());

    assert!(f.tg.evict_client(f.now, "c1"));
    // Every c1 handle closed, none of c2's: nothing leaks.
    assert_eq!((f.ns.open_files_of("c1"), f.ns.open_files_of("c2"), f.ns.open_files()), (0, 1, 1));
    assert!(f.ns.inode(tmp).is_err(), "the last close destroyed the orphan");
    assert!(f.ns.kv().get(Table::Orphans, &crate::fid::key(tmp)).unwrap().is_none());
    assert!(f.ns.inode(kept).is_ok());
    assert_eq!(f.metrics.gone_handles_closed.get(), 2);
    assert_eq!(f.metrics.gone_orphans_destroyed.get(), 1);
    // Its objects go through the destroy log to the OST.
    assert_eq!(f.ns.process_destroys(64).unwrap(), (tmp_objects.len(), 0));
    for id in &tmp_objects {
        assert!(!f.ost.objects.lock().contains(id), "object {id} freed");
    }
    for id in objects(&f.ns, kept) {
        assert!(f.ost.objects.lock().contains(&id));
    }

    // The evicted client comes back (a new export): its old handles are
    // ESTALE, not EBADF, and counted; new opens work.
    let mut c1 = connect(&mut f, "c1", 1, 2);
    assert_eq!(close(&mut f, &mut c1, h_kept1), -errno::ESTALE);
    assert_eq!(close(&mut f, &mut c1, h_tmp), -errno::ESTALE);
    assert_eq!(f.metrics.stale_handles_refused.get(), 2);
    let (h_new, _) = open(&mut f, &mut c1, "kept");
    assert_eq!(close(&mut f, &mut c1, h_new), 0);
    assert_eq!(close(&mut f, &mut c2, h_kept2), 0);
    assert_eq!(f.ns.open_files(), 0);
    let r = crate::check::check_ns(&f.ns).unwrap();
    assert!(r.is_clean(), "{:#?}", r.problems);
}

#[test]
fn a_disconnect_closes_its_handles_durably() {
    let dir = tempfile::tempdir().unwrap();
    let ost = Arc::new(FakeOst::new(1 << 30, 1 << 29));
    let mut f = mount(dir.path(), &ost);
    let mut c1 = connect(&mut f, "c1", 1, 1);
    let (_, tmp) = open(&mut f, &mut c1, "tmp");
    let tmp_objects = objects(&f.ns, tmp);
    unlink(&mut f, &mut c1, "tmp");
    // The client goes without closing (its process was killed after the
    // disconnect was sent).
    assert_eq!(call(&mut f, &mut c1, Op::MdsDisconnect, &[]).header.status, 0);
    assert_eq!(f.ns.open_files(), 0);
    assert!(f.ns.inode(tmp).is_err());
    // The disconnect committed: the store as on disk now (nothing
    // persisted by hand) has the orphan gone, its objects in the destroy
    // log, and no record of the client.
    let copy = tempfile::tempdir().unwrap();
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", dir.path().display()))
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(st.success());
    let kv = FjallKv::open(copy.path()).unwrap();
    let logged: Vec<ptlrpc::wire::OstId> = kv
        .range(Table::DestroyLog, &[], crate::store::KEY_END, 64)
        .unwrap()
        .iter()
        .filter_map(|(_, v)| crate::ns::parse_destroy_record(v).map(|(_, id)| id))
        .collect();
    assert_eq!(logged, tmp_objects);
    assert!(kv.get(Table::Orphans, &crate::fid::key(tmp)).unwrap().is_none());
    assert!(kv.get(Table::Clients, b"c1").unwrap().is_none());
}

/// Asks for a sequence grant over SEQ_QUERY.
fn seq_query(f: &mut Fx, c: &mut Client) -> SeqRange {
    let r = call(f, c, Op::SeqQuery, &bytes(&SeqQueryReq { op: seq_op::ALLOC_META, count: 1 }));
    assert_eq!(r.header.status, 0);
    let mut a = rkyv::util::AlignedVec::<16>::new();
    a.extend_from_slice(&r.body);
    rkyv::from_bytes::<SeqRange, rkyv::rancor::Error>(&a).unwrap()
}

fn create_with(f: &mut Fx, c: &mut Client, name: &str, fid: Fid) -> i32 {
    let r = ReintReq::plain_create(Fid::ROOT, name, S_IFREG | 0o644, Some(fid));
    call(f, c, Op::MdsReint, &bytes(&MdsReq::new(Creds::ROOT, r))).header.status
}

#[test]
fn a_create_is_refused_a_fid_not_granted_to_its_client() {
    let dir = tempfile::tempdir().unwrap();
    let ost = Arc::new(FakeOst::new(1 << 30, 1 << 29));
    let mut f = mount(dir.path(), &ost);
    let mut c1 = connect(&mut f, "c1", 1, 1);
    let mut c2 = connect(&mut f, "c2", 2, 1);
    let g1 = seq_query(&mut f, &mut c1);
    let g2 = seq_query(&mut f, &mut c2);
    assert!(g2.start >= g1.end, "grants never overlap");
    assert_eq!(g1.width, crate::fid::SEQ_WIDTH);
    let f1 = Fid { seq: g1.start, oid: 1, ver: 0 };
    // c2 names c1's FID: refused, nothing created, counted.
    assert_eq!(create_with(&mut f, &mut c2, "stolen", f1), -errno::EPERM);
    assert!(f.ns.lookup_fid(Fid::ROOT, "stolen").is_err());
    assert_eq!(f.ns.fids_refused(), 1);
    // A sequence never granted to anyone: the same.
    assert_eq!(create_with(&mut f, &mut c2, "made-up", Fid { seq: g2.end + 1, oid: 1, ver: 0 }), -errno::EPERM);
    assert_eq!(f.ns.fids_refused(), 2);
    // Each client's own FIDs are fine.
    assert_eq!(create_with(&mut f, &mut c1, "mine", f1), 0);
    assert_eq!(create_with(&mut f, &mut c2, "theirs", Fid { seq: g2.start, oid: 1, ver: 0 }), 0);
    assert_eq!(f.ns.lookup_fid(Fid::ROOT, "mine").unwrap(), f1);
    // Evicted and back (same client UUID): its grant still holds.
    assert!(f.tg.evict_client(f.now, "c1"));
    let mut c1 = connect(&mut f, "c1", 1, 2);
    assert_eq!(create_with(&mut f, &mut c1, "again", Fid { seq: g1.start, oid: 2, ver: 0 }), 0);
}
