//! The `o2ib` LND (ko2iblnd's counterpart): LNet over InfiniBand / RoCE
//! verbs, with zero-copy RDMA for bulk payloads.
//!
//! Owns rdma_cm connection management, RC queue pairs, message buffers,
//! kiblnd-style credits ([`conn`]) and the registration of the page pool:
//! every slab of the NI's [`PagePool`] is registered once with the NI's
//! protection domain (at start for the slabs that exist, else the first
//! time a page of it is seen), so bulk moves by RDMA WRITE straight between
//! the sender's and the receiver's MD pages. MDs outside registered slabs
//! (inline buffers) bigger than `max_immediate` go through a registered
//! bounce buffer.
//!
//! Connections mirror the tcp LND: each node keeps, per peer, one outgoing
//! RC connection that carries every message it sends to that peer (and the
//! peer's PUT_ACK/PUT_NAK/NOOP answers), and accepts the peer's outgoing
//! connection to receive from it — two one-way connections per pair, so
//! there is never a race over who connects. The connect request's private
//! data names both NIDs, the queue depth and the message size; the acceptor
//! checks them (and that the source address matches the claimed NID) and
//! rejects with a reason otherwise. A failed connect fails the queued
//! messages and backs off exponentially before the next attempt.
//!
//! All unsafe code lives in [`verbs`]. The binary loads libibverbs and
//! librdmacm at run time: without them, or without a device, starting an
//! o2ib NI fails with [`LnetError::LndUnavailable`].

mod conn;
mod proto;
mod verbs;

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

use self::conn::Conn;
use self::proto::{ConnParams, FRAG_SIZE, Frag, MSG_HDR, RejectReason};
use self::verbs::{Caps, CmEventKind, CmId, Endpoint, EventChannel, Pd, SlabMr};
use super::{Lnd, LndCtx, LndStats, TxMsg};
use crate::config::O2ibConfig;
use crate::error::{LnetError, Result};
use crate::md::MdSlice;
use crate::mem::{MemRegion, PAGE_SIZE, PagePool};
use crate::nid::{Net, NetType, Nid};
use crate::wire::HDR_SIZE;

/// Data-path counters, for benchmarks and the zero-copy test.
#[derive(Default)]
struct Counters {
    rdma_write_bytes: AtomicU64,
    bounce_bytes: AtomicU64,
    immediate_bytes: AtomicU64,
    zero_copy_sinks: AtomicU64,
}

/// What an o2ib NI did, and which memory it registered.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct O2ibStats {
    /// Payload bytes this NI RDMA-wrote to peers.
    pub rdma_write_bytes: u64,
    /// Payload bytes that went through a bounce buffer (either side).
    pub bounce_bytes: u64,
    /// Payload bytes copied inside IMMEDIATE messages.
    pub immediate_bytes: u64,
    /// Receives whose sink pages were exposed to the peer directly.
    pub zero_copy_sinks: u64,
    /// Page-pool slabs registered with the NI's protection domain.
    pub registered: Vec<(usize, usize)>,
}

/// What connection tasks share.
struct Shared {
    nid: Nid,
    cfg: O2ibConfig,
    ctx: LndCtx,
    max_payload: u32,
    incarnation: u64,
    msg_size: usize,
    max_frags: usize,
    send_wr: u32,
    max_sge: u32,
    pd: Arc<Pd>,
    pool: PagePool,
    slabs: Mutex<Vec<SlabMr>>,
    stats: crate::lnd::LndCounters,
    counters: Counters,
    shut: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    /// The slab MR holding `[addr, addr+len)`, registering new slabs of
    /// the pool the first time one of their pages shows up.
    fn slab_keys(&self, addr: usize, len: usize) -> Option<(u32, u32)> {
        let mut slabs = self.slabs.lock();
        if let Some(s) = slabs.iter().find(|s| s.contains(addr, len)) {
            return Some((s.lkey(), s.rkey()));
        }
        let r = self.pool.regions().into_iter().find(|r| addr >= r.addr && addr + len <= r.addr + r.len)?;
        match SlabMr::register(&self.pd, &self.pool, r) {
            Ok(s) => {
                let k = (s.lkey(), s.rkey());
                tracing::debug!(nid = %self.nid, addr = r.addr, len = r.len, "o2ib: registered slab");
                slabs.push(s);
                Some(k)
            }
            Err(e) => {
                tracing::warn!(nid = %self.nid, err = %e, "o2ib: cannot register slab; using bounce buffers");
                None
            }
        }
    }

    /// The sink's pages as remote fragments, if all are registered.
    fn sink_frags(&self, s: &MdSlice) -> Option<Vec<Frag>> {
        let mut out: Vec<Frag> = Vec::new();
        for (a, n) in conn::page_pieces(s)? {
            // A merged piece may span slabs: split it back into pages for lookup.
            let mut pos = a;
            while pos < a + n {
                let k = (PAGE_SIZE - pos % PAGE_SIZE).min(a + n - pos);
                let (_, rkey) = self.slab_keys(pos, k)?;
                match out.last_mut() {
                    Some(l) if l.rkey == rkey && l.addr + u64::from(l.len) == pos as u64 => l.len += k as u32,
                    _ => out.push(Frag { addr: pos as u64, len: k as u32, rkey }),
                }
                pos += k;
            }
        }
        Some(out)
    }

    /// The payload's pages as local sges, if all are registered.
    fn payload_sges(&self, s: &MdSlice) -> Option<Vec<verbs::Sge>> {
        let mut out: Vec<verbs::Sge> = Vec::new();
        for (a, n) in conn::page_pieces(s)? {
            let mut pos = a;
            while pos < a + n {
                let k = (PAGE_SIZE - pos % PAGE_SIZE).min(a + n - pos);
                let (lkey, _) = self.slab_keys(pos, k)?;
                match out.last_mut() {
                    Some(l) if l.lkey == lkey && l.addr + u64::from(l.len) == pos as u64 => l.len += k as u32,
                    _ => out.push(verbs::Sge { addr: pos as u64, len: k as u32, lkey }),
                }
                pos += k;
            }
        }
        Some(out)
    }

    fn params(&self, dst: Nid) -> ConnParams {
        ConnParams {
            src: self.nid,
            dst,
            queue_depth: self.cfg.queue_depth,
            msg_size: self.msg_size as u32,
            incarnation: self.incarnation,
        }
    }

    fn spawn(self: &Arc<Self>, f: impl std::future::Future<Output = ()> + Send + 'static) {
        let h = tokio::spawn(f);
        let mut t = self.tasks.lock();
        t.retain(|h| !h.is_finished());
        t.push(h);
    }
}

static REGISTRY: Mutex<Vec<(Nid, Weak<Shared>)>> = Mutex::new(Vec::new());

/// Data-path counters and registered slabs of the o2ib NI `nid` in this
/// process (`None` if there is none).
pub fn stats(nid: Nid) -> Option<O2ibStats> {
    let sh = REGISTRY.lock().iter().rev().find(|(n, _)| *n == nid).and_then(|(_, w)| w.upgrade())?;
    let c = &sh.counters;
    Some(O2ibStats {
        rdma_write_bytes: c.rdma_write_bytes.load(Ordering::Relaxed),
        bounce_bytes: c.bounce_bytes.load(Ordering::Relaxed),
        immediate_bytes: c.immediate_bytes.load(Ordering::Relaxed),
        zero_copy_sinks: c.zero_copy_sinks.load(Ordering::Relaxed),
        registered: sh.slabs.lock().iter().map(|s| s.region()).map(|MemRegion { addr, len }| (addr, len)).collect(),
    })
}

/// The o2ib LND: one NI.
pub struct O2ibLnd {
    sh: Arc<Shared>,
    peers: Mutex<HashMap<Nid, mpsc::UnboundedSender<TxMsg>>>,
    listener: Mutex<Option<(Arc<EventChannel>, CmId)>>,
    rt: tokio::runtime::Handle,
    down: AtomicBool,
}

impl std::fmt::Debug for O2ibLnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "O2ibLnd({})", self.sh.nid)
    }
}

fn unavailable(why: impl std::fmt::Display) -> LnetError {
    LnetError::LndUnavailable("o2ib", format!("o2ib unavailable: {why}"))
}

/// Message buffer size: room for an IMMEDIATE or a PUT_ACK naming every
/// page of the largest payload, rounded up to 4 KiB.
fn msg_size(max_immediate: u32, max_payload: u32) -> (usize, usize) {
    let frags = max_payload as usize / PAGE_SIZE + 2;
    let need = MSG_HDR + (HDR_SIZE + max_immediate as usize).max(frags * FRAG_SIZE);
    let size = need.div_ceil(4096) * 4096;
    (size, (size - MSG_HDR) / FRAG_SIZE)
}

impl O2ibLnd {
    /// Opens the device behind `cfg.addr`, registers the pool's slabs and
    /// binds the listener; nothing is accepted until [`O2ibLnd::start_accepting`].
    pub fn start(cfg: O2ibConfig, ctx: LndCtx, max_payload: u32, pool: PagePool) -> Result<Arc<O2ibLnd>> {
        verbs::probe().map_err(unavailable)?;
        let nid = Nid::ip(cfg.addr, Net::new(NetType::O2ib, cfg.net_num));
        let ch = EventChannel::new().map_err(|e| unavailable(format!("rdma_cm: {e}")))?;
        let id = CmId::new(&ch).map_err(|e| unavailable(format!("rdma_cm: {e}")))?;
        let at = SocketAddrV4::new(cfg.addr, cfg.port);
        id.bind(at).map_err(|e| unavailable(format!("{e} (is {} on an RDMA-capable interface?)", cfg.addr)))?;
        let dev = id.device().ok_or_else(|| unavailable(format!("{} is not on an RDMA device", cfg.addr)))?;
        let caps: Caps = dev.caps().map_err(|e| unavailable(format!("ibv_query_device: {e}")))?;
        let pd = Pd::new(dev).map_err(|e| unavailable(format!("ibv_alloc_pd: {e}")))?;
        let (msg_size, max_frags) = msg_size(cfg.max_immediate, max_payload);
        let send_wr = caps.max_qp_wr.min(4096).min(caps.max_cqe / 2).max(u32::from(cfg.queue_depth) * 2 + 2);
        let incarnation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let (shut, _) = watch::channel(false);
        let sh = Arc::new(Shared {
            nid,
            ctx,
            max_payload,
            incarnation,
            msg_size,
            max_frags,
            send_wr,
            max_sge: caps.max_sge.clamp(1, 30),
            pd,
            pool,
            slabs: Mutex::new(Vec::new()),
            stats: crate::lnd::LndCounters::default(),
            counters: Counters::default(),
            shut,
            tasks: Mutex::new(Vec::new()),
            cfg,
        });
        for r in sh.pool.regions() {
            let s = SlabMr::register(&sh.pd, &sh.pool, r).map_err(|e| LnetError::io("registering a page slab", &e))?;
            sh.slabs.lock().push(s);
        }
        REGISTRY.lock().retain(|(_, w)| w.strong_count() > 0);
        REGISTRY.lock().push((nid, Arc::downgrade(&sh)));
        tracing::info!(%nid, msg_size, send_wr, max_sge = sh.max_sge, "o2ib NI up");
        Ok(Arc::new(O2ibLnd {
            sh,
            peers: Mutex::new(HashMap::new()),
            listener: Mutex::new(Some((ch, id))),
            rt: tokio::runtime::Handle::current(),
            down: AtomicBool::new(false),
        }))
    }

    /// Starts listening for peers' connections.
    pub fn start_accepting(&self) -> Result<()> {
        let Some((ch, id)) = self.listener.lock().take() else { return Ok(()) };
        id.listen(1024).map_err(|e| LnetError::io("rdma_listen", &e))?;
        let sh = Arc::clone(&self.sh);
        let _guard = self.rt.enter();
        self.sh.spawn(accept_loop(sh, ch, id));
        Ok(())
    }
}

impl Lnd for O2ibLnd {
    fn nid(&self) -> Nid {
        self.sh.nid
    }

    fn send(&self, tx: TxMsg) {
        if self.down.load(Ordering::Acquire) {
            let ctx = self.sh.ctx.clone();
            self.rt.spawn(async move { tx.complete(&ctx, Err(LnetError::Shutdown)) });
            return;
        }
        let mut peers = self.peers.lock();
        let tx = match peers.get(&tx.peer) {
            Some(q) => match q.send(tx) {
                Ok(()) => return,
                Err(mpsc::error::SendError(tx)) => tx,
            },
            None => tx,
        };
        let (q, rx) = mpsc::unbounded_channel();
        let peer = tx.peer;
        let _ = q.send(tx);
        peers.insert(peer, q);
        let sh = Arc::clone(&self.sh);
        let _guard = self.rt.enter();
        self.sh.spawn(peer_writer(sh, peer, rx));
    }

    fn shutdown(&self) {
        if self.down.swap(true, Ordering::AcqRel) {
            return;
        }
        // Connection tasks see this, tear their QPs down and fail what is left.
        self.sh.shut.send_replace(true);
        self.peers.lock().clear();
        self.listener.lock().take();
    }

    fn stats(&self) -> LndStats {
        self.sh.stats.snapshot()
    }
}

impl Drop for O2ibLnd {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn expect(
    ch: &Arc<EventChannel>,
    peer: Nid,
    want: CmEventKind,
) -> std::result::Result<verbs::CmEvent, LnetError> {
    loop {
        let ev = ch.next().await.map_err(|e| LnetError::peer_down(peer, format!("rdma_cm: {e}")))?;
        if ev.kind == want {
            return Ok(ev);
        }
        match ev.kind {
            CmEventKind::Rejected => {
                let why = match RejectReason::decode(&ev.private) {
                    Some(r) => format!("rejected by the peer: {r:?}"),
                    None => format!("rejected (status {}: no listener or unreachable)", ev.status),
                };
                return Err(LnetError::peer_down(peer, why));
            }
            CmEventKind::Other(_) => {}
            k => {
                return Err(LnetError::peer_down(
                    peer,
                    format!("{k:?} (status {}) while waiting for {want:?}", ev.status),
                ));
            }
        }
    }
}

/// Resolves, connects and checks the acceptor's parameters.
async fn connect(sh: &Arc<Shared>, peer: Nid) -> std::result::Result<(Conn, Arc<EventChannel>), LnetError> {
    let ip = peer.ipv4().ok_or_else(|| LnetError::Invalid(format!("{peer} is not an o2ib NID")))?;
    let ms = sh.cfg.connect_timeout.as_millis().min(i32::MAX as u128) as i32;
    let work = async {
        let ch = EventChannel::new().map_err(|e| LnetError::peer_down(peer, e))?;
        let id = CmId::new(&ch).map_err(|e| LnetError::peer_down(peer, e))?;
        id.resolve_addr(SocketAddrV4::new(sh.cfg.addr, 0), SocketAddrV4::new(ip, sh.cfg.port), ms)
            .map_err(|e| LnetError::peer_down(peer, e))?;
        expect(&ch, peer, CmEventKind::AddrResolved).await?;
        id.resolve_route(ms).map_err(|e| LnetError::peer_down(peer, e))?;
        expect(&ch, peer, CmEventKind::RouteResolved).await?;
        let qd = u32::from(sh.cfg.queue_depth);
        let ep = Endpoint::new(id, &sh.pd, sh.send_wr, qd, sh.max_sge).map_err(|e| LnetError::peer_down(peer, e))?;
        let conn = Conn::new(Arc::clone(sh), peer, ep, Arc::clone(&ch))?;
        let p = sh.params(peer).encode();
        conn.endpoint()
            .id()
            .connect(&p, sh.cfg.retry_count, sh.cfg.rnr_retry_count)
            .map_err(|e| LnetError::peer_down(peer, e))?;
        let ev = expect(&ch, peer, CmEventKind::Established).await?;
        let rep =
            ConnParams::decode(&ev.private).map_err(|e| LnetError::peer_down(peer, format!("bad accept: {e}")))?;
        if rep.src != peer || rep.dst != sh.nid {
            return Err(LnetError::peer_down(
                peer,
                format!("accepted by {} for {} (expected {peer} for {})", rep.src, rep.dst, sh.nid),
            ));
        }
        Ok((conn, ch))
    };
    timeout(sh.cfg.connect_timeout, work)
        .await
        .map_err(|_| LnetError::peer_down(peer, format!("not connected within {:?}", sh.cfg.connect_timeout)))?
}

fn fail_queued(sh: &Shared, rx: &mut mpsc::UnboundedReceiver<TxMsg>, err: &LnetError) {
    while let Ok(tx) = rx.try_recv() {
        tx.complete(&sh.ctx, Err(err.clone()));
    }
}

/// Sends every message for one peer, connecting (and reconnecting with
/// backoff) as needed.
async fn peer_writer(sh: Arc<Shared>, peer: Nid, mut rx: mpsc::UnboundedReceiver<TxMsg>) {
    let mut shut = sh.shut.subscribe();
    let mut backoff = sh.cfg.reconnect_min;
    let mut next_try = Instant::now();
    loop {
        let tx = tokio::select! {
            biased;
            m = rx.recv() => match m { Some(t) => t, None => break },
            _ = shut.changed() => break,
        };
        if *shut.borrow() {
            tx.complete(&sh.ctx, Err(LnetError::Shutdown));
            break;
        }
        let now = Instant::now();
        let res = if now < next_try {
            Err(LnetError::peer_down(peer, format!("reconnect backoff: next attempt in {:?}", next_try - now)))
        } else {
            connect(&sh, peer).await
        };
        let (mut conn, _ch) = match res {
            Ok(c) => c,
            Err(e) => {
                if now >= next_try {
                    sh.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, err = %e, ?backoff, "o2ib connect failed");
                    next_try = Instant::now() + backoff;
                    backoff = (backoff * 2).min(sh.cfg.reconnect_max);
                }
                tx.complete(&sh.ctx, Err(e.clone()));
                fail_queued(&sh, &mut rx, &e);
                sh.ctx.peer_down(peer, e);
                continue;
            }
        };
        backoff = sh.cfg.reconnect_min;
        sh.stats.connects.fetch_add(1, Ordering::Relaxed);
        sh.stats.conns.fetch_add(1, Ordering::Relaxed);
        sh.ctx.peer_alive(peer);
        conn.enqueue(tx);
        let err = conn.run(Some(&mut rx), &mut shut).await;
        sh.stats.conns.fetch_sub(1, Ordering::Relaxed);
        tracing::info!(%peer, %err, "o2ib outgoing connection closed");
        next_try = Instant::now() + sh.cfg.reconnect_min.min(Duration::from_millis(100));
        conn.die(err.clone()).await;
        if matches!(err, LnetError::Shutdown) {
            break;
        }
    }
    fail_queued(&sh, &mut rx, &LnetError::Shutdown);
}

async fn accept_loop(sh: Arc<Shared>, ch: Arc<EventChannel>, listener: CmId) {
    let mut shut = sh.shut.subscribe();
    loop {
        let ev = tokio::select! {
            e = ch.next() => e,
            _ = shut.changed() => break,
        };
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::error!(nid = %sh.nid, err = %e, "o2ib listener channel failed");
                break;
            }
        };
        match ev.kind {
            CmEventKind::ConnectRequest => {
                if let Some(id) = ev.new_id {
                    incoming(&sh, id, &ev.private);
                }
            }
            CmEventKind::DeviceRemoval => {
                tracing::error!(nid = %sh.nid, "o2ib: RDMA device removed; no longer accepting");
                break;
            }
            k => tracing::debug!(nid = %sh.nid, ?k, "o2ib listener event"),
        }
    }
    drop(listener);
}

/// Checks a connect request; rejects with a reason or starts the connection.
fn incoming(sh: &Arc<Shared>, mut id: CmId, private: &[u8]) {
    let reject = |id: &CmId, r: RejectReason, why: String| {
        sh.stats.proto_errors.fetch_add(1, Ordering::Relaxed);
        sh.ctx.count_drop(None);
        tracing::warn!(nid = %sh.nid, "o2ib: rejecting connection ({r:?}): {why}");
        let _ = id.reject(&r.encode());
    };
    if *sh.shut.borrow() {
        return reject(&id, RejectReason::Shutdown, "shutting down".into());
    }
    let p = match ConnParams::decode(private) {
        Ok(p) => p,
        Err(e) => return reject(&id, RejectReason::Protocol, e),
    };
    if p.dst != sh.nid {
        return reject(&id, RejectReason::WrongNid, format!("request is for {}, this is {}", p.dst, sh.nid));
    }
    if p.src.net != sh.nid.net || p.src.ipv4() != id.peer_ipv4() {
        return reject(&id, RejectReason::WrongSource, format!("{} claimed from {:?}", p.src, id.peer_ipv4()));
    }
    if p.msg_size as usize != sh.msg_size || p.queue_depth != sh.cfg.queue_depth {
        let why = format!(
            "peer msg_size {} queue_depth {}, ours {} {} (max_payload, max_immediate and queue_depth must match)",
            p.msg_size, p.queue_depth, sh.msg_size, sh.cfg.queue_depth
        );
        return reject(&id, RejectReason::Params, why);
    }
    let ch = match EventChannel::new().and_then(|ch| id.migrate(&ch).map(|()| ch)) {
        Ok(ch) => ch,
        Err(e) => return reject(&id, RejectReason::NoResources, e.to_string()),
    };
    let peer = p.src;
    let ep = match Endpoint::new(id, &sh.pd, sh.send_wr, u32::from(sh.cfg.queue_depth), sh.max_sge) {
        Ok(ep) => ep,
        Err(e) => {
            // The id is gone with the failed endpoint: the peer sees a reject.
            tracing::warn!(%peer, err = %e, "o2ib: cannot create a QP for an incoming connection");
            return;
        }
    };
    let conn = match Conn::new(Arc::clone(sh), peer, ep, Arc::clone(&ch)) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%peer, err = %e, "o2ib: cannot set up an incoming connection");
            return;
        }
    };
    let rep = sh.params(peer).encode();
    if let Err(e) = conn.endpoint().id().accept(&rep, sh.cfg.retry_count, sh.cfg.rnr_retry_count) {
        tracing::warn!(%peer, err = %e, "o2ib: rdma_accept failed");
        return;
    }
    sh.stats.accepts.fetch_add(1, Ordering::Relaxed);
    let sh2 = Arc::clone(sh);
    sh.spawn(run_incoming(sh2, peer, conn, ch));
}

async fn run_incoming(sh: Arc<Shared>, peer: Nid, mut conn: Conn, ch: Arc<EventChannel>) {
    let mut shut = sh.shut.subscribe();
    let est = timeout(sh.cfg.connect_timeout, expect(&ch, peer, CmEventKind::Established)).await;
    let err = match est {
        Ok(Ok(_)) => {
            sh.ctx.peer_alive(peer);
            sh.stats.conns.fetch_add(1, Ordering::Relaxed);
            let e = conn.run(None, &mut shut).await;
            sh.stats.conns.fetch_sub(1, Ordering::Relaxed);
            tracing::info!(%peer, err = %e, "o2ib incoming connection closed");
            e
        }
        Ok(Err(e)) => e,
        Err(_) => LnetError::peer_down(peer, "incoming connection never established"),
    };
    conn.die(err).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_size_fits_a_full_put_ack() {
        let (size, frags) = msg_size(4096, 4 << 20);
        assert_eq!(size % 4096, 0);
        assert!(frags > (4 << 20) / PAGE_SIZE);
        assert!(size >= MSG_HDR + HDR_SIZE + 4096);
    }
}
