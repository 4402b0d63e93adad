//! `sheen-mds`: hosts the MGS and/or an MDT per a TOML config, serving
//! ptlrpc and the admin endpoint (`/metrics`, `/faults`); `check` runs the
//! namespace checker on a stopped MDT's store.
//!
//! `sheen-mds run --config mds.toml` prints one line
//! `sheen-mds ready nid=<NID> admin=<ADDR>` once serving, and stops
//! cleanly on SIGTERM or SIGINT: the MDT commits, answers every request
//! -ESHUTDOWN for a second (its clients' imports go to DISCON and
//! reconnect, resend and replay when it is back), then a final commit.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use mdt::config::MdsConfig;
use mdt::daemon::Daemon;
use mdt::store::FjallKv;
use ptlrpc::admin::Admin;

#[derive(Parser, Debug)]
#[command(name = "sheen-mds", about = "Sheen metadata server: MGS and MDT")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve the targets the config names.
    Run {
        /// The TOML config.
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a stopped MDT's namespace (dirents, inodes, OST objects).
    Check {
        /// The MDT's store directory (`<data_dir>/mdt<index>`).
        #[arg(long)]
        store: PathBuf,
        /// Print the report as one JSON line.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().cmd {
        Cmd::Run { config } => run(&config),
        Cmd::Check { store, json } => check(&store, json),
    }
}

fn check(store: &std::path::Path, json: bool) -> anyhow::Result<()> {
    if !store.is_dir() {
        bail!("{}: not a directory", store.display());
    }
    let kv = FjallKv::open(store).with_context(|| format!("opening {}", store.display()))?;
    let r = mdt::check::check(&kv)?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "inodes": r.inodes, "entries": r.entries, "objects": r.objects,
                "pending_destroys": r.pending_destroys, "orphans": r.orphans,
                "clean": r.is_clean(), "problems": r.problems,
            })
        );
    } else {
        println!(
            "inodes {} entries {} objects {} pending destroys {} orphans {}",
            r.inodes, r.entries, r.objects, r.pending_destroys, r.orphans
        );
        for p in &r.problems {
            println!("PROBLEM: {p}");
        }
        println!("{}", if r.is_clean() { "clean" } else { "INCONSISTENT" });
    }
    if !r.is_clean() {
        std::process::exit(1);
    }
    Ok(())
}

fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let cfg = MdsConfig::from_toml(&text).with_context(|| format!("in {}", path.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let d = Daemon::start(&cfg).await?;
        let admin_addr = match cfg.admin_addr {
            Some(a) => {
                let l = tokio::net::TcpListener::bind(a).await.with_context(|| format!("admin_addr {a}"))?;
                let addr = l.local_addr()?;
                let admin = Admin::new(d.metrics_sources(), d.faults());
                tokio::spawn(async move {
                    if let Err(e) = admin.serve(l).await {
                        tracing::error!(error = %e, "admin endpoint stopped");
                    }
                });
                addr.to_string()
            }
            None => "none".into(),
        };
        println!("sheen-mds ready nid={} admin={admin_addr}", d.nid());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping");
        let d = Arc::new(parking_lot::Mutex::new(Some(d)));
        let d2 = Arc::clone(&d);
        tokio::task::spawn_blocking(move || {
            if let Some(d) = d2.lock().as_ref() {
                d.begin_stop();
            }
        })
        .await?;
        // The notice: every request meanwhile is answered -ESHUTDOWN.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        tokio::task::spawn_blocking(move || {
            if let Some(d) = d.lock().take() {
                d.stop();
            }
        })
        .await?;
        Ok(())
    })
}
