//! `ost-bench`: BRW write then read through one OST on tcp loopback
//! against local `pwrite`/`pread` of the same data on the same file
//! system, in the same run.
//!
//! The OSS and the client run in this process on two loopback NIDs
//! (127.0.0.1@tcp and 127.0.0.2@tcp): every byte crosses lnet's tcp LND,
//! the service's bulk GET/PUT and the target's `pwritev`/`preadv`.
//! `--size` (default 4 GiB) is written as `--rpc-size` RPCs (default 1
//! MiB) with `--inflight` (default 8) in flight, then read back; the
//! baseline writes and reads the same bytes with one thread. Reads run
//! twice: cold (both files dropped from the page cache first, so both read
//! the disk) and cached. Neither
//! timed phase includes a final sync (the OST's commit thread runs as
//! usual); each side is synced, untimed, after its write phase so that one
//! side's dirty pages do not throttle the other. `--json`
//! prints one line per result.

use std::fs::OpenOptions;
use std::net::Ipv4Addr;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use lnet::{Lnet, LnetConfig, MdBuffer, NetConfig, TcpConfig};
use ost::client::OstClientConfig;
use ost::{Ost, OstClient, OstConfig, OstServer};
use ptlrpc::fault::FaultInjector;
use ptlrpc::pinger::PingSettings;
use ptlrpc::wire::Niobuf;

#[derive(Parser, Debug)]
#[command(name = "ost-bench")]
struct Args {
    /// Bytes to write and read (suffixes K, M, G).
    #[arg(long, default_value = "4G", value_parser = parse_size)]
    size: u64,
    /// Bytes per BRW RPC.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    rpc_size: u64,
    /// RPCs in flight.
    #[arg(long, default_value_t = 8)]
    inflight: usize,
    /// Writes (modifying RPCs) the client asks to have in flight at once
    /// (reply slots; 1 serializes writes as before multiple slots).
    #[arg(long, default_value_t = 8)]
    max_mod_rpcs: u16,
    /// Directory on the file system to measure (a temporary directory is
    /// made inside it and removed afterwards).
    #[arg(long, default_value = "/tmp")]
    dir: PathBuf,
    /// Turn CRC32C off.
    #[arg(long)]
    no_checksums: bool,
    /// The OST's object I/O through the page cache (`direct_io = false`;
    /// by default a target moves runs of 64 KiB or more with O_DIRECT,
    /// and the bench adds local O_DIRECT pwrite/pread baselines beside the
    /// buffered ones).
    #[arg(long)]
    buffered_io: bool,
    /// Seconds between the target's commits (Lustre commits every 5 s).
    #[arg(long, default_value_t = 5.0)]
    commit_interval: f64,
    /// OST service workers per CPT running at once before a request wakes
    /// another (ptlrpc's `max_running`; 0: every request wakes one).
    #[arg(long, default_value_t = 0)]
    max_running: usize,
    /// lnet tcp port.
    #[arg(long, default_value_t = 7994)]
    port: u16,
    /// One JSON line per result.
    #[arg(long)]
    json: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mul) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("'{s}' is not a size"))?;
    n.checked_mul(mul).ok_or_else(|| format!("'{s}' is too large"))
}

fn gbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

fn report(args: &Args, bench: &str, value: f64, baseline: &str, base: f64) {
    let ratio = value / base;
    if args.json {
        let line = serde_json::json!({
            "bench": bench, "value": (value * 1000.0).round() / 1000.0, "unit": "GB/s",
            "baseline": baseline, "baseline_value": (base * 1000.0).round() / 1000.0,
            "ratio": (ratio * 1000.0).round() / 1000.0,
            "size_bytes": args.size, "rpc_bytes": args.rpc_size, "inflight": args.inflight,
            "max_mod_rpcs": args.max_mod_rpcs,
            "checksums": !args.no_checksums, "direct_io": !args.buffered_io,
        });
        println!("{line}");
    } else {
        println!("{bench}: {value:.3} GB/s; {baseline}: {base:.3} GB/s; ratio {ratio:.2}");
    }
}

fn data_block(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.rpc_size == 0 || args.rpc_size > 4 << 20 || args.size < args.rpc_size || args.inflight == 0 {
        bail!("need 0 < rpc-size <= 4M <= size and inflight >= 1");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let work = tempfile::Builder::new().prefix("ost-bench-").tempdir_in(&args.dir).context("work directory")?;
    let rpc = args.rpc_size as usize;
    let n = args.size / args.rpc_size;
    let total = n * args.rpc_size;
    let block = data_block(rpc);

    // Baseline: local pwrite of the same data, same file system.
    let base_path = work.path().join("baseline");
    let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&base_path)?;
    let t = Instant::now();
    for i in 0..n {
        f.write_all_at(&block, i * args.rpc_size)?;
    }
    let base_write = t.elapsed();
    // Untimed: the baseline's dirty pages must not throttle the OST's writes.
    f.sync_all()?;

    // The OSS.
    let target_dir = work.path().join("ost0");
    let cfg = OstConfig {
        grant_per_export: 256 << 20,
        commit_interval: Duration::from_secs_f64(args.commit_interval),
        direct_io: !args.buffered_io,
        ..OstConfig::new("bench-OST0000", 0, &target_dir)
    };
    Ost::format(&cfg, "bench-fs")?;
    let tcp = |a: u8| LnetConfig {
        nets: vec![NetConfig::Tcp(TcpConfig {
            addr: Ipv4Addr::new(127, 0, 0, a),
            port: args.port,
            ..TcpConfig::default()
        })],
        ..LnetConfig::default()
    };
    let slnet = Lnet::start(tcp(1)).await?;
    let clnet = Lnet::start(tcp(2)).await?;
    let faults = Arc::new(FaultInjector::default());
    let svc = ptlrpc::driver::ServiceConfig { max_running: args.max_running, ..ost::server::service_config() };
    let server = OstServer::start(&slnet, vec![cfg], svc, PingSettings::default(), Arc::clone(&faults))?;
    let direct_io = server.targets().iter().all(|t| t.direct_io());
    if !args.buffered_io && !direct_io && !args.json {
        println!("the file system under {} refuses O_DIRECT: the OST reads and writes buffered", args.dir.display());
    }
    let ccfg = OstClientConfig {
        grant: 256 << 20,
        brw_size: args.rpc_size as u32,
        checksums: !args.no_checksums,
        max_mod_rpcs: args.max_mod_rpcs,
        ..OstClientConfig::default()
    };
    let c = Arc::new(OstClient::new(&clnet, vec![slnet.nid()], "bench-OST0000", "bench", ccfg));
    let data = c.connect().await?;
    if !args.json {
        let slots =
            if data.flags & ptlrpc::wire::connect_flags::MULTIMODRPCS != 0 { data.max_mod_rpcs.max(1) } else { 1 };
        println!("writes in flight at once (reply slots negotiated): {slots}");
    }
    // The sequence an MDT would have been granted (any non-zero one).
    let seq = 0x2_0000_0400;
    let oid = ptlrpc::wire::OstId::new(seq, c.create(seq, 1).await?.first);

    // BRW write: `inflight` tasks; the import keeps each write's pages
    // until the target commits it, so each write fills fresh ones.
    let next = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.inflight {
        let (c, next) = (Arc::clone(&c), Arc::clone(&next));
        let block = block.clone();
        let step = args.rpc_size;
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                let nio = [Niobuf { offset: i * step, len: step as u32, flags: 0 }];
                c.write_pages(oid, &nio, c.pages(&block)?).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let ost_write = t.elapsed();
    // Untimed: commit, so both reads start from the same state.
    c.sync().await?;

    // Reads, twice: first cold (both files' pages dropped from the page
    // cache with posix_fadvise(DONTNEED), so both sides read the disk),
    // then warm (both from the page cache).
    let obj_path = target_dir
        .join("O")
        .join(format!("{seq:x}"))
        .join(format!("{:02x}", oid.oid & 0xff))
        .join(format!("{:x}", oid.oid));
    let obj = std::fs::File::open(&obj_path).context("the object's file")?;
    let mut reads = Vec::new();
    for cold in [true, false] {
        if cold {
            for file in [&f, &obj] {
                rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed)?;
            }
        }
        let cpu0 = cpu_seconds();
        let base = base_read(&f, &block, n, args.rpc_size)?;
        let cpu1 = cpu_seconds();
        let brw = brw_read(&c, &clnet, oid, &block, n, args.rpc_size, args.inflight).await?;
        let cpu2 = cpu_seconds();
        if !args.json {
            // CPU time (all threads, user + system) per GiB: what the two
            // cores pay, whatever the load from other processes.
            let gib = total as f64 / f64::from(1u32 << 30);
            println!(
                "{} read CPU: OST {:.2} s/GiB, local {:.2} s/GiB",
                if cold { "cold" } else { "cached" },
                (cpu2 - cpu1) / gib,
                (cpu1 - cpu0) / gib
            );
        }
        reads.push((cold, brw, base));
    }

    // O_DIRECT baselines: the same bytes with one thread, around the cache.
    let direct = if direct_io { Some(base_direct(&work.path().join("baseline_direct"), &block, n)?) } else { None };

    report(&args, "ost.tcp.brw_write", gbps(total, ost_write), "local_pwrite", gbps(total, base_write));
    if let Some((w, _)) = direct {
        report(&args, "ost.tcp.brw_write", gbps(total, ost_write), "local_pwrite_direct", gbps(total, w));
    }
    for (cold, brw, base) in reads {
        let (name, bname) =
            if cold { ("ost.tcp.brw_read", "local_pread") } else { ("ost.tcp.brw_read_cached", "local_pread_cached") };
        report(&args, name, gbps(total, brw), bname, gbps(total, base));
        if let Some((_, r)) = direct {
            report(&args, name, gbps(total, brw), "local_pread_direct", gbps(total, r));
        }
    }
    let server = Arc::new(server);
    let s2 = Arc::clone(&server);
    tokio::task::spawn_blocking(move || s2.shutdown()).await?;
    clnet.shutdown();
    slnet.shutdown();
    drop(f);
    Ok(())
}

/// Local O_DIRECT pwrite then pread of `n` blocks at `path`, one thread,
/// from and into a 4 KiB-aligned buffer; the write is synced, untimed.
fn base_direct(path: &std::path::Path, block: &[u8], n: u64) -> Result<(Duration, Duration)> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = rustix::fs::OFlags::DIRECT.bits() as i32;
    let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).custom_flags(flags).open(path)?;
    let mut v = vec![0u8; block.len() + 4096];
    let at = v.as_ptr().align_offset(4096);
    let buf = &mut v[at..at + block.len()];
    buf.copy_from_slice(block);
    let step = block.len() as u64;
    let t = Instant::now();
    for i in 0..n {
        f.write_all_at(buf, i * step)?;
    }
    let w = t.elapsed();
    f.sync_all()?;
    let t = Instant::now();
    for i in 0..n {
        f.read_exact_at(buf, i * step)?;
    }
    let r = t.elapsed();
    if buf != block {
        bail!("O_DIRECT baseline read back different bytes");
    }
    Ok((w, r))
}

/// This process's CPU time so far (user + system, every thread), from
/// `/proc/self/stat` (0 where that is unreadable).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the command name (which may hold spaces) start at state.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 counting
    // from state (field 3) as 0.
    (ticks(11) + ticks(12)) / 100.0
}

/// Local pread of the baseline file, one thread.
fn base_read(f: &std::fs::File, block: &[u8], n: u64, step: u64) -> Result<Duration> {
    let mut rbuf = vec![0u8; block.len()];
    let t = Instant::now();
    for i in 0..n {
        f.read_exact_at(&mut rbuf, i * step)?;
    }
    let took = t.elapsed();
    if rbuf != block {
        bail!("baseline read back different bytes");
    }
    Ok(took)
}

/// BRW reads of the object, `inflight` at once; the first task checks the
/// bytes of its first RPC.
async fn brw_read(
    c: &Arc<OstClient>,
    clnet: &Lnet,
    oid: ptlrpc::wire::OstId,
    block: &[u8],
    n: u64,
    step: u64,
    inflight: usize,
) -> Result<Duration> {
    let next = Arc::new(AtomicU64::new(0));
    let rpc = step as usize;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..inflight {
        let (c, next) = (Arc::clone(c), Arc::clone(&next));
        let mut buf = MdBuffer::from_pages_len(clnet.pool(0).alloc_bytes(rpc)?, rpc);
        let block = if k == 0 { block.to_vec() } else { Vec::new() };
        tasks.push(tokio::spawn(async move {
            let mut check = k == 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                let nio = [Niobuf { offset: i * step, len: step as u32, flags: 0 }];
                let (_, b) = c.read_pages(oid, &nio, buf).await?;
                if check {
                    let mut v = vec![0u8; b.len()];
                    b.read_at(0, &mut v);
                    if v != block {
                        anyhow::bail!("BRW read back different bytes at RPC {i}");
                    }
                    check = false;
                }
                buf = b;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(t.elapsed())
}
