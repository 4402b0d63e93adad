//! `sheen-oss` as a child process for the real-process tests (kill -9,
//! SIGTERM): format, start and wait for `ready NID`, and the client's tcp
//! lnet on loopback with short reconnect backoffs.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use lnet::{Lnet, LnetConfig, NetConfig, Nid, TcpConfig, Tunables};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::bounded;

/// `sheen-oss format --config CONFIG`, which must succeed.
pub async fn format(config: &Path) {
    let st = Command::new(env!("CARGO_BIN_EXE_sheen-oss"))
        .arg("format")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(st.success(), "format succeeds");
}

/// Starts the daemon and waits for its `ready NID` line.
pub async fn start(config: &Path) -> (Child, Nid) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sheen-oss"))
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let nid = bounded(async {
        loop {
            let l = lines.next_line().await.unwrap().expect("sheen-oss exited before ready");
            if let Some(n) = l.strip_prefix("ready ") {
                return n.parse::<Nid>().unwrap();
            }
        }
    })
    .await;
    (child, nid)
}

/// The client's lnet: tcp on `addr`:`port`, reconnects after 0.1-0.5 s,
/// 2 s transaction timeout.
pub async fn client_lnet(addr: Ipv4Addr, port: u16) -> Lnet {
    Lnet::start(LnetConfig {
        nets: vec![NetConfig::Tcp(TcpConfig {
            addr,
            port,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_millis(500),
            ..TcpConfig::default()
        })],
        tunables: Tunables { transaction_timeout: Duration::from_secs(2), ..Tunables::default() },
    })
    .await
    .unwrap()
}
