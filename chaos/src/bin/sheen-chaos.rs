//! `sheen-chaos`: the failure-injection harness.
//!
//! `sheen-chaos run --cycles 100 --seed 7` brings up `sheen-mds`, two
//! `sheen-oss` and two clients in network namespaces (root needed), injects
//! 100 seeded faults under a verifying workload, verifies, and prints the
//! table (`--json`: JSON lines). Exit status 0 only when nothing was lost,
//! corrupt or failed. `sheen-chaos worker` is the client process the run
//! starts; `sheen-chaos cleanup` removes what a crashed run left.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use chaos::cluster::Knobs;
use chaos::fault::FaultKind;
use chaos::run::{RunOpts, run};
use chaos::worker::WorkerArgs;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "sheen-chaos", about = "Failure injection with real Sheen processes")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// A run: cluster up, faults under load, verify, report.
    Run(RunArgs),
    /// A workload client (started by `run` inside a namespace).
    Worker(WorkerArgs),
    /// Remove namespaces and links of runs whose process is gone.
    Cleanup,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Fault cycles.
    #[arg(long, default_value_t = 10)]
    cycles: usize,
    /// Seed (schedule and workloads); default: from the clock.
    #[arg(long)]
    seed: Option<u64>,
    /// Faults to draw from (comma-separated; default all): kill-mds,
    /// kill-oss, cut-link, freeze-client, drop, delay, corrupt.
    #[arg(long, value_delimiter = ',')]
    faults: Vec<FaultKind>,
    /// OSSes, one OST each.
    #[arg(long, default_value_t = 2)]
    osts: usize,
    /// Clients.
    #[arg(long, default_value_t = 2)]
    clients: usize,
    /// Where the run's directory is made.
    #[arg(long, default_value = "/tmp")]
    dir: PathBuf,
    /// The targets' obd_timeout, seconds (eviction after 1.5x, recovery
    /// window 3x). The clients keep Lustre's defaults (at_min 5 s), so a
    /// much shorter one ends recovery before they reconnect.
    #[arg(long, default_value_t = 10.0)]
    obd_timeout: f64,
    /// Commit interval of the targets, ms.
    #[arg(long, default_value_t = 200)]
    commit_ms: u64,
    /// Seconds a frozen client stays stopped: past the eviction timeout
    /// (1.5x the targets' obd_timeout, 10 s).
    #[arg(long, default_value_t = 20.0)]
    freeze: f64,
    /// Seconds every client gets to make progress after a fault.
    #[arg(long, default_value_t = 60.0)]
    settle: f64,
    /// An operation slower than this (ms) during a fault counts as stalled.
    #[arg(long, default_value_t = 500)]
    stall_ms: u64,
    /// Pause between a client's operations, ms.
    #[arg(long, default_value_t = 2)]
    think_ms: u64,
    /// Concurrent lanes (logical clients, each its own directory and log)
    /// per client process.
    #[arg(long, default_value_t = 2)]
    lanes: u32,
    /// Take the fault kinds in turn (every kind covered) instead of at random.
    #[arg(long)]
    round_robin: bool,
    /// Keep the run's directory even when it passes.
    #[arg(long)]
    keep: bool,
    /// Clients call the library API instead of running the workload on
    /// their FUSE mounts.
    #[arg(long)]
    library: bool,
    /// JSON lines instead of the table.
    #[arg(long)]
    json: bool,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    match cli.cmd {
        Cmd::Worker(a) => rt.block_on(chaos::worker::run(a)),
        Cmd::Cleanup => {
            for n in chaos::netns::cleanup_stale()? {
                println!("removed {n}");
            }
            Ok(())
        }
        Cmd::Run(a) => {
            let seed = a.seed.unwrap_or_else(|| chaos::oplog::now_us() % 1_000_000);
            let o = RunOpts {
                cycles: a.cycles,
                seed,
                faults: if a.faults.is_empty() { FaultKind::ALL.to_vec() } else { a.faults },
                osts: a.osts.max(1),
                clients: a.clients.max(1),
                dir: a.dir,
                knobs: Knobs {
                    commit_ms: a.commit_ms,
                    obd_timeout: a.obd_timeout.clamp(1.0, 3600.0),
                    ..Knobs::default()
                },
                freeze: Duration::from_secs_f64(a.freeze.max(0.0)),
                settle: Duration::from_secs_f64(a.settle.max(1.0)),
                stall: Duration::from_millis(a.stall_ms),
                think_ms: a.think_ms,
                lanes: a.lanes.max(1),
                warmup: Duration::from_secs(1),
                round_robin: a.round_robin,
                keep: a.keep,
                library: a.library,
                program: std::env::current_exe()?,
            };
            let report = rt.block_on(run(&o))?;
            if a.json {
                for l in report.json_lines() {
                    println!("{l}");
                }
            } else {
                print!("{}", report.table());
            }
            if !report.passed() {
                // 2: only failed calls (every acknowledged operation kept).
                std::process::exit(if report.kept_data() { 2 } else { 1 });
            }
            Ok(())
        }
    }
}
