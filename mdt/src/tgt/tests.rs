//! The MDT on the sans-IO target (no network): a resent create is
//! answered from the client record (same reply, nothing run twice), a real
//! duplicate fails with EEXIST, and the objects get the transaction's
//! version as the VBR seed says.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use ptlrpc::target::{PeerId, Reply, Target, TargetConfig};
use ptlrpc::time::Time;
use ptlrpc::wire::mds::{ReintReply, ReintReq};
use ptlrpc::wire::{
    ConnCnt, ConnectData, ExportHandle, Fid, Frame, Header, MsgKind, Op, Xid, connect_flags, encode_raw,
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
    _dir: tempfile::TempDir,
    ns: Arc<Namespace>,
    tg: Target<MdtService>,
}

fn fx() -> Fx {
    let dir = tempfile::tempdir().unwrap();
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
    Fx { _dir: dir, ns, tg }
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
    let mut h = Header::new(MsgKind::Request, Op::MdsConnect.opcode(), Xid(1));
    h.conn_cnt = ConnCnt(1);
    let data = ConnectData {
        flags: connect_flags::VERSION | connect_flags::TRANSNO,
        version: 1,
        client_uuid: "c1".into(),
        ..ConnectData::default()
    };
    let r = send(tg, &h, &rkyv::to_bytes::<rkyv::rancor::Error>(&data).unwrap());
    assert_eq!(r.header.status, 0);
    r.header.handle
}

fn create(handle: ExportHandle, xid: u64, name: &str, fid: Fid) -> (Header, Vec<u8>) {
    let mut h = Header::new(MsgKind::Request, Op::MdsReint.opcode(), Xid(xid));
    h.handle = handle;
    h.conn_cnt = ConnCnt(1);
    let r = ReintReq::Create {
        parent: Fid::ROOT,
        name: name.into(),
        mode: S_IFREG | 0o644,
        rdev: 0,
        uid: 0,
        gid: 0,
        time: ptlrpc::wire::mds::Timestamp::secs(1),
        symlink: String::new(),
        stripe: None,
        fid: Some(fid),
        replay: None,
    };
    (h, rkyv::to_bytes::<rkyv::rancor::Error>(&r).unwrap().to_vec())
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
    let seq = f.ns.grant_seqs(1).unwrap().start;
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
