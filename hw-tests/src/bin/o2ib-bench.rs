//! o2ib-bench: LNet bulk (brw) and ping over the o2ib LND between two LNet
//! instances in one process, on the guest's rxe device, printed beside the
//! perftest figures measured on the same device (passed in by
//! `run-rdma-tests`) as `--json` lines with ratios.
//!
//! brw write: 1 MiB PUTs from pool pages into a pool-page MD on the server
//! (RDMA WRITE); brw read: 1 MiB GETs (the REPLY is RDMA-written into the
//! client's pages); ping: 8-byte PUT + ACK round trip, reported as half a
//! round trip to compare with perftest's one-way latencies.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use lnet::{
    AckReq, EventKind, EventQueue, InsertPos, Lnet, LnetConfig, MatchSpec, MdBuffer, MdOptions, MdSpec, NetConfig,
    O2ibConfig, Target, Threshold, Tunables,
};

#[derive(Parser, Debug)]
#[command(about = "LNet brw and ping over o2ib, beside perftest")]
struct Opts {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 4.0)]
    secs: f64,
    /// Bulk operations in flight.
    #[arg(long, default_value_t = 8)]
    depth: usize,
    /// Bulk size in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    size: usize,
    /// ib_write_bw on the same device, GB/s.
    #[arg(long)]
    ib_write_bw: Option<f64>,
    /// ib_read_bw on the same device, GB/s.
    #[arg(long)]
    ib_read_bw: Option<f64>,
    /// ib_write_lat typical, microseconds.
    #[arg(long)]
    ib_write_lat: Option<f64>,
    /// ib_send_lat typical, microseconds.
    #[arg(long)]
    ib_send_lat: Option<f64>,
    /// LNet peer credits (messages in flight per peer).
    #[arg(long, default_value_t = 8)]
    peer_credits: u32,
    /// o2ib queue depth (receive buffers per connection).
    #[arg(long, default_value_t = 8)]
    queue_depth: u16,
    /// Busy-poll the completion queues instead of sleeping on the channel.
    #[arg(long)]
    busy_poll: bool,
    /// Print JSON lines.
    #[arg(long)]
    json: bool,
}

const PORTAL_BULK: u32 = 50;
const PORTAL_PING: u32 = 51;

fn node(o: &Opts, ip: Ipv4Addr) -> LnetConfig {
    let o2ib = O2ibConfig {
        addr: ip,
        port: 21000,
        queue_depth: o.queue_depth,
        busy_poll: o.busy_poll,
        ..O2ibConfig::default()
    };
    LnetConfig {
        nets: vec![NetConfig::O2ib(o2ib)],
        tunables: Tunables { peer_credits: o.peer_credits, ..Tunables::default() },
    }
}

fn report(o: &Opts, name: &str, value: f64, unit: &str, baseline: Option<(&str, f64)>) {
    if o.json {
        let mut j = serde_json::json!({ "bench": name, "value": value, "unit": unit });
        if let Some((b, v)) = baseline {
            j["baseline"] = b.into();
            j["baseline_value"] = v.into();
            if v > 0.0 {
                // For latencies lower is better: the ratio is baseline/ours.
                j["ratio"] = if unit == "us" { v / value } else { value / v }.into();
            }
        }
        println!("{j}");
    } else {
        match baseline {
            Some((b, v)) => println!("{name}: {value:.4} {unit} ({b}: {v:.4})"),
            None => println!("{name}: {value:.4} {unit}"),
        }
    }
}

/// Runs bulk operations `depth` at a time for `secs`; returns GB/s.
async fn brw(o: &Opts, client: &Lnet, server: &Lnet, write: bool) -> anyhow::Result<f64> {
    let done = EventQueue::new();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(o.secs);
    let (mut in_flight, mut bytes) = (0usize, 0u64);
    let target = Target::new(server.nid(), PORTAL_BULK, if write { 1 } else { 2 });
    let issue = |client: &Lnet| -> anyhow::Result<()> {
        let pages = client.pool(0).alloc_bytes(o.size)?;
        let md = client.bind(MdSpec::new(MdBuffer::from_pages_len(pages, o.size), done.clone()))?;
        if write {
            client.put(&md, target, AckReq::NoAck, 0)?
        } else {
            client.get(&md, target)?
        }
        Ok(())
    };
    loop {
        while in_flight < o.depth && Instant::now() < end {
            issue(client)?;
            in_flight += 1;
        }
        if in_flight == 0 {
            break;
        }
        let e = tokio::time::timeout(Duration::from_secs(30), done.next()).await.context("bulk stalled")?;
        if let Err(err) = &e.status {
            bail!("bulk failed: {err}");
        }
        let last = if write { e.kind == EventKind::Send } else { e.kind == EventKind::Reply };
        if e.unlinked {
            in_flight -= 1;
        }
        if last {
            bytes += u64::from(e.mlength.max(if write { o.size as u32 } else { 0 }));
        }
    }
    Ok(bytes as f64 / start.elapsed().as_secs_f64() / 1e9)
}

/// 8-byte PUT + ACK round trips for `secs`; returns the median half round trip in µs.
async fn ping(o: &Opts, client: &Lnet, server: &Lnet) -> anyhow::Result<f64> {
    let q = EventQueue::new();
    let end = Instant::now() + Duration::from_secs_f64(o.secs);
    let mut rtts = Vec::new();
    while Instant::now() < end || rtts.len() < 10 {
        let md = client.bind(MdSpec::new(MdBuffer::Inline(vec![7; 8]), q.clone()))?;
        let t = Instant::now();
        client.put(&md, Target::new(server.nid(), PORTAL_PING, 0), AckReq::Ack, 0)?;
        loop {
            let e = tokio::time::timeout(Duration::from_secs(10), q.next()).await.context("ping stalled")?;
            if let Err(err) = &e.status {
                bail!("ping failed: {err}");
            }
            if e.unlinked {
                break;
            }
        }
        rtts.push(t.elapsed().as_secs_f64() * 1e6 / 2.0);
    }
    rtts.sort_by(f64::total_cmp);
    Ok(rtts[rtts.len() / 2])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let o = Opts::parse();
    let ips = hw_tests::guest_ips();
    if ips.len() < 2 {
        bail!("o2ib-bench needs two addresses on an RDMA netdev in SOFTROCE_IPS (run it through run-rdma-tests)");
    }
    let server = Lnet::start(node(&o, ips[0])).await.context("starting the server node")?;
    let client = Lnet::start(node(&o, ips[1])).await.context("starting the client node")?;
    let q = EventQueue::new();
    let pages = server.pool(0).alloc_bytes(o.size)?;
    server.attach(
        PORTAL_BULK,
        MatchSpec::bits(1),
        InsertPos::Tail,
        MdSpec::new(MdBuffer::from_pages_len(pages, o.size), q.clone())
            .options(MdOptions::OP_PUT | MdOptions::MANAGE_REMOTE | MdOptions::ACK_DISABLE)
            .threshold(Threshold::Infinite),
    )?;
    let pages = server.pool(0).alloc_bytes(o.size)?;
    server.attach(
        PORTAL_BULK,
        MatchSpec::bits(2),
        InsertPos::Tail,
        MdSpec::new(MdBuffer::from_pages_len(pages, o.size), q.clone())
            .options(MdOptions::OP_GET | MdOptions::MANAGE_REMOTE)
            .threshold(Threshold::Infinite),
    )?;
    server.attach(
        PORTAL_PING,
        MatchSpec::any(),
        InsertPos::Tail,
        MdSpec::new(MdBuffer::Inline(vec![0; 8]), q.clone())
            .options(MdOptions::OP_PUT | MdOptions::MANAGE_REMOTE | MdOptions::TRUNCATE)
            .threshold(Threshold::Infinite),
    )?;
    // Drain the server's events so its queue does not grow.
    tokio::spawn(async move { while q.next().await.kind != EventKind::Unlink {} });
    // Warm up: connect both ways.
    ping(&Opts { secs: 0.0, ..Opts::parse_from(["x"]) }, &client, &server).await?;
    let w = brw(&o, &client, &server, true).await?;
    report(&o, "lnet.o2ib.brw_write", w, "GB/s", o.ib_write_bw.map(|v| ("ib_write_bw", v)));
    let r = brw(&o, &client, &server, false).await?;
    report(&o, "lnet.o2ib.brw_read", r, "GB/s", o.ib_read_bw.map(|v| ("ib_read_bw", v)));
    report(&o, "lnet.o2ib.brw_write_vs_read_bw", w, "GB/s", o.ib_read_bw.map(|v| ("ib_read_bw", v)));
    let p = ping(&o, &client, &server).await?;
    report(&o, "lnet.o2ib.ping_half_rtt", p, "us", o.ib_write_lat.map(|v| ("ib_write_lat", v)));
    report(&o, "lnet.o2ib.ping_half_rtt_vs_send", p, "us", o.ib_send_lat.map(|v| ("ib_send_lat", v)));
    if let Some(s) = lnet::lnd::o2ib::stats(client.nid()) {
        eprintln!("o2ib-bench: client counters {s:?}");
    }
    client.shutdown();
    server.shutdown();
    Ok(())
}
