//! Unit tests of the target: negotiation, exports and handles, stale and
//! in-progress connects, transnos and versions, reconstruction, recovery
//! with a VBR failure, and evictions.

use rkyv::util::AlignedVec;

use super::*;
use crate::wire::{ConnCnt, encode_raw};

/// put(key, value) as 12 raw bytes; anything shorter is a read of key 0.
#[derive(Debug, Default)]
struct Raw;

impl TargetService for Raw {
    type Store = MemStore<u64>;
    fn plan(&mut self, _s: &MemStore<u64>, op: Op, req: &Frame<'_>) -> Result<Plan<Vec<(ObjId, u64)>>, i32> {
        let b = req.body_bytes();
        if op != Op::MdsReint {
            return Ok(Plan::Read { body: Vec::new() });
        }
        let key = b.get(..4).and_then(|k| k.try_into().ok()).map(u32::from_le_bytes).ok_or(errno::EPROTO)?;
        let val = b.get(4..12).and_then(|k| k.try_into().ok()).map(u64::from_le_bytes).ok_or(errno::EPROTO)?;
        let obj = ObjId(u128::from(key));
        Ok(Plan::Update { objects: vec![obj], change: vec![(obj, val)], body: Vec::new() })
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
    Target::boot(now, TargetConfig::default(), Raw, store, 7)
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
