//! The `sheen` command's subcommands and their output (human tables by
//! default, `--json` lines for scripts).
//!
//! Owns argument handling and presentation only; the work is done by the
//! crates below (lnet for `ping`).

use std::time::Duration;

use lnet::{Lnet, LnetConfig, NetConfig, Nid, TcpConfig};

use crate::progress::Progress;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON object per line for scripts.
    Json,
}

/// Logs of the command's own tracing to stderr (stdout is its output), at
/// `RUST_LOG`'s levels, `warn` when unset.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
}

/// Renders rows under a header as aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < width.len() {
                width[i] = width[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(&format!("{c:<w$}", w = width[i]));
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// Where `sheen` itself sits on the network for a one-off command.
#[derive(Clone, Debug)]
pub struct LocalNet {
    /// This node's NID (a tcp NID; its address must be local).
    pub nid: Option<Nid>,
    /// The network's port.
    pub port: u16,
}

impl LocalNet {
    /// Starts LNet for the command: the given NID, or an address on the
    /// peer's network chosen by the kernel's route to it.
    pub async fn start(&self, peer: Nid) -> anyhow::Result<Lnet> {
        let nid = match self.nid {
            Some(n) => n,
            None => default_nid_for(peer)?,
        };
        let mut nets = Vec::new();
        if let Some(addr) = nid.ipv4() {
            // Outgoing connections go to the network's port; this
            // short-lived node never accepts (replies use its connections).
            nets.push(NetConfig::Tcp(TcpConfig {
                addr,
                port: self.port,
                net_num: nid.net.num,
                accept: false,
                ..TcpConfig::default()
            }));
        }
        let mut cfg = LnetConfig { nets, ..LnetConfig::default() };
        cfg.tunables.transaction_timeout = Duration::from_secs(10);
        let lnet = Lnet::start(cfg).await?;
        Ok(lnet)
    }
}

/// Picks a local NID on `peer`'s network: for tcp, the source address the
/// kernel would use to reach the peer.
pub fn default_nid_for(peer: Nid) -> anyhow::Result<Nid> {
    match peer.ipv4() {
        // On loopback, an address of the peer's /24 of its own (from the
        // pid), so two `sheen` processes never share a NID.
        Some(ip) if ip.is_loopback() => {
            let o = ip.octets();
            let host = 16 + (std::process::id() % 224) as u8;
            Ok(Nid::ip(std::net::Ipv4Addr::new(127, o[1], o[2], host), peer.net))
        }
        Some(ip) => {
            let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
            s.connect((ip, 9))?;
            match s.local_addr()?.ip() {
                std::net::IpAddr::V4(me) => Ok(Nid::ip(me, peer.net)),
                std::net::IpAddr::V6(_) => anyhow::bail!("no IPv4 route to {peer}"),
            }
        }
        None => Ok(Nid::LO),
    }
}

/// `sheen ping NID...`: LNet ping of each peer, like `lctl ping`.
/// `progress` names each ping while it waits (table output only: JSON
/// lines are printed as they come).
pub async fn ping(
    lnet: &Lnet,
    peers: &[Nid],
    count: u32,
    timeout: Duration,
    fmt: Format,
    progress: &Progress,
) -> anyhow::Result<bool> {
    let mut rows = Vec::new();
    let mut all_ok = true;
    for &peer in peers {
        for _ in 0..count.max(1) {
            progress.step(format!("pinging {peer} (up to {} s)", timeout.as_secs()));
            let r = lnet.ping(peer, timeout).await;
            all_ok &= r.is_ok();
            match fmt {
                Format::Json => {
                    let v = match &r {
                        Ok(i) => serde_json::json!({"peer": peer.to_string(), "ok": true, "rtt_us": i.rtt_us,
                            "nids": i.nids.iter().map(Nid::to_string).collect::<Vec<_>>()}),
                        Err(e) => serde_json::json!({"peer": peer.to_string(), "ok": false, "error": e.to_string()}),
                    };
                    println!("{v}");
                }
                Format::Table => rows.push(match &r {
                    Ok(i) => vec![
                        peer.to_string(),
                        "up".into(),
                        format!("{}", i.rtt_us),
                        i.nids.iter().map(Nid::to_string).collect::<Vec<_>>().join(","),
                    ],
                    Err(e) => vec![peer.to_string(), "FAILED".into(), "-".into(), e.to_string()],
                }),
            }
        }
    }
    progress.done();
    if fmt == Format::Table {
        print!("{}", table(&["peer", "status", "rtt_us", "nids / error"], &rows));
    }
    Ok(all_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(&["a", "bbb"], &[vec!["xxxx".into(), "y".into()], vec!["z".into(), "".into()]]);
        assert_eq!(t, "a     bbb\nxxxx  y\nz\n");
    }

    #[tokio::test]
    async fn pings_a_tcp_peer() {
        let p = std::process::id();
        let net = [(p >> 8) as u8 | 0x20, p as u8];
        let node = |host: u8| {
            Lnet::start(LnetConfig {
                nets: vec![NetConfig::Tcp(TcpConfig {
                    addr: std::net::Ipv4Addr::new(127, net[0], net[1], host),
                    port: 7991,
                    ..TcpConfig::default()
                })],
                ..LnetConfig::default()
            })
        };
        let server = node(1).await.unwrap();
        let me = node(2).await.unwrap();
        assert!(
            ping(&me, &[server.nid()], 2, Duration::from_secs(10), Format::Json, &Progress::hidden()).await.unwrap()
        );
        let nobody: Nid = format!("127.{}.{}.9@tcp", net[0], net[1]).parse().unwrap();
        assert!(!ping(&me, &[nobody], 1, Duration::from_secs(10), Format::Table, &Progress::hidden()).await.unwrap());
    }
}
