//! Talking to a daemon's admin endpoint: arming and clearing ptlrpc fault
//! points (`PUT`/`DELETE /faults/...`) and scraping `/metrics`.
//!
//! Owns: a minimal HTTP/1.1 client (one request per connection, bounded
//! by a timeout), [`Metrics`] (Prometheus text parsed into samples) and
//! the queries the run needs (recovery status per target, evictions).
//!
//! Must not: retry (the caller decides what a failed scrape means).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one admin request may take.
pub const HTTP_BOUND: Duration = Duration::from_secs(3);

async fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_string());
        Ok::<_, anyhow::Error>((status, body))
    };
    tokio::time::timeout(HTTP_BOUND, fut).await.with_context(|| format!("{method} {addr}{path}: no answer"))?
}

/// Arms fault `point` (`request_drop`, `reply_drop`, `reply_delay:<s>`,
/// `bulk_corrupt`) with `trigger` (`once`, `every N`, `random N`).
pub async fn arm(addr: SocketAddr, point: &str, trigger: &str) -> Result<()> {
    let (code, body) = request(addr, "PUT", &format!("/faults/{point}"), trigger).await?;
    if code != 204 {
        bail!("PUT /faults/{point} '{trigger}': HTTP {code}: {}", body.trim());
    }
    Ok(())
}

/// Disarms every fault point.
pub async fn clear(addr: SocketAddr) -> Result<()> {
    let (code, body) = request(addr, "DELETE", "/faults", "").await?;
    if code != 204 {
        bail!("DELETE /faults: HTTP {code}: {}", body.trim());
    }
    Ok(())
}

/// One sample: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// Labels in order.
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
}

impl Sample {
    /// The value of label `k`.
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
}

/// A scrape.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Every sample.
    pub samples: Vec<Sample>,
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some((k, r)) = rest.split_once("=\"") {
        let mut v = String::new();
        let mut chars = r.char_indices();
        let mut end = r.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        v.push(n);
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => v.push(c),
            }
        }
        out.push((k.trim_start_matches(',').trim().to_string(), v));
        rest = &r[end.min(r.len())..];
    }
    out
}

impl Metrics {
    /// Parses Prometheus text; lines that do not parse are skipped.
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for l in text.lines() {
            if l.starts_with('#') || l.trim().is_empty() {
                continue;
            }
            let (head, value) = match l.rsplit_once(' ') {
                Some(x) => x,
                None => continue,
            };
            let Ok(value) = value.parse::<f64>() else { continue };
            let (name, labels) = match head.split_once('{') {
                Some((n, l)) => (n.to_string(), parse_labels(l.trim_end_matches('}'))),
                None => (head.to_string(), Vec::new()),
            };
            samples.push(Sample { name, labels, value });
        }
        Metrics { samples }
    }

    /// Samples named `name`.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// Sum of the samples named `name`.
    pub fn sum(&self, name: &str) -> f64 {
        self.named(name).map(|s| s.value).sum()
    }

    /// Targets that report recovery status, with `recovering` and
    /// `finished` (recoveries finished).
    pub fn recovery(&self) -> Vec<TargetRecovery> {
        let mut out: Vec<TargetRecovery> = Vec::new();
        for s in &self.samples {
            let field = match s.name.as_str() {
                "lustre_recovery_status_recovering" => 0,
                "lustre_recovery_status_finished" | "lustre_recovery_status_finished_total" => 1,
                "lustre_recovery_status_started" | "lustre_recovery_status_started_total" => 2,
                "lustre_recovery_status_duration_seconds" => 3,
                "lustre_recovery_status_evicted_clients" => 4,
                _ => continue,
            };
            let target = s.label("target").unwrap_or("").to_string();
            let i = match out.iter().position(|t| t.target == target) {
                Some(i) => i,
                None => {
                    out.push(TargetRecovery { target, ..TargetRecovery::default() });
                    out.len() - 1
                }
            };
            let t = &mut out[i];
            match field {
                0 => t.recovering = s.value > 0.0,
                1 => t.finished = s.value as u64,
                2 => t.started = s.value as u64,
                3 => t.duration = s.value,
                _ => t.evicted_clients = s.value as u64,
            }
        }
        out
    }

    /// Exports evicted so far, every target and reason.
    pub fn evictions(&self) -> u64 {
        (self.sum("lustre_evictions") + self.sum("lustre_evictions_total")) as u64
    }
}

/// Recovery status of one target.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetRecovery {
    /// The target.
    pub target: String,
    /// Recovery runs.
    pub recovering: bool,
    /// Recoveries started.
    pub started: u64,
    /// Recoveries finished.
    pub finished: u64,
    /// The last recovery's duration, seconds.
    pub duration: f64,
    /// Clients the last recovery evicted.
    pub evicted_clients: u64,
}

/// Scrapes `/metrics`.
pub async fn scrape(addr: SocketAddr) -> Result<Metrics> {
    let (code, body) = request(addr, "GET", "/metrics", "").await?;
    if code != 200 {
        bail!("GET /metrics: HTTP {code}");
    }
    Ok(Metrics::parse(&body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_recovery_families() {
        let text = "# HELP x\nlustre_recovery_status_recovering{component=\"ost\",target=\"s-OST0000\"} 1\n\
                    lustre_recovery_status_finished_total{component=\"ost\",target=\"s-OST0000\"} 2\n\
                    lustre_recovery_status_duration_seconds{component=\"ost\",target=\"s-OST0000\"} 0.25\n\
                    lustre_evictions_total{component=\"mdt\",target=\"s-MDT0000\",reason=\"ping_timeout\"} 3\n\
                    weird line\n";
        let m = Metrics::parse(text);
        let r = m.recovery();
        assert_eq!(r.len(), 1);
        assert!(r[0].recovering);
        assert_eq!((r[0].finished, r[0].duration), (2, 0.25));
        assert_eq!(r[0].target, "s-OST0000");
        assert_eq!(m.evictions(), 3);
    }
}
