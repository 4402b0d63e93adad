//! The lock manager (Lustre's LDLM), sans-IO: what the MDT grants so
//! clients may cache, and how it takes that back.
//!
//! Owns: lock modes and inode bits with Lustre's compatibility matrix
//! ([`mode`]) and the server's lock table ([`namespace`]): resources named
//! by FID, inodebits locks granted, queued and cancelled, blocking
//! callbacks to holders and the callback timeout that evicts a holder who
//! never cancels. The wire bodies are in `wire::ldlm`; the MDT drives a
//! [`LockNamespace`] and sends the callbacks, the client keeps its own
//! cache of granted locks.
//!
//! Must not: perform I/O or read a clock (time comes in as `now`), or
//! know what a resource is (callers choose resources, modes and bits).
//!
//! Not yet: extent locks (OST data), lock conversion, lock replay after a
//! server restart (clients drop every lock when their import reconnects),
//! LRU-driven cancels from the server side (lock volume), glimpse ASTs.

pub mod mode;
pub mod namespace;

pub use mode::{InodeBits, LockMode, conflicts};
pub use namespace::{
    Enqueued, LdlmError, LdlmEvent, LdlmSettings, Lock, LockHandle, LockNamespace, Owner, ResId, Wait,
};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod sim_tests;
