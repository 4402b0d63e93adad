//! The selftest server: answers PING and BRW requests over LNet.
//!
//! Owns the request buffers on [`super::REQ_PORTAL`] (persistent MDs with a
//! locally managed offset, re-posted when they unlink) and the bulk pages.
//! Every request is handled inline in the event callback of the LND that
//! received it (no task hop), as a ptlrpc service's request-in callback
//! would. Bulk is server driven, as in Lustre: for a BRW WRITE the server
//! GETs the client's pages, for a BRW READ it PUTs into them, and only then
//! PUTs the small reply.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::REQ_PORTAL;
use super::proto::{self, MSG_SIZE, Op, Reply, Request};
use crate::api::{AckReq, Lnet, Target};
use crate::event::{Event, EventHandler, EventKind};
use crate::md::{Md, MdBuffer, MdOptions, MdSpec, Threshold};
use crate::mem::{PAGE_SIZE, Page};
use crate::nid::Nid;
use crate::portal::{InsertPos, MatchSpec};

/// Request buffers kept posted.
const REQ_BUFS: usize = 4;
/// Bytes per request buffer (1024 requests).
const REQ_BUF_SIZE: usize = 1024 * MSG_SIZE;
/// Page vectors kept for reuse.
const FREE_MAX: usize = 64;
/// Bulk MDs whose pages are still referenced elsewhere, kept to retry.
const RETURNING_MAX: usize = 256;

/// Server counters.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Requests handled.
    pub requests: AtomicU64,
    /// Requests that did not parse.
    pub bad_requests: AtomicU64,
    /// Operations that failed (bulk or reply).
    pub errors: AtomicU64,
}

/// The LNet side of a selftest server.
pub struct Server {
    lnet: Lnet,
    me: Weak<Server>,
    req_handler: EventHandler,
    reply_handler: EventHandler,
    free: Mutex<Vec<Vec<Page>>>,
    returning: Mutex<Vec<Md>>,
    stopping: AtomicBool,
    /// Counters.
    pub stats: ServerStats,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("lnet", &self.lnet).field("stats", &self.stats).finish()
    }
}

/// One bulk transfer in progress.
struct BulkOp {
    req: Request,
    t_in_ns: u64,
    peer: Nid,
    replied: AtomicBool,
}

impl Server {
    /// Posts the request buffers on `lnet` and starts answering.
    pub fn start(lnet: Lnet) -> crate::Result<Arc<Server>> {
        let srv = Arc::new_cyclic(|me: &Weak<Server>| {
            let w = me.clone();
            let req_handler = EventHandler::Callback(Arc::new(move |ev: Event| {
                if let Some(s) = w.upgrade() {
                    s.on_request_event(ev);
                }
            }));
            let w = me.clone();
            let reply_handler = EventHandler::Callback(Arc::new(move |ev: Event| {
                if let Some(s) = w.upgrade() {
                    s.on_reply_event(&ev);
                }
            }));
            Server {
                lnet,
                me: me.clone(),
                req_handler,
                reply_handler,
                free: Mutex::new(Vec::new()),
                returning: Mutex::new(Vec::new()),
                stopping: AtomicBool::new(false),
                stats: ServerStats::default(),
            }
        });
        for _ in 0..REQ_BUFS {
            srv.post_request_buffer()?;
        }
        Ok(srv)
    }

    /// Stops re-posting request buffers (before LNet shuts down).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    fn post_request_buffer(&self) -> crate::Result<Md> {
        let spec = MdSpec::new(MdBuffer::Inline(vec![0; REQ_BUF_SIZE]), self.req_handler.clone())
            .threshold(Threshold::Infinite)
            .options(MdOptions::OP_PUT)
            .min_free(MSG_SIZE);
        self.lnet.attach(REQ_PORTAL, MatchSpec::any(), InsertPos::Tail, spec)
    }

    fn on_request_event(&self, ev: Event) {
        match ev.kind {
            EventKind::Put => match &ev.status {
                Ok(()) => self.on_request(&ev),
                Err(e) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(peer = %ev.peer, err = %e, "request did not arrive whole");
                }
            },
            EventKind::Unlink => {}
            k => tracing::warn!(kind = ?k, "unexpected event on a request buffer"),
        }
        if ev.unlinked && !self.stopping.load(Ordering::Acquire) {
            // The buffer is full (or was unlinked): put a fresh one behind the others.
            if let Err(e) = self.post_request_buffer() {
                tracing::error!(err = %e, "cannot re-post a request buffer");
            }
        }
    }

    fn on_request(&self, ev: &Event) {
        let t_in = proto::wall_ns();
        let mut b = [0u8; MSG_SIZE];
        let n = (ev.mlength as usize).min(MSG_SIZE);
        let got = ev.md.lock().read_at(ev.offset as usize, &mut b[..n]);
        let req = match Request::decode(&b[..got]) {
            Ok(r) => r,
            Err(why) => {
                self.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = %ev.peer, "dropping a bad request: {why}");
                return;
            }
        };
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        match req.op {
            Op::Ping => self.reply(ev.peer, &req, 0, t_in),
            Op::BrwWrite | Op::BrwRead => self.start_bulk(ev.peer, req, t_in),
        }
    }

    fn start_bulk(&self, peer: Nid, req: Request, t_in: u64) {
        let size = req.size as usize;
        let mut buf = match self.take_pages(size) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(err = %e, size, "no pages for a bulk request");
                return self.reply(peer, &req, proto::STATUS_NOMEM, t_in);
            }
        };
        if req.op == Op::BrwRead && req.check() {
            proto::fill_md(&mut buf, size, req.seed);
        }
        let op = Arc::new(BulkOp { req, t_in_ns: t_in, peer, replied: AtomicBool::new(false) });
        let w = self.me.clone();
        let handler = EventHandler::Callback(Arc::new(move |ev: Event| {
            if let Some(s) = w.upgrade() {
                s.on_bulk_event(&op, ev);
            }
        }));
        let md = match self.lnet.bind(MdSpec::new(buf, handler)) {
            Ok(md) => md,
            Err(e) => {
                tracing::warn!(err = %e, "cannot bind a bulk MD");
                return self.reply(peer, &req, proto::STATUS_IO, t_in);
            }
        };
        let to = Target::new(peer, req.bulk_portal, req.bulk_bits);
        let res = match req.op {
            Op::BrwWrite => self.lnet.get(&md, to),
            _ => self.lnet.put(&md, to, AckReq::NoAck, 0),
        };
        if let Err(e) = res {
            // No operation started, so no event will come: clean up here.
            tracing::warn!(%peer, err = %e, "cannot start the bulk transfer");
            let _ = self.lnet.unlink(&md);
            self.reclaim(md);
            self.reply(peer, &req, proto::STATUS_IO, t_in);
        }
    }

    fn on_bulk_event(&self, op: &BulkOp, ev: Event) {
        let status = match (&ev.status, op.req.op, ev.kind) {
            (Err(e), _, k) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = %op.peer, kind = ?k, err = %e, "bulk transfer failed");
                Some(proto::STATUS_IO)
            }
            // WRITE: the client's pages have landed in ours.
            (Ok(()), Op::BrwWrite, EventKind::Reply) => {
                if ev.mlength != op.req.size {
                    Some(proto::STATUS_IO)
                } else if op.req.check() && !proto::verify_md(&ev.md.lock(), op.req.size as usize, op.req.seed) {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(peer = %op.peer, xid = op.req.xid, "bulk data does not match the pattern");
                    Some(proto::STATUS_BAD_DATA)
                } else {
                    Some(0)
                }
            }
            // READ: our pages have left for the client's.
            (Ok(()), Op::BrwRead, EventKind::Send) => Some(0),
            _ => None,
        };
        if let Some(s) = status
            && !op.replied.swap(true, Ordering::AcqRel)
        {
            self.reply(op.peer, &op.req, s, op.t_in_ns);
        }
        if ev.unlinked {
            self.reclaim(ev.md);
        }
    }

    fn reply(&self, peer: Nid, req: &Request, status: i32, t_in: u64) {
        let bytes = Reply::to(req, status).stamped(t_in).encode().to_vec();
        let res = self
            .lnet
            .bind(MdSpec::new(MdBuffer::Inline(bytes), self.reply_handler.clone()))
            .and_then(|md| self.lnet.put(&md, Target::new(peer, req.reply_portal, req.xid), AckReq::NoAck, 0));
        if let Err(e) = res {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, err = %e, "cannot send a reply");
        }
    }

    fn on_reply_event(&self, ev: &Event) {
        if let Err(e) = &ev.status {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(peer = %ev.peer, err = %e, "reply was not sent");
        }
    }

    /// A page-vector buffer of `size` bytes, from the free list if possible.
    fn take_pages(&self, size: usize) -> crate::Result<MdBuffer> {
        let n = size.div_ceil(PAGE_SIZE);
        let mut pages = self.free.lock().pop();
        if pages.is_none() {
            self.collect_returning();
            pages = self.free.lock().pop();
        }
        let mut pages = pages.unwrap_or_default();
        if pages.len() < n {
            pages.extend(self.lnet.pool(0).alloc(n - pages.len())?);
        } else {
            pages.truncate(n);
        }
        Ok(MdBuffer::from_pages_len(pages, size))
    }

    /// Takes an unlinked bulk MD's pages back, or keeps the MD to retry
    /// while an LND still holds a handle to it.
    fn reclaim(&self, md: Md) {
        match md.into_buffer() {
            Ok(MdBuffer::Pages { pages, .. }) => {
                let mut free = self.free.lock();
                if free.len() < FREE_MAX {
                    free.push(pages);
                }
            }
            Ok(MdBuffer::Inline(_)) => {}
            Err(md) => {
                let mut r = self.returning.lock();
                if r.len() < RETURNING_MAX {
                    r.push(md);
                }
                // Else dropped: its pages go back to the pool when the last
                // handle does.
            }
        }
    }

    fn collect_returning(&self) {
        let mds = std::mem::take(&mut *self.returning.lock());
        for md in mds {
            self.reclaim(md);
        }
    }
}

/// The counters as one log line.
pub(crate) fn fmt_stats(s: &ServerStats) -> String {
    format!(
        "requests {} bad {} errors {}",
        s.requests.load(Ordering::Relaxed),
        s.bad_requests.load(Ordering::Relaxed),
        s.errors.load(Ordering::Relaxed)
    )
}
