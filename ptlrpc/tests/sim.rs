//! Whole-protocol tests in virtual time, driven by `ptlrpc::sim`.
//!
//! Replay a failing seed with a per-event trace:
//! `SHEEN_SIM_SEED=<seed> cargo test -p ptlrpc --test sim <name> -- --nocapture`.

#[path = "sim/at.rs"]
mod at;
#[path = "sim/kv.rs"]
mod kv;
#[path = "sim/msg.rs"]
mod msg;
#[path = "sim/pinger.rs"]
mod pinger;
#[path = "sim/recovery.rs"]
mod recovery;
#[path = "sim/reply_drop.rs"]
mod reply_drop;
