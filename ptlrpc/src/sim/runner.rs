//! Running a scenario over many seeds, and replaying one.
//!
//! Owns: [`run_seeds`] and the `SHEEN_SIM_SEED` convention: a failing seed
//! is printed with the command that replays it; with the variable set, only
//! that seed runs, with tracing on.
//!
//! Must not: retry or skip a failing seed.

use std::panic::{self, AssertUnwindSafe};

/// The environment variable naming a single seed to replay with a trace.
pub const SEED_ENV: &str = "SHEEN_SIM_SEED";

/// Runs `scenario(seed, trace)` for seeds `0..count`, or only for the seed
/// in `SHEEN_SIM_SEED` (with `trace` true). A scenario fails by returning
/// `Err` or panicking; the first failure prints its seed and a replay line
/// and then panics, failing the test.
pub fn run_seeds<F>(name: &str, count: u64, scenario: F)
where
    F: Fn(u64, bool) -> Result<(), String>,
{
    let replay = std::env::var(SEED_ENV).ok();
    let (seeds, trace) = match replay.as_deref().map(str::parse::<u64>) {
        Some(Ok(seed)) => (seed..seed + 1, true),
        Some(Err(e)) => panic!("{SEED_ENV} is not a seed: {e}"),
        None => (0..count, false),
    };
    for seed in seeds {
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| scenario(seed, trace)));
        let failure = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(msg)) => msg,
            Err(p) => p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".to_string()),
        };
        eprintln!("sim {name}: seed {seed} failed: {failure}");
        eprintln!("  replay: {SEED_ENV}={seed} cargo test -p ptlrpc {name} -- --nocapture");
        panic!("sim {name}: seed {seed} failed: {failure}");
    }
}
