//! A node that does not accept connections (a client, a `sheen` command)
//! still gets every reply, over the connection it opened.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::time::Duration;

use lnet::{
    AckReq, EventKind, EventQueue, InsertPos, Lnet, LnetConfig, MatchSpec, MdBuffer, MdOptions, MdSpec, NetConfig,
    Target, TcpConfig,
};

const WAIT: Duration = Duration::from_secs(20);

async fn node(addr: Ipv4Addr, accept: bool) -> Lnet {
    Lnet::start(LnetConfig {
        nets: vec![NetConfig::Tcp(TcpConfig { addr, port: 7992, accept, ..TcpConfig::default() })],
        ..LnetConfig::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_come_back_over_the_clients_connection() {
    let p = std::process::id();
    let net = [(p >> 8) as u8 | 0x10, p as u8];
    let server = node(Ipv4Addr::new(127, net[0], net[1], 1), true).await;
    let client = node(Ipv4Addr::new(127, net[0], net[1], 2), false).await;

    // PUT with ACK, GET with REPLY and an LNet ping: every answer rides back.
    let qs = EventQueue::new();
    server
        .attach(
            5,
            MatchSpec::any(),
            InsertPos::Tail,
            MdSpec::new(MdBuffer::Inline(vec![7; 64]), qs.clone())
                .options(MdOptions::OP_PUT | MdOptions::OP_GET | MdOptions::MANAGE_REMOTE)
                .threshold(lnet::Threshold::Infinite),
        )
        .unwrap();
    let q = EventQueue::new();
    let m = client.bind(MdSpec::new(MdBuffer::Inline(vec![1; 64]), q.clone())).unwrap();
    client.put(&m, Target::new(server.nid(), 5, 0), AckReq::Ack, 0).unwrap();
    let g = client.bind(MdSpec::new(MdBuffer::Inline(vec![0; 64]), q.clone())).unwrap();
    client.get(&g, Target::new(server.nid(), 5, 0)).unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 4 {
        let e = tokio::time::timeout(WAIT, q.next()).await.unwrap();
        assert_eq!(e.status, Ok(()), "{e:?}");
        kinds.push(e.kind);
    }
    assert!(kinds.contains(&EventKind::Ack) && kinds.contains(&EventKind::Reply), "{kinds:?}");
    let info = client.ping(server.nid(), WAIT).await.unwrap();
    assert!(info.nids.contains(&server.nid()));

    // Nobody can open a connection to a node that does not accept: a send
    // to one that never connected fails fast instead of hanging.
    let silent = node(Ipv4Addr::new(127, net[0], net[1], 3), false).await;
    let q2 = EventQueue::new();
    let m2 = server.bind(MdSpec::new(MdBuffer::Inline(vec![1; 8]), q2.clone())).unwrap();
    server.put(&m2, Target::new(silent.nid(), 5, 0), AckReq::NoAck, 0).unwrap();
    let e = tokio::time::timeout(WAIT, q2.next()).await.unwrap();
    assert_eq!(e.kind, EventKind::Send);
    assert!(e.status.is_err(), "{e:?}");
}
