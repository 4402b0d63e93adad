//! The `tcp` LND (ksocklnd's counterpart) on tokio.
//!
//! Owns connections and framing. A connection opens with a HELLO each way
//! naming both NIDs (the acceptor checks the claimed NID against the source
//! address) and then carries frames in both directions: each peer has one
//! link ([`link`]) that sends on its own connection, or on one the peer
//! opened to us, so a reply never needs a connect back (a `sheen` command or
//! client behind a port nobody can reach still gets its answers). Both
//! sides may open a connection at once; both stay usable, nothing is
//! closed on purpose while frames may be in it. Frames are an LNet header
//! followed by the payload, written and read with vectored I/O directly on
//! MD pages. Any I/O error or malformed frame closes the connection, fails
//! what rode on it and tells the core the peer is down; reconnects back off
//! exponentially. Never touches portals, credits or events.

mod io;
mod link;

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::{Delivery, Lnd, LndCtx, LndStats, TxMsg};
use crate::config::TcpConfig;
use crate::error::{LnetError, Result};
use crate::nid::{Net, NetType, Nid};
use crate::wire::{HDR_SIZE, LnetHdr, MsgBody};

/// What the connection tasks share (never the peer table, so tasks do not
/// keep the LND alive).
struct Shared {
    nid: Nid,
    cfg: TcpConfig,
    ctx: LndCtx,
    max_payload: u32,
    incarnation: u64,
    stats: crate::lnd::LndCounters,
    shut: watch::Sender<bool>,
    readers: Mutex<Vec<JoinHandle<()>>>,
    peers: Mutex<HashMap<Nid, Arc<link::PeerLink>>>,
}

impl Shared {
    /// The sending side for `peer`, created on first use.
    fn link(self: &Arc<Self>, peer: Nid) -> Arc<link::PeerLink> {
        Arc::clone(self.peers.lock().entry(peer).or_insert_with(|| link::PeerLink::new(Arc::clone(self), peer)))
    }

    /// Keeps a connection task's handle so shutdown can stop it.
    fn track(&self, h: JoinHandle<()>) {
        let mut readers = self.readers.lock();
        readers.retain(|h| !h.is_finished());
        readers.push(h);
    }
}

/// The tcp LND.
pub struct TcpLnd {
    sh: Arc<Shared>,
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
        let listener = if cfg.accept {
            let sock = TcpSocket::new_v4().map_err(|e| LnetError::io("tcp socket", &e))?;
            sock.set_reuseaddr(true).map_err(|e| LnetError::io("SO_REUSEADDR", &e))?;
            sock.bind(SocketAddr::V4(addr)).map_err(|e| LnetError::io(format!("bind {addr} for {nid}"), &e))?;
            Some(sock.listen(1024).map_err(|e| LnetError::io(format!("listen on {addr}"), &e))?)
        } else {
            None
        };
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
                stats: crate::lnd::LndCounters::default(),
                shut,
                readers: Mutex::new(Vec::new()),
                peers: Mutex::new(HashMap::new()),
            }),
            listener: Mutex::new(listener),
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
        self.sh.link(tx.peer).send(&self.rt, tx);
    }

    fn shutdown(&self) {
        if self.down.swap(true, Ordering::AcqRel) {
            return;
        }
        self.sh.shut.send_replace(true);
        let links: Vec<_> = self.sh.peers.lock().drain().map(|(_, l)| l).collect();
        for l in links {
            l.shutdown();
        }
        for h in self.sh.readers.lock().drain(..) {
            h.abort();
        }
    }

    fn notify_alive(&self, peer: Nid) {
        let link = self.sh.peers.lock().get(&peer).cloned();
        if let Some(l) = link {
            l.notify_alive();
        }
    }

    fn stats(&self) -> LndStats {
        self.sh.stats.snapshot()
    }
}

impl Drop for TcpLnd {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn hello(src: Nid, dst: Nid, incarnation: u64) -> [u8; HDR_SIZE] {
    LnetHdr { src, dst, payload_len: 0, body: MsgBody::Hello { incarnation } }.encode()
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
        sh.track(tokio::spawn(incoming(Arc::clone(&sh), s, from)));
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

/// Authenticates a connection a peer opened, offers its sending half to the
/// peer's link (so we can answer without connecting back) and reads it.
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
    let (r, w) = s.into_split();
    let closed = Arc::new(AtomicBool::new(false));
    sh.link(peer).offer(Arc::new(link::Conn::new(w, Arc::clone(&closed))));
    read_conn(sh, peer, r, closed).await;
}

/// Reads one connection (either direction) until it fails, then marks it
/// closed and tells the core the peer is down.
async fn read_conn(sh: Arc<Shared>, peer: Nid, r: OwnedReadHalf, closed: Arc<AtomicBool>) {
    sh.stats.conns.fetch_add(1, Ordering::Relaxed);
    let err = receive_frames(&sh, &r, peer).await;
    sh.stats.conns.fetch_sub(1, Ordering::Relaxed);
    closed.store(true, Ordering::Release);
    let link = sh.peers.lock().get(&peer).cloned();
    if let Some(link) = link {
        link.drop_closed();
    }
    tracing::info!(%peer, %err, "connection closed");
    sh.ctx.peer_down(peer, err);
}

/// Reads frames until the connection fails; returns why it ended.
async fn receive_frames(sh: &Shared, s: &impl io::ReadSock, peer: Nid) -> LnetError {
    let mut b = [0u8; HDR_SIZE];
    loop {
        match io::read_exact(s, &mut b).await {
            Ok(true) => {}
            Ok(false) => return LnetError::peer_down(peer, "peer closed the connection"),
            Err(e) => return LnetError::peer_down(peer, e),
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
                        let err = LnetError::peer_down(peer, format!("receive: {e}"));
                        sh.ctx.recv_done(token, Err(err.clone()));
                        return err;
                    }
                }
            }
            Delivery::Discard => {
                if let Err(e) = io::discard(s, plen).await {
                    return LnetError::peer_down(peer, format!("receive: {e}"));
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
