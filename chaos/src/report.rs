//! What a run found: per fault cycle the figures (fault length, time until
//! every client made progress again, the server's recovery, stalled
//! operations, errors, evictions, losses) and every finding with the
//! record and the fault it belongs to; printed as a table or JSON lines.
//!
//! Owns: [`Cycle`], [`Report`], [`judge`] (findings attributed to cycles,
//! figures computed from the operation logs) and the two renderings.
//!
//! Must not: drop a finding: anything not explained by an eviction the
//! servers counted fails the run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::admin::TargetRecovery;
use crate::cluster::FSNAME;
use crate::fault::{Fault, FaultKind};
use crate::model::Finding;
use crate::oplog::{Cause, Op, Outcome, Rec, now_us};
use crate::run::RunOpts;

/// One fault cycle.
#[derive(Debug, Clone)]
pub struct Cycle {
    /// Its number.
    pub n: usize,
    /// The fault.
    pub fault: Fault,
    /// Fault start, µs.
    pub t_fault: u64,
    /// Fault end (restart ready, link back, client continued), µs.
    pub t_end: u64,
    /// When every client had made progress (or the bound passed), µs.
    pub t_settled: u64,
    /// Clients that made no progress within the bound.
    pub stuck: Vec<u32>,
    /// Exports the servers evicted during the cycle.
    pub evictions: u64,
    /// The restarted daemon's recovery status after the cycle.
    pub recovery: Option<Vec<TargetRecovery>>,
    /// Daemons whose metrics could not be read after the cycle.
    pub unscraped: Vec<String>,
    /// Daemons that died by themselves.
    pub died: Vec<String>,
    /// Fault end to every client's first successful operation, ms.
    pub resumed_ms: Option<f64>,
    /// For a restart: the restarted daemon's ready line to every client's
    /// import of its target FULL again, ms (`Err`: why there is no figure).
    pub full_ms: Option<Result<f64, &'static str>>,
    /// Operations slower than the stall bound overlapping the cycle.
    pub stalled: usize,
    /// The slowest of them, ms.
    pub max_stall_ms: f64,
    /// Failed calls not explained by an eviction, from the fault until
    /// every client made progress again.
    pub errors: usize,
    /// Failed calls after that, until the next fault: damage the fault
    /// left behind.
    pub errors_after: usize,
    /// Failed calls of an evicted client.
    pub expected_errors: usize,
    /// Lost, corrupt or extra things attributed to this cycle.
    pub lost: usize,
}

impl Cycle {
    /// Whether nothing went wrong in it.
    pub fn passed(&self) -> bool {
        self.stuck.is_empty() && self.died.is_empty() && self.errors + self.errors_after == 0 && self.lost == 0
    }

    fn server_recovery(&self) -> String {
        match &self.recovery {
            None => "-".into(),
            Some(t) if t.is_empty() => "no metrics".into(),
            Some(t) => t
                .iter()
                .map(|r| {
                    if r.recovering {
                        format!("{}: recovering", r.target)
                    } else if r.finished == 0 {
                        format!("{}: none", r.target)
                    } else {
                        format!("{}: {:.0} ms", r.target, r.duration * 1000.0)
                    }
                })
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// One finding, judged.
#[derive(Debug, Clone, Serialize)]
pub struct Judged {
    /// The client.
    pub client: u32,
    /// The cycle it belongs to (None: before the first fault).
    pub cycle: Option<usize>,
    /// Explained by the client's eviction.
    pub expected: bool,
    /// Its class.
    pub class: &'static str,
    /// What happened, in words.
    pub text: String,
    /// The finding itself.
    pub finding: Finding,
}

/// A run's outcome.
#[derive(Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Cycles asked for.
    pub cycles_asked: usize,
    /// The faults drawn from.
    pub faults: Vec<FaultKind>,
    /// The run's directory (logs, data).
    pub dir: String,
    /// Whether the directory was kept.
    pub dir_kept: bool,
    /// When the run started, µs.
    pub t_start: u64,
    /// The cycles.
    pub cycles: Vec<Cycle>,
    /// Raw findings by client.
    pub findings: Vec<(u32, Finding)>,
    /// Judged findings.
    pub judged: Vec<Judged>,
    /// Operations the clients completed.
    pub ops: usize,
    /// What stopped the harness itself.
    pub harness_errors: Vec<String>,
    /// What `sheen-mds check` found wrong in the MDT's store at the end.
    pub check_problems: Vec<String>,
}

impl Report {
    /// An empty report of a run with `o` in `dir`.
    pub fn new(o: &RunOpts, dir: &Path) -> Report {
        Report {
            seed: o.seed,
            cycles_asked: o.cycles,
            faults: o.faults.clone(),
            dir: dir.display().to_string(),
            dir_kept: true,
            t_start: now_us(),
            cycles: Vec::new(),
            findings: Vec::new(),
            judged: Vec::new(),
            ops: 0,
            harness_errors: Vec::new(),
            check_problems: Vec::new(),
        }
    }

    /// Whether the run passed: every cycle ran and passed, nothing lost.
    pub fn passed(&self) -> bool {
        self.harness_errors.is_empty()
            && self.check_problems.is_empty()
            && self.cycles.len() == self.cycles_asked
            && self.cycles.iter().all(Cycle::passed)
            && self.judged.iter().all(|j| j.expected)
    }

    /// Whether every acknowledged operation was kept: the run finished,
    /// nothing was lost, corrupt, extra or run twice, no client got stuck,
    /// no daemon died and the namespace check is clean — failed calls
    /// (errors an application saw) aside. What CI gates on while failed
    /// calls still have open causes; [`Report::passed`] is the full verdict.
    pub fn kept_data(&self) -> bool {
        self.harness_errors.is_empty()
            && self.check_problems.is_empty()
            && self.cycles.len() == self.cycles_asked
            && self.cycles.iter().all(|c| c.stuck.is_empty() && c.died.is_empty() && c.lost == 0)
            && self.judged.iter().all(|j| j.expected || j.class == "failed-call")
    }

    fn rel(&self, t: u64) -> f64 {
        t.saturating_sub(self.t_start) as f64 / 1e6
    }
}

/// Failed calls are listed per (cycle, client, errno, operation, expected).
type GroupKey = (Option<usize>, u32, i32, &'static str, bool);

/// Findings of one class listed in the table at most.
const LIST_MAX: usize = 40;

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Mount { .. } => "mount",
        Op::Mkdir { .. } => "mkdir",
        Op::Rmdir { .. } => "rmdir",
        Op::Create { .. } => "create",
        Op::Write { .. } => "write",
        Op::Read { .. } => "read",
        Op::Fsync { .. } => "fsync",
        Op::Rename { .. } => "rename",
        Op::Unlink { .. } => "unlink",
        Op::Chmod { .. } => "chmod",
        Op::Open { .. } => "open",
        Op::Close { .. } => "close",
        Op::Resolve { .. } => "lookup",
        Op::Import { .. } => "import",
    }
}

fn describe_op(op: &Op) -> String {
    match op {
        Op::Mount { root, fuse } => format!("mkdir {root} ({} mount)", if *fuse { "FUSE" } else { "library" }),
        Op::Mkdir { path } => format!("mkdir {path}"),
        Op::Rmdir { path } => format!("rmdir {path}"),
        Op::Create { path, file, stripes } => format!("create {path} (file {file}, {stripes} stripes)"),
        Op::Write { file, blk, generation } => format!("write file {file} block {blk} generation {generation}"),
        Op::Read { file, blk, found } => format!("read file {file} block {blk} -> {found:?}"),
        Op::Fsync { file } => format!("fsync file {file}"),
        Op::Rename { from, to, .. } => format!("rename {from} -> {to}"),
        Op::Unlink { path, .. } => format!("unlink {path}"),
        Op::Chmod { path, mode } => format!("chmod {mode:o} {path}"),
        Op::Open { path, .. } => format!("open {path}"),
        Op::Close { file } => format!("close file {file}"),
        Op::Resolve { path, found, .. } => format!("lookup {path} -> {found:?}"),
        Op::Import { target, state } => format!("import {target} -> {state}"),
    }
}

fn rec_text(r: &Report, rec: &Rec) -> String {
    let res = match &rec.outcome {
        Outcome::Ok => "ok".to_string(),
        Outcome::Err { errno, msg, .. } => format!("errno {errno} ({msg})"),
    };
    format!(
        "c{} #{} {} at +{:.3}s..+{:.3}s: {res}",
        rec.client,
        rec.seq,
        describe_op(&rec.op),
        r.rel(rec.t0),
        r.rel(rec.t1)
    )
}

/// The cycle whose fault had started when `t` was reached (the last one).
fn cycle_at(cycles: &[Cycle], t: u64) -> Option<usize> {
    cycles.iter().rposition(|c| c.t_fault <= t)
}

/// The first cycle whose fault started at or after `t` (what could lose
/// an operation acknowledged at `t`), else the last.
fn cycle_after(cycles: &[Cycle], t0: u64) -> Option<usize> {
    cycles.iter().position(|c| c.t_fault >= t0).or(cycles.len().checked_sub(1))
}

/// Whether `f` hit client process `client`.
fn fault_involves(f: &Fault, client: u32) -> bool {
    match f {
        Fault::FreezeClient { client: c, .. } => *c as u32 == client,
        Fault::CutLink { node, .. } => *node == format!("c{client}"),
        _ => false,
    }
}

/// The target a fault restarts.
fn restarted_target(f: &Fault) -> Option<String> {
    match f {
        Fault::KillMds { .. } => Some(format!("{FSNAME}-MDT0000")),
        Fault::KillOss { oss, .. } => Some(client::osc::ost_name(FSNAME, *oss as u32)),
        _ => None,
    }
}

/// From `ready` to the last client's import of `target` reaching FULL
/// after `fault`, ms; the clients are those that log import states.
fn full_again(recs: &[Rec], target: &str, fault: u64, ready: u64) -> Result<f64, &'static str> {
    let mut watchers: Vec<u32> = recs
        .iter()
        .filter(|x| matches!(&x.op, Op::Import { target: t, .. } if t == target))
        .map(|x| x.client)
        .collect();
    watchers.sort_unstable();
    watchers.dedup();
    if watchers.is_empty() {
        return Err("no import states");
    }
    let mut worst = 0.0f64;
    for w in watchers {
        let full = recs
            .iter()
            .filter(|x| x.client == w && x.t1 > fault)
            .find(|x| matches!(&x.op, Op::Import { target: t, state } if t == target && state == "Full"));
        match full {
            Some(x) => worst = worst.max(x.t1.saturating_sub(ready) as f64 / 1000.0),
            None => return Err("never"),
        }
    }
    Ok(worst)
}

/// Attributes findings to cycles and computes each cycle's figures.
pub fn judge(r: &mut Report, recs: &[Rec], stall: Duration, lanes: u32) {
    r.ops = recs.len();
    let stall_us = stall.as_micros() as u64;
    let clients: Vec<u32> = {
        let mut v: Vec<u32> = recs.iter().map(|x| x.client).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    for c in &mut r.cycles {
        let mut worst: Option<f64> = Some(0.0);
        for &cl in &clients {
            let first = recs
                .iter()
                .filter(|x| x.client == cl && x.ok() && x.t1 > c.t_end && !matches!(x.op, Op::Import { .. }))
                .map(|x| x.t1)
                .min();
            worst = match (worst, first) {
                (Some(w), Some(t)) => Some(w.max((t - c.t_end) as f64 / 1000.0)),
                _ => None,
            };
        }
        c.resumed_ms = worst;
        c.full_ms = restarted_target(&c.fault).map(|t| full_again(recs, &t, c.t_fault, c.t_end));
        let slow: Vec<u64> = recs
            .iter()
            .filter(|x| x.t1 > c.t_fault && x.t0 < c.t_settled && x.t1 - x.t0 > stall_us)
            .filter(|x| !matches!(x.op, Op::Import { .. }))
            .map(|x| x.t1 - x.t0)
            .collect();
        c.stalled = slow.len();
        c.max_stall_ms = slow.iter().copied().max().unwrap_or(0) as f64 / 1000.0;
    }
    let findings = std::mem::take(&mut r.findings);
    for (client, f) in &findings {
        let (class, cycle, text) = match f {
            Finding::CallFailed { rec, applied } => {
                let k = cycle_at(&r.cycles, rec.t1);
                let how = if *applied { " (it took effect all the same)" } else { "" };
                ("failed-call", k, format!("{}{how}", rec_text(r, rec)))
            }
            Finding::LostOp { rec, committed, detail } => {
                let class = if *committed { "lost-committed-op" } else { "lost-acked-op" };
                let k = cycle_after(&r.cycles, rec.t0);
                (class, k, format!("{}; now {detail}", rec_text(r, rec)))
            }
            Finding::Extra { path, removed_by, detail } => {
                let (k, by) = match removed_by {
                    Some(rec) => (cycle_after(&r.cycles, rec.t0), format!("removed by {}", rec_text(r, rec))),
                    None => (None, "never made by this client".to_string()),
                };
                ("extra-entry", k, format!("{path} exists ({detail}); {by} (lost, or ran twice)"))
            }
            Finding::LostWrite { path, blk, rec, fsynced, found, .. } => {
                let class = if *fsynced { "lost-fsynced-write" } else { "lost-acked-write" };
                let k = cycle_after(&r.cycles, rec.t0);
                (class, k, format!("{path} block {blk}: {}; holds {found:?}", rec_text(r, rec)))
            }
            Finding::Corrupt { path, blk, found, rec, .. } => {
                let k = rec.as_ref().and_then(|x| cycle_at(&r.cycles, x.t1));
                let when = rec.as_ref().map_or("at the end".to_string(), |x| rec_text(r, x));
                ("corrupt", k, format!("{path} block {blk} holds {found:?} ({when})"))
            }
            Finding::BadRead { rec, allowed } => {
                let k = cycle_at(&r.cycles, rec.t1);
                ("bad-read", k, format!("{}; allowed generations {allowed:?} (0: hole)", rec_text(r, rec)))
            }
            Finding::RanTwice { rec } => {
                let k = cycle_at(&r.cycles, rec.t1);
                ("ran-twice", k, format!("{}; the lookup after it shows it took effect", rec_text(r, rec)))
            }
            Finding::Unreadable { path, why } => ("unreadable", None, format!("{path}: {why}")),
        };
        // An evicted client may get errors, but only for what it lost:
        // a call through an open the eviction lost, a request in flight
        // when the target evicted it (its outcome unknown to the client;
        // the model took what the servers hold), or, on the frozen or cut
        // client itself, a call that did not take effect. Each needs an
        // eviction the servers counted.
        let cause = match f {
            Finding::CallFailed { rec, .. } => match &rec.outcome {
                Outcome::Err { cause, .. } => *cause,
                Outcome::Ok => None,
            },
            _ => None,
        };
        let evicted_by = |k: usize| r.cycles[..=k].iter().any(|c| c.evictions > 0);
        let evicted_at = |k: usize| r.cycles[k.saturating_sub(1)..=k].iter().any(|c| c.evictions > 0);
        let lost_it = matches!(f, Finding::CallFailed { applied: false, .. });
        let (class, expected) = match (cause, cycle) {
            (Some(Cause::LostOpen), Some(k)) if evicted_by(k) => ("lost-open", true),
            (Some(Cause::Evicted), Some(k)) if evicted_at(k) => ("evicted-in-flight", true),
            (_, Some(k)) if lost_it => {
                let c = &r.cycles[k];
                (class, c.evictions > 0 && fault_involves(&c.fault, *client / lanes.max(1)))
            }
            _ => (class, false),
        };
        if let Some(k) = cycle {
            let c = &mut r.cycles[k];
            let late = match f {
                Finding::CallFailed { rec, .. } => rec.t1 > c.t_settled,
                _ => false,
            };
            let call = matches!(f, Finding::CallFailed { .. });
            match (call, expected) {
                (true, true) => c.expected_errors += 1,
                (true, false) if late => c.errors_after += 1,
                (true, false) => c.errors += 1,
                _ => c.lost += 1,
            }
        }
        let suffix =
            cycle.map_or(" [before the first fault]".to_string(), |k| format!(" [cycle {k}: {}]", r.cycles[k].fault));
        r.judged.push(Judged {
            client: *client,
            cycle,
            expected,
            class,
            text: text.trim_end().to_string() + &suffix,
            finding: f.clone(),
        });
    }
    r.findings = findings;
}

fn ms(v: Option<f64>) -> String {
    v.map_or("never".into(), |v| format!("{v:.0}"))
}

impl Report {
    /// The human table: cycles, a summary per fault kind, the findings.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ =
            writeln!(s, "sheen-chaos seed {} — {} of {} cycles run", self.seed, self.cycles.len(), self.cycles_asked);
        let _ = writeln!(
            s,
            "{:>5}  {:<46} {:>8} {:>10} {:>7} {:>9} {:>10} {:>5} {:>5}  {:<7} server recovery",
            "cycle",
            "fault",
            "fault ms",
            "resumed ms",
            "stalled",
            "max stall",
            "errors d/a",
            "evict",
            "lost",
            "verdict"
        );
        for c in &self.cycles {
            let _ = writeln!(
                s,
                "{:>5}  {:<46} {:>8.0} {:>10} {:>8} {:>7} {:>9.0} {:>10} {:>5} {:>5}  {:<7} {}",
                c.n,
                c.fault.to_string(),
                (c.t_end.saturating_sub(c.t_fault)) as f64 / 1000.0,
                ms(c.resumed_ms),
                match c.full_ms {
                    None => "-".to_string(),
                    Some(Ok(v)) => format!("{v:.0}"),
                    Some(Err(why)) => why.to_string(),
                },
                c.stalled,
                c.max_stall_ms,
                if c.expected_errors > 0 {
                    format!("{}/{}+{}e", c.errors, c.errors_after, c.expected_errors)
                } else {
                    format!("{}/{}", c.errors, c.errors_after)
                },
                c.evictions,
                c.lost,
                if c.passed() { "pass" } else { "FAIL" },
                c.server_recovery(),
            );
        }
        let _ = writeln!(
            s,
            "(resumed: fault end to every client's next successful operation; FULL: restarted daemon ready to \
             every client's import of its target FULL; stalled: operations over the \
             stall bound overlapping the fault; errors d/a: failed calls during the fault and recovery / after, \
             until the next fault; e: of an evicted client; lost: lost, corrupt, extra or twice-run)"
        );
        let _ = writeln!(s, "\nper fault kind:");
        let _ = writeln!(
            s,
            "{:<14} {:>6} {:>6} {:>14} {:>14} {:>7} {:>6} {:>5}",
            "fault", "cycles", "passed", "resumed ms p50", "resumed ms max", "stalled", "errors", "lost"
        );
        for (kind, v) in self.by_kind() {
            let mut res: Vec<f64> = v.iter().filter_map(|c| c.resumed_ms).collect();
            res.sort_by(f64::total_cmp);
            let p50 = res.get(res.len() / 2).copied();
            let never = v.iter().any(|c| c.resumed_ms.is_none());
            let max = if never { None } else { res.last().copied() };
            let _ = writeln!(
                s,
                "{:<14} {:>6} {:>6} {:>14} {:>14} {:>7} {:>6} {:>5}",
                kind.name(),
                v.len(),
                v.iter().filter(|c| c.passed()).count(),
                ms(p50),
                ms(max),
                v.iter().map(|c| c.stalled).sum::<usize>(),
                v.iter().map(|c| c.errors + c.errors_after).sum::<usize>(),
                v.iter().map(|c| c.lost).sum::<usize>(),
            );
        }
        let mut classes: BTreeMap<&str, usize> = BTreeMap::new();
        for j in self.judged.iter().filter(|j| !j.expected) {
            *classes.entry(j.class).or_default() += 1;
        }
        let _ = writeln!(s, "\n{} operations logged; findings: {classes:?}", self.ops);
        // Failed calls grouped (cycle, client, errno, operation); the rest
        // one by one, at most LIST_MAX per class.
        let mut groups: BTreeMap<GroupKey, (usize, &Judged)> = BTreeMap::new();
        let mut shown: BTreeMap<&str, usize> = BTreeMap::new();
        for j in &self.judged {
            if let Finding::CallFailed { rec, .. } = &j.finding {
                let errno = match &rec.outcome {
                    Outcome::Err { errno, .. } => *errno,
                    Outcome::Ok => 0,
                };
                groups.entry((j.cycle, j.client, errno, op_name(&rec.op), j.expected)).or_insert((0, j)).0 += 1;
                continue;
            }
            let n = shown.entry(j.class).or_default();
            *n += 1;
            if *n <= LIST_MAX {
                let tag = if j.expected { "expected (evicted)" } else { j.class };
                let _ = writeln!(s, "  {tag}: {}", j.text);
            }
        }
        for (class, n) in shown.iter().filter(|(_, n)| **n > LIST_MAX) {
            let _ = writeln!(s, "  {class}: ... and {} more (--json lists all)", n - LIST_MAX);
        }
        for ((_, _, _, _, expected), (n, first)) in &groups {
            let tag = match (*expected, first.class) {
                (true, "lost-open") => "expected (lost-open: opened before the client's eviction)",
                (true, "evicted-in-flight") => "expected (evicted-in-flight: outcome unknown to the client)",
                (true, _) => "expected (evicted)",
                (false, c) => c,
            };
            let more = if *n > 1 { format!(" (x{n}; the first:)") } else { String::new() };
            let _ = writeln!(s, "  {tag}{more} {}", first.text);
        }
        for c in &self.cycles {
            for d in &c.died {
                let _ = writeln!(s, "  daemon died: cycle {}: {d}", c.n);
            }
            if !c.stuck.is_empty() {
                let _ = writeln!(s, "  stuck: cycle {}: clients {:?} made no progress after {}", c.n, c.stuck, c.fault);
            }
        }
        for p in &self.check_problems {
            let _ = writeln!(s, "  namespace check (sheen-mds check): {p}");
        }
        for e in &self.harness_errors {
            let _ = writeln!(s, "  harness: {e}");
        }
        let _ = writeln!(
            s,
            "{} — seed {}{}",
            if self.passed() { "PASS" } else { "FAIL" },
            self.seed,
            if self.dir_kept { format!("; logs and data in {}", self.dir) } else { String::new() }
        );
        s
    }

    fn by_kind(&self) -> BTreeMap<FaultKind, Vec<&Cycle>> {
        let mut m: BTreeMap<FaultKind, Vec<&Cycle>> = BTreeMap::new();
        for c in &self.cycles {
            m.entry(c.fault.kind()).or_default().push(c);
        }
        m
    }

    /// JSON lines: one per cycle, one per finding, one summary.
    pub fn json_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.cycles {
            out.push(
                json!({
                    "cycle": c.n, "fault": c.fault.to_string(), "kind": c.fault.kind(),
                    "fault_ms": (c.t_end.saturating_sub(c.t_fault)) as f64 / 1000.0,
                    "resumed_ms": c.resumed_ms,
                    "full_ms": c.full_ms.and_then(Result::ok), "stalled": c.stalled, "max_stall_ms": c.max_stall_ms,
                    "errors": c.errors, "errors_after": c.errors_after, "expected_errors": c.expected_errors, "evictions": c.evictions,
                    "lost": c.lost, "stuck": c.stuck, "died": c.died, "passed": c.passed(),
                    "server_recovery": c.recovery.as_ref().map(|v| v.iter().map(|t| json!({
                        "target": t.target, "recovering": t.recovering, "finished": t.finished,
                        "duration_s": t.duration, "evicted_clients": t.evicted_clients,
                    })).collect::<Vec<_>>()),
                })
                .to_string(),
            );
        }
        for j in &self.judged {
            out.push(json!({ "finding": j }).to_string());
        }
        out.push(
            json!({
                "summary": true, "seed": self.seed, "cycles": self.cycles.len(), "cycles_asked": self.cycles_asked,
                "passed": self.passed(), "ops": self.ops,
                "unexpected_findings": self.judged.iter().filter(|j| !j.expected).count(),
                "harness_errors": self.harness_errors, "check_problems": self.check_problems, "dir": self.dir_kept.then_some(&self.dir),
            })
            .to_string(),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::cluster::Knobs;

    fn opts() -> RunOpts {
        RunOpts {
            cycles: 2,
            seed: 1,
            faults: FaultKind::ALL.to_vec(),
            osts: 2,
            clients: 2,
            dir: PathBuf::from("/tmp"),
            knobs: Knobs::default(),
            freeze: Duration::from_secs(1),
            settle: Duration::from_secs(1),
            stall: Duration::from_millis(500),
            think_ms: 0,
            lanes: 2,
            warmup: Duration::ZERO,
            round_robin: false,
            keep: false,
            library: false,
            program: PathBuf::new(),
        }
    }

    fn cycle(n: usize, fault: Fault, t: u64, evictions: u64) -> Cycle {
        Cycle {
            n,
            fault,
            t_fault: t,
            t_end: t + 1_000_000,
            t_settled: t + 2_000_000,
            stuck: vec![],
            evictions,
            recovery: None,
            unscraped: vec![],
            died: vec![],
            resumed_ms: None,
            full_ms: None,
            stalled: 0,
            max_stall_ms: 0.0,
            errors: 0,
            errors_after: 0,
            expected_errors: 0,
            lost: 0,
        }
    }

    fn rec(client: u32, seq: u64, t0: u64, t1: u64, op: Op, ok: bool) -> Rec {
        let outcome = if ok { Outcome::Ok } else { Outcome::Err { errno: 5, msg: "eio".into(), cause: None } };
        Rec { client, seq, t0, t1, op, outcome }
    }

    #[test]
    fn figures_and_attribution() {
        let mut r = Report::new(&opts(), Path::new("/tmp/x"));
        let s = 10_000_000;
        r.cycles.push(cycle(0, Fault::KillOss { oss: 1, down: Duration::ZERO }, s, 0));
        r.cycles.push(cycle(1, Fault::FreezeClient { client: 1, length: Duration::ZERO }, s + 5_000_000, 1));
        let w = Op::Write { file: 1, blk: 0, generation: 1 };
        let full = || Op::Import { target: "chaos-OST0001".into(), state: "Full".into() };
        let recs = vec![
            // Client 0 stalls across the restart, then resumes 300 ms after the ready line.
            rec(0, 0, s - 100_000, s + 1_300_000, w.clone(), true),
            rec(0, 1, s + 1_100_000, s + 1_200_000, full(), true),
            rec(2, 0, s + 1_000_000, s + 1_050_000, w.clone(), true),
            rec(2, 1, s + 1_400_000, s + 1_500_000, full(), true),
            // A failure during cycle 0 and one after it settled.
            rec(2, 2, s + 1_500_000, s + 1_600_000, w.clone(), false),
            rec(2, 3, s + 2_500_000, s + 2_600_000, w.clone(), false),
            // Client 2 (process 1) fails while frozen and evicted: expected.
            rec(2, 4, s + 5_100_000, s + 6_100_000, w.clone(), false),
            rec(2, 5, s + 6_200_000, s + 6_300_000, w.clone(), true),
            rec(0, 2, s + 6_200_000, s + 6_250_000, w.clone(), true),
        ];
        let m2 = crate::model::Model::build(2, &recs.iter().filter(|x| x.client == 2).cloned().collect::<Vec<_>>());
        r.findings = m2.findings.iter().map(|f| (2, f.clone())).collect();
        judge(&mut r, &recs, Duration::from_millis(500), 2);
        let c0 = &r.cycles[0];
        assert_eq!(c0.resumed_ms, Some(300.0));
        assert_eq!(c0.full_ms, Some(Ok(500.0)));
        assert_eq!((c0.stalled, c0.errors, c0.errors_after), (1, 1, 1));
        let c1 = &r.cycles[1];
        assert_eq!((c1.errors, c1.expected_errors), (0, 1));
        assert!(!r.passed());
    }

    #[test]
    fn eviction_causes_are_expected_only_after_a_counted_eviction() {
        let mut r = Report::new(&opts(), Path::new("/tmp/x"));
        let s = 10_000_000;
        // Cycle 0 evicts nobody, cycle 1 (a freeze of client process 1)
        // evicts; cycle 2, an MDS restart, evicts nobody.
        r.cycles.push(cycle(0, Fault::KillOss { oss: 1, down: Duration::ZERO }, s, 0));
        r.cycles.push(cycle(1, Fault::FreezeClient { client: 1, length: Duration::ZERO }, s + 5_000_000, 1));
        r.cycles.push(cycle(2, Fault::KillMds { down: Duration::ZERO }, s + 10_000_000, 0));
        let err = |cause| Outcome::Err { errno: 5, msg: "eio".into(), cause };
        let close =
            |seq, t, cause| Rec { client: 0, seq, t0: t, t1: t + 1000, op: Op::Close { file: 1 }, outcome: err(cause) };
        let recs = vec![
            // A lost open before any eviction: a failure.
            close(0, s + 1_000_000, Some(Cause::LostOpen)),
            // After cycle 1's eviction, in cycle 2 (the MDS restart), on a
            // client that was not the one frozen: lost by the eviction.
            close(1, s + 11_000_000, Some(Cause::LostOpen)),
            // In flight at an eviction, in cycle 1: outcome unknown.
            close(2, s + 5_500_000, Some(Cause::Evicted)),
            // In flight at an "eviction" in cycle 0, which evicted nobody.
            close(3, s + 1_500_000, Some(Cause::Evicted)),
            // No cause, in cycle 2: a failure.
            close(4, s + 11_500_000, None),
        ];
        let m = crate::model::Model::build(0, &recs);
        r.findings = m.findings.iter().map(|f| (0, f.clone())).collect();
        judge(&mut r, &recs, Duration::from_millis(500), 2);
        let classes: Vec<(u64, &str, bool)> = r
            .judged
            .iter()
            .filter_map(|j| match &j.finding {
                Finding::CallFailed { rec, .. } => Some((rec.seq, j.class, j.expected)),
                _ => None,
            })
            .collect();
        assert_eq!(
            classes,
            vec![
                (0, "failed-call", false),
                (1, "lost-open", true),
                (2, "evicted-in-flight", true),
                (3, "failed-call", false),
                (4, "failed-call", false),
            ]
        );
        assert_eq!((r.cycles[0].errors, r.cycles[1].expected_errors, r.cycles[2].expected_errors), (2, 1, 1));
        assert!(!r.passed());
    }
}
