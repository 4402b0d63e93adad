//! Bulk over o2ib is zero-copy: the bytes a peer RDMA-writes are read from
//! the receiver's MD pages, at the same addresses the receiver registered.
//! Also: on a host without RDMA, starting o2ib fails clearly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lnet::conformance::{next, start};
use lnet::lnd::o2ib;
use lnet::{
    AckReq, EventKind, EventQueue, InsertPos, Lnet, LnetConfig, LnetError, MatchSpec, MdBuffer, MdOptions, MdSpec,
    NetConfig, O2ibConfig, PAGE_SIZE, Target,
};

const MIB: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rdma_write_lands_in_the_registered_sink_pages() {
    let Some(f) = hw_tests::fabric() else { return };
    let n = start(&f, 2).await;
    let (a, b) = (&n[0], &n[1]);
    let qa = EventQueue::new();
    let pages = a.pool(0).alloc(256).unwrap();
    let before: Vec<usize> = pages.iter().map(|p| p.addr()).collect();
    let sink = a
        .attach(
            5,
            MatchSpec::bits(1),
            InsertPos::Tail,
            MdSpec::new(MdBuffer::from_pages(pages), qa.clone()).options(MdOptions::OP_PUT),
        )
        .unwrap();
    let data: Vec<u8> = (0..MIB).map(|i| (i * 7 % 251) as u8).collect();
    let mut src = MdBuffer::from_pages(b.pool(0).alloc(256).unwrap());
    src.write_at(0, &data);
    let (sa0, sb0) = (o2ib::stats(a.nid()).unwrap(), o2ib::stats(b.nid()).unwrap());
    let qb = EventQueue::new();
    let m = b.bind(MdSpec::new(src, qb.clone())).unwrap();
    b.put(&m, Target::new(a.nid(), 5, 1), AckReq::NoAck, 0).unwrap();
    let e = next(&qa).await;
    assert_eq!((e.kind, e.mlength, e.status.clone()), (EventKind::Put, MIB as u32, Ok(())));
    drop(e);
    let (sa, sb) = (o2ib::stats(a.nid()).unwrap(), o2ib::stats(b.nid()).unwrap());
    assert_eq!(sb.rdma_write_bytes - sb0.rdma_write_bytes, MIB as u64, "the payload went by RDMA WRITE");
    assert_eq!(sa.bounce_bytes + sb.bounce_bytes, sa0.bounce_bytes + sb0.bounce_bytes, "no bounce buffer");
    assert_eq!(sb.immediate_bytes, sb0.immediate_bytes, "no copy into a message");
    assert_eq!(sa.zero_copy_sinks - sa0.zero_copy_sinks, 1, "the sink pages were exposed directly");
    let buf = sink.into_buffer().unwrap();
    let after: Vec<usize> = buf.pages().unwrap().iter().map(|p| p.addr()).collect();
    assert_eq!(before, after, "same pages, same addresses");
    for addr in &after {
        assert!(
            sa.registered.iter().any(|&(s, l)| *addr >= s && addr + PAGE_SIZE <= s + l),
            "page {addr:#x} lies in a slab a registered: {:?}",
            sa.registered
        );
    }
    let mut got = vec![0u8; MIB];
    for (i, p) in buf.pages().unwrap().iter().enumerate() {
        got[i * PAGE_SIZE..(i + 1) * PAGE_SIZE].copy_from_slice(p.as_slice());
    }
    assert!(got == data, "the registered pages hold the peer's bytes");
    println!(
        "zero-copy: {} bytes RDMA-written into {} registered pages at unchanged addresses {:#x}..",
        MIB,
        after.len(),
        after[0]
    );
}

#[tokio::test]
async fn o2ib_unavailable_is_a_clear_error() {
    if hw_tests::in_guest() {
        eprintln!("skipped: this host has RDMA");
        return;
    }
    let cfg = LnetConfig { nets: vec![NetConfig::O2ib(O2ibConfig::default())], ..LnetConfig::default() };
    match Lnet::start(cfg).await {
        Err(LnetError::LndUnavailable("o2ib", why)) => {
            assert!(why.starts_with("o2ib unavailable: "), "{why}");
            println!("as expected: {why}");
        }
        other => panic!("expected o2ib to be unavailable here, got {other:?}"),
    }
}
