//! Runs the real `lnet-selftest` binary end to end: it starts its own
//! server process, runs ping, brw write and brw read over the tcp LND with
//! the data check on, and the raw TCP baseline, and prints JSON lines.

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn selftest_all_with_baseline_and_check() {
    let child = Command::new(env!("CARGO_BIN_EXE_lnet-selftest"))
        .args(["--json", "--baseline", "--duration", "1", "--check", "all"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lnet-selftest");
    let pid = child.id();
    // Bounded: the run takes ~6 s; a hang is a failure, not a stuck test.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(r) => r.expect("collect lnet-selftest output"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("lnet-selftest did not finish within 120 s");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    let lines: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"))).collect();
    for (bench, unit) in [("lnet.tcp.ping", "msg/s"), ("lnet.tcp.brw_write", "GB/s"), ("lnet.tcp.brw_read", "GB/s")] {
        let v = lines.iter().find(|v| v["bench"] == bench).unwrap_or_else(|| panic!("no {bench} line in:\n{stdout}"));
        assert_eq!(v["unit"], unit, "{v}");
        assert_eq!(v["baseline"], "raw_tcp", "{v}");
        for k in ["value", "baseline_value", "ratio"] {
            let x = v[k].as_f64().unwrap_or_else(|| panic!("{k} is not a number in {v}"));
            assert!(x > 0.0, "{k} is not positive in {v}");
        }
        if unit == "msg/s" {
            assert!(v["p50_us"].as_f64().is_some_and(|x| x > 0.0), "{v}");
            assert!(v["p99_us"].as_f64().is_some_and(|x| x > 0.0), "{v}");
        }
    }
}

#[test]
fn dead_peer_is_a_clean_error() {
    // Nothing listens on this NID's port: the run must fail fast, not hang.
    let out = Command::new(env!("CARGO_BIN_EXE_lnet-selftest"))
        .args(["--peer", "127.0.0.3@tcp", "--port", "1", "--duration", "1", "ping"])
        .output()
        .expect("run lnet-selftest");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error"), "{stderr}");
}
