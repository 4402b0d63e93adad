//! The MDT on ptlrpc's target framework (`ptlrpc::target`,
//! `driver::TargetDriver`): exports and per-client records, reply
//! reconstruction for resent requests, transno-ordered replay after a
//! restart with VBR, commits off the request path.
//!
//! Owns: [`MdtStore`] (the namespace store as a `TargetStore`: client
//! records, server record, versions, atomic apply), [`MdtService`] (plan:
//! validate and build a namespace transaction without writing it) and
//! [`MdtFront`] (reads outside the target's lock).
//!
//! Must not: run a namespace update outside `plan`/`apply` (the target's
//! lock orders them and assigns their transnos).

pub mod front;
pub mod intent;
pub mod service;
pub mod store;

pub use front::MdtFront;
pub use service::MdtService;
pub use store::{MdtChange, MdtStore};

#[cfg(test)]
mod export_tests;
#[cfg(test)]
mod tests;
