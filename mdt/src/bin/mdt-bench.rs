//! `mdt-bench`: metadata create/stat/unlink rates, over ptlrpc on tcp
//! loopback (an in-process `sheen-mds` daemon — the MDT on the target
//! framework — and clients as imports on their own lnet nodes) beside the same operations on the embedded store alone
//! (`Namespace` calls, no RPC), measured in the same run.
//!
//! Workloads: `--files` files in one directory, and the same spread over
//! `--dirs` directories; each with every client count in `--clients`
//! (clients split the files between them). `--json`: one line per result,
//! the RPC figure with the embedded one as its baseline.
//!
//! `--bigdir N`: a directory growing to N entries (1M by default in the
//! README) on the embedded store: create, lookup and readdir rates at N
//! entries beside the same at 10k entries (the baseline), showing the
//! hashed directory stays fast as it grows.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use lnet::{Lnet, LnetConfig, NetConfig, TcpConfig};
use mdt::alloc::{AllocConfig, Allocator, OstApi, OstFactory};
use mdt::config::{MdsConfig, MdtSection, MgsSection};
use mdt::daemon::Daemon;
use mdt::inode::{S_IFDIR, S_IFREG};
use mdt::ns::{CreateArgs, Namespace};
use mdt::store::{FjallKv, Kv};
use ptlrpc::driver::ImportDriver;
use ptlrpc::import::{ImportConfig, ReqKind};
use ptlrpc::portals::MDS_REQUEST_PORTAL;
use ptlrpc::wire::mds::{Creds, LookupReq, MdsReq, ReintReply, ReintReq};
use ptlrpc::wire::{ConnectData, Fid, Op, connect_flags};

#[derive(Parser, Debug)]
#[command(name = "mdt-bench")]
struct Args {
    /// Files per workload.
    #[arg(long, default_value_t = 100_000)]
    files: u64,
    /// Directories of the spread workload.
    #[arg(long, default_value_t = 100)]
    dirs: u64,
    /// Client counts.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    clients: Vec<usize>,
    /// tcp port every lnet node of the run listens on.
    #[arg(long, default_value_t = 7988)]
    port: u16,
    /// Second octet of the loopback addresses (127.N.0.x).
    #[arg(long, default_value_t = 61)]
    net: u8,
    /// Durable commit interval of the MDT, ms.
    #[arg(long, default_value_t = 1000)]
    commit_ms: u64,
    /// Requests each client has in flight at once (tasks sharing its
    /// import, as processes share a mount's mdc).
    #[arg(long, default_value_t = 1)]
    per_client: usize,
    /// Modifying requests in flight per import to ask the MDT for (the
    /// mdc's `max_mod_rpcs`; the MDT grants up to 8).
    #[arg(long, default_value_t = 8)]
    max_mod_rpcs: u16,
    /// One JSON line per result.
    #[arg(long)]
    json: bool,
    /// Instead: grow one directory to this many entries and compare
    /// create/lookup/readdir rates there with those at 10k entries.
    #[arg(long)]
    bigdir: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Create,
    Stat,
    Unlink,
}

impl Phase {
    const ALL: [Phase; 3] = [Phase::Create, Phase::Stat, Phase::Unlink];
    fn name(self) -> &'static str {
        match self {
            Phase::Create => "create",
            Phase::Stat => "stat",
            Phase::Unlink => "unlink",
        }
    }
}

fn no_osts() -> OstFactory {
    Arc::new(|i, _| -> Arc<dyn OstApi> { unreachable_ost(i) })
}

fn unreachable_ost(i: u32) -> Arc<dyn OstApi> {
    #[derive(Debug)]
    struct None_(u32);
    impl OstApi for None_ {
        fn precreate(&self, _: u64, _: u32) -> Result<(u64, u64), mdt::alloc::OstError> {
            Err(mdt::alloc::OstError::Unreachable(format!("bench has no OST {}", self.0)))
        }
        fn exists(&self, _: ptlrpc::wire::OstId) -> Result<bool, mdt::alloc::OstError> {
            Ok(false)
        }
        fn destroy(&self, _: ptlrpc::wire::OstId) -> Result<(), mdt::alloc::OstError> {
            Ok(())
        }
        fn statfs(&self) -> Result<mdt::alloc::OstStatfs, mdt::alloc::OstError> {
            Err(mdt::alloc::OstError::Unreachable("none".into()))
        }
    }
    Arc::new(None_(i))
}

fn file_args() -> CreateArgs {
    CreateArgs { mode: S_IFREG | 0o644, ..CreateArgs::default() }
}

/// Ops/s of one phase on the embedded namespace with `clients` threads.
fn embedded_phase(ns: &Arc<Namespace>, dirs: &[Fid], files: u64, clients: usize, phase: Phase) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let hs: Vec<_> = (0..clients)
            .map(|c| {
                let ns = Arc::clone(ns);
                s.spawn(move || -> anyhow::Result<()> {
                    for i in (c as u64..files).step_by(clients) {
                        let d = dirs[(i % dirs.len() as u64) as usize];
                        let name = format!("f{i}");
                        match phase {
                            Phase::Create => drop(ns.create(d, &name, &file_args())?),
                            Phase::Stat => drop(ns.lookup(d, &name)?),
                            Phase::Unlink => drop(ns.unlink(d, &name, false, ptlrpc::wire::mds::Timestamp::secs(0))?),
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for h in hs {
            h.join().map_err(|_| anyhow::anyhow!("bench thread panicked"))??;
        }
        Ok(())
    })?;
    Ok(files as f64 / t0.elapsed().as_secs_f64())
}

/// `req` as root's (the MDT checks permissions with these credentials).
fn root<T>(req: T) -> MdsReq<T> {
    MdsReq::new(Creds::ROOT, req)
}

async fn rpc_phase(
    cl: &[ImportDriver],
    per_client: usize,
    dirs: &[Fid],
    files: u64,
    phase: Phase,
) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let n = cl.len() * per_client;
    let mut tasks = Vec::new();
    for (c, client) in cl.iter().cycle().take(n).enumerate() {
        let client = client.clone();
        let dirs = dirs.to_vec();
        tasks.push(tokio::spawn(async move {
            for i in (c as u64..files).step_by(n) {
                let d = dirs[(i % dirs.len() as u64) as usize];
                let name = format!("f{i}");
                match phase {
                    Phase::Create => {
                        let r = ReintReq::Create {
                            parent: d,
                            name,
                            mode: S_IFREG | 0o644,
                            rdev: 0,
                            uid: 0,
                            gid: 0,
                            time: ptlrpc::wire::mds::Timestamp::secs(0),
                            symlink: String::new(),
                            stripe: None,
                            fid: None,
                            replay: None,
                            lock: false,
                        };
                        client.rpc(Op::MdsReint, ReqKind::Modify, &root(r)).await?;
                    }
                    Phase::Stat => {
                        client.rpc(Op::MdsGetattrName, ReqKind::Read, &root(LookupReq { parent: d, name })).await?;
                    }
                    Phase::Unlink => {
                        let r = ReintReq::Unlink {
                            parent: d,
                            name,
                            dir: false,
                            time: ptlrpc::wire::mds::Timestamp::secs(0),
                        };
                        client.rpc(Op::MdsReint, ReqKind::Modify, &root(r)).await?;
                    }
                }
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(files as f64 / t0.elapsed().as_secs_f64())
}

fn node(net: u8, host: u8, port: u16) -> LnetConfig {
    LnetConfig {
        nets: vec![NetConfig::Tcp(TcpConfig { addr: Ipv4Addr::new(127, net, 0, host), port, ..TcpConfig::default() })],
        ..LnetConfig::default()
    }
}

fn report(json: bool, name: &str, rpc: f64, embedded: f64) {
    if json {
        println!(
            "{}",
            serde_json::json!({"bench": name, "value": (rpc * 10.0).round() / 10.0, "unit": "ops/s",
                "baseline": "embedded_store", "baseline_value": (embedded * 10.0).round() / 10.0,
                "ratio": ((rpc / embedded) * 1000.0).round() / 1000.0})
        );
    } else {
        println!("{name:40} rpc {rpc:>10.0} ops/s   embedded {embedded:>10.0} ops/s   ratio {:.3}", rpc / embedded);
    }
}

/// Entries of the small directory the big one is compared with.
const SMALL_DIR: u64 = 10_000;

/// Rates at the directory's current size: creates (of `probe` new names,
/// removed again so the size stays), random lookups and readdir entries.
fn dir_rates(ns: &Namespace, d: Fid, size: u64, probe: u64, rng: &mut u64) -> anyhow::Result<[f64; 3]> {
    let t0 = Instant::now();
    for i in 0..probe {
        ns.create(d, &format!("probe{i}"), &file_args())?;
    }
    let create = probe as f64 / t0.elapsed().as_secs_f64();
    for i in 0..probe {
        ns.unlink(d, &format!("probe{i}"), false, ptlrpc::wire::mds::Timestamp::secs(0))?;
    }
    let lookups = probe * 4;
    let t0 = Instant::now();
    for _ in 0..lookups {
        // xorshift: names spread over the whole directory.
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        ns.lookup_fid(d, &format!("f{}", *rng % size))?;
    }
    let lookup = lookups as f64 / t0.elapsed().as_secs_f64();
    let want = (probe * 10).min(size);
    let (mut got, mut cookie) = (0u64, 0u64);
    let t0 = Instant::now();
    while got < want {
        let page = ns.readdir(d, cookie, 256)?;
        got += page.entries.len() as u64;
        cookie = page.next;
        if page.end {
            break;
        }
    }
    let readdir = got as f64 / t0.elapsed().as_secs_f64();
    Ok([create, lookup, readdir])
}

/// `--bigdir`: one directory grown to `n` entries on the embedded store.
fn bigdir(a: &Args, n: u64) -> anyhow::Result<()> {
    if n < SMALL_DIR * 2 {
        bail!("--bigdir must be at least {}", SMALL_DIR * 2);
    }
    let tmp = tempfile::tempdir()?;
    let kv: Arc<dyn Kv> = Arc::new(FjallKv::open(tmp.path())?);
    let alloc = Arc::new(Allocator::new(Arc::clone(&kv), no_osts(), AllocConfig::default()));
    let ns = Arc::new(Namespace::mount(kv, alloc)?);
    let _commit =
        mdt::txn::Committer::start(Arc::clone(ns.kv()), Arc::clone(ns.txn()), Duration::from_millis(a.commit_ms));
    let d = ns.create(Fid::ROOT, "big", &CreateArgs { mode: S_IFDIR | 0o755, ..CreateArgs::default() })?.0.fid;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let probe = 5_000;
    let fill = |from: u64, to: u64| -> anyhow::Result<f64> {
        let t0 = Instant::now();
        for i in from..to {
            ns.create(d, &format!("f{i}"), &file_args())?;
        }
        Ok((to - from) as f64 / t0.elapsed().as_secs_f64())
    };
    fill(0, SMALL_DIR)?;
    let small = dir_rates(&ns, d, SMALL_DIR, probe, &mut rng)?;
    let fill_rate = fill(SMALL_DIR, n)?;
    let big = dir_rates(&ns, d, n, probe, &mut rng)?;
    let entries = ns.inode(d)?.entries;
    if entries != n {
        bail!("directory holds {entries} entries, expected {n}");
    }
    let label = if n.is_multiple_of(1_000_000) { format!("{}m", n / 1_000_000) } else { n.to_string() };
    for (i, op) in ["create", "lookup", "readdir"].iter().enumerate() {
        let (v, base) = (big[i], small[i]);
        let name = format!("mdt.bigdir.{op}.{label}");
        if a.json {
            println!(
                "{}",
                serde_json::json!({"bench": name, "value": v.round(), "unit": "ops/s",
                    "baseline": "same_op_at_10k_entries", "baseline_value": base.round(),
                    "ratio": ((v / base) * 1000.0).round() / 1000.0})
            );
        } else {
            println!("{name:32} at {n} entries {v:>10.0} ops/s   at 10k {base:>10.0} ops/s   ratio {:.3}", v / base);
        }
    }
    if !a.json {
        println!(
            "ran: one directory grown to {n} entries (fill at {fill_rate:.0} creates/s), {probe} probe creates, {} lookups, readdir pages of 256, commit every {} ms",
            probe * 4,
            a.commit_ms
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if let Some(n) = a.bigdir {
        return bigdir(&a, n);
    }
    if a.files == 0 || a.dirs == 0 || a.clients.iter().any(|&c| c == 0 || c > 64) {
        bail!("--files and --dirs must be positive, --clients 1..=64");
    }
    if a.per_client == 0 || a.per_client > 64 || a.max_mod_rpcs == 0 {
        bail!("--per-client 1..=64, --max-mod-rpcs positive");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let tmp = tempfile::tempdir()?;
    // The embedded store: its own fjall database, no RPC.
    let kv: Arc<dyn Kv> = Arc::new(FjallKv::open(&tmp.path().join("embedded"))?);
    let alloc = Arc::new(Allocator::new(Arc::clone(&kv), no_osts(), AllocConfig::default()));
    let ens = Arc::new(Namespace::mount(kv, alloc)?);
    let _ecommit =
        mdt::txn::Committer::start(Arc::clone(ens.kv()), Arc::clone(ens.txn()), Duration::from_millis(a.commit_ms));
    let cfg = MdsConfig {
        fsname: "bench".into(),
        data_dir: tmp.path().join("daemon"),
        admin_addr: None,
        lnet: node(a.net, 1, a.port),
        mgs: Some(MgsSection::default()),
        mdt: Some(MdtSection {
            index: 0,
            mgs_nid: None,
            commit_interval_ms: a.commit_ms,
            threads: 2,
            stripe_size: 1 << 20,
            stripe_count: 1,
            precreate_batch: 1024,
            ost_seq_width: mdt::alloc::OST_SEQ_WIDTH,
            obd_timeout_s: 100.0,
            qos_maxage_s: 1.0,
        }),
    };
    rt.block_on(async {
        let d = Daemon::start(&cfg).await.context("starting the in-process sheen-mds")?;
        let server = d.nid();
        let max_clients = a.clients.iter().copied().max().unwrap_or(1);
        let mut lnets = Vec::new();
        for i in 0..max_clients {
            lnets.push(Lnet::start(node(a.net, 2 + i as u8, a.port)).await?);
        }
        let mut clients: Vec<ImportDriver> = Vec::new();
        for (i, l) in lnets.iter().enumerate() {
            let mut cfg =
                ImportConfig::new(&format!("bench-{i}"), Op::MdsConnect, Op::MdsDisconnect, MDS_REQUEST_PORTAL, vec![]);
            cfg.connect_data = ConnectData { flags: connect_flags::VERSION | connect_flags::TRANSNO, version: 1, ..ConnectData::default() };
            // Replies are kept for replay until a commit (every `--commit-ms`)
            // reaches the client: room for a commit interval of updates.
            cfg.max_requests = 1 << 16;
            cfg.max_mod_rpcs = a.max_mod_rpcs;
            let imp = ImportDriver::start(l, vec![server], cfg, 64 << 10)?;
            imp.connect().await.map_err(|k| anyhow::anyhow!("bench client {i} ended {k:?}"))?;
            clients.push(imp);
        }
        for (layout, ndirs) in [("one_dir", 1u64), ("many_dirs", a.dirs)] {
            for &nc in &a.clients {
                let tag = format!("{layout}.c{nc}");
                let mk = |ns: &Arc<Namespace>| -> anyhow::Result<Vec<Fid>> {
                    (0..ndirs)
                        .map(|i| {
                            let args = CreateArgs { mode: S_IFDIR | 0o755, ..CreateArgs::default() };
                            Ok(ns.create(Fid::ROOT, &format!("{tag}.d{i}"), &args)?.0.fid)
                        })
                        .collect()
                };
                let edirs = mk(&ens)?;
                // The daemon's MDT runs on the target framework: its
                // directories are made by RPC like everything else.
                let mut rdirs = Vec::new();
                for i in 0..ndirs {
                    let r = ReintReq::Create {
                        parent: Fid::ROOT,
                        name: format!("{tag}.d{i}"),
                        mode: S_IFDIR | 0o755,
                        rdev: 0,
                        uid: 0,
                        gid: 0,
                        time: ptlrpc::wire::mds::Timestamp::secs(0),
                        symlink: String::new(),
                        stripe: None,
                        fid: None,
                        replay: None,
                        lock: false,
                    };
                    let rep = clients[0].rpc(Op::MdsReint, ReqKind::Modify, &root(r)).await?;
                    let mut body = rkyv::util::AlignedVec::<16>::new();
                    body.extend_from_slice(&rep.body);
                    let rep: ReintReply = rkyv::from_bytes::<ReintReply, rkyv::rancor::Error>(&body)?;
                    rdirs.push(rep.attr.context("mkdir reply without attributes")?.fid);
                }
                for phase in Phase::ALL {
                    let e = {
                        let (ens, edirs) = (Arc::clone(&ens), edirs.clone());
                        let files = a.files;
                        tokio::task::spawn_blocking(move || embedded_phase(&ens, &edirs, files, nc, phase)).await??
                    };
                    let r = rpc_phase(&clients[..nc], a.per_client, &rdirs, a.files, phase).await?;
                    report(a.json, &format!("mdt.{}.{tag}", phase.name()), r, e);
                }
            }
        }
        if !a.json {
            println!(
                "ran: {} files per workload, one dir and {} dirs, clients {:?} with {} requests in flight each (max_mod_rpcs {} asked, {} granted), tcp loopback 127.{}.0.x:{}, commit every {} ms",
                a.files, a.dirs, a.clients, a.per_client, a.max_mod_rpcs, clients[0].max_mod_rpcs(), a.net, a.port, a.commit_ms
            );
        }
        for c in &clients {
            c.close();
        }
        for l in &lnets {
            l.shutdown();
        }
        tokio::task::spawn_blocking(move || d.stop()).await?;
        Ok(())
    })
}
