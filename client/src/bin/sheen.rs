//! `sheen`: the command-line tool. `up`/`down` run a one-node file
//! system; `df`, `getstripe`, `setstripe`, `targets`, `stats`, `recovery`
//! and `ping` talk to one. Human tables by default, `--json` lines.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use client::Sheen;
use client::cli::{Format, LocalNet};
use client::cli_fs::{self, PoolAction, TargetAction};
use client::progress::Progress;
use client::up::{Cluster, Layout, STATE_FILE, State};
use lnet::{Lnet, Nid};
use ptlrpc::wire::mds::StripeSpec;
use ptlrpc::wire::mgs::TargetKind;

#[derive(Parser, Debug)]
#[command(name = "sheen", about = "Sheen parallel file system: client and tools")]
struct Cli {
    /// One JSON object per line instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// The MGS (default: the one `sheen up` started under ./sheen-data).
    #[arg(long, global = true)]
    mgs: Option<Nid>,
    /// File system name.
    #[arg(long, global = true, default_value = "sheen")]
    fsname: String,
    /// The lnet tcp port of the servers.
    #[arg(long, global = true, default_value_t = 988)]
    port: u16,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start a one-node file system (MGS+MDT and two OSTs on loopback tcp).
    Up {
        /// Data directory.
        #[arg(default_value = "sheen-data")]
        dir: PathBuf,
        /// Loopback address of the MDS (the OSS takes the next one).
        #[arg(long, default_value = "127.0.88.1")]
        addr: std::net::Ipv4Addr,
        /// Leave the file system unmounted.
        #[arg(long)]
        no_mount: bool,
    },
    /// Mount a file system with FUSE, in the foreground (SIGTERM or ^C unmounts).
    Mount {
        /// `MGSNID:/FSNAME`, e.g. `127.0.88.1@tcp:/sheen`.
        target: String,
        /// Mount point.
        dir: PathBuf,
        /// FUSE worker threads.
        #[arg(long, default_value_t = 4)]
        threads: usize,
        /// Client timeouts, seconds, under Lustre's names:
        /// `obd_timeout=10,ping_interval=2,at_min=1,at_max=60`.
        #[arg(short = 'o', long = "options", default_value = "")]
        options: String,
        /// Serve the mount's /metrics (FUSE operations, locks, imports,
        /// lnet) on this address, e.g. `127.0.0.1:9101` (port 0: any;
        /// the ready line names it).
        #[arg(long)]
        metrics: Option<std::net::SocketAddr>,
    },
    /// Unmount a FUSE mount of Sheen (its `sheen mount` process then exits).
    Umount {
        /// Mount point.
        dir: PathBuf,
    },
    /// Stop what `sheen up` started.
    Down {
        /// Data directory.
        #[arg(default_value = "sheen-data")]
        dir: PathBuf,
    },
    /// Space per target.
    Df,
    /// Check the file system: the MDT's namespace (entries, inodes, link
    /// counts) and every OST object of every sequence against the layouts
    /// (no dangling, no leaked objects). Exact when idle, best effort
    /// under load; one GETATTR per object id. Exits 1 on a problem.
    Check,
    /// A file's layout or a directory's default striping.
    Getstripe {
        /// Path inside the file system (from its root).
        path: String,
    },
    /// Set a directory's default striping, or create an empty file with a layout.
    Setstripe {
        /// Stripe count (-1: all OSTs).
        #[arg(short = 'c', long, default_value_t = 0, allow_negative_numbers = true)]
        count: i64,
        /// Stripe size in bytes (a multiple of 64 KiB; 0: default).
        #[arg(short = 'S', long, default_value_t = 0)]
        size: u32,
        /// First OST index (-1: the allocator chooses).
        #[arg(short = 'i', long, default_value_t = -1, allow_negative_numbers = true)]
        index: i32,
        /// OST pool.
        #[arg(short = 'p', long, default_value = "")]
        pool: String,
        /// Path inside the file system (from its root).
        path: String,
    },
    /// List targets, or add (register) / activate / deactivate / remove one.
    Targets {
        /// What to do.
        #[arg(value_enum, default_value = "list")]
        action: TargetAction,
        /// mdt or ost.
        #[arg(value_enum, default_value = "ost")]
        kind: Kind,
        /// Target index.
        #[arg(default_value_t = 0)]
        index: u32,
        /// Where the target serves (add; repeat for more NIDs).
        #[arg(long = "nid")]
        nids: Vec<String>,
    },
    /// OST pools: list, or create / add / remove / destroy (like `lctl pool_*`).
    Pools {
        /// What to do.
        #[arg(value_enum, default_value = "list")]
        action: PoolAction,
        /// Pool name.
        pool: Option<String>,
        /// OST indices (add, remove).
        osts: Vec<u32>,
    },
    /// LNet ping.
    Ping {
        /// Peers.
        #[arg(required = true)]
        nids: Vec<Nid>,
        /// Pings per peer.
        #[arg(short, long, default_value_t = 1)]
        count: u32,
    },
    /// Recovery state of the daemons `sheen up` started (their metrics).
    Recovery {
        /// Data directory of `sheen up`.
        #[arg(long, default_value = "sheen-data")]
        dir: PathBuf,
    },
    /// Counters of the daemons `sheen up` started (their metrics).
    Stats {
        /// Data directory of `sheen up`.
        #[arg(long, default_value = "sheen-data")]
        dir: PathBuf,
        /// Only metrics whose name contains one of these.
        filter: Vec<String>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    Mdt,
    Ost,
}

fn main() -> anyhow::Result<()> {
    client::cli::init_tracing();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    match rt.block_on(run(cli)) {
        Ok(true) => Ok(()),
        Ok(false) => std::process::exit(1),
        Err(e) => {
            // The chain of causes, one line, no backtrace: what to fix.
            eprintln!("sheen: {e:#}");
            std::process::exit(1);
        }
    }
}

fn read_state(dir: &Path) -> anyhow::Result<State> {
    let p = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&p).with_context(|| format!("{} (is `sheen up` running?)", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}

async fn mount(cli: &Cli, progress: &Progress) -> anyhow::Result<(Lnet, Sheen)> {
    let mgs = match cli.mgs {
        Some(n) => n,
        None => read_state(Path::new("sheen-data"))
            .context("no --mgs given and no `sheen up` under ./sheen-data")?
            .layout
            .mgs_nid(),
    };
    progress.step(format!("connecting to {mgs}:/{} (MGS, MDT, OSTs)", cli.fsname));
    let lnet = LocalNet { nid: None, port: cli.port }.start(mgs).await?;
    let fs = Sheen::mount(&lnet, mgs, &cli.fsname).await.with_context(|| {
        format!("mounting {mgs}:/{} (is it up? `sheen --mgs {mgs} ping {mgs}` checks the network)", cli.fsname)
    })?;
    Ok((lnet, fs))
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    let fmt = if cli.json { Format::Json } else { Format::Table };
    // Steps on stderr, on a terminal and without --json only.
    let progress = Progress::on_terminal(fmt == Format::Table);
    match &cli.cmd {
        Cmd::Up { dir, addr, no_mount } => up(&cli, dir, *addr, *no_mount, fmt, &progress).await,
        Cmd::Down { dir } => down(dir, fmt, &progress).await,
        Cmd::Umount { dir } => umount(dir),
        Cmd::Mount { target, dir, threads, options, metrics } => {
            fuse_mount(&cli, target, dir, *threads, options, *metrics, &progress).await
        }
        Cmd::Ping { nids, count } => {
            let lnet = LocalNet { nid: None, port: cli.port }.start(nids[0]).await?;
            let ok = client::cli::ping(&lnet, nids, *count, Duration::from_secs(10), fmt, &progress).await?;
            lnet.shutdown();
            Ok(ok)
        }
        Cmd::Recovery { dir } | Cmd::Stats { dir, .. } => {
            let st = read_state(dir)?;
            let l = &st.layout;
            let mut eps = vec![
                ("sheen-mds".to_string(), format!("{}:{}", l.mds_addr, l.mds_admin_port)),
                ("sheen-oss".to_string(), format!("{}:{}", l.oss_addr, l.oss_admin_port)),
            ];
            if st.mount.is_some() && l.client_admin_port != 0 {
                eps.push(("sheen mount".to_string(), format!("{}:{}", l.mds_addr, l.client_admin_port)));
            }
            let filter: Vec<&str> = match &cli.cmd {
                Cmd::Stats { filter, .. } => filter.iter().map(String::as_str).collect(),
                _ => vec!["recovery"],
            };
            progress.step("asking the daemons' admin endpoints");
            Ok(cli_fs::metrics(&eps, &filter, fmt, &progress).await)
        }
        _ => {
            let (lnet, fs) = mount(&cli, &progress).await?;
            let r = fs_cmd(&cli, &fs, fmt, &progress).await;
            fs.unmount().await;
            lnet.shutdown();
            r
        }
    }
}

async fn fs_cmd(cli: &Cli, fs: &Sheen, fmt: Format, progress: &Progress) -> anyhow::Result<bool> {
    if let Cmd::Df = cli.cmd {
        progress.step("asking every target for its space");
        return Ok(cli_fs::df(fs, fmt, progress).await);
    }
    // One request each: nothing more to show.
    progress.done();
    match &cli.cmd {
        Cmd::Check => cli_fs::check(fs, fmt).await.map_err(Into::into),
        Cmd::Getstripe { path } => cli_fs::getstripe(fs, path, fmt).await.map(|()| true).map_err(Into::into),
        Cmd::Setstripe { count, size, index, pool, path } => {
            let stripe_count = if *count < 0 { u32::MAX } else { u32::try_from(*count)? };
            let spec = StripeSpec { stripe_size: *size, stripe_count, stripe_offset: *index, pool: pool.clone() };
            cli_fs::setstripe(fs, path, spec).await?;
            Ok(true)
        }
        Cmd::Targets { action, kind, index, nids } => {
            let k = match kind {
                Kind::Mdt => TargetKind::Mdt,
                Kind::Ost => TargetKind::Ost,
            };
            cli_fs::targets(fs, *action, k, *index, nids, fmt).await?;
            Ok(true)
        }
        Cmd::Pools { action, pool, osts } => {
            cli_fs::pools(fs, *action, pool.as_deref(), osts, fmt).await?;
            Ok(true)
        }
        _ => bail!("not a file system command"),
    }
}

async fn fuse_mount(
    cli: &Cli,
    target: &str,
    dir: &Path,
    threads: usize,
    options: &str,
    metrics: Option<std::net::SocketAddr>,
    progress: &Progress,
) -> anyhow::Result<bool> {
    let (nid, fsname) = target.split_once(":/").context("target must be MGSNID:/FSNAME, e.g. 127.0.88.1@tcp:/sheen")?;
    let mgs: Nid = nid.parse().map_err(|e| anyhow::anyhow!("{nid}: {e:?} (a NID looks like 127.0.88.1@tcp)"))?;
    let opts = client::MountOptions::parse(options)?;
    progress.step(format!("connecting to {target} (MGS, MDT, OSTs)"));
    let lnet = LocalNet { nid: None, port: cli.port }.start(mgs).await?;
    let fs = Sheen::mount_with(&lnet, mgs, fsname, opts).await.with_context(|| format!("mounting {target}"))?;
    let fs = std::sync::Arc::new(fs);
    progress.step(format!("FUSE mount on {}", dir.display()));
    let rt = tokio::runtime::Handle::current();
    let mounted = client::fuse::mount_cached(std::sync::Arc::clone(&fs), rt, dir, threads, &lnet)
        .with_context(|| format!("FUSE mount on {} (needs root and /dev/fuse)", dir.display()))?;
    let served = match metrics {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("metrics on {addr}"))?;
            let bound = listener.local_addr()?;
            let src = mounted.metrics_source(std::sync::Arc::clone(&fs), lnet.clone());
            let admin = ptlrpc::admin::Admin::new(vec![src], std::sync::Arc::clone(&mounted.faults));
            tokio::spawn(async move {
                if let Err(e) = admin.serve(listener).await {
                    tracing::error!(error = %e, "metrics endpoint stopped");
                }
            });
            format!(" metrics http://{bound}/metrics")
        }
        None => String::new(),
    };
    progress.done();
    println!("sheen mount ready {} {}{served}", target, dir.display());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // Until a signal, or an unmount from outside (`sheen umount`,
    // `umount`) ends the FUSE session.
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {
                if mounted.session.guard.is_finished() {
                    lnet.shutdown();
                    return Ok(true);
                }
            }
        }
    }
    tracing::info!("unmounting {}", dir.display());
    // Unmounting joins the FUSE threads, which block on this runtime.
    let client::fuse::Mounted { session, cache, .. } = mounted;
    let r = tokio::task::spawn_blocking(move || session.umount_and_join()).await?;
    drop(cache);
    fs.unmount().await;
    lnet.shutdown();
    r.with_context(|| format!("unmounting {}", dir.display()))?;
    Ok(true)
}

/// `sheen umount DIR`: the kernel unmount of a Sheen mount point.
fn umount(dir: &Path) -> anyhow::Result<bool> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let abs = std::path::absolute(dir)?;
    let target = abs.display().to_string();
    let ours = mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (src, at) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
        at == target && src.starts_with("sheen:")
    });
    if !ours {
        bail!("{target} is not a Sheen mount point (`mount | grep sheen:` lists them)");
    }
    let st = std::process::Command::new("umount").arg(&abs).status().context("running umount")?;
    if !st.success() {
        bail!("umount {target} failed ({st}); if files are open there, close them (`fuser -m {target}`) and retry");
    }
    Ok(true)
}

/// Free loopback tcp ports for the admin endpoints (bound, then released).
fn free_port(addr: std::net::Ipv4Addr) -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind((addr, 0))?.local_addr()?.port())
}

/// Starts `sheen mount` for the cluster on `mnt` (own process group);
/// its pid, or why not.
fn mount_child(cli: &Cli, c: &Cluster, mnt: &Path) -> Result<u32, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    client::up::mount_child(&exe, cli.port, c, mnt, true).map(|child| child.id())
}

async fn up(
    cli: &Cli,
    dir: &Path,
    addr: std::net::Ipv4Addr,
    no_mount: bool,
    fmt: Format,
    progress: &Progress,
) -> anyhow::Result<bool> {
    if let Ok(st) = read_state(dir) {
        let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists();
        if alive(st.mds_pid) || alive(st.oss_pid) {
            bail!("already up ({}); `sheen down {}` first", dir.join(STATE_FILE).display(), dir.display());
        }
    }
    let o = addr.octets();
    let oss_addr = std::net::Ipv4Addr::new(o[0], o[1], o[2], o[3].wrapping_add(1));
    let layout = Layout {
        fsname: cli.fsname.clone(),
        mds_addr: addr,
        oss_addr,
        port: cli.port,
        mds_admin_port: free_port(addr)?,
        oss_admin_port: free_port(oss_addr)?,
        client_admin_port: free_port(addr)?,
    };
    let cluster = Cluster::start_showing(layout, dir, 1000, true, progress).await?;
    let mnt = cluster.dir.join("mnt");
    let mounted = if no_mount {
        Err("not asked for (--no-mount)".to_string())
    } else {
        progress.step(format!("mounting on {} (FUSE), waiting for it", mnt.display()));
        mount_child(cli, &cluster, &mnt)
    };
    progress.done();
    let state = cluster.state(mounted.as_ref().ok().map(|&pid| (pid, mnt.clone())));
    std::fs::write(dir.join(STATE_FILE), serde_json::to_string_pretty(&state)?)?;
    let l = &state.layout;
    let (mds_url, oss_url, client_url) = (
        format!("http://{}:{}/metrics", l.mds_addr, l.mds_admin_port),
        format!("http://{}:{}/metrics", l.oss_addr, l.oss_admin_port),
        format!("http://{}:{}/metrics", l.mds_addr, l.client_admin_port),
    );
    let mount_note = match &mounted {
        Ok(pid) => format!("mounted on {} (FUSE, pid {pid})", mnt.display()),
        Err(why) => format!("not mounted: {why}; the servers are up (library API, `sheen df`)"),
    };
    match fmt {
        Format::Json => println!(
            "{}",
            serde_json::json!({"fsname": l.fsname, "mgs": l.mgs_nid().to_string(), "data": cluster.dir,
                "mds_pid": state.mds_pid, "oss_pid": state.oss_pid, "metrics": [mds_url, oss_url], "mount": mounted.as_ref().ok().map(|_| mnt.clone()),
                "mount_metrics": mounted.as_ref().ok().map(|_| client_url.clone()), "mount_error": mounted.as_ref().err(),
                "warning": cluster.ost_warning})
        ),
        Format::Table => {
            println!("Sheen file system '{}' is up (data under {})", l.fsname, cluster.dir.display());
            println!("  MGS+MDT0   {}  pid {}", l.mgs_nid(), state.mds_pid);
            println!("  OST0,OST1  {}@tcp  pid {}", l.oss_addr, state.oss_pid);
            println!("  metrics    {mds_url}");
            println!("             {oss_url}");
            if mounted.is_ok() {
                println!("             {client_url}  (the mount)");
            }
            println!("  {mount_note}");
            if let Some(w) = &cluster.ost_warning {
                println!("  WARNING: {w}");
            }
            println!("  try: sheen --mgs {} df        stop: sheen down {}", l.mgs_nid(), dir.display());
        }
    }
    // The daemons outlive this command (dropping a Child neither kills
    // nor waits; init reaps them after `sheen down`).
    drop(cluster);
    Ok(true)
}

async fn down(dir: &Path, fmt: Format, progress: &Progress) -> anyhow::Result<bool> {
    let st = read_state(dir)?;
    let mut ok = true;
    let mut pids = Vec::new();
    if let Some((pid, _)) = &st.mount {
        pids.push(("sheen mount", *pid));
    }
    // Lustre's order: clients, then the MDT (its OST connections still
    // answer while it stops), then the OSTs.
    pids.push(("sheen-mds", st.mds_pid));
    pids.push(("sheen-oss", st.oss_pid));
    let mut results = Vec::new();
    for (name, pid) in pids {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        if !proc.exists() {
            results.push((name, pid, "was not running"));
            continue;
        }
        progress.step(format!("stopping {name} (pid {pid}), waiting for it to exit"));
        std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
        // Not our child (no wait(2)): watch its /proc entry on a tokio
        // interval, bounded.
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        for _ in 0..1200 {
            if !proc.exists() {
                break;
            }
            tick.tick().await;
        }
        if proc.exists() {
            results.push((name, pid, "did not stop within 60 s"));
            ok = false;
        } else {
            results.push((name, pid, "stopped"));
        }
    }
    progress.done();
    for (name, pid, what) in results {
        match fmt {
            Format::Json => println!("{}", serde_json::json!({"daemon": name, "pid": pid, "state": what})),
            Format::Table => println!("{name} (pid {pid}) {what}"),
        }
    }
    if ok {
        std::fs::remove_file(dir.join(STATE_FILE))?;
    } else {
        eprintln!(
            "sheen: some daemons are still running; `kill -KILL PID` them, then `sheen down {}` again",
            dir.display()
        );
    }
    Ok(ok)
}
