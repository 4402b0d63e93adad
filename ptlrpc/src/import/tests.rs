//! Unit tests of the import: every state's edges, and each transition
//! driven by hand-made replies.

use rkyv::util::AlignedVec;

use super::*;
use crate::wire::{ObjVersion, encode_raw};

const P: Portal = Portal(12);

fn t(ms: u64) -> Time {
    Time::from_millis(ms)
}

fn import(paths: u32) -> Import {
    let cfg = ImportConfig::new("c0", Op::MdsConnect, Op::MdsDisconnect, P, (0..paths).map(PathId).collect());
    Import::new(t(0), cfg)
}

fn bytes(h: &Header, body: &[u8]) -> AlignedVec<16> {
    match encode_raw(h, body) {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    }
}

/// Feeds a reply to `out` with `status`, `flags`, `transno`, `lc`.
fn answer(imp: &mut Import, now: Time, out: &Outgoing, status: i32, flags: MsgFlags, transno: u64, lc: u64) {
    let kind = if status == 0 { MsgKind::Reply } else { MsgKind::Error };
    let mut h = Header::new(kind, out.header.opcode, out.header.xid);
    h.status = status;
    h.flags = flags;
    h.conn_cnt = out.header.conn_cnt;
    h.handle = ExportHandle(77);
    h.transno = Transno(transno);
    h.last_committed = Transno(lc);
    h.pre_versions = [ObjVersion(transno.saturating_sub(1)); 4];
    let body = if Op::try_from(out.header.opcode).is_ok_and(|o| o.is_connect()) {
        let data = ConnectData { client_committed: 0, ..ConnectData::default() };
        rkyv::to_bytes::<rkyv::rancor::Error>(&data).map(|b| b.to_vec()).unwrap_or_default()
    } else {
        Vec::new()
    };
    let b = bytes(&h, &body);
    match Frame::parse(&b) {
        Ok(f) => imp.handle_reply(now, &f),
        Err(e) => panic!("{e}"),
    }
}

fn next(imp: &mut Import, now: Time) -> Outgoing {
    imp.poll_transmit(now).unwrap_or_else(|| panic!("nothing to send in {:?}", imp.kind()))
}

fn connected() -> Import {
    let mut imp = import(1);
    imp.connect(t(0));
    let c = next(&mut imp, t(0));
    answer(&mut imp, t(1), &c, 0, MsgFlags::EMPTY, 0, 0);
    assert_eq!(imp.kind(), ImportStateKind::Full);
    imp
}

fn put() -> RequestSpec {
    RequestSpec { op: Op::MdsReint, portal: P, body: vec![0; 16], kind: ReqKind::Modify, jobid: None }
}

fn drain(imp: &mut Import) -> Vec<ImportEvent> {
    std::iter::from_fn(|| imp.poll_event()).collect()
}

#[test]
fn edges_are_exactly_the_state_machine() {
    use ImportStateKind as K;
    let legal = [
        (K::New, K::Connecting),
        (K::Connecting, K::Full),
        (K::Connecting, K::Replay),
        (K::Connecting, K::Recover),
        (K::Connecting, K::Discon),
        (K::Connecting, K::Evicted),
        (K::Connecting, K::Connecting),
        (K::Full, K::Discon),
        (K::Discon, K::Connecting),
        (K::Replay, K::ReplayLocks),
        (K::Replay, K::Discon),
        (K::ReplayLocks, K::ReplayWait),
        (K::ReplayLocks, K::Discon),
        (K::ReplayWait, K::Recover),
        (K::ReplayWait, K::Replay),
        (K::ReplayWait, K::Discon),
        (K::Recover, K::Full),
        (K::Recover, K::Discon),
        (K::Evicted, K::Connecting),
    ];
    for from in K::ALL {
        for to in K::ALL {
            let expect = legal.contains(&(from, to)) || (to == K::Closed && from != K::Closed);
            assert_eq!(from.can_move_to(to), expect, "{from:?} -> {to:?}");
        }
    }
}

#[test]
#[should_panic(expected = "illegal import transition")]
fn illegal_edge_panics() {
    let mut imp = import(1);
    imp.set_state(t(0), ImportState::Full);
}

#[test]
fn a_request_carries_its_own_job_id_or_the_imports() {
    let mut imp = connected();
    let job = crate::wire::JobId::new("dd.1000");
    imp.submit(t(1), RequestSpec { jobid: Some(job), kind: ReqKind::Read, ..put() }).unwrap();
    imp.submit(t(1), RequestSpec { kind: ReqKind::Read, ..put() }).unwrap();
    assert_eq!(next(&mut imp, t(1)).header.jobid, job);
    assert_eq!(next(&mut imp, t(1)).header.jobid, crate::wire::JobId::EMPTY, "the import's (none configured)");
}

#[test]
fn connect_then_requests_flow() {
    let mut imp = import(1);
    assert_eq!(imp.kind(), ImportStateKind::New);
    let xid = imp.submit(t(0), put());
    assert!(xid.is_ok());
    assert!(imp.poll_transmit(t(0)).is_none(), "delayed while not FULL");
    imp.connect(t(0));
    let c = next(&mut imp, t(0));
    assert!(c.header.flags.contains(MsgFlags::CONNECT_INITIAL));
    assert_eq!(imp.conn_cnt(), ConnCnt(1));
    answer(&mut imp, t(1), &c, 0, MsgFlags::EMPTY, 0, 0);
    assert_eq!(imp.remote_handle(), ExportHandle(77));
    assert_eq!(imp.generation(), 1);
    let r = next(&mut imp, t(1));
    assert_eq!(Ok(r.header.xid), xid);
    assert_eq!(r.header.handle, ExportHandle(77));
    answer(&mut imp, t(2), &r, 0, MsgFlags::EMPTY, 5, 3);
    assert_eq!(imp.replay_list().len(), 1, "replied, uncommitted");
    assert!(drain(&mut imp).iter().any(|e| matches!(e, ImportEvent::Reply { .. })));
    // A later reply's last_committed prunes it.
    let r2 = imp.submit(t(3), RequestSpec { kind: ReqKind::Read, ..put() });
    assert!(r2.is_ok());
    let o = next(&mut imp, t(3));
    answer(&mut imp, t(4), &o, 0, MsgFlags::EMPTY, 0, 5);
    assert!(imp.replay_list().is_empty());
    assert_eq!(imp.last_committed(), Transno(5));
}

#[test]
fn one_modifying_request_in_flight() {
    let mut imp = connected();
    let a = imp.submit(t(1), put());
    let b = imp.submit(t(1), put());
    let oa = next(&mut imp, t(1));
    assert_eq!(Ok(oa.header.xid), a);
    assert!(imp.poll_transmit(t(1)).is_none(), "b waits for a");
    answer(&mut imp, t(2), &oa, 0, MsgFlags::EMPTY, 1, 0);
    assert_eq!(Ok(next(&mut imp, t(2)).header.xid), b);
}

#[test]
fn opens_stay_until_released() {
    let mut imp = connected();
    let _ = imp.submit(t(1), RequestSpec { kind: ReqKind::Open, ..put() });
    let o = next(&mut imp, t(1));
    answer(&mut imp, t(2), &o, 0, MsgFlags::EMPTY, 4, 4);
    assert_eq!(imp.replay_list().len(), 1, "committed open kept");
    assert!(imp.release_open(o.header.xid, None));
    assert!(imp.replay_list().is_empty());
}

fn mark(req: &[u8], _reply: &[u8]) -> Option<Vec<u8>> {
    let mut b = req.to_vec();
    b.push(0xab);
    Some(b)
}

#[test]
fn a_fixup_rewrites_the_replay_and_a_closed_open_waits_for_its_close() {
    let mut imp = connected();
    let _ = imp.submit_with_fixup(t(1), RequestSpec { kind: ReqKind::Open, ..put() }, Some(mark));
    let o = next(&mut imp, t(1));
    assert_eq!(o.body.len(), 16, "sent as asked");
    answer(&mut imp, t(2), &o, 0, MsgFlags::EMPTY, 4, 4);
    assert_eq!(imp.replay_list().get(Transno(4)).map(|e| e.spec.body.last().copied()), Some(Some(0xab)));
    // Its close: replied, not committed.
    let _ = imp.submit(t(3), put());
    let c = next(&mut imp, t(3));
    answer(&mut imp, t(4), &c, 0, MsgFlags::EMPTY, 5, 4);
    assert!(imp.release_open(o.header.xid, Some(c.header.xid)));
    assert_eq!(imp.replay_list().len(), 2, "the open stays while its close may be replayed");
    // A restart: the committed open is replayed (rewritten) before its close.
    imp.handle_target_restarted(t(5));
    let cn = next(&mut imp, t(5));
    answer(&mut imp, t(5), &cn, 0, MsgFlags::CONNECT_RECOVERING, 0, 4);
    let r1 = next(&mut imp, t(5));
    assert_eq!((r1.header.transno, r1.body.last().copied(), r1.body.len()), (Transno(4), Some(0xab), 17));
    answer(&mut imp, t(6), &r1, 0, MsgFlags::EMPTY, 4, 4);
    let r2 = next(&mut imp, t(6));
    assert_eq!(r2.header.transno, Transno(5));
    answer(&mut imp, t(7), &r2, 0, MsgFlags::EMPTY, 5, 4);
    let done = next(&mut imp, t(7));
    answer(&mut imp, t(8), &done, 0, MsgFlags::EMPTY, 0, 5);
    assert_eq!(imp.kind(), ImportStateKind::Full);
    assert!(imp.replay_list().is_empty(), "the close committed: both go");
}

#[test]
fn a_replay_refused_for_good_is_lost_a_busy_one_is_retried() {
    let mut imp = with_replays(2);
    imp.handle_target_restarted(t(5));
    let c = next(&mut imp, t(5));
    answer(&mut imp, t(5), &c, 0, MsgFlags::CONNECT_RECOVERING, 0, 0);
    let r1 = next(&mut imp, t(5));
    answer(&mut imp, t(6), &r1, -2, MsgFlags::EMPTY, 0, 0);
    let lost: Vec<ImportEvent> = drain(&mut imp);
    assert!(lost.iter().any(|e| matches!(
        e,
        ImportEvent::ReplayLost { transno: Transno(10), error: ImportError::ReplayRefused(2), .. }
    )));
    let r2 = next(&mut imp, t(6));
    assert_eq!(r2.header.transno, Transno(11), "recovery goes on");
    answer(&mut imp, t(7), &r2, -errno::EBUSY, MsgFlags::EMPTY, 0, 0);
    assert_eq!(imp.kind(), ImportStateKind::Connecting, "busy: reconnect and replay again");
    assert_eq!(imp.replay_list().len(), 1);
}

#[test]
fn connect_timeout_tries_next_path_then_backs_off() {
    let mut imp = import(2);
    imp.connect(t(0));
    let c1 = next(&mut imp, t(0));
    assert_eq!(c1.path, PathId(0));
    let d = imp.poll_timeout().unwrap_or(t(0));
    imp.handle_timeout(d);
    let c2 = next(&mut imp, d);
    assert_eq!(c2.path, PathId(1), "next failover path at once");
    let d2 = imp.poll_timeout().unwrap_or(t(0));
    imp.handle_timeout(d2);
    assert_eq!(imp.kind(), ImportStateKind::Discon, "every path failed: back off");
    let retry = imp.poll_timeout().unwrap_or(t(0));
    assert!(retry >= d2 + Duration::from_secs(1));
    assert!(imp.poll_transmit(d2).is_none());
    imp.handle_timeout(retry);
    assert_eq!(imp.kind(), ImportStateKind::Connecting);
    // A stale reply (old conn_cnt) is ignored.
    answer(&mut imp, retry, &c1, 0, MsgFlags::EMPTY, 0, 0);
    assert_eq!(imp.kind(), ImportStateKind::Connecting);
}

#[test]
fn timeout_reconnect_resends_in_flight() {
    let mut imp = connected();
    let x = imp.submit(t(1), put());
    let o = next(&mut imp, t(1));
    let d = imp.poll_timeout().unwrap_or(t(0));
    imp.handle_timeout(d);
    assert_eq!(imp.kind(), ImportStateKind::Connecting, "DISCON then reconnect at once");
    let c = next(&mut imp, d);
    assert_eq!(c.header.handle, ExportHandle(77), "reconnect names the export");
    assert!(!c.header.flags.contains(MsgFlags::CONNECT_INITIAL));
    answer(&mut imp, d, &c, 0, MsgFlags::CONNECT_RECONNECT, 0, 0);
    let kinds: Vec<_> = imp.history().recent().map(|(_, k)| *k).collect();
    assert!(kinds.ends_with(&[
        ImportStateKind::Discon,
        ImportStateKind::Connecting,
        ImportStateKind::Recover,
        ImportStateKind::Full
    ]));
    let r = next(&mut imp, d);
    assert_eq!(Ok(r.header.xid), x);
    assert!(r.header.flags.contains(MsgFlags::RESEND));
    assert_eq!(r.header.conn_cnt, ConnCnt(2));
    // The old send's reply is ignored (stale connection).
    answer(&mut imp, d, &o, 0, MsgFlags::EMPTY, 9, 0);
    assert!(imp.replay_list().is_empty());
}

/// Puts `n` modifying requests through and leaves them replied,
/// uncommitted (transnos 10, 11, ...).
fn with_replays(n: u64) -> Import {
    let mut imp = connected();
    for i in 0..n {
        let _ = imp.submit(t(1), put());
        let o = next(&mut imp, t(1));
        answer(&mut imp, t(2), &o, 0, MsgFlags::EMPTY, 10 + i, 0);
    }
    assert_eq!(imp.replay_list().len() as u64, n);
    imp
}

#[test]
fn recovery_replays_in_order_then_waits_then_full() {
    let mut imp = with_replays(3);
    let pending = imp.submit(t(3), put());
    let first = next(&mut imp, t(3));
    imp.handle_target_restarted(t(5));
    let c = next(&mut imp, t(5));
    answer(&mut imp, t(5), &c, 0, MsgFlags::CONNECT_RECOVERING, 0, 10);
    assert_eq!(imp.replay_list().len(), 2, "transno 10 committed: pruned");
    let r1 = next(&mut imp, t(5));
    assert!(r1.header.flags.contains(MsgFlags::REPLAY) && !r1.header.flags.contains(MsgFlags::LAST_REPLAY));
    assert_eq!(r1.header.transno, Transno(11));
    assert_eq!(r1.header.pre_versions[0], ObjVersion(10));
    assert!(imp.poll_transmit(t(5)).is_none(), "one replay at a time");
    answer(&mut imp, t(6), &r1, 0, MsgFlags::EMPTY, 11, 0);
    let r2 = next(&mut imp, t(6));
    assert_eq!(r2.header.transno, Transno(12));
    assert!(r2.header.flags.contains(MsgFlags::LAST_REPLAY));
    answer(&mut imp, t(7), &r2, 0, MsgFlags::EMPTY, 12, 0);
    assert_eq!(imp.kind(), ImportStateKind::ReplayWait);
    let done = next(&mut imp, t(7));
    assert!(done.header.flags.contains(MsgFlags::REQ_REPLAY_DONE | MsgFlags::LOCK_REPLAY_DONE));
    // The held PING's copy times out: resent, not a disconnect.
    let d = imp.poll_timeout().unwrap_or(t(0));
    imp.handle_timeout(d);
    assert_eq!(imp.kind(), ImportStateKind::ReplayWait);
    assert!(next(&mut imp, d).header.flags.contains(MsgFlags::RESEND));
    answer(&mut imp, d, &done, 0, MsgFlags::EMPTY, 0, 12);
    assert_eq!(imp.kind(), ImportStateKind::Full);
    assert!(imp.replay_list().is_empty());
    let h = imp.history();
    for (a, b) in [
        (ImportStateKind::Connecting, ImportStateKind::Replay),
        (ImportStateKind::Replay, ImportStateKind::ReplayLocks),
        (ImportStateKind::ReplayLocks, ImportStateKind::ReplayWait),
        (ImportStateKind::ReplayWait, ImportStateKind::Recover),
        (ImportStateKind::Recover, ImportStateKind::Full),
    ] {
        assert_eq!(h.count(a, b), 1, "{a:?} -> {b:?}");
    }
    let resent = next(&mut imp, d);
    assert_eq!(Ok(resent.header.xid), pending, "the interrupted request is resent once FULL");
    assert_eq!(resent.header.xid, first.header.xid);
    assert!(resent.header.flags.contains(MsgFlags::RESEND));
}

#[test]
fn version_mismatch_reports_the_replay_lost() {
    let mut imp = with_replays(1);
    imp.handle_target_restarted(t(5));
    let c = next(&mut imp, t(5));
    answer(&mut imp, t(5), &c, 0, MsgFlags::CONNECT_RECOVERING, 0, 0);
    let r = next(&mut imp, t(5));
    answer(&mut imp, t(6), &r, -errno::EOVERFLOW, MsgFlags::EMPTY, 0, 0);
    let ev = drain(&mut imp);
    assert!(ev.iter().any(|e| matches!(e, ImportEvent::ReplayLost { error: ImportError::VersionMismatch, .. })));
    assert_eq!(imp.kind(), ImportStateKind::ReplayWait);
}

#[test]
fn eviction_fails_everything_and_reconnects_as_new() {
    let mut imp = with_replays(2);
    let x = imp.submit(t(3), put());
    let _ = next(&mut imp, t(3));
    let y = imp.submit(t(3), put()); // waits behind x
    drain(&mut imp);
    imp.handle_target_restarted(t(5));
    let c = next(&mut imp, t(5));
    answer(&mut imp, t(5), &c, 0, MsgFlags::EMPTY, 0, 0); // a new export: evicted
    let ev = drain(&mut imp);
    let lost = ev.iter().filter(|e| matches!(e, ImportEvent::ReplayLost { error: ImportError::Evicted, .. })).count();
    assert_eq!(lost, 2);
    assert!(ev.iter().any(|e| matches!(e, ImportEvent::Failed { xid, error: ImportError::Evicted } if Ok(*xid) == x)));
    assert!(!ev.iter().any(|e| matches!(e, ImportEvent::Failed { xid, .. } if Ok(*xid) == y)), "never sent: kept");
    assert_eq!(imp.history().count(ImportStateKind::Connecting, ImportStateKind::Evicted), 1);
    assert_eq!(imp.kind(), ImportStateKind::Connecting);
    let c2 = next(&mut imp, t(5));
    assert!(c2.header.flags.contains(MsgFlags::CONNECT_INITIAL));
    assert_eq!(c2.header.handle, ExportHandle::NONE);
    answer(&mut imp, t(6), &c2, 0, MsgFlags::EMPTY, 0, 0);
    assert_eq!(imp.kind(), ImportStateKind::Full);
    assert_eq!(imp.stats().evictions, 1);
}

#[test]
fn delayed_recovery_rekeys_replays() {
    let mut imp = with_replays(1);
    imp.handle_target_restarted(t(5));
    let c = next(&mut imp, t(5));
    answer(&mut imp, t(5), &c, 0, MsgFlags::CONNECT_DELAYED, 0, 0);
    let r = next(&mut imp, t(5));
    assert!(r.header.flags.contains(MsgFlags::REPLAY | MsgFlags::VERSION_REPLAY | MsgFlags::DELAY_REPLAY));
    // last_committed never prunes an entry waiting for delayed recovery.
    assert_eq!(imp.replay_list().len(), 1);
    answer(&mut imp, t(6), &r, 0, MsgFlags::EMPTY, (2 << 32) + 1, 50);
    let e = imp.replay_list().iter().next().map(|e| (e.transno, e.delayed_pending));
    assert_eq!(e, Some((Transno((2 << 32) + 1), false)));
    let done = next(&mut imp, t(6));
    assert!(done.header.flags.contains(MsgFlags::DELAY_REPLAY));
    answer(&mut imp, t(7), &done, 0, MsgFlags::EMPTY, 0, 0);
    assert_eq!(imp.kind(), ImportStateKind::Full);
}

#[test]
fn pinger_discon_and_enotconn_reconnect() {
    let mut imp = connected();
    let d = imp.poll_timeout().unwrap_or(t(0));
    imp.handle_timeout(d);
    let ping = next(&mut imp, d);
    assert_eq!(Op::try_from(ping.header.opcode), Ok(Op::ObdPing));
    let d2 = imp.poll_timeout().unwrap_or(t(0));
    imp.handle_timeout(d2);
    assert_eq!(imp.history().count(ImportStateKind::Full, ImportStateKind::Discon), 1, "pinger DISCON consumed");
    let c = next(&mut imp, d2);
    answer(&mut imp, d2, &c, 0, MsgFlags::CONNECT_RECONNECT, 0, 0);
    assert_eq!(imp.kind(), ImportStateKind::Full);
    let _ = imp.submit(d2, RequestSpec { kind: ReqKind::Read, ..put() });
    let o = next(&mut imp, d2);
    answer(&mut imp, d2, &o, -errno::ENOTCONN, MsgFlags::EMPTY, 0, 0);
    assert_eq!(imp.kind(), ImportStateKind::Connecting);
}

#[test]
fn close_reports_and_history_is_bounded() {
    let mut imp = with_replays(1);
    for i in 0..20 {
        imp.handle_target_restarted(t(10 + i));
        let c = next(&mut imp, t(10 + i));
        answer(&mut imp, t(10 + i), &c, 0, MsgFlags::CONNECT_RECONNECT, 0, 0);
    }
    assert_eq!(imp.history().recent().count(), HISTORY_LEN);
    imp.close(t(100));
    let out = next(&mut imp, t(100));
    assert_eq!(Op::try_from(out.header.opcode), Ok(Op::MdsDisconnect));
    assert!(drain(&mut imp).iter().any(|e| matches!(e, ImportEvent::ReplayLost { error: ImportError::Closed, .. })));
    assert_eq!(imp.submit(t(100), put()), Err(ImportError::Closed));
}

#[test]
fn early_reply_extends_the_deadline_and_never_shortens_it() {
    let mut imp = connected();
    let _x = imp.submit(t(1), put());
    let o = next(&mut imp, t(1));
    let first = imp.poll_timeout().unwrap_or(t(0));
    let early = |imp: &mut Import, now: Time, total: Duration| {
        let mut h = Header::new(MsgKind::Reply, o.header.opcode, o.header.xid);
        h.flags = MsgFlags::EARLY_REPLY;
        h.conn_cnt = o.header.conn_cnt;
        h.timeout = total;
        let b = bytes(&h, &[]);
        match Frame::parse(&b) {
            Ok(f) => imp.handle_early_reply(now, &f),
            Err(e) => panic!("{e}"),
        }
    };
    // The target asks for 10 minutes in total: the deadline moves out, so
    // the old deadline passes without a disconnect (without the early reply
    // it would: see timeout_reconnect_resends_in_flight).
    early(&mut imp, t(2), Duration::from_secs(600));
    imp.handle_timeout(first);
    assert_eq!(imp.kind(), ImportStateKind::Full);
    // A shorter grant never brings it forward.
    early(&mut imp, t(3), Duration::from_secs(1));
    imp.handle_timeout(first + Duration::from_millis(1));
    assert_eq!(imp.kind(), ImportStateKind::Full);
    // Early replies are not final replies.
    assert!(drain(&mut imp).iter().all(|e| !matches!(e, ImportEvent::Reply { .. })));
}

#[test]
fn a_full_replay_list_pings_at_once() {
    let mut imp = with_replays(3);
    imp.cfg.max_requests = 3;
    assert!(imp.poll_transmit(t(3)).is_none(), "no ping due yet");
    assert_eq!(imp.submit(t(3), put()), Err(ImportError::Full(3)));
    let ping = next(&mut imp, t(3));
    assert_eq!(Op::try_from(ping.header.opcode), Ok(Op::ObdPing));
    assert_eq!(imp.submit(t(3), put()), Err(ImportError::Full(3)), "one ping in flight is enough");
    assert!(imp.poll_transmit(t(3)).is_none());
    // Its reply says everything is committed: room again.
    answer(&mut imp, t(4), &ping, 0, MsgFlags::EMPTY, 0, 12);
    assert!(imp.replay_list().is_empty());
    assert!(imp.submit(t(4), put()).is_ok());
}

#[test]
fn a_restart_notice_naming_a_path_reconnects_there() {
    let mut imp = import(2);
    imp.connect(t(0));
    let c = next(&mut imp, t(0));
    assert_eq!(c.path, PathId(0));
    answer(&mut imp, t(1), &c, 0, MsgFlags::EMPTY, 0, 0);
    // The failover partner took over: the notice names path 1.
    imp.handle_target_restarted_at(t(5), &[PathId(9), PathId(1)]);
    let c = next(&mut imp, t(5));
    assert_eq!(c.path, PathId(1));
    assert!(Op::try_from(c.header.opcode).is_ok_and(|o| o.is_connect()));
    answer(&mut imp, t(5), &c, 0, MsgFlags::CONNECT_RECONNECT, 0, 0);
    assert_eq!(imp.kind(), ImportStateKind::Full);
    assert_eq!(imp.current_path(), PathId(1));
    // A notice naming no known path keeps the current one.
    imp.handle_target_restarted_at(t(6), &[PathId(7)]);
    assert_eq!(next(&mut imp, t(6)).path, PathId(1));
}

/// With four reply slots negotiated, four modifying requests go out at
/// once, each with its own tag; a fifth waits for a slot and takes the one
/// freed; `replied_xid` tells the target what has had its reply; a
/// -EINPROGRESS answer is resent at once, up to a bound.
#[test]
fn several_modifying_requests_in_flight_with_tags() {
    let mut cfg = ImportConfig::new("c0", Op::MdsConnect, Op::MdsDisconnect, P, vec![PathId(0)]);
    cfg.max_mod_rpcs = 4;
    let mut imp = Import::new(t(0), cfg);
    imp.connect(t(0));
    let c = next(&mut imp, t(0));
    let asked = Frame::parse(&bytes(&c.header, &c.body)).and_then(|f| f.deserialize::<ConnectData>());
    let asked = asked.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((asked.flags & crate::wire::connect_flags::MULTIMODRPCS != 0, asked.max_mod_rpcs), (true, 4));
    // The target grants 3.
    let mut h = Header::new(MsgKind::Reply, c.header.opcode, c.header.xid);
    (h.conn_cnt, h.handle) = (c.header.conn_cnt, ExportHandle(77));
    let granted =
        ConnectData { flags: crate::wire::connect_flags::MULTIMODRPCS, max_mod_rpcs: 3, ..ConnectData::default() };
    let body = rkyv::to_bytes::<rkyv::rancor::Error>(&granted).map(|b| b.to_vec()).unwrap_or_default();
    imp.handle_reply(t(1), &Frame::parse(&bytes(&h, &body)).unwrap_or_else(|e| panic!("{e}")));
    assert_eq!((imp.kind(), imp.max_mod_rpcs()), (ImportStateKind::Full, 3));
    let xids: Vec<Xid> = (0..5).map(|_| imp.submit(t(2), put()).unwrap_or_else(|e| panic!("{e}"))).collect();
    let sent: Vec<Outgoing> = std::iter::from_fn(|| imp.poll_transmit(t(2))).collect();
    assert_eq!(
        sent.iter().map(|o| (o.header.xid, o.header.tag)).collect::<Vec<_>>(),
        vec![(xids[0], 1), (xids[1], 2), (xids[2], 3)]
    );
    assert!(sent.iter().all(|o| o.header.replied_xid == Xid(xids[0].0 - 1)));
    // The second's reply frees slot 2: the fourth goes out in it.
    answer(&mut imp, t(3), &sent[1], 0, MsgFlags::EMPTY, 10, 0);
    let o = next(&mut imp, t(3));
    assert_eq!((o.header.xid, o.header.tag, o.header.replied_xid), (xids[3], 2, Xid(xids[0].0 - 1)));
    // The first's reply: now everything below the third has its reply.
    answer(&mut imp, t(4), &sent[0], 0, MsgFlags::EMPTY, 11, 0);
    let o5 = next(&mut imp, t(4));
    assert_eq!((o5.header.xid, o5.header.tag, o5.header.replied_xid), (xids[4], 1, Xid(xids[2].0 - 1)));
    // -EINPROGRESS: resent at once in the same slot, until the bound.
    for _ in 0..MAX_IN_PROGRESS_RESENDS {
        answer(&mut imp, t(5), &sent[2], -errno::EINPROGRESS, MsgFlags::EMPTY, 0, 0);
        let again = next(&mut imp, t(5));
        assert_eq!((again.header.xid, again.header.tag), (xids[2], 3));
        assert!(again.header.flags.contains(MsgFlags::RESEND));
    }
    answer(&mut imp, t(6), &sent[2], -errno::EINPROGRESS, MsgFlags::EMPTY, 0, 0);
    let final_reply = drain(&mut imp).into_iter().any(
        |e| matches!(e, ImportEvent::Reply { xid, header, .. } if xid == xids[2] && header.status == -errno::EINPROGRESS),
    );
    assert!(final_reply, "the answer is final after the bound");
    assert_eq!(imp.kind(), ImportStateKind::Full);
}

#[test]
fn a_restarted_client_connects_above_its_old_conn_cnt() {
    let mut cfg = ImportConfig::new("c0", Op::MdsConnect, Op::MdsDisconnect, P, vec![PathId(0)]);
    cfg.first_conn_cnt = 1000;
    let mut imp = Import::new(t(0), cfg);
    imp.connect(t(0));
    assert_eq!(next(&mut imp, t(0)).header.conn_cnt, ConnCnt(1001));
}

#[test]
fn a_deactivated_import_does_not_ping() {
    let mut imp = connected();
    let due = imp.poll_timeout().unwrap_or(t(0));
    imp.set_deactivated(t(1), true);
    assert_eq!(imp.poll_timeout(), None, "no ping timer");
    imp.handle_timeout(due);
    assert!(imp.poll_transmit(due).is_none(), "no ping sent");
    // Reactivated: pings resume an interval later.
    imp.set_deactivated(due, false);
    let next_ping = imp.poll_timeout().unwrap_or(t(0));
    assert!(next_ping > due);
    imp.handle_timeout(next_ping);
    assert_eq!(Op::try_from(next(&mut imp, next_ping).header.opcode), Ok(Op::ObdPing));
}

#[test]
fn a_reply_read_after_its_deadline_does_not_feed_the_timeouts() {
    // A stalled process (SIGSTOP for 20 s) reads a reply long after the
    // request's deadline: that round trip is the stall, not the network.
    let mut imp = connected();
    let read = || RequestSpec { kind: ReqKind::Read, ..put() };
    let _ = imp.submit(t(1_000), read());
    let o = next(&mut imp, t(1_000));
    let deadline = imp.poll_timeout().unwrap_or(t(0));
    assert!(deadline < t(1_000 + 11_250 + 10), "at_min 5 s: 11.25 s and the connect's round trip");
    answer(&mut imp, t(21_000), &o, 0, MsgFlags::EMPTY, 0, 0);
    assert_eq!(imp.stats().late_replies, 1);
    let _ = imp.submit(t(21_000), read());
    let _ = next(&mut imp, t(21_000));
    assert!(imp.poll_timeout().unwrap_or(t(0)) < t(21_000 + 11_250 + 10), "the deadline did not grow by the stall");
    // A slow reply inside its deadline is a real sample: the next deadline
    // allows for that network latency.
    let mut imp = connected();
    let _ = imp.submit(t(1_000), read());
    let o = next(&mut imp, t(1_000));
    answer(&mut imp, t(9_000), &o, 0, MsgFlags::EMPTY, 0, 0);
    assert_eq!(imp.stats().late_replies, 0);
    let _ = imp.submit(t(9_000), read());
    let _ = next(&mut imp, t(9_000));
    assert!(imp.poll_timeout().unwrap_or(t(0)) >= t(9_000 + 11_250 + 7_900));
}

#[test]
fn pings_go_on_while_a_ping_reply_is_missing() {
    // obd_timeout 10 s: pings every 2.5 s, eviction after 15 s of silence;
    // a ping deadline of 30 s must not silence the client that long.
    let mut cfg = ImportConfig::new("c0", Op::MdsConnect, Op::MdsDisconnect, P, vec![PathId(0)]);
    cfg.ping = crate::pinger::PingSettings { obd_timeout: Duration::from_secs(10), ..cfg.ping };
    cfg.at = AtSettings { at_min: Duration::from_secs(20), ..cfg.at };
    let mut imp = Import::new(t(0), cfg);
    imp.connect(t(0));
    let c = next(&mut imp, t(0));
    answer(&mut imp, t(1), &c, 0, MsgFlags::EMPTY, 0, 0);
    let mut pings = Vec::new();
    let mut now = t(1);
    while now < t(20_000) {
        now = imp.poll_timeout().unwrap_or(t(u64::MAX / 2));
        imp.handle_timeout(now);
        while let Some(o) = imp.poll_transmit(now) {
            assert_eq!(Op::try_from(o.header.opcode), Ok(Op::ObdPing));
            pings.push((now, o));
        }
    }
    assert_eq!(imp.kind(), ImportStateKind::Full, "no ping deadline passed yet");
    assert!(pings.len() >= 7, "a ping every 2.5 s although none was answered: {}", pings.len());
    for w in pings.windows(2) {
        assert!(w[1].0 - w[0].0 <= Duration::from_millis(2_501), "a gap between pings: {:?}", w[1].0 - w[0].0);
    }
    // A later ping's reply is matched (its last_committed is taken).
    let (at, o) = &pings[3];
    answer(&mut imp, *at + Duration::from_millis(1), o, 0, MsgFlags::EMPTY, 0, 9);
    assert_eq!(imp.last_committed(), Transno(9));
    // The first ping's deadline still disconnects, as Lustre's expired ping.
    let first = pings[0].0;
    while imp.kind() == ImportStateKind::Full {
        now = imp.poll_timeout().unwrap_or(t(u64::MAX / 2));
        imp.handle_timeout(now);
        while imp.poll_transmit(now).is_some_and(|o| Op::try_from(o.header.opcode) == Ok(Op::ObdPing)) {}
    }
    assert!(now - first >= Duration::from_secs(30) && now - first < Duration::from_secs(31), "{:?}", now - first);
}
