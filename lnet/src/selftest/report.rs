//! Turning samples into figures: the human table and the `--json` lines.
//!
//! The JSON form is DESIGN.md's benchmark line, one per test:
//! `{"bench":"lnet.tcp.brw_write","value":2.41,"unit":"GB/s","baseline":"raw_tcp","baseline_value":2.60,"ratio":0.93}`;
//! ping reports `msg/s` and adds `p50_us` and `p99_us`.

use std::fmt::Write as _;

use serde::Serialize;

use super::{Sample, Test};

/// The figures of one run of one test.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Round trips (RPCs) per second.
    pub msg_s: f64,
    /// Bulk gigabytes (10^9) per second.
    pub gb_s: f64,
    /// Median latency.
    pub p50_us: f64,
    /// 99th percentile latency.
    pub p99_us: f64,
    /// Worst latency.
    pub max_us: f64,
    /// Rounds completed.
    pub ops: u64,
    /// Median of each latency phase (see [`super::Phases`]), microseconds.
    pub phases_p50_us: [f64; 4],
}

impl Summary {
    /// Figures from a sample.
    pub fn of(s: &Sample) -> Summary {
        let mut lat = s.lat_ns.clone();
        lat.sort_unstable();
        let pct = |p: f64| -> f64 {
            if lat.is_empty() {
                return 0.0;
            }
            let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
            lat[i] as f64 / 1e3
        };
        let secs = s.elapsed.as_secs_f64().max(1e-9);
        let mut phases_p50_us = [0.0; 4];
        for (i, p) in phases_p50_us.iter_mut().enumerate() {
            let mut v: Vec<u32> = s.phases.iter().map(|ph| ph[i]).collect();
            v.sort_unstable();
            *p = v.get(v.len() / 2).map_or(0.0, |&x| f64::from(x) / 1e3);
        }
        Summary {
            msg_s: s.ops as f64 / secs,
            gb_s: s.bytes as f64 / secs / 1e9,
            p50_us: pct(0.50),
            p99_us: pct(0.99),
            max_us: lat.last().map_or(0.0, |&m| m as f64 / 1e3),
            ops: s.ops,
            phases_p50_us,
        }
    }
}

/// One test's result: LNet, and raw TCP when the baseline ran.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Row {
    /// Which test.
    pub test: Test,
    /// Over LNet.
    pub lnet: Summary,
    /// Over raw TCP.
    pub raw: Option<Summary>,
}

impl Row {
    /// The headline figure: msg/s for ping, GB/s for BRW.
    fn value(&self, s: &Summary) -> f64 {
        if self.test == Test::Ping { s.msg_s } else { s.gb_s }
    }

    /// LNet's headline figure over raw TCP's.
    pub fn ratio(&self) -> Option<f64> {
        let raw = self.value(&self.raw?);
        (raw > 0.0).then(|| self.value(&self.lnet) / raw)
    }
}

fn round(v: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (v * m).round() / m
}

#[derive(Serialize)]
struct JsonLine {
    bench: String,
    value: f64,
    unit: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline_value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p50_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p99_us: Option<f64>,
}

/// The `--json` line of a row measured over the tcp LND.
pub fn json_line(r: &Row) -> String {
    json_line_net(r, "tcp")
}

/// The `--json` line of a row measured over the network type `net`
/// (`lnet.<net>.<test>`). Bulk figures on o2ib keep 4 digits: on soft-RoCE
/// in an emulated guest they are hundredths of a GB/s.
pub fn json_line_net(r: &Row, net: &str) -> String {
    let ping = r.test == Test::Ping;
    let (unit, digits) = if ping { ("msg/s", 0) } else { ("GB/s", if net == "tcp" { 2 } else { 4 }) };
    let line = JsonLine {
        bench: format!("lnet.{net}.{}", r.test.bench_name()),
        value: round(r.value(&r.lnet), digits),
        unit,
        baseline: r.raw.map(|_| "raw_tcp"),
        baseline_value: r.raw.map(|s| round(r.value(&s), digits)),
        ratio: r.ratio().map(|x| round(x, 2)),
        p50_us: ping.then(|| round(r.lnet.p50_us, 1)),
        p99_us: ping.then(|| round(r.lnet.p99_us, 1)),
    };
    serde_json::to_string(&line).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// The human table of all rows.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:>11} {:>9} {:>9} {:>9} {:>7} {:>12} {:>9} {:>6}",
        "test", "lnet msg/s", "p50 us", "p99 us", "max us", "GB/s", "raw msg/s", "raw GB/s", "ratio"
    );
    for r in rows {
        let l = &r.lnet;
        let gb = if r.test == Test::Ping { "-".to_string() } else { format!("{:.2}", l.gb_s) };
        let (raw_msg, raw_gb) = match &r.raw {
            Some(s) if r.test == Test::Ping => (format!("{:.0}", s.msg_s), "-".to_string()),
            Some(s) => (format!("{:.0}", s.msg_s), format!("{:.2}", s.gb_s)),
            None => ("-".to_string(), "-".to_string()),
        };
        let ratio = r.ratio().map_or("-".to_string(), |x| format!("{x:.2}"));
        let _ = writeln!(
            out,
            "{:<10} {:>11.0} {:>9.1} {:>9.1} {:>9.1} {:>7} {:>12} {:>9} {:>6}",
            r.test.bench_name(),
            l.msg_s,
            l.p50_us,
            l.p99_us,
            l.max_us,
            gb,
            raw_msg,
            raw_gb,
            ratio
        );
    }
    if rows.iter().any(|r| r.raw.is_some()) {
        let _ = writeln!(out, "ratio = lnet / raw TCP (msg/s for ping, GB/s for brw)");
    }
    out
}

/// Where the time of a round goes, LNet against raw TCP (medians, us).
pub fn breakdown(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<5} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "test", "path", "setup", "to srv", "server", "to cli", "p50"
    );
    for r in rows {
        let paths = [("lnet", Some(&r.lnet)), ("raw", r.raw.as_ref())];
        for (name, s) in paths {
            let Some(s) = s else { continue };
            let [a, b, c, d] = s.phases_p50_us;
            let _ = writeln!(
                out,
                "{:<10} {:<5} {a:>9.1} {b:>9.1} {c:>9.1} {d:>9.1} {:>9.1}",
                r.test.bench_name(),
                name,
                s.p50_us
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn percentiles_and_json_shape() {
        let s = Sample {
            ops: 100,
            bytes: 100 << 20,
            elapsed: Duration::from_secs(1),
            lat_ns: (1..=100).map(|i| i * 1000).collect(),
            phases: Vec::new(),
        };
        let m = Summary::of(&s);
        assert_eq!((m.p50_us, m.p99_us, m.max_us), (50.0, 99.0, 100.0));
        let row = Row { test: Test::BrwWrite, lnet: m, raw: Some(Summary { gb_s: m.gb_s * 2.0, ..m }) };
        assert_eq!(
            json_line(&row),
            r#"{"bench":"lnet.tcp.brw_write","value":0.1,"unit":"GB/s","baseline":"raw_tcp","baseline_value":0.21,"ratio":0.5}"#
        );
        let ping = Row { test: Test::Ping, lnet: m, raw: None };
        assert_eq!(
            json_line(&ping),
            r#"{"bench":"lnet.tcp.ping","value":100.0,"unit":"msg/s","p50_us":50.0,"p99_us":99.0}"#
        );
        assert!(table(&[row, ping]).contains("brw_write"));
    }
}
