//! # mdt — the MGS and the metadata target (not built yet)
//!
//! This crate will own the management service (config log, target
//! registry, pools) and the metadata target (namespace, layouts, object
//! allocation); see `DESIGN.md`, section mdt, and issue 7. Nothing is
//! implemented here yet and it exports nothing.
