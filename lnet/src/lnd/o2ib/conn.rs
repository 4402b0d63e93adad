//! One established o2ib connection: credits, the send queue, the
//! rendezvous tables and completion handling, run by a single task.
//!
//! Owns the kiblnd-style flow control: each side posts `queue_depth`
//! receive buffers; a message may be sent only with a credit (a receive
//! buffer known to be posted at the peer); each message returns, in its
//! header, the credits for buffers reposted since the last one; the last
//! credit is kept for a message that returns credits, and a NOOP returns
//! them when half the queue has piled up with nothing else to carry them.
//! Payloads up to `max_immediate` are copied into the message (IMMEDIATE);
//! larger ones go by rendezvous — PUT_REQ, the receiver answers PUT_ACK with
//! the addresses and rkeys of its sink pages, the sender RDMA-writes from its
//! own MD pages and sends PUT_DONE in the same chain. Any error completion,
//! disconnect or overdue rendezvous kills the connection: the QP goes to the
//! error state, outstanding work requests flush, and every message or
//! receive that rode on it fails.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::Shared;
use super::proto::{FRAG_SIZE, Frag, MSG_HDR, MsgHdr, MsgType, put_frag};
use super::verbs::{CmEventKind, Completion, Endpoint, EventChannel, Hold, Payload, RegBuf, SendOp, SendWr, Sge};
use crate::error::LnetError;
use crate::lnd::{Delivery, RecvToken, TxMsg};
use crate::md::{MdBuffer, MdSlice};
use crate::mem::PAGE_SIZE;
use crate::nid::Nid;
use crate::wire::HDR_SIZE;

/// Something waiting to be sent.
enum Out {
    Immediate(TxMsg),
    PutReq(TxMsg),
    PutAck { cookie: u64, frags: Vec<Frag> },
    PutNak { cookie: u64, status: i32 },
    PutDone { tx: TxMsg, cookie: u64, payload: Option<Payload>, writes: Vec<SendWr>, status: i32 },
    Noop,
}

impl Out {
    fn slots(&self) -> u32 {
        match self {
            Out::PutDone { writes, .. } => writes.len() as u32 + 1,
            _ => 1,
        }
    }
}

/// What to do when a signaled send completes.
struct SendCtx {
    slots: u32,
    then: Option<(TxMsg, i32)>,
}

/// A receive waiting for the peer's PUT_DONE.
struct SinkWait {
    token: RecvToken,
    /// Set when the sink is not registered memory: copy the bounce into it.
    copy_to: Option<MdSlice>,
    since: Instant,
}

/// An established connection (either direction; the roles differ only in
/// which messages arrive).
pub(super) struct Conn {
    sh: Arc<Shared>,
    peer: Nid,
    ep: Endpoint,
    cm: Arc<EventChannel>,
    credits: u32,
    outstanding: u32,
    noop_hiw: u32,
    free_bufs: Vec<RegBuf>,
    queue: VecDeque<Out>,
    sq_free: u32,
    sq_total: u32,
    sends: HashMap<u64, SendCtx>,
    awaiting: HashMap<u64, (TxMsg, Instant)>,
    sinks: HashMap<u64, SinkWait>,
    next_wr: u64,
    next_cookie: u64,
}

impl Conn {
    /// Wraps an endpoint and posts the receive buffers (before connect/accept).
    pub fn new(sh: Arc<Shared>, peer: Nid, ep: Endpoint, cm: Arc<EventChannel>) -> Result<Conn, LnetError> {
        let qd = u32::from(sh.cfg.queue_depth);
        let mut c = Conn {
            peer,
            ep,
            cm,
            credits: qd,
            outstanding: 0,
            noop_hiw: qd.div_ceil(2),
            free_bufs: Vec::new(),
            queue: VecDeque::new(),
            sq_free: sh.send_wr,
            sq_total: sh.send_wr,
            sends: HashMap::new(),
            awaiting: HashMap::new(),
            sinks: HashMap::new(),
            next_wr: 1,
            next_cookie: 1,
            sh,
        };
        let io = |e: std::io::Error| LnetError::io("o2ib buffers", &e);
        for _ in 0..2 * qd {
            c.free_bufs.push(RegBuf::new(&c.sh.pd, c.sh.msg_size).map_err(io)?);
        }
        for _ in 0..qd {
            let b = RegBuf::new(&c.sh.pd, c.sh.msg_size).map_err(io)?;
            let id = c.wr_id();
            c.ep.post_recv(id, b).map_err(|(e, _)| io(e))?;
        }
        Ok(c)
    }

    /// The endpoint (for connect/accept on its cm id).
    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    fn wr_id(&mut self) -> u64 {
        let id = self.next_wr;
        self.next_wr += 1;
        id
    }

    /// Queues an LNet message.
    pub fn enqueue(&mut self, tx: TxMsg) {
        let plen = tx.payload.as_ref().map_or(0, |p| p.len);
        if plen <= self.sh.cfg.max_immediate as usize {
            self.queue.push_back(Out::Immediate(tx));
        } else {
            self.queue.push_back(Out::PutReq(tx));
        }
    }

    /// Runs until the connection fails; returns why. `rx` feeds messages
    /// (the active side); `None` on the passive side.
    pub async fn run(
        &mut self,
        mut rx: Option<&mut mpsc::UnboundedReceiver<TxMsg>>,
        shut: &mut watch::Receiver<bool>,
    ) -> LnetError {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let busy = self.sh.cfg.busy_poll;
        let cm = Arc::clone(&self.cm);
        loop {
            if let Err(e) = self.progress() {
                return e;
            }
            if *shut.borrow() {
                return LnetError::Shutdown;
            }
            tokio::select! {
                r = self.ep.wait(), if !busy => {
                    if let Err(e) = r {
                        return LnetError::peer_down(self.peer, format!("completion channel: {e}"));
                    }
                }
                _ = tokio::task::yield_now(), if busy => {}
                m = async { match rx.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                    match m {
                        Some(tx) => self.enqueue(tx),
                        None => return LnetError::Shutdown,
                    }
                }
                ev = cm.next() => match ev {
                    Ok(ev) => match ev.kind {
                        CmEventKind::Established | CmEventKind::ConnectResponse | CmEventKind::Other(_) => {}
                        CmEventKind::DeviceRemoval => return LnetError::peer_down(self.peer, "RDMA device removed"),
                        k => return LnetError::peer_down(self.peer, format!("connection event {k:?} (status {})", ev.status)),
                    },
                    Err(e) => return LnetError::peer_down(self.peer, format!("rdma_cm channel: {e}")),
                },
                _ = shut.changed() => return LnetError::Shutdown,
                _ = tick.tick() => {
                    if let Some(e) = self.overdue() {
                        return e;
                    }
                }
            }
        }
    }

    /// Handles every completion there is, then sends what credits allow.
    fn progress(&mut self) -> Result<(), LnetError> {
        let mut done = Vec::new();
        loop {
            done.clear();
            let n = self.ep.poll(&mut done).map_err(|e| LnetError::peer_down(self.peer, e))?;
            for c in done.drain(..) {
                self.complete(c)?;
            }
            if n == 0 {
                break;
            }
        }
        self.pump()
    }

    fn overdue(&self) -> Option<LnetError> {
        let limit = self.sh.cfg.timeout;
        if self.awaiting.values().any(|(_, t)| t.elapsed() > limit) {
            return Some(LnetError::peer_down(self.peer, format!("no PUT_ACK within {limit:?}")));
        }
        if self.sinks.values().any(|s| s.since.elapsed() > limit) {
            return Some(LnetError::peer_down(self.peer, format!("no PUT_DONE within {limit:?}")));
        }
        None
    }

    // ---- sending ---------------------------------------------------------

    fn pump(&mut self) -> Result<(), LnetError> {
        while let Some(front) = self.queue.front() {
            if self.credits == 0 || (self.credits == 1 && self.outstanding == 0) {
                break;
            }
            let slots = front.slots();
            if slots > self.sq_total {
                // Can never fit: fail it rather than wedge the queue.
                if let Some(Out::PutDone { tx, .. }) = self.queue.pop_front() {
                    let e = LnetError::Invalid(format!("payload too fragmented: {slots} work requests"));
                    tx.complete(&self.sh.ctx, Err(e));
                }
                continue;
            }
            if slots > self.sq_free || self.free_bufs.is_empty() {
                break;
            }
            let Some(out) = self.queue.pop_front() else { break };
            let Some(buf) = self.free_bufs.pop() else { break };
            self.post(out, buf)?;
        }
        if self.queue.is_empty()
            && self.outstanding >= self.noop_hiw
            && self.credits >= 1
            && self.sq_free >= 1
            && let Some(buf) = self.free_bufs.pop()
        {
            self.post(Out::Noop, buf)?;
        }
        Ok(())
    }

    fn post(&mut self, out: Out, mut buf: RegBuf) -> Result<(), LnetError> {
        let mut h = MsgHdr::new(MsgType::Noop);
        h.credits = self.outstanding;
        let mut nob = MSG_HDR;
        let mut then = None;
        let mut writes = Vec::new();
        let mut payload = None;
        match out {
            Out::Noop => {}
            Out::Immediate(tx) => {
                h.ty = MsgType::Immediate;
                let b = buf.as_mut_slice();
                b[MSG_HDR..MSG_HDR + HDR_SIZE].copy_from_slice(&tx.hdr.encode());
                nob += HDR_SIZE;
                if let Some(p) = &tx.payload {
                    let n = p.md.lock().read_at(p.offset, &mut b[nob..nob + p.len]);
                    nob += n;
                    self.sh.counters.immediate_bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                then = Some((tx, 0));
            }
            Out::PutReq(tx) => {
                h.ty = MsgType::PutReq;
                h.cookie = self.next_cookie;
                self.next_cookie += 1;
                buf.as_mut_slice()[MSG_HDR..MSG_HDR + HDR_SIZE].copy_from_slice(&tx.hdr.encode());
                nob += HDR_SIZE;
                self.awaiting.insert(h.cookie, (tx, Instant::now()));
            }
            Out::PutAck { cookie, frags } => {
                h.ty = MsgType::PutAck;
                h.cookie = cookie;
                h.nfrags = frags.len() as u32;
                for (i, f) in frags.iter().enumerate() {
                    put_frag(buf.as_mut_slice(), i, *f);
                }
                nob += frags.len() * FRAG_SIZE;
            }
            Out::PutNak { cookie, status } => {
                h.ty = MsgType::PutNak;
                h.cookie = cookie;
                h.status = status;
            }
            Out::PutDone { tx, cookie, payload: p, writes: w, status } => {
                h.ty = MsgType::PutDone;
                h.cookie = cookie;
                h.status = status;
                writes = w;
                payload = p;
                then = Some((tx, status));
            }
        }
        h.nob = nob as u32;
        h.encode(buf.as_mut_slice());
        let slots = writes.len() as u32 + 1;
        writes
            .push(SendWr { op: SendOp::Send, sges: vec![Sge { addr: buf.addr(), len: nob as u32, lkey: buf.lkey() }] });
        let hold = match payload {
            Some(p) => Hold::Chain(buf, p),
            None => Hold::Buf(buf),
        };
        let id = self.wr_id();
        match self.ep.post_send(id, &writes, hold) {
            Ok(()) => {
                self.credits -= 1;
                self.outstanding = 0;
                self.sq_free -= slots;
                self.sends.insert(id, SendCtx { slots, then });
                Ok(())
            }
            Err((e, hold)) => {
                let err = LnetError::peer_down(self.peer, format!("post send: {e}"));
                if let Some((tx, _)) = then {
                    tx.complete(&self.sh.ctx, Err(err.clone()));
                }
                if let Some(Hold::Buf(b) | Hold::Chain(b, _)) = hold {
                    self.free_bufs.push(b);
                }
                Err(err)
            }
        }
    }

    // ---- completions ---------------------------------------------------

    fn complete(&mut self, c: Completion) -> Result<(), LnetError> {
        if !c.ok {
            // The hold (if any) is dropped with `c`; the sender fails in `die`.
            if let Some(ctx) = self.sends.remove(&c.wr_id)
                && let Some((tx, _)) = ctx.then
            {
                tx.complete(&self.sh.ctx, Err(LnetError::peer_down(self.peer, &c.status)));
            }
            return Err(LnetError::peer_down(self.peer, format!("work request failed: {}", c.status)));
        }
        if c.is_recv {
            let Some(Hold::Buf(buf)) = c.hold else {
                return Err(LnetError::peer_down(self.peer, "receive completion without its buffer"));
            };
            return self.received(buf, c.byte_len as usize);
        }
        let Some(ctx) = self.sends.remove(&c.wr_id) else { return Ok(()) };
        self.sq_free += ctx.slots;
        match c.hold {
            Some(Hold::Buf(b)) => self.free_bufs.push(b),
            Some(Hold::Chain(b, p)) => {
                drop(p);
                self.free_bufs.push(b);
            }
            _ => {}
        }
        if let Some((tx, status)) = ctx.then {
            let res = if status == 0 {
                Ok(())
            } else {
                Err(LnetError::peer_down(self.peer, format!("rendezvous failed locally ({status})")))
            };
            tx.complete(&self.sh.ctx, res);
        }
        self.sh.ctx.peer_alive(self.peer);
        Ok(())
    }

    fn proto(&self, why: impl std::fmt::Display) -> LnetError {
        self.sh.stats.proto_errors.fetch_add(1, Ordering::Relaxed);
        self.sh.ctx.count_drop(Some(self.peer));
        tracing::warn!(peer = %self.peer, "o2ib: closing connection on malformed message: {why}");
        LnetError::Proto { peer: self.peer.to_string(), why: why.to_string() }
    }

    fn received(&mut self, buf: RegBuf, n: usize) -> Result<(), LnetError> {
        let h = MsgHdr::decode(buf.as_slice(), n).map_err(|e| self.proto(e))?;
        self.credits += h.credits;
        if self.credits > u32::from(self.sh.cfg.queue_depth) {
            return Err(self.proto(format!("peer returned too many credits ({})", self.credits)));
        }
        match h.ty {
            MsgType::Noop => {}
            MsgType::Immediate => self.on_immediate(&buf, n)?,
            MsgType::PutReq => self.on_put_req(&buf, &h)?,
            MsgType::PutAck => self.on_put_ack(&buf, &h)?,
            MsgType::PutNak => {
                let Some((tx, _)) = self.awaiting.remove(&h.cookie) else {
                    return Err(self.proto(format!("PUT_NAK for unknown cookie {}", h.cookie)));
                };
                let res = if h.status == 0 {
                    Ok(())
                } else {
                    Err(LnetError::peer_down(self.peer, format!("peer failed the receive ({})", h.status)))
                };
                tx.complete(&self.sh.ctx, res);
            }
            MsgType::PutDone => self.on_put_done(&h)?,
        }
        let id = self.wr_id();
        self.ep.post_recv(id, buf).map_err(|(e, _)| LnetError::peer_down(self.peer, format!("repost receive: {e}")))?;
        self.outstanding += 1;
        self.sh.ctx.peer_alive(self.peer);
        Ok(())
    }

    fn lnet_hdr(&self, b: &[u8]) -> Result<crate::wire::LnetHdr, LnetError> {
        let hdr = super::proto::lnet_hdr(b, self.sh.max_payload).map_err(|e| self.proto(e))?;
        if hdr.src != self.peer {
            return Err(self.proto(format!("message claims to be from {}", hdr.src)));
        }
        Ok(hdr)
    }

    fn on_immediate(&mut self, buf: &RegBuf, n: usize) -> Result<(), LnetError> {
        let b = &buf.as_slice()[..n];
        let hdr = self.lnet_hdr(b)?;
        let data = &b[MSG_HDR + HDR_SIZE..];
        if data.len() != hdr.payload_len as usize {
            return Err(self.proto(format!("IMMEDIATE carries {} bytes, header says {}", data.len(), hdr.payload_len)));
        }
        if let Delivery::Sink { sink, token } = self.sh.ctx.parse(self.peer, &hdr) {
            let take = sink.len.min(data.len());
            let got = sink.md.lock().write_at(sink.offset, &data[..take]);
            drop(sink);
            let res = if got == take { Ok(()) } else { Err(LnetError::Invalid("sink outside its MD".into())) };
            self.sh.ctx.recv_done(token, res);
        }
        Ok(())
    }

    fn on_put_req(&mut self, buf: &RegBuf, h: &MsgHdr) -> Result<(), LnetError> {
        let hdr = self.lnet_hdr(buf.as_slice())?;
        if self.sinks.contains_key(&h.cookie) {
            return Err(self.proto(format!("duplicate PUT_REQ cookie {}", h.cookie)));
        }
        let (sink, token) = match self.sh.ctx.parse(self.peer, &hdr) {
            Delivery::Discard => {
                self.queue.push_back(Out::PutNak { cookie: h.cookie, status: 0 });
                return Ok(());
            }
            Delivery::Sink { sink, token } if sink.len == 0 => {
                drop(sink);
                self.sh.ctx.recv_done(token, Ok(()));
                self.queue.push_back(Out::PutNak { cookie: h.cookie, status: 0 });
                return Ok(());
            }
            Delivery::Sink { sink, token } => (sink, token),
        };
        let frags = self.sh.sink_frags(&sink).filter(|f| f.len() <= self.sh.max_frags);
        let (frags, payload, copy_to) = match frags {
            Some(f) => {
                self.sh.counters.zero_copy_sinks.fetch_add(1, Ordering::Relaxed);
                (f, Payload::Md(sink), None)
            }
            None => match RegBuf::new(&self.sh.pd, sink.len) {
                Ok(b) => {
                    let f = vec![Frag { addr: b.addr(), len: sink.len as u32, rkey: b.rkey() }];
                    self.sh.counters.bounce_bytes.fetch_add(sink.len as u64, Ordering::Relaxed);
                    (f, Payload::Bounce(b), Some(sink))
                }
                Err(e) => {
                    drop(sink);
                    self.sh.ctx.recv_done(token, Err(LnetError::io("o2ib bounce buffer", &e)));
                    self.queue.push_back(Out::PutNak { cookie: h.cookie, status: -12 });
                    return Ok(());
                }
            },
        };
        self.ep.expose(h.cookie, Hold::Sink(payload));
        self.sinks.insert(h.cookie, SinkWait { token, copy_to, since: Instant::now() });
        self.queue.push_back(Out::PutAck { cookie: h.cookie, frags });
        Ok(())
    }

    fn on_put_ack(&mut self, buf: &RegBuf, h: &MsgHdr) -> Result<(), LnetError> {
        let Some((tx, _)) = self.awaiting.remove(&h.cookie) else {
            return Err(self.proto(format!("PUT_ACK for unknown cookie {}", h.cookie)));
        };
        let remote = super::proto::frags(buf.as_slice(), h);
        let Some(src) = tx.payload.clone() else {
            let out = Out::PutDone { tx, cookie: h.cookie, payload: None, writes: Vec::new(), status: 0 };
            self.queue.push_back(out);
            return Ok(());
        };
        let want: usize = remote.iter().map(|f| f.len as usize).sum();
        let total = want.min(src.len);
        let (payload, local) = match self.sh.payload_sges(&src) {
            Some(s) => (Payload::Md(src), s),
            None => match RegBuf::new(&self.sh.pd, src.len) {
                Ok(mut b) => {
                    src.md.lock().read_at(src.offset, &mut b.as_mut_slice()[..src.len]);
                    self.sh.counters.bounce_bytes.fetch_add(src.len as u64, Ordering::Relaxed);
                    let s = vec![Sge { addr: b.addr(), len: src.len as u32, lkey: b.lkey() }];
                    (Payload::Bounce(b), s)
                }
                Err(e) => {
                    let _ = e;
                    let out = Out::PutDone { tx, cookie: h.cookie, payload: None, writes: Vec::new(), status: -12 };
                    self.queue.push_back(out);
                    return Ok(());
                }
            },
        };
        let writes = build_writes(&local, &remote, self.sh.max_sge as usize, total);
        self.sh.counters.rdma_write_bytes.fetch_add(total as u64, Ordering::Relaxed);
        self.queue.push_back(Out::PutDone { tx, cookie: h.cookie, payload: Some(payload), writes, status: 0 });
        Ok(())
    }

    fn on_put_done(&mut self, h: &MsgHdr) -> Result<(), LnetError> {
        let Some(w) = self.sinks.remove(&h.cookie) else {
            return Err(self.proto(format!("PUT_DONE for unknown cookie {}", h.cookie)));
        };
        let hold = self.ep.unexpose(h.cookie);
        let mut res = if h.status == 0 {
            Ok(())
        } else {
            Err(LnetError::peer_down(self.peer, format!("peer failed the RDMA ({})", h.status)))
        };
        if let (Some(Hold::Sink(Payload::Bounce(b))), Some(dst)) = (&hold, &w.copy_to)
            && res.is_ok()
        {
            let n = dst.md.lock().write_at(dst.offset, &b.as_slice()[..dst.len]);
            if n != dst.len {
                res = Err(LnetError::Invalid("sink outside its MD".into()));
            }
        }
        drop(hold);
        drop(w.copy_to);
        self.sh.ctx.recv_done(w.token, res);
        Ok(())
    }

    // ---- death ---------------------------------------------------------

    /// Tears the connection down after `run` returned `err`: the QP goes to
    /// the error state, flushed work requests fail their messages, every
    /// pending message and receive fails, and the core hears the peer is down.
    pub async fn die(mut self, err: LnetError) {
        self.ep.kill();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut done = Vec::new();
        while self.ep.inflight() > 0 && Instant::now() < deadline {
            done.clear();
            if self.ep.poll(&mut done).unwrap_or(0) == 0 {
                let _ = tokio::time::timeout_at(deadline, self.ep.wait()).await;
                continue;
            }
            for c in done.drain(..) {
                if let Some(ctx) = self.sends.remove(&c.wr_id)
                    && let Some((tx, _)) = ctx.then
                {
                    tx.complete(&self.sh.ctx, Err(err.clone()));
                }
            }
        }
        for (_, ctx) in self.sends.drain() {
            if let Some((tx, _)) = ctx.then {
                tx.complete(&self.sh.ctx, Err(err.clone()));
            }
        }
        for (_, (tx, _)) in self.awaiting.drain() {
            tx.complete(&self.sh.ctx, Err(err.clone()));
        }
        for out in self.queue.drain(..) {
            if let Out::Immediate(tx) | Out::PutReq(tx) | Out::PutDone { tx, .. } = out {
                tx.complete(&self.sh.ctx, Err(err.clone()));
            }
        }
        drop(self.ep.take_exposed());
        for (_, w) in self.sinks.drain() {
            drop(w.copy_to);
            self.sh.ctx.recv_done(w.token, Err(err.clone()));
        }
        if !matches!(err, LnetError::Shutdown) {
            self.sh.ctx.peer_down(self.peer, err);
        }
    }
}

/// Splits `total` bytes of local sges over the remote fragments as RDMA
/// WRITEs of at most `max_sge` local pieces each.
fn build_writes(local: &[Sge], remote: &[Frag], max_sge: usize, total: usize) -> Vec<SendWr> {
    let mut out = Vec::new();
    let (mut li, mut loff) = (0usize, 0u32);
    let mut left = total as u64;
    for f in remote {
        let mut fo = 0u32;
        while fo < f.len && left > 0 && li < local.len() {
            let mut sges = Vec::new();
            let mut wlen = 0u32;
            while sges.len() < max_sge.max(1) && fo + wlen < f.len && u64::from(wlen) < left && li < local.len() {
                let l = local[li];
                let take =
                    (l.len - loff).min(f.len - fo - wlen).min((left - u64::from(wlen)).min(u64::from(u32::MAX)) as u32);
                sges.push(Sge { addr: l.addr + u64::from(loff), len: take, lkey: l.lkey });
                wlen += take;
                loff += take;
                if loff == l.len {
                    li += 1;
                    loff = 0;
                }
            }
            if wlen == 0 {
                break;
            }
            out.push(SendWr { op: SendOp::Write { remote_addr: f.addr + u64::from(fo), rkey: f.rkey }, sges });
            fo += wlen;
            left -= u64::from(wlen);
        }
    }
    out
}

/// Splits an MD range into per-page pieces `(addr, len)`, merging pieces
/// that are contiguous in memory; `None` for an inline buffer.
pub(super) fn page_pieces(s: &MdSlice) -> Option<Vec<(usize, usize)>> {
    let g = s.md.lock();
    let MdBuffer::Pages { pages, len } = &*g else { return None };
    let end = (s.offset + s.len).min(*len);
    let mut out: Vec<(usize, usize)> = Vec::new();
    let mut pos = s.offset;
    while pos < end {
        let (pi, po) = (pos / PAGE_SIZE, pos % PAGE_SIZE);
        let n = (PAGE_SIZE - po).min(end - pos);
        let a = pages.get(pi)?.addr() + po;
        match out.last_mut() {
            Some(last) if last.0 + last.1 == a => last.1 += n,
            _ => out.push((a, n)),
        }
        pos += n;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_split_over_fragments_and_sge_limits() {
        let local = [Sge { addr: 0x1000, len: 8192, lkey: 1 }, Sge { addr: 0x9000, len: 4096, lkey: 2 }];
        let remote = [Frag { addr: 0x50000, len: 6000, rkey: 7 }, Frag { addr: 0x80000, len: 10000, rkey: 8 }];
        let w = build_writes(&local, &remote, 1, 12288);
        let total: u32 = w.iter().flat_map(|w| w.sges.iter().map(|s| s.len)).sum();
        assert_eq!(total, 12288);
        assert!(w.iter().all(|w| w.sges.len() == 1));
        let SendOp::Write { remote_addr, rkey } = w[1].op else { panic!() };
        assert_eq!((remote_addr, rkey), (0x80000, 8));
        // Short sink: only what the receiver asked for is written.
        let w = build_writes(&local, &remote[..1], 4, 12288);
        assert_eq!(w.iter().flat_map(|w| w.sges.iter().map(|s| s.len)).sum::<u32>(), 6000);
    }
}
