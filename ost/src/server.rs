//! An OSS in one process: its targets, their commit threads and the OST
//! service on lnet.
//!
//! Owns: [`OstServer`] — opens every target (each must be formatted and
//! identified), starts one commit thread per target and the ptlrpc
//! service on `OST_REQUEST_PORTAL`, renders the metrics, and shuts down in
//! the order that keeps acknowledged data: stop taking requests (they
//! answer ESHUTDOWN), let in-flight ones finish, commit, stop.
//!
//! Must not: format anything.

use std::sync::Arc;
use std::thread::JoinHandle;

use lnet::Lnet;
use parking_lot::Mutex;
use ptlrpc::driver::{Service, ServiceConfig};
use ptlrpc::fault::FaultInjector;
use ptlrpc::portals::OST_REQUEST_PORTAL;

use crate::error::OstError;
use crate::handler::OstHandler;
use crate::metrics::OstMetrics;
use crate::target::{Ost, OstConfig};

/// A running OSS.
#[derive(Debug)]
pub struct OstServer {
    targets: Vec<Arc<Ost>>,
    service: Mutex<Option<Service>>,
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

impl OstServer {
    /// Opens `targets` and starts serving them on `lnet`. Must be called
    /// inside lnet's tokio runtime.
    pub fn start(
        lnet: &Lnet,
        targets: Vec<OstConfig>,
        svc: ServiceConfig,
        faults: Arc<FaultInjector>,
    ) -> Result<OstServer, OstError> {
        let metrics = Arc::new(OstMetrics::new());
        let mut opened = Vec::with_capacity(targets.len());
        for (slot, cfg) in targets.into_iter().enumerate() {
            let slot = u16::try_from(slot).map_err(|_| OstError::Invalid("too many targets".into()))?;
            opened.push(Arc::new(Ost::open(cfg, slot, Arc::clone(&metrics))?));
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
        let handler = Arc::new(OstHandler::new(opened.clone()));
        let service = match Service::start(lnet, svc, handler, faults) {
            Ok(s) => s,
            Err(e) => {
                let me =
                    OstServer { targets: opened, service: Mutex::new(None), commits: Mutex::new(commits), metrics };
                me.stop_targets();
                return Err(OstError::Invalid(format!("starting the OST service: {e}")));
            }
        };
        Ok(OstServer { targets: opened, service: Mutex::new(Some(service)), commits: Mutex::new(commits), metrics })
    }

    /// The targets.
    pub fn targets(&self) -> &[Arc<Ost>] {
        &self.targets
    }

    /// The OST metrics and the service's, as Prometheus text.
    pub fn render_metrics(&self) -> String {
        for t in &self.targets {
            t.refresh_gauges();
        }
        let mut s = self.metrics.render();
        if let Some(svc) = &*self.service.lock() {
            s.push_str(&svc.render_metrics());
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

    /// Clean stop: refuse new requests, finish in-flight ones, commit
    /// everything, stop. Blocks (call it off the async workers).
    pub fn shutdown(&self) {
        for t in &self.targets {
            t.set_stopping();
        }
        let svc = self.service.lock().take();
        if let Some(s) = svc {
            s.shutdown();
        }
        self.stop_targets();
        for t in &self.targets {
            tracing::info!(target_name = t.name(), last_committed = t.last_committed(), "target stopped");
        }
    }
}

impl Drop for OstServer {
    fn drop(&mut self) {
        self.stop_targets();
    }
}
