//! Recovery-time benchmark: kill -9 of a target (the key-value target on
//! the target framework, a real `kv-target` process on tcp loopback) while
//! three clients write, restart on the same directory, and time restart to
//! every client FULL — with imperative recovery (clients told the target
//! restarted, as the MGS does) against recovery the clients find out about
//! by themselves (request deadlines and the pinger, Lustre without
//! imperative recovery), in the same run. Every check of the test holds
//! here too (nothing acknowledged lost, nothing run twice).
//!
//! `cargo bench -p ptlrpc --bench recovery` (`-- --runs N`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code, unused_imports)]
#[path = "../tests/kv_recovery.rs"]
mod kv;

use std::time::Duration;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(3)
        .max(1);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (mut imp, mut png) = (Vec::new(), Vec::new());
    for i in 0..runs {
        imp.push(rt.block_on(kv::kill9_and_recover(&format!("bench-imp-{i}"), true)));
        png.push(rt.block_on(kv::kill9_and_recover(&format!("bench-ping-{i}"), false)));
    }
    let (a, b) = (median(imp), median(png));
    println!(
        "{}",
        serde_json::json!({
            "bench": "ptlrpc.recovery.restart_to_all_full",
            "value": a.as_secs_f64(), "unit": "s",
            "baseline": "without_imperative_recovery", "baseline_value": b.as_secs_f64(),
            "ratio": a.as_secs_f64() / b.as_secs_f64(), "runs": runs, "clients": 3,
        })
    );
}
