//! Size on MDT end to end: two library clients (two lnet nodes) against
//! real `sheen-mds` and `sheen-oss` processes. A stat answers the MDT's
//! size only when it is exact (the last writer closed cleanly and nobody
//! has the file open for writing); otherwise it glimpses the objects, so no
//! client ever sees a stale size.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::Ipv4Addr;

use client::{Sheen, Stat};
use common::*;
use lnet::{Lnet, LnetConfig, NetConfig, TcpConfig};
use ptlrpc::wire::mds::{attr_flags, open_flags};

/// This test file's lnet port (README "Tests").
const PORT: u16 = 8028;

fn exact(st: &Stat) -> bool {
    st.attr.flags & attr_flags::SOM_EXACT != 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stat_uses_the_mdt_size_only_when_exact() {
    let (_tmp, cluster, lnet_a) = up_on(0, PORT).await;
    let (x, y) = net();
    let lnet_b = Lnet::start(LnetConfig {
        nets: vec![NetConfig::Tcp(TcpConfig {
            addr: Ipv4Addr::new(127, x, y, 4),
            port: PORT,
            accept: false,
            ..TcpConfig::default()
        })],
        ..LnetConfig::default()
    })
    .await
    .unwrap();
    let a = Sheen::mount(&lnet_a, cluster.layout.mgs_nid(), "sheen").await.unwrap();
    let b = Sheen::mount(&lnet_b, cluster.layout.mgs_nid(), "sheen").await.unwrap();

    // A writes and closes: the MDT has the exact size, space and mtime.
    let data = pattern(100 * KIB + 3, 1);
    let f = a.create("/f", 0o644, two_stripes()).await.unwrap();
    a.write(&f, 0, &data).await.unwrap();
    let open_st = b.stat("/f").await.unwrap();
    assert!(!exact(&open_st), "open for writing: glimpsed");
    assert_eq!(open_st.size(), data.len() as u64);
    a.close(f).await.unwrap();
    let st = b.stat("/f").await.unwrap();
    assert!(exact(&st), "the lone writer closed cleanly");
    assert_eq!(st.size(), data.len() as u64);
    assert_eq!((st.blocks, st.attr.mtime), (open_st.blocks, open_st.attr.mtime), "what a glimpse says");
    assert!(st.blocks >= (data.len() as u64).div_ceil(512));

    // A file its open created is closed with what the writes' replies said
    // (no glimpse): sparse writes over both stripes, one rewriting part of
    // another, give the size, space and mtime a glimpse gives.
    let g = a.create("/g", 0o644, two_stripes()).await.unwrap();
    for (off, len) in [(0, 3000), (3 * 1024 * KIB as u64 + 5, 70 * KIB), (1000, 9000), (5 * KIB as u64, 1)] {
        a.write(&g, off, &pattern(len, 3)).await.unwrap();
    }
    let open_st = b.stat("/g").await.unwrap();
    assert!(!exact(&open_st));
    a.close(g).await.unwrap();
    let st = b.stat("/g").await.unwrap();
    assert!(exact(&st));
    assert_eq!(
        (st.size(), st.blocks, st.attr.mtime),
        (open_st.size(), open_st.blocks, open_st.attr.mtime),
        "what a glimpse says"
    );
    assert_eq!(st.size(), 3 * 1024 * KIB as u64 + 5 + 70 * KIB as u64);

    // A file open for writing is always glimpsed: B sees A's write before
    // A closes, never the MDT's older size.
    let f = a.open("/f", open_flags::RDWR, 0, None).await.unwrap();
    a.write(&f, 200 * KIB as u64, b"tail").await.unwrap();
    let st = b.stat("/f").await.unwrap();
    assert!(!exact(&st));
    assert_eq!(st.size(), 200 * KIB as u64 + 4);
    a.close(f).await.unwrap();
    let st = b.stat("/f").await.unwrap();
    assert!(exact(&st));
    assert_eq!(st.size(), 200 * KIB as u64 + 4);

    // A truncate leaves it inexact (and right).
    let fid = b.resolve("/f").await.unwrap();
    b.truncate_fid(fid, 5000).await.unwrap();
    let st = a.stat("/f").await.unwrap();
    assert_eq!((exact(&st), st.size()), (false, 5000));

    // Two overlapping writers: neither close vouches for the other's data,
    // and the size is still right.
    let fa = a.open("/f", open_flags::RDWR, 0, None).await.unwrap();
    let fb = b.open("/f", open_flags::RDWR, 0, None).await.unwrap();
    a.write(&fa, 0, b"a").await.unwrap();
    a.close(fa).await.unwrap();
    b.write(&fb, 300 * KIB as u64, b"b").await.unwrap();
    b.close(fb).await.unwrap();
    let st = a.stat("/f").await.unwrap();
    assert_eq!((exact(&st), st.size()), (false, 300 * KIB as u64 + 1));
    // The next lone writer makes it exact again.
    let f = a.open("/f", open_flags::WRONLY, 0, None).await.unwrap();
    a.close(f).await.unwrap();
    let st = b.stat("/f").await.unwrap();
    assert_eq!((exact(&st), st.size()), (true, 300 * KIB as u64 + 1));

    // A punched hole (no write handle) changes the space: inexact again.
    b.fallocate_fid(fid, 0, 64 * KIB as u64, true).await.unwrap();
    assert!(!exact(&a.stat("/f").await.unwrap()));

    a.unmount().await;
    b.unmount().await;
    lnet_a.shutdown();
    lnet_b.shutdown();
    cluster.stop();
}
