//! The workloads, run on a directory of any mounted file system with
//! plain `std::fs` calls: sequential write and read of one large file in
//! fixed blocks, and create / stat / unlink of many small files.
//!
//! Must not: know which file system it runs on.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::Context;

/// Sequential I/O results, MB/s (10^6 bytes per second).
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqResult {
    /// Write, including the final fsync.
    pub write_mbs: f64,
    /// Read of the file just written.
    pub read_mbs: f64,
}

/// Small-file results, operations per second.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetaResult {
    /// Create (open O_CREAT|O_EXCL, write, close).
    pub create: f64,
    /// stat of each file by path.
    pub stat: f64,
    /// unlink.
    pub unlink: f64,
}

/// Asks the kernel to drop clean page-cache pages, so a read after a write
/// goes to the file system (a no-op where not permitted); returns whether
/// it was accepted.
pub fn drop_caches() -> bool {
    std::fs::write("/proc/sys/vm/drop_caches", b"3").is_ok()
}

/// Writes `size` bytes to `dir/seq` in `block`-byte writes, fsyncs, then
/// reads it back in `block`-byte reads; removes it.
pub fn sequential(dir: &Path, size: u64, block: usize) -> anyhow::Result<SeqResult> {
    let path = dir.join("seq");
    let mut buf = vec![0u8; block];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37) ^ 0x5a;
    }
    let t = Instant::now();
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut left = size;
    while left > 0 {
        let n = left.min(block as u64) as usize;
        f.write_all(&buf[..n]).with_context(|| format!("writing {}", path.display()))?;
        left -= n as u64;
    }
    f.sync_all().with_context(|| format!("fsync of {}", path.display()))?;
    drop(f);
    let write_mbs = size as f64 / t.elapsed().as_secs_f64() / 1e6;
    drop_caches();
    let t = Instant::now();
    let mut f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut got = 0u64;
    loop {
        let n = f.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    let read_mbs = got as f64 / t.elapsed().as_secs_f64() / 1e6;
    drop(f);
    anyhow::ensure!(got == size, "read {got} of {size} bytes back from {}", path.display());
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    Ok(SeqResult { write_mbs, read_mbs })
}

/// Creates `n` files of `file_size` bytes under a new `dir/meta`, stats
/// each, unlinks each (one thread, as `mdtest -n` with one task).
pub fn small_files(dir: &Path, n: usize, file_size: usize) -> anyhow::Result<MetaResult> {
    let d = dir.join("meta");
    std::fs::create_dir(&d).with_context(|| format!("mkdir {}", d.display()))?;
    let data = vec![0x42u8; file_size];
    let name = |i: usize| d.join(format!("f{i:06}"));
    let t = Instant::now();
    for i in 0..n {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(name(i))
            .with_context(|| format!("creating {}", name(i).display()))?;
        f.write_all(&data)?;
    }
    let create = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..n {
        let md = std::fs::metadata(name(i)).with_context(|| format!("stat {}", name(i).display()))?;
        anyhow::ensure!(md.len() == file_size as u64, "{} has {} bytes", name(i).display(), md.len());
    }
    let stat = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..n {
        std::fs::remove_file(name(i)).with_context(|| format!("unlink {}", name(i).display()))?;
    }
    let unlink = n as f64 / t.elapsed().as_secs_f64();
    std::fs::remove_dir(&d).with_context(|| format!("rmdir {}", d.display()))?;
    Ok(MetaResult { create, stat, unlink })
}
