//! Garbage, lies and truncation on a tcp LND socket: the connection is
//! closed with a counter, affected MDs get error events, nothing panics or
//! hangs, and the node keeps serving well-behaved peers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use lnet::wire::{HDR_SIZE, LnetHdr, MsgBody};
use lnet::{
    AckReq, EventKind, EventQueue, InsertPos, Lnet, LnetConfig, MatchSpec, MdBuffer, MdOptions, MdSpec, NetConfig, Nid,
    Target, TcpConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const PORT: u16 = 7989;
const WAIT: Duration = Duration::from_secs(20);

fn subnet() -> [u8; 2] {
    let p = std::process::id();
    [(p >> 8) as u8 | 0x80, p as u8]
}

async fn node(net: [u8; 2], host: u8) -> Lnet {
    let addr = Ipv4Addr::new(127, net[0], net[1], host);
    Lnet::start(LnetConfig {
        nets: vec![NetConfig::Tcp(TcpConfig { addr, port: PORT, ..TcpConfig::default() })],
        ..LnetConfig::default()
    })
    .await
    .unwrap()
}

async fn raw_from(net: [u8; 2], host: u8, to: &Lnet) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, net[0], net[1], host), 0))).unwrap();
    s.connect(SocketAddr::V4(SocketAddrV4::new(to.nid().ipv4().unwrap(), PORT))).await.unwrap()
}

fn nid(net: [u8; 2], host: u8) -> Nid {
    format!("127.{}.{}.{host}@tcp", net[0], net[1]).parse().unwrap()
}

/// Waits for the server to close the connection (EOF or reset).
async fn closed(mut s: TcpStream) {
    let mut b = [0u8; 256];
    tokio::time::timeout(WAIT, async {
        loop {
            match s.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("server closes the connection");
}

async fn hello(s: &mut TcpStream, me: Nid, to: Nid) {
    let h = LnetHdr { src: me, dst: to, payload_len: 0, body: MsgBody::Hello { incarnation: 1 } };
    s.write_all(&h.encode()).await.unwrap();
    let mut b = [0u8; HDR_SIZE];
    s.read_exact(&mut b).await.unwrap();
    assert!(matches!(LnetHdr::decode(&b, 0).unwrap().body, MsgBody::Hello { .. }));
}

fn proto_errors(n: &Lnet) -> u64 {
    n.lnd_stats().iter().map(|(_, s)| s.proto_errors).sum()
}

/// The node still talks to a well-behaved peer.
async fn still_serves(server: &Lnet, good: &Lnet) {
    let q = EventQueue::new();
    server
        .attach(
            3,
            MatchSpec::bits(99),
            InsertPos::Tail,
            MdSpec::new(MdBuffer::Inline(vec![0; 8]), q.clone()).options(MdOptions::OP_PUT),
        )
        .unwrap();
    let m = good.bind(MdSpec::new(MdBuffer::Inline(vec![1; 8]), EventQueue::new())).unwrap();
    good.put(&m, Target::new(server.nid(), 3, 99), AckReq::NoAck, 0).unwrap();
    let e = tokio::time::timeout(WAIT, q.next()).await.unwrap();
    assert_eq!((e.kind, e.status), (EventKind::Put, Ok(())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_hello() {
    let net = subnet();
    let (server, good) = (node(net, 1).await, node(net, 2).await);
    let mut s = raw_from(net, 9, &server).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: sheen\r\n\r\n.................................................")
        .await
        .unwrap();
    closed(s).await;
    assert_eq!(proto_errors(&server), 1);
    still_serves(&server, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_hello_is_rejected() {
    let net = subnet();
    let (server, good) = (node(net, 11).await, node(net, 12).await);
    // Connects from .19 but claims to be .12.
    let mut s = raw_from(net, 19, &server).await;
    let h = LnetHdr { src: good.nid(), dst: server.nid(), payload_len: 0, body: MsgBody::Hello { incarnation: 1 } };
    s.write_all(&h.encode()).await.unwrap();
    closed(s).await;
    assert_eq!(proto_errors(&server), 1);
    still_serves(&server, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_magic_and_absurd_length_close_the_connection() {
    let net = subnet();
    let (server, good) = (node(net, 21).await, node(net, 22).await);
    let me = nid(net, 29);
    let mut s = raw_from(net, 29, &server).await;
    hello(&mut s, me, server.nid()).await;
    s.write_all(&[0xffu8; HDR_SIZE]).await.unwrap();
    closed(s).await;
    assert_eq!(proto_errors(&server), 1);

    let mut s = raw_from(net, 29, &server).await;
    hello(&mut s, me, server.nid()).await;
    let h = LnetHdr {
        src: me,
        dst: server.nid(),
        payload_len: 1 << 30,
        body: MsgBody::Put { portal: 3, match_bits: 1, offset: 0, hdr_data: 0, ack_wmd: None },
    };
    let mut b = h.encode();
    // The encoder writes what it is told; the decoder must refuse it.
    b[28..32].copy_from_slice(&(1u32 << 30).to_le_bytes());
    s.write_all(&b).await.unwrap();
    closed(s).await;
    assert_eq!(proto_errors(&server), 2);
    let peer = server.peers().into_iter().find(|p| p.nid == me).unwrap();
    assert!(peer.counters.drop_count >= 2, "{peer:?}");
    still_serves(&server, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_payload_fails_the_md() {
    let net = subnet();
    let (server, good) = (node(net, 31).await, node(net, 32).await);
    let q = EventQueue::new();
    server
        .attach(
            4,
            MatchSpec::bits(5),
            InsertPos::Tail,
            MdSpec::new(MdBuffer::from_pages(server.pool(0).alloc(1).unwrap()), q.clone()).options(MdOptions::OP_PUT),
        )
        .unwrap();
    let me = nid(net, 39);
    let mut s = raw_from(net, 39, &server).await;
    hello(&mut s, me, server.nid()).await;
    let h = LnetHdr {
        src: me,
        dst: server.nid(),
        payload_len: 4000,
        body: MsgBody::Put { portal: 4, match_bits: 5, offset: 0, hdr_data: 0, ack_wmd: Some(7) },
    };
    s.write_all(&h.encode()).await.unwrap();
    s.write_all(&[0xabu8; 1500]).await.unwrap();
    drop(s); // the peer vanishes mid-payload
    let e = tokio::time::timeout(WAIT, q.next()).await.unwrap();
    assert_eq!(e.kind, EventKind::Put);
    assert!(e.status.is_err(), "a half-received PUT is an error: {e:?}");
    assert!(e.unlinked);
    drop(e);
    tokio::time::timeout(WAIT, server.wait_idle()).await.unwrap();
    assert_eq!(server.counters().mds, 0);
    assert_eq!(server.pool(0).stats().in_use, 0);
    still_serves(&server, &good).await;
}
