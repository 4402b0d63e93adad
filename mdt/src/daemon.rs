//! Running the MGS and/or an MDT: what `sheen-mds run` does, also used
//! in-process by the benchmark.
//!
//! Owns: [`Daemon`] — lnet, the stores, the MGS service, the MDT on
//! ptlrpc's target framework (a [`TargetDriver`] with the MDT's service,
//! store and front: exports, reconstruction, recovery after a restart),
//! the MDT's registration with the MGS and its config-log follower (OSTs
//! added, activated, deactivated, removed, pools, restarts), the commit
//! thread, a housekeeping thread (OST space refresh, destroy-log replay,
//! gauges), the precreate thread (pools of OST objects kept ahead of
//! creates), and the admin endpoint's metrics sources.
//!
//! Must not: block the tokio runtime: everything that blocks runs on
//! service workers or its own threads.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use lnet::{Lnet, Nid};
use parking_lot::Mutex;
use ptlrpc::admin::MetricsSource;
use ptlrpc::driver::{Client, ClientConfig, Service, ServiceConfig, TargetDriver, TargetSpec};
use ptlrpc::fault::FaultInjector;
use ptlrpc::pinger::PingSettings;
use ptlrpc::portals::{MDS_REQUEST_PORTAL, MGS_REQUEST_PORTAL};
use ptlrpc::target::TargetConfig;
use ptlrpc::wire::mds::StripeSpec;
use ptlrpc::wire::mgs::{ConfigCmd, TargetKind, TargetRegReq};

use crate::alloc::{AllocConfig, Allocator, OstApi, OstFactory, RpcOst};
use crate::config::MdsConfig;
use crate::locks::MdtLocks;
use crate::mgs::Mgs;
use crate::mgs::follow::{Follower, LocalMgs, MgsApi, Progress, RpcMgs};
use crate::ns::Namespace;
use crate::service::{MdtMetrics, MdtOps, MgsHandler};
use crate::stop::StopSignal;
use crate::store::{FjallKv, Kv};
use crate::tgt::{MdtFront, MdtService, MdtStore};
use crate::txn::Committer;

/// What can stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// lnet did not start.
    #[error("lnet: {0}")]
    Lnet(String),
    /// A store did not open.
    #[error("store {path}: {why}")]
    Store {
        /// Where.
        path: String,
        /// Why.
        why: String,
    },
    /// A service did not start.
    #[error("service {name}: {why}")]
    Service {
        /// Which.
        name: String,
        /// Why.
        why: String,
    },
    /// The MGS refused or could not be reached.
    #[error("mgs: {0}")]
    Mgs(String),
}

/// The MDT part of a running daemon.
#[derive(Debug)]
pub struct MdtParts {
    /// The namespace.
    pub ns: Arc<Namespace>,
    /// The commit thread.
    pub committer: Arc<Committer>,
    /// The target framework running the MDT.
    pub driver: Arc<TargetDriver<MdtService>>,
    follower: Follower,
    /// Set by [`Daemon::begin_stop`]: the front answers -ESHUTDOWN.
    stopping: Arc<std::sync::atomic::AtomicBool>,
    /// The lock manager.
    pub locks: Arc<MdtLocks>,
}

/// A running daemon.
pub struct Daemon {
    lnet: Lnet,
    /// The MGS, when hosted.
    pub mgs: Option<Arc<Mgs>>,
    /// The MDT, when hosted.
    pub mdt: Option<MdtParts>,
    /// Metrics.
    pub metrics: Arc<MdtMetrics>,
    services: Arc<Mutex<Vec<Service>>>,
    faults: Arc<FaultInjector>,
    stop: Arc<StopSignal>,
    housekeeper: Option<JoinHandle<()>>,
    precreator: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").field("nid", &self.lnet.nid().to_string()).finish_non_exhaustive()
    }
}

fn open_store(path: &Path) -> Result<Arc<dyn Kv>, StartError> {
    std::fs::create_dir_all(path)
        .map_err(|e| StartError::Store { path: path.display().to_string(), why: e.to_string() })?;
    let kv =
        FjallKv::open(path).map_err(|e| StartError::Store { path: path.display().to_string(), why: e.to_string() })?;
    Ok(Arc::new(kv))
}

fn ost_factory(lnet: &Lnet, rt: tokio::runtime::Handle, fsname: &str, mdt_index: u32) -> OstFactory {
    let lnet = lnet.clone();
    let fsname = fsname.to_string();
    Arc::new(move |index, nids| {
        let mut parsed: Vec<Nid> = nids.iter().filter_map(|n| n.parse::<Nid>().ok()).collect();
        if parsed.is_empty() {
            tracing::warn!(ost = index, "OST registered without a NID");
            parsed.push(Nid::LO);
        }
        let target = format!("{fsname}-OST{index:04x}");
        let uuid = format!("{fsname}-MDT{mdt_index:04x}-mdtlov_UUID");
        Arc::new(RpcOst::new(lnet.clone(), parsed, rt.clone(), Duration::from_secs(10), target, uuid))
            as Arc<dyn OstApi>
    })
}

impl Daemon {
    /// Starts what `cfg` names. Must be called within a multi-threaded
    /// tokio runtime.
    pub async fn start(cfg: &MdsConfig) -> Result<Daemon, StartError> {
        let lnet = Lnet::start(cfg.lnet.clone()).await.map_err(|e| StartError::Lnet(e.to_string()))?;
        let faults = Arc::new(FaultInjector::new(u64::from(std::process::id())));
        let metrics = Arc::new(MdtMetrics::new());
        let services: Arc<Mutex<Vec<Service>>> = Arc::default();
        let start_svc = |name: String, portal, threads: usize, handler: Arc<dyn ptlrpc::driver::Handler>| {
            let sc = ServiceConfig { threads_per_cpt: threads.max(1), ..ServiceConfig::new(name.clone(), portal) };
            let svc = Service::start(&lnet, sc, handler, Arc::clone(&faults))
                .map_err(|e| StartError::Service { name, why: e.to_string() })?;
            services.lock().push(svc);
            Ok::<(), StartError>(())
        };
        let mut mgs = None;
        if let Some(m) = &cfg.mgs {
            let kv = open_store(&cfg.data_dir.join("mgs"))?;
            let g = Arc::new(Mgs::open(kv).map_err(|e| StartError::Mgs(e.to_string()))?);
            let threads = if m.threads == 0 { 8 } else { m.threads };
            start_svc(
                "mgs".into(),
                MGS_REQUEST_PORTAL,
                threads,
                Arc::new(MgsHandler::new(Arc::clone(&g), Arc::clone(&metrics))),
            )?;
            mgs = Some(g);
        }
        let mut mdt = None;
        if let Some(m) = &cfg.mdt {
            let rt = tokio::runtime::Handle::current();
            let kv = open_store(&cfg.data_dir.join(format!("mdt{}", m.index)))?;
            let acfg = AllocConfig {
                default_stripe: StripeSpec {
                    stripe_size: m.stripe_size,
                    stripe_count: m.stripe_count,
                    stripe_offset: -1,
                    pool: String::new(),
                },
                precreate_batch: m.precreate_batch,
                ost_seq_width: m.ost_seq_width,
                ..AllocConfig::default()
            };
            let alloc =
                Arc::new(Allocator::new(Arc::clone(&kv), ost_factory(&lnet, rt.clone(), &cfg.fsname, m.index), acfg));
            let ns = Arc::new(
                Namespace::mount_deferred(kv, alloc)
                    .map_err(|e| StartError::Store { path: cfg.data_dir.display().to_string(), why: e.to_string() })?,
            );
            let committer = Arc::new(Committer::start(
                Arc::clone(ns.kv()),
                Arc::clone(ns.txn()),
                Duration::from_millis(m.commit_interval_ms),
            ));
            let progress = Arc::new(Progress::default());
            let ops = Arc::new(MdtOps {
                ns: Arc::clone(&ns),
                metrics: Arc::clone(&metrics),
                progress: Arc::clone(&progress),
            });
            let obd_timeout = Duration::from_secs_f64(m.obd_timeout_s);
            let tcfg = TargetConfig {
                ping: PingSettings {
                    obd_timeout,
                    ping_interval_uncommitted: (obd_timeout / 4).min(Duration::from_secs(7)),
                    ..PingSettings::default()
                },
                commit_interval: Duration::from_millis(m.commit_interval_ms),
                ..TargetConfig::default()
            };
            let name = format!("{}-MDT{:04x}", cfg.fsname, m.index);
            // A holder has half the obd timeout to give a lock back.
            let callback_timeout = (obd_timeout / 2).max(Duration::from_millis(100));
            let lsettings = ptlrpc::ldlm::LdlmSettings {
                callback_timeout,
                ast_resend: callback_timeout / 8,
                ..ptlrpc::ldlm::LdlmSettings::default()
            };
            let cookie_base = u64::from(std::process::id()).rotate_left(40) ^ u64::from(ns.txn().epoch()) << 20;
            let locks = MdtLocks::start(&lnet, rt.clone(), Arc::clone(&faults), lsettings, cookie_base);
            let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let spec = TargetSpec {
                name: name.clone(),
                component: "mdt".into(),
                target: tcfg,
                seed: u64::from(std::process::id()) ^ 0x6d64_7400,
                service: MdtService::new(Arc::clone(&ops)),
                store: MdtStore::new(Arc::clone(&ns), Arc::clone(&committer)),
                front: Arc::new(MdtFront::new(Arc::clone(&ops), Arc::clone(&stopping)).with_locks(Arc::clone(&locks))),
            };
            let sc = ServiceConfig {
                threads_per_cpt: m.threads.max(1),
                ..ServiceConfig::new(format!("mdt{}", m.index), MDS_REQUEST_PORTAL)
            };
            let driver = Arc::new(
                TargetDriver::start_many(&lnet, sc, vec![spec], Arc::clone(&faults))
                    .map_err(|e| StartError::Service { name: name.clone(), why: e.to_string() })?,
            );
            let weak = Arc::downgrade(&driver);
            locks.set_evictor(Box::new(move |uuid| {
                if let Some(d) = weak.upgrade() {
                    d.evict_client(uuid);
                }
            }));
            // An evicted client's locks go with its export.
            let mut events = driver.subscribe();
            let l2 = Arc::clone(&locks);
            rt.spawn(async move {
                loop {
                    match events.recv().await {
                        Ok(ptlrpc::target::TargetEvent::Evicted { uuid, .. }) => l2.drop_client(&uuid),
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    }
                }
            });
            metrics.recovery_supported.set(1);
            tracing::info!(epoch = ns.txn().epoch(), target = %name, "MDT mounted");
            let api: Arc<dyn MgsApi> = match (&mgs, &m.mgs_nid) {
                (Some(g), _) => Arc::new(LocalMgs(Arc::clone(g))),
                (None, Some(n)) => {
                    let nid: Nid = n.parse().map_err(|_| StartError::Mgs(format!("bad mgs_nid {n}")))?;
                    let c = Client::new(&lnet, nid, MGS_REQUEST_PORTAL, ClientConfig::default(), Arc::clone(&faults));
                    Arc::new(RpcMgs::new(c, rt.clone()))
                }
                (None, None) => return Err(StartError::Mgs("no MGS configured".into())),
            };
            let reg = TargetRegReq {
                fsname: cfg.fsname.clone(),
                kind: TargetKind::Mdt,
                index: m.index,
                // Peers reach us on real networks; 0@lo means "myself" to them.
                nids: lnet.nids().iter().filter(|n| n.net.kind != lnet::NetType::Lo).map(ToString::to_string).collect(),
                failover: vec![],
                instance: ns.txn().epoch(),
            };
            let api2 = Arc::clone(&api);
            tokio::task::spawn_blocking(move || api2.register(&reg))
                .await
                .map_err(|e| StartError::Mgs(e.to_string()))?
                .map_err(|e| StartError::Mgs(e.to_string()))?;
            let (a, met) = (Arc::clone(ns.alloc()), Arc::clone(&metrics));
            let follower = Follower::start(api, cfg.fsname.clone(), Duration::from_secs(2), progress, move |rec| {
                met.config_records.inc();
                if matches!(rec.cmd, ConfigCmd::TargetRestart { .. }) {
                    met.target_restarts.inc();
                }
                if let Err(e) = a.apply(&rec.cmd) {
                    tracing::error!(record = rec.index, error = %e, "config record not applied");
                }
            });
            mdt = Some(MdtParts { ns, committer, driver, follower, stopping, locks });
        }
        let stop = Arc::new(StopSignal::default());
        let qos_maxage = cfg.mdt.as_ref().map_or(Duration::from_secs(1), |m| Duration::from_secs_f64(m.qos_maxage_s));
        let housekeeper = mdt.as_ref().map(|p| {
            let (ns, met, stop) = (Arc::clone(&p.ns), Arc::clone(&metrics), Arc::clone(&stop));
            let driver = Arc::downgrade(&p.driver);
            std::thread::spawn(move || housekeeping(&ns, &driver, &met, &stop, qos_maxage))
        });
        let precreator = match mdt.as_ref() {
            Some(p) => {
                let a = Arc::clone(p.ns.alloc());
                let h = std::thread::Builder::new()
                    .name("mdt-precreate".into())
                    .spawn(move || a.run_precreator())
                    .map_err(|e| StartError::Service { name: "mdt-precreate".into(), why: e.to_string() })?;
                Some(h)
            }
            None => None,
        };
        Ok(Daemon { lnet, mgs, mdt, metrics, services, faults, stop, housekeeper, precreator })
    }

    /// This node's primary NID.
    pub fn nid(&self) -> Nid {
        self.lnet.nid()
    }

    /// The lnet instance.
    pub fn lnet(&self) -> &Lnet {
        &self.lnet
    }

    /// The fault injector (for `/faults`).
    pub fn faults(&self) -> Arc<FaultInjector> {
        Arc::clone(&self.faults)
    }

    /// Metrics sources for the admin endpoint.
    pub fn metrics_sources(&self) -> Vec<MetricsSource> {
        let svcs = Arc::clone(&self.services);
        let driver = self.mdt.as_ref().map(|p| Arc::downgrade(&p.driver));
        let services: MetricsSource = Arc::new(move || {
            let mut out: String = svcs.lock().iter().map(Service::render_metrics).collect();
            if let Some(d) = driver.as_ref().and_then(std::sync::Weak::upgrade) {
                out.push_str(&d.render_metrics());
            }
            out
        });
        let (met, ns) = (Arc::clone(&self.metrics), self.mdt.as_ref().map(|p| Arc::clone(&p.ns)));
        let locks = self.mdt.as_ref().map(|p| (Arc::clone(&p.locks), p.driver.name_at(0).unwrap_or("mdt").to_string()));
        let drv = self.mdt.as_ref().map_or_else(std::sync::Weak::new, |p| Arc::downgrade(&p.driver));
        let mdt: MetricsSource = Arc::new(move || {
            if let Some(ns) = &ns {
                update_gauges(ns, &drv, &met);
            }
            let mut out = met.render();
            if let Some((l, name)) = &locks {
                out.push_str(&l.render(name));
            }
            out
        });
        vec![services, mdt]
    }

    /// The start of a stop with notice (SIGTERM): the MDT commits what it
    /// executed and from now on answers every request -ESHUTDOWN without
    /// doing it, so the clients sending meanwhile go to DISCON and
    /// reconnect, resend and replay once it is back. The caller waits its
    /// notice time, then calls [`Daemon::stop`].
    pub fn begin_stop(&self) {
        if let Some(p) = &self.mdt {
            p.stopping.store(true, std::sync::atomic::Ordering::Release);
            if !p.committer.commit_now(Duration::from_secs(30)) {
                tracing::error!("commit at stop did not finish");
            }
        }
    }

    /// Stops everything: follower, services, a final commit, lnet.
    pub fn stop(mut self) {
        self.stop.stop();
        if let Some(h) = self.housekeeper.take() {
            let _ = h.join();
        }
        if let Some(p) = &self.mdt {
            p.ns.alloc().stop_precreator();
        }
        if let Some(h) = self.precreator.take() {
            let _ = h.join();
        }
        if let Some(p) = &mut self.mdt {
            p.follower.stop();
        }
        for s in self.services.lock().drain(..) {
            s.shutdown();
        }
        if let Some(p) = self.mdt.take() {
            p.locks.stop();
            match Arc::try_unwrap(p.driver) {
                Ok(d) => d.shutdown(),
                Err(_) => tracing::warn!("MDT target driver still shared at stop"),
            }
            if !p.committer.commit_now(Duration::from_secs(30)) {
                tracing::error!("final commit did not finish");
            }
        }
        self.lnet.shutdown();
    }
}

fn update_gauges(ns: &Namespace, driver: &std::sync::Weak<TargetDriver<MdtService>>, met: &MdtMetrics) {
    if let Some(d) = driver.upgrade() {
        let (exports, recovering) = d.with_target(|t| (t.exports().len(), t.is_recovering()));
        met.exports.set(exports as i64);
        met.recovery_status.set(i64::from(recovering));
    }
    met.open_files.set(ns.open_files() as i64);
    met.fids_refused.set(ns.fids_refused() as i64);
    met.last_transno.set(ns.txn().last() as i64);
    met.last_committed.set(ns.txn().committed() as i64);
    met.destroy_pending.set(ns.destroys_pending() as i64);
    met.ost_active.clear();
    met.ost_admin_active.clear();
    for o in ns.alloc().report() {
        let l = crate::service::metrics::OstLabels { ost: o.index };
        met.ost_active.get_or_create(&l).set(i64::from(o.active && o.connected));
        met.ost_admin_active.get_or_create(&l).set(i64::from(o.active));
    }
}

/// Once a second (more often with a `qos_maxage` under a second): OST
/// space and reconnects when the figures are `qos_maxage` old,
/// destroy-log replay, gauges. Until the MDT's
/// recovery is over, OSTs are not reached: their orphan cleanup destroys
/// objects above the allocation cursors, which replayed creates move up
/// when they claim their original objects. Once it is over, the orphans
/// of the previous boot no replayed open holds are destroyed.
fn housekeeping(
    ns: &Namespace,
    driver: &std::sync::Weak<TargetDriver<MdtService>>,
    met: &MdtMetrics,
    stop: &StopSignal,
    qos_maxage: Duration,
) {
    let mut recovered = false;
    let mut refreshed: Option<std::time::Instant> = None;
    loop {
        if !recovered {
            let Some(d) = driver.upgrade() else { return };
            // Under the target's lock: no plan is between build and apply.
            let res = d.with_target(|t| (!t.is_recovering()).then(|| ns.cleanup_orphans()));
            match res {
                Some(Ok(n)) => {
                    recovered = true;
                    tracing::info!(orphans = n, "recovery over: orphans of the previous boot destroyed");
                }
                Some(Err(e)) => tracing::error!(error = %e, "orphan cleanup"),
                None => {}
            }
        }
        if recovered && refreshed.is_none_or(|t| t.elapsed() >= qos_maxage) {
            ns.alloc().refresh();
            refreshed = Some(std::time::Instant::now());
        }
        match ns.process_destroys(1024) {
            Ok((done, pending)) if done + pending > 0 => tracing::debug!(done, pending, "destroy log"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "destroy log"),
        }
        update_gauges(ns, driver, met);
        if stop.wait(qos_maxage.min(Duration::from_secs(1))) {
            return;
        }
    }
}
