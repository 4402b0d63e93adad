//! The CI run of the failure-injection harness: `sheen-chaos run` with a
//! fixed seed and every fault kind in turn, twice (14 cycles), against
//! the real `sheen-mds` and `sheen-oss` (built beside it by `cargo nextest
//! run --workspace`). It passes only when nothing acknowledged was lost,
//! nothing is corrupt, nothing ran twice, and no call failed except on a
//! client the servers evicted. Needs root (network namespaces); without
//! it the test says SKIPPED. Each run owns its namespaces (`shc<pid>-*`)
//! and subnet, so it never collides with the loopback tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt;
use std::process::Command;

#[test]
fn every_fault_kind_twice_loses_nothing() {
    let root = std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
    if !root || Command::new("ip").arg("-V").output().is_err() {
        eprintln!("SKIPPED: sheen-chaos needs root and iproute2 (network namespaces)");
        return;
    }
    let dir = std::env::temp_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_sheen-chaos"))
        .args(["run", "--cycles", "14", "--round-robin", "--seed", "9", "--freeze", "6"])
        .arg("--dir")
        .arg(&dir)
        .output()
        .expect("sheen-chaos runs");
    let table = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sheen-chaos failed:\n{table}\n{log}");
    assert!(table.contains("PASS"), "{table}");
}
