//! The LND conformance suite on `lo` and `tcp`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};

use lnet::conformance::{Fabric, TX_TIMEOUT};
use lnet::{LnetConfig, NetConfig, TcpConfig, Tunables};

fn tunables() -> Tunables {
    Tunables { transaction_timeout: TX_TIMEOUT, ..Tunables::default() }
}

/// Hands each test its own range of numbers, distinct across test processes.
fn unique() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    (std::process::id() % 4000) * 64 + NEXT.fetch_add(1, Ordering::Relaxed) % 64
}

/// In-process nodes `base+i@lo`.
struct LoFabric {
    base: u32,
}

impl Fabric for LoFabric {
    fn config(&self, node: usize) -> LnetConfig {
        LnetConfig { nets: vec![NetConfig::Lo { addr: self.base + node as u32 + 1 }], tunables: tunables() }
    }
}

fn lo() -> LoFabric {
    LoFabric { base: unique() * 16 }
}

/// TCP nodes on 127.X.Y.(i+1), one loopback "subnet" per test.
struct TcpFabric {
    net: [u8; 2],
}

impl Fabric for TcpFabric {
    fn config(&self, node: usize) -> LnetConfig {
        let addr = Ipv4Addr::new(127, self.net[0], self.net[1], node as u8 + 1);
        LnetConfig {
            nets: vec![NetConfig::Tcp(TcpConfig { addr, port: 7988, ..TcpConfig::default() })],
            tunables: tunables(),
        }
    }
}

fn tcp() -> TcpFabric {
    // Second octet 1..=250 (never 0: 127.0.0.x is for benchmarks), third
    // from the low bits; no arithmetic can overflow whatever the pid.
    let u = unique();
    TcpFabric { net: [((u >> 8) % 250) as u8 + 1, u as u8] }
}

mod on_lo {
    use super::*;
    lnet::conformance_tests!(lo());
}

mod on_tcp {
    use super::*;
    lnet::conformance_tests!(tcp());
}
