//! The MDT's operations on decoded bodies ([`MdtOps`], run by the target
//! framework's service and front in `crate::tgt`), the MGS's ptlrpc
//! handler ([`MgsHandler`]), and their metrics ([`MdtMetrics`]).
//!
//! Must not: hold protocol logic beyond decoding a body, calling the
//! namespace or MGS, and encoding the answer; errors go back as errno.

mod mdt;
pub mod metrics;
mod mgs;

pub use mdt::{Grant, MdtOps, Modified, encode, is_read, op_name};
pub use metrics::MdtMetrics;
pub use mgs::MgsHandler;
