//! # ost — the object storage target (not built yet)
//!
//! This crate will own object storage, BRW bulk I/O, grants, precreation
//! and the `sheen-oss` daemon; see `DESIGN.md`, section ost, and issue 6.
//! Nothing is implemented here yet and it exports nothing.
