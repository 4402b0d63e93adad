//! Shared by the process tests: a `sheen-mds` child process on tcp
//! loopback, a client lnet node, bounded RPCs (plain clients for the MGS,
//! imports for the MDT, which runs on the target framework) and a
//! /metrics scrape.
//! Every wait is bounded; nothing sleeps to wait.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use lnet::{Lnet, LnetConfig, NetConfig, Nid, TcpConfig};
use ptlrpc::driver::{Client, ClientConfig, ImportDriver, ImportRpcError, RpcReply};
use ptlrpc::fault::FaultInjector;
use ptlrpc::import::{ImportConfig, ReqKind};
use ptlrpc::pinger::PingSettings;
use ptlrpc::portals::{MDS_REQUEST_PORTAL, MGS_REQUEST_PORTAL};
use ptlrpc::wire::mds::{Creds, GetInfoReply, GetInfoReq, MdsReq};
use ptlrpc::wire::{ConnectData, Header, Op, WireBody, WireDecode, connect_flags};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const BOUND: Duration = Duration::from_secs(30);
pub const PORT: u16 = 7999;
/// The MDT's obd_timeout in the tests (recovery waits up to 3x for clients).
pub const OBD_TIMEOUT_S: f64 = 4.0;

/// A running `sheen-mds` (killed if the test panics).
pub struct Mds {
    pub child: Option<Child>,
    pub nid: Nid,
    pub admin: String,
    pub data: PathBuf,
}

pub fn config(net: u8, data: &Path, commit_ms: u64) -> String {
    format!(
        r#"fsname = "sheen"
data_dir = "{}"
admin_addr = "127.0.0.1:0"
[lnet]
nets = [{{ lnd = "tcp", addr = "127.{net}.{o}.1", port = {PORT} }}]
[lnet.tunables]
transaction_timeout = 5
[mgs]
[mdt]
index = 0
commit_interval_ms = {commit_ms}
obd_timeout_s = {OBD_TIMEOUT_S}
precreate_batch = 32
ost_seq_width = 100
"#,
        data.display(),
        o = pid_octet(),
    )
}

/// The third address octet of this test process (loopback addresses
/// derived from the pid, so concurrent runs of a test file never collide).
pub fn pid_octet() -> u8 {
    (std::process::id() % 250) as u8 + 1
}

impl Mds {
    /// Starts `sheen-mds run` and waits (bounded) for its ready line.
    pub fn start(net: u8, data: &Path, commit_ms: u64) -> Mds {
        std::fs::create_dir_all(data).unwrap();
        let cfg = data.join("mds.toml");
        std::fs::write(&cfg, config(net, data, commit_ms)).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(data.join("mds.log")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sheen-mds"))
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn sheen-mds");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = rx.recv_timeout(BOUND).unwrap_or_else(|_| {
            let log = std::fs::read_to_string(data.join("mds.log")).unwrap_or_default();
            panic!("sheen-mds not ready within {BOUND:?}; log:\n{log}")
        });
        assert!(line.starts_with("sheen-mds ready"), "{line}");
        let field = |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(k)).unwrap().to_string();
        Mds {
            child: Some(child),
            nid: field("nid=").parse().unwrap(),
            admin: field("admin="),
            data: data.to_path_buf(),
        }
    }

    /// SIGTERM and wait (bounded) for a clean exit.
    pub fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        let st = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(st.success());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = rx.recv_timeout(BOUND).expect("sheen-mds exits after SIGTERM").unwrap();
        assert!(status.success(), "exit status {status}");
    }

    /// kill -9.
    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// GET /metrics.
    pub async fn metrics(&self) -> String {
        let mut s = tokio::net::TcpStream::connect(&self.admin).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(BOUND, s.read_to_string(&mut out)).await.unwrap().unwrap();
        out
    }
}

impl Drop for Mds {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `sheen-mds check` on a stopped MDT's store; returns (clean, json).
pub fn check(data: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sheen-mds"))
        .args(["check", "--json", "--store"])
        .arg(data.join("mdt0"))
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

pub async fn client_node(net: u8, host: u8) -> Lnet {
    let cfg = LnetConfig {
        nets: vec![NetConfig::Tcp(TcpConfig {
            addr: Ipv4Addr::new(127, net, pid_octet(), host),
            port: PORT,
            ..TcpConfig::default()
        })],
        ..LnetConfig::default()
    };
    Lnet::start(cfg).await.unwrap()
}

/// A connected import of the MDT at `server` as client `uuid`.
pub async fn mds_import(l: &Lnet, server: Nid, uuid: &str) -> ImportDriver {
    let mut cfg = ImportConfig::new(uuid, Op::MdsConnect, Op::MdsDisconnect, MDS_REQUEST_PORTAL, vec![]);
    cfg.connect_data = ConnectData {
        flags: connect_flags::VERSION | connect_flags::TRANSNO | connect_flags::MAX_EASIZE,
        version: 1,
        ..ConnectData::default()
    };
    let obd = Duration::from_secs_f64(OBD_TIMEOUT_S);
    cfg.ping = PingSettings { obd_timeout: obd, ping_interval_uncommitted: obd / 4, ..PingSettings::default() };
    cfg.backoff_min = Duration::from_millis(100);
    cfg.backoff_max = Duration::from_millis(500);
    cfg.max_requests = 4096;
    // As the mdc: several modifying requests in flight.
    cfg.max_mod_rpcs = 8;
    let imp = ImportDriver::start(l, vec![server], cfg, 256 << 10).expect("import starts");
    tokio::time::timeout(BOUND, imp.connect()).await.expect("connect within bound").expect("import FULL");
    imp
}

/// A connected import of OST `target` at `server` as client `uuid`.
pub async fn ost_import(l: &Lnet, server: Nid, target: &str, uuid: &str) -> ImportDriver {
    let mut cfg =
        ImportConfig::new(uuid, Op::OstConnect, Op::OstDisconnect, ptlrpc::portals::OST_REQUEST_PORTAL, vec![]);
    cfg.connect_data =
        ConnectData { flags: connect_flags::VERSION, version: 1, target: target.into(), ..ConnectData::default() };
    let imp = ImportDriver::start(l, vec![server], cfg, 16 << 10).expect("import starts");
    tokio::time::timeout(BOUND, imp.connect()).await.expect("connect within bound").expect("import FULL");
    imp
}

/// A connected MDT import with a UUID unique to this process and `l`.
pub async fn mds_client(l: &Lnet, server: Nid) -> ImportDriver {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let uuid = format!("test-{}-{}-{}", std::process::id(), l.nid(), N.fetch_add(1, Ordering::Relaxed));
    mds_import(l, server, &uuid).await
}

pub fn mgs_client(l: &Lnet, server: Nid) -> Client {
    Client::new(l, server, MGS_REQUEST_PORTAL, ClientConfig::default(), Arc::new(FaultInjector::new(2)))
}

/// A reply: from a plain client or from an import.
#[derive(Debug)]
pub enum Reply {
    Plain(RpcReply),
    Import(Header, Vec<u8>),
}

impl Reply {
    pub fn header(&self) -> &Header {
        match self {
            Reply::Plain(r) => r.header(),
            Reply::Import(h, _) => h,
        }
    }

    pub fn body<T>(&self) -> Result<T, String>
    where
        T: WireDecode,
    {
        match self {
            Reply::Plain(r) => r.body::<T>().map_err(|e| e.to_string()),
            Reply::Import(_, b) => {
                let mut a = rkyv::util::AlignedVec::<16>::new();
                a.extend_from_slice(b);
                rkyv::from_bytes::<T, rkyv::rancor::Error>(&a).map_err(|e| e.to_string())
            }
        }
    }
}

/// A failed call: the errno (positive) and why.
#[derive(Debug, Clone)]
pub struct CallError {
    pub errno: i32,
    pub why: String,
}

impl CallError {
    pub fn errno(&self) -> i32 {
        self.errno
    }
}

/// What sends a request: a plain client (MGS) or an import (MDT).
pub trait Caller {
    fn call<B>(&self, op: Op, body: &B) -> impl Future<Output = Result<Reply, CallError>> + Send + 'static
    where
        B: WireBody;
}

impl Caller for Client {
    fn call<B>(&self, op: Op, body: &B) -> impl Future<Output = Result<Reply, CallError>> + Send + 'static
    where
        B: WireBody,
    {
        let f = self.start(op, body);
        async move { f.await.map(Reply::Plain).map_err(|e| CallError { errno: e.errno(), why: e.to_string() }) }
    }
}

impl Caller for ImportDriver {
    fn call<B>(&self, op: Op, body: &B) -> impl Future<Output = Result<Reply, CallError>> + Send + 'static
    where
        B: WireBody,
    {
        let kind = if matches!(op, Op::MdsReint | Op::MdsClose) { ReqKind::Modify } else { ReqKind::Read };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(body).map(|b| b.to_vec());
        let imp = self.clone();
        async move {
            let bytes = bytes.map_err(|e| CallError { errno: 22, why: e.to_string() })?;
            // Creates (and opens) replay with what their reply said.
            let res = if op == Op::MdsReint {
                imp.rpc_raw_with_fixup(op, kind, bytes, ptlrpc::wire::mds::reint_replay_fixup).await
            } else {
                imp.rpc_raw(op, kind, bytes).await
            };
            match res {
                Ok(r) => Ok(Reply::Import(r.header, r.body)),
                Err(ImportRpcError::Server { errno, .. }) => Err(CallError { errno, why: format!("-{errno}") }),
                Err(e) => Err(CallError { errno: 5, why: e.to_string() }),
            }
        }
    }
}

/// Whether `op`'s body travels as `MdsReq` (with the caller's credentials).
pub fn carries_creds(op: Op) -> bool {
    matches!(op, Op::MdsReint | Op::MdsGetattr | Op::MdsGetattrName | Op::MdsGetxattr)
}

/// An RPC bounded by `bound`; a body that carries credentials
/// ([`carries_creds`]) is sent as root's.
pub async fn rpc<C: Caller, B>(c: &C, op: Op, body: &B, bound: Duration) -> Result<Reply, CallError>
where
    B: Clone + WireBody,
    MdsReq<B>: WireBody,
{
    let r = if carries_creds(op) {
        let wrapped = MdsReq::new(Creds::ROOT, body.clone());
        tokio::time::timeout(bound, c.call(op, &wrapped)).await
    } else {
        tokio::time::timeout(bound, c.call(op, body)).await
    };
    match r {
        Ok(r) => r,
        Err(_) => Err(CallError { errno: 110, why: format!("{op:?}: no reply within {bound:?}") }),
    }
}

/// The errno of a failed RPC (0 on success).
pub fn errno_of(r: &Result<Reply, CallError>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.errno(),
    }
}

/// Waits (bounded, server-side) until the MDT applied `n` config records.
pub async fn mdt_applied<C: Caller>(c: &C, n: u64) -> GetInfoReply {
    let req = GetInfoReq { key: "config_applied".into(), at_least: n, wait_ms: 5000 };
    let r: GetInfoReply = rpc(c, Op::MdsGetInfo, &req, BOUND).await.unwrap().body().unwrap();
    assert!(r.value >= n, "MDT applied {} of {n} records", r.value);
    r
}

/// The `sheen-oss` binary (built from this workspace if it is not beside
/// `sheen-mds`).
pub fn sheen_oss() -> PathBuf {
    let mds = PathBuf::from(env!("CARGO_BIN_EXE_sheen-mds"));
    let bin = mds.with_file_name("sheen-oss");
    if !bin.exists() {
        let target_dir = mds.parent().and_then(Path::parent).unwrap();
        let st = Command::new(env!("CARGO"))
            .args(["build", "-p", "ost", "--bin", "sheen-oss", "--target-dir"])
            .arg(target_dir)
            .arg("--manifest-path")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
            .status()
            .unwrap();
        assert!(st.success(), "building sheen-oss");
    }
    bin
}

/// A running `sheen-oss` with one target (killed on drop).
pub struct Oss(pub Child, pub Nid);

impl Drop for Oss {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Formats and starts a `sheen-oss` with OST `index` on 127.NET.P.(10+index),
/// registering with the MGS at `mgs`; waits for its ready line.
pub fn start_oss(bin: &Path, net: u8, dir: &Path, index: u32, mgs: Nid) -> Oss {
    let cfg = dir.join(format!("oss{index}.toml"));
    std::fs::write(
        &cfg,
        format!(
            r#"fs_uuid = "sheen-fs"
mgs = "{mgs}"
[lnet]
nets = [{{ lnd = "tcp", addr = "127.{net}.{}.{}", port = {PORT} }}]
[[targets]]
name = "sheen-OST{index:04x}"
index = {index}
dir = "{}"
commit_interval = 0.2
"#,
            pid_octet(),
            10 + index,
            dir.join(format!("ost{index}")).display()
        ),
    )
    .unwrap();
    let st = Command::new(bin).arg("format").arg("--config").arg(&cfg).stdout(Stdio::null()).status().unwrap();
    assert!(st.success(), "sheen-oss format");
    let log = std::fs::File::create(dir.join(format!("oss{index}.log"))).unwrap();
    let mut child = Command::new(bin).arg("--config").arg(&cfg).stdout(Stdio::piped()).stderr(log).spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let line = rx.recv_timeout(BOUND).expect("sheen-oss ready");
    let nid = line.strip_prefix("ready ").expect("ready line").parse().unwrap();
    Oss(child, nid)
}

/// A plain create (or mkdir, by `mode`) of `parent/name` as root, FID and
/// layout chosen by the MDT.
pub fn create(parent: ptlrpc::wire::Fid, name: String, mode: u32) -> ptlrpc::wire::mds::ReintReq {
    ptlrpc::wire::mds::ReintReq::plain_create(parent, name, mode, None)
}
