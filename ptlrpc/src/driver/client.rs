//! The client side: a handle to one service on one server (an import,
//! minus connection state, which issue 5 adds) and request sets.
//!
//! Owns: [`Client`] — xids from one process-wide increasing sequence; a
//! request attaches its reply MD first (matching only the server's NID and
//! the xid, persistent across early replies), then PUTs the request to the
//! service portal; its deadline, early-reply extensions and bounded resends
//! (same xid, `RESEND`) come from the sans-IO [`Inflight`] and the import's
//! [`ClientAt`]; the final reply's service time is folded into the
//! estimates. Errors (a status in the reply, lnet failures, timeouts) are
//! [`RpcError`]s with an errno. Bulk RPCs expose the caller's pages to the
//! server before the request is sent (see `driver::bulk` for the server's
//! half). [`RequestSet`] runs many RPCs at once and waits for all.
//!
//! The lnet plumbing (reply MDs, request PUTs) is `driver::transport`'s.
//!
//! Must not: hold a lock across an await, or leave an MD attached when an
//! RPC ends or its future is dropped.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use lnet::{Lnet, LnetError, MatchPeer, MdBuffer, MdOptions, Nid};
use parking_lot::Mutex;
use rkyv::util::AlignedVec;
use tokio::sync::mpsc;

use super::DriverClock;
use super::bulk::{checksum, corrupt};
use super::error::RpcError;
use super::transport::{self, Attached, BulkEvent, ReplyEvent};
use crate::at::{AtSettings, ClientAt};
use crate::fault::{FaultInjector, FaultKind};
use crate::portals::{BULK_GET_SOURCE_PORTAL, BULK_PUT_SINK_PORTAL};
use crate::request::{Inflight, TimeoutAction, XidSeq};
use crate::wire::{
    BODY_ALIGN, BulkDesc, CKSUM_CRC32C, DecodeError, Frame, HEADER_LEN, Header, JobId, MsgFlags, MsgKind, Op, Portal,
    WireArchived, WireBody, WireDecode, Xid, encode,
};

/// How a client behaves.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Adaptive-timeout settings.
    pub at: AtSettings,
    /// Sends per request, the first included (resends on timeout).
    pub max_sends: u32,
    /// Largest reply body accepted.
    pub reply_buf_len: usize,
    /// Extra attempts of a bulk read whose checksum does not match or whose
    /// data never landed.
    pub bulk_retries: u32,
    /// How long to wait, after a reply, for a read's bulk data to have
    /// landed and for lnet to release bulk pages.
    pub bulk_release_wait: Duration,
    /// Job id to tag requests with.
    pub jobid: JobId,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            at: AtSettings::default(),
            max_sends: 3,
            reply_buf_len: 8 << 10,
            bulk_retries: 3,
            bulk_release_wait: Duration::from_secs(10),
            jobid: JobId::EMPTY,
        }
    }
}

/// Counters of one client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Requests started.
    pub requests: u64,
    /// Resends after a timeout.
    pub resends: u64,
    /// Deadlines that passed.
    pub timeouts: u64,
    /// Early replies received.
    pub early_replies: u64,
    /// Replies and early replies that did not decode.
    pub bad_replies: u64,
    /// Bulk reads whose checksum did not match.
    pub bulk_cksum_errors: u64,
}

#[derive(Debug, Default)]
struct Stats {
    requests: AtomicU64,
    resends: AtomicU64,
    timeouts: AtomicU64,
    early_replies: AtomicU64,
    bad_replies: AtomicU64,
    bulk_cksum_errors: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// One process-wide xid sequence, seeded from the wall clock (as Lustre
/// does) so a restarted client does not reuse xids: unique and increasing
/// for every client of the process, and so per import.
static XIDS: LazyLock<Mutex<XidSeq>> = LazyLock::new(|| {
    let us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_micros() as u64);
    Mutex::new(XidSeq::new(us))
});

fn next_xid() -> Xid {
    XIDS.lock().next_xid()
}

/// A reply that decoded, with status 0.
#[derive(Debug)]
pub struct RpcReply {
    bytes: AlignedVec<BODY_ALIGN>,
    header: Header,
}

impl RpcReply {
    /// The reply header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The server's reported service time.
    pub fn service_time(&self) -> Duration {
        self.header.service_time
    }

    fn frame(&self) -> Result<Frame<'_>, RpcError> {
        Ok(Frame::parse(&self.bytes)?)
    }

    /// The body validated as `T`, in place.
    pub fn access<T>(&self) -> Result<&T, RpcError>
    where
        T: WireArchived,
    {
        Ok(self.frame()?.access::<T>()?)
    }

    /// The body validated and deserialized.
    pub fn body<T>(&self) -> Result<T, RpcError>
    where
        T: WireDecode,
    {
        Ok(self.frame()?.deserialize::<T>()?)
    }
}

/// What an RPC's MD callbacks tell its task.
#[derive(Debug)]
enum ClientEv {
    Reply(AlignedVec<BODY_ALIGN>),
    Truncated { len: u32, cap: u32 },
    SendFailed(LnetError),
}

struct Inner {
    lnet: Lnet,
    target: Nid,
    portal: Portal,
    cfg: ClientConfig,
    faults: Arc<FaultInjector>,
    clock: DriverClock,
    at: Mutex<ClientAt>,
    stats: Stats,
}

/// A handle to one service (`portal`) on one server (`target`). Cheap to
/// clone; clones share xids' import, estimates and counters.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("target", &format_args!("{}", self.inner.target))
            .field("portal", &self.inner.portal)
            .finish()
    }
}

impl Client {
    /// A client of `portal` on `target`, over `lnet`.
    pub fn new(lnet: &Lnet, target: Nid, portal: Portal, cfg: ClientConfig, faults: Arc<FaultInjector>) -> Client {
        let clock = DriverClock::new();
        let at = ClientAt::new(clock.now(), cfg.at);
        Client {
            inner: Arc::new(Inner {
                lnet: lnet.clone(),
                target,
                portal,
                cfg,
                faults,
                clock,
                at: Mutex::new(at),
                stats: Stats::default(),
            }),
        }
    }

    /// The server.
    pub fn target(&self) -> Nid {
        self.inner.target
    }

    /// Counters so far.
    pub fn stats(&self) -> ClientStats {
        let s = &self.inner.stats;
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ClientStats {
            requests: g(&s.requests),
            resends: g(&s.resends),
            timeouts: g(&s.timeouts),
            early_replies: g(&s.early_replies),
            bad_replies: g(&s.bad_replies),
            bulk_cksum_errors: g(&s.bulk_cksum_errors),
        }
    }

    /// The current service estimate for this client's portal.
    pub fn service_estimate(&self) -> Duration {
        let now = self.inner.clock.now();
        self.inner.at.lock().service_estimate(now, self.inner.portal)
    }

    /// The request timeout the next request would carry.
    pub fn request_timeout(&self) -> Duration {
        let now = self.inner.clock.now();
        self.inner.at.lock().request_timeout(now, self.inner.portal)
    }

    /// One RPC: sends `body` as `op` and waits for the final reply.
    pub async fn rpc<B>(&self, op: Op, body: &B) -> Result<RpcReply, RpcError>
    where
        B: WireBody,
    {
        self.start(op, body).await
    }

    /// A PING.
    pub async fn ping(&self) -> Result<RpcReply, RpcError> {
        self.rpc(Op::ObdPing, &()).await
    }

    /// Encodes `body` now and returns the RPC as a `Send + 'static` future
    /// (for [`RequestSet`] or `tokio::spawn`).
    pub fn start<B>(&self, op: Op, body: &B) -> impl Future<Output = Result<RpcReply, RpcError>> + Send + 'static
    where
        B: WireBody,
    {
        let xid = next_xid();
        let prepared = self.inner.prepare(op, xid, body);
        let inner = Arc::clone(&self.inner);
        async move {
            let (h, msg) = prepared?;
            inner.exchange(op, h, msg).await
        }
    }

    /// A bulk write: exposes `data` to the server (which GETs it), sends the
    /// request `make_body(desc)` and waits for the reply. With `checksum`
    /// the descriptor carries the pages' CRC32C for the server to verify.
    /// Returns the reply and the pages.
    pub async fn bulk_write<B, F>(
        &self,
        op: Op,
        data: MdBuffer,
        checksum_on: bool,
        make_body: F,
    ) -> Result<(RpcReply, MdBuffer), RpcError>
    where
        F: FnOnce(BulkDesc) -> B,
        B: WireBody,
    {
        let xid = next_xid();
        let desc = BulkDesc {
            match_bits: xid.0,
            len: u32::try_from(data.len()).map_err(|_| RpcError::Encode("bulk larger than 4 GiB".into()))?,
            cksum_type: if checksum_on { CKSUM_CRC32C } else { 0 },
            cksum: if checksum_on { checksum(&data) } else { 0 },
        };
        let (h, msg) = self.inner.prepare(op, xid, &make_body(desc))?;
        let (bulk, events) = self.inner.attach_bulk(BULK_GET_SOURCE_PORTAL, MdOptions::OP_GET, xid, data)?;
        let result = Arc::clone(&self.inner).exchange(op, h, msg).await;
        let data = self.inner.release(bulk, events).await?;
        result.map(|r| (r, data))
    }

    /// A bulk read: posts `buf` for the server to PUT into, sends
    /// `make_body(desc)` and waits for the reply. With `checksum` the
    /// server's CRC32C, taken from the reply by `reply_cksum`, is verified;
    /// on a mismatch, or when the reply came but the data did not land
    /// within `bulk_release_wait`, the read is issued again (up to
    /// `bulk_retries` more times). Returns the reply and the filled pages.
    pub async fn bulk_read<B, F, C>(
        &self,
        op: Op,
        mut buf: MdBuffer,
        checksum_on: bool,
        make_body: F,
        reply_cksum: C,
    ) -> Result<(RpcReply, MdBuffer), RpcError>
    where
        F: Fn(BulkDesc) -> B,
        B: WireBody,
        C: Fn(&RpcReply) -> Result<u32, RpcError>,
    {
        let len = u32::try_from(buf.len()).map_err(|_| RpcError::Encode("bulk larger than 4 GiB".into()))?;
        let attempts = 1 + self.inner.cfg.bulk_retries;
        for attempt in 1..=attempts {
            let xid = next_xid();
            let cksum_type = if checksum_on { CKSUM_CRC32C } else { 0 };
            let desc = BulkDesc { match_bits: xid.0, len, cksum_type, cksum: 0 };
            let (h, msg) = self.inner.prepare(op, xid, &make_body(desc))?;
            let (bulk, mut events) = self.inner.attach_bulk(BULK_PUT_SINK_PORTAL, MdOptions::OP_PUT, xid, buf)?;
            let result = Arc::clone(&self.inner).exchange(op, h, msg).await;
            // The server replies once its PUT has left, without an ACK: the
            // reply counts only when the data has landed here.
            let landed = match &result {
                Ok(_) => self.inner.await_put(&mut events, xid, len).await,
                Err(_) => Ok(()),
            };
            buf = self.inner.release(bulk, events).await?;
            let reply = result?;
            match landed {
                // The data was lost on its way (a connection that failed
                // after the server sent it): the read is issued again, as
                // Lustre resends a request whose bulk timed out.
                Err(e) if attempt < attempts => {
                    tracing::warn!(xid = xid.0, attempt, err = %e, target = %self.inner.target, "bulk read lost; reading again");
                    continue;
                }
                r => r?,
            }
            if self.inner.faults.check(FaultKind::BulkCorrupt).is_some() {
                tracing::info!(xid = xid.0, "fault injection: bulk corrupted");
                corrupt(&mut buf);
            }
            if !checksum_on {
                return Ok((reply, buf));
            }
            let want = reply_cksum(&reply)?;
            let got = checksum(&buf);
            if got == want {
                return Ok((reply, buf));
            }
            bump(&self.inner.stats.bulk_cksum_errors);
            tracing::warn!(xid = xid.0, attempt, want, got, target = %self.inner.target, "bulk read checksum mismatch");
        }
        Err(RpcError::BulkChecksum { attempts })
    }
}

impl Inner {
    /// The request header and message for `op`/`xid` carrying `body`.
    fn prepare<B>(&self, op: Op, xid: Xid, body: &B) -> Result<(Header, AlignedVec<BODY_ALIGN>), RpcError>
    where
        B: WireBody,
    {
        let mut h = Header::new(MsgKind::Request, op.opcode(), xid);
        h.jobid = self.cfg.jobid;
        let msg = encode(&h, body)?;
        h.body_len = (msg.len() - HEADER_LEN) as u32;
        Ok((h, msg))
    }

    /// Runs one request to its final reply.
    async fn exchange(
        self: Arc<Self>,
        op: Op,
        mut h: Header,
        mut msg: AlignedVec<BODY_ALIGN>,
    ) -> Result<RpcReply, RpcError> {
        let xid = h.xid;
        bump(&self.stats.requests);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _reply_md = self.attach_reply(xid, tx.clone())?;
        let now = self.clock.now();
        let mut inflight = Inflight::new(now, xid, self.portal, &self.at.lock(), self.cfg.max_sends.max(1));
        let span = tracing::debug_span!("rpc", xid = xid.0, opcode = op.name(), peer = %self.target);
        self.send(&mut h, &mut msg, &inflight, &tx)?;
        let mut send_error = None;
        loop {
            let deadline = tokio::time::Instant::from_std(self.clock.instant(inflight.deadline()));
            let ev = tokio::select! {
                ev = rx.recv() => ev,
                () = tokio::time::sleep_until(deadline) => None,
            };
            let now = self.clock.now();
            match ev {
                Some(ClientEv::Reply(bytes)) => {
                    let hdr = match Header::decode(&bytes) {
                        Ok(hdr) if hdr.xid == xid => hdr,
                        Ok(hdr) => {
                            bump(&self.stats.bad_replies);
                            tracing::warn!(parent: &span, got = hdr.xid.0, "reply with the wrong xid; ignored");
                            continue;
                        }
                        Err(e) => {
                            bump(&self.stats.bad_replies);
                            tracing::warn!(parent: &span, err = %e, "malformed reply; ignored");
                            continue;
                        }
                    };
                    if hdr.flags.contains(MsgFlags::EARLY_REPLY) {
                        bump(&self.stats.early_replies);
                        inflight.handle_early_reply(now, &self.at.lock(), &hdr);
                        tracing::debug!(parent: &span, timeout = ?hdr.timeout, "early reply");
                        continue;
                    }
                    inflight.handle_reply(now, &mut self.at.lock(), &hdr);
                    let r = self.finish(op, xid, bytes);
                    let status = r.as_ref().err().map_or(0, RpcError::errno);
                    tracing::debug!(parent: &span, status, sends = inflight.sends(), "reply");
                    return r;
                }
                Some(ClientEv::Truncated { len, cap }) => return Err(RpcError::Truncated { len, cap }),
                Some(ClientEv::SendFailed(e)) => {
                    // As Lustre: a failed send is retried when its deadline
                    // passes, not at once.
                    tracing::debug!(parent: &span, err = %e, "request send failed");
                    send_error = Some(e);
                }
                None if now < inflight.deadline() => continue,
                None => {
                    bump(&self.stats.timeouts);
                    let action = inflight.handle_timeout(now, &self.at.lock());
                    match action {
                        TimeoutAction::Resend => {
                            bump(&self.stats.resends);
                            tracing::info!(parent: &span, sends = inflight.sends(), "request timed out; resending");
                            self.send(&mut h, &mut msg, &inflight, &tx)?;
                        }
                        TimeoutAction::GiveUp => {
                            tracing::warn!(parent: &span, sends = inflight.sends(), "request timed out; giving up");
                            return Err(match send_error {
                                Some(e) => RpcError::Lnet(e),
                                None => RpcError::Timeout { op, xid, sends: inflight.sends() },
                            });
                        }
                    }
                }
            }
        }
    }

    /// PUTs the request (header patched for this send) to the service.
    fn send(
        &self,
        h: &mut Header,
        msg: &mut AlignedVec<BODY_ALIGN>,
        inflight: &Inflight,
        tx: &mpsc::UnboundedSender<ClientEv>,
    ) -> Result<(), RpcError> {
        h.flags = inflight.flags();
        h.timeout = inflight.timeout();
        msg[..HEADER_LEN].copy_from_slice(&h.encode());
        let tx = tx.clone();
        transport::put_request(&self.lnet, self.target, self.portal, msg.to_vec(), move |e| {
            let _ = tx.send(ClientEv::SendFailed(e));
        })?;
        Ok(())
    }

    /// The reply MD: from the server only, match bits = xid, persistent
    /// (early replies at offset 0, the final reply after them).
    fn attach_reply(&self, xid: Xid, tx: mpsc::UnboundedSender<ClientEv>) -> Result<Attached, RpcError> {
        let attached = transport::attach_reply(&self.lnet, self.target, xid, self.cfg.reply_buf_len, move |ev| {
            let msg = match ev {
                ReplyEvent::Message(b) => ClientEv::Reply(b),
                ReplyEvent::Truncated { len, cap } => ClientEv::Truncated { len, cap },
                ReplyEvent::Failed(e) => ClientEv::SendFailed(e),
            };
            let _ = tx.send(msg);
        })?;
        Ok(attached)
    }

    /// Checks a final reply's kind and status.
    fn finish(&self, op: Op, xid: Xid, bytes: AlignedVec<BODY_ALIGN>) -> Result<RpcReply, RpcError> {
        let header = match Frame::parse(&bytes) {
            Ok(f) => *f.header(),
            Err(e) => {
                bump(&self.stats.bad_replies);
                return Err(e.into());
            }
        };
        if header.kind == MsgKind::Request {
            bump(&self.stats.bad_replies);
            return Err(DecodeError::BadKind(MsgKind::Request as u32).into());
        }
        if header.status != 0 || header.kind == MsgKind::Error {
            let errno = header.status.checked_neg().filter(|e| *e > 0).unwrap_or(crate::wire::errno::EPROTO);
            return Err(RpcError::Server { op, xid, errno });
        }
        Ok(RpcReply { bytes, header })
    }

    /// Exposes bulk pages to the server on `portal` (match bits = xid, from
    /// the server only, offsets from the server so a retried transfer
    /// starts again at 0).
    fn attach_bulk(
        &self,
        portal: Portal,
        op: MdOptions,
        xid: Xid,
        buf: MdBuffer,
    ) -> Result<(Attached, mpsc::UnboundedReceiver<BulkEvent>), RpcError> {
        Ok(transport::attach_bulk(&self.lnet, portal, op, MatchPeer::Nid(self.target), xid.0, buf)?)
    }

    /// Waits (bounded) for the server's PUT of `want` bytes into a read's
    /// pages, as a Lustre client checks its bulk MD before it takes a read
    /// reply.
    async fn await_put(
        &self,
        events: &mut mpsc::UnboundedReceiver<BulkEvent>,
        xid: Xid,
        want: u32,
    ) -> Result<(), RpcError> {
        transport::await_put(events, want, self.cfg.bulk_release_wait).await.map_err(|(got, e)| match e {
            Some(e) => RpcError::Lnet(e),
            None => RpcError::BulkMissing { xid, got, want },
        })
    }

    /// Unlinks bulk pages and takes them back once lnet lets go of them.
    async fn release(&self, bulk: Attached, events: mpsc::UnboundedReceiver<BulkEvent>) -> Result<MdBuffer, RpcError> {
        Ok(transport::release_bulk(bulk, events, self.cfg.bulk_release_wait).await?)
    }
}

/// Many RPCs in flight at once; [`RequestSet::wait_all`] waits for every
/// one and returns their results in the order they were added.
#[derive(Debug, Default)]
pub struct RequestSet {
    set: tokio::task::JoinSet<(usize, Result<RpcReply, RpcError>)>,
    added: usize,
}

impl RequestSet {
    /// An empty set.
    pub fn new() -> RequestSet {
        RequestSet::default()
    }

    /// Starts an RPC (from [`Client::start`]) and returns its index.
    pub fn add(&mut self, rpc: impl Future<Output = Result<RpcReply, RpcError>> + Send + 'static) -> usize {
        let i = self.added;
        self.added += 1;
        self.set.spawn(async move { (i, rpc.await) });
        i
    }

    /// RPCs added.
    pub fn len(&self) -> usize {
        self.added
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.added == 0
    }

    /// Waits for every RPC.
    pub async fn wait_all(mut self) -> Vec<Result<RpcReply, RpcError>> {
        let mut out: Vec<Option<Result<RpcReply, RpcError>>> = (0..self.added).map(|_| None).collect();
        while let Some(joined) = self.set.join_next().await {
            match joined {
                Ok((i, r)) => out[i] = Some(r),
                Err(e) => tracing::error!(err = %e, "an RPC task failed"),
            }
        }
        out.into_iter().map(|r| r.unwrap_or(Err(RpcError::Shutdown))).collect()
    }
}
