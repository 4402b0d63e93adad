//! lnet-selftest: Lustre's `lst` for Sheen's LNet.
//!
//! Owns the two roles of the `lnet-selftest` binary: a server process that
//! answers PING and BRW requests over the tcp LND (and, for the baseline,
//! the same pattern over plain TCP), and a client that drives it for a
//! while with N requests in flight and reports messages/s, latency
//! percentiles and GB/s. Without a `--peer` the client starts the server
//! itself as a child process on 127.0.0.2 and stops it at the end.
//!
//! Portals: requests on [`REQ_PORTAL`], replies on [`REPLY_PORTAL`] matched
//! by xid, bulk on [`BULK_PORTAL`] matched by per-request bits. Bulk moves
//! are server driven (GET for writes, PUT for reads), as in Lustre.
//!
//! Every wait is bounded by [`WAIT_MAX`]; a dead peer, a failed event or a
//! timeout is an error, never a hang.

pub mod baseline;
pub mod client;
pub mod proto;
pub mod report;
pub mod server;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::api::Lnet;
use crate::config::{LnetConfig, NetConfig, TcpConfig};
use crate::nid::{Net, NetType, Nid};
use proto::Op;
pub use report::{Row, Summary};

/// The server's request portal.
pub const REQ_PORTAL: u32 = 40;
/// The client's reply portal.
pub const REPLY_PORTAL: u32 = 41;
/// The client's bulk portal.
pub const BULK_PORTAL: u32 = 42;
/// The longest any single wait may take.
pub const WAIT_MAX: Duration = Duration::from_secs(30);
/// Default LNet port when a peer is named.
pub const DEFAULT_PORT: u16 = 9988;
/// Default raw TCP baseline port when a peer is named.
pub const DEFAULT_RAW_PORT: u16 = 9989;
/// The server's address for a local run.
pub const LOCAL_SERVER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// The client's address for a local run.
pub const LOCAL_CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

/// A selftest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Test {
    /// Small round trips.
    Ping,
    /// Client-to-server bulk.
    BrwWrite,
    /// Server-to-client bulk.
    BrwRead,
}

impl Test {
    /// The name in reports (`lnet.tcp.<name>`).
    pub fn bench_name(self) -> &'static str {
        match self {
            Test::Ping => "ping",
            Test::BrwWrite => "brw_write",
            Test::BrwRead => "brw_read",
        }
    }

    fn op(self) -> Op {
        match self {
            Test::Ping => Op::Ping,
            Test::BrwWrite => Op::BrwWrite,
            Test::BrwRead => Op::BrwRead,
        }
    }
}

/// How one test runs.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// The operation.
    pub op: Op,
    /// How long to keep requests flowing.
    pub duration: Duration,
    /// Requests in flight.
    pub concurrency: usize,
    /// Bulk bytes per request (0 for ping).
    pub size: usize,
    /// Fill and verify the data pattern.
    pub check: bool,
}

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Rounds completed.
    pub ops: u64,
    /// Bulk bytes moved.
    pub bytes: u64,
    /// Wall time from the first request to the last reply.
    pub elapsed: Duration,
    /// Each round's latency.
    pub lat_ns: Vec<u64>,
    /// Each round's latency breakdown.
    pub phases: Vec<Phases>,
}

/// Where one round's time went, in ns: client set-up until its request was
/// handed off, hand-off until the server saw it, server work, server
/// reply until the client saw it. Wall-clock stamps from both processes.
pub type Phases = [u32; 4];

/// The breakdown of a round from its four client stamps and the reply.
pub(crate) fn phases(t0: u64, t_put: u64, rep: &proto::Reply, t_reply: u64) -> Phases {
    let d = |a: u64, b: u64| b.saturating_sub(a).min(u64::from(u32::MAX)) as u32;
    [d(t0, t_put), d(t_put, rep.t_in_ns), d(rep.t_in_ns, rep.t_out_ns), d(rep.t_out_ns, t_reply)]
}

/// Length of one segment when LNet and the baseline take turns.
const SEGMENT: Duration = Duration::from_millis(500);

/// How many segments a test of `d` is cut into.
fn segments(d: Duration, baseline: bool) -> u32 {
    if !baseline {
        return 1;
    }
    (d.as_secs_f64() / SEGMENT.as_secs_f64()).round().clamp(1.0, 10_000.0) as u32
}

impl Sample {
    /// Adds a sample of concurrent slots of one run.
    fn merge(&mut self, o: Sample) {
        self.ops += o.ops;
        self.bytes += o.bytes;
        self.lat_ns.extend(o.lat_ns);
        self.phases.extend(o.phases);
    }

    /// Adds a whole run that came after this one.
    fn merge_run(&mut self, o: Sample) {
        self.elapsed += o.elapsed;
        self.merge(o);
    }
}

/// The client's settings.
#[derive(Clone, Debug)]
pub struct ClientOpts {
    /// Tests to run, in order.
    pub tests: Vec<Test>,
    /// The server's NID; `None` starts one locally.
    pub peer: Option<Nid>,
    /// This node's NID (default `127.0.0.1@tcp`).
    pub nid: Option<Nid>,
    /// The LNet port (both nodes use it); chosen free for a local run.
    pub port: Option<u16>,
    /// The server's raw TCP baseline port.
    pub raw_port: Option<u16>,
    /// Per test.
    pub duration: Duration,
    /// Requests in flight (default 1 for ping, 8 for BRW).
    pub concurrency: Option<usize>,
    /// BRW bytes.
    pub size: usize,
    /// Fill and verify the data pattern.
    pub check: bool,
    /// Also run over raw TCP and compare.
    pub baseline: bool,
    /// Extra arguments for a server process this client starts.
    pub server_args: Vec<String>,
}

/// The server's settings.
#[derive(Clone, Debug)]
pub struct ServeOpts {
    /// The server's NID (a tcp NID).
    pub nid: Nid,
    /// The LNet port.
    pub port: u16,
    /// The raw TCP baseline port, if any.
    pub raw_port: Option<u16>,
}

fn tcp_addr(nid: Nid) -> anyhow::Result<Ipv4Addr> {
    match (nid.net.kind, nid.ipv4()) {
        (NetType::Tcp, Some(a)) => Ok(a),
        _ => bail!(
            "{nid} is not a tcp NID (the raw TCP baseline needs ADDR@tcp; for o2ib compare with ib_write_bw: hw-tests/rdma-bench)"
        ),
    }
}

/// The IPv4 address of a tcp or o2ib NID.
fn ip_addr(nid: Nid) -> anyhow::Result<Ipv4Addr> {
    match nid.ipv4() {
        Some(a) => Ok(a),
        None => bail!("{nid} is not a tcp or o2ib NID (expected ADDR@tcp or ADDR@o2ib)"),
    }
}

/// Starts LNet as `nid`: a tcp NID on the tcp LND, an o2ib NID on the
/// o2ib LND (built with the `o2ib` feature, on a host with an RDMA device).
async fn start_lnet(nid: Nid, port: u16) -> anyhow::Result<Lnet> {
    let net = match (nid.net.kind, nid.ipv4()) {
        (NetType::Tcp, Some(addr)) => {
            NetConfig::Tcp(TcpConfig { addr, port, net_num: nid.net.num, ..TcpConfig::default() })
        }
        (NetType::O2ib, Some(addr)) => NetConfig::O2ib(crate::config::O2ibConfig {
            addr,
            port,
            net_num: nid.net.num,
            ..crate::config::O2ibConfig::default()
        }),
        _ => bail!("{nid} is not a tcp or o2ib NID"),
    };
    let cfg = LnetConfig { nets: vec![net], ..LnetConfig::default() };
    Lnet::start(cfg).await.with_context(|| format!("starting LNet as {nid} on port {port}"))
}

/// Runs a server until stdin reaches EOF or SIGTERM/SIGINT arrives.
/// Prints `READY <nid>` on stdout once it answers.
pub async fn serve(o: ServeOpts) -> anyhow::Result<()> {
    let lnet = start_lnet(o.nid, o.port).await?;
    let srv = server::Server::start(lnet.clone()).context("posting request buffers")?;
    if let Some(p) = o.raw_port
        && o.nid.net.kind == NetType::Tcp
    {
        baseline::serve(tcp_addr(o.nid)?, p).await?;
    }
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "READY {}", lnet.nid()).context("writing READY")?;
        out.flush().context("writing READY")?;
    }
    wait_for_stop().await?;
    tracing::info!(stats = %server::fmt_stats(&srv.stats), "server stopping");
    srv.stop();
    lnet.shutdown();
    Ok(())
}

async fn wait_for_stop() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    // A plain thread, so a pending read never holds up runtime shutdown.
    std::thread::Builder::new()
        .name("stdin-watch".into())
        .spawn(move || {
            use std::io::Read;
            let mut b = [0u8; 256];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut b), Ok(n) if n > 0) {}
            let _ = tx.send(());
        })
        .context("starting the stdin watcher")?;
    let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    tokio::select! {
        _ = rx => tracing::info!("stdin closed"),
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
    Ok(())
}

/// A port free on both local addresses.
fn free_port(a: Ipv4Addr, b: Ipv4Addr, avoid: u16) -> anyhow::Result<u16> {
    for _ in 0..64 {
        let l = TcpListener::bind(SocketAddrV4::new(a, 0)).context("probing for a free port")?;
        let port = l.local_addr()?.port();
        if port != avoid && TcpListener::bind(SocketAddrV4::new(b, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port is free on both {a} and {b}")
}

/// A server process this client started.
struct Spawned {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Spawned {
    async fn start(nid: Nid, port: u16, raw_port: u16, extra: &[String]) -> anyhow::Result<(Spawned, Nid)> {
        let exe = std::env::current_exe().context("finding this executable")?;
        let mut child = Command::new(&exe)
            .args(["serve", "--nid", &nid.to_string(), "--port", &port.to_string()])
            .args(["--raw-port", &raw_port.to_string()])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} serve", exe.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout from the server process"))?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(WAIT_MAX, async {
            while let Some(l) = lines.next_line().await? {
                if let Some(n) = l.strip_prefix("READY ") {
                    return Ok(Some(n.trim().to_string()));
                }
            }
            Ok::<_, std::io::Error>(None)
        })
        .await;
        let mut sp = Spawned { child, stdin };
        let got = match ready {
            Ok(Ok(Some(n))) => n,
            Ok(Ok(None)) => {
                let st = sp.child.wait().await.map(|s| s.to_string()).unwrap_or_default();
                bail!("the server process exited before it was ready ({st})");
            }
            Ok(Err(e)) => bail!("reading the server process's output: {e}"),
            Err(_) => bail!("the server process was not ready within {WAIT_MAX:?}"),
        };
        let peer: Nid = got.parse().map_err(|e| anyhow!("server reported a bad NID {got:?}: {e}"))?;
        // Keep draining its stdout so it can never block on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok((sp, peer))
    }

    /// Closes the child's stdin and waits for it to exit.
    async fn finish(mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(Ok(st)) if st.success() => Ok(()),
            Ok(Ok(st)) => bail!("the server process exited with {st}"),
            Ok(Err(e)) => bail!("waiting for the server process: {e}"),
            Err(_) => {
                let _ = self.child.kill().await;
                bail!("the server process did not exit within 10 s of stdin closing; killed it")
            }
        }
    }
}

/// Runs the client: starts LNet (and the server when no peer is named),
/// runs each test (and its raw baseline), and returns a row per test.
/// `on_row` sees each row as soon as it is measured.
pub async fn run_client(o: ClientOpts, mut on_row: impl FnMut(&Row)) -> anyhow::Result<Vec<Row>> {
    let my_nid = o.nid.unwrap_or(Nid::ip(LOCAL_CLIENT, Net::new(NetType::Tcp, 0)));
    let my_addr = ip_addr(my_nid)?;
    let (lnet, peer, raw_port, spawned) = match o.peer {
        Some(peer) => {
            ip_addr(peer)?;
            let lnet = start_lnet(my_nid, o.port.unwrap_or(DEFAULT_PORT)).await?;
            (lnet, peer, o.raw_port.unwrap_or(DEFAULT_RAW_PORT), None)
        }
        None => {
            let server_nid = Nid::ip(LOCAL_SERVER, my_nid.net);
            let port = match o.port {
                Some(p) => p,
                None => free_port(my_addr, LOCAL_SERVER, 0)?,
            };
            let raw = match o.raw_port {
                Some(p) => p,
                None => free_port(my_addr, LOCAL_SERVER, port)?,
            };
            let lnet = start_lnet(my_nid, port).await?;
            let (sp, peer) = Spawned::start(server_nid, port, raw, &o.server_args).await?;
            (lnet, peer, raw, Some(sp))
        }
    };
    let raw_addr =
        SocketAddr::V4(SocketAddrV4::new(if o.baseline { tcp_addr(peer)? } else { ip_addr(peer)? }, raw_port));
    let tests = async {
        let mut rows = Vec::new();
        for &t in &o.tests {
            let segs = segments(o.duration, o.baseline);
            let spec = RunSpec {
                op: t.op(),
                duration: o.duration / segs,
                concurrency: o.concurrency.unwrap_or(if t == Test::Ping { 1 } else { 8 }).max(1),
                size: if t == Test::Ping { 0 } else { o.size },
                check: o.check,
            };
            // With a baseline, LNet and raw TCP take turns in short
            // segments, so load from elsewhere on the machine hits both alike.
            let (mut l, mut r) = (Sample::default(), Sample::default());
            for _ in 0..segs {
                let s =
                    client::run(&lnet, peer, &spec).await.with_context(|| format!("{} over LNet", t.bench_name()))?;
                l.merge_run(s);
                if o.baseline {
                    let s = baseline::run(raw_addr, my_addr, &spec)
                        .await
                        .with_context(|| format!("{} over raw TCP", t.bench_name()))?;
                    r.merge_run(s);
                }
            }
            let raw = o.baseline.then(|| Summary::of(&r));
            let row = Row { test: t, lnet: Summary::of(&l), raw };
            on_row(&row);
            rows.push(row);
        }
        Ok::<_, anyhow::Error>(rows)
    };
    match spawned {
        Some(mut sp) => {
            let res = tokio::select! {
                r = tests => r,
                st = sp.child.wait() => Err(match st {
                    Ok(st) => anyhow!("the server process exited during the run ({st})"),
                    Err(e) => anyhow!("lost the server process: {e}"),
                }),
            };
            lnet.shutdown();
            let fin = sp.finish().await;
            match (res, fin) {
                (Ok(rows), Ok(())) => Ok(rows),
                (Ok(_), Err(e)) => Err(e),
                (Err(e), _) => Err(e),
            }
        }
        None => {
            let res = tests.await;
            lnet.shutdown();
            res
        }
    }
}

/// Checks client options before anything starts.
pub fn validate(o: &ClientOpts) -> anyhow::Result<()> {
    let bulk = o.tests.iter().any(|t| *t != Test::Ping);
    if bulk && (o.size == 0 || o.size > proto::MAX_BULK as usize) {
        bail!("--size must be between 1 and {} bytes", proto::MAX_BULK);
    }
    if o.duration.is_zero() {
        bail!("--duration must be positive");
    }
    if o.concurrency == Some(0) {
        bail!("--concurrency must be at least 1");
    }
    Ok(())
}
