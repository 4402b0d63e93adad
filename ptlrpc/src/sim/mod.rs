//! The deterministic simulator (feature `sim`; always on for this crate's
//! tests).
//!
//! Owns: a virtual clock and event queue ([`World`]), an in-memory network
//! with per-link delay, loss, duplication, reordering and partitions
//! ([`Network`], [`LinkConfig`]), node crash and restart, one seeded RNG
//! ([`SimRng`]), and the seed runner ([`run_seeds`]) that prints a failing
//! seed and replays one seed with a per-event trace when `SHEEN_SIM_SEED`
//! is set.
//!
//! Must not: read a real clock, sleep, spawn threads or draw randomness
//! from anywhere but the seed. It drives the same sans-IO state machines
//! the tokio driver runs; nodes implement [`Node`].

mod net;
mod rng;
mod runner;
mod world;

pub use net::{LinkConfig, Network, Route};
pub use rng::SimRng;
pub use runner::{SEED_ENV, run_seeds};
pub use world::{Node, NodeId, SimStats, Transmit, World};

#[cfg(test)]
mod tests;
