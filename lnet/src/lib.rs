//! # lnet — Sheen's transport
//!
//! An LNet-style message layer: NIDs name nodes on networks; a receiver
//! attaches match entries with memory descriptors (MDs) to portals; a sender
//! PUTs an MD's bytes to a peer's portal (optionally ACKed) or GETs bytes
//! from one; every completion is an [`Event`]. Network drivers (LNDs) move
//! the bytes: `lo` in process, `tcp` over sockets, `o2ib` over verbs (a
//! later step). Send credits per peer and per NI bound what is in flight;
//! beyond them messages queue in order.
//!
//! This crate owns transport only: it knows nothing of RPCs, xids or
//! services (that is `ptlrpc`). Unsafe code is confined to [`mem`] (bulk
//! page slabs, the memory an RDMA LND registers).

pub mod api;
pub mod config;
#[cfg(feature = "conformance")]
pub mod conformance;
pub(crate) mod core;
pub mod error;
pub mod event;
pub mod lnd;
pub mod md;
pub mod mem;
pub mod nid;
pub mod peer;
pub mod ping;
pub mod portal;
pub mod selftest;
pub mod wire;

pub use api::{AckReq, Lnet, Target};
pub use config::{LnetConfig, NetConfig, O2ibConfig, TcpConfig, Tunables};
pub use core::Counters;
pub use error::{LnetError, Result};
pub use event::{Event, EventHandler, EventKind, EventQueue};
pub use md::{Md, MdBuffer, MdOptions, MdSlice, MdSpec, Threshold};
pub use mem::{PAGE_SIZE, Page, PagePool};
pub use nid::{Net, NetType, Nid};
pub use peer::PeerInfo;
pub use ping::PingInfo;
pub use portal::{InsertPos, MatchPeer, MatchSpec};
