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

/// A server and a client loopback address of this test process: the
/// second octet from `base..base + span` and the third from the pid, so
/// concurrent runs and test files never share one.
pub fn addrs(base: u8, span: u8) -> (Ipv4Addr, Ipv4Addr) {
    let p = std::process::id();
    let (a, b) = (base + (p >> 8) as u8 % span, p as u8);
    (Ipv4Addr::new(127, a, b, 1), Ipv4Addr::new(127, a, b, 2))
}

/// A one-target `sheen-oss` config.
pub struct OssToml<'a> {
    /// `fs_uuid`.
    pub fs_uuid: &'a str,
    /// The admin endpoint, if any.
    pub admin: Option<(Ipv4Addr, u16)>,
    /// The lnet tcp address and port.
    pub addr: Ipv4Addr,
    /// The lnet port.
    pub port: u16,
    /// The target's directory.
    pub dir: &'a Path,
    /// Seconds between commits.
    pub commit_interval: f64,
    /// The service's obd_timeout, seconds.
    pub obd_timeout: f64,
}

impl OssToml<'_> {
    /// Writes it to `path`.
    pub fn write(&self, path: &Path) {
        let admin = self.admin.map(|(a, p)| format!("admin = \"{a}:{p}\"\n")).unwrap_or_default();
        let text = format!(
            r#"fs_uuid = "{uuid}"
{admin}[lnet]
nets = [{{ lnd = "tcp", addr = "{addr}", port = {port}, reconnect_min = 0.1, reconnect_max = 0.5 }}]
tunables = {{ transaction_timeout = 2.0 }}
[[targets]]
name = "sheen-OST0000"
index = 0
dir = "{dir}"
commit_interval = {commit}
[service]
obd_timeout = {obd}
"#,
            uuid = self.fs_uuid,
            addr = self.addr,
            port = self.port,
            dir = self.dir.display(),
            commit = self.commit_interval,
            obd = self.obd_timeout,
        );
        std::fs::write(path, text).unwrap();
    }
}

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
