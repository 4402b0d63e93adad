//! The run's processes: `sheen-mds` (MGS + MDT0), one `sheen-oss` per OST
//! and the workload clients, each in its own network namespace.
//!
//! Owns: the daemons' TOML configs (short timeouts, so a fault cycle takes
//! seconds), formatting the OSTs, spawning a program in a namespace and
//! waiting (bounded) for its ready line, kill -9 and restart, SIGSTOP and
//! SIGCONT of a client, waiting until the MDT reached
//! every OST, and stopping everything.
//!
//! Must not: judge what the processes do (the run and the model do).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use client::mdc::Mdc;
use lnet::{Lnet, LnetConfig, NetConfig, Nid, TcpConfig};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::watch;

use crate::netns::Net;
use crate::oplog::now_us;

/// How long a process may take to print its ready line.
pub const READY_BOUND: Duration = Duration::from_secs(60);
/// The lnet port inside every namespace.
pub const LNET_PORT: u16 = 988;
/// The admin (metrics, faults) port inside every namespace.
pub const ADMIN_PORT: u16 = 8012;
/// The file system's name.
pub const FSNAME: &str = "chaos";

/// Timeouts and intervals written into the daemons' configs.
#[derive(Debug, Clone, Copy)]
pub struct Knobs {
    /// MDT and OST commit interval, milliseconds.
    pub commit_ms: u64,
    /// lnet's transaction timeout, seconds.
    pub lnd_timeout: f64,
    /// Lustre's obd_timeout for the targets, seconds: a silent export is
    /// evicted after 1.5x, recovery waits for known clients up to 3x.
    pub obd_timeout: f64,
}

impl Default for Knobs {
    fn default() -> Knobs {
        Knobs { commit_ms: 200, lnd_timeout: 2.0, obd_timeout: 10.0 }
    }
}

/// A process of the run.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    /// Its pid.
    pub pid: u32,
    /// When it printed its ready line, µs.
    pub ready_us: u64,
}

async fn spawn_in(
    net: &Net,
    node: &str,
    program: &Path,
    args: &[String],
    log: &Path,
    want: &str,
    stdin: bool,
) -> Result<(Proc, Option<ChildStdin>, Lines<BufReader<ChildStdout>>)> {
    let logf =
        std::fs::OpenOptions::new().create(true).append(true).open(log).with_context(|| log.display().to_string())?;
    let mut cmd = Command::new("ip");
    cmd.args(net.exec_prefix(node)?).arg(program).args(args);
    cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(logf);
    cmd.kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| format!("spawning {} in {node}", program.display()))?;
    let pid = child.id().context("no pid")?;
    let out = child.stdout.take().context("no stdout")?;
    let input = child.stdin.take();
    let mut lines = BufReader::new(out).lines();
    let name = program.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let first = tokio::time::timeout(READY_BOUND, lines.next_line()).await;
    match first {
        Ok(Ok(Some(l))) if l.starts_with(want) => {}
        Ok(Ok(Some(l))) => bail!("{name} in {node}: unexpected first line {l:?} (log {})", log.display()),
        Ok(_) => {
            let st = child.wait().await.map(|s| s.to_string()).unwrap_or_default();
            bail!("{name} in {node} exited before ready ({st}); log {}", log.display())
        }
        Err(_) => bail!("{name} in {node}: no ready line within {READY_BOUND:?}; log {}", log.display()),
    }
    Ok((Proc { child, pid, ready_us: now_us() }, input, lines))
}

/// Keeps draining a daemon's stdout so it never blocks on a full pipe.
fn drain(mut lines: Lines<BufReader<ChildStdout>>) {
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
}

/// Follows a worker's progress lines (`ok <t1>` / `err <t1>`): the last
/// successful operation's end time.
fn follow(mut lines: Lines<BufReader<ChildStdout>>) -> watch::Receiver<u64> {
    let (tx, rx) = watch::channel(0);
    tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            if let Some(t) = l.strip_prefix("ok ").and_then(|t| t.trim().parse::<u64>().ok()) {
                tx.send_replace(t);
            }
        }
    });
    rx
}

fn signal(pid: u32, sig: &str) -> Result<()> {
    let st = std::process::Command::new("kill").args([sig, &pid.to_string()]).status().context("kill(1)")?;
    if !st.success() {
        bail!("kill {sig} {pid} failed");
    }
    Ok(())
}

/// A server daemon that can be killed and restarted.
#[derive(Debug)]
pub struct Daemon {
    /// `mds`, `oss0`, ...: also its node's name.
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    ready: &'static str,
    /// Its admin endpoint.
    pub admin: SocketAddr,
    /// Its NID.
    pub nid: Nid,
    /// The running process.
    pub proc: Option<Proc>,
    /// Times started.
    pub starts: u32,
}

impl Daemon {
    /// Starts it and waits for its ready line.
    pub async fn start(&mut self, net: &Net) -> Result<()> {
        let (p, _, lines) = spawn_in(net, &self.name, &self.program, &self.args, &self.log, self.ready, false).await?;
        drain(lines);
        self.proc = Some(p);
        self.starts += 1;
        Ok(())
    }

    /// kill -9, and waits for the exit.
    pub async fn kill9(&mut self) -> Result<()> {
        let Some(mut p) = self.proc.take() else { bail!("{} is not running", self.name) };
        p.child.start_kill().context("SIGKILL")?;
        tokio::time::timeout(READY_BOUND, p.child.wait()).await.context("no exit after SIGKILL")??;
        Ok(())
    }

    /// Whether it exited by itself (and how).
    pub fn exited(&mut self) -> Option<String> {
        let p = self.proc.as_mut()?;
        match p.child.try_wait() {
            Ok(Some(st)) => Some(st.to_string()),
            _ => None,
        }
    }

    /// SIGTERM, a bounded wait, then SIGKILL.
    pub async fn stop(&mut self) {
        let Some(mut p) = self.proc.take() else { return };
        let _ = signal(p.pid, "-TERM");
        if tokio::time::timeout(Duration::from_secs(20), p.child.wait()).await.is_err() {
            let _ = p.child.start_kill();
            let _ = p.child.wait().await;
        }
    }
}

/// A workload client process.
#[derive(Debug)]
pub struct WorkerProc {
    /// Its index.
    pub client: u32,
    /// Its node.
    pub node: String,
    /// The process.
    pub proc: Proc,
    stdin: Option<ChildStdin>,
    /// The operation logs of its lanes (logical clients).
    pub logs: Vec<(u32, PathBuf)>,
    /// End time of its last successful operation, µs.
    pub last_ok: watch::Receiver<u64>,
}

impl WorkerProc {
    /// Waits (bounded) until an operation that ended after `after` (µs)
    /// succeeded; returns whether one did.
    pub async fn wait_progress(&mut self, after: u64, bound: Duration) -> bool {
        let mut rx = self.last_ok.clone();
        matches!(tokio::time::timeout(bound, rx.wait_for(|&t| t > after)).await, Ok(Ok(_)))
    }

    /// SIGSTOP.
    pub fn freeze(&self) -> Result<()> {
        signal(self.proc.pid, "-STOP")
    }

    /// SIGCONT.
    pub fn thaw(&self) -> Result<()> {
        signal(self.proc.pid, "-CONT")
    }

    /// Closes its stdin (it finishes its operation, closes its files and
    /// exits); kills it if it has not exited within `bound`. Returns how it
    /// ended.
    pub async fn stop(&mut self, bound: Duration) -> String {
        let _ = signal(self.proc.pid, "-CONT");
        self.stdin.take();
        match tokio::time::timeout(bound, self.proc.child.wait()).await {
            Ok(Ok(st)) if st.success() => "exited".into(),
            Ok(Ok(st)) => format!("exited with {st}"),
            Ok(Err(e)) => format!("wait failed: {e}"),
            Err(_) => {
                let _ = self.proc.child.start_kill();
                let _ = self.proc.child.wait().await;
                format!("did not stop within {bound:?} (stuck in an operation); killed")
            }
        }
    }
}

/// Everything of one run.
#[derive(Debug)]
pub struct Cluster {
    /// The network.
    pub net: Net,
    /// Data and logs.
    pub dir: PathBuf,
    /// `sheen-mds`.
    pub mds: Daemon,
    /// One `sheen-oss` per OST.
    pub oss: Vec<Daemon>,
    /// The clients.
    pub workers: Vec<WorkerProc>,
    /// The controller's lnet (root namespace).
    pub lnet: Lnet,
    /// The run's timeouts (the workers mount with the targets' obd_timeout).
    pub knobs: Knobs,
}

/// Node names of a run with `osts` OSSes and `clients` clients.
pub fn node_names(osts: usize, clients: usize) -> Vec<String> {
    let mut v = vec!["mds".to_string()];
    v.extend((0..osts).map(|i| format!("oss{i}")));
    v.extend((0..clients).map(|i| format!("c{i}")));
    v
}

fn tcp(addr: Ipv4Addr) -> String {
    format!("{{ lnd = \"tcp\", addr = \"{addr}\", port = {LNET_PORT}, reconnect_min = 0.1, reconnect_max = 0.5 }}")
}

impl Cluster {
    /// Makes the network, writes configs, formats and starts the servers,
    /// registers the OSTs and waits until the MDT reached every OST.
    pub async fn start(dir: &Path, osts: usize, clients: usize, knobs: Knobs, subnet: u8) -> Result<Cluster> {
        let names = node_names(osts, clients);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let net = Net::create(&refs, subnet)?;
        std::fs::create_dir_all(dir)?;
        let mds_bin = client::up::find_binary("sheen-mds")?;
        let oss_bin = client::up::find_binary("sheen-oss")?;
        let a = net.node("mds")?.addr;
        let mds_cfg = format!(
            "fsname = \"{FSNAME}\"\ndata_dir = \"{d}\"\nadmin_addr = \"{a}:{ADMIN_PORT}\"\n[lnet]\nnets = [{t}]\n\
             [lnet.tunables]\ntransaction_timeout = {lt}\n[mgs]\n[mdt]\nindex = 0\ncommit_interval_ms = {c}\n\
             precreate_batch = 64\nstripe_size = 65536\nobd_timeout_s = {ot}\n",
            d = dir.join("mds").display(),
            t = tcp(a),
            lt = knobs.lnd_timeout,
            c = knobs.commit_ms,
            ot = knobs.obd_timeout,
        );
        let mds_toml = dir.join("mds.toml");
        std::fs::write(&mds_toml, mds_cfg)?;
        let nid = |addr: Ipv4Addr| Nid::ip(addr, lnet::Net::new(lnet::NetType::Tcp, 0));
        let mds = Daemon {
            name: "mds".into(),
            program: mds_bin,
            args: vec!["run".into(), "--config".into(), mds_toml.display().to_string()],
            log: dir.join("mds.log"),
            ready: "sheen-mds ready",
            admin: SocketAddr::from((a, ADMIN_PORT)),
            nid: nid(a),
            proc: None,
            starts: 0,
        };
        let mut oss = Vec::new();
        for i in 0..osts {
            let name = format!("oss{i}");
            let a = net.node(&name)?.addr;
            let cfg = format!(
                "fs_uuid = \"{FSNAME}-chaos\"\nadmin = \"{a}:{ADMIN_PORT}\"\nmgs = \"{m}\"\n[lnet]\nnets = [{t}]\n\
                 tunables = {{ transaction_timeout = {lt} }}\n[service]\nobd_timeout = {ot}\n[[targets]]\nname = \"{tn}\"\nindex = {i}\n\
                 dir = \"{d}\"\ncommit_interval = {c}\nreserve_mib = 0\n",
                t = tcp(a),
                m = mds.nid,
                lt = knobs.lnd_timeout,
                ot = knobs.obd_timeout,
                tn = client::osc::ost_name(FSNAME, i as u32),
                d = dir.join(format!("ost{i}")).display(),
                c = knobs.commit_ms as f64 / 1000.0,
            );
            let toml = dir.join(format!("{name}.toml"));
            std::fs::write(&toml, cfg)?;
            let out = std::process::Command::new(&oss_bin).args(["format", "--config"]).arg(&toml).output()?;
            if !out.status.success() {
                bail!("sheen-oss format {name}: {}", String::from_utf8_lossy(&out.stderr));
            }
            oss.push(Daemon {
                name: name.clone(),
                program: oss_bin.clone(),
                args: vec!["--config".into(), toml.display().to_string()],
                log: dir.join(format!("{name}.log")),
                ready: "ready",
                admin: SocketAddr::from((a, ADMIN_PORT)),
                nid: nid(a),
                proc: None,
                starts: 0,
            });
        }
        let lcfg = LnetConfig {
            nets: vec![NetConfig::Tcp(TcpConfig { addr: net.root_addr, port: LNET_PORT, ..TcpConfig::default() })],
            ..LnetConfig::default()
        };
        let lnet = Lnet::start(lcfg).await.context("the controller's lnet")?;
        let mut c = Cluster { net, dir: dir.to_path_buf(), mds, oss, workers: Vec::new(), lnet, knobs };
        c.mds.start(&c.net).await?;
        for i in 0..c.oss.len() {
            c.start_oss(i).await?;
        }
        c.wait_assembled().await?;
        Ok(c)
    }

    /// Starts OSS `i`; it registers its OST with the MGS before its ready
    /// line (a new boot epoch: the MGS tells everyone it restarted).
    pub async fn start_oss(&mut self, i: usize) -> Result<()> {
        let o = self.oss.get_mut(i).context("no such OSS")?;
        o.start(&self.net).await
    }

    /// Waits (bounded by the MDT) until it applied the config log and can
    /// allocate on every OST.
    pub async fn wait_assembled(&self) -> Result<()> {
        let mdc = Mdc::new(&self.lnet, self.mds.nid, "sheen-chaos").context("an MDT import")?;
        mdc.connect().await.context("connecting to the MDT")?;
        let want = self.oss.len() as u64;
        let usable = mdc.wait_info("osts_usable", want, 30_000).await;
        // Leave at once: a later MDT restart must not wait for this client.
        mdc.disconnect().await;
        let usable = usable.context("asking the MDT for its OSTs")?;
        if usable.value < want {
            bail!("the MDT reached {} of {want} OSTs", usable.value);
        }
        Ok(())
    }

    /// Starts the workload clients (`program worker ...`) and waits until
    /// each mounted.
    pub async fn start_workers(
        &mut self,
        program: &Path,
        seed: u64,
        think_ms: u64,
        lanes: u32,
        library: bool,
    ) -> Result<()> {
        let nodes: Vec<(String, Ipv4Addr)> =
            self.net.nodes.iter().filter(|n| n.name.starts_with('c')).map(|n| (n.name.clone(), n.addr)).collect();
        for (i, (node, addr)) in nodes.into_iter().enumerate() {
            let logs = (0..lanes)
                .map(|l| (i as u32 * lanes + l, crate::worker::log_path(&self.dir, i as u32 * lanes + l)))
                .collect();
            let mut args: Vec<String> = vec![
                "worker".into(),
                "--client".into(),
                i.to_string(),
                "--addr".into(),
                addr.to_string(),
                "--mgs".into(),
                self.mds.nid.to_string(),
                "--fsname".into(),
                FSNAME.into(),
                "--seed".into(),
                seed.to_string(),
                "--log-dir".into(),
                self.dir.display().to_string(),
                "--lanes".into(),
                lanes.to_string(),
                "--think-ms".into(),
                think_ms.to_string(),
                // The clients' timeouts are the targets': pings every
                // quarter of obd_timeout, as the servers' evictors expect.
                "--options".into(),
                format!("obd_timeout={}", self.knobs.obd_timeout),
            ];
            if library {
                args.push("--library".into());
            }
            let stderr = self.dir.join(format!("client{i}.log"));
            let (proc, stdin, lines) =
                spawn_in(&self.net, &node, program, &args, &stderr, "worker ready", true).await?;
            let last_ok = follow(lines);
            self.workers.push(WorkerProc { client: i as u32, node, proc, stdin, logs, last_ok });
        }
        Ok(())
    }

    /// The daemon called `name`.
    pub fn daemon(&mut self, name: &str) -> Result<&mut Daemon> {
        if name == "mds" {
            return Ok(&mut self.mds);
        }
        self.oss.iter_mut().find(|d| d.name == name).with_context(|| format!("no daemon {name}"))
    }

    /// Stops the servers (the clients must be stopped first).
    pub async fn stop_servers(&mut self) {
        for o in &mut self.oss {
            o.stop().await;
        }
        self.mds.stop().await;
        self.lnet.shutdown();
    }
}
