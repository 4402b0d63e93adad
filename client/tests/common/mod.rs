//! Shared by the client's process tests: a one-node file system of real
//! `sheen-mds` and `sheen-oss` processes on a loopback /24 of its own, and a
//! client lnet node. Waits are bounded (ready lines, the MDT's own wait).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;

use client::up::{Cluster, Layout};
use lnet::{Lnet, LnetConfig, NetConfig, TcpConfig};
use ptlrpc::wire::mds::StripeSpec;

pub const KIB: usize = 1024;

pub fn net() -> (u8, u8) {
    let p = std::process::id();
    (((p >> 8) as u8) | 0x40, p as u8)
}

/// Builds `sheen-mds` and `sheen-oss` into this test's target directory
/// when they are not there (`cargo test -p client` alone does not).
fn ensure_daemons() {
    if client::up::find_binary("sheen-mds").is_ok() && client::up::find_binary("sheen-oss").is_ok() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let target_dir = exe.ancestors().nth(3).unwrap();
    let st = std::process::Command::new(env!("CARGO"))
        .args(["build", "-p", "mdt", "-p", "ost", "--bin", "sheen-mds", "--bin", "sheen-oss", "--target-dir"])
        .arg(target_dir)
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
        .status()
        .unwrap();
    assert!(st.success(), "building sheen-mds and sheen-oss");
}

pub async fn up(tag: u8) -> (tempfile::TempDir, Cluster, Lnet) {
    ensure_daemons();
    let (a, b) = net();
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout {
        fsname: "sheen".into(),
        // The pid picks the /24, the tag the hosts in it, so two test
        // processes never share an address.
        mds_addr: Ipv4Addr::new(127, a, b, tag.wrapping_mul(4).wrapping_add(1)),
        oss_addr: Ipv4Addr::new(127, a, b, tag.wrapping_mul(4).wrapping_add(2)),
        port: 7998,
        mds_admin_port: 0,
        oss_admin_port: 0,
    };
    let c = Cluster::start(layout.clone(), tmp.path(), 200, false).await.unwrap_or_else(|e| {
        let log = |n: &str| std::fs::read_to_string(tmp.path().join(n)).unwrap_or_default();
        panic!("{e}\nmds.log:\n{}\noss.log:\n{}", log("mds.log"), log("oss.log"))
    });
    let me = Ipv4Addr::new(127, a, b, tag.wrapping_mul(4).wrapping_add(3));
    let lnet = Lnet::start(LnetConfig {
        nets: vec![NetConfig::Tcp(TcpConfig { addr: me, port: layout.port, accept: false, ..TcpConfig::default() })],
        ..LnetConfig::default()
    })
    .await
    .unwrap();
    (tmp, c, lnet)
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8).collect()
}

pub fn two_stripes() -> Option<StripeSpec> {
    Some(StripeSpec { stripe_size: 64 << 10, stripe_count: 2, stripe_offset: -1, pool: String::new() })
}
