//! Unit tests of the target: negotiation, exports and handles, stale and
//! in-progress connects, transnos and versions, reconstruction, recovery
//! with a VBR failure, and evictions.

use rkyv::util::AlignedVec;

use super::*;
use crate::wire::{ConnCnt, encode_raw};

/// put(key, value) as 12 raw bytes; anything shorter is a read of key 0.
/// Counts the replays of executed requests it was asked to restore.
#[derive(Debug, Default)]
struct Raw {
    restored: Vec<Xid>,
}

impl TargetService for Raw {
    type Store = MemStore<u64>;
    type Input = ();
    fn plan(
        &mut self,
        _s: &MemStore<u64>,
        _uuid: &str,
        op: Op,
        req: &Frame<'_>,
        (): (),
    ) -> Result<Plan<Vec<(ObjId, u64)>>, i32> {
        let b = req.body_bytes();
        if op != Op::MdsReint {
            return Ok(Plan::Read { body: Vec::new() });
        }
        let key = b.get(..4).and_then(|k| k.try_into().ok()).map(u32::from_le_bytes).ok_or(errno::EPROTO)?;
        let val = b.get(4..12).and_then(|k| k.try_into().ok()).map(u64::from_le_bytes).ok_or(errno::EPROTO)?;
        let obj = ObjId(u128::from(key));
        Ok(Plan::Update { objects: vec![obj], change: vec![(obj, val)], body: Vec::new() })
    }

    fn replay_executed(&mut self, _s: &MemStore<u64>, _uuid: &str, _op: Op, req: &Frame<'_>) {
        self.restored.push(req.header().xid);
    }
}

fn t(s: u64) -> Time {
    Time::from_secs(s)
}

fn frame_bytes(h: &Header, body: &[u8]) -> AlignedVec<16> {
    encode_raw(h, body).unwrap_or_else(|e| panic!("{e}"))
}

fn send(tg: &mut Target<Raw>, now: Time, h: &Header, body: &[u8]) -> Vec<Reply> {
    let b = frame_bytes(h, body);
    let f = Frame::parse(&b).unwrap_or_else(|e| panic!("{e}"));
    tg.handle_request(now, PeerId(1), &f);
    std::iter::from_fn(|| tg.poll_transmit()).collect()
}

fn connect_req(uuid: &str, cnt: u32, handle: ExportHandle) -> (Header, Vec<u8>) {
    let mut h = Header::new(MsgKind::Request, Op::MdsConnect.opcode(), Xid(u64::from(cnt) + 1000));
    h.conn_cnt = ConnCnt(cnt);
    h.handle = handle;
    let data = ConnectData {
        flags: connect_flags::VERSION | connect_flags::BRW_SIZE | connect_flags::CKSUM | 1 << 60,
        brw_size: 16 << 20,
        cksum_types: 0xff,
        client_uuid: uuid.into(),
        ..ConnectData::default()
    };
    (h, rkyv::to_bytes::<rkyv::rancor::Error>(&data).map(|b| b.to_vec()).unwrap_or_default())
}

fn connect(tg: &mut Target<Raw>, now: Time, uuid: &str, cnt: u32, handle: ExportHandle) -> Reply {
    let (h, b) = connect_req(uuid, cnt, handle);
    send(tg, now, &h, &b).pop().unwrap_or_else(|| panic!("no connect reply"))
}

fn put(handle: ExportHandle, cnt: u32, xid: u64, key: u32, val: u64) -> (Header, Vec<u8>) {
    let mut h = Header::new(MsgKind::Request, Op::MdsReint.opcode(), Xid(xid));
    h.handle = handle;
    h.conn_cnt = ConnCnt(cnt);
    let mut b = key.to_le_bytes().to_vec();
    b.extend_from_slice(&val.to_le_bytes());
    (h, b)
}

fn boot(store: MemStore<u64>, now: Time) -> Target<Raw> {
    Target::boot(now, TargetConfig::default(), Raw::default(), store, 7)
}

#[test]
fn negotiation_and_one_export_per_uuid() {
    let mut tg = boot(MemStore::new(true), t(0));
    assert!(!tg.is_recovering());
    let r = connect(&mut tg, t(1), "a", 1, ExportHandle::NONE);
    assert_eq!(r.header.status, 0);
    assert!(r.header.handle != ExportHandle::NONE);
    let b = frame_bytes(&r.header, &r.body);
    let d = Frame::parse(&b).and_then(|f| f.deserialize::<ConnectData>()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.flags, connect_flags::VERSION | connect_flags::BRW_SIZE | connect_flags::CKSUM, "unknown bit refused");
    assert_eq!(d.brw_size, 4 << 20, "the server's smaller limit");
    assert_eq!(d.cksum_types, crate::wire::CKSUM_CRC32C);
    assert_eq!((d.instance, d.max_easize, d.grant), (1, 0, 0));
    let again = connect(&mut tg, t(2), "a", 2, r.header.handle);
    assert_eq!(again.header.handle, r.header.handle, "one export per uuid");
    assert!(again.header.flags.contains(MsgFlags::CONNECT_RECONNECT));
    assert_eq!(tg.exports().len(), 1);
    // A stale CONNECT is dropped; so is one while another is answered.
    let (h, b) = connect_req("a", 1, r.header.handle);
    assert!(send(&mut tg, t(3), &h, &b).is_empty());
    let (h3, b3) = connect_req("a", 3, r.header.handle);
    let (h4, b4) = connect_req("a", 4, r.header.handle);
    for (h, b) in [(h3, b3), (h4, b4)] {
        let f = frame_bytes(&h, &b);
        tg.handle_request(t(3), PeerId(1), &Frame::parse(&f).unwrap_or_else(|e| panic!("{e}")));
    }
    assert_eq!(std::iter::from_fn(|| tg.poll_transmit()).count(), 1);
    assert_eq!(tg.stats().dropped_connecting, 1);
    assert_eq!(tg.stats().dropped_stale, 1);
}

#[test]
fn transnos_versions_reconstruction_and_stale_conn_cnt() {
    let mut tg = boot(MemStore::new(true), t(0));
    let h = connect(&mut tg, t(1), "a", 1, ExportHandle::NONE).header.handle;
    let (p1, b1) = put(h, 1, 10, 5, 50);
    let r1 = send(&mut tg, t(2), &p1, &b1);
    assert_eq!(r1[0].header.transno, Transno((1 << 32) + 1), "epoch 1");
    assert_eq!(r1[0].header.last_committed, Transno(0));
    assert_eq!(tg.store().version(ObjId(5)), ObjVersion((1 << 32) + 1));
    let (p2, b2) = put(h, 1, 11, 5, 60);
    let r2 = send(&mut tg, t(3), &p2, &b2);
    assert_eq!(r2[0].header.pre_versions[0], ObjVersion((1 << 32) + 1));
    // A resend: the original reply, rebuilt; nothing runs twice.
    let mut resend = p2;
    resend.flags = MsgFlags::RESEND;
    let r3 = send(&mut tg, t(4), &resend, &b2);
    assert_eq!((r3[0].header.transno, r3[0].header.pre_versions), (r2[0].header.transno, r2[0].header.pre_versions));
    assert_eq!(tg.stats().reconstructed, 1);
    assert_eq!(tg.store().journal().len(), 2);
    // An old duplicate is dropped; a stale conn_cnt too.
    assert!(send(&mut tg, t(4), &p1, &b1).is_empty());
    let _ = connect(&mut tg, t(5), "a", 2, h);
    let (p4, b4) = put(h, 1, 12, 6, 1);
    assert!(send(&mut tg, t(5), &p4, &b4).is_empty());
    // Commits advance last_committed.
    tg.handle_timeout(t(6));
    let (p5, b5) = put(h, 2, 13, 6, 1);
    assert_eq!(send(&mut tg, t(6), &p5, &b5)[0].header.last_committed, Transno((1 << 32) + 2));
    // Unknown handle: -ENOTCONN.
    let (p6, b6) = put(ExportHandle(1), 2, 14, 6, 1);
    assert_eq!(send(&mut tg, t(6), &p6, &b6)[0].header.status, -errno::ENOTCONN);
}

#[test]
fn restart_recovers_in_order_and_evicts_vbr_failures() {
    let mut tg = boot(MemStore::new(true), t(0));
    let ha = connect(&mut tg, t(1), "a", 1, ExportHandle::NONE).header.handle;
    let hb = connect(&mut tg, t(1), "b", 1, ExportHandle::NONE).header.handle;
    let (pa, ba) = put(ha, 1, 10, 1, 100);
    let ra = send(&mut tg, t(2), &pa, &ba)[0].header;
    let (pb, bb) = put(hb, 1, 20, 1, 200);
    let rb = send(&mut tg, t(2), &pb, &bb)[0].header;
    let mut store = tg.into_store();
    store.crash();
    let mut tg = boot(store, t(10));
    assert!(tg.is_recovering());
    assert_eq!(tg.epoch(), 2);
    // b comes back and replays; its replay must wait for a's (transno order).
    let cb = connect(&mut tg, t(11), "b", 2, hb);
    assert!(cb.header.flags.contains(MsgFlags::CONNECT_RECOVERING));
    let mut replay_b = pb;
    replay_b.flags = MsgFlags::REPLAY | MsgFlags::LAST_REPLAY;
    (replay_b.transno, replay_b.pre_versions, replay_b.handle, replay_b.conn_cnt) =
        (rb.transno, rb.pre_versions, cb.header.handle, ConnCnt(2));
    assert!(send(&mut tg, t(11), &replay_b, &bb).is_empty(), "queued behind the missing transno");
    // a never returns: at the soft limit the gap is skipped; b's replay
    // depended on a's update, so VBR refuses it and b is evicted at the end.
    let mut ping = Header::new(MsgKind::Request, Op::ObdPing.opcode(), Xid(21));
    (ping.handle, ping.conn_cnt, ping.flags) = (cb.header.handle, ConnCnt(2), MsgFlags::REQ_REPLAY_DONE);
    tg.handle_timeout(t(10) + tg.cfg.recovery_soft());
    let out: Vec<Reply> = std::iter::from_fn(|| tg.poll_transmit()).collect();
    assert_eq!(out[0].header.status, -errno::EOVERFLOW);
    assert!(send(&mut tg, t(400), &ping, &[]).iter().any(|r| r.header.status == -errno::ENOTCONN));
    let ev: Vec<TargetEvent> = std::iter::from_fn(|| tg.poll_event()).collect();
    assert!(ev.iter().any(|e| matches!(e, TargetEvent::Gap { transno } if *transno == ra.transno)));
    assert!(ev.iter().any(|e| matches!(e, TargetEvent::Evicted { reason: EvictReason::VersionMismatch, .. })));
    assert!(ev.iter().any(|e| matches!(e, TargetEvent::RecoveryDone { evicted: 1, retained: 1, .. })));
    assert!(matches!(tg.exports().get("a").map(|e| e.stage), Some(ExportStage::Retained { gap: Some(_), .. })));
    assert!(tg.exports().get("b").is_none());
}

#[test]
fn a_replay_of_a_committed_request_restores_without_running_again() {
    let mut tg = boot(MemStore::new(true), t(0));
    let h = connect(&mut tg, t(1), "a", 1, ExportHandle::NONE).header.handle;
    // An open (kept by the client after commit), then an update.
    let (p1, b1) = put(h, 1, 10, 1, 100);
    let r1 = send(&mut tg, t(2), &p1, &b1)[0].header;
    tg.sync();
    let (p2, b2) = put(h, 1, 11, 2, 200);
    let r2 = send(&mut tg, t(3), &p2, &b2)[0].header;
    let mut store = tg.into_store();
    store.crash();
    let mut tg = boot(store, t(10));
    let c = connect(&mut tg, t(11), "a", 2, h);
    let replay = |p: &Header, r: &Header, last: bool| {
        let mut q = *p;
        q.flags = if last { MsgFlags::REPLAY | MsgFlags::LAST_REPLAY } else { MsgFlags::REPLAY };
        (q.transno, q.pre_versions, q.handle, q.conn_cnt) = (r.transno, r.pre_versions, c.header.handle, ConnCnt(2));
        q
    };
    // The committed one is answered at once (its own transno), not run.
    let a1 = send(&mut tg, t(11), &replay(&p1, &r1, false), &b1);
    assert_eq!((a1[0].header.status, a1[0].header.transno), (0, r1.transno));
    assert_eq!(tg.service().restored, vec![Xid(10)], "the service restored its in-memory state");
    assert_eq!(tg.store().journal().len(), 1, "nothing ran again");
    // The lost one runs, once.
    let a2 = send(&mut tg, t(12), &replay(&p2, &r2, true), &b2);
    assert_eq!((a2[0].header.status, a2[0].header.transno), (0, r2.transno));
    assert_eq!(tg.store().journal().len(), 2);
    assert_eq!(tg.service().restored, vec![Xid(10)]);
    // Its reply was lost: the resent replay is rebuilt, and restores again.
    let a3 = send(&mut tg, t(13), &replay(&p2, &r2, true), &b2);
    assert_eq!((a3[0].header.status, a3[0].header.transno), (0, r2.transno));
    assert_eq!(tg.store().journal().len(), 2);
    assert_eq!(tg.service().restored, vec![Xid(10), Xid(11)]);
}

#[test]
fn silent_and_administrative_evictions() {
    let mut tg = boot(MemStore::new(false), t(0));
    let _ = connect(&mut tg, t(1), "a", 1, ExportHandle::NONE);
    let _ = connect(&mut tg, t(1), "b", 1, ExportHandle::NONE);
    assert!(tg.evict_client(t(2), "b"));
    tg.handle_timeout(t(1) + PingSettings::default().evict_timeout());
    let ev: Vec<TargetEvent> = std::iter::from_fn(|| tg.poll_event()).collect();
    assert!(ev.contains(&TargetEvent::Evicted { uuid: "b".into(), reason: EvictReason::Admin }));
    assert!(ev.contains(&TargetEvent::Evicted { uuid: "a".into(), reason: EvictReason::PingTimeout }));
    assert!(tg.exports().is_empty());
    assert_eq!(tg.store().clients().count(), 0, "client records removed");
}

#[test]
fn admission_for_front_hooks() {
    let cfg = TargetConfig { handle_tag: 3, ..TargetConfig::default() };
    let mut tg = Target::boot(t(0), cfg, Raw::default(), MemStore::new(true), 7);
    let h = connect(&mut tg, t(1), "a", 1, ExportHandle::NONE).header.handle;
    assert_eq!(h.0 >> 48, 3, "handles carry the tag");
    let (p1, b1) = put(h, 1, 10, 5, 50);
    let Admission::Admitted(a) = tg.admit(t(2), PeerId(1), &p1) else { panic!("a new update is admitted") };
    assert_eq!((a.uuid.as_str(), a.replay), ("a", false));
    assert_eq!((a.reply.kind, a.reply.xid, a.reply.handle, a.reply.transno), (MsgKind::Reply, Xid(10), h, Transno(0)));
    let r1 = send(&mut tg, t(2), &p1, &b1);
    assert_eq!(r1[0].header.status, 0);
    // Executed already: the front passes it on without work.
    assert!(matches!(tg.admit(t(3), PeerId(1), &p1), Admission::Admitted(a) if a.executed));
    assert_eq!(send(&mut tg, t(3), &p1, &b1)[0].header.transno, r1[0].header.transno);
    // CONNECT and PING are the target's alone; unknown exports refused.
    let mut ping = Header::new(MsgKind::Request, Op::ObdPing.opcode(), Xid(11));
    ping.handle = h;
    assert_eq!(tg.admit(t(3), PeerId(1), &ping), Admission::Pass);
    let (p2, _) = put(ExportHandle(1), 1, 12, 5, 1);
    assert_eq!(tg.admit(t(3), PeerId(1), &p2), Admission::Refused);
    assert_eq!(tg.poll_transmit().map(|r| r.header.status), Some(-errno::ENOTCONN));
    // During recovery, a read is refused with -EAGAIN; a replay admitted.
    let mut store = tg.into_store();
    store.crash();
    let mut tg =
        Target::boot(t(10), TargetConfig { handle_tag: 3, ..TargetConfig::default() }, Raw::default(), store, 8);
    let c = connect(&mut tg, t(11), "a", 2, h).header;
    let mut read = Header::new(MsgKind::Request, Op::MdsGetattr.opcode(), Xid(13));
    (read.handle, read.conn_cnt) = (c.handle, ConnCnt(2));
    assert_eq!(tg.admit(t(11), PeerId(1), &read), Admission::Refused);
    assert_eq!(tg.poll_transmit().map(|r| r.header.status), Some(-errno::EAGAIN));
    let mut replay = p1;
    (replay.flags, replay.transno, replay.handle, replay.conn_cnt) =
        (MsgFlags::REPLAY, r1[0].header.transno, c.handle, ConnCnt(2));
    assert!(matches!(tg.admit(t(11), PeerId(1), &replay), Admission::Admitted(a) if a.replay && !a.executed));
}

/// A store whose apply fails for key 13: nothing is recorded.
#[test]
fn a_failed_apply_answers_the_errno_and_uses_no_transno() {
    #[derive(Debug, Default)]
    struct Failing;
    impl TargetService for Failing {
        type Store = FailStore;
        type Input = ();
        fn plan(&mut self, _s: &FailStore, _uuid: &str, _op: Op, req: &Frame<'_>, (): ()) -> Result<Plan<u32>, i32> {
            let key = req.body_bytes().get(..4).and_then(|k| k.try_into().ok()).map(u32::from_le_bytes);
            let key = key.ok_or(errno::EPROTO)?;
            Ok(Plan::Update { objects: vec![ObjId(u128::from(key))], change: key, body: vec![1, 2, 3] })
        }
    }
    #[derive(Debug, Default)]
    struct FailStore(MemStore<u64>);
    impl TargetStore for FailStore {
        type Change = u32;
        fn load(&self) -> Persisted {
            self.0.load()
        }
        fn version(&self, obj: ObjId) -> ObjVersion {
            self.0.version(obj)
        }
        fn apply(&mut self, txn: Txn<u32>) -> Result<(), i32> {
            if txn.change == 13 {
                return Err(errno::EIO);
            }
            let Txn { transno, version, objects, pre_versions, change, xid, tag, client, server, replay } = txn;
            let change = vec![(ObjId(u128::from(change)), 0)];
            self.0.apply(Txn { transno, version, objects, pre_versions, change, xid, tag, client, server, replay })
        }
        fn put_client(&mut self, rec: ClientRecord) {
            self.0.put_client(rec);
        }
        fn remove_client(&mut self, uuid: &str) {
            self.0.remove_client(uuid);
        }
        fn put_server(&mut self, rec: ServerRecord) {
            self.0.put_server(rec);
        }
        fn commit(&mut self) {
            self.0.commit();
        }
        fn committed(&self) -> Transno {
            self.0.committed()
        }
    }
    let mut tg = Target::boot(t(0), TargetConfig::default(), Failing, FailStore(MemStore::new(true)), 7);
    let (h, b) = connect_req("a", 1, ExportHandle::NONE);
    let f = frame_bytes(&h, &b);
    tg.handle_request(t(1), PeerId(1), &Frame::parse(&f).unwrap_or_else(|e| panic!("{e}")));
    let handle = tg.poll_transmit().map(|r| r.header.handle).unwrap_or(ExportHandle::NONE);
    let mut out = Vec::new();
    for (xid, key) in [(10, 13), (11, 14), (11, 14)] {
        let (p, b) = put(handle, 1, xid, key, 0);
        let f = frame_bytes(&p, &b);
        tg.handle_request(t(2), PeerId(1), &Frame::parse(&f).unwrap_or_else(|e| panic!("{e}")));
        out.extend(std::iter::from_fn(|| tg.poll_transmit()));
    }
    assert_eq!(out[0].header.status, -errno::EIO);
    assert_eq!(out[1].header.transno, Transno((1 << 32) + 1), "the failed one used no transno");
    assert_eq!((out[2].header.transno, out[2].body.as_slice()), (out[1].header.transno, &[1u8, 2, 3][..]), "kept body");
    assert_eq!(tg.stats().reconstructed, 1);
}

fn tagged(handle: ExportHandle, xid: u64, tag: u16, replied: u64, key: u32, val: u64) -> (Header, Vec<u8>) {
    let (mut h, b) = put(handle, 1, xid, key, val);
    h.tag = tag;
    h.replied_xid = Xid(replied);
    (h, b)
}

/// Several updates in flight from one client, each in its slot: they run
/// in any order, a resend of any is rebuilt from its slot, acknowledged
/// and reused slots still never run a duplicate, and the slots survive a
/// commit and a reboot in the one record form.
#[test]
fn several_updates_in_flight_each_in_its_slot() {
    let mut tg = boot(MemStore::new(true), t(0));
    let (mut ch, _) = connect_req("a", 1, ExportHandle::NONE);
    ch.xid = Xid(1);
    let data = ConnectData {
        flags: connect_flags::MULTIMODRPCS,
        max_mod_rpcs: 32,
        client_uuid: "a".into(),
        ..ConnectData::default()
    };
    let cb = rkyv::to_bytes::<rkyv::rancor::Error>(&data).map(|b| b.to_vec()).unwrap_or_default();
    let r = send(&mut tg, t(1), &ch, &cb).pop().unwrap_or_else(|| panic!("no connect reply"));
    let b = frame_bytes(&r.header, &r.body);
    let d = Frame::parse(&b).and_then(|f| f.deserialize::<ConnectData>()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.max_mod_rpcs, 8, "the target's limit");
    let h = r.header.handle;
    // xids 10, 11, 12 in slots 1, 2, 3 arrive out of order.
    let reqs: Vec<_> = (0..3u16).map(|i| tagged(h, 10 + u64::from(i), i + 1, 9, 5 + u32::from(i), 1)).collect();
    let mut transnos = BTreeMap::new();
    for i in [2, 0, 1] {
        let (rh, rb) = &reqs[i];
        let rep = send(&mut tg, t(2), rh, rb);
        assert_eq!(rep[0].header.status, 0);
        transnos.insert(rh.xid, rep[0].header.transno);
    }
    assert_eq!(tg.stats().executed, 3);
    // Every reply lost: the resends are rebuilt, none runs again.
    for (rh, rb) in &reqs {
        let mut again = *rh;
        again.flags = MsgFlags::RESEND;
        let rep = send(&mut tg, t(3), &again, rb);
        assert_eq!(rep[0].header.transno, transnos[&rh.xid], "xid {} rebuilt", rh.xid);
    }
    assert_eq!((tg.stats().executed, tg.stats().reconstructed), (3, 3));
    // The client acknowledges 10 and 11 (xid 13 says so) and reuses slot 3
    // for xid 14 after 12's reply: old copies of 10, 11 and 12 are dropped.
    let (h13, b13) = tagged(h, 13, 1, 11, 9, 2);
    assert_eq!(send(&mut tg, t(4), &h13, &b13)[0].header.status, 0);
    let (h14, b14) = tagged(h, 14, 3, 11, 9, 3);
    assert_eq!(send(&mut tg, t(4), &h14, &b14)[0].header.status, 0);
    for (rh, rb) in &reqs {
        assert!(send(&mut tg, t(5), rh, rb).is_empty(), "old copy of {} dropped", rh.xid);
    }
    assert_eq!(tg.stats().executed, 5);
    // The record: slots 1 (13), 2 (11 is acknowledged: freed) and 3 (14).
    tg.sync();
    let rec = tg.store().load().clients.into_iter().find(|c| c.uuid == "a").unwrap_or_default();
    assert_eq!(rec.slots.iter().map(|s| (s.tag, s.xid)).collect::<Vec<_>>(), vec![(1, Xid(13)), (3, Xid(14))]);
    assert_eq!(ClientRecord::decode(&rec.encode()), Ok(rec.clone()), "one byte form");
    assert_eq!(rec.replied_xid, Xid(11));
    // A reboot keeps them: a resend of 14 after recovery is rebuilt.
    let store = tg.into_store();
    let mut tg = boot(store, t(10));
    let r = connect(&mut tg, t(11), "a", 2, h);
    assert!(r.header.flags.contains(MsgFlags::CONNECT_RECOVERING));
    let h2 = r.header.handle;
    let mut ping = Header::new(MsgKind::Request, Op::ObdPing.opcode(), Xid(20));
    (ping.handle, ping.conn_cnt, ping.flags) = (h2, ConnCnt(2), MsgFlags::REQ_REPLAY_DONE);
    assert_eq!(send(&mut tg, t(12), &ping, &[])[0].header.status, 0, "recovery over");
    let (mut r14, b14) = tagged(h2, 14, 3, 11, 9, 3);
    (r14.conn_cnt, r14.flags) = (ConnCnt(2), MsgFlags::RESEND);
    let rep = send(&mut tg, t(13), &r14, &b14);
    assert_eq!((rep[0].header.status, tg.stats().executed, tg.stats().reconstructed), (0, 0, 1));
}

/// A new process of a client (same UUID: an MDT's imports to its OSTs)
/// connects with a first CONNECT on a newer connection: its xids start
/// over below the old process's, and they run rather than being taken
/// for the old process's acknowledged requests.
#[test]
fn a_restarted_client_process_starts_its_xids_over() {
    let mut tg = boot(MemStore::new(true), t(0));
    let h = connect(&mut tg, t(1), "a", 1, ExportHandle::NONE).header.handle;
    let (p, b) = tagged(h, 100, 1, 0, 5, 50);
    assert_eq!(send(&mut tg, t(2), &p, &b)[0].header.status, 0);
    let (p, b) = tagged(h, 101, 1, 100, 5, 51);
    assert_eq!(send(&mut tg, t(2), &p, &b)[0].header.status, 0);
    assert_eq!(tg.store().journal().len(), 2);
    // A duplicate of the first CONNECT (same conn_cnt) changes nothing.
    let (mut c, cb) = connect_req("a", 1, ExportHandle::NONE);
    c.flags = MsgFlags::CONNECT_INITIAL;
    assert!(send(&mut tg, t(3), &c, &cb).iter().all(|r| r.header.status != 0 || r.header.handle == h));
    // The new process: its first CONNECT on a higher count, then xid 7.
    let (mut c, cb) = connect_req("a", 9, ExportHandle::NONE);
    c.flags = MsgFlags::CONNECT_INITIAL;
    let r = send(&mut tg, t(4), &c, &cb);
    assert_eq!(r[0].header.status, 0);
    let (p, b) = tagged(r[0].header.handle, 7, 1, 0, 6, 60);
    let (mut p, b) = (p, b);
    p.conn_cnt = ConnCnt(9);
    let out = send(&mut tg, t(5), &p, &b);
    assert_eq!(out[0].header.status, 0);
    assert_eq!(tg.store().journal().len(), 3, "xid 7 of the new process ran");
}

#[test]
fn only_a_normal_export_s_ping_outside_recovery_is_answered_from_memory() {
    let mut store = MemStore::new(true);
    let mut tg = boot(store, t(0));
    let h = connect(&mut tg, t(1), "a", 1, ExportHandle::NONE).header.handle;
    let mut ping = Header::new(MsgKind::Request, Op::ObdPing.opcode(), Xid(30));
    (ping.handle, ping.conn_cnt) = (h, ConnCnt(1));
    assert!(tg.ping_in_memory(&ping), "a connected client's ping");
    let mut stranger = ping;
    stranger.handle = ExportHandle(0xdead);
    assert!(tg.ping_in_memory(&stranger), "an unknown handle is answered -ENOTCONN from memory");
    // After a restart the target recovers: no ping is, until it is done.
    let (p, b) = put(h, 1, 31, 1, 5);
    send(&mut tg, t(2), &p, &b);
    store = tg.into_store();
    store.crash();
    let mut tg = boot(store, t(10));
    assert!(tg.is_recovering());
    assert!(!tg.ping_in_memory(&ping));
    let c = connect(&mut tg, t(11), "a", 2, h);
    (ping.handle, ping.conn_cnt, ping.flags) = (c.header.handle, ConnCnt(2), MsgFlags::REQ_REPLAY_DONE);
    assert!(!tg.ping_in_memory(&ping), "the ping that ends a client's replay");
    send(&mut tg, t(12), &ping, &[]);
    tg.handle_timeout(t(12));
    assert!(!tg.is_recovering(), "the only client is back");
    ping.flags = MsgFlags::EMPTY;
    assert!(tg.ping_in_memory(&ping));
}
