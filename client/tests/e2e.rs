//! The library API end to end against real `sheen-mds` and `sheen-oss`
//! processes on loopback tcp (spawned here, unique 127.x.y.z addresses,
//! temporary directories): striped files (2 stripes of 64 KiB) written,
//! read back, stat'ed, truncated, fsync'ed, unlinked; sparse writes;
//! directories. Every wait is bounded (ready lines, the MDT's own wait).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use client::Sheen;
use client::lov_io::StripedFile;
use client::osc::Osc;
use common::*;
use lnet::Nid;
use ptlrpc::wire::mds::{Layout as FileLayout, StripeObj, open_flags};

/// lov I/O straight onto the real OSTs (objects made with OST_CREATE,
/// as the MDT's precreate does): split, parallel BRWs, glimpse, truncate,
/// sync, and holes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lov_io_on_real_osts() {
    let (_tmp, cluster, lnet) = up(1).await;
    let oss = Nid::ip(cluster.layout.oss_addr, lnet::Net::new(lnet::NetType::Tcp, 0));
    let oscs: Vec<Arc<Osc>> = (0..2).map(|i| Arc::new(Osc::new(&lnet, "sheen", i, oss, "lov-test"))).collect();
    let mut objects = Vec::new();
    for o in &oscs {
        objects.push(StripeObj { ost: o.index(), id: o.create(0x2_0000_0400, 1).await.unwrap() });
    }
    let layout = FileLayout { stripe_size: 64 << 10, pool: String::new(), objects };
    let f = StripedFile::new(&layout, |i| oscs.get(i as usize).cloned()).unwrap();
    assert_eq!(f.size().await.unwrap(), 0);

    // 2.5 MiB + 3 bytes from an unaligned offset: many 64 KiB pieces on both OSTs.
    let data = pattern((5 << 19) + 3, 7);
    let off = 12_345u64;
    assert_eq!(f.write(off, &data).await.unwrap(), data.len());
    let size = off + data.len() as u64;
    assert_eq!(f.size().await.unwrap(), size);
    let mut back = vec![0xeeu8; data.len() + off as usize + 100];
    assert_eq!(f.read(0, &mut back, size).await.unwrap(), size as usize);
    assert!(back[..off as usize].iter().all(|&b| b == 0), "the hole before the write reads as zeros");
    assert_eq!(&back[off as usize..size as usize], &data[..]);
    assert_eq!(back[size as usize], 0xee, "nothing past the end is touched");
    // Each object holds its share.
    for (i, o) in oscs.iter().enumerate() {
        let a = o.getattr(layout.objects[i].id).await.unwrap();
        assert_eq!(a.size, f.stripes().object_size(i as u32, size));
    }
    f.sync().await.unwrap();

    // Truncate into the middle of stripe 1's chunk, then extend with a far write.
    f.truncate(100_000).await.unwrap();
    assert_eq!(f.size().await.unwrap(), 100_000);
    f.write(10 << 20, b"far").await.unwrap();
    assert_eq!(f.size().await.unwrap(), (10 << 20) + 3);
    let mut b = vec![1u8; 200_000];
    assert_eq!(f.read(0, &mut b, 200_000).await.unwrap(), 200_000);
    assert_eq!(&b[..100_000], &back[..100_000], "what is left reads back");
    assert!(b[100_000..].iter().all(|&x| x == 0), "truncated bytes come back as zeros");

    lnet.shutdown();
    cluster.stop();
}

/// The library API over the MDT and the OSTs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn striped_files_end_to_end() {
    let (_tmp, cluster, lnet) = up(0).await;
    assert_eq!(cluster.ost_warning, None);
    let fs = Sheen::mount(&lnet, cluster.layout.mgs_nid(), "sheen").await.unwrap();
    assert_eq!(fs.oscs().len(), 2);

    // Directories.
    fs.mkdir("/d", 0o755).await.unwrap();
    assert!(fs.stat("/d").await.unwrap().is_dir());

    // A striped file: 300 KiB over 2 stripes of 64 KiB, written unaligned.
    let f = fs.create("/d/f", 0o644, two_stripes()).await.unwrap();
    let layout = fs.stat("/d/f").await.unwrap().layout.unwrap();
    assert_eq!(layout.objects.len(), 2);
    assert_ne!(layout.objects[0].ost, layout.objects[1].ost, "two OSTs");
    let data = pattern(300 * KIB + 17, 1);
    assert_eq!(fs.write(&f, 0, &data[..1000]).await.unwrap(), 1000);
    assert_eq!(fs.write(&f, 1000, &data[1000..]).await.unwrap(), data.len() - 1000);
    fs.fsync(&f).await.unwrap();
    let mut back = vec![0u8; data.len() + 4096];
    assert_eq!(fs.read(&f, 0, &mut back).await.unwrap(), data.len(), "short at EOF");
    assert_eq!(&back[..data.len()], &data[..]);
    // A read across a stripe boundary, mid-file.
    let mut mid = vec![0u8; 70 * KIB];
    assert_eq!(fs.read(&f, 60 * KIB as u64, &mut mid).await.unwrap(), mid.len());
    assert_eq!(&mid[..], &data[60 * KIB..130 * KIB]);
    assert_eq!(fs.read(&f, data.len() as u64, &mut mid).await.unwrap(), 0);
    fs.close(f).await.unwrap();
    assert_eq!(fs.stat("/d/f").await.unwrap().size(), data.len() as u64);

    // Reopen read-only, read back; truncate shrinks.
    let f = fs.open("/d/f", 0, 0, None).await.unwrap();
    let mut back = vec![0u8; data.len()];
    assert_eq!(fs.read(&f, 0, &mut back).await.unwrap(), data.len());
    assert_eq!(back, data);
    assert!(fs.write(&f, 0, b"x").await.is_err(), "read-only open");
    fs.close(f).await.unwrap();
    let fid = fs.resolve("/d/f").await.unwrap();
    assert_eq!(fs.truncate_fid(fid, 100_000).await.unwrap().size(), 100_000);

    // Sparse: a write far out leaves a hole of zeros.
    let f = fs.create("/sparse", 0o600, two_stripes()).await.unwrap();
    fs.write(&f, 1 << 20, b"tail").await.unwrap();
    fs.write(&f, 5, b"head").await.unwrap();
    assert_eq!(fs.size(&f).await.unwrap(), (1 << 20) + 4);
    let mut b = vec![0xffu8; (1 << 20) + 4];
    assert_eq!(fs.read(&f, 0, &mut b).await.unwrap(), b.len());
    assert_eq!(&b[5..9], b"head");
    assert!(b[9..1 << 20].iter().all(|&x| x == 0));
    assert_eq!(&b[1 << 20..], b"tail");
    fs.fsync(&f).await.unwrap();
    fs.close(f).await.unwrap();

    // O_TRUNC empties; readdir sees the names; unlink and rmdir.
    let f = fs.open("/sparse", open_flags::RDWR | open_flags::TRUNC, 0, None).await.unwrap();
    assert_eq!(fs.size(&f).await.unwrap(), 0);
    fs.close(f).await.unwrap();
    let mut names: Vec<String> = fs.readdir("/").await.unwrap().into_iter().map(|e| e.name).collect();
    names.sort();
    assert_eq!(names, vec!["d", "sparse"]);
    fs.rename("/sparse", "/d/moved").await.unwrap();
    assert!(fs.stat("/sparse").await.unwrap_err().is_not_found());
    fs.unlink("/d/moved").await.unwrap();
    fs.unlink("/d/f").await.unwrap();
    assert!(fs.stat("/d/f").await.unwrap_err().is_not_found());
    assert_eq!(fs.rmdir("/").await.unwrap_err().errno(), libc::EINVAL);
    fs.rmdir("/d").await.unwrap();
    assert!(fs.readdir("/").await.unwrap().is_empty());

    // df: the MDT and both OSTs answer.
    let df = fs.df().await;
    assert_eq!(df.len(), 3);
    assert!(df.iter().all(|t| t.ok), "{df:?}");

    lnet.shutdown();
    cluster.stop();
}
