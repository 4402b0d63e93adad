//! Shared by the process tests: a `sheen-mds` child process on tcp
//! loopback, a client lnet node, bounded RPCs and a /metrics scrape.
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
use ptlrpc::driver::{Client, ClientConfig, RpcError, RpcReply};
use ptlrpc::fault::FaultInjector;
use ptlrpc::portals::{MDS_REQUEST_PORTAL, MGS_REQUEST_PORTAL};
use ptlrpc::wire::Op;
use ptlrpc::wire::mds::{GetInfoReply, GetInfoReq};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const BOUND: Duration = Duration::from_secs(30);
pub const PORT: u16 = 7999;

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
nets = [{{ lnd = "tcp", addr = "127.{net}.0.1", port = {PORT} }}]
[lnet.tunables]
transaction_timeout = 5
[mgs]
[mdt]
index = 0
commit_interval_ms = {commit_ms}
"#,
        data.display()
    )
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
            addr: Ipv4Addr::new(127, net, 0, host),
            port: PORT,
            ..TcpConfig::default()
        })],
        ..LnetConfig::default()
    };
    Lnet::start(cfg).await.unwrap()
}

pub fn mds_client(l: &Lnet, server: Nid) -> Client {
    Client::new(l, server, MDS_REQUEST_PORTAL, ClientConfig::default(), Arc::new(FaultInjector::new(1)))
}

pub fn mgs_client(l: &Lnet, server: Nid) -> Client {
    Client::new(l, server, MGS_REQUEST_PORTAL, ClientConfig::default(), Arc::new(FaultInjector::new(2)))
}

/// An RPC bounded by `bound`.
pub async fn rpc<B>(c: &Client, op: Op, body: &B, bound: Duration) -> Result<RpcReply, RpcError>
where
    B: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                rkyv::util::AlignedVec,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
{
    match tokio::time::timeout(bound, c.start(op, body)).await {
        Ok(r) => r,
        Err(_) => Err(RpcError::Encode(format!("{op:?}: no reply within {bound:?}"))),
    }
}

/// The errno of a failed RPC (0 on success).
pub fn errno_of(r: &Result<RpcReply, RpcError>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.errno(),
    }
}

/// Waits (bounded, server-side) until the MDT applied `n` config records.
pub async fn mdt_applied(c: &Client, n: u64) -> GetInfoReply {
    let req = GetInfoReq { key: "config_applied".into(), at_least: n, wait_ms: 5000 };
    let r: GetInfoReply = rpc(c, Op::MdsGetInfo, &req, BOUND).await.unwrap().body().unwrap();
    assert!(r.value >= n, "MDT applied {} of {n} records", r.value);
    r
}
