//! One harness run: bring the cluster up, start the clients, inject the
//! scheduled faults one after another while the workload runs, stop the
//! clients, verify, and judge.
//!
//! Owns: [`RunOpts`], [`run`] (the controller's sequence), injecting one
//! [`Fault`] and waiting (bounded) until every client made progress again,
//! reading the servers' recovery and eviction metrics around each fault,
//! and handing cycles and findings to [`crate::report`].
//!
//! Must not: weaken a check: every failed call, lost or corrupt block and
//! missing or extra entry reaches the report; only errors of a client
//! the servers evicted are marked expected.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use client::Sheen;

use crate::admin;
use crate::cluster::{Cluster, FSNAME, Knobs};
use crate::fault::{Fault, FaultKind, Schedule, Shape};
use crate::netns;
use crate::oplog::{Rec, now_us, read_log};
use crate::report::{Cycle, Report, judge};
use crate::verify::verify;

/// What a run does.
#[derive(Debug, Clone)]
pub struct RunOpts {
    /// Fault cycles.
    pub cycles: usize,
    /// The seed of the schedule and of the clients' workloads.
    pub seed: u64,
    /// The faults drawn from.
    pub faults: Vec<FaultKind>,
    /// OSSes (one OST each).
    pub osts: usize,
    /// Clients.
    pub clients: usize,
    /// Where the run's directory is made.
    pub dir: PathBuf,
    /// Daemon timeouts and intervals.
    pub knobs: Knobs,
    /// How long a frozen client stays stopped.
    pub freeze: Duration,
    /// How long every client gets to make progress after a fault.
    pub settle: Duration,
    /// An operation slower than this overlapping a fault is "stalled".
    pub stall: Duration,
    /// Pause between a client's operations, milliseconds.
    pub think_ms: u64,
    /// Concurrent lanes (logical clients) per client process.
    pub lanes: u32,
    /// Workload before the first fault.
    pub warmup: Duration,
    /// Take the fault kinds in turn instead of at random.
    pub round_robin: bool,
    /// Keep the run's directory even when it passes.
    pub keep: bool,
    /// Clients call the library API instead of their FUSE mounts.
    pub library: bool,
    /// The `sheen-chaos` program (its `worker` subcommand runs the clients).
    pub program: PathBuf,
}

async fn scrape_all(c: &Cluster) -> Vec<(String, Option<admin::Metrics>)> {
    let mut out = Vec::new();
    for d in std::iter::once(&c.mds).chain(c.oss.iter()) {
        out.push((d.name.clone(), admin::scrape(d.admin).await.ok()));
    }
    out
}

fn evictions(m: &[(String, Option<admin::Metrics>)]) -> u64 {
    m.iter().filter_map(|(_, m)| m.as_ref()).map(admin::Metrics::evictions).sum()
}

/// Injects `f`; returns (fault start, fault end) in µs: for a restart,
/// the end is the restarted daemon's ready line.
async fn inject(c: &mut Cluster, f: &Fault) -> Result<(u64, u64)> {
    let t0 = now_us();
    match f {
        Fault::KillMds { down } => {
            c.mds.kill9().await?;
            tokio::time::sleep(*down).await;
            let net = &c.net;
            c.mds.start(net).await?;
            Ok((t0, c.mds.proc.as_ref().map_or(now_us(), |p| p.ready_us)))
        }
        Fault::KillOss { oss, down } => {
            c.daemon(&format!("oss{oss}"))?.kill9().await?;
            tokio::time::sleep(*down).await;
            c.start_oss(*oss).await?;
            Ok((t0, c.oss[*oss].proc.as_ref().map_or(now_us(), |p| p.ready_us)))
        }
        Fault::CutLink { node, length } => {
            c.net.cut(node)?;
            tokio::time::sleep(*length).await;
            c.net.restore(node)?;
            Ok((t0, now_us()))
        }
        Fault::FreezeClient { client, length } => {
            let w = c.workers.get(*client).context("no such client")?;
            w.freeze()?;
            tokio::time::sleep(*length).await;
            w.thaw()?;
            Ok((t0, now_us()))
        }
        Fault::Point { daemon, point, trigger, length, .. } => {
            let addr: SocketAddr = c.daemon(daemon)?.admin;
            admin::arm(addr, point, trigger).await?;
            tokio::time::sleep(*length).await;
            admin::clear(addr).await?;
            Ok((t0, now_us()))
        }
    }
}

/// A fresh run directory under `base`.
fn run_dir(base: &Path) -> Result<PathBuf> {
    let d = base.join(format!("sheen-chaos-{}", std::process::id()));
    if d.exists() {
        std::fs::remove_dir_all(&d).with_context(|| d.display().to_string())?;
    }
    std::fs::create_dir_all(&d).with_context(|| d.display().to_string())?;
    Ok(d)
}

/// Runs the harness; the report says what passed and what did not.
pub async fn run(o: &RunOpts) -> Result<Report> {
    let stale = netns::cleanup_stale()?;
    if !stale.is_empty() {
        tracing::warn!(?stale, "removed what an earlier run left");
    }
    let dir = run_dir(&o.dir)?;
    let subnet = (std::process::id() % 250) as u8 + 1;
    let mut c = Cluster::start(&dir, o.osts, o.clients, o.knobs, subnet).await?;
    let mut report = Report::new(o, &dir);
    let res = cycles(&mut c, o, &mut report).await;
    if let Err(e) = &res {
        report.harness_errors.push(format!("{e:#}"));
    }
    // Stop the clients: each finishes its operation and closes its files.
    for w in &mut c.workers {
        let how = w.stop(o.settle).await;
        if how != "exited" {
            report.harness_errors.push(format!("client c{}: {how}", w.client));
        }
    }
    // Verify from a fresh mount in the root namespace.
    let logs: Vec<(u32, PathBuf)> = c.workers.iter().flat_map(|w| w.logs.clone()).collect();
    match Sheen::mount(&c.lnet, c.mds.nid, FSNAME).await {
        Ok(fs) => {
            let refs: Vec<(u32, &Path)> = logs.iter().map(|(i, p)| (*i, p.as_path())).collect();
            match verify(&fs, &refs).await {
                Ok(v) => {
                    for (client, _, findings) in v {
                        report.findings.extend(findings.into_iter().map(|f| (client, f)));
                    }
                }
                Err(e) => report.harness_errors.push(format!("verify: {e:#}")),
            }
        }
        Err(e) => report.harness_errors.push(format!("mounting to verify: {e}")),
    }
    let mut recs: Vec<Rec> = Vec::new();
    for (_, p) in &logs {
        recs.extend(read_log(p).unwrap_or_default());
    }
    judge(&mut report, &recs, o.stall, o.lanes);
    c.stop_servers().await;
    match check_namespace(&dir.join("mds").join("mdt0")) {
        Ok(problems) => report.check_problems = problems,
        Err(e) => report.harness_errors.push(format!("sheen-mds check: {e:#}")),
    }
    let pass = report.passed();
    drop(c);
    if pass && !o.keep {
        let _ = std::fs::remove_dir_all(&dir);
        report.dir_kept = false;
    }
    Ok(report)
}

async fn cycles(c: &mut Cluster, o: &RunOpts, report: &mut Report) -> Result<()> {
    c.start_workers(&o.program, o.seed, o.think_ms, o.lanes, o.library).await?;
    let shape = Shape { osts: o.osts, clients: o.clients, freeze: o.freeze };
    let mut sched = Schedule::new(o.seed, o.faults.clone(), shape);
    if o.round_robin {
        sched = sched.round_robin();
    }
    tokio::time::sleep(o.warmup).await;
    let mut before = scrape_all(c).await;
    for n in 0..o.cycles {
        tokio::time::sleep(sched.pause()).await;
        let fault = sched.next_fault();
        tracing::info!(cycle = n, %fault, "injecting");
        let (t_fault, t_end) = inject(c, &fault).await.with_context(|| format!("cycle {n}: {fault}"))?;
        let mut stuck = Vec::new();
        for w in &mut c.workers {
            if !w.wait_progress(t_end, o.settle).await {
                stuck.push(w.client);
            }
        }
        let t_settled = now_us();
        let after = scrape_all(c).await;
        let mut died = Vec::new();
        for d in std::iter::once(&mut c.mds).chain(c.oss.iter_mut()) {
            if let Some(st) = d.exited() {
                died.push(format!("{} exited by itself ({st})", d.name));
            }
        }
        let recovery = restarted(&fault).and_then(|name| {
            let m = after.iter().find(|(n, _)| *n == name)?.1.as_ref()?;
            Some(m.recovery())
        });
        report.cycles.push(Cycle {
            n,
            fault: fault.clone(),
            t_fault,
            t_end,
            t_settled,
            stuck,
            evictions: evictions(&after).saturating_sub(evictions(&before)),
            recovery,
            unscraped: after.iter().filter(|(_, m)| m.is_none()).map(|(n, _)| n.clone()).collect(),
            died: died.clone(),
            resumed_ms: None,
            full_ms: None,
            stalled: 0,
            max_stall_ms: 0.0,
            errors: 0,
            errors_after: 0,
            expected_errors: 0,
            lost: 0,
        });
        if !died.is_empty() {
            anyhow::bail!("cycle {n}: {}", died.join("; "));
        }
        before = after;
    }
    Ok(())
}

/// `sheen-mds check` over the MDT's store at rest: directories, inodes
/// and OST objects agree. Returns its problems.
fn check_namespace(store: &Path) -> Result<Vec<String>> {
    let bin = client::up::find_binary("sheen-mds")?;
    let out = std::process::Command::new(bin).args(["check", "--json", "--store"]).arg(store).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim())
        .with_context(|| format!("output {text:?}; stderr {}", String::from_utf8_lossy(&out.stderr)))?;
    Ok(v["problems"].as_array().map_or_else(Vec::new, |p| p.iter().map(|x| x.to_string()).collect()))
}

/// The daemon a fault restarts.
fn restarted(f: &Fault) -> Option<String> {
    match f {
        Fault::KillMds { .. } => Some("mds".into()),
        Fault::KillOss { oss, .. } => Some(format!("oss{oss}")),
        _ => None,
    }
}
