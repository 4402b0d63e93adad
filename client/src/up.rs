//! A one-node file system of child daemons: what `sheen up` starts and
//! the end-to-end tests use. One `sheen-mds` (MGS + MDT0) and one
//! `sheen-oss` with two OSTs on loopback tcp, data under one directory.
//!
//! Owns: [`Cluster`] — writing the daemons' TOML configs, formatting the
//! OSTs once, spawning the daemons and waiting (bounded) for their ready
//! lines (`sheen-oss` registers its OSTs with the MGS named in its config
//! before it prints its own), and waiting until the MDT has reached both
//! OSTs, each step named on a [`Progress`] ([`Cluster::start_showing`]); [`State`] (`DIR/sheen-up.json`, what `sheen down`
//! reads). Must not: sleep to wait for a daemon (it waits on ready lines
//! and on the MDT's bounded server-side wait).

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use lnet::{Lnet, Nid};

use crate::mdc::Mdc;
use crate::osc::ost_name;
use crate::progress::Progress;

/// How long a daemon may take to print its ready line.
pub const READY_BOUND: Duration = Duration::from_secs(60);
/// OSTs `sheen up` creates.
pub const OSTS: u32 = 2;
/// The state file under the data directory.
pub const STATE_FILE: &str = "sheen-up.json";

/// Why the file system did not come up.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// A daemon binary is missing.
    #[error("{0} not found next to this program or on PATH (build it: cargo build -p mdt -p ost --bins)")]
    NoBinary(String),
    /// Local I/O (configs, logs, spawning).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A daemon exited or did not become ready.
    #[error("{daemon} did not become ready: {why} (log: {log})")]
    NotReady {
        /// Which daemon.
        daemon: String,
        /// What happened.
        why: String,
        /// Its log file.
        log: String,
    },
    /// The file system did not assemble (registration, MDT to OST).
    #[error("file system: {0}")]
    Assemble(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> UpError {
    let what = what.into();
    move |source| UpError::Io { what, source }
}

/// Where a daemon binary is: next to the running program (or its parent,
/// for test executables in `deps/`), else on PATH.
pub fn find_binary(name: &str) -> Result<PathBuf, UpError> {
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| UpError::NoBinary(name.into()))
}

/// Addresses and ports of a one-node file system.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Layout {
    /// File system name.
    pub fsname: String,
    /// Loopback address of the MDS (the OSS uses the next one).
    pub mds_addr: Ipv4Addr,
    /// Loopback address of the OSS.
    pub oss_addr: Ipv4Addr,
    /// The lnet tcp port.
    pub port: u16,
    /// The MDS's admin (metrics) port.
    pub mds_admin_port: u16,
    /// The OSS's admin (metrics) port.
    pub oss_admin_port: u16,
    /// The FUSE mount's metrics port, on the MDS's address (0: none).
    #[serde(default)]
    pub client_admin_port: u16,
}

impl Layout {
    /// The MGS's NID.
    pub fn mgs_nid(&self) -> Nid {
        Nid::ip(self.mds_addr, lnet::Net::new(lnet::NetType::Tcp, 0))
    }
}

/// What `sheen down` needs: the daemons' pids and where things are.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct State {
    /// The layout.
    pub layout: Layout,
    /// `sheen-mds` pid.
    pub mds_pid: u32,
    /// `sheen-oss` pid.
    pub oss_pid: u32,
    /// The FUSE mount's pid and directory, if mounted.
    pub mount: Option<(u32, PathBuf)>,
}

/// A running one-node file system (children of this process).
#[derive(Debug)]
pub struct Cluster {
    /// The layout.
    pub layout: Layout,
    /// The data directory.
    pub dir: PathBuf,
    /// `sheen-mds`.
    pub mds: Child,
    /// `sheen-oss`.
    pub oss: Child,
    /// The MDS's admin address.
    pub mds_admin: String,
    /// Set when the MDT could not reach every OST (files cannot get
    /// objects until it does; directories and `df` work).
    pub ost_warning: Option<String>,
}

/// Spawns `bin args`, stderr to `log`, and waits (bounded) for a first
/// stdout line starting with `want`.
pub fn spawn_ready(
    bin: &Path,
    args: &[&str],
    log: &Path,
    want: &str,
    detach: bool,
) -> Result<(Child, String), UpError> {
    let name = bin.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let logf =
        std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(io(log.display().to_string()))?;
    let mut cmd = Command::new(bin);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(logf);
    if detach {
        // Its own process group: a ^C to `sheen up` does not reach it.
        cmd.process_group(0);
    }
    let mut child = cmd.spawn().map_err(io(format!("spawning {name}")))?;
    let not_ready = |why: String| UpError::NotReady { daemon: name.clone(), why, log: log.display().to_string() };
    let out = child.stdout.take().ok_or_else(|| not_ready("no stdout".into()))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // The daemons print only their ready line; the pipe closes with us.
        let mut lines = BufReader::new(out).lines();
        let _ = tx.send(lines.next().and_then(Result::ok));
    });
    match rx.recv_timeout(READY_BOUND) {
        Ok(Some(line)) if line.starts_with(want) => Ok((child, line)),
        Ok(Some(line)) => {
            let _ = child.kill();
            Err(not_ready(format!("unexpected first line {line:?}")))
        }
        Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            Err(not_ready(format!("exited ({status})")))
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let _ = child.kill();
            Err(not_ready(format!("no ready line within {READY_BOUND:?}")))
        }
    }
}

impl Cluster {
    /// Starts the daemons for `layout` with data under `dir` (formatting
    /// the OSTs on first use) and waits until the MDT reached every OST.
    /// `detach` puts them in their own process group (for `sheen up`).
    pub async fn start(layout: Layout, dir: &Path, commit_ms: u64, detach: bool) -> Result<Cluster, UpError> {
        Cluster::start_showing(layout, dir, commit_ms, detach, &Progress::hidden()).await
    }

    /// [`Cluster::start`], naming each step (formatting, each daemon, the
    /// wait for the OSTs) on `progress`.
    pub async fn start_showing(
        layout: Layout,
        dir: &Path,
        commit_ms: u64,
        detach: bool,
        progress: &Progress,
    ) -> Result<Cluster, UpError> {
        let dir = std::path::absolute(dir).map_err(io("data directory"))?;
        std::fs::create_dir_all(&dir).map_err(io(dir.display().to_string()))?;
        let (mds_bin, oss_bin) = (find_binary("sheen-mds")?, find_binary("sheen-oss")?);
        let l = &layout;
        let mds_cfg = format!(
            "fsname = \"{fs}\"\ndata_dir = \"{d}\"\nadmin_addr = \"{a}:{ap}\"\n[lnet]\nnets = [{{ lnd = \"tcp\", addr = \"{a}\", port = {p} }}]\n[lnet.tunables]\ntransaction_timeout = 10\n[mgs]\n[mdt]\nindex = 0\ncommit_interval_ms = {commit_ms}\nprecreate_batch = 64\n",
            fs = l.fsname,
            d = dir.join("mds").display(),
            a = l.mds_addr,
            ap = l.mds_admin_port,
            p = l.port,
        );
        let mut oss_cfg = format!(
            "fs_uuid = \"{fs}-one-node\"\nadmin = \"{a}:{ap}\"\nmgs = \"{mgs}\"\n[lnet]\nnets = [{{ lnd = \"tcp\", addr = \"{a}\", port = {p} }}]\n[lnet.tunables]\ntransaction_timeout = 10\n",
            fs = l.fsname,
            a = l.oss_addr,
            ap = l.oss_admin_port,
            p = l.port,
            mgs = l.mgs_nid(),
        );
        let commit_s = commit_ms as f64 / 1000.0;
        for i in 0..OSTS {
            oss_cfg.push_str(&format!(
                "[[targets]]\nname = \"{n}\"\nindex = {i}\ndir = \"{d}\"\ncommit_interval = {commit_s}\nreserve_mib = 0\n",
                n = ost_name(&l.fsname, i),
                d = dir.join(format!("ost{i}")).display(),
            ));
        }
        let (mds_toml, oss_toml) = (dir.join("mds.toml"), dir.join("oss.toml"));
        std::fs::write(&mds_toml, mds_cfg).map_err(io("writing mds.toml"))?;
        std::fs::write(&oss_toml, oss_cfg).map_err(io("writing oss.toml"))?;
        let oss_log = dir.join("oss.log");
        if !dir.join("ost0").exists() {
            progress.step(format!("formatting {OSTS} OSTs under {}", dir.display()));
            let out = Command::new(&oss_bin)
                .args(["format", "--config"])
                .arg(&oss_toml)
                .output()
                .map_err(io("sheen-oss format"))?;
            if !out.status.success() {
                return Err(UpError::NotReady {
                    daemon: "sheen-oss format".into(),
                    why: String::from_utf8_lossy(&out.stderr).into_owned(),
                    log: oss_log.display().to_string(),
                });
            }
        }
        let s = |p: &Path| p.display().to_string();
        progress.step(format!("starting sheen-mds (MGS+MDT0) on {}, waiting for it", l.mgs_nid()));
        let (mds, line) = spawn_ready(
            &mds_bin,
            &["run", "--config", &s(&mds_toml)],
            &dir.join("mds.log"),
            "sheen-mds ready",
            detach,
        )?;
        let mds_admin = line.split_whitespace().find_map(|w| w.strip_prefix("admin=")).unwrap_or("none").to_string();
        progress.step(format!("starting sheen-oss ({OSTS} OSTs) on {}@tcp, waiting for it", l.oss_addr));
        let (oss, _) = match spawn_ready(&oss_bin, &["--config", &s(&oss_toml)], &oss_log, "ready", detach) {
            Ok(x) => x,
            Err(e) => {
                stop_child(mds);
                return Err(e);
            }
        };
        progress.step(format!("waiting for the MDT to reach its {OSTS} OSTs"));
        let mut c = Cluster { layout, dir, mds, oss, mds_admin, ost_warning: None };
        match c.assemble().await {
            Ok(w) => c.ost_warning = w,
            Err(e) => {
                c.stop();
                return Err(e);
            }
        }
        Ok(c)
    }

    /// Waits until the MDT reached every OST (the OSS registered them with
    /// the MGS before its ready line); says (as a warning) if it did not.
    async fn assemble(&self) -> Result<Option<String>, UpError> {
        let l = &self.layout;
        let me = Ipv4Addr::new(l.mds_addr.octets()[0], l.mds_addr.octets()[1], l.mds_addr.octets()[2], 250);
        let cfg = lnet::LnetConfig {
            nets: vec![lnet::NetConfig::Tcp(lnet::TcpConfig {
                addr: me,
                port: l.port,
                accept: false,
                ..lnet::TcpConfig::default()
            })],
            ..lnet::LnetConfig::default()
        };
        let lnet = Lnet::start(cfg).await.map_err(|e| UpError::Assemble(format!("local lnet: {e}")))?;
        let res = self.assemble_with(&lnet).await;
        lnet.shutdown();
        res
    }

    async fn assemble_with(&self, lnet: &Lnet) -> Result<Option<String>, UpError> {
        let l = &self.layout;
        let err = |e: crate::ClientError| UpError::Assemble(e.to_string());
        let mdc = Mdc::new(lnet, l.mgs_nid(), &format!("sheen-up-{}", std::process::id())).map_err(err)?;
        mdc.connect().await.map_err(err)?;
        let usable = mdc.wait_info("osts_usable", u64::from(OSTS), 20_000).await;
        mdc.disconnect().await;
        let usable = usable.map_err(err)?;
        if usable.value < u64::from(OSTS) {
            let down: Vec<u32> = usable.osts.iter().filter(|o| !o.connected).map(|o| o.index).collect();
            return Ok(Some(format!(
                "the MDT can allocate on {} of {OSTS} OSTs (not reached: {down:?}); see {}",
                usable.value,
                self.dir.join("mds.log").display()
            )));
        }
        Ok(None)
    }

    /// The state `sheen down` needs.
    pub fn state(&self, mount: Option<(u32, PathBuf)>) -> State {
        State { layout: self.layout.clone(), mds_pid: self.mds.id(), oss_pid: self.oss.id(), mount }
    }

    /// SIGTERM to both daemons, the MDT first (Lustre's order: its OST
    /// connections still answer while it stops); waits (bounded) for
    /// their exits.
    pub fn stop(self) {
        stop_child(self.mds);
        stop_child(self.oss);
    }
}

/// Mounts `c` on `mnt` with FUSE in a child `sheen mount` (the program
/// `sheen`, talking lnet `port`), as `sheen up` does; returns once the
/// child says the mount is ready. `detach`: its own process group.
pub fn mount_child(sheen: &Path, port: u16, c: &Cluster, mnt: &Path, detach: bool) -> Result<Child, String> {
    if !Path::new("/dev/fuse").exists() {
        return Err("no /dev/fuse".into());
    }
    std::fs::create_dir_all(mnt).map_err(|e| format!("{}: {e}", mnt.display()))?;
    let target = format!("{}:/{}", c.layout.mgs_nid(), c.layout.fsname);
    let port = port.to_string();
    let m = mnt.display().to_string();
    let mut args = vec!["--port", &port, "mount", &target, &m];
    let metrics = format!("{}:{}", c.layout.mds_addr, c.layout.client_admin_port);
    if c.layout.client_admin_port != 0 {
        args.extend(["--metrics", &metrics]);
    }
    spawn_ready(sheen, &args, &c.dir.join("mount.log"), "sheen mount ready", detach)
        .map(|(child, _)| child)
        .map_err(|e| e.to_string())
}

/// SIGTERM (through `kill(1)`) and a bounded wait for the child.
pub fn stop_child(mut c: Child) {
    let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(c.wait());
        c
    });
    if rx.recv_timeout(READY_BOUND).is_err() {
        tracing::warn!("a daemon did not exit within {READY_BOUND:?} of SIGTERM");
    }
}
