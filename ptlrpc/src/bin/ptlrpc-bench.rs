//! ptlrpc-bench: null RPC (PING) rate and latency and 1 MiB bulk RPC
//! throughput over the tcp LND on loopback, against lnet-selftest's ping
//! and brw in the same run.
//!
//! Without `serve` the client starts the server itself (this binary, as a
//! child process on 127.0.0.2), runs every test for ptlrpc and for
//! lnet-selftest in alternating segments, prints a table (or, with
//! `--json`, DESIGN.md's lines), and stops the child by closing its stdin.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand};
use lnet::selftest::client as lst_client;
use lnet::selftest::proto::Op as LstOp;
use lnet::selftest::report::Summary;
use lnet::selftest::server::Server as LstServer;
use lnet::selftest::{RunSpec, Sample};
use lnet::{Lnet, LnetConfig, MdBuffer, NetConfig, Nid, TcpConfig};
use ptlrpc::cpt::{CptSettings, CptTable};
use ptlrpc::driver::{Client, ClientConfig, EchoHandler, RpcError, RpcReply, Service, ServiceConfig};
use ptlrpc::fault::FaultInjector;
use ptlrpc::portals::ECHO_REQUEST_PORTAL;
use ptlrpc::wire::{BrwBody, BrwReply, BulkDesc, Op};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinSet;

const SERVER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const WAIT: Duration = Duration::from_secs(30);

#[derive(Parser, Debug)]
#[command(about = "ptlrpc benchmark: PING and 1 MiB bulk RPCs vs lnet-selftest, tcp on loopback")]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Seconds per test and system (split in alternating segments).
    #[arg(long, default_value_t = 4.0)]
    duration: f64,
    /// PINGs in flight for the rate test.
    #[arg(long, default_value_t = 8)]
    ping_inflight: usize,
    /// Bulk RPCs in flight.
    #[arg(long, default_value_t = 8)]
    inflight: usize,
    /// Bulk bytes per RPC.
    #[arg(long, default_value_t = 1 << 20)]
    size: usize,
    /// Service worker threads per CPT.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Microseconds an idle service worker polls before sleeping.
    #[arg(long, default_value_t = 0)]
    spin_us: u64,
    /// Service workers per CPT running at once before a request wakes
    /// another (0: every request wakes one). The echo handler waits only
    /// in bulk transfers, which hand their slot on, so one is enough.
    #[arg(long, default_value_t = 1)]
    max_running: usize,
    /// One JSON line per result.
    #[arg(long)]
    json: bool,
    /// Run only these tests (comma separated: ping_lat, ping, brw_write, brw_read, crc32c).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Run one system alone (for profiling one half; no ratios):
    /// `ptlrpc` or `lst`.
    #[arg(long)]
    alone: Option<Alone>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Alone {
    Ptlrpc,
    Lst,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the server (the echo service and lnet-selftest's server).
    Serve {
        /// Address to listen on.
        #[arg(long, default_value_t = SERVER)]
        addr: Ipv4Addr,
        /// LNet port.
        #[arg(long)]
        port: u16,
        /// Service worker threads per CPT.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Microseconds an idle service worker polls before sleeping.
        #[arg(long, default_value_t = 0)]
        spin_us: u64,
        /// Service workers per CPT running at once before a request wakes
        /// another (0: every request wakes one).
        #[arg(long, default_value_t = 0)]
        max_running: usize,
    },
}

fn lnet_config(addr: Ipv4Addr, port: u16) -> LnetConfig {
    LnetConfig { nets: vec![NetConfig::Tcp(TcpConfig { addr, port, ..TcpConfig::default() })], ..LnetConfig::default() }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    match args.cmd {
        Some(Cmd::Serve { addr, port, threads, spin_us, max_running }) => {
            rt.block_on(serve(addr, port, threads, spin_us, max_running))
        }
        None => rt.block_on(client(args)),
    }
}

async fn serve(addr: Ipv4Addr, port: u16, threads: usize, spin_us: u64, max_running: usize) -> anyhow::Result<()> {
    let lnet = Lnet::start(lnet_config(addr, port)).await.context("starting lnet")?;
    let lst = LstServer::start(lnet.clone()).context("starting the lnet-selftest server")?;
    let cpts = CptTable::from_system(&CptSettings::default()).map(Arc::new).ok();
    let idle_spin = Duration::from_micros(spin_us);
    let cfg = ServiceConfig { threads_per_cpt: threads, cpts, idle_spin, max_running, ..ServiceConfig::echo() };
    let svc = Service::start(&lnet, cfg, Arc::new(EchoHandler::new()), Arc::new(FaultInjector::default()))
        .context("starting the echo service")?;
    println!("READY {} cpts={}", lnet.nid(), svc.cpts());
    // Runs until stdin closes.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new().name("stdin-watch".into()).spawn(move || {
        use std::io::Read;
        let mut b = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut b), Ok(n) if n > 0) {}
        let _ = tx.send(());
    })?;
    let _ = rx.await;
    eprintln!(
        "{}",
        svc.render_metrics().lines().filter(|l| l.contains("handled_total")).collect::<Vec<_>>().join("\n")
    );
    svc.shutdown();
    lst.stop();
    lnet.shutdown();
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    for _ in 0..64 {
        let l = TcpListener::bind(SocketAddrV4::new(CLIENT, 0))?;
        let port = l.local_addr()?.port();
        if TcpListener::bind(SocketAddrV4::new(SERVER, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free on both {CLIENT} and {SERVER}")
}

/// What one system measured in one test.
#[derive(Default)]
struct Measured {
    ops: u64,
    bytes: u64,
    elapsed: Duration,
    lat_ns: Vec<u64>,
    /// CPU seconds the client and server processes spent meanwhile.
    cpu_s: f64,
    /// Thread switches (voluntary and not) in both processes meanwhile.
    switches: f64,
}

impl Measured {
    fn add(&mut self, o: Measured) {
        self.cpu_s += o.cpu_s;
        self.switches += o.switches;
        self.ops += o.ops;
        self.bytes += o.bytes;
        self.elapsed += o.elapsed;
        self.lat_ns.extend(o.lat_ns);
    }

    fn from_lst(s: Sample) -> Measured {
        Measured { ops: s.ops, bytes: s.bytes, elapsed: s.elapsed, lat_ns: s.lat_ns, ..Measured::default() }
    }

    /// Microseconds of CPU (client + server process) per operation.
    fn cpu_us_per_op(&self) -> f64 {
        if self.ops == 0 { 0.0 } else { self.cpu_s * 1e6 / self.ops as f64 }
    }

    /// Thread switches (client + server process) per operation.
    fn switches_per_op(&self) -> f64 {
        if self.ops == 0 { 0.0 } else { self.switches / self.ops as f64 }
    }

    /// Takes the CPU time and thread switches spent since `since`.
    fn with_usage(mut self, since: Usage, server: Option<u32>) -> Measured {
        let now = Usage::now(server);
        self.cpu_s = now.cpu_s - since.cpu_s;
        self.switches = now.switches - since.switches;
        self
    }

    fn summary(&self) -> Summary {
        Summary::of(&Sample {
            ops: self.ops,
            bytes: self.bytes,
            elapsed: self.elapsed,
            lat_ns: self.lat_ns.clone(),
            phases: Vec::new(),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Test {
    Ping,
    Write,
    Read,
}

async fn client(args: Args) -> anyhow::Result<()> {
    let port = free_port()?;
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(&exe)
        .args(["serve", "--addr", &SERVER.to_string(), "--port", &port.to_string()])
        .args(["--threads", &args.threads.to_string(), "--spin-us", &args.spin_us.to_string()])
        .args(["--max-running", &args.max_running.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting the server process")?;
    let server_pid = child.id();
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout from the server"))?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(WAIT, lines.next_line()).await.context("server not ready in time")??;
    let ready = ready.ok_or_else(|| anyhow!("server exited before it was ready"))?;
    let mut words = ready.split_whitespace();
    let peer: Nid = match (words.next(), words.next()) {
        (Some("READY"), Some(n)) => n.parse().map_err(|e| anyhow!("bad NID {n}: {e}"))?,
        _ => bail!("unexpected server output {ready:?}"),
    };
    let server_cpts = words.next().unwrap_or("cpts=?").to_string();
    let lnet = Lnet::start(lnet_config(CLIENT, port)).await.context("starting client lnet")?;
    let faults = Arc::new(FaultInjector::default());
    let rpc = Client::new(&lnet, peer, ECHO_REQUEST_PORTAL, ClientConfig::default(), faults);
    rpc.ping().await.context("first ping")?;
    if !args.json {
        println!("server {peer} ({server_cpts}), client {}, {} s per test and system", lnet.nid(), args.duration);
    }
    let seg = Duration::from_millis(500);
    let segments = ((args.duration / seg.as_secs_f64()).round() as u32).max(1);
    let tests = [
        (Test::Ping, 1, "ping_lat"),
        (Test::Ping, args.ping_inflight, "ping"),
        (Test::Write, args.inflight, "brw_write"),
        (Test::Read, args.inflight, "brw_read"),
    ];
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    for (test, inflight, name) in tests {
        if !wanted(name) {
            continue;
        }
        let mut ours = Measured::default();
        let mut base = Measured::default();
        for _ in 0..segments {
            let u0 = Usage::now(server_pid);
            if args.alone != Some(Alone::Ptlrpc) {
                let m = run_lst(&lnet, peer, test, inflight, args.size, seg).await?;
                base.add(m.with_usage(u0, server_pid));
            }
            let u1 = Usage::now(server_pid);
            if args.alone != Some(Alone::Lst) {
                let m = run_ptlrpc(&lnet, &rpc, test, inflight, args.size, seg, false).await?;
                ours.add(m.with_usage(u1, server_pid));
            }
        }
        let cost = Cost {
            ours: (ours.cpu_us_per_op(), ours.switches_per_op()),
            base: (base.cpu_us_per_op(), base.switches_per_op()),
        };
        if args.alone == Some(Alone::Lst) {
            // lnet-selftest's figures in the first column, no ratio.
            report(
                args.json,
                &format!("{name}_lst"),
                test,
                &base.summary(),
                None,
                Cost { ours: cost.base, base: (0.0, 0.0) },
            );
            continue;
        }
        let base = args.alone.is_none().then(|| base.summary());
        report(args.json, name, test, &ours.summary(), base.as_ref(), cost);
        if test != Test::Ping && args.alone != Some(Alone::Lst) && (args.only.is_empty() || wanted("crc32c")) {
            let mut ck = Measured::default();
            for _ in 0..segments {
                let u0 = Usage::now(server_pid);
                let m = run_ptlrpc(&lnet, &rpc, test, inflight, args.size, seg, true).await?;
                ck.add(m.with_usage(u0, server_pid));
            }
            report(
                args.json,
                &format!("{name}_crc32c"),
                test,
                &ck.summary(),
                base.as_ref(),
                Cost { ours: (ck.cpu_us_per_op(), ck.switches_per_op()), base: cost.base },
            );
        }
    }
    drop(stdin);
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    lnet.shutdown();
    Ok(())
}

fn round(v: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (v * m).round() / m
}

/// CPU time and thread switches of this process and the server process
/// so far, from `/proc` (0 for what is unreadable).
#[derive(Clone, Copy, Debug, Default)]
struct Usage {
    /// CPU seconds, user + system, all threads.
    cpu_s: f64,
    /// Context switches, voluntary and not, summed over the threads alive
    /// now (the bench's threads live for the whole run).
    switches: f64,
}

impl Usage {
    fn now(server: Option<u32>) -> Usage {
        let pids = ["self".to_string()].into_iter().chain(server.map(|p| p.to_string()));
        let mut u = Usage::default();
        for pid in pids {
            u.cpu_s += cpu_seconds(&pid);
            u.switches += switches(&pid);
        }
        u
    }
}

/// CPU seconds (user + system, all threads) of process `pid` so far.
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // After the command name: state is field 3, utime 14, stime 15.
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Context switches (voluntary and not) of process `pid`'s threads so far.
fn switches(pid: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0.0 };
    let mut n = 0.0;
    for t in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(t.path().join("status")) else { continue };
        for line in status.lines() {
            if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                n += v.trim().parse::<f64>().unwrap_or(0.0);
            }
        }
    }
    n
}

/// What a test cost per operation: (CPU µs, thread switches) for the
/// system measured and for the baseline.
#[derive(Clone, Copy, Debug)]
struct Cost {
    ours: (f64, f64),
    base: (f64, f64),
}

fn report(json: bool, name: &str, test: Test, ours: &Summary, base: Option<&Summary>, cost: Cost) {
    let value = |s: &Summary| if test == Test::Ping { s.msg_s } else { s.gb_s };
    let (unit, digits) = if test == Test::Ping { ("msg/s", 0) } else { ("GB/s", 2) };
    let bname = if test == Test::Ping {
        "lnet_selftest.ping"
    } else if test == Test::Write {
        "lnet_selftest.brw_write"
    } else {
        "lnet_selftest.brw_read"
    };
    let ratio = base.map(|b| if value(b) > 0.0 { value(ours) / value(b) } else { 0.0 });
    if json {
        let mut line = serde_json::json!({
            "bench": format!("ptlrpc.tcp.{name}"),
            "value": round(value(ours), digits),
            "unit": unit,
        });
        if let (Some(b), Some(r)) = (base, ratio) {
            line["baseline"] = bname.into();
            line["baseline_value"] = round(value(b), digits).into();
            line["ratio"] = round(r, 2).into();
        }
        line["p50_us"] = round(ours.p50_us, 1).into();
        line["p99_us"] = round(ours.p99_us, 1).into();
        if let Some(b) = base {
            line["baseline_p50_us"] = round(b.p50_us, 1).into();
        }
        line["cpu_us_per_op"] = round(cost.ours.0, 1).into();
        line["baseline_cpu_us_per_op"] = round(cost.base.0, 1).into();
        line["switches_per_op"] = round(cost.ours.1, 2).into();
        line["baseline_switches_per_op"] = round(cost.base.1, 2).into();
        println!("{line}");
    } else {
        let b = base.map_or(String::new(), |b| {
            format!("  vs {bname} {:.2} {unit} p50 {:.1} us -> ratio {:.2}", value(b), b.p50_us, ratio.unwrap_or(0.0))
        });
        println!("{name:>18}: {:>10.2} {unit} p50 {:>7.1} us p99 {:>7.1} us{b}", value(ours), ours.p50_us, ours.p99_us);
        println!(
            "{:>18}  CPU (client + server) {:.1} us/op vs {:.1} us/op, thread switches {:.2}/op vs {:.2}/op",
            "", cost.ours.0, cost.base.0, cost.ours.1, cost.base.1
        );
    }
}

async fn run_lst(
    lnet: &Lnet,
    peer: Nid,
    test: Test,
    inflight: usize,
    size: usize,
    d: Duration,
) -> anyhow::Result<Measured> {
    let (op, size) = match test {
        Test::Ping => (LstOp::Ping, 0),
        Test::Write => (LstOp::BrwWrite, size),
        Test::Read => (LstOp::BrwRead, size),
    };
    let spec = RunSpec { op, duration: d, concurrency: inflight, size, check: false };
    Ok(Measured::from_lst(lst_client::run(lnet, peer, &spec).await?))
}

async fn run_ptlrpc(
    lnet: &Lnet,
    rpc: &Client,
    test: Test,
    inflight: usize,
    size: usize,
    d: Duration,
    cksum: bool,
) -> anyhow::Result<Measured> {
    let start = Instant::now();
    let until = start + d;
    let mut set = JoinSet::new();
    for slot in 0..inflight {
        let rpc = rpc.clone();
        let mut buf = match test {
            Test::Ping => None,
            _ => Some(MdBuffer::from_pages_len(lnet.pool(0).alloc_bytes(size)?, size)),
        };
        set.spawn(async move {
            let mut m = Measured::default();
            let offset = (slot * size) as u64;
            let body = move |bulk: BulkDesc| BrwBody { offset, bulk };
            while Instant::now() < until {
                let t = Instant::now();
                match test {
                    Test::Ping => {
                        rpc.ping().await?;
                    }
                    Test::Write => {
                        let data = buf.take().ok_or_else(|| anyhow!("pages lost"))?;
                        let (_, data) = rpc.bulk_write(Op::OstWrite, data, cksum, body).await?;
                        buf = Some(data);
                        m.bytes += size as u64;
                    }
                    Test::Read => {
                        let data = buf.take().ok_or_else(|| anyhow!("pages lost"))?;
                        let (_, data) = rpc.bulk_read(Op::OstRead, data, cksum, body, reply_cksum).await?;
                        buf = Some(data);
                        m.bytes += size as u64;
                    }
                }
                m.lat_ns.push(t.elapsed().as_nanos() as u64);
                m.ops += 1;
            }
            anyhow::Ok(m)
        });
    }
    let mut total = Measured::default();
    while let Some(r) = set.join_next().await {
        let m = r.context("a bench task panicked")??;
        total.ops += m.ops;
        total.bytes += m.bytes;
        total.lat_ns.extend(m.lat_ns);
    }
    total.elapsed = start.elapsed();
    Ok(total)
}

fn reply_cksum(r: &RpcReply) -> Result<u32, RpcError> {
    Ok(r.body::<BrwReply>()?.cksum)
}
