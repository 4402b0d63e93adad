//! The library API without FUSE: mount a Sheen file system, copy a local
//! file in (striped as asked), read it back into a caller-owned buffer
//! and compare, fsync, print its layout.
//!
//! ```sh
//! sheen up                      # a one-node file system (MGS at 127.0.88.1@tcp)
//! cargo run -p client --example copy_in -- 127.0.88.1@tcp /etc/services /services
//! ```

use std::time::Instant;

use anyhow::{Context, bail};
use client::Sheen;
use client::cli::LocalNet;
use ptlrpc::wire::mds::{StripeSpec, open_flags};

const CHUNK: usize = 4 << 20;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, mgs, local, remote] = &args[..] else {
        bail!("usage: copy_in MGSNID LOCAL_FILE /PATH/IN/SHEEN   (file system 'sheen'; lnet port $SHEEN_PORT or 988)");
    };
    let port = std::env::var("SHEEN_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(988);
    let mgs = mgs.parse().map_err(|e| anyhow::anyhow!("{mgs}: {e:?}"))?;
    let lnet = LocalNet { nid: None, port }.start(mgs).await?;
    let fs = Sheen::mount(&lnet, mgs, "sheen").await.context("mount")?;
    let data = std::fs::read(local).with_context(|| local.clone())?;

    let t = Instant::now();
    let spec = StripeSpec { stripe_size: 1 << 20, stripe_count: u32::MAX, stripe_offset: -1, pool: String::new() };
    let flags = open_flags::CREAT | open_flags::TRUNC | open_flags::RDWR;
    let f = fs.open(remote, flags, 0o644, Some(spec)).await?;
    for (i, chunk) in data.chunks(CHUNK).enumerate() {
        fs.write(&f, (i * CHUNK) as u64, chunk).await?;
    }
    fs.fsync(&f).await?;
    let wrote = t.elapsed();

    let mut back = vec![0u8; data.len()];
    let n = fs.read(&f, 0, &mut back).await?;
    fs.close(f).await?;
    if n != data.len() || back != data {
        bail!("read back {n} bytes that differ from what was written");
    }
    let st = fs.stat(remote).await?;
    let layout = st.layout.unwrap_or_default();
    println!(
        "{remote}: {} bytes written and fsync'ed in {wrote:?}, read back equal; {} stripes of {} bytes on OSTs {:?}",
        st.attr.size,
        layout.objects.len(),
        layout.stripe_size,
        layout.objects.iter().map(|o| o.ost).collect::<Vec<_>>()
    );
    lnet.shutdown();
    Ok(())
}
