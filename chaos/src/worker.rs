//! A workload client: one process in its own network namespace that
//! mounts the file system with FUSE (its own `client::fuse` mount over a
//! `client::Sheen`, the code `sheen mount` runs; `--library`: the library
//! API instead) and runs a seeded random mix of operations in its own
//! directory through it ([`crate::io`]), logging every operation's outcome
//! as it returns. The library serves what FUSE cannot express: lookups of
//! the MDT's own view after a failure, directories' default striping (a
//! FUSE create takes its directory's), the import states, and the
//! eviction counters that tell an EIO's cause.
//!
//! Owns: [`run`] (the `sheen-chaos worker` subcommand) — writes of
//! self-describing blocks ([`crate::block`]), reads checked on the spot,
//! fsync, create, mkdir, rmdir, rename, unlink, chmod — and what it does
//! after a failed namespace operation: it looks at what is really there
//! (`Resolve` records) and goes on from that. It stops, closing its files,
//! when its stdin closes.
//!
//! Must not: retry a failed operation under the same record (every
//! outcome is logged as it was), or judge outcomes (the model does).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use client::{ClientError, Sheen};
use lnet::{Lnet, LnetConfig, NetConfig, Nid, TcpConfig, Tunables};
use ptlrpc::import::ImportStateKind;
use ptlrpc::wire::mds::StripeSpec;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::block::{BLOCK, BlockId, encode};
use crate::io::{Handle, Io, OpErr};
use crate::model::{DIR_MODE, FILE_MODE, classify};
use crate::oplog::{Entry, Op, Outcome, Rec, now_us};

/// Blocks per file at most.
pub const MAX_BLOCKS: u32 = 8;
/// Files a client keeps at most.
const MAX_FILES: usize = 12;
/// Subdirectories a client keeps at most.
const MAX_DIRS: usize = 4;
/// FUSE threads of a worker's mount (its lanes' calls in parallel).
const FUSE_THREADS: usize = 4;
/// How long a client keeps trying to look at a path after a failure.
const RESOLVE_BOUND: Duration = Duration::from_secs(120);

/// What `sheen-chaos worker` is told.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// This client's index.
    #[arg(long)]
    pub client: u32,
    /// Its address (in its namespace).
    #[arg(long)]
    pub addr: Ipv4Addr,
    /// The lnet port.
    #[arg(long, default_value_t = 988)]
    pub port: u16,
    /// The MGS's NID.
    #[arg(long)]
    pub mgs: String,
    /// File system name.
    #[arg(long)]
    pub fsname: String,
    /// The run's seed (the client's own is derived from it).
    #[arg(long)]
    pub seed: u64,
    /// Where to write the operation logs (`client<id>.oplog`).
    #[arg(long)]
    pub log_dir: PathBuf,
    /// Concurrent lanes: logical clients sharing this mount, each with
    /// its own directory, seed and log (ids `client * lanes + lane`).
    #[arg(long, default_value_t = 2)]
    pub lanes: u32,
    /// Pause between operations, milliseconds.
    #[arg(long, default_value_t = 2)]
    pub think_ms: u64,
    /// Mount options (client timeouts: `obd_timeout=10,ping_interval=2`).
    #[arg(long, default_value = "")]
    pub options: String,
    /// The library API instead of a FUSE mount.
    #[arg(long)]
    pub library: bool,
}

struct WFile {
    path: String,
    handle: Option<Handle>,
    written: Vec<u32>,
}

/// The operation log of one client, shared by its workload and the
/// watchers of its imports.
struct OpLog {
    client: u32,
    /// The file and the next sequence number.
    inner: Mutex<(std::fs::File, u64)>,
}

impl OpLog {
    fn record(&self, t0: u64, op: Op, outcome: Outcome) -> Result<()> {
        self.write(t0, op, outcome, true)
    }

    /// Logs a record; `progress`: say so on stdout (operations, not
    /// import states, count as a client's progress).
    fn write(&self, t0: u64, op: Op, outcome: Outcome, progress: bool) -> Result<()> {
        let mut g = self.inner.lock().map_err(|_| anyhow::anyhow!("operation log poisoned"))?;
        let rec = Rec { client: self.client, seq: g.1, t0, t1: now_us(), op, outcome };
        g.1 += 1;
        let mut line = serde_json::to_string(&rec)?;
        line.push('\n');
        g.0.write_all(line.as_bytes()).context("writing the operation log")?;
        // The controller follows progress on stdout.
        if progress {
            println!("{} {}", if rec.ok() { "ok" } else { "err" }, rec.t1);
        }
        Ok(())
    }
}

struct Worker {
    io: Io,
    /// Directories' default stripe counts as set (0: unknown).
    dir_stripes: BTreeMap<String, u32>,
    client: u32,
    root: String,
    rng: SmallRng,
    log: Arc<OpLog>,
    generation: u32,
    next_id: u32,
    files: BTreeMap<u32, WFile>,
    dirs: Vec<String>,
}

fn outcome<T>(r: &Result<T, OpErr>) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::Err { errno: e.errno, msg: e.msg.clone(), cause: e.cause },
    }
}

fn lib_outcome<T>(r: &Result<T, ClientError>) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::Err { errno: e.errno(), msg: e.to_string(), cause: None },
    }
}

impl Worker {
    fn record(&mut self, t0: u64, op: Op, outcome: Outcome) -> Result<()> {
        self.log.record(t0, op, outcome)
    }

    fn parent_of(path: &str) -> &str {
        path.rsplit_once('/').map_or("/", |(p, _)| p)
    }

    fn pick_file(&mut self) -> Option<u32> {
        if self.files.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..self.files.len());
        self.files.keys().nth(i).copied()
    }

    /// `path` as the MDT has it (no OST is asked: the namespace is the
    /// MDT's alone).
    async fn lookup_mdt(&self, path: &str) -> Result<client::Stat, ClientError> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let parent = self.io.fs().resolve(dir).await?;
        self.io.fs().lookup_mdt(parent, name).await
    }

    /// Looks (bounded, retrying while the servers recover) at `path`.
    async fn look(&mut self, path: &str) -> Result<Option<Entry>, ClientError> {
        let end = std::time::Instant::now() + RESOLVE_BOUND;
        loop {
            match self.lookup_mdt(path).await {
                Ok(st) => return Ok(Some(Entry { dir: st.is_dir(), mode: st.attr.mode & 0o7777 })),
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) if std::time::Instant::now() >= end => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// After a failed namespace operation: what is at `path` now.
    async fn resolve(&mut self, path: &str, file: Option<u32>) -> Result<Option<Entry>> {
        let t0 = now_us();
        let r = self.look(path).await;
        let found = r.as_ref().ok().copied().flatten();
        let op = Op::Resolve { path: path.to_string(), found, file: file.filter(|_| found.is_some_and(|e| !e.dir)) };
        self.record(t0, op, lib_outcome(&r))?;
        Ok(found)
    }

    async fn mkdir(&mut self) -> Result<()> {
        if self.dirs.len() > MAX_DIRS {
            return Ok(());
        }
        self.next_id += 1;
        let path = format!("{}/d{}", self.root, self.next_id);
        let t0 = now_us();
        let r = self.io.mkdir(&path, DIR_MODE).await;
        self.record(t0, Op::Mkdir { path: path.clone() }, outcome(&r))?;
        let there = match r {
            Ok(_) => true,
            Err(_) => self.resolve(&path, None).await?.is_some(),
        };
        if there {
            self.set_stripes(&path).await;
            self.dirs.push(path);
        }
        Ok(())
    }

    /// Through the mount, a file takes its directory's default striping:
    /// give `dir` a random one (1 or 2 stripes) through the library.
    async fn set_stripes(&mut self, dir: &str) {
        if !self.io.fuse() {
            return;
        }
        let count = self.rng.random_range(1..=2);
        let spec =
            StripeSpec { stripe_size: BLOCK as u32, stripe_count: count, stripe_offset: -1, pool: String::new() };
        let got = if self.io.fs().setstripe_dir(dir, spec).await.is_ok() { count } else { 0 };
        self.dir_stripes.insert(dir.to_string(), got);
    }

    async fn rmdir(&mut self) -> Result<()> {
        let busy = |d: &str, files: &BTreeMap<u32, WFile>| files.values().any(|f| Self::parent_of(&f.path) == d);
        let empty: Vec<String> = self.dirs.iter().skip(1).filter(|d| !busy(d, &self.files)).cloned().collect();
        if empty.is_empty() {
            return Ok(());
        }
        let path = empty[self.rng.random_range(0..empty.len())].clone();
        let t0 = now_us();
        let r = self.io.rmdir(&path).await;
        self.record(t0, Op::Rmdir { path: path.clone() }, outcome(&r))?;
        let gone = match r {
            Ok(()) => true,
            Err(_) => self.resolve(&path, None).await?.is_none(),
        };
        if gone {
            self.dirs.retain(|d| *d != path);
        }
        Ok(())
    }

    async fn create(&mut self) -> Result<()> {
        if self.files.len() >= MAX_FILES {
            return Ok(());
        }
        self.next_id += 1;
        let id = self.next_id;
        let dir = self.dirs[self.rng.random_range(0..self.dirs.len())].clone();
        let path = format!("{dir}/f{id}");
        let stripes = if self.io.fuse() {
            self.dir_stripes.get(&dir).copied().unwrap_or(0)
        } else {
            self.rng.random_range(1..=2)
        };
        let spec =
            StripeSpec { stripe_size: BLOCK as u32, stripe_count: stripes, stripe_offset: -1, pool: String::new() };
        let t0 = now_us();
        let r = self.io.create(&path, FILE_MODE, Some(spec)).await;
        self.record(t0, Op::Create { path: path.clone(), file: id, stripes }, outcome(&r))?;
        match r {
            Ok(h) => {
                self.files.insert(id, WFile { path, handle: Some(h), written: Vec::new() });
            }
            Err(_) => {
                if self.resolve(&path, Some(id)).await?.is_some() {
                    self.files.insert(id, WFile { path, handle: None, written: Vec::new() });
                }
            }
        }
        Ok(())
    }

    /// The open handle of `id`, opening it again if an earlier call lost it.
    async fn handle(&mut self, id: u32) -> Result<bool> {
        let Some(f) = self.files.get(&id) else { return Ok(false) };
        if f.handle.is_some() {
            return Ok(true);
        }
        let path = f.path.clone();
        let t0 = now_us();
        let r = self.io.open(&path).await;
        self.record(t0, Op::Open { path, file: id }, outcome(&r))?;
        if let (Ok(h), Some(f)) = (r, self.files.get_mut(&id)) {
            f.handle = Some(h);
            return Ok(true);
        }
        Ok(false)
    }

    async fn write(&mut self) -> Result<()> {
        let Some(id) = self.pick_file() else { return Ok(()) };
        if !self.handle(id).await? {
            return Ok(());
        }
        let blk = self.rng.random_range(0..MAX_BLOCKS);
        self.generation += 1;
        let generation = self.generation;
        let data = encode(BlockId { client: self.client, file: id, blk, generation });
        let t0 = now_us();
        let r = match self.files.get(&id).and_then(|f| f.handle.as_ref()) {
            Some(h) => self.io.write(h, u64::from(blk) * BLOCK as u64, data).await,
            None => return Ok(()),
        };
        self.record(t0, Op::Write { file: id, blk, generation }, outcome(&r))?;
        self.forget_lost_open(id, &r).await?;
        if let Some(f) = self.files.get_mut(&id)
            && !f.written.contains(&blk)
        {
            f.written.push(blk);
        }
        Ok(())
    }

    async fn read(&mut self) -> Result<()> {
        let Some(id) = self.pick_file() else { return Ok(()) };
        if !self.handle(id).await? {
            return Ok(());
        }
        let blk = match self.files.get(&id) {
            Some(f) if !f.written.is_empty() => f.written[self.rng.random_range(0..f.written.len())],
            _ => self.rng.random_range(0..MAX_BLOCKS),
        };
        let t0 = now_us();
        let r = match self.files.get(&id).and_then(|f| f.handle.as_ref()) {
            Some(h) => self.io.read(h, u64::from(blk) * BLOCK as u64, BLOCK).await,
            None => return Ok(()),
        };
        let found = match &r {
            Ok(buf) => classify(self.client, id, blk, buf),
            Err(_) => crate::oplog::Found::Hole,
        };
        self.record(t0, Op::Read { file: id, blk, found }, outcome(&r))?;
        self.forget_lost_open(id, &r).await?;
        Ok(())
    }

    async fn fsync(&mut self) -> Result<()> {
        let Some(id) = self.pick_file() else { return Ok(()) };
        if !self.handle(id).await? {
            return Ok(());
        }
        let t0 = now_us();
        let r = match self.files.get(&id).and_then(|f| f.handle.as_ref()) {
            Some(h) => self.io.fsync(h).await,
            None => return Ok(()),
        };
        self.record(t0, Op::Fsync { file: id }, outcome(&r))?;
        self.forget_lost_open(id, &r).await?;
        Ok(())
    }

    /// After a call through `id`'s open failed because an eviction lost
    /// the open: close it (logged: its error is that of the writes it
    /// had behind), the next call opens again.
    async fn forget_lost_open<T>(&mut self, id: u32, r: &Result<T, OpErr>) -> Result<()> {
        if r.as_ref().err().is_some_and(OpErr::lost_open) {
            self.close(id).await?;
        }
        Ok(())
    }

    async fn rename(&mut self) -> Result<()> {
        let Some(id) = self.pick_file() else { return Ok(()) };
        let from = self.files.get(&id).map(|f| f.path.clone()).unwrap_or_default();
        self.next_id += 1;
        let dir = self.dirs[self.rng.random_range(0..self.dirs.len())].clone();
        let to = format!("{dir}/f{id}r{}", self.next_id);
        let t0 = now_us();
        let r = self.io.rename(&from, &to).await;
        self.record(t0, Op::Rename { from: from.clone(), to: to.clone(), file: id }, outcome(&r))?;
        let at = match r {
            Ok(()) => Some(to),
            Err(_) => {
                let f = self.resolve(&from, Some(id)).await?;
                let t = self.resolve(&to, Some(id)).await?;
                match (f, t) {
                    (_, Some(_)) => Some(to),
                    (Some(_), None) => Some(from),
                    (None, None) => None,
                }
            }
        };
        match at {
            Some(p) => {
                if let Some(f) = self.files.get_mut(&id) {
                    f.path = p;
                }
            }
            None => {
                self.files.remove(&id);
            }
        }
        Ok(())
    }

    async fn unlink(&mut self) -> Result<()> {
        if self.files.len() <= 3 {
            return Ok(());
        }
        let Some(id) = self.pick_file() else { return Ok(()) };
        self.close(id).await?;
        let path = self.files.get(&id).map(|f| f.path.clone()).unwrap_or_default();
        let t0 = now_us();
        let r = self.io.unlink(&path).await;
        self.record(t0, Op::Unlink { path: path.clone(), file: id }, outcome(&r))?;
        let gone = match r {
            Ok(()) => true,
            Err(_) => self.resolve(&path, Some(id)).await?.is_none(),
        };
        if gone {
            self.files.remove(&id);
        }
        Ok(())
    }

    async fn chmod(&mut self) -> Result<()> {
        let use_dir = self.dirs.len() > 1 && self.rng.random_bool(0.3);
        let (path, modes): (String, &[u32]) = if use_dir {
            (self.dirs[self.rng.random_range(1..self.dirs.len())].clone(), &[0o700, 0o750, 0o755])
        } else {
            match self.pick_file() {
                Some(id) => (self.files.get(&id).map(|f| f.path.clone()).unwrap_or_default(), &[0o600, 0o640, 0o644]),
                None => return Ok(()),
            }
        };
        let mode = modes[self.rng.random_range(0..modes.len())];
        let t0 = now_us();
        let r = self.io.chmod(&path, mode).await;
        self.record(t0, Op::Chmod { path: path.clone(), mode }, outcome(&r))?;
        if r.is_err() {
            let file = self.files.iter().find(|(_, f)| f.path == path).map(|(i, _)| *i);
            self.resolve(&path, file).await?;
        }
        Ok(())
    }

    async fn close(&mut self, id: u32) -> Result<()> {
        let Some(h) = self.files.get_mut(&id).and_then(|f| f.handle.take()) else { return Ok(()) };
        let t0 = now_us();
        let r = self.io.close(h).await;
        self.record(t0, Op::Close { file: id }, outcome(&r))
    }

    async fn step(&mut self) -> Result<()> {
        match self.rng.random_range(0..100) {
            0..30 => self.write().await,
            30..42 => self.read().await,
            42..50 => self.fsync().await,
            50..60 => self.create().await,
            60..67 => self.mkdir().await,
            67..71 => self.rmdir().await,
            71..81 => self.rename().await,
            81..88 => self.unlink().await,
            _ => self.chmod().await,
        }
    }
}

/// `sheen-chaos worker`: mount, say `worker ready`, run until stdin closes.
pub async fn run(args: WorkerArgs) -> Result<()> {
    let cfg = LnetConfig {
        // Short reconnect backoffs, as the daemons' (a cut link restored
        // is used again within half a second).
        nets: vec![NetConfig::Tcp(TcpConfig {
            addr: args.addr,
            port: args.port,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_millis(500),
            ..TcpConfig::default()
        })],
        tunables: Tunables::default(),
    };
    let opts = client::MountOptions::parse(&args.options).context("--options")?;
    let lnet = Lnet::start(cfg).await.context("starting lnet")?;
    let mgs: Nid = args.mgs.parse().map_err(|e| anyhow::anyhow!("--mgs {}: {e:?}", args.mgs))?;
    let fs = Arc::new(Sheen::mount_with(&lnet, mgs, &args.fsname, opts).await.context("mounting")?);
    // The FUSE mount, in this process's own mount namespace (`ip netns
    // exec` gives it one): gone with the process, whatever its end.
    let (session, mnt) = if args.library {
        (None, None)
    } else {
        let mnt = args.log_dir.join(format!("mnt-p{}", args.client));
        std::fs::create_dir_all(&mnt).with_context(|| mnt.display().to_string())?;
        // The mount `sheen mount` makes: attributes and names cached in the
        // kernel under the MDT's locks, the MDT's callbacks on this lnet.
        let session =
            client::fuse::mount_cached(Arc::clone(&fs), tokio::runtime::Handle::current(), &mnt, FUSE_THREADS, &lnet)
                .with_context(|| format!("FUSE mount on {} (needs root and /dev/fuse)", mnt.display()))?;
        (Some(session), Some(mnt))
    };
    // Modes exactly as asked (the model expects DIR_MODE and FILE_MODE).
    crate::sys::clear_umask();
    let io = Io::new(Arc::clone(&fs), mnt);
    let lanes = args.lanes.max(1);
    let mut workers = Vec::new();
    for lane in 0..lanes {
        let id = args.client * lanes + lane;
        let path = log_path(&args.log_dir, id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("{}", path.display()))?;
        let root = format!("/c{id}");
        let mut w = Worker {
            io: io.clone(),
            dir_stripes: BTreeMap::new(),
            client: id,
            root: root.clone(),
            rng: SmallRng::seed_from_u64(args.seed ^ (u64::from(id) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            log: Arc::new(OpLog { client: id, inner: Mutex::new((log, 0)) }),
            generation: 0,
            next_id: 0,
            files: BTreeMap::new(),
            dirs: vec![root.clone()],
        };
        let t0 = now_us();
        let r = w.io.mkdir(&root, DIR_MODE).await;
        if let Err(e) = &r {
            anyhow::bail!("mkdir {root}: {}", e.msg);
        }
        w.set_stripes(&root).await;
        workers.push((w, t0, r));
    }
    if let Some((w, _, _)) = workers.first() {
        watch_imports(&fs, &w.log).await;
    }
    println!("worker ready");
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        s.store(true, Ordering::Release);
    });
    let mut tasks = Vec::new();
    for (mut w, t0, r) in workers {
        let stop = Arc::clone(&stop);
        let think = args.think_ms;
        tasks.push(tokio::spawn(async move {
            w.record(t0, Op::Mount { root: w.root.clone(), fuse: w.io.fuse() }, outcome(&r))?;
            while !stop.load(Ordering::Acquire) {
                w.step().await?;
                if think > 0 {
                    tokio::time::sleep(Duration::from_millis(think)).await;
                }
            }
            let ids: Vec<u32> = w.files.keys().copied().collect();
            for id in ids {
                w.close(id).await?;
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    let mut res = Ok(());
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => res = Err(e),
            Err(e) => res = Err(anyhow::anyhow!("a lane panicked: {e}")),
        }
    }
    if let Some(client::fuse::Mounted { session, .. }) = session {
        // Unmounting joins the FUSE threads, which block on this runtime.
        tokio::task::spawn_blocking(move || session.umount_and_join()).await?.context("unmounting")?;
    }
    fs.unmount().await;
    lnet.shutdown();
    res
}

/// Logs every state change of `imp` (the import to `target`) until it closes.
fn watch_import(log: Arc<OpLog>, target: String, imp: ptlrpc::driver::ImportDriver) {
    tokio::spawn(async move {
        let mut last = imp.state();
        loop {
            let op = Op::Import { target: target.clone(), state: format!("{last:?}") };
            if log.write(now_us(), op, Outcome::Ok, false).is_err() || last == ImportStateKind::Closed {
                return;
            }
            let now = imp.wait_state(|k| k != last).await;
            if now == last {
                return;
            }
            last = now;
        }
    });
}

/// Watches the mount's imports (the MDT's, and each OST's once a call
/// connected it), logging into `log`.
async fn watch_imports(fs: &Sheen, log: &Arc<OpLog>) {
    watch_import(Arc::clone(log), format!("{}-MDT0000", fs.fsname()), fs.mdc().import().clone());
    for osc in fs.oscs().values() {
        // statfs connects the OST's import (it is made at the first call).
        let _ = osc.statfs().await;
        if let Some(imp) = osc.import() {
            watch_import(Arc::clone(log), osc.name().to_string(), imp.clone());
        }
    }
}

/// The operation log of logical client `id` under `dir`.
pub fn log_path(dir: &std::path::Path, id: u32) -> PathBuf {
    dir.join(format!("client{id}.oplog"))
}
