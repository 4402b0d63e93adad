//! `sheen-bench`: the client's benchmark. In one run, on this machine:
//!
//! - sequential write (with the final fsync) and read of one `--size`
//!   file in `--block` requests, and create / stat / unlink of `--files`
//!   small files, through the Sheen FUSE mount (a one-node file system
//!   started with the code `sheen up` uses, mounted by a `sheen mount`
//!   child), through GlusterFS (a 2-brick distribute volume on loopback,
//!   set up and torn down here; its small-file part also with the kernel's
//!   attribute and entry TTLs at zero, as Sheen answers), through a
//!   do-nothing FUSE file system
//!   (`sheen-nullfs`, the ceiling) and on the local disk;
//! - the same sequential I/O through the library API (`client::Sheen`, no
//!   FUSE; `block` and 16 MiB calls waited for each, and `block` calls
//!   with write-behind) beside lnet selftest's brw over tcp between two
//!   in-process nodes.
//!
//! Prints a table, or with `--json` one line per figure and baseline:
//! `{"bench":"client.fuse.seq_write","value":..,"unit":"MB/s","baseline":"glusterfs",..,"ratio":..}`.
//! A baseline that cannot run here is reported with the reason and skipped.

mod gluster;
mod work;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use client::Sheen;
use client::up::{Cluster, Layout, find_binary, mount_child, spawn_ready, stop_child};
use lnet::{Lnet, LnetConfig, NetConfig, TcpConfig};
use ptlrpc::wire::mds::StripeSpec;
use serde_json::json;
use work::{MetaResult, SeqResult};

/// Sheen client benchmark: FUSE mount vs GlusterFS, a do-nothing FUSE
/// file system and the local disk; the library API vs lnet brw.
#[derive(Debug, Parser)]
#[command(name = "sheen-bench", version)]
struct Args {
    /// One JSON line per result.
    #[arg(long)]
    json: bool,
    /// Bytes of the sequential file (K, M, G suffixes).
    #[arg(long, default_value = "4G", value_parser = parse_size)]
    size: u64,
    /// Bytes per read/write request.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    block: u64,
    /// Small files to create, stat and unlink.
    #[arg(long, default_value_t = 10_000)]
    files: usize,
    /// Bytes written to each small file.
    #[arg(long, default_value_t = 4096)]
    file_size: usize,
    /// Working directory (Sheen's data, Gluster's bricks, the local-disk
    /// files, the mount points); must be on the local disk.
    #[arg(long, default_value = "sheen-bench-data")]
    dir: PathBuf,
    /// Loopback address of Sheen's MDS (the OSS takes the next one).
    #[arg(long, default_value = "127.0.90.1")]
    addr: Ipv4Addr,
    /// lnet port of the file system (the lnet brw pair uses the next one).
    #[arg(long, default_value_t = 8009)]
    port: u16,
    /// Parts to skip: fuse, gluster, gluster-nocache, nullfs, local, lib, lnet.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|e| format!("{s}: {e}"))?;
    n.checked_mul(mul).filter(|&v| v > 0).ok_or_else(|| format!("{s}: must be positive and fit 64 bits"))
}

/// What one file system measured (None: not run).
#[derive(Debug, Default, Clone)]
struct FsResult {
    seq: Option<SeqResult>,
    meta: Option<MetaResult>,
    note: Option<String>,
}

fn run_workloads(dir: &Path, a: &Args) -> FsResult {
    let seq = work::sequential(dir, a.size, a.block as usize);
    let meta = work::small_files(dir, a.files, a.file_size);
    let note = match (&seq, &meta) {
        (Err(e), _) | (_, Err(e)) => Some(format!("{e:#}")),
        _ => None,
    };
    FsResult { seq: seq.ok(), meta: meta.ok(), note }
}

fn run_small_files(dir: &Path, a: &Args) -> FsResult {
    match work::small_files(dir, a.files, a.file_size) {
        Ok(m) => FsResult { meta: Some(m), ..FsResult::default() },
        Err(e) => FsResult { note: Some(format!("{e:#}")), ..FsResult::default() },
    }
}

fn skipped(a: &Args, part: &str) -> bool {
    a.skip.iter().any(|s| s == part)
}

fn say(a: &Args, msg: &str) {
    if !a.json {
        eprintln!("{msg}");
    }
}

/// The Sheen file system: the daemons `sheen up` starts.
async fn start_sheen(a: &Args) -> anyhow::Result<Cluster> {
    let dir = a.dir.join("sheen");
    let _ = std::fs::remove_dir_all(&dir);
    let o = a.addr.octets();
    let layout = Layout {
        fsname: "sheen".into(),
        mds_addr: a.addr,
        oss_addr: Ipv4Addr::new(o[0], o[1], o[2], o[3].wrapping_add(1)),
        port: a.port,
        mds_admin_port: 0,
        oss_admin_port: 0,
        client_admin_port: 0,
    };
    let c = Cluster::start(layout, &dir, 1000, false).await.context("starting sheen-mds and sheen-oss")?;
    if let Some(w) = &c.ost_warning {
        anyhow::bail!("{w}");
    }
    Ok(c)
}

fn fuse_sheen(a: &Args, c: &Cluster) -> FsResult {
    let mnt = c.dir.join("mnt");
    let sheen = match find_binary("sheen") {
        Ok(b) => b,
        Err(e) => return FsResult { note: Some(e.to_string()), ..FsResult::default() },
    };
    match mount_child(&sheen, a.port, c, &mnt, false) {
        Ok(child) => {
            let r = run_workloads(&mnt, a);
            stop_child(child);
            r
        }
        Err(e) => FsResult { note: Some(format!("sheen mount: {e}")), ..FsResult::default() },
    }
}

fn nullfs(a: &Args) -> FsResult {
    let mnt = a.dir.join("nullfs");
    let run = || -> anyhow::Result<FsResult> {
        std::fs::create_dir_all(&mnt)?;
        let bin = find_binary("sheen-nullfs")?;
        let m = mnt.display().to_string();
        let (child, _) = spawn_ready(&bin, &[&m], &a.dir.join("nullfs.log"), "nullfs ready", false)?;
        let r = run_workloads(&mnt, a);
        stop_child(child);
        Ok(r)
    };
    run().unwrap_or_else(|e| FsResult { note: Some(format!("{e:#}")), ..FsResult::default() })
}

fn glusterfs(a: &Args) -> FsResult {
    match gluster::Gluster::start(&a.dir.join("gluster"), "") {
        Ok(g) => {
            let r = run_workloads(&g.mnt, a);
            g.stop();
            r
        }
        Err(e) => FsResult { note: Some(format!("{e:#}")), ..FsResult::default() },
    }
}

/// GlusterFS mounted to cache nothing in the kernel (zero attribute,
/// entry and negative TTLs, as the Sheen mount answers): small files only.
fn glusterfs_nocache(a: &Args) -> FsResult {
    let opts = "attribute-timeout=0,entry-timeout=0,negative-timeout=0";
    match gluster::Gluster::start(&a.dir.join("gluster"), opts) {
        Ok(g) => {
            let r = run_small_files(&g.mnt, a);
            g.stop();
            r
        }
        Err(e) => FsResult { note: Some(format!("{e:#}")), ..FsResult::default() },
    }
}

fn local(a: &Args) -> FsResult {
    let d = a.dir.join("local");
    let _ = std::fs::remove_dir_all(&d);
    match std::fs::create_dir_all(&d) {
        Ok(()) => run_workloads(&d, a),
        Err(e) => FsResult { note: Some(e.to_string()), ..FsResult::default() },
    }
}

/// Sequential write (+ fsync) and read of `size` bytes through the
/// library API in `block`-byte calls (writes waited for each, or behind
/// the caller); MB/s.
async fn library(fs: &Sheen, size: u64, block: usize, name: &str, behind: bool) -> anyhow::Result<SeqResult> {
    let path = format!("/{name}");
    let _ = fs.unlink(&path).await;
    let stripe =
        Some(StripeSpec { stripe_size: 1 << 20, stripe_count: u32::MAX, stripe_offset: -1, pool: String::new() });
    let buf = vec![0x5au8; block];
    let t = Instant::now();
    let f = fs.create(&path, 0o644, stripe).await?;
    let mut off = 0;
    while off < size {
        let n = (size - off).min(block as u64) as usize;
        if behind {
            fs.write_behind(&f, off, &buf[..n]).await?;
        } else {
            fs.write(&f, off, &buf[..n]).await?;
        }
        off += n as u64;
    }
    fs.fsync(&f).await?;
    fs.close(f).await?;
    let write_mbs = size as f64 / t.elapsed().as_secs_f64() / 1e6;
    let mut rbuf = vec![0u8; block];
    let t = Instant::now();
    let f = fs.open(&path, 0, 0, None).await?;
    let mut off = 0;
    loop {
        let n = fs.read(&f, off, &mut rbuf).await?;
        if n == 0 {
            break;
        }
        off += n as u64;
    }
    fs.close(f).await?;
    let read_mbs = off as f64 / t.elapsed().as_secs_f64() / 1e6;
    anyhow::ensure!(off == size, "read {off} of {size} bytes");
    fs.unlink(&path).await?;
    Ok(SeqResult { write_mbs, read_mbs })
}

async fn client_lnet(a: &Args, host: u8, port: u16, accept: bool) -> anyhow::Result<Lnet> {
    let o = a.addr.octets();
    let addr = Ipv4Addr::new(o[0], o[1], o[2], host);
    let cfg = LnetConfig {
        nets: vec![NetConfig::Tcp(TcpConfig { addr, port, accept, ..TcpConfig::default() })],
        ..LnetConfig::default()
    };
    Lnet::start(cfg).await.with_context(|| format!("lnet on {addr}:{port}"))
}

/// lnet selftest brw write and read over tcp between two in-process
/// nodes, 8 in flight, `size`-byte bulks; MB/s.
async fn lnet_brw(a: &Args, size: usize) -> anyhow::Result<SeqResult> {
    use lnet::selftest::{RunSpec, client, proto::Op, server};
    let port = a.port + 1;
    let srv_lnet = client_lnet(a, 240, port, true).await?;
    let cli_lnet = client_lnet(a, 241, port, true).await?;
    let _srv = server::Server::start(srv_lnet.clone()).context("selftest server")?;
    let mut out = [0.0; 2];
    for (i, op) in [Op::BrwWrite, Op::BrwRead].into_iter().enumerate() {
        let spec = RunSpec { op, duration: Duration::from_secs(5), concurrency: 8, size, check: false };
        let s = client::run(&cli_lnet, srv_lnet.nid(), &spec).await?;
        out[i] = s.bytes as f64 / s.elapsed.as_secs_f64() / 1e6;
    }
    cli_lnet.shutdown();
    srv_lnet.shutdown();
    Ok(SeqResult { write_mbs: out[0], read_mbs: out[1] })
}

fn line(a: &Args, bench: &str, value: f64, unit: &str, base: &str, base_value: Option<f64>) {
    let ratio = base_value.filter(|&b| b > 0.0).map(|b| value / b);
    if a.json {
        let mut v = json!({"bench": bench, "value": round(value), "unit": unit, "baseline": base});
        if let (Some(b), Some(r)) = (base_value, ratio) {
            v["baseline_value"] = json!(round(b));
            v["ratio"] = json!((r * 100.0).round() / 100.0);
        }
        println!("{v}");
    } else {
        let b = base_value.map_or_else(|| "-".to_string(), |b| format!("{b:.1}"));
        let r = ratio.map_or_else(|| "-".to_string(), |r| format!("{r:.2}x"));
        println!("{bench:<28} {value:>10.1} {unit:<6} vs {base:<20} {b:>10}  {r}");
    }
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn report(a: &Args, sheen: &FsResult, bases: &[(&str, &FsResult)]) {
    type Pick = fn(&FsResult) -> Option<f64>;
    let figures: [(&str, &str, Pick); 5] = [
        ("client.fuse.seq_write", "MB/s", |r| r.seq.map(|s| s.write_mbs)),
        ("client.fuse.seq_read", "MB/s", |r| r.seq.map(|s| s.read_mbs)),
        ("client.fuse.create", "ops/s", |r| r.meta.map(|m| m.create)),
        ("client.fuse.stat", "ops/s", |r| r.meta.map(|m| m.stat)),
        ("client.fuse.unlink", "ops/s", |r| r.meta.map(|m| m.unlink)),
    ];
    for (bench, unit, pick) in figures {
        let Some(v) = pick(sheen) else { continue };
        // A baseline that did not measure this figure (a failed run is
        // reported above; `glusterfs_ttl0` runs small files only) is left out.
        for (name, r) in bases.iter().filter(|(_, r)| pick(r).is_some()) {
            line(a, bench, v, unit, name, pick(r));
        }
    }
}

async fn run(a: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.dir)?;
    let a = Args { dir: std::path::absolute(&a.dir)?, ..a };
    say(
        &a,
        &format!(
            "sheen-bench: {} B sequential in {} B requests, {} files of {} B; load average {}",
            a.size,
            a.block,
            a.files,
            a.file_size,
            std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
        ),
    );
    let cluster = start_sheen(&a).await?;
    let mut sheen = FsResult::default();
    if !skipped(&a, "fuse") {
        say(&a, "sheen: FUSE mount ...");
        let c = &cluster;
        sheen = tokio::task::block_in_place(|| fuse_sheen(&a, c));
    }
    let mut lib = None;
    let mut lib16 = None;
    let mut lib_behind = None;
    if !skipped(&a, "lib") {
        say(&a, "sheen: library API ...");
        let lnet = client_lnet(&a, 251, a.port, false).await?;
        let fs = Arc::new(Sheen::mount(&lnet, cluster.layout.mgs_nid(), "sheen").await?);
        lib = Some(library(&fs, a.size, a.block as usize, "lib-seq", false).await);
        lib16 = Some(library(&fs, a.size, 16 << 20, "lib-seq16", false).await);
        lib_behind = Some(library(&fs, a.size, a.block as usize, "lib-seqwb", true).await);
        lnet.shutdown();
    }
    cluster.stop();
    let _ = std::fs::remove_dir_all(a.dir.join("sheen"));
    let mut bases: Vec<(&str, FsResult)> = Vec::new();
    for (part, name, f) in [
        ("gluster", "glusterfs", glusterfs as fn(&Args) -> FsResult),
        ("gluster-nocache", "glusterfs_ttl0", glusterfs_nocache),
        ("nullfs", "null_fuse", nullfs),
        ("local", "local_disk", local),
    ] {
        if !skipped(&a, part) {
            say(&a, &format!("{name} ..."));
            bases.push((name, tokio::task::block_in_place(|| f(&a))));
        }
    }
    let brw = if skipped(&a, "lnet") { None } else { Some(lnet_brw(&a, a.block as usize).await) };

    for (name, r) in std::iter::once(("sheen", &sheen)).chain(bases.iter().map(|(n, r)| (*n, r))) {
        if let Some(n) = &r.note {
            if a.json {
                println!("{}", json!({"bench": "client.fuse", "target": name, "error": n}));
            } else {
                println!("{name}: not measured: {n}");
            }
        }
    }
    let refs: Vec<(&str, &FsResult)> = bases.iter().map(|(n, r)| (*n, r)).collect();
    report(&a, &sheen, &refs);
    let brw_ok = brw.as_ref().and_then(|r| r.as_ref().ok()).copied();
    if let Some(Err(e)) = &brw {
        println!("lnet brw: not measured: {e:#}");
    }
    for (label, r) in [("client.lib", lib), ("client.lib_16m", lib16), ("client.lib_behind", lib_behind)] {
        match r {
            Some(Ok(s)) => {
                line(
                    &a,
                    &format!("{label}.seq_write"),
                    s.write_mbs,
                    "MB/s",
                    "lnet.tcp.brw_write",
                    brw_ok.map(|b| b.write_mbs),
                );
                line(
                    &a,
                    &format!("{label}.seq_read"),
                    s.read_mbs,
                    "MB/s",
                    "lnet.tcp.brw_read",
                    brw_ok.map(|b| b.read_mbs),
                );
            }
            Some(Err(e)) => println!("{label}: not measured: {e:#}"),
            None => {}
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    client::cli::init_tracing();
    let a = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run(a))
}
