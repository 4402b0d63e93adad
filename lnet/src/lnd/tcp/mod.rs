//! The `tcp` LND (ksocklnd's counterpart) on tokio.
//!
//! Owns connections and framing. Each node keeps, per peer, one outgoing
//! connection that carries every message it sends to that peer, and accepts
//! the peer's outgoing connection to receive from it: two one-way streams,
//! so there is never a race over who connects. A connection opens with a
//! HELLO each way naming both NIDs; frames are an LNet header followed by
//! the payload, written and read with vectored I/O directly on MD pages.
//! Any I/O error or malformed frame closes the connection, fails what rode
//! on it and tells the core the peer is down; reconnects back off
//! exponentially. Never touches portals, credits or events.

mod io;

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

use super::{Delivery, Lnd, LndCtx, LndStats, TxMsg};
use crate::config::TcpConfig;
use crate::error::{LnetError, Result};
use crate::nid::{Net, NetType, Nid};
use crate::wire::{HDR_SIZE, LnetHdr, MsgBody};

#[derive(Default)]
struct Stats {
    conns: AtomicU64,
    connects: AtomicU64,
    accepts: AtomicU64,
    connect_failures: AtomicU64,
    proto_errors: AtomicU64,
}

/// What the connection tasks share (never the peer table, so tasks do not
/// keep the LND alive).
struct Shared {
    nid: Nid,
    cfg: TcpConfig,
    ctx: LndCtx,
    max_payload: u32,
    incarnation: u64,
    stats: Stats,
    shut: watch::Sender<bool>,
    readers: Mutex<Vec<JoinHandle<()>>>,
}

/// The tcp LND.
pub struct TcpLnd {
    sh: Arc<Shared>,
    peers: Mutex<HashMap<Nid, mpsc::UnboundedSender<TxMsg>>>,
    listener: Mutex<Option<TcpListener>>,
    rt: tokio::runtime::Handle,
    down: AtomicBool,
}

impl std::fmt::Debug for TcpLnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TcpLnd({})", self.sh.nid)
    }
}

impl TcpLnd {
    /// Binds the listening socket; nothing is accepted until
    /// [`TcpLnd::start_accepting`].
    pub async fn bind(cfg: TcpConfig, ctx: LndCtx, max_payload: u32) -> Result<Arc<TcpLnd>> {
        let nid = Nid::ip(cfg.addr, Net::new(NetType::Tcp, cfg.net_num));
        let addr = SocketAddrV4::new(cfg.addr, cfg.port);
        let sock = TcpSocket::new_v4().map_err(|e| LnetError::io("tcp socket", &e))?;
        sock.set_reuseaddr(true).map_err(|e| LnetError::io("SO_REUSEADDR", &e))?;
        sock.bind(SocketAddr::V4(addr)).map_err(|e| LnetError::io(format!("bind {addr} for {nid}"), &e))?;
        let listener = sock.listen(1024).map_err(|e| LnetError::io(format!("listen on {addr}"), &e))?;
        let incarnation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let (shut, _) = watch::channel(false);
        Ok(Arc::new(TcpLnd {
            sh: Arc::new(Shared {
                nid,
                cfg,
                ctx,
                max_payload,
                incarnation,
                stats: Stats::default(),
                shut,
                readers: Mutex::new(Vec::new()),
            }),
            peers: Mutex::new(HashMap::new()),
            listener: Mutex::new(Some(listener)),
            rt: tokio::runtime::Handle::current(),
            down: AtomicBool::new(false),
        }))
    }

    /// Starts accepting peers' connections.
    pub fn start_accepting(&self) {
        if let Some(l) = self.listener.lock().take() {
            let sh = Arc::clone(&self.sh);
            let h = self.rt.spawn(accept_loop(sh, l));
            self.sh.readers.lock().push(h);
        }
    }
}

impl Lnd for TcpLnd {
    fn nid(&self) -> Nid {
        self.sh.nid
    }

    fn send(&self, tx: TxMsg) {
        if self.down.load(Ordering::Acquire) {
            tx.complete(&self.sh.ctx, Err(LnetError::Shutdown));
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
        self.rt.spawn(peer_writer(Arc::clone(&self.sh), peer, rx));
    }

    fn shutdown(&self) {
        if self.down.swap(true, Ordering::AcqRel) {
            return;
        }
        self.sh.shut.send_replace(true);
        // Dropping the queues ends the writers once they fail what is left.
        self.peers.lock().clear();
        for h in self.sh.readers.lock().drain(..) {
            h.abort();
        }
    }

    fn stats(&self) -> LndStats {
        let s = &self.sh.stats;
        LndStats {
            conns: s.conns.load(Ordering::Relaxed),
            connects: s.connects.load(Ordering::Relaxed),
            accepts: s.accepts.load(Ordering::Relaxed),
            connect_failures: s.connect_failures.load(Ordering::Relaxed),
            proto_errors: s.proto_errors.load(Ordering::Relaxed),
        }
    }
}

impl Drop for TcpLnd {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn peer_err(nid: Nid, e: impl std::fmt::Display) -> LnetError {
    LnetError::PeerDown { nid, why: e.to_string() }
}

fn hello(src: Nid, dst: Nid, incarnation: u64) -> [u8; HDR_SIZE] {
    LnetHdr { src, dst, payload_len: 0, body: MsgBody::Hello { incarnation } }.encode()
}

/// An established outgoing connection: the write half, plus a task that
/// watches the read half for the peer closing it.
struct OutConn {
    w: tokio::net::tcp::OwnedWriteHalf,
    closed: Arc<AtomicBool>,
    watcher: JoinHandle<()>,
}

impl Drop for OutConn {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

async fn connect(sh: &Arc<Shared>, peer: Nid) -> std::result::Result<OutConn, LnetError> {
    let ip = peer.ipv4().ok_or_else(|| LnetError::Invalid(format!("{peer} is not a tcp NID")))?;
    let to = SocketAddr::V4(SocketAddrV4::new(ip, sh.cfg.port));
    let handshake = async {
        let sock = TcpSocket::new_v4().map_err(|e| peer_err(peer, e))?;
        // Speak from our own NID's address so the peer can check who we are.
        sock.bind(SocketAddr::V4(SocketAddrV4::new(sh.cfg.addr, 0)))
            .map_err(|e| peer_err(peer, format!("bind {}: {e}", sh.cfg.addr)))?;
        let s = sock.connect(to).await.map_err(|e| peer_err(peer, format!("connect {to}: {e}")))?;
        s.set_nodelay(true).map_err(|e| peer_err(peer, e))?;
        io::write_frame(&s, &hello(sh.nid, peer, sh.incarnation), None)
            .await
            .map_err(|e| peer_err(peer, format!("HELLO: {e}")))?;
        let mut b = [0u8; HDR_SIZE];
        match io::read_exact(&s, &mut b).await {
            Ok(true) => {}
            Ok(false) => return Err(peer_err(peer, "closed during HELLO")),
            Err(e) => return Err(peer_err(peer, format!("HELLO: {e}"))),
        }
        let h = LnetHdr::decode(&b, 0)
            .map_err(|e| LnetError::Proto { peer: to.to_string(), why: format!("bad HELLO reply: {e}") })?;
        if !matches!(h.body, MsgBody::Hello { .. }) || h.src != peer || h.dst != sh.nid {
            return Err(LnetError::Proto {
                peer: to.to_string(),
                why: format!("HELLO reply from {} to {} (expected {peer} to {})", h.src, h.dst, sh.nid),
            });
        }
        Ok(s)
    };
    let s = timeout(sh.cfg.connect_timeout, handshake)
        .await
        .map_err(|_| peer_err(peer, format!("no HELLO within {:?}", sh.cfg.connect_timeout)))??;
    let (r, w) = s.into_split();
    let closed = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_close(Arc::clone(sh), peer, r, Arc::clone(&closed)));
    sh.stats.connects.fetch_add(1, Ordering::Relaxed);
    Ok(OutConn { w, closed, watcher })
}

/// Nothing is ever sent to us on our outgoing connection: any readable
/// event is the peer closing or resetting it.
async fn watch_close(sh: Arc<Shared>, peer: Nid, r: tokio::net::tcp::OwnedReadHalf, closed: Arc<AtomicBool>) {
    sh.stats.conns.fetch_add(1, Ordering::Relaxed);
    let mut b = [0u8; 64];
    let why = match io::read_exact(&r, &mut b).await {
        Ok(false) => "peer closed the connection".to_string(),
        Ok(true) => {
            sh.stats.proto_errors.fetch_add(1, Ordering::Relaxed);
            "peer sent data on a send-only connection".to_string()
        }
        Err(e) => e.to_string(),
    };
    sh.stats.conns.fetch_sub(1, Ordering::Relaxed);
    closed.store(true, Ordering::Release);
    sh.ctx.peer_down(peer, peer_err(peer, why));
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
    let mut conn: Option<OutConn> = None;
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
        if conn.as_ref().is_some_and(|c| c.closed.load(Ordering::Acquire)) {
            conn = None;
        }
        if conn.is_none() {
            let now = Instant::now();
            let res = if now < next_try {
                Err(peer_err(peer, format!("reconnect backoff: next attempt in {:?}", next_try - now)))
            } else {
                connect(&sh, peer).await
            };
            match res {
                Ok(c) => {
                    backoff = sh.cfg.reconnect_min;
                    sh.ctx.peer_alive(peer);
                    conn = Some(c);
                }
                Err(e) => {
                    if now >= next_try {
                        sh.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%peer, err = %e, ?backoff, "connect failed");
                        next_try = Instant::now() + backoff;
                        backoff = (backoff * 2).min(sh.cfg.reconnect_max);
                    }
                    tx.complete(&sh.ctx, Err(e.clone()));
                    fail_queued(&sh, &mut rx, &e);
                    sh.ctx.peer_down(peer, e);
                    continue;
                }
            }
        }
        let Some(c) = conn.as_ref() else { continue };
        let frame = tx.hdr.encode();
        match io::write_frame(&c.w, &frame, tx.payload.as_ref()).await {
            Ok(()) => tx.complete(&sh.ctx, Ok(())),
            Err(e) => {
                let err = peer_err(peer, format!("send: {e}"));
                tracing::warn!(%peer, err = %e, "send failed; closing connection");
                conn = None;
                next_try = Instant::now() + sh.cfg.reconnect_min;
                tx.complete(&sh.ctx, Err(err.clone()));
                fail_queued(&sh, &mut rx, &err);
                sh.ctx.peer_down(peer, err);
            }
        }
    }
    drop(conn);
    fail_queued(&sh, &mut rx, &LnetError::Shutdown);
}

async fn accept_loop(sh: Arc<Shared>, l: TcpListener) {
    let mut shut = sh.shut.subscribe();
    loop {
        let (s, from) = tokio::select! {
            r = l.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(err = %e, "accept failed");
                    // EMFILE and friends: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shut.changed() => return,
        };
        sh.stats.accepts.fetch_add(1, Ordering::Relaxed);
        let h = tokio::spawn(incoming(Arc::clone(&sh), s, from));
        let mut readers = sh.readers.lock();
        readers.retain(|h| !h.is_finished());
        readers.push(h);
    }
}

/// Authenticates a peer's HELLO on an accepted connection.
async fn accept_hello(sh: &Shared, s: &TcpStream, from: SocketAddr) -> std::result::Result<Nid, String> {
    let mut b = [0u8; HDR_SIZE];
    let got = timeout(sh.cfg.connect_timeout, io::read_exact(s, &mut b))
        .await
        .map_err(|_| "no HELLO in time".to_string())?
        .map_err(|e| format!("reading HELLO: {e}"))?;
    if !got {
        return Err("closed before HELLO".into());
    }
    let h = LnetHdr::decode(&b, 0).map_err(|e| format!("bad HELLO: {e}"))?;
    if !matches!(h.body, MsgBody::Hello { .. }) {
        return Err(format!("expected HELLO, got {:?}", h.body));
    }
    if h.dst != sh.nid {
        return Err(format!("HELLO is for {}, this is {}", h.dst, sh.nid));
    }
    if h.src.net != sh.nid.net || h.src.ipv4().map(std::net::IpAddr::V4) != Some(from.ip()) {
        return Err(format!("HELLO claims {} but comes from {from}", h.src));
    }
    io::write_frame(s, &hello(sh.nid, h.src, sh.incarnation), None).await.map_err(|e| format!("HELLO reply: {e}"))?;
    Ok(h.src)
}

/// Receives every message a peer sends us on its outgoing connection.
async fn incoming(sh: Arc<Shared>, s: TcpStream, from: SocketAddr) {
    let _ = s.set_nodelay(true);
    let peer = match accept_hello(&sh, &s, from).await {
        Ok(p) => p,
        Err(why) => {
            sh.stats.proto_errors.fetch_add(1, Ordering::Relaxed);
            sh.ctx.count_drop(None);
            tracing::warn!(%from, "rejecting connection: {why}");
            return;
        }
    };
    sh.ctx.peer_alive(peer);
    sh.stats.conns.fetch_add(1, Ordering::Relaxed);
    let err = receive_frames(&sh, &s, peer).await;
    sh.stats.conns.fetch_sub(1, Ordering::Relaxed);
    tracing::info!(%peer, %err, "incoming connection closed");
    sh.ctx.peer_down(peer, err);
}

/// Reads frames until the connection fails; returns why it ended.
async fn receive_frames(sh: &Shared, s: &TcpStream, peer: Nid) -> LnetError {
    let mut b = [0u8; HDR_SIZE];
    loop {
        match io::read_exact(s, &mut b).await {
            Ok(true) => {}
            Ok(false) => return peer_err(peer, "peer closed the connection"),
            Err(e) => return peer_err(peer, e),
        }
        let hdr = match LnetHdr::decode(&b, sh.max_payload) {
            Ok(h) if h.src == peer => h,
            Ok(h) => return proto(sh, peer, format!("frame claims to be from {}", h.src)),
            Err(e) => return proto(sh, peer, e.to_string()),
        };
        let plen = hdr.payload_len as usize;
        match sh.ctx.parse(peer, &hdr) {
            Delivery::Sink { sink, token } => {
                let mut r = io::read_into(s, &sink).await;
                if r.is_ok() && plen > sink.len {
                    r = io::discard(s, plen - sink.len).await;
                }
                drop(sink);
                match r {
                    Ok(()) => sh.ctx.recv_done(token, Ok(())),
                    Err(e) => {
                        let err = peer_err(peer, format!("receive: {e}"));
                        sh.ctx.recv_done(token, Err(err.clone()));
                        return err;
                    }
                }
            }
            Delivery::Discard => {
                if let Err(e) = io::discard(s, plen).await {
                    return peer_err(peer, format!("receive: {e}"));
                }
            }
        }
    }
}

fn proto(sh: &Shared, peer: Nid, why: String) -> LnetError {
    sh.stats.proto_errors.fetch_add(1, Ordering::Relaxed);
    sh.ctx.count_drop(Some(peer));
    tracing::warn!(%peer, "closing connection on malformed frame: {why}");
    LnetError::Proto { peer: peer.to_string(), why }
}
