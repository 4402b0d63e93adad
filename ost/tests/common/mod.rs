//! Shared test harness: an in-process OSS and client over lnet's `lo` LND.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod daemon;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use lnet::{Lnet, LnetConfig, NetConfig, Tunables};
use ost::client::OstClientConfig;
use ost::{Ost, OstClient, OstConfig, OstServer};
use ptlrpc::at::AtSettings;
use ptlrpc::fault::FaultInjector;
use ptlrpc::pinger::PingSettings;

pub const BOUND: Duration = Duration::from_secs(60);
pub const TARGET: &str = "sheen-OST0000";
/// The sequence the tests create objects in (what an MDT would have been
/// granted).
pub const SEQ: u64 = 0x2_0000_0400;

/// Object `oid` of [`SEQ`].
pub fn obj(oid: u64) -> ptlrpc::wire::OstId {
    ptlrpc::wire::OstId::new(SEQ, oid)
}

/// The file of object `oid` of [`SEQ`] under the target directory `dir`.
#[allow(dead_code)]
pub fn object_file(dir: &std::path::Path, oid: ptlrpc::wire::OstId) -> std::path::PathBuf {
    dir.join("O").join(format!("{:x}", oid.seq)).join(format!("{:02x}", oid.oid & 0xff)).join(format!("{:x}", oid.oid))
}

fn unique() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    (std::process::id() % 4000) * 64 + NEXT.fetch_add(1, Ordering::Relaxed) % 64
}

pub fn short_at() -> AtSettings {
    AtSettings {
        at_min: Duration::from_millis(500),
        at_max: Duration::from_secs(10),
        at_history: Duration::from_secs(10),
        at_early_margin: Duration::from_millis(200),
        at_extra: Duration::from_millis(500),
        timeout_slack: Duration::from_millis(500),
    }
}

/// obd_timeout 4 s: pings every second, recovery windows of 12 s.
pub fn short_ping() -> PingSettings {
    PingSettings {
        obd_timeout: Duration::from_secs(4),
        ping_interval_uncommitted: Duration::from_secs(1),
        ..PingSettings::default()
    }
}

pub fn client_config() -> OstClientConfig {
    OstClientConfig { at: short_at(), ping: short_ping(), ..OstClientConfig::default() }
}

#[allow(missing_debug_implementations)]
pub struct Oss {
    pub server_lnet: Lnet,
    pub client_lnet: Lnet,
    pub server: OstServer,
    pub faults: Arc<FaultInjector>,
}

pub fn target_config(dir: &Path) -> OstConfig {
    OstConfig { commit_interval: Duration::from_millis(100), ..OstConfig::new(TARGET, 0, dir) }
}

impl Oss {
    /// Formats (when `format`) and serves `cfg`.
    pub async fn start(cfg: OstConfig, format: bool) -> Oss {
        if format {
            Ost::format(&cfg, "fs-uuid-1").expect("format");
        }
        let u = unique();
        let tunables = Tunables { transaction_timeout: Duration::from_secs(5), ..Tunables::default() };
        let lo =
            |i: u32| LnetConfig { nets: vec![NetConfig::Lo { addr: (u + 1) * 16 + i }], tunables: tunables.clone() };
        let server_lnet = Lnet::start(lo(0)).await.expect("server lnet");
        let client_lnet = Lnet::start(lo(1)).await.expect("client lnet");
        let faults = Arc::new(FaultInjector::new(1));
        let svc = ptlrpc::driver::ServiceConfig {
            at: short_at(),
            bulk_timeout: Duration::from_secs(10),
            ..ost::server::service_config()
        };
        let server =
            OstServer::start(&server_lnet, vec![cfg], svc, short_ping(), Arc::clone(&faults)).expect("server starts");
        Oss { server_lnet, client_lnet, server, faults }
    }

    pub fn client(&self, uuid: &str) -> OstClient {
        self.client_with(uuid, client_config())
    }

    pub fn client_with(&self, uuid: &str, cfg: OstClientConfig) -> OstClient {
        OstClient::new(&self.client_lnet, vec![self.server_lnet.nid()], TARGET, uuid, cfg)
    }

    pub fn stop(self) {
        self.server.shutdown();
        self.client_lnet.shutdown();
        self.server_lnet.shutdown();
    }
}

pub async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(BOUND, f).await.expect("finishes within the bound")
}

pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seed.wrapping_mul(131).wrapping_add(i as u64 * 7) % 251) as u8).collect()
}
