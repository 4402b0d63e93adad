//! `kv-target`: the key-value test target ([`ptlrpc::driver::kv`]) served
//! over lnet tcp from a directory ([`FileStore`]), for process-level
//! recovery tests and the recovery benchmark (kill it with -9, start it
//! again on the same directory).
//!
//! stdout, one line each: `READY <nid> epoch=<n> recovering=<bool>` once
//! serving, then `EVENT <json>` for each recovery and eviction event.
//! stdin commands: `sync` (commit and wait for the fsync; answers
//! `SYNCED <transno>`), `evict <uuid>` (`EVICTED <bool>`), `metrics` (the
//! Prometheus text, then `END METRICS`). It exits when stdin closes (its
//! harness is gone). Logs go to stderr (`RUST_LOG`).

use std::io::{BufRead, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use lnet::{Lnet, LnetConfig, NetConfig, TcpConfig, Tunables};
use ptlrpc::at::AtSettings;
use ptlrpc::driver::kv::{KV_PORTAL, KvService};
use ptlrpc::driver::{FileStore, ServiceConfig, TargetDriver, TargetDriverConfig};
use ptlrpc::fault::FaultInjector;
use ptlrpc::pinger::PingSettings;
use ptlrpc::target::TargetStore;
use ptlrpc::target::{EvictReason, TargetConfig, TargetEvent};
use ptlrpc::wire::Transno;
use tokio::sync::mpsc;

#[derive(Parser, Debug)]
#[command(about = "The key-value test target over lnet tcp")]
struct Args {
    /// IPv4 address to serve on (the NID is ADDR@tcp).
    #[arg(long)]
    addr: Ipv4Addr,
    /// TCP port.
    #[arg(long, default_value_t = 7990)]
    port: u16,
    /// The store's directory.
    #[arg(long)]
    dir: PathBuf,
    /// Target name (metrics label).
    #[arg(long, default_value = "kv0")]
    name: String,
    /// obd_timeout in ms (ping interval = 1/4; recovery soft/hard limits 3x/9x).
    #[arg(long, default_value_t = 100_000)]
    obd_timeout_ms: u64,
    /// Commit interval in ms.
    #[arg(long, default_value_t = 5_000)]
    commit_interval_ms: u64,
    /// Adaptive timeouts' at_min in ms (at_early_margin and at_extra follow).
    #[arg(long, default_value_t = 5_000)]
    at_min_ms: u64,
    /// lnet's transaction timeout in ms.
    #[arg(long, default_value_t = 10_000)]
    lnet_timeout_ms: u64,
    /// Seed for export handle cookies (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
}

fn reason(r: EvictReason) -> &'static str {
    match r {
        EvictReason::PingTimeout => "ping_timeout",
        EvictReason::VersionMismatch => "version_mismatch",
        EvictReason::Admin => "admin",
        EvictReason::RecoveryAborted => "recovery_aborted",
        EvictReason::RetainedOverflow => "retained_overflow",
    }
}

fn event_json(ev: &TargetEvent) -> Option<serde_json::Value> {
    Some(match ev {
        TargetEvent::RecoveryStarted { clients, .. } => {
            serde_json::json!({"event": "recovery_started", "clients": clients})
        }
        TargetEvent::RecoveryDone { duration, recovered, evicted, retained, .. } => serde_json::json!({
            "event": "recovery_done", "duration_ms": duration.as_secs_f64() * 1e3,
            "recovered": recovered, "evicted": evicted, "retained": retained,
        }),
        TargetEvent::Evicted { uuid, reason: r } => {
            serde_json::json!({"event": "evicted", "client": uuid, "reason": reason(*r)})
        }
        TargetEvent::Gap { transno } => serde_json::json!({"event": "gap", "transno": transno.0}),
        TargetEvent::Replayed { .. } => return None,
    })
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // A test harness that went away no longer listens: nothing to do.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// stdin's lines, read on a thread (the channel closes at EOF).
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let ms = Duration::from_millis;
    let lnet = Lnet::start(LnetConfig {
        nets: vec![NetConfig::Tcp(TcpConfig { addr: args.addr, port: args.port, ..TcpConfig::default() })],
        tunables: Tunables { transaction_timeout: ms(args.lnet_timeout_ms), ..Tunables::default() },
    })
    .await
    .context("starting lnet")?;
    let store = FileStore::open(&args.dir).with_context(|| format!("opening {}", args.dir.display()))?;
    let obd = ms(args.obd_timeout_ms);
    let ping = PingSettings { obd_timeout: obd, ping_interval_uncommitted: obd / 4, ..PingSettings::default() };
    let at_min = ms(args.at_min_ms);
    let at = AtSettings { at_min, at_early_margin: at_min, at_extra: at_min * 2, ..AtSettings::default() };
    let cfg = TargetDriverConfig {
        name: args.name.clone(),
        component: "kv".into(),
        service: ServiceConfig { at, ..ServiceConfig::new(args.name.clone(), KV_PORTAL) },
        target: TargetConfig { ping, commit_interval: ms(args.commit_interval_ms), ..TargetConfig::default() },
        seed: args.seed.unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
        }),
    };
    let driver = TargetDriver::start(&lnet, cfg, KvService, store, Arc::new(FaultInjector::new(1)))
        .context("starting the target")?;
    let mut events = driver.subscribe();
    let (epoch, recovering) = driver.with_target(|t| (t.epoch(), t.is_recovering()));
    tokio::spawn(async move {
        while let Ok(ev) = events.recv().await {
            if let Some(j) = event_json(&ev) {
                say(&format!("EVENT {j}"));
            }
        }
    });
    if recovering {
        let known = driver.with_target(|t| t.exports().len());
        say(&format!("EVENT {}", serde_json::json!({"event": "recovery_started", "clients": known})));
    }
    say(&format!("READY {} epoch={epoch} recovering={recovering}", lnet.nid()));
    let mut stdin = stdin_lines();
    while let Some(line) = stdin.recv().await {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("sync"), _) => {
                let t = driver.with_target(|t| {
                    t.sync();
                    let want = t.store().load().server.last_transno;
                    tokio::task::block_in_place(|| t.store().wait_committed(want, Duration::from_secs(30)));
                    t.store().committed()
                });
                say(&format!("SYNCED {}", Transno::get(t)));
            }
            (Some("evict"), Some(uuid)) => say(&format!("EVICTED {}", driver.evict_client(uuid))),
            (Some("metrics"), _) => say(&format!("{}END METRICS", driver.render_metrics())),
            _ => say(&format!("ERROR unknown command {line:?}")),
        }
    }
    // stdin closed: the harness is gone, and so is this target.
    driver.shutdown();
    Ok(())
}
