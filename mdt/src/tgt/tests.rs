//! The MDT on the sans-IO target (no network): a resent create is
//! answered from the client record (same reply, nothing run twice), a real
//! duplicate fails with EEXIST, and the objects get the transaction's
//! version as the VBR seed says; open handles come back after a restart
//! (committed opens restored, lost ones run again, an open-unlinked file
//! kept, a resent open whose reply the restart lost opened again), and a
//! resent close is answered from the record.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use ptlrpc::target::{PeerId, Reply, Target, TargetConfig};
use ptlrpc::time::Time;
use ptlrpc::wire::mds::{CloseReq, Creds, MdsReq, ReintReply, ReintReq, open_flags, reint_replay_fixup};
use ptlrpc::wire::{
    ConnCnt, ConnectData, ExportHandle, Fid, Frame, Header, MsgFlags, MsgKind, Op, Xid, connect_flags, encode_raw,
};

use super::{MdtService, MdtStore};
use crate::alloc::{AllocConfig, Allocator, OstApi, OstFactory};
use crate::inode::S_IFREG;
use crate::mgs::follow::Progress;
use crate::ns::Namespace;
use crate::service::{MdtMetrics, MdtOps};
use crate::store::{FjallKv, Kv};
use crate::txn::Committer;

fn no_osts() -> OstFactory {
    Arc::new(|_, _| -> Arc<dyn OstApi> { unreachable!("no OST is added in these tests") })
}

struct Fx {
    dir: tempfile::TempDir,
    ns: Arc<Namespace>,
    tg: Target<MdtService>,
}

fn fx() -> Fx {
    fx_on(tempfile::tempdir().unwrap())
}

/// The MDT mounted on `dir` (a restart when it holds a store).
fn fx_on(dir: tempfile::TempDir) -> Fx {
    let kv: Arc<dyn Kv> = Arc::new(FjallKv::open(dir.path()).unwrap());
    let alloc = Arc::new(Allocator::new(Arc::clone(&kv), no_osts(), AllocConfig::default()));
    let ns = Arc::new(Namespace::mount_deferred(kv, alloc).unwrap());
    let committer = Arc::new(Committer::start(Arc::clone(ns.kv()), Arc::clone(ns.txn()), Duration::from_millis(50)));
    let ops = Arc::new(MdtOps {
        ns: Arc::clone(&ns),
        metrics: Arc::new(MdtMetrics::new()),
        progress: Arc::new(Progress::default()),
    });
    let store = MdtStore::new(Arc::clone(&ns), committer);
    let tg = Target::boot(Time::from_secs(1), TargetConfig::default(), MdtService::new(ops), store, 7);
    Fx { dir, ns, tg }
}

/// What a crash would leave: the store as persisted now, copied aside.
fn snapshot(f: &Fx) -> tempfile::TempDir {
    f.ns.kv().persist().unwrap();
    let to = tempfile::tempdir().unwrap();
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", f.dir.path().display()))
        .arg(to.path())
        .status()
        .unwrap();
    assert!(st.success());
    to
}

fn send(tg: &mut Target<MdtService>, h: &Header, body: &[u8]) -> Reply {
    let b = encode_raw(h, body).unwrap();
    let f = Frame::parse(&b).unwrap();
    tg.handle_request(Time::from_secs(2), PeerId(1), &f);
    let mut out: Vec<Reply> = std::iter::from_fn(|| tg.poll_transmit()).collect();
    assert_eq!(out.len(), 1, "one reply");
    out.remove(0)
}

fn connect(tg: &mut Target<MdtService>) -> ExportHandle {
    connect_as(tg, 1, ExportHandle::NONE).header.handle
}

fn connect_as(tg: &mut Target<MdtService>, cnt: u32, handle: ExportHandle) -> Reply {
    let mut h = Header::new(MsgKind::Request, Op::MdsConnect.opcode(), Xid(u64::from(cnt)));
    h.conn_cnt = ConnCnt(cnt);
    h.handle = handle;
    let data = ConnectData {
        flags: connect_flags::VERSION | connect_flags::TRANSNO,
        version: 1,
        client_uuid: "c1".into(),
        ..ConnectData::default()
    };
    let r = send(tg, &h, &rkyv::to_bytes::<rkyv::rancor::Error>(&data).unwrap());
    assert_eq!(r.header.status, 0);
    r
}

fn req(handle: ExportHandle, op: Op, xid: u64) -> Header {
    let mut h = Header::new(MsgKind::Request, op.opcode(), Xid(xid));
    h.handle = handle;
    h.conn_cnt = ConnCnt(1);
    h
}

fn open_req(name: &str, fid: Option<Fid>, flags: u32) -> Vec<u8> {
    let r = ReintReq::Open {
        parent: Fid::ROOT,
        name: name.into(),
        by_fid: None,
        flags,
        mode: S_IFREG | 0o644,
        uid: 0,
        gid: 0,
        time: ptlrpc::wire::mds::Timestamp::secs(1),
        stripe: None,
        fid,
        replay: None,
    };
    rkyv::to_bytes::<rkyv::rancor::Error>(&MdsReq::new(Creds::ROOT, r)).unwrap().to_vec()
}

fn close_req(handle: u64) -> Vec<u8> {
    rkyv::to_bytes::<rkyv::rancor::Error>(&CloseReq { handle, som: None }).unwrap().to_vec()
}

/// A request the client holds for replay: what it sent (the body as the
/// import's fixup rewrote it from the reply) and the reply's header.
struct Held {
    h: Header,
    body: Vec<u8>,
    reply: Header,
}

/// Sends `body`; keeps it for replay as the client's import would.
fn run(tg: &mut Target<MdtService>, h: Header, body: Vec<u8>) -> (Held, Reply) {
    let r = send(tg, &h, &body);
    assert_eq!(r.header.status, 0, "{:?}", Op::try_from(h.opcode));
    let body =
        if h.opcode == Op::MdsReint.opcode() { reint_replay_fixup(&body, &r.body).unwrap_or(body) } else { body };
    (Held { h, body, reply: r.header }, r)
}

fn replay(tg: &mut Target<MdtService>, held: &Held, export: ExportHandle) -> Reply {
    let mut h = held.h;
    h.flags = MsgFlags::REPLAY;
    (h.transno, h.pre_versions, h.handle, h.conn_cnt) =
        (held.reply.transno, held.reply.pre_versions, export, ConnCnt(2));
    send(tg, &h, &held.body)
}

fn create(handle: ExportHandle, xid: u64, name: &str, fid: Fid) -> (Header, Vec<u8>) {
    let mut h = Header::new(MsgKind::Request, Op::MdsReint.opcode(), Xid(xid));
    h.handle = handle;
    h.conn_cnt = ConnCnt(1);
    let r = ReintReq::plain_create(Fid::ROOT, name, S_IFREG | 0o644, Some(fid));
    (h, rkyv::to_bytes::<rkyv::rancor::Error>(&MdsReq::new(Creds::ROOT, r)).unwrap().to_vec())
}

fn body(r: &Reply) -> ReintReply {
    let mut a = rkyv::util::AlignedVec::<16>::new();
    a.extend_from_slice(&r.body);
    rkyv::from_bytes::<ReintReply, rkyv::rancor::Error>(&a).unwrap()
}

#[test]
fn a_resent_create_is_reconstructed_not_run_again() {
    let mut f = fx();
    let handle = connect(&mut f.tg);
    let seq = f.ns.grant_seqs("c1", 1).unwrap().start;
    let fid = Fid { seq, oid: 1, ver: 0 };
    let (h, b) = create(handle, 100, "a", fid);
    let first = send(&mut f.tg, &h, &b);
    assert_eq!(first.header.status, 0);
    assert!(first.header.transno.0 > 0);
    assert_eq!(body(&first).attr.unwrap().fid, fid);
    // The reply was lost; the client resends the same request.
    let again = send(&mut f.tg, &h, &b);
    assert_eq!(again.header.status, 0, "a resend is not EEXIST");
    assert_eq!(again.header.transno, first.header.transno);
    assert_eq!(again.body, first.body);
    assert_eq!(f.tg.stats().reconstructed, 1);
    assert_eq!(f.tg.stats().executed, 1);
    // A new request for the same name is a real duplicate.
    let (h2, b2) = create(handle, 101, "a", Fid { seq, oid: 2, ver: 0 });
    assert_eq!(send(&mut f.tg, &h2, &b2).header.status, -17);
    // VBR: parent and child carry the transaction's version.
    let t = first.header.transno.0;
    assert_eq!(f.ns.inode(fid).unwrap().version, t);
    assert_eq!(f.ns.inode(Fid::ROOT).unwrap().version, t);
    assert_eq!(first.header.pre_versions[1].0, 0, "the child did not exist before");
    assert_eq!(f.ns.lookup_fid(Fid::ROOT, "a").unwrap(), fid);
}

#[test]
fn open_handles_come_back_after_a_restart_and_a_resent_close_is_rebuilt() {
    let mut f = fx();
    let export = connect(&mut f.tg);
    let seq = f.ns.grant_seqs("c1", 1).unwrap().start;
    let (fa, fg) = (Fid { seq, oid: 1, ver: 0 }, Fid { seq, oid: 2, ver: 0 });
    // Committed before the crash: an open that created "a".
    let rw = open_flags::RDWR;
    let (o1, r1) = run(&mut f.tg, req(export, Op::MdsReint, 100), open_req("a", Some(fa), open_flags::CREAT | rw));
    let h1 = body(&r1).handle;
    f.tg.sync();
    let crashed = snapshot(&f);
    // Lost in the crash: a second open of "a", and "g" opened and unlinked.
    let (o2, r2) = run(&mut f.tg, req(export, Op::MdsReint, 101), open_req("a", None, rw));
    assert!(r2.header.transno > r1.header.transno, "every open has a transno (it is replayed in order)");
    let h2 = body(&r2).handle;
    let (o3, r3) = run(&mut f.tg, req(export, Op::MdsReint, 102), open_req("g", Some(fg), open_flags::CREAT | rw));
    let h3 = body(&r3).handle;
    let unlink = ReintReq::Unlink { parent: Fid::ROOT, name: "g".into(), dir: false, time: Default::default() };
    let unlink = rkyv::to_bytes::<rkyv::rancor::Error>(&MdsReq::new(Creds::ROOT, unlink)).unwrap().to_vec();
    let (o4, _) = run(&mut f.tg, req(export, Op::MdsReint, 103), unlink);
    assert_eq!(f.ns.open_files(), 3);
    drop(f);

    // The restart: handles are gone until the client replays its opens.
    let mut f = fx_on(crashed);
    assert!(f.tg.is_recovering());
    assert_eq!(f.ns.open_files(), 0);
    let export = connect_as(&mut f.tg, 2, export).header.handle;
    for held in [&o1, &o2, &o3, &o4] {
        let r = replay(&mut f.tg, held, export);
        assert_eq!((r.header.status, r.header.transno), (0, held.reply.transno));
    }
    assert_eq!(f.tg.stats().executed, 3, "the committed open restored, not run again");
    assert_eq!(f.ns.open_files(), 3);
    let mut done = req(export, Op::ObdPing, 104);
    (done.conn_cnt, done.flags) = (ConnCnt(2), MsgFlags::REQ_REPLAY_DONE | MsgFlags::LOCK_REPLAY_DONE);
    assert_eq!(send(&mut f.tg, &done, &[]).header.status, 0);
    assert!(!f.tg.is_recovering());
    // The end of recovery spares the orphan a replayed open holds.
    assert_eq!(f.ns.cleanup_orphans().unwrap(), 0);
    assert!(f.ns.inode(fg).is_ok());
    // Closes of handles from before the restart work; a resend of one
    // whose reply was lost is answered from the record, not EBADF.
    let mut close1 = req(export, Op::MdsClose, 105);
    close1.conn_cnt = ConnCnt(2);
    let c1 = send(&mut f.tg, &close1, &close_req(h1));
    assert_eq!(c1.header.status, 0);
    assert!(c1.header.transno > o4.reply.transno, "a close has a transno");
    let again = send(&mut f.tg, &close1, &close_req(h1));
    assert_eq!((again.header.status, again.header.transno), (0, c1.header.transno));
    for (xid, h) in [(106, h2), (107, h3)] {
        let mut c = req(export, Op::MdsClose, xid);
        c.conn_cnt = ConnCnt(2);
        assert_eq!(send(&mut f.tg, &c, &close_req(h)).header.status, 0);
    }
    assert_eq!(f.ns.open_files(), 0);
    assert!(f.ns.inode(fg).is_err(), "the last close destroyed the orphan");
    assert!(f.ns.inode(fa).is_ok());
}

#[test]
fn a_resent_open_whose_reply_a_restart_lost_gets_a_usable_handle() {
    // The soak's EBADF (sheen-chaos seed 7, cycle 65): an open ran and
    // committed, the MDS died before its reply left, the client resent it
    // after the restart and was answered from the reply slot — with a
    // handle the new process did not have.
    let mut f = fx();
    let export = connect(&mut f.tg);
    let seq = f.ns.grant_seqs("c1", 1).unwrap().start;
    let fa = Fid { seq, oid: 1, ver: 0 };
    let open = req(export, Op::MdsReint, 100);
    let body_a = open_req("a", Some(fa), open_flags::CREAT | open_flags::RDWR);
    let first = send(&mut f.tg, &open, &body_a);
    assert_eq!(first.header.status, 0);
    let handle = body(&first).handle;
    f.tg.sync();
    let crashed = snapshot(&f);
    drop(f);

    let mut f = fx_on(crashed);
    let export = connect_as(&mut f.tg, 2, export).header.handle;
    let mut done = req(export, Op::ObdPing, 101);
    (done.conn_cnt, done.flags) = (ConnCnt(2), MsgFlags::REQ_REPLAY_DONE | MsgFlags::LOCK_REPLAY_DONE);
    assert_eq!(send(&mut f.tg, &done, &[]).header.status, 0);
    assert!(!f.tg.is_recovering());
    // The resend: reconstructed, not run again, and its handle is open.
    let mut again = open;
    (again.handle, again.conn_cnt, again.flags) = (export, ConnCnt(2), MsgFlags::RESEND);
    let r = send(&mut f.tg, &again, &body_a);
    assert_eq!(r.header.status, 0);
    assert_eq!(body(&r).handle, handle);
    assert_eq!(f.tg.stats().reconstructed, 1);
    assert_eq!(f.ns.open_files(), 1, "the reconstructed open holds the file");
    let mut close = req(export, Op::MdsClose, 102);
    close.conn_cnt = ConnCnt(2);
    assert_eq!(send(&mut f.tg, &close, &close_req(handle)).header.status, 0, "not EBADF");
    assert_eq!(f.ns.open_files(), 0);
}
