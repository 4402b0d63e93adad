//! An OSS in one process: its targets, their commit threads, and ptlrpc's
//! target driver serving them on the OST portal.
//!
//! Owns: [`OstServer`] — opens every target (each must be formatted and
//! identified), starts one commit thread per target and one
//! `TargetDriver` for all of them (CONNECT routed by target name, the rest
//! by export handle; each target's front, service and store from `front`,
//! `service`, `store`), renders the metrics (the OST families, the
//! service's, and the framework's `recovery_status_*` and exports per
//! target), and shuts down in the order that keeps acknowledged data:
//! stop taking requests (they answer ESHUTDOWN), let in-flight ones
//! finish, commit, stop.
//!
//! Must not: format anything.

use std::sync::Arc;
use std::thread::JoinHandle;

use lnet::Lnet;
use parking_lot::Mutex;
use ptlrpc::driver::{ServiceConfig, TargetDriver, TargetSpec};
use ptlrpc::fault::FaultInjector;
use ptlrpc::pinger::PingSettings;
use ptlrpc::portals::OST_REQUEST_PORTAL;
use ptlrpc::target::TargetConfig;
use ptlrpc::wire::{CKSUM_CRC32C, ConnectData, connect_flags};

use crate::error::OstError;
use crate::front::OstFront;
use crate::metrics::OstMetrics;
use crate::service::OstService;
use crate::store::OstStore;
use crate::target::{MAX_OBJECT_BYTES, Ost, OstConfig};

/// A running OSS.
#[derive(Debug)]
pub struct OstServer {
    targets: Vec<Arc<Ost>>,
    driver: Mutex<Option<TargetDriver<OstService>>>,
    commits: Mutex<Vec<JoinHandle<()>>>,
    metrics: Arc<OstMetrics>,
}

/// The service defaults for an OSS (name `ost`, the OST portal, 4 MiB
/// bulk, 8 workers per CPT: a BRW holds its worker for the whole bulk
/// transfer, so the workers bound the BRWs in progress, as Lustre's
/// `ost_io` threads do).
pub fn service_config() -> ServiceConfig {
    ServiceConfig { max_bulk: 4 << 20, threads_per_cpt: 8, ..ServiceConfig::new("ost", OST_REQUEST_PORTAL) }
}

/// The framework settings of a target: what it offers at connect, its
/// commit interval, `ping` (obd_timeout: recovery windows are 3x and at
/// most 9x it).
/// Modifying requests (writes, creates, punches ...) a client may have in
/// flight at once: reply slots kept per client (Lustre's osc
/// `max_rpcs_in_flight` default).
pub const MAX_MOD_RPCS: u32 = 8;

pub fn target_config(cfg: &OstConfig, ping: PingSettings) -> TargetConfig {
    let mut flags = connect_flags::GRANT
        | connect_flags::BRW_SIZE
        | connect_flags::VERSION
        | connect_flags::TRANSNO
        | connect_flags::MAXBYTES
        | connect_flags::VBR
        | connect_flags::IMP_RECOV
        | connect_flags::MULTIMODRPCS
        | connect_flags::SHORTIO;
    if cfg.checksums {
        flags |= connect_flags::CKSUM;
    }
    TargetConfig {
        ping,
        supported: ConnectData {
            flags,
            version: 1,
            brw_size: cfg.brw_size,
            grant: cfg.grant_per_export,
            cksum_types: if cfg.checksums { CKSUM_CRC32C } else { 0 },
            max_bytes: MAX_OBJECT_BYTES,
            max_mod_rpcs: MAX_MOD_RPCS,
            ..ConnectData::default()
        },
        commit_interval: cfg.commit_interval,
        ..TargetConfig::default()
    }
}

impl OstServer {
    /// Opens `targets` and starts serving them on `lnet` (ping settings
    /// `ping`). Must be called inside lnet's tokio runtime.
    pub fn start(
        lnet: &Lnet,
        targets: Vec<OstConfig>,
        svc: ServiceConfig,
        ping: PingSettings,
        faults: Arc<FaultInjector>,
    ) -> Result<OstServer, OstError> {
        let metrics = Arc::new(OstMetrics::new());
        let mut opened = Vec::with_capacity(targets.len());
        for cfg in targets {
            opened.push(Arc::new(Ost::open(cfg, Arc::clone(&metrics))?));
        }
        let mut commits = Vec::new();
        for t in &opened {
            let t2 = Arc::clone(t);
            let h = std::thread::Builder::new()
                .name(format!("commit-{}", t.name()))
                .spawn(move || t2.commit_loop())
                .map_err(|e| OstError::io("spawning commit thread for", t.dir(), e))?;
            commits.push(h);
        }
        let me = OstServer { targets: opened, driver: Mutex::new(None), commits: Mutex::new(commits), metrics };
        let mut specs = Vec::with_capacity(me.targets.len());
        for t in &me.targets {
            let seed =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
                    ^ u64::from(t.config().index);
            specs.push(TargetSpec {
                name: t.name().to_string(),
                component: "ost".into(),
                target: target_config(t.config(), ping),
                seed,
                service: OstService::new(Arc::clone(t)),
                store: OstStore::new(Arc::clone(t))?,
                front: Arc::new(OstFront::new(Arc::clone(t))),
            });
        }
        match TargetDriver::start_many(lnet, svc, specs, faults) {
            Ok(d) => *me.driver.lock() = Some(d),
            Err(e) => {
                me.stop_targets();
                return Err(OstError::Invalid(format!("starting the OST service: {e}")));
            }
        }
        Ok(me)
    }

    /// The targets.
    pub fn targets(&self) -> &[Arc<Ost>] {
        &self.targets
    }

    /// Target `i`'s boot epoch (its instance; 0 once shut down).
    pub fn epoch_of(&self, i: usize) -> u32 {
        self.with_driver(|d| d.with_target_at(i, |t| t.epoch())).flatten().unwrap_or(0)
    }

    /// Runs `f` on the target driver (None once shut down).
    pub fn with_driver<R>(&self, f: impl FnOnce(&TargetDriver<OstService>) -> R) -> Option<R> {
        self.driver.lock().as_ref().map(f)
    }

    /// The OST metrics, the service's and the framework's per target, as
    /// Prometheus text.
    pub fn render_metrics(&self) -> String {
        for t in &self.targets {
            t.refresh_gauges();
        }
        let s = self.metrics.render();
        let mut s = s.strip_suffix("# EOF\n").unwrap_or(&s).to_string();
        match &*self.driver.lock() {
            Some(d) => s.push_str(&d.render_metrics()),
            None => s.push_str("# EOF\n"),
        }
        s
    }

    /// The metrics registry holder.
    pub fn metrics(&self) -> &Arc<OstMetrics> {
        &self.metrics
    }

    fn stop_targets(&self) {
        for t in &self.targets {
            t.stop_commits();
        }
        let handles: Vec<_> = self.commits.lock().drain(..).collect();
        for h in handles {
            if h.join().is_err() {
                tracing::error!("a commit thread panicked");
            }
        }
    }

    /// The start of a shutdown with notice: every target stops doing
    /// requests and commits what it executed. From here every request
    /// (PING and CONNECT included) is answered -ESHUTDOWN without being
    /// done: the clients sending meanwhile are told, and their imports go
    /// to DISCON and reconnect, resend and replay once the targets are
    /// back, rather than waiting for their requests to time out. The
    /// caller waits its notice time, then calls [`OstServer::shutdown`].
    pub fn begin_stop(&self) {
        for t in &self.targets {
            t.set_stopping();
            if let Err(e) = t.commit_once() {
                tracing::error!(target_name = t.name(), err = %e, "commit at shutdown failed");
            }
        }
    }

    /// Clean stop: refuse new requests, finish in-flight ones, commit
    /// everything, stop. Blocks (call it off the async workers).
    pub fn shutdown(&self) {
        for t in &self.targets {
            t.set_stopping();
        }
        let driver = self.driver.lock().take();
        if let Some(d) = driver {
            d.shutdown();
        }
        self.stop_targets();
        for t in &self.targets {
            tracing::info!(target_name = t.name(), last_committed = t.committed(), "target stopped");
        }
    }
}

impl Drop for OstServer {
    fn drop(&mut self) {
        self.stop_targets();
    }
}
