//! # hw-tests — tests that need an RDMA device
//!
//! Holds the soft-RoCE (rdma_rxe) QEMU guest harness (`softroce-run`,
//! `run-rdma-tests`), the o2ib runs of the LND conformance suite and the
//! zero-copy test (`tests/`), and `o2ib-bench` (brw over o2ib beside
//! perftest). Everything here runs for real only inside the guest
//! (`SOFTROCE_GUEST=1`); elsewhere each test says it skipped.
//!
//! This library gives the tests their fabric: nodes are separate LNet
//! instances in one process on the guest's addresses (`SOFTROCE_IPS`,
//! 10.11.0.1.. on the rxe netdev), each test on its own rdma_cm port.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU16, Ordering};

use lnet::conformance::{Fabric, TX_TIMEOUT};
use lnet::{LnetConfig, NetConfig, O2ibConfig, Tunables};

/// True inside the soft-RoCE guest (or on a host set up like it).
pub fn in_guest() -> bool {
    std::env::var("SOFTROCE_GUEST").is_ok_and(|v| v == "1")
}

/// The guest's addresses on the rxe netdev, in order (from `SOFTROCE_IPS`).
pub fn guest_ips() -> Vec<Ipv4Addr> {
    std::env::var("SOFTROCE_IPS")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .collect()
}

/// o2ib nodes on the guest's addresses; node `i` uses address `i` and
/// every node of a fabric the same port.
#[derive(Debug, Clone)]
pub struct O2ibFabric {
    /// The addresses, one per node.
    pub ips: Vec<Ipv4Addr>,
    /// The rdma_cm port of this fabric.
    pub port: u16,
}

impl O2ibFabric {
    /// The o2ib config of node `node`.
    pub fn o2ib(&self, node: usize) -> O2ibConfig {
        let addr = self.ips.get(node).copied().unwrap_or(Ipv4Addr::new(10, 11, 0, node as u8 + 1));
        O2ibConfig { addr, port: self.port, ..O2ibConfig::default() }
    }
}

impl Fabric for O2ibFabric {
    fn config(&self, node: usize) -> LnetConfig {
        LnetConfig {
            nets: vec![NetConfig::O2ib(self.o2ib(node))],
            tunables: Tunables { transaction_timeout: TX_TIMEOUT, ..Tunables::default() },
        }
    }
}

/// A fabric with its own port, or `None` (after saying so) outside the guest.
pub fn fabric() -> Option<O2ibFabric> {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    if std::env::var_os("RUST_LOG").is_some() {
        let filter = tracing_subscriber::EnvFilter::from_default_env();
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    }
    if !in_guest() {
        eprintln!("skipped: not in the soft-RoCE guest (run hw-tests/run-rdma-tests)");
        return None;
    }
    let ips = guest_ips();
    if ips.len() < 3 {
        eprintln!("skipped: the o2ib fabric needs 3 addresses in SOFTROCE_IPS, got {ips:?}");
        return None;
    }
    Some(O2ibFabric { ips, port: 20000 + NEXT.fetch_add(1, Ordering::Relaxed) })
}
