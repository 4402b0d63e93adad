//! `sheen-oss`: the object storage server daemon.
//!
//! `sheen-oss format --config F` formats every target the config names
//! (each directory missing or empty; anything else is refused and left
//! alone). `sheen-oss --config F` opens the targets (each must carry its
//! label), starts lnet, the OST service and the admin endpoint, registers
//! the targets with the MGS when the config names one (retrying until it
//! answers; the ready line follows the registration), and runs
//! until SIGTERM or SIGINT: then it commits, answers every request
//! -ESHUTDOWN for a second (the clients' notice: their imports go to
//! DISCON and reconnect, resend and replay when the OSS is back; nothing
//! fails to their callers), finishes in-flight ones, commits, and exits 0.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use lnet::Lnet;
use ost::label::Label;
use ost::mgs_reg::{RegTarget, register_all};
use ost::{OssConfig, Ost, OstServer};
use ptlrpc::admin::{Admin, MetricsSource};
use ptlrpc::cpt::CptTable;
use ptlrpc::fault::FaultInjector;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser, Debug)]
#[command(name = "sheen-oss", about = "Sheen object storage server")]
struct Cli {
    /// The TOML config file.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Format the targets named in the config.
    Format,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let path = cli.config.context("--config FILE is required")?;
    let cfg = OssConfig::load(&path).with_context(|| format!("config {}", path.display()))?;
    match cli.cmd {
        Some(Cmd::Format) => format(&cfg),
        None => run(cfg),
    }
}

fn format(cfg: &OssConfig) -> Result<()> {
    for t in cfg.target_configs() {
        let label = Ost::format(&t, &cfg.fs_uuid).with_context(|| format!("formatting {}", t.name))?;
        println!(
            "formatted {} (index {}) in {} for file system {}",
            label.target,
            label.index,
            t.dir.display(),
            label.fs_uuid
        );
    }
    Ok(())
}

fn run(cfg: OssConfig) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    rt.block_on(serve(cfg))
}

/// How long a stopping OSS answers every request -ESHUTDOWN (its clients'
/// notice to reconnect later) before it goes.
const SHUTDOWN_NOTICE: std::time::Duration = std::time::Duration::from_secs(1);

async fn serve(cfg: OssConfig) -> Result<()> {
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    // Identity first: a directory that is missing, unformatted or another
    // target's is refused before anything starts.
    for t in cfg.target_configs() {
        Label::read(&t.dir)
            .and_then(|l| l.check(&t.dir, &t.name, t.index, t.fs_uuid.as_deref()))
            .with_context(|| format!("target {}", t.name))?;
    }
    let lnet = Lnet::start(cfg.lnet.clone()).await.context("starting lnet")?;
    let faults = Arc::new(FaultInjector::new(std::process::id().into()));
    let mut svc = ost::server::service_config();
    svc.threads_per_cpt = cfg.service.threads_per_cpt;
    svc.nbufs = cfg.service.nbufs;
    if cfg.wants_cpts() {
        let table = CptTable::from_system(&cfg.cpt_settings()).context("service.cpu_* settings")?;
        svc.cpts = Some(Arc::new(table));
    }
    let server = OstServer::start(&lnet, cfg.target_configs(), svc, cfg.ping_settings(), Arc::clone(&faults))
        .context("starting targets")?;
    let server = Arc::new(server);
    let admin_task = match cfg.admin {
        Some(addr) => {
            let listener =
                tokio::net::TcpListener::bind(addr).await.with_context(|| format!("admin address {addr}"))?;
            let s2 = Arc::clone(&server);
            let src: MetricsSource = Arc::new(move || s2.render_metrics());
            let admin = Admin::new(vec![src], Arc::clone(&faults));
            Some(tokio::spawn(async move {
                if let Err(e) = admin.serve(listener).await {
                    tracing::error!(err = %e, "admin endpoint stopped");
                }
            }))
        }
        None => None,
    };
    let names: Vec<String> = server.targets().iter().map(|t| t.name().to_string()).collect();
    let mut stopped = false;
    if let Some(mgs) = cfg.mgs_nid() {
        let regs: Vec<RegTarget> = server
            .targets()
            .iter()
            .enumerate()
            .zip(&cfg.targets)
            .map(|((i, _), c)| RegTarget { name: c.name.clone(), index: c.index, instance: server.epoch_of(i) })
            .collect();
        tokio::select! {
            r = register_all(&lnet, mgs, &regs) => { r.context("registering with the MGS")?; }
            _ = term.recv() => { tracing::info!("SIGTERM before registration: stopping"); stopped = true; }
            _ = int.recv() => { tracing::info!("SIGINT before registration: stopping"); stopped = true; }
        }
    }
    if !stopped {
        tracing::info!(nid = %lnet.nid(), targets = ?names, "sheen-oss ready");
        println!("ready {}", lnet.nid());
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
    }
    if let Some(t) = admin_task {
        t.abort();
    }
    let s2 = Arc::clone(&server);
    tokio::task::spawn_blocking(move || s2.begin_stop()).await.context("shutdown")?;
    tokio::time::sleep(SHUTDOWN_NOTICE).await;
    let s2 = Arc::clone(&server);
    tokio::task::spawn_blocking(move || s2.shutdown()).await.context("shutdown")?;
    lnet.shutdown();
    tracing::info!("sheen-oss stopped cleanly");
    Ok(())
}
