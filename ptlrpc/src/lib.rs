//! # ptlrpc — requests, replies and bulk over lnet (not built yet)
//!
//! This crate will own the wire format of every Sheen service, the client
//! and server RPC machinery, adaptive timeouts, the pinger, imports and
//! exports, replay lists and target recovery (see `DESIGN.md`, section
//! ptlrpc, and issues 4 and 5). Nothing is implemented here yet: the crate
//! exists so the workspace has its final shape, and it exports nothing.
