//! Portal numbers and match-bit conventions (Lustre's, where Lustre has one).
//!
//! Owns: which lnet portal each service listens on, the one portal every
//! client receives replies on, the bulk portals, and where in a reply MD
//! early and final replies land.
//!
//! Conventions:
//! - A request is a PUT to the service's request portal, match bits 0
//!   (request buffers match anything).
//! - A reply is a PUT to the client's [`REPLY_PORTAL`] with match bits =
//!   the request's xid. Early replies land at offset 0 of the reply MD and
//!   the final reply at [`FINAL_REPLY_OFFSET`], so an early reply never
//!   overwrites the final one (Lustre's `rq_reply_off`).
//! - Bulk match bits are the request's xid (carried in its `BulkDesc`). For
//!   a write the client exposes its pages on [`BULK_GET_SOURCE_PORTAL`] and
//!   the server GETs them; for a read the client posts its pages on
//!   [`BULK_PUT_SINK_PORTAL`] and the server PUTs into them.
//!
//! Must not: hold state. Plain constants only.

use crate::wire::{HEADER_LEN, Portal};

/// The OST's request portal (Lustre's `OST_IO_PORTAL`).
pub const OST_REQUEST_PORTAL: Portal = Portal(6);
/// The MDT's request portal (Lustre's `MDS_REQUEST_PORTAL`).
pub const MDS_REQUEST_PORTAL: Portal = Portal(12);
/// The MGS's request portal (Lustre's `MGS_REQUEST_PORTAL`).
pub const MGS_REQUEST_PORTAL: Portal = Portal(26);
/// The lock callback portal every client with a cache listens on: the
/// MDT's blocking callbacks arrive here (Lustre's `LDLM_CB_REQUEST_PORTAL`).
pub const LDLM_CB_REQUEST_PORTAL: Portal = Portal(17);
/// The echo service's request portal (tests and benchmarks).
pub const ECHO_REQUEST_PORTAL: Portal = Portal(36);

/// The portal every client receives replies and early replies on (Lustre's
/// `OSC_REPLY_PORTAL`; Sheen uses one reply portal for every service).
pub const REPLY_PORTAL: Portal = Portal(4);
/// Client pages a server PUTs into (bulk reads).
pub const BULK_PUT_SINK_PORTAL: Portal = Portal(8);
/// Client pages a server GETs from (bulk writes).
pub const BULK_GET_SOURCE_PORTAL: Portal = Portal(9);

/// Room at the start of a reply MD for early replies (a bare header).
pub const EARLY_REPLY_SPACE: usize = HEADER_LEN;
/// Where the final reply lands in a reply MD (16-aligned, like the body).
pub const FINAL_REPLY_OFFSET: usize = EARLY_REPLY_SPACE.next_multiple_of(16);

const _: () = assert!(FINAL_REPLY_OFFSET >= EARLY_REPLY_SPACE && FINAL_REPLY_OFFSET.is_multiple_of(16));
