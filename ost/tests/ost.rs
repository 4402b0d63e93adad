//! The OST end to end over lnet's `lo` LND: every request type, the data
//! path (niobufs, sparse files, writes past EOF, concurrent and
//! overlapping writes), checksums with injected corruption, and target
//! identity. Every wait is bounded; nothing sleeps to wait.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Oss, bounded, pattern, target_config};
use ost::client::OstClientConfig;
use ost::{Ost, OstConfig, OstError};
use ptlrpc::fault::{FaultPoint, Trigger};
use ptlrpc::wire::ost::{PUNCH_HOLE, PUNCH_TRUNCATE, attr_valid};
use ptlrpc::wire::{Niobuf, OstSetattr};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_type_works() {
    let dir = tempfile::tempdir().unwrap();
    let oss = Oss::start(target_config(&dir.path().join("ost0")), true).await;
    let c = oss.client_with("client-1", OstClientConfig { grant: 32 << 20, ..common::client_config() });
    let cd = bounded(c.connect()).await.unwrap();
    assert!(c.checksums(), "CRC32C negotiated");
    assert_eq!(cd.brw_size, 1 << 20);
    assert!(cd.grant > 0 && cd.grant <= 32 << 20, "grant {}", cd.grant);

    // Precreate a range, then one more.
    let r = bounded(c.create(common::SEQ, 16)).await.unwrap();
    assert_eq!((r.first, r.count, r.last_id), (1, 16, 16));
    let r2 = bounded(c.create(common::SEQ, 1)).await.unwrap();
    assert_eq!((r2.first, r2.last_id), (17, 17));
    assert_eq!(bounded(c.last_id(common::SEQ)).await.unwrap().last_id, 17);

    // Write with two niobufs (a gap between them: sparse), past EOF.
    let oid = common::obj(3);
    let a = pattern(1, 8192);
    let b = pattern(2, 5000);
    let mut all = a.clone();
    all.extend_from_slice(&b);
    let buf = c.pages(&all).unwrap();
    let nio = [Niobuf { offset: 0, len: 8192, flags: 0 }, Niobuf { offset: 1 << 20, len: 5000, flags: 0 }];
    let (reply, transno) = bounded(c.write_pages(oid, &nio, buf)).await.unwrap();
    assert_eq!(reply.size, (1 << 20) + 5000);
    assert!(transno > 0 && reply.version == transno);
    // Read across the hole.
    let got = bounded(c.read(oid, 0, 8192)).await.unwrap();
    assert_eq!(got, a);
    let hole = bounded(c.read(oid, 8192, 4096)).await.unwrap();
    assert!(hole.iter().all(|&x| x == 0), "hole reads as zeros");
    assert_eq!(bounded(c.read(oid, 1 << 20, 5000)).await.unwrap(), b);
    let attr = bounded(c.getattr(oid)).await.unwrap();
    assert_eq!(attr.size, (1 << 20) + 5000);
    assert!(attr.allocated < 1 << 20, "sparse: {} bytes allocated", attr.allocated);

    // Punch a hole: size unchanged, bytes zero.
    let p = bounded(c.punch(oid, PUNCH_HOLE, 0, 4096)).await.unwrap();
    assert_eq!(p.size, (1 << 20) + 5000);
    let z = bounded(c.read(oid, 0, 8192)).await.unwrap();
    assert!(z[..4096].iter().all(|&x| x == 0));
    assert_eq!(&z[4096..], &a[4096..]);
    // Truncate.
    let t = bounded(c.punch(oid, PUNCH_TRUNCATE, 6000, 0)).await.unwrap();
    assert_eq!(t.size, 6000);

    // Setattr: owner and size.
    let s = OstSetattr {
        oid,
        valid: attr_valid::OWNER | attr_valid::SIZE,
        size: 100,
        uid: 7,
        gid: 8,
        ..Default::default()
    };
    let s = bounded(c.setattr(s)).await.unwrap();
    assert_eq!((s.size, s.uid, s.gid), (100, 7, 8));

    // Statfs.
    let st = bounded(c.statfs()).await.unwrap();
    assert!(st.blocks > 0 && st.bavail <= st.bfree && st.objects >= 17);

    // Sync: everything committed.
    let before = oss.server.targets()[0].last_transno();
    let ids = bounded(c.sync()).await.unwrap();
    assert!(ids.last_committed >= before);
    assert_eq!(c.last_committed(), ids.last_committed);

    // Destroy; then the object is gone.
    bounded(c.destroy(oid)).await.unwrap();
    let e = bounded(c.getattr(oid)).await.unwrap_err();
    assert_eq!(e.errno(), 2, "ENOENT");
    // A write to an object never created is refused.
    assert_eq!(bounded(c.write(common::obj(999), 0, b"x")).await.unwrap_err().errno(), 2);

    let text = oss.server.render_metrics();
    for fam in [
        "lustre_write_bytes_total{component=\"ost\",target=\"sheen-OST0000\"} 13192",
        "lustre_stats_total{component=\"ost\",target=\"sheen-OST0000\",operation=\"write\"}",
        "lustre_capacity_kilobytes{",
        "lustre_grant_bytes{",
        "lustre_exports{component=\"ost\",target=\"sheen-OST0000\"} 1",
        "lustre_brw_size_bytes_bucket",
        "lustre_op_latency_seconds_bucket",
    ] {
        assert!(text.contains(fam), "missing {fam} in\n{text}");
    }
    // DISCONNECT: the export and the client's record go (a restart will
    // not wait for this client).
    c.disconnect(common::BOUND).await;
    // The import closes once DISCONNECT is sent; the target handles it
    // just after.
    let exports = || oss.server.with_driver(|d| d.with_target(|t| t.exports().len())).unwrap_or(0);
    bounded(async {
        while exports() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let text = oss.server.render_metrics();
    assert!(text.contains("lustre_exports{component=\"ost\",target=\"sheen-OST0000\"} 0"), "{text}");
    assert!(oss.server.targets()[0].index().clients().unwrap().is_empty(), "the client's record is gone");
    oss.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_disjoint_writers_and_ordered_overlaps() {
    let dir = tempfile::tempdir().unwrap();
    let oss = Oss::start(target_config(&dir.path().join("ost0")), true).await;
    let c1 = Arc::new(oss.client("c1"));
    let c2 = Arc::new(oss.client("c2"));
    bounded(c1.connect()).await.unwrap();
    bounded(c2.connect()).await.unwrap();
    let oid = common::obj(bounded(c1.create(common::SEQ, 1)).await.unwrap().first);
    // Two clients, 16 disjoint 64 KiB chunks each, interleaved, all in flight.
    let chunk = 64 << 10;
    let mut tasks = Vec::new();
    for (ci, c) in [&c1, &c2].into_iter().enumerate() {
        for k in 0..16u64 {
            let c = Arc::clone(c);
            let off = (k * 2 + ci as u64) * chunk as u64;
            tasks.push(tokio::spawn(async move { c.write(oid, off, &pattern(off, chunk)).await }));
        }
    }
    for t in tasks {
        bounded(t).await.unwrap().unwrap();
    }
    for k in 0..32u64 {
        let off = k * chunk as u64;
        assert_eq!(bounded(c1.read(oid, off, chunk as u32)).await.unwrap(), pattern(off, chunk), "chunk {k}");
    }
    // One client, 20 overlapping writes to the same range, all in flight:
    // the last one sent wins.
    let datas: Vec<Vec<u8>> = (0..20u64).map(|k| pattern(1000 + k, chunk)).collect();
    // Start them in order (xids are assigned when a write is first polled).
    let handles: Vec<_> = datas.iter().map(|d| Box::pin(c1.write(oid, 0, d))).collect();
    let results = bounded(futures_join(handles)).await;
    for r in results {
        r.unwrap();
    }
    assert_eq!(bounded(c1.read(oid, 0, chunk as u32)).await.unwrap(), pattern(1019, chunk));
    oss.stop();
}

/// Polls every future once in order (so each takes its xid in order), then
/// waits for all.
async fn futures_join<F: std::future::Future + Unpin>(mut fs: Vec<F>) -> Vec<F::Output> {
    use std::task::Poll;
    let mut out: Vec<Option<F::Output>> = fs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in fs.iter_mut().enumerate() {
            if out[i].is_some() {
                continue;
            }
            match std::pin::Pin::new(f).poll(cx) {
                Poll::Ready(v) => out[i] = Some(v),
                Poll::Pending => pending = true,
            }
        }
        if pending { Poll::Pending } else { Poll::Ready(()) }
    })
    .await;
    out.into_iter().map(|o| o.expect("done")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_bulk_is_detected_retried_and_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let oss = Oss::start(target_config(&dir.path().join("ost0")), true).await;
    let c = oss.client("c1");
    bounded(c.connect()).await.unwrap();
    let oid = common::obj(bounded(c.create(common::SEQ, 1)).await.unwrap().first);
    oss.faults.set(FaultPoint::BulkCorrupt, Trigger::Once);
    let data = pattern(42, 1 << 20);
    bounded(c.write(oid, 0, &data)).await.unwrap();
    let text = oss.server.render_metrics();
    assert!(text.contains("ptlrpc_bulk_checksum_errors_total{service=\"ost\"} 1"), "{text}");
    // A repeated failure: every GET of the first send (1 + bulk_retries)
    // and the first of its resend arrive corrupt. The target answers
    // -EINPROGRESS without doing anything; the import resends at once (a
    // new bulk transfer) and the write lands, no error to the caller.
    let attempts = 1 + ost::server::service_config().bulk_retries;
    oss.faults.set(FaultPoint::BulkCorrupt, Trigger::Times(attempts + 1));
    let resends = c.import().map_or(0, |i| i.import_stats().resends);
    let second = pattern(44, 1 << 20);
    bounded(c.write(oid, 1 << 20, &second)).await.unwrap();
    assert_eq!(c.import().map_or(0, |i| i.import_stats().resends), resends + 1, "one resend");
    let text = oss.server.render_metrics();
    let want = format!("ptlrpc_bulk_checksum_errors_total{{service=\"ost\"}} {}", 2 + attempts);
    assert!(text.contains(&want), "{want} in {text}");
    // A link that corrupts everything: after MAX_IN_PROGRESS_RESENDS the
    // answer is final and the write fails; nothing of it is stored. (A
    // bulk write: larger than a short one.)
    oss.faults.set(FaultPoint::BulkCorrupt, Trigger::EveryN(1));
    let e = bounded(c.write(oid, 2 << 20, &pattern(43, 64 << 10))).await.unwrap_err();
    assert_eq!(e.errno(), 115, "EINPROGRESS after every resend: {e}");
    oss.faults.clear_all();
    // On disk: the first write exactly, nothing of the refused one.
    bounded(c.sync()).await.unwrap();
    let path = common::object_file(&dir.path().join("ost0"), oid);
    let disk = std::fs::read(&path).unwrap();
    assert_eq!(disk.len(), 2 << 20);
    assert!(disk[..1 << 20] == data[..] && disk[1 << 20..] == second[..], "the stored bytes are the client's");
    oss.stop();
}

/// Short I/O: a small write carries its data in the request (no bulk
/// transfer a corrupting link could touch) and lands; with short I/O off
/// on the client the same write goes by bulk and meets the corruption.
/// Requests the OST service answered on lnet's receive path, and those it
/// declined there.
fn inline_counts(oss: &Oss) -> (u64, u64) {
    oss.server
        .with_driver(|d| {
            let m = d.service_metrics().unwrap();
            (m.served_inline.get(), m.inline_declined.get())
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_write_travels_in_its_request() {
    let dir = tempfile::tempdir().unwrap();
    let oss = Oss::start(target_config(&dir.path().join("ost0")), true).await;
    let c = oss.client("c1");
    bounded(c.connect()).await.unwrap();
    let oid = common::obj(bounded(c.create(common::SEQ, 1)).await.unwrap().first);
    oss.faults.set(FaultPoint::BulkCorrupt, Trigger::EveryN(1));
    let small = pattern(7, ptlrpc::wire::ost::SHORT_IO_BYTES);
    let before = inline_counts(&oss);
    let r = bounded(c.write(oid, 100, &small)).await.unwrap();
    assert_eq!(r.size, 100 + small.len() as u64);
    // Served on the receive path: the object's file is open since its CREATE.
    let after = inline_counts(&oss);
    assert_eq!((after.0 - before.0, after.1 - before.1), (1, 0), "a short write is served inline");
    let text = oss.server.render_metrics();
    assert!(!text.contains("ptlrpc_bulk_checksum_errors_total{service=\"ost\"} 1"), "no bulk moved: {text}");
    let bulk_only = oss.client_with("c2", OstClientConfig { short_io_bytes: 0, ..common::client_config() });
    bounded(bulk_only.connect()).await.unwrap();
    let e = bounded(bulk_only.write(oid, 0, &pattern(8, 4096))).await.unwrap_err();
    assert_eq!(e.errno(), 115, "the bulk GET met the corruption: {e}");
    assert!(inline_counts(&oss).1 > after.1, "a bulk write is declined on the receive path");
    oss.faults.clear_all();
    assert!(bounded(c.read(oid, 100, small.len() as u32)).await.unwrap() == small, "read back");
    oss.stop();
}

#[test]
fn identity_is_checked_and_nothing_is_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("ost0");
    let m = Arc::new(ost::metrics::OstMetrics::new());
    // Missing directory.
    assert!(matches!(Ost::open(target_config(&d), Arc::clone(&m)), Err(OstError::Identity { .. })));
    assert!(!d.exists());
    Ost::format(&target_config(&d), "fs-1").unwrap();
    // Formatting again is refused.
    assert!(matches!(Ost::format(&target_config(&d), "fs-1"), Err(OstError::Identity { .. })));
    // Another target's name or index.
    let other = ost::OstConfig::new("sheen-OST0001", 1, &d);
    let e = Ost::open(other, Arc::clone(&m)).unwrap_err();
    assert!(e.to_string().contains("formatted for target sheen-OST0000"), "{e}");
    // Another file system.
    let wrong_fs = ost::OstConfig { fs_uuid: Some("fs-2".into()), ..target_config(&d) };
    assert!(Ost::open(wrong_fs, Arc::clone(&m)).is_err());
    // A non-empty unformatted directory is not formatted over.
    let e2 = dir.path().join("junk");
    std::fs::create_dir(&e2).unwrap();
    std::fs::write(e2.join("precious"), b"keep").unwrap();
    assert!(Ost::format(&target_config(&e2), "fs-1").is_err());
    assert_eq!(std::fs::read(e2.join("precious")).unwrap(), b"keep");
    // A corrupt index: an error, and the label and files stay.
    let idx = d.join("index");
    for entry in walk(&idx) {
        if entry.is_file() {
            std::fs::write(&entry, b"garbage garbage garbage").unwrap();
        }
    }
    let e = Ost::open(target_config(&d), Arc::clone(&m)).unwrap_err();
    assert!(matches!(e, OstError::Index { .. }), "{e}");
    assert!(d.join("LABEL").exists());
    // Opens fine after a good format elsewhere.
    let d2 = dir.path().join("ost1");
    Ost::format(&target_config(&d2), "fs-1").unwrap();
    assert!(Ost::open(target_config(&d2), Arc::clone(&m)).is_ok());
}

fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_create_or_write_is_answered_not_run_twice() {
    let dir = tempfile::tempdir().unwrap();
    let oss = Oss::start(target_config(&dir.path().join("ost0")), true).await;
    let c = oss.client("c1");
    bounded(c.connect()).await.unwrap();
    // The reply to CREATE is lost; the client resends the same xid.
    oss.faults.set(FaultPoint::ReplyDrop, Trigger::Once);
    let r = bounded(c.create(common::SEQ, 4)).await.unwrap();
    assert_eq!((r.first, r.last_id), (1, 4));
    assert!(c.import().unwrap().import_stats().resends >= 1, "the client resent");
    assert_eq!(bounded(c.last_id(common::SEQ)).await.unwrap().last_id, 4, "one range, not two");
    // Same for a write: the resend gets the original reply (same transno).
    let before = oss.server.targets()[0].last_transno();
    oss.faults.set(FaultPoint::ReplyDrop, Trigger::Once);
    let w = bounded(c.write(common::obj(1), 0, &pattern(5, 4096))).await.unwrap();
    assert_eq!(w.version, before + 1, "executed once");
    assert_eq!(oss.server.targets()[0].last_transno(), before + 1);
    oss.stop();
}

/// Bytes past the recorded size after a crash (an uncommitted write whose
/// client never replays it): the size is the committed one, the bytes read
/// as zeros, and a later write past them leaves zeros in the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncommitted_tail_after_a_crash_is_neither_visible_nor_kept() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = target_config(&dir.path().join("ost0"));
    let oss = Oss::start(cfg.clone(), true).await;
    let c = oss.client("c1");
    bounded(c.connect()).await.unwrap();
    let oid = common::obj(bounded(c.create(common::SEQ, 1)).await.unwrap().first);
    let first = pattern(7, 8192);
    bounded(c.write(oid, 0, &first)).await.unwrap();
    bounded(c.sync()).await.unwrap();
    bounded(c.disconnect(common::BOUND)).await;
    oss.stop();
    // What a crash leaves of a write that never committed: the file is
    // longer than the index says.
    let path = common::object_file(&dir.path().join("ost0"), oid);
    let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut f, &[0xee; 8192]).unwrap();
    drop(f);
    let oss = Oss::start(cfg, false).await;
    let c = oss.client("c2");
    bounded(c.connect()).await.unwrap();
    let counts = || inline_counts(&oss);
    let before = counts();
    assert_eq!(bounded(c.getattr(oid)).await.unwrap().size, 8192, "the committed size");
    // The object's file was not open: the glimpse went to a worker (opening
    // it may wait for the disk); once open, a glimpse is answered inline.
    let after = counts();
    assert_eq!(after.1, before.1 + 1, "a glimpse of a closed object is declined on the receive path");
    let past = bounded(c.read(oid, 8192, 8192)).await.unwrap();
    assert!(past.iter().all(|&b| b == 0), "nothing past the size shows");
    assert_eq!(bounded(c.getattr(oid)).await.unwrap().size, 8192);
    assert_eq!(counts().1, after.1, "a glimpse of an open object is not declined");
    assert!(counts().0 > after.0, "a glimpse of an open object is answered inline");
    // A write past the stale bytes: they read as zeros, not as data.
    let third = pattern(9, 4096);
    bounded(c.write(oid, 20480, &third)).await.unwrap();
    assert_eq!(bounded(c.getattr(oid)).await.unwrap().size, 24576);
    let all = bounded(c.read(oid, 0, 24576)).await.unwrap();
    assert!(all[..8192] == first[..]);
    assert!(all[8192..20480].iter().all(|&b| b == 0), "the gap is a hole");
    assert!(all[20480..] == third[..]);
    oss.stop();
}

/// Objects are named by sequence and id: each sequence has its own last
/// id, kept across a restart, and the same id in two sequences is two
/// objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sequence_keeps_its_last_id_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = target_config(&dir.path().join("ost0"));
    let (s1, s2) = (common::SEQ, common::SEQ + 7);
    let oss = Oss::start(cfg.clone(), true).await;
    let c = oss.client("c1");
    bounded(c.connect()).await.unwrap();
    assert_eq!(bounded(c.create(s1, 3)).await.unwrap().first, 1);
    assert_eq!(bounded(c.create(s2, 2)).await.unwrap().first, 1, "a sequence starts at 1");
    bounded(c.write(ptlrpc::wire::OstId::new(s1, 1), 0, &pattern(1, 4096))).await.unwrap();
    bounded(c.write(ptlrpc::wire::OstId::new(s2, 1), 0, &pattern(2, 8192))).await.unwrap();
    assert_eq!(bounded(c.create(0, 1)).await.unwrap_err().errno(), 22, "sequence 0 names nothing (EINVAL)");
    bounded(c.sync()).await.unwrap();
    bounded(c.disconnect(common::BOUND)).await;
    oss.stop();
    let oss = Oss::start(cfg, false).await;
    let c = oss.client("c2");
    bounded(c.connect()).await.unwrap();
    assert_eq!(bounded(c.last_id(s1)).await.unwrap().last_id, 3);
    assert_eq!(bounded(c.last_id(s2)).await.unwrap().last_id, 2);
    assert_eq!(bounded(c.last_id(s2 + 1)).await.unwrap().last_id, 0, "a sequence never used");
    assert_eq!(bounded(c.getattr(ptlrpc::wire::OstId::new(s1, 1))).await.unwrap().size, 4096);
    assert_eq!(bounded(c.getattr(ptlrpc::wire::OstId::new(s2, 1))).await.unwrap().size, 8192);
    assert_eq!(bounded(c.create(s2, 1)).await.unwrap().first, 3, "after the sequence's own last id");
    assert_eq!(bounded(c.create(s1, 1)).await.unwrap().first, 4);
    oss.stop();
}

/// A commit of more objects than `SYNC_EACH_MAX` flushes the target's file
/// system once instead of each object: a SYNC after writes to many
/// objects returns with them committed, and each reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_of_many_objects_flushes_them_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // No timed commit: the SYNC's commit has every object.
    let cfg = OstConfig { commit_interval: Duration::from_secs(600), ..target_config(&dir.path().join("ost0")) };
    let oss = Oss::start(cfg, true).await;
    let c = oss.client("c1");
    bounded(c.connect()).await.unwrap();
    let n = ost::target::SYNC_EACH_MAX as u64 * 3;
    let first = bounded(c.create(common::SEQ, n as u32)).await.unwrap().first;
    for i in 0..n {
        bounded(c.write(common::obj(first + i), 0, &pattern(i, 4096))).await.unwrap();
    }
    let ids = bounded(c.sync()).await.unwrap();
    assert!(ids.last_committed > 0);
    for i in 0..n {
        assert_eq!(bounded(c.read(common::obj(first + i), 0, 4096)).await.unwrap(), pattern(i, 4096));
    }
    oss.stop();
}
