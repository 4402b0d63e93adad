//! Building and reading messages for the test nodes.

use std::time::Duration;

use ptlrpc::wire::{ConnCnt, ExportHandle, Frame, Header, MsgFlags, MsgKind, Op, Xid, encode};

/// Encodes a request with an empty body.
pub fn request(op: Op, xid: Xid, handle: ExportHandle, timeout: Duration) -> Vec<u8> {
    let mut h = Header::new(MsgKind::Request, op.opcode(), xid);
    h.handle = handle;
    h.conn_cnt = ConnCnt(1);
    h.timeout = timeout;
    to_vec(&h)
}

/// Encodes a reply to `req` (an error reply when `status` is non-zero).
pub fn reply(req: &Header, status: i32, handle: ExportHandle, service_time: Duration) -> Vec<u8> {
    let kind = if status == 0 { MsgKind::Reply } else { MsgKind::Error };
    let mut h = Header::new(kind, req.opcode, req.xid);
    h.status = status;
    h.handle = handle;
    h.conn_cnt = req.conn_cnt;
    h.service_time = service_time;
    to_vec(&h)
}

/// Encodes an early reply to `req` granting `timeout` in total.
pub fn early_reply(req: &Header, timeout: Duration, estimate: Duration) -> Vec<u8> {
    let mut h = Header::new(MsgKind::Reply, req.opcode, req.xid);
    h.flags = MsgFlags::EARLY_REPLY;
    h.timeout = timeout;
    h.service_time = estimate;
    to_vec(&h)
}

/// Parses a message; test nodes count and drop what fails.
pub fn parse(bytes: &[u8]) -> Option<Header> {
    Frame::parse(bytes).ok().map(|f| *f.header())
}

fn to_vec(h: &Header) -> Vec<u8> {
    match encode(h, &()) {
        Ok(v) => v.to_vec(),
        Err(e) => panic!("encoding a header-only message cannot fail: {e}"),
    }
}

/// One-line description of a message for simulator traces.
pub fn describe(bytes: &[u8]) -> String {
    match Frame::parse(bytes) {
        Ok(f) => {
            let h = f.header();
            let mut s = format!("{:?} {:?} xid={}", h.kind, f.op(), h.xid);
            if h.status != 0 {
                s.push_str(&format!(" status={}", h.status));
            }
            if !h.flags.is_empty() {
                s.push_str(&format!(" flags={:?}", h.flags));
            }
            if !h.timeout.is_zero() {
                s.push_str(&format!(" timeout={:?}", h.timeout));
            }
            s
        }
        Err(e) => format!("<{} bytes: {e}>", bytes.len()),
    }
}
