//! # client — the FUSE mount, the `sheen` CLI and the library API (not built yet)
//!
//! See `DESIGN.md`, section client, and issue 8. Nothing is implemented
//! here yet and it exports nothing.
