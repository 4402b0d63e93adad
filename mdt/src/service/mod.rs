//! ptlrpc handlers: the MDT's ([`MdtHandler`]) and the MGS's
//! ([`MgsHandler`]), and their metrics ([`MdtMetrics`]).
//!
//! Must not: hold protocol logic beyond decoding a body, calling the
//! namespace or MGS, and encoding the answer; errors go back as errno.

mod mdt;
pub mod metrics;
mod mgs;

pub use mdt::MdtHandler;
pub use metrics::MdtMetrics;
pub use mgs::MgsHandler;
