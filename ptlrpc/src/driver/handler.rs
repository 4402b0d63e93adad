//! What a service hands its handler, and what the handler hands back.
//!
//! Owns: [`Request`] (a validated request as it sits in a queue: peer,
//! header, operation, bytes, arrival time), [`Reply`] (an archived body and
//! the header fields a handler sets), the [`Handler`] trait that mdt, ost and
//! the echo service implement, and [`ReqCtx`], the handler's access to the
//! service (bulk transfers live in `driver::bulk`).
//!
//! Must not: send anything itself. The worker sends the reply, measures
//! service time and keeps the metrics — except for handlers driven by a
//! sans-IO state machine that builds whole reply headers (the target
//! framework), which answer through [`ReqCtx::send_reply`] and return
//! [`Reply::sent_by_handler`].

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;

use lnet::{Lnet, Nid};
use rkyv::rancor;
use rkyv::util::AlignedVec;

use super::error::Errno;
use super::service::Shared;
use super::worker::Answer;
use crate::time::Time;
use crate::wire::{
    BODY_ALIGN, Frame, HEADER_LEN, Header, MAX_BODY_LEN, Op, Transno, WireArchived, WireBody, WireDecode, Xid,
};

/// A request that passed header and length checks, waiting to be handled.
pub struct Request {
    pub(super) peer: Nid,
    pub(super) header: Header,
    pub(super) op: Op,
    pub(super) bytes: AlignedVec<BODY_ALIGN>,
    pub(super) arrival: Time,
    pub(super) cpt: usize,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("peer", &format_args!("{}", self.peer))
            .field("xid", &self.header.xid)
            .field("op", &self.op)
            .field("len", &self.bytes.len())
            .field("arrival", &self.arrival)
            .finish()
    }
}

impl Request {
    /// The client that sent it.
    pub fn peer(&self) -> Nid {
        self.peer
    }

    /// The request header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The operation.
    pub fn op(&self) -> Op {
        self.op
    }

    /// The request's xid.
    pub fn xid(&self) -> Xid {
        self.header.xid
    }

    /// When it arrived (service time counts from here).
    pub fn arrival(&self) -> Time {
        self.arrival
    }

    /// The CPT whose queue it came through.
    pub fn cpt(&self) -> usize {
        self.cpt
    }

    /// The raw, not yet validated, body.
    pub fn body_bytes(&self) -> &[u8] {
        self.bytes.get(HEADER_LEN..).unwrap_or_default()
    }

    /// The whole message as a [`Frame`] (header checked on arrival; the
    /// body is validated when read).
    pub fn frame(&self) -> Result<Frame<'_>, Errno> {
        Ok(Frame::parse(&self.bytes)?)
    }

    /// The body validated as `T`, in place (zero copy). A body that does
    /// not validate is `EPROTO`.
    pub fn access<T>(&self) -> Result<&T, Errno>
    where
        T: WireArchived,
    {
        Ok(self.frame()?.access::<T>()?)
    }

    /// The body validated and deserialized. A body that does not validate
    /// is `EPROTO`.
    pub fn body<T>(&self) -> Result<T, Errno>
    where
        T: WireDecode,
    {
        Ok(self.frame()?.deserialize::<T>()?)
    }
}

/// A handler's answer: an archived body plus the header fields it owns.
#[derive(Debug, Default)]
pub struct Reply {
    pub(super) body: AlignedVec<BODY_ALIGN>,
    /// Transaction number of a modifying request.
    pub transno: Transno,
    /// The target's last committed transno.
    pub last_committed: Transno,
    /// The handler sent (or will send) its answers itself through
    /// [`ReqCtx::send_reply`]: the worker sends nothing.
    pub(super) sent_by_handler: bool,
    /// The reply waits for a bulk transfer's completion
    /// ([`ReqCtx::bulk_get_then`], [`ReqCtx::bulk_put_then`]).
    pub(super) deferred: bool,
    /// Not answered on the receive path: queue the request as if
    /// [`Handler::inline`] had said no.
    pub(super) declined: bool,
    /// A reply header built whole by a sans-IO state machine (the target
    /// framework's, for a read answered after its bulk transfer): sent as
    /// it is, with `body`.
    pub(super) header: Option<Header>,
}

impl Reply {
    /// A reply with an empty body.
    pub fn empty() -> Reply {
        Reply::default()
    }

    /// A reply carrying `body` archived with rkyv. A body that does not
    /// archive, or is larger than a message may be, is `EINVAL`.
    pub fn new<B>(body: &B) -> Result<Reply, Errno>
    where
        B: WireBody,
    {
        let archived = rkyv::to_bytes::<rancor::Error>(body).map_err(|_| Errno::EINVAL)?;
        if archived.len() > MAX_BODY_LEN {
            return Err(Errno::EINVAL);
        }
        let mut out = AlignedVec::<BODY_ALIGN>::with_capacity(archived.len());
        out.extend_from_slice(&archived);
        Ok(Reply { body: out, ..Reply::default() })
    }

    /// No reply from the worker: the handler answers through
    /// [`ReqCtx::send_reply`] (now, later, or never — e.g. a request held
    /// until recovery ends, or a stale duplicate dropped).
    pub fn sent_by_handler() -> Reply {
        Reply { sent_by_handler: true, ..Reply::default() }
    }

    /// The answer of a handler whose reply is deferred to a bulk transfer
    /// (what [`ReqCtx::bulk_get_then`] returns).
    pub(super) fn deferred() -> Reply {
        Reply { deferred: true, ..Reply::default() }
    }

    /// A reply whose header the caller built whole (status, flags, handle,
    /// transnos — a target's), sent as it is with `body`: for a deferred
    /// bulk transfer's continuation in the target framework.
    pub(crate) fn whole(header: Header, body: &[u8]) -> Reply {
        let mut b = AlignedVec::<BODY_ALIGN>::with_capacity(body.len());
        b.extend_from_slice(body);
        Reply { body: b, header: Some(header), ..Reply::default() }
    }

    /// The answer of a handler running inline ([`ReqCtx::is_inline`]) that
    /// finds it would have to wait (a lock taken, a state only a worker
    /// may handle): the service queues the request for a worker, as if
    /// [`Handler::inline`] had said no, and the handler runs again there.
    /// It must have sent nothing and changed nothing that matters twice.
    /// On a worker it is an error (`-EIO`).
    pub fn declined() -> Reply {
        Reply { declined: true, ..Reply::default() }
    }

    /// Sets the transaction numbers.
    pub fn with_transno(mut self, transno: Transno, last_committed: Transno) -> Reply {
        self.transno = transno;
        self.last_committed = last_committed;
        self
    }

    /// The archived body.
    pub fn body_bytes(&self) -> &[u8] {
        &self.body
    }
}

/// The code a service runs for each request, on a worker thread of the
/// request's CPT. It may block (bulk transfers do); a slow handler is kept
/// alive at the client by early replies.
pub trait Handler: Send + Sync + 'static {
    /// Handles one request. `Err` becomes an error reply with that errno.
    fn handle(&self, req: &Request, ctx: &mut ReqCtx<'_>) -> Result<Reply, Errno>;

    /// Whether `req` is handled at once on the thread that received it,
    /// in lnet's event callback, instead of on a worker of its CPT: saves
    /// a futex wake-up and two thread switches per request. It then skips
    /// the queue and its policy and gets no early replies. Only for
    /// requests this handler answers without waiting — no disk, no lock a
    /// long request holds, no waiting bulk transfer (refused inline:
    /// [`super::BulkError::Inline`]; the deferred ones,
    /// [`ReqCtx::bulk_get_then`] and [`ReqCtx::bulk_put_then`], are
    /// fine), no [`ReqCtx::blocking`] — since the receive path stalls
    /// meanwhile. A
    /// handler that finds out only while handling it that it would wait
    /// answers [`Reply::declined`], and the request is queued as usual.
    /// Metrics, the reply's service time and the service's estimate are
    /// kept as for queued requests. Default: never.
    fn inline(&self, _req: &Request) -> bool {
        false
    }
}

/// What a handler may use while handling one request.
pub struct ReqCtx<'a> {
    pub(super) shared: &'a Arc<Shared>,
    pub(super) peer: Nid,
    pub(super) cpt: usize,
    /// The worker holds a running slot of its CPT (a general worker outside
    /// [`ReqCtx::blocking`]).
    pub(super) counted: Cell<bool>,
    /// Served inline on lnet's receive path ([`Handler::inline`]): no
    /// bulk transfers.
    pub(super) inline: bool,
    /// What answering this request needs (for a deferred reply).
    pub(super) answer: Answer,
    /// The reply was deferred to a bulk transfer's completion.
    pub(super) deferred: Cell<bool>,
}

impl fmt::Debug for ReqCtx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqCtx")
            .field("peer", &format_args!("{}", self.peer))
            .field("cpt", &self.cpt)
            .field("inline", &self.inline)
            .finish()
    }
}

impl ReqCtx<'_> {
    /// The lnet instance the service runs on.
    pub fn lnet(&self) -> &Lnet {
        &self.shared.lnet
    }

    /// The CPT this request is handled on.
    pub fn cpt(&self) -> usize {
        self.cpt
    }

    /// Whether the request is served inline on lnet's receive path (see
    /// [`Handler::inline`]).
    pub fn is_inline(&self) -> bool {
        self.inline
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.shared.cfg.name
    }

    /// Sends a reply the handler built whole (header fields, flags and
    /// status included) to `peer`'s reply portal, through the service's
    /// reply fault points. For handlers driven by a sans-IO state machine
    /// that decides every header field (the target framework).
    pub fn send_reply(&self, peer: Nid, header: Header, body: &[u8]) {
        super::worker::send_reply(self.shared, peer, header, body);
    }

    /// Runs `f`, which waits (disk I/O, a commit, a long poll, another
    /// service), without holding this worker's running slot, so the CPT's
    /// other workers go on serving its queue meanwhile (see
    /// `ServiceConfig::max_running`). Bulk transfers do this themselves.
    /// Nested calls are plain calls.
    pub fn blocking<R>(&self, f: impl FnOnce() -> R) -> R {
        let counted = self.counted.replace(false);
        let r = super::worker::blocking(self.shared, self.cpt, counted, f);
        self.counted.set(counted);
        r
    }
}
