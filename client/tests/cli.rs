//! The `sheen` program itself (lnet port 8036): `up` and `down` with
//! stdout and stderr piped print their results and nothing else (no
//! progress), their `--json` lines parse; with a terminal (a pty) as
//! stderr, `up` and `down` name each step with its elapsed time there, and
//! stdout holds only the results. Real `sheen-mds` and `sheen-oss`
//! processes, unmounted (`--no-mount`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
use rustix::termios::{Winsize, tcsetwinsize};

const PORT: u16 = 8036;

/// The MDS address of this test process (the OSS takes the next one).
fn addr(tag: u8) -> Ipv4Addr {
    let (a, b) = common::net();
    Ipv4Addr::new(127, a ^ 0x20, b, tag * 4 + 1)
}

fn sheen(args: &[&str]) -> Command {
    common::ensure_daemons();
    let mut c = Command::new(env!("CARGO_BIN_EXE_sheen"));
    c.args(["--port", &PORT.to_string()]).args(args).stdin(Stdio::null());
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `cmd` with stderr on a fresh pty; its output and what the pty
/// showed.
fn on_terminal(mut cmd: Command) -> (Output, String) {
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let slave = std::fs::OpenOptions::new().read(true).write(true).open(name.to_str().unwrap()).unwrap();
    tcsetwinsize(&slave, Winsize { ws_row: 24, ws_col: 200, ws_xpixel: 0, ws_ypixel: 0 }).unwrap();
    let child = cmd.stdout(Stdio::piped()).stderr(slave).spawn().unwrap();
    // Drained meanwhile so the child never blocks on a full pty; ends
    // (EIO) once the child, the slave's last holder, exits.
    let reader = std::thread::spawn(move || {
        let mut master = std::fs::File::from(master);
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        text(&seen)
    });
    drop(cmd);
    let out = child.wait_with_output().unwrap();
    (out, reader.join().unwrap())
}

/// Stops what `sheen up` started under its directory when a test ends,
/// passed or not (the daemons are in their own process group).
struct Down<'a>(&'a Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        if self.0.join(client::up::STATE_FILE).exists() {
            let _ = sheen(&["down"]).arg(self.0).stdout(Stdio::null()).status();
        }
    }
}

fn down_json(dir: &Path) -> Vec<serde_json::Value> {
    let out = sheen(&["--json", "down"]).arg(dir).output().unwrap();
    assert!(out.status.success(), "sheen down: {}", text(&out.stderr));
    text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn piped_output_is_results_only_and_json_parses() {
    let tmp = tempfile::tempdir().unwrap();
    let a = addr(1).to_string();
    let _down = Down(tmp.path());
    let out = sheen(&["--json", "up", "--no-mount", "--addr", &a]).arg(tmp.path()).output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "sheen up: {stderr}");
    assert!(!stderr.contains("done ("), "no progress without a terminal: {stderr:?}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["mgs"], format!("{a}@tcp"));
    assert!(v["mount"].is_null(), "{v}");

    // Commands against it (mount, one request, unmount): JSON lines.
    let mgs = format!("{a}@tcp");
    let json_lines = |args: &[&str]| -> Vec<serde_json::Value> {
        let out = sheen(&["--json", "--mgs", &mgs]).args(args).output().unwrap();
        assert!(out.status.success(), "sheen {args:?}: {}", text(&out.stderr));
        assert!(!text(&out.stderr).contains("done ("), "no progress without a terminal");
        text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let targets = json_lines(&["targets"]);
    let names: Vec<_> = targets.iter().map(|t| t["target"].as_str().unwrap()).collect();
    assert_eq!(names, ["sheen-MDT0000", "sheen-OST0000", "sheen-OST0001"]);
    assert_eq!(json_lines(&["df"]).len(), 3, "MDT0 and two OSTs");
    json_lines(&["pools", "create", "fast"]);
    json_lines(&["pools", "add", "fast", "1"]);
    let pools = json_lines(&["pools"]);
    assert!(pools.iter().any(|p| p["pool"] == "fast" && p["osts"] == serde_json::json!([1])), "{pools:?}");

    // Up again: refused, saying what to do.
    let again = sheen(&["up", "--no-mount", "--addr", &a]).arg(tmp.path()).output().unwrap();
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("`sheen down"), "{}", text(&again.stderr));

    let lines = down_json(tmp.path());
    let daemons: Vec<_> = lines.iter().map(|l| (l["daemon"].as_str().unwrap(), l["state"].as_str().unwrap())).collect();
    assert_eq!(daemons, [("sheen-mds", "stopped"), ("sheen-oss", "stopped")]);
    assert!(!tmp.path().join(client::up::STATE_FILE).exists());
}

#[test]
fn a_terminal_sees_each_step_with_its_time() {
    let tmp = tempfile::tempdir().unwrap();
    let _down = Down(tmp.path());
    let mut up = sheen(&["up", "--no-mount", "--addr", &addr(2).to_string()]);
    up.arg(tmp.path());
    let (out, shown) = on_terminal(up);
    assert!(out.status.success(), "sheen up: {shown}");
    for step in
        ["formatting 2 OSTs", "starting sheen-mds", "starting sheen-oss", "waiting for the MDT to reach its 2 OSTs"]
    {
        assert!(shown.contains(step), "{step:?} not shown: {shown:?}");
    }
    assert!(shown.contains(": done ("), "finished steps say how long they took: {shown:?}");
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("Sheen file system 'sheen' is up"), "stdout holds the results only: {stdout:?}");

    let mut down = sheen(&["down"]);
    down.arg(tmp.path());
    let (out, shown) = on_terminal(down);
    assert!(out.status.success(), "sheen down: {shown}");
    assert!(shown.contains("stopping sheen-mds"), "{shown:?}");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("sheen-oss (pid ") && stdout.contains(") stopped"), "{stdout:?}");
}
