//! The import and target drivers for real: the key-value target over tcp
//! on loopback, in this process and as a `kv-target` child process that is
//! killed with -9 while clients write and restarted on the same directory.
//!
//! Checked: every client recovers (FULL, never evicted), nothing
//! acknowledged is lost (no lost replay, every acknowledged value read
//! back), nothing executes twice (the store's committed journal holds each
//! (client, xid) once), and the recovery metrics. Recovery time (restart to
//! every client FULL) is printed as a `--json`-style line. A silent client
//! is evicted after 6 ping intervals, a pinging one never.
//!
//! Every wait is bounded; nothing sleeps to wait. `benches/recovery.rs`
//! runs the same kill -9 scenarios as a benchmark.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use lnet::{Lnet, LnetConfig, NetConfig, Nid, TcpConfig, Tunables};
use parking_lot::Mutex;
use ptlrpc::at::AtSettings;
use ptlrpc::driver::kv::{KV_GET, KV_PORTAL, KV_PUT, KvReq, KvService, kv_import_config, kv_value};
use ptlrpc::driver::{FileStore, ImportDriver, ServiceConfig, TargetDriver, TargetDriverConfig, file_store};
use ptlrpc::fault::FaultInjector;
use ptlrpc::import::{ImportStateKind, ReqKind};
use ptlrpc::pinger::PingSettings;
use ptlrpc::target::{EvictReason, TargetConfig, TargetEvent};
use ptlrpc::wire::{Transno, Xid};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::watch;

const PORT: u16 = 7996;
const BOUND: Duration = Duration::from_secs(30);
const OBD_TIMEOUT: Duration = Duration::from_secs(2);

/// Two addresses (server, client) unique to this test in this process.
fn addrs() -> (Ipv4Addr, Ipv4Addr) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 100;
    let p = std::process::id();
    let (a, b) = (160 + (p >> 8) as u8 % 64, p as u8);
    (Ipv4Addr::new(127, a, b, (2 * n + 1) as u8), Ipv4Addr::new(127, a, b, (2 * n + 2) as u8))
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sheen-kv-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

async fn lnet_at(addr: Ipv4Addr) -> Lnet {
    Lnet::start(LnetConfig {
        nets: vec![NetConfig::Tcp(TcpConfig { addr, port: PORT, ..TcpConfig::default() })],
        tunables: Tunables { transaction_timeout: Duration::from_secs(2), ..Tunables::default() },
    })
    .await
    .expect("lnet starts")
}

fn ping_settings() -> PingSettings {
    PingSettings { obd_timeout: OBD_TIMEOUT, ping_interval_uncommitted: OBD_TIMEOUT / 4, ..PingSettings::default() }
}

/// Client AT: ~1.45 s request timeouts (at_min 1 s), so a dead target is
/// noticed in about a second and held replays rarely time out.
fn client_at() -> AtSettings {
    AtSettings {
        at_min: Duration::from_secs(1),
        at_max: Duration::from_secs(10),
        at_history: Duration::from_secs(10),
        at_early_margin: Duration::from_millis(500),
        at_extra: Duration::from_secs(1),
        timeout_slack: Duration::from_millis(200),
    }
}

fn import(lnet: &Lnet, target: Nid, uuid: &str) -> ImportDriver {
    let mut cfg = kv_import_config(uuid, 1);
    cfg.ping = ping_settings();
    cfg.at = client_at();
    cfg.backoff_min = Duration::from_millis(100);
    cfg.backoff_max = Duration::from_millis(400);
    cfg.max_requests = 4096;
    cfg.seed = u64::from(std::process::id()) ^ uuid.len() as u64;
    ImportDriver::start(lnet, vec![target], cfg, 8 << 10).expect("import driver starts")
}

async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, f).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

async fn put(imp: &ImportDriver, key: u32, value: u64) -> Result<(Xid, Transno), String> {
    let r = bounded("put", imp.rpc(KV_PUT, ReqKind::Modify, &KvReq::Put { key, value })).await;
    r.map(|r| (r.xid, r.header.transno)).map_err(|e| format!("{} put {key}: {e}", imp.client_uuid()))
}

async fn get(imp: &ImportDriver, key: u32) -> u64 {
    let r = bounded("get", imp.rpc(KV_GET, ReqKind::Read, &KvReq::Get { key })).await.expect("get");
    kv_value(&r.body).expect("an 8-byte value")
}

// ---------------------------------------------------------------------------
// The child process.

struct KvChild {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    stdin: ChildStdin,
    nid: Nid,
    ready_at: Instant,
}

impl KvChild {
    async fn spawn(addr: Ipv4Addr, dir: &Path) -> KvChild {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kv-target"))
            .args(["--addr", &addr.to_string(), "--port", &PORT.to_string()])
            .arg("--dir")
            .arg(dir)
            .args(["--obd-timeout-ms", &OBD_TIMEOUT.as_millis().to_string()])
            .args(["--commit-interval-ms", "200", "--at-min-ms", "1000", "--lnet-timeout-ms", "2000"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("kv-target spawns");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut c = KvChild { child, lines, stdin, nid: "0@lo".parse().unwrap(), ready_at: Instant::now() };
        let ready = c.line_starting("READY ").await;
        c.nid = ready.split_whitespace().nth(1).unwrap().parse().unwrap();
        c.ready_at = Instant::now();
        c
    }

    async fn line_starting(&mut self, prefix: &str) -> String {
        bounded(prefix, async {
            loop {
                let l = self.lines.next_line().await.expect("child stdout").expect("child exited");
                if l.starts_with(prefix) {
                    return l;
                }
            }
        })
        .await
    }

    /// Reads lines until an `EVENT` named `name`; returns its JSON.
    async fn event(&mut self, name: &str) -> serde_json::Value {
        loop {
            let l = self.line_starting("EVENT ").await;
            let v: serde_json::Value = serde_json::from_str(&l["EVENT ".len()..]).unwrap();
            assert_ne!(v["event"], "evicted", "unexpected eviction: {v}");
            if v["event"] == name {
                return v;
            }
        }
    }

    async fn command(&mut self, cmd: &str, answer: &str) -> String {
        self.stdin.write_all(format!("{cmd}\n").as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
        self.line_starting(answer).await
    }

    async fn metrics(&mut self) -> String {
        self.stdin.write_all(b"metrics\n").await.unwrap();
        self.stdin.flush().await.unwrap();
        bounded("metrics", async {
            let mut text = String::new();
            loop {
                let l = self.lines.next_line().await.unwrap().expect("child exited");
                if l == "END METRICS" {
                    return text;
                }
                text.push_str(&l);
                text.push('\n');
            }
        })
        .await
    }

    async fn kill9(mut self) {
        self.child.start_kill().expect("SIGKILL");
        bounded("child exit", self.child.wait()).await.unwrap();
    }
}

// ---------------------------------------------------------------------------
// Writers.

#[derive(Debug, Clone, Copy)]
struct Acked {
    xid: Xid,
    transno: Transno,
    key: u32,
    value: u64,
}

struct Writer {
    imp: ImportDriver,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
    count: watch::Receiver<usize>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Writer {
    fn start(imp: ImportDriver, c: u32) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (tx, count) = watch::channel(0);
        let (i2, s2, a2) = (imp.clone(), Arc::clone(&stop), Arc::clone(&acked));
        let task = tokio::spawn(async move {
            let mut i = 0u32;
            while !s2.load(Ordering::Acquire) {
                let (key, value) = (c * 1_000_000 + i, u64::from(i) * 7 + u64::from(c));
                let (xid, transno) = put(&i2, key, value).await?;
                a2.lock().push(Acked { xid, transno, key, value });
                i += 1;
                tx.send_replace(i as usize);
            }
            Ok(())
        });
        Writer { imp, stop, acked, count, task }
    }

    async fn reach(&mut self, n: usize) {
        let uuid = self.imp.client_uuid().to_string();
        if bounded(&format!("{uuid} reaches {n} puts"), self.count.wait_for(|c| *c >= n)).await.is_err() {
            let why = bounded("writer ends", &mut self.task).await;
            panic!("{uuid}: writer stopped before {n} puts: {why:?}");
        }
    }

    /// Keeps writing until the target has reported at least one of this
    /// writer's updates committed (so the kill finds committed and
    /// uncommitted acknowledged updates alike).
    async fn reach_committed(&mut self) {
        loop {
            let first = self.acked.lock().first().map(|a| a.transno);
            if first.is_some_and(|t| self.imp.last_committed() >= t) {
                return;
            }
            let n = self.done();
            self.reach(n + 1).await;
        }
    }

    /// Acknowledged updates the target reported committed.
    fn committed(&self) -> usize {
        let lc = self.imp.last_committed();
        self.acked.lock().iter().filter(|a| a.transno <= lc).count()
    }

    fn done(&self) -> usize {
        *self.count.borrow()
    }

    async fn stop(self) -> (ImportDriver, Vec<Acked>) {
        self.stop.store(true, Ordering::Release);
        bounded("writer stops", self.task).await.unwrap().expect("every put succeeds");
        let acked = self.acked.lock().clone();
        (self.imp, acked)
    }
}

/// Every acknowledged put is readable, none was lost, and the committed
/// journal holds each (client, xid) at most once and every acked xid.
async fn check(dir: &Path, results: &[(ImportDriver, Vec<Acked>)]) -> usize {
    let journal = file_store::read_journal(dir).expect("journal reads");
    let mut seen = BTreeSet::new();
    for e in &journal {
        assert!(seen.insert((e.uuid.clone(), e.xid)), "{} xid {} executed twice", e.uuid, e.xid);
    }
    for (imp, acked) in results {
        assert_eq!(imp.stats().lost_replays, 0, "{}: replies lost", imp.client_uuid());
        assert!(imp.take_lost().is_empty());
        assert_eq!(imp.state(), ImportStateKind::Full);
        for a in acked {
            assert!(
                seen.contains(&(imp.client_uuid().to_string(), a.xid)),
                "{} xid {} missing",
                imp.client_uuid(),
                a.xid
            );
            assert_eq!(get(imp, a.key).await, a.value, "{} key {}", imp.client_uuid(), a.key);
        }
    }
    journal.iter().filter(|e| e.replay).count()
}

fn metric(text: &str, name: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(name) && l.contains(r#"target="kv0""#))
        .unwrap_or_else(|| panic!("{name} missing in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// kill -9 of the target while three clients write, restart on the same
/// directory; `imperative`: the clients are told (as the MGS will), else
/// they find out by themselves (request deadlines, the pinger) and one of
/// them is idle at the kill, so only its pinger notices.
pub async fn kill9_and_recover(name: &str, imperative: bool) -> Duration {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (saddr, caddr) = addrs();
    let dir = tmpdir(name);
    let child = KvChild::spawn(saddr, &dir).await;
    let lnet = lnet_at(caddr).await;
    let imps: Vec<ImportDriver> = (0..3).map(|i| import(&lnet, child.nid, &format!("{name}-c{i}"))).collect();
    for imp in &imps {
        bounded("connect", imp.connect()).await.expect("connects");
    }
    let mut writers: Vec<Writer> = imps.iter().enumerate().map(|(i, m)| Writer::start(m.clone(), i as u32)).collect();
    for w in &mut writers {
        w.reach(40).await;
        w.reach_committed().await;
    }
    let mut idle = None;
    if !imperative {
        idle = Some(writers.pop().unwrap().stop().await);
    }
    let before_kill: Vec<usize> = writers.iter().map(Writer::done).collect();
    let committed_at_kill: usize = writers.iter().map(Writer::committed).sum();
    let acked_at_kill: usize = before_kill.iter().sum();
    child.kill9().await;
    if !imperative {
        // Detection: deadlines for the writers, the pinger for the idle one.
        for imp in &imps {
            bounded("notices the dead target", imp.wait_state(|k| k != ImportStateKind::Full)).await;
        }
    }
    let restart = Instant::now();
    let mut child = KvChild::spawn(saddr, &dir).await;
    if imperative {
        for imp in &imps {
            imp.handle_target_restarted();
        }
    }
    for imp in &imps {
        bounded("FULL again", imp.wait_state(|k| k == ImportStateKind::Full)).await;
    }
    let all_full = restart.elapsed();
    let ready_to_full = child.ready_at.elapsed();
    let done = child.event("recovery_done").await;
    assert_eq!(done["recovered"], 3, "{done}");
    assert_eq!(done["evicted"], 0, "{done}");
    for (w, n) in writers.iter_mut().zip(&before_kill) {
        w.reach(n + 20).await;
    }
    let mut results = Vec::new();
    for w in writers {
        results.push(w.stop().await);
    }
    results.extend(idle);
    child.command("sync", "SYNCED").await;
    let replays = check(&dir, &results).await;
    let m = child.metrics().await;
    assert_eq!(metric(&m, "lustre_recovery_status_recovering"), 0.0);
    assert_eq!(metric(&m, "lustre_recovery_status_completed_clients"), 3.0);
    assert_eq!(metric(&m, "lustre_recovery_status_evicted_clients"), 0.0);
    let target_s = metric(&m, "lustre_recovery_status_duration_seconds");
    assert!(target_s > 0.0);
    let soft = (OBD_TIMEOUT * 3).as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "bench": format!("ptlrpc.kv.recovery.{}", if imperative { "imperative" } else { "pinger" }),
            "value": all_full.as_secs_f64(), "unit": "s",
            "baseline": "recovery_window_soft", "baseline_value": soft, "ratio": all_full.as_secs_f64() / soft,
            "ready_to_all_full_s": ready_to_full.as_secs_f64(), "target_recovery_s": target_s,
            "clients": 3, "replays": replays,
            "acked_at_kill": acked_at_kill, "committed_at_kill": committed_at_kill,
        })
    );
    for imp in &imps {
        imp.close();
    }
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
    all_full
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_with_imperative_recovery() {
    kill9_and_recover("imperative", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_with_pinger_recovery() {
    kill9_and_recover("pinger", false).await;
}

// ---------------------------------------------------------------------------
// In this process: the target driver and the evictor.

fn start_target(lnet: &Lnet, dir: &Path, obd_timeout: Duration) -> TargetDriver<KvService> {
    let cfg = TargetDriverConfig {
        name: "kv0".into(),
        component: "kv".into(),
        service: ServiceConfig { at: client_at(), ..ServiceConfig::new("kv0", KV_PORTAL) },
        target: TargetConfig {
            ping: PingSettings { obd_timeout, ping_interval_uncommitted: obd_timeout / 4, ..PingSettings::default() },
            commit_interval: Duration::from_millis(100),
            ..TargetConfig::default()
        },
        seed: 7,
    };
    let store = FileStore::open(dir).expect("store opens");
    TargetDriver::start(lnet, cfg, KvService, store, Arc::new(FaultInjector::new(1))).expect("target starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_and_commit_in_process() {
    let (saddr, caddr) = addrs();
    let dir = tmpdir("inproc");
    let server = lnet_at(saddr).await;
    let target = start_target(&server, &dir, OBD_TIMEOUT);
    let client = lnet_at(caddr).await;
    let imp = import(&client, server.nid(), "inproc-c0");
    bounded("connect", imp.connect()).await.unwrap();
    let (_, t1) = put(&imp, 1, 11).await.unwrap();
    let (_, t2) = put(&imp, 2, 22).await.unwrap();
    assert!(t2 > t1 && t1 > Transno(0), "{t1:?} {t2:?}");
    assert_eq!((get(&imp, 1).await, get(&imp, 2).await, get(&imp, 3).await), (11, 22, 0));
    // Commits advance last_committed; the replay list empties as replies
    // (and pings) report it.
    bounded("commit reaches the client", async {
        while imp.last_committed() < t2 || imp.replay_len() > 0 {
            get(&imp, 1).await;
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(imp.generation(), 1);
    assert!(target.render_metrics().contains("lustre_recovery_status_recovering"));
    imp.close();
    target.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_evicted_a_pinging_one_never() {
    // obd_timeout 1 s: pings every 250 ms, eviction after 1.5 s of silence.
    let obd = Duration::from_secs(1);
    let (saddr, caddr) = addrs();
    let dir = tmpdir("evict");
    let server = lnet_at(saddr).await;
    let target = start_target(&server, &dir, obd);
    let mut events = target.subscribe();
    let client = lnet_at(caddr).await;
    let mk = |uuid: &str| {
        let mut cfg = kv_import_config(uuid, 1);
        cfg.ping = PingSettings { obd_timeout: obd, ping_interval_uncommitted: obd / 4, ..PingSettings::default() };
        cfg.at = client_at();
        ImportDriver::start(&client, vec![server.nid()], cfg, 8 << 10).unwrap()
    };
    let (silent, pinging) = (mk("evict-silent"), mk("evict-pinging"));
    bounded("connect", silent.connect()).await.unwrap();
    bounded("connect", pinging.connect()).await.unwrap();
    put(&silent, 1, 1).await.unwrap();
    put(&pinging, 2, 2).await.unwrap();
    let went_silent = Instant::now();
    silent.abort();
    let ev = bounded("eviction", async {
        loop {
            match events.recv().await {
                Ok(TargetEvent::Evicted { uuid, reason }) => return (uuid, reason, went_silent.elapsed()),
                Ok(_) => {}
                Err(e) => panic!("events: {e}"),
            }
        }
    })
    .await;
    assert_eq!((ev.0.as_str(), ev.1), ("evict-silent", EvictReason::PingTimeout));
    let evict_after = obd / 4 * 6;
    assert!(ev.2 >= evict_after - Duration::from_millis(300), "evicted after {:?}", ev.2);
    assert!(ev.2 < evict_after * 3, "evicted after {:?}", ev.2);
    // The pinging client was just as quiet but for its pings: still there,
    // never disconnected, and its requests still go through.
    assert!(target.with_target(|t| t.exports().get("evict-pinging").is_some()));
    assert_eq!(pinging.state(), ImportStateKind::Full);
    assert_eq!(pinging.generation(), 1);
    assert_eq!(pinging.history().count(ImportStateKind::Full, ImportStateKind::Discon), 0);
    put(&pinging, 2, 3).await.unwrap();
    let label = target.label_at(0).expect("one target");
    assert_eq!(target.metrics().evicted(label, EvictReason::PingTimeout), 1);
    assert!(events.try_recv().is_err(), "no other eviction");
    pinging.close();
    target.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered_on_the_receive_path_unless_the_target_is_busy() {
    let (saddr, caddr) = addrs();
    let dir = tmpdir("inline-ping");
    let server = lnet_at(saddr).await;
    let target = Arc::new(start_target(&server, &dir, OBD_TIMEOUT));
    let client = lnet_at(caddr).await;
    let imp = import(&client, server.nid(), "inline-c0");
    bounded("connect", imp.connect()).await.unwrap();
    let ping = || async { bounded("ping", imp.rpc_raw(ptlrpc::wire::Op::ObdPing, ReqKind::Read, Vec::new())).await };
    for _ in 0..5 {
        ping().await.expect("ping answered");
    }
    let svc = || target.service_metrics().expect("running");
    assert!(svc().served_inline.get() >= 5, "served inline: {}", svc().served_inline.get());
    assert_eq!(svc().inline_declined.get(), 0);
    let text = target.render_metrics();
    assert!(text.contains(r#"ptlrpc_requests_inline_total{service="kv0"}"#), "{text}");
    // The target's lock held elsewhere: the receive path does not wait for
    // it; the ping goes to the high-priority worker, which answers once
    // the lock is free.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (locked_tx, locked_rx) = tokio::sync::oneshot::channel();
    let holder = {
        let target = Arc::clone(&target);
        tokio::task::spawn_blocking(move || {
            target.with_target(|_| {
                let _ = locked_tx.send(());
                held.recv_timeout(BOUND).expect("released");
            });
        })
    };
    bounded("lock held", locked_rx).await.unwrap();
    let pinged = tokio::spawn({
        let imp = imp.clone();
        async move { imp.rpc_raw(ptlrpc::wire::Op::ObdPing, ReqKind::Read, Vec::new()).await }
    });
    bounded("declined on the receive path", async {
        while svc().inline_declined.get() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(!pinged.is_finished(), "answered while the target was locked");
    release.send(()).unwrap();
    bounded("holder", holder).await.unwrap();
    bounded("ping after the lock", pinged).await.unwrap().expect("answered by a worker");
    assert_eq!(imp.state(), ImportStateKind::Full);
    imp.close();
    Arc::into_inner(target).expect("one owner").shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
