//! The LND conformance suite: one set of behaviours every LND must show,
//! generic over how nodes are configured ([`Fabric`]).
//!
//! `lo` and `tcp` run it in this crate's tests; `o2ib` runs it in
//! `hw-tests` on soft-RoCE. Each case starts its own nodes, waits only on
//! events (every wait bounded so a broken LND fails instead of hanging),
//! and ends by checking that credits, messages and MDs return to zero.
//! Compiled only with the `conformance` feature.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use crate::config::LnetConfig;
use crate::event::{Event, EventKind, EventQueue};
use crate::md::{MdBuffer, MdOptions, MdSpec, Threshold};
use crate::portal::{InsertPos, MatchPeer, MatchSpec};
use crate::{AckReq, Lnet, LnetError, Nid, Target};

/// How to configure node `i` of a test fabric; nodes of one fabric can reach each other.
pub trait Fabric: Send + Sync {
    fn config(&self, node: usize) -> LnetConfig;
}

/// Upper bound on any single wait in the suite.
pub const WAIT: Duration = Duration::from_secs(20);
/// Transaction timeout the fabrics should configure (bounds the peer-death cases).
pub const TX_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn start<F: Fabric + ?Sized>(f: &F, n: usize) -> Vec<Lnet> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(Lnet::start(f.config(i)).await.expect("node starts"));
    }
    v
}

pub async fn next(eq: &EventQueue) -> Event {
    tokio::time::timeout(WAIT, eq.next()).await.expect("event within the bound")
}

/// Collects events until `n` of them carry `unlinked`.
pub async fn until_unlinked(eq: &EventQueue, n: usize) -> Vec<Event> {
    let mut evs = Vec::new();
    let mut done = 0;
    while done < n {
        let e = next(eq).await;
        done += usize::from(e.unlinked);
        evs.push(e);
    }
    evs
}

pub async fn idle(nodes: &[Lnet]) {
    for n in nodes {
        tokio::time::timeout(WAIT, n.wait_idle()).await.expect("node goes idle");
        let c = n.counters();
        assert!(c.is_idle(), "{c:?}");
    }
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8).collect()
}

fn pages_with(node: &Lnet, data: &[u8]) -> MdBuffer {
    let mut b = MdBuffer::from_pages_len(node.pool(0).alloc_bytes(data.len()).unwrap(), data.len());
    b.write_at(0, data);
    b
}

fn bytes(b: &MdBuffer) -> Vec<u8> {
    let mut v = vec![0; b.len()];
    b.read_at(0, &mut v);
    v
}

const MIB: usize = 1 << 20;

pub async fn put_with_ack<F: Fabric + ?Sized>(f: &F) {
    let n = start(f, 2).await;
    let (a, b) = (&n[0], &n[1]);
    let (qa, qb) = (EventQueue::new(), EventQueue::new());
    let sink = a
        .attach(
            5,
            MatchSpec::bits(0x77),
            InsertPos::Tail,
            MdSpec::new(MdBuffer::from_pages(a.pool(0).alloc(256).unwrap()), qa.clone()).options(MdOptions::OP_PUT),
        )
        .unwrap();
    let data = pattern(1, MIB);
    let src = b.bind(MdSpec::new(pages_with(b, &data), qb.clone())).unwrap();
    b.put(&src, Target::new(a.nid(), 5, 0x77), AckReq::Ack, 42).unwrap();
    let e = next(&qa).await;
    assert_eq!(e.kind, EventKind::Put);
    assert_eq!(e.status, Ok(()));
    assert_eq!((e.mlength, e.rlength, e.hdr_data, e.peer), (MIB as u32, MIB as u32, 42, b.nid()));
    assert!(e.unlinked, "one-shot MD unlinks after its operation");
    assert!(e.md.same(&sink));
    drop(e);
    assert_eq!(bytes(&sink.into_buffer().unwrap()), data);
    let evs = until_unlinked(&qb, 1).await;
    let kinds: Vec<EventKind> = evs.iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&EventKind::Send) && kinds.contains(&EventKind::Ack), "{kinds:?}");
    assert!(evs.iter().all(|e| e.status.is_ok()));
    let ack = evs.iter().find(|e| e.kind == EventKind::Ack).unwrap();
    assert_eq!(ack.mlength, MIB as u32);
    idle(&n).await;
    assert_eq!(b.counters().mds + a.counters().mds, 0);
}

pub async fn get_reply<F: Fabric + ?Sized>(f: &F) {
    let n = start(f, 2).await;
    let (a, b) = (&n[0], &n[1]);
    let (qa, qb) = (EventQueue::new(), EventQueue::new());
    let data = pattern(2, MIB);
    a.attach(
        6,
        MatchSpec::bits(9),
        InsertPos::Tail,
        MdSpec::new(pages_with(a, &data), qa.clone()).options(MdOptions::OP_GET),
    )
    .unwrap();
    let sink = b.bind(MdSpec::new(MdBuffer::from_pages(b.pool(0).alloc(256).unwrap()), qb.clone())).unwrap();
    b.get(&sink, Target::new(a.nid(), 6, 9)).unwrap();
    let evs = until_unlinked(&qb, 1).await;
    let reply = evs.iter().find(|e| e.kind == EventKind::Reply).expect("a REPLY event");
    assert_eq!(reply.status, Ok(()));
    assert_eq!(reply.mlength, MIB as u32);
    assert!(evs.iter().any(|e| e.kind == EventKind::Send));
    drop(evs);
    assert_eq!(bytes(&sink.into_buffer().unwrap()), data);
    let e = next(&qa).await;
    assert_eq!((e.kind, e.mlength, e.peer, e.unlinked), (EventKind::Get, MIB as u32, b.nid(), true));
    idle(&n).await;
}

pub async fn get_without_match_fails_fast<F: Fabric + ?Sized>(f: &F) {
    let n = start(f, 2).await;
    let (a, b) = (&n[0], &n[1]);
    let q = EventQueue::new();
    let sink = b.bind(MdSpec::new(MdBuffer::Inline(vec![0; 64]), q.clone())).unwrap();
    b.get(&sink, Target::new(a.nid(), 7, 1)).unwrap();
    let evs = until_unlinked(&q, 1).await;
    let reply = evs.iter().find(|e| e.kind == EventKind::Reply).expect("a REPLY event");
    assert!(matches!(reply.status, Err(LnetError::NoMatch { portal: 7, .. })), "{:?}", reply.status);
    idle(&n).await;
    assert_eq!(a.counters().drop_count, 1);
}

pub async fn unmatched_put_is_dropped<F: Fabric + ?Sized>(f: &F) {
    let n = start(f, 2).await;
    let (a, b) = (&n[0], &n[1]);
    let (qa, qb) = (EventQueue::new(), EventQueue::new());
    let m1 = b.bind(MdSpec::new(MdBuffer::Inline(vec![1; 100]), qb.clone())).unwrap();
    b.put(&m1, Target::new(a.nid(), 8, 1), AckReq::NoAck, 0).unwrap();
    // A matching PUT behind it on the same path proves the first was parsed.
    a.attach(
        8,
        MatchSpec::bits(2),
        InsertPos::Tail,
        MdSpec::new(MdBuffer::Inline(vec![0; 100]), qa.clone()).options(MdOptions::OP_PUT),
    )
    .unwrap();
    let m2 = b.bind(MdSpec::new(MdBuffer::Inline(vec![2; 100]), qb.clone())).unwrap();
    b.put(&m2, Target::new(a.nid(), 8, 2), AckReq::NoAck, 0).unwrap();
    let e = next(&qa).await;
    assert_eq!((e.kind, e.match_bits), (EventKind::Put, 2));
    let evs = until_unlinked(&qb, 2).await;
    assert!(evs.iter().all(|e| e.kind == EventKind::Send && e.status.is_ok()));
    idle(&n).await;
    assert_eq!(a.counters().drop_count, 1);
    let pa = a.peers().into_iter().find(|p| p.nid == b.nid()).unwrap();
    assert_eq!(pa.counters.drop_count, 1);
}

pub async fn match_bits_peers_and_order<F: Fabric + ?Sized>(f: &F) {
    let n = start(f, 3).await;
    let (a, b, c) = (&n[0], &n[1], &n[2]);
    let q = EventQueue::new();
    let md = |tag: u64| MdSpec::new(MdBuffer::Inline(vec![0; 16]), q.clone()).options(MdOptions::OP_PUT).user_ptr(tag);
    // Only from c, bits 0x10 with the low nibble ignored.
    a.attach(
        9,
        MatchSpec { peer: MatchPeer::Nid(c.nid()), match_bits: 0x10, ignore_bits: 0xf },
        InsertPos::Tail,
        md(1),
    )
    .unwrap();
    // Anything: searched first (head) for the second, last for the third.
    a.attach(9, MatchSpec::any(), InsertPos::Tail, md(3)).unwrap();
    a.attach(9, MatchSpec::bits(0x55), InsertPos::Head, md(2)).unwrap();
    let qs = EventQueue::new();
    let send = |from: &Lnet, bits: u64| {
        let m = from.bind(MdSpec::new(MdBuffer::Inline(vec![0xaa; 16]), qs.clone())).unwrap();
        from.put(&m, Target::new(a.nid(), 9, bits), AckReq::NoAck, bits).unwrap();
    };
    send(b, 0x13); // not from c: skips entry 1, lands in the catch-all (3)
    assert_eq!(next(&q).await.md.user_ptr(), 3);
    send(c, 0x1e); // from c, bits match under the mask: entry 1
    assert_eq!(next(&q).await.md.user_ptr(), 1);
    send(b, 0x55); // head entry wins
    assert_eq!(next(&q).await.md.user_ptr(), 2);
    until_unlinked(&qs, 3).await;
    idle(&n).await;
}

pub async fn request_buffer_offsets<F: Fabric + ?Sized>(f: &F) {
    let n = start(f, 2).await;
    let (a, b) = (&n[0], &n[1]);
    let q = EventQueue::new();
    a.attach(
        10,
        MatchSpec::any(),
        InsertPos::Tail,
        MdSpec::new(MdBuffer::Inline(vec![0; 4096]), q.clone())
            .options(MdOptions::OP_PUT)
            .threshold(Threshold::Infinite)
            .min_free(1024),
    )
    .unwrap();
    let qs = EventQueue::new();
    for i in 0..4u8 {
        let m = b.bind(MdSpec::new(MdBuffer::Inline(vec![i; 1000]), qs.clone())).unwrap();
        b.put(&m, Target::new(a.nid(), 10, 0), AckReq::NoAck, u64::from(i)).unwrap();
    }
    for i in 0..4u32 {
        let e = next(&q).await;
        assert_eq!((e.offset, e.mlength, e.hdr_data), (i * 1000, 1000, u64::from(i)));
        let mut got = vec![0u8; 1000];
        e.md.lock().read_at(e.offset as usize, &mut got);
        assert!(got.iter().all(|&x| x == i as u8));
        // 96 bytes left after the 4th, below min_free: the buffer retires.
        assert_eq!(e.unlinked, i == 3);
    }
    until_unlinked(&qs, 4).await;
    idle(&n).await;
    assert_eq!(a.counters().mds, 0);
}

pub async fn truncation<F: Fabric + ?Sized>(f: &F) {
    let n = start(f, 2).await;
    let (a, b) = (&n[0], &n[1]);
    let q = EventQueue::new();
    a.attach(
        11,
        MatchSpec::bits(1),
        InsertPos::Tail,
        MdSpec::new(MdBuffer::Inline(vec![0; 100]), q.clone()).options(MdOptions::OP_PUT | MdOptions::TRUNCATE),
    )
    .unwrap();
    a.attach(
        11,
        MatchSpec::bits(2),
        InsertPos::Tail,
        MdSpec::new(MdBuffer::Inline(vec![0; 100]), q.clone()).options(MdOptions::OP_PUT),
    )
    .unwrap();
    let qs = EventQueue::new();
    for bits in [2u64, 1] {
        let m = b.bind(MdSpec::new(MdBuffer::Inline(vec![7; 1000]), qs.clone())).unwrap();
        b.put(&m, Target::new(a.nid(), 11, bits), AckReq::NoAck, 0).unwrap();
    }
    let e = next(&q).await;
    assert_eq!((e.match_bits, e.rlength, e.mlength), (1, 1000, 100), "too big without TRUNCATE is dropped");
    until_unlinked(&qs, 2).await;
    idle(&n).await;
    assert_eq!(a.counters().drop_count, 1);
}

pub async fn unlink_semantics<F: Fabric + ?Sized>(f: &F) {
    let n = start(f, 2).await;
    let (a, b) = (&n[0], &n[1]);
    let q = EventQueue::new();
    let idle_md = a.bind(MdSpec::new(MdBuffer::Inline(vec![0; 8]), q.clone())).unwrap();
    a.unlink(&idle_md).unwrap();
    let e = next(&q).await;
    assert_eq!((e.kind, e.unlinked), (EventKind::Unlink, true));
    assert_eq!(a.unlink(&idle_md), Err(LnetError::Unlinked));
    // A PUT whose target never ACKs (ACK_DISABLE) waits; unlinking ends the wait.
    let qa = EventQueue::new();
    a.attach(
        12,
        MatchSpec::any(),
        InsertPos::Tail,
        MdSpec::new(MdBuffer::Inline(vec![0; 8]), qa.clone()).options(MdOptions::OP_PUT | MdOptions::ACK_DISABLE),
    )
    .unwrap();
    let qb = EventQueue::new();
    let m = b.bind(MdSpec::new(MdBuffer::Inline(vec![1; 8]), qb.clone())).unwrap();
    b.put(&m, Target::new(a.nid(), 12, 0), AckReq::Ack, 0).unwrap();
    assert_eq!(next(&qa).await.kind, EventKind::Put);
    let e = next(&qb).await;
    assert_eq!((e.kind, e.unlinked), (EventKind::Send, false));
    b.unlink(&m).unwrap();
    let e = next(&qb).await;
    assert_eq!((e.kind, e.status.clone(), e.unlinked), (EventKind::Ack, Err(LnetError::Unlinked), true));
    idle(&n).await;
    assert_eq!(b.counters().mds, 0);
}

pub async fn credits_queue_in_order<F: Fabric + ?Sized>(f: &F, count: u64) {
    let n = start(f, 2).await;
    let (a, b) = (&n[0], &n[1]);
    let q = EventQueue::new();
    a.attach(
        13,
        MatchSpec::any(),
        InsertPos::Tail,
        MdSpec::new(MdBuffer::Inline(vec![0; 64]), q.clone())
            .options(MdOptions::OP_PUT | MdOptions::MANAGE_REMOTE)
            .threshold(Threshold::Infinite),
    )
    .unwrap();
    let qs = EventQueue::new();
    for i in 0..count {
        let m = b.bind(MdSpec::new(MdBuffer::Inline(vec![0; 64]), qs.clone())).unwrap();
        b.put(&m, Target::new(a.nid(), 13, 0), AckReq::NoAck, i).unwrap();
    }
    for i in 0..count {
        assert_eq!(next(&q).await.hdr_data, i, "messages beyond the credits queue in order");
    }
    until_unlinked(&qs, count as usize).await;
    idle(&n).await;
    let p = b.peers().into_iter().find(|p| p.nid == a.nid()).unwrap();
    assert_eq!(p.counters.send_count, count);
    assert_eq!(p.credits, p.max_credits);
}

pub async fn many_peers_concurrently<F: Fabric + ?Sized>(f: &F, per_pair: u64) {
    let n = start(f, 3).await;
    let mut qs = Vec::new();
    for node in &n {
        let q = EventQueue::new();
        node.attach(
            14,
            MatchSpec::any(),
            InsertPos::Tail,
            MdSpec::new(MdBuffer::Inline(vec![0; 256]), q.clone())
                .options(MdOptions::OP_PUT | MdOptions::MANAGE_REMOTE)
                .threshold(Threshold::Infinite),
        )
        .unwrap();
        qs.push(q);
    }
    let sent = EventQueue::new();
    for (i, from) in n.iter().enumerate() {
        for (j, to) in n.iter().enumerate() {
            if i != j {
                for k in 0..per_pair {
                    let m = from.bind(MdSpec::new(MdBuffer::Inline(vec![i as u8; 200]), sent.clone())).unwrap();
                    from.put(&m, Target::new(to.nid(), 14, 0), AckReq::Ack, k).unwrap();
                }
            }
        }
    }
    for (j, q) in qs.iter().enumerate() {
        let mut per_src = [0u64; 3];
        for _ in 0..2 * per_pair {
            let e = next(q).await;
            let src = n.iter().position(|x| x.nid() == e.peer).unwrap();
            assert_ne!(src, j);
            per_src[src] += 1;
        }
        assert_eq!(per_src.iter().sum::<u64>(), 2 * per_pair);
    }
    let evs = until_unlinked(&sent, (6 * per_pair) as usize).await;
    assert!(evs.iter().all(|e| e.status.is_ok()));
    idle(&n).await;
}

pub async fn self_send<F: Fabric + ?Sized>(f: &F) {
    let n = start(f, 1).await;
    let a = &n[0];
    let q = EventQueue::new();
    a.attach(
        15,
        MatchSpec::any(),
        InsertPos::Tail,
        MdSpec::new(MdBuffer::Inline(vec![0; 32]), q.clone()).options(MdOptions::OP_PUT).threshold(Threshold::Ops(2)),
    )
    .unwrap();
    let qs = EventQueue::new();
    for to in [Nid::LO, a.nid()] {
        let m = a.bind(MdSpec::new(MdBuffer::Inline(vec![5; 16]), qs.clone())).unwrap();
        a.put(&m, Target::new(to, 15, 0), AckReq::Ack, 0).unwrap();
    }
    let peers: Vec<Nid> = vec![next(&q).await.peer, next(&q).await.peer];
    assert!(peers.contains(&Nid::LO) && peers.contains(&a.nid()), "{peers:?}");
    let evs = until_unlinked(&qs, 2).await;
    assert_eq!(evs.iter().filter(|e| e.kind == EventKind::Ack).count(), 2);
    idle(&n).await;
}

/// LNet ping: a peer answers with its NID list; nothing stays in use.
pub async fn ping_peer<F: Fabric + ?Sized>(f: &F) {
    let n = start(f, 2).await;
    let (a, b) = (&n[0], &n[1]);
    let info = b.ping(a.nid(), WAIT).await.expect("ping answered");
    assert!(info.nids.contains(&a.nid()), "{info:?}");
    idle(&n).await;
    assert_eq!(b.counters().mds, 0);
}

/// A peer disappears while bulk PUTs to it are in flight: every operation
/// ends with an event, in bounded time, and nothing stays in use.
///
/// The peer never ACKs (its MD has `ACK_DISABLE`), so however fast the
/// LND, every PUT is still waiting on the peer when it dies.
pub async fn peer_death_mid_transfer<F: Fabric + ?Sized>(f: &F) {
    let n = start(f, 2).await;
    let (a, b) = (&n[0], &n[1]);
    let qa = EventQueue::new();
    let sink = MdBuffer::from_pages(a.pool(0).alloc(256).unwrap());
    let opts = MdOptions::OP_PUT | MdOptions::MANAGE_REMOTE | MdOptions::ACK_DISABLE;
    a.attach(
        16,
        MatchSpec::any(),
        InsertPos::Tail,
        MdSpec::new(sink, qa.clone()).options(opts).threshold(Threshold::Infinite),
    )
    .unwrap();
    let qb = EventQueue::new();
    let count = 32usize;
    for i in 0..count as u64 {
        let m = b.bind(MdSpec::new(MdBuffer::from_pages(b.pool(0).alloc(256).unwrap()), qb.clone())).unwrap();
        b.put(&m, Target::new(a.nid(), 16, 0), AckReq::Ack, i).unwrap();
    }
    for _ in 0..4 {
        assert_eq!(next(&qa).await.kind, EventKind::Put);
    }
    a.shutdown();
    let started = tokio::time::Instant::now();
    let evs = until_unlinked(&qb, count).await;
    assert!(started.elapsed() <= TX_TIMEOUT + Duration::from_secs(5), "errors arrive in bounded time");
    // Every PUT was waiting on the dead peer, so each MD saw the error in
    // one of its events (the ACK, or the SEND when the send itself failed);
    // which one comes last depends on timing.
    let mut failed = std::collections::HashSet::new();
    for e in evs.iter().filter(|e| e.status.is_err()) {
        assert!(matches!(e.kind, EventKind::Ack | EventKind::Send), "{e:?}");
        failed.insert(e.md.cookie());
    }
    assert_eq!(failed.len(), count, "the death was reported for every operation");
    drop(evs);
    tokio::time::timeout(WAIT, b.wait_idle()).await.expect("survivor goes idle");
    let c = b.counters();
    assert!(c.is_idle() && c.mds == 0, "{c:?}");
    assert_eq!(b.pool(0).stats().in_use, 0, "every page back in the pool");
    let p = b.peers().into_iter().find(|p| p.nid == a.nid()).unwrap();
    assert!(p.failures > 0 && p.health < crate::peer::HEALTH_MAX);
}

/// Declares one `#[tokio::test]` per conformance case for a fabric expression.
#[macro_export]
macro_rules! conformance_tests {
    ($fabric:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn put_with_ack() {
            $crate::conformance::put_with_ack(&$fabric).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn get_reply() {
            $crate::conformance::get_reply(&$fabric).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn get_without_match_fails_fast() {
            $crate::conformance::get_without_match_fails_fast(&$fabric).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn unmatched_put_is_dropped() {
            $crate::conformance::unmatched_put_is_dropped(&$fabric).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn match_bits_peers_and_order() {
            $crate::conformance::match_bits_peers_and_order(&$fabric).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn request_buffer_offsets() {
            $crate::conformance::request_buffer_offsets(&$fabric).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn truncation() {
            $crate::conformance::truncation(&$fabric).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn unlink_semantics() {
            $crate::conformance::unlink_semantics(&$fabric).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn credits_queue_in_order() {
            $crate::conformance::credits_queue_in_order(&$fabric, 200).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn many_peers_concurrently() {
            $crate::conformance::many_peers_concurrently(&$fabric, 50).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn ping_peer() {
            $crate::conformance::ping_peer(&$fabric).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn self_send() {
            $crate::conformance::self_send(&$fabric).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn peer_death_mid_transfer() {
            $crate::conformance::peer_death_mid_transfer(&$fabric).await;
        }
    };
}
