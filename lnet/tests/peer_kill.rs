//! kill -9 of a peer process in the middle of bulk transfers: the survivor
//! gets error events in bounded time, every credit comes back and every MD
//! is unlinked (counters return to zero).
//!
//! The peer is this same test binary re-run as a child (`child_sink`), so
//! the test needs nothing else built.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use lnet::{
    AckReq, EventKind, EventQueue, InsertPos, Lnet, LnetConfig, MatchSpec, MdBuffer, MdOptions, MdSpec, NetConfig,
    Target, TcpConfig, Threshold,
};

const PORT: u16 = 7990;
const PORTAL: u32 = 20;
const WAIT: Duration = Duration::from_secs(30);

fn config(addr: Ipv4Addr) -> LnetConfig {
    let mut c = LnetConfig {
        nets: vec![NetConfig::Tcp(TcpConfig { addr, port: PORT, ..TcpConfig::default() })],
        ..LnetConfig::default()
    };
    c.tunables.transaction_timeout = Duration::from_secs(10);
    c
}

/// The child: a node that sinks PUTs and serves GETs until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_sink() {
    let Ok(addr) = std::env::var("SHEEN_PEER_KILL_CHILD") else { return };
    let node = Lnet::start(config(addr.parse().unwrap())).await.unwrap();
    let q = EventQueue::new();
    let sink = MdBuffer::from_pages(node.pool(0).alloc(256).unwrap());
    node.attach(
        PORTAL,
        MatchSpec::any(),
        InsertPos::Tail,
        MdSpec::new(sink, q.clone())
            .options(MdOptions::OP_PUT | MdOptions::OP_GET | MdOptions::MANAGE_REMOTE)
            .threshold(Threshold::Infinite),
    )
    .unwrap();
    println!("READY {}", node.nid());
    loop {
        // Consume events so the queue does not grow; never returns.
        let _ = q.next().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_peer_mid_transfer_fails_and_frees_everything() {
    let p = std::process::id();
    let net = [(p >> 8) as u8 | 0x40, p as u8];
    let child_ip = Ipv4Addr::new(127, net[0], net[1], 2);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_sink", "--exact", "--nocapture", "--test-threads=1"])
        .env("SHEEN_PEER_KILL_CHILD", child_ip.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(WAIT, async {
        while let Ok(Some(l)) = lines.next_line().await {
            // libtest prints "test child_sink ... " on the same line first.
            if let Some(i) = l.find("READY ") {
                return Some(l[i..].to_string());
            }
        }
        None
    })
    .await
    .expect("child starts in time")
    .expect("child prints READY");
    let peer: lnet::Nid = ready["READY ".len()..].trim().parse().unwrap();

    let me = Lnet::start(config(Ipv4Addr::new(127, net[0], net[1], 1))).await.unwrap();
    let q = EventQueue::new();
    let in_flight = 32u64;
    let mut submitted = 0u64;
    let submit = |i: u64| {
        let pages = MdBuffer::from_pages(me.pool(0).alloc(256).unwrap());
        let md = me.bind(MdSpec::new(pages, q.clone()).threshold(Threshold::Ops(1))).unwrap();
        if i.is_multiple_of(2) {
            me.put(&md, Target::new(peer, PORTAL, i), AckReq::Ack, i).unwrap();
        } else {
            me.get(&md, Target::new(peer, PORTAL, i)).unwrap();
        }
    };
    while submitted < in_flight {
        submit(submitted);
        submitted += 1;
    }
    // Keep the pipe full until some transfers have completed, then kill the
    // peer with a full window in flight.
    let mut finished = 0u64;
    let mut errors = 0usize;
    while finished < 8 {
        let e = tokio::time::timeout(WAIT, q.next()).await.expect("progress before the kill");
        if e.unlinked {
            assert_eq!(e.status, Ok(()), "{e:?}");
            finished += 1;
            submit(submitted);
            submitted += 1;
        }
    }
    child.start_kill().unwrap();
    let killed_at = tokio::time::Instant::now();
    let _ = child.wait().await;

    while finished < submitted {
        let e = tokio::time::timeout(WAIT, q.next()).await.expect("every operation ends after the kill");
        if e.unlinked {
            finished += 1;
            errors += usize::from(e.status.is_err());
            assert!(matches!(e.kind, EventKind::Send | EventKind::Ack | EventKind::Reply));
        }
    }
    let took = killed_at.elapsed();
    assert!(errors > 0, "the death was reported as errors");
    assert!(took < Duration::from_secs(15), "errors arrived in bounded time ({took:?})");
    tokio::time::timeout(WAIT, me.wait_idle()).await.expect("survivor goes idle");
    let c = me.counters();
    assert!(c.is_idle(), "{c:?}");
    assert_eq!(c.mds, 0, "every MD unlinked");
    assert_eq!(me.pool(0).stats().in_use, 0, "every page back in the pool");
    let info = me.peers().into_iter().find(|i| i.nid == peer).unwrap();
    assert_eq!(info.credits, info.max_credits, "every credit returned");
    assert!(info.failures > 0);
}
