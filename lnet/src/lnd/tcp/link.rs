//! The sending side of the tcp LND: one link per peer.
//!
//! Owns the peer's outgoing connection (connect, HELLO, reconnect with
//! backoff), the queue of frames waiting for it, and the two ways a frame
//! leaves: written straight from the caller's thread when the link is idle
//! and the socket takes it without blocking (small messages: no task hop),
//! or by the link's writer task, which waits for the socket. One writer at a
//! time (`busy`), frames in the order `send` saw them, except that small
//! frames pass queued bulk frames ([`enqueue`]). Every frame is
//! completed exactly once; a failed connection fails the frame on the wire
//! and everything queued behind it, and tells the core the peer is down.

use std::collections::VecDeque;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tokio::net::TcpSocket;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;
use tokio::time::{Instant, timeout};

use super::io;
use super::{Shared, hello};
use crate::error::LnetError;
use crate::lnd::TxMsg;
use crate::nid::Nid;
use crate::wire::{HDR_SIZE, LnetHdr, MsgBody};

/// Frames up to this size are tried inline from the sender's thread.
const INLINE_MAX: usize = 64 << 10;

/// A frame on its way: the message, its encoded header and how much of the
/// frame has been written.
struct Outgoing {
    tx: TxMsg,
    hdr: [u8; HDR_SIZE],
    done: usize,
}

impl Outgoing {
    fn new(tx: TxMsg) -> Outgoing {
        let hdr = tx.hdr.encode();
        Outgoing { tx, hdr, done: 0 }
    }
}

/// Queues `out` behind every frame already queued — except that a small
/// frame (at most [`INLINE_MAX`] bytes: requests, replies, ACKs, GETs) goes
/// ahead of bulk frames not yet started, as ksocklnd keeps control messages
/// off its bulk connections: a reply never waits for megabytes of other
/// RPCs' data. Small frames keep their order among themselves, bulk frames
/// theirs.
fn enqueue(queue: &mut VecDeque<Outgoing>, out: Outgoing) {
    let queued = queue.iter().map(|o| (io::frame_len(o.tx.payload.as_ref()), o.done > 0));
    match place(queued, io::frame_len(out.tx.payload.as_ref())) {
        Some(i) => queue.insert(i, out),
        None => queue.push_back(out),
    }
}

/// Where a frame of `len` bytes goes in a queue of `(length, started)`
/// frames: before the first bulk frame not yet started if it is small,
/// else (`None`) at the back.
fn place(queued: impl Iterator<Item = (usize, bool)>, len: usize) -> Option<usize> {
    if len > INLINE_MAX {
        return None;
    }
    queued.enumerate().find(|(_, (l, started))| *l > INLINE_MAX && !started).map(|(i, _)| i)
}

/// The sending half of an established connection (initiated by either
/// side: connections carry frames both ways). Its receiving half is read
/// by a reader task until the connection fails; the reader sets `closed`.
pub(super) struct Conn {
    w: OwnedWriteHalf,
    closed: Arc<AtomicBool>,
}

impl Conn {
    pub(super) fn new(w: OwnedWriteHalf, closed: Arc<AtomicBool>) -> Conn {
        Conn { w, closed }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

#[derive(Default)]
struct LinkState {
    queue: VecDeque<Outgoing>,
    /// The connection frames are sent on.
    conn: Option<Arc<Conn>>,
    /// Other live connections to the peer (both sides opened one at once):
    /// kept open, since closing one would look like the peer dying to the
    /// other side, until they fail on their own.
    spare: Vec<Arc<Conn>>,
    /// Someone (the task or an inline sender) is writing on `conn`.
    busy: bool,
    /// The writer task is running.
    task: bool,
    /// The LND shut down: fail everything.
    shut: bool,
    /// The peer is known to be up: the next send connects at once, even
    /// inside a reconnect backoff.
    retry_now: bool,
}

impl LinkState {
    /// Takes a live connection into use, or keeps it as a spare when one
    /// is already in use.
    fn adopt(&mut self, conn: Arc<Conn>) {
        self.spare.retain(|c| !c.is_closed());
        if conn.is_closed() {
            return;
        }
        match &self.conn {
            Some(cur) if Arc::ptr_eq(cur, &conn) => {}
            Some(cur) if !cur.is_closed() => self.spare.push(conn),
            _ => self.conn = Some(conn),
        }
    }
}

/// One peer's sending side.
pub(super) struct PeerLink {
    peer: Nid,
    sh: Arc<Shared>,
    st: Mutex<LinkState>,
    wake: Notify,
}

impl PeerLink {
    pub(super) fn new(sh: Arc<Shared>, peer: Nid) -> Arc<PeerLink> {
        Arc::new(PeerLink { peer, sh, st: Mutex::new(LinkState::default()), wake: Notify::new() })
    }

    /// The peer is up again: end a reconnect backoff.
    pub(super) fn notify_alive(&self) {
        self.st.lock().retry_now = true;
    }

    /// Sends `tx`: inline when the link is idle and the socket takes the
    /// whole frame, else through the writer task.
    pub(super) fn send(self: &Arc<Self>, rt: &tokio::runtime::Handle, tx: TxMsg) {
        let mut out = Outgoing::new(tx);
        let mut st = self.st.lock();
        if st.shut {
            drop(st);
            out.tx.complete(&self.sh.ctx, Err(LnetError::Shutdown));
            return;
        }
        let inline = !st.busy
            && st.queue.is_empty()
            && io::frame_len(out.tx.payload.as_ref()) <= INLINE_MAX
            && st.conn.as_ref().is_some_and(|c| !c.is_closed());
        if inline && let Some(conn) = st.conn.clone() {
            st.busy = true;
            drop(st);
            match io::try_write_frame(&conn.w, &out.hdr, out.tx.payload.as_ref(), 0) {
                Ok(done) if done == io::frame_len(out.tx.payload.as_ref()) => {
                    out.tx.complete(&self.sh.ctx, Ok(()));
                    let mut st = self.st.lock();
                    st.busy = false;
                    if !st.queue.is_empty() {
                        self.wake.notify_one();
                    }
                }
                Ok(done) => {
                    // The socket is full: the task finishes the frame.
                    out.done = done;
                    let mut st = self.st.lock();
                    st.busy = false;
                    st.queue.push_front(out);
                    self.wake.notify_one();
                }
                Err(e) => {
                    let err = LnetError::peer_down(self.peer, format!("send: {e}"));
                    tracing::warn!(peer = %self.peer, err = %e, "send failed; closing connection");
                    let failed = {
                        let mut st = self.st.lock();
                        st.busy = false;
                        st.conn = None;
                        std::mem::take(&mut st.queue)
                    };
                    out.tx.complete(&self.sh.ctx, Err(err.clone()));
                    self.fail_all(failed, &err);
                    self.sh.ctx.peer_down(self.peer, err);
                }
            }
            return;
        }
        enqueue(&mut st.queue, out);
        if !st.task {
            st.task = true;
            rt.spawn(writer(Arc::clone(self)));
        }
        drop(st);
        self.wake.notify_one();
    }

    /// Offers a connection the peer opened to us: used for sending when the
    /// link has no live connection of its own, so replies need no connect.
    pub(super) fn offer(&self, conn: Arc<Conn>) {
        let mut st = self.st.lock();
        if st.shut {
            return;
        }
        st.adopt(conn);
        drop(st);
        self.wake.notify_one();
    }

    /// Lets go of connections whose reader has ended, so their sockets close
    /// (the peer sees the close) once no writer holds them.
    pub(super) fn drop_closed(&self) {
        let mut st = self.st.lock();
        st.spare.retain(|c| !c.is_closed());
        if st.conn.as_ref().is_some_and(|c| c.is_closed()) {
            st.conn = None;
        }
    }

    /// Fails everything queued and stops the writer.
    pub(super) fn shutdown(&self) {
        let failed = {
            let mut st = self.st.lock();
            st.shut = true;
            st.conn = None;
            st.spare.clear();
            std::mem::take(&mut st.queue)
        };
        self.fail_all(failed, &LnetError::Shutdown);
        self.wake.notify_one();
    }

    fn fail_all(&self, items: VecDeque<Outgoing>, err: &LnetError) {
        for o in items {
            o.tx.complete(&self.sh.ctx, Err(err.clone()));
        }
    }

    /// Takes the next frame to write, waiting for one.
    async fn next(&self) -> Option<(Outgoing, Option<Arc<Conn>>)> {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.st.lock();
                if st.shut {
                    st.task = false;
                    return None;
                }
                if !st.busy
                    && let Some(o) = st.queue.pop_front()
                {
                    st.busy = true;
                    let conn = st.conn.clone().filter(|c| !c.is_closed());
                    return Some((o, conn));
                }
            }
            notified.await;
        }
    }

    fn finish(&self, conn: Arc<Conn>) {
        let mut st = self.st.lock();
        st.busy = false;
        st.adopt(conn);
    }
}

/// The link's writer task: connects as needed and writes what the inline
/// path could not.
async fn writer(link: Arc<PeerLink>) {
    let sh = Arc::clone(&link.sh);
    let peer = link.peer;
    let mut backoff = sh.cfg.reconnect_min;
    let mut next_try = Instant::now();
    while let Some((out, conn)) = link.next().await {
        let conn = match conn {
            Some(c) => c,
            None => {
                let now = Instant::now();
                if std::mem::take(&mut link.st.lock().retry_now) {
                    next_try = now;
                    backoff = sh.cfg.reconnect_min;
                }
                let res = if now < next_try {
                    Err(LnetError::peer_down(peer, format!("reconnect backoff: next attempt in {:?}", next_try - now)))
                } else {
                    connect(&sh, peer).await
                };
                match res {
                    Ok(c) => {
                        backoff = sh.cfg.reconnect_min;
                        sh.ctx.peer_alive(peer);
                        Arc::new(c)
                    }
                    Err(e) => {
                        if now >= next_try {
                            sh.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(%peer, err = %e, ?backoff, "connect failed");
                            next_try = Instant::now() + backoff;
                            backoff = (backoff * 2).min(sh.cfg.reconnect_max);
                        }
                        let failed = {
                            let mut st = link.st.lock();
                            st.busy = false;
                            std::mem::take(&mut st.queue)
                        };
                        out.tx.complete(&sh.ctx, Err(e.clone()));
                        link.fail_all(failed, &e);
                        sh.ctx.peer_down(peer, e);
                        continue;
                    }
                }
            }
        };
        match io::write_frame_from(&conn.w, &out.hdr, out.tx.payload.as_ref(), out.done).await {
            Ok(()) => {
                out.tx.complete(&sh.ctx, Ok(()));
                link.finish(conn);
            }
            Err(e) => {
                let err = LnetError::peer_down(peer, format!("send: {e}"));
                tracing::warn!(%peer, err = %e, "send failed; closing connection");
                next_try = Instant::now() + sh.cfg.reconnect_min;
                let failed = {
                    let mut st = link.st.lock();
                    st.busy = false;
                    st.conn = None;
                    std::mem::take(&mut st.queue)
                };
                out.tx.complete(&sh.ctx, Err(err.clone()));
                link.fail_all(failed, &err);
                sh.ctx.peer_down(peer, err);
            }
        }
    }
}

async fn connect(sh: &Arc<Shared>, peer: Nid) -> Result<Conn, LnetError> {
    let ip = peer.ipv4().ok_or_else(|| LnetError::Invalid(format!("{peer} is not a tcp NID")))?;
    let to = SocketAddr::V4(SocketAddrV4::new(ip, sh.cfg.port));
    let handshake = async {
        let sock = TcpSocket::new_v4().map_err(|e| LnetError::peer_down(peer, e))?;
        // Speak from our own NID's address so the peer can check who we are.
        sock.bind(SocketAddr::V4(SocketAddrV4::new(sh.cfg.addr, 0)))
            .map_err(|e| LnetError::peer_down(peer, format!("bind {}: {e}", sh.cfg.addr)))?;
        let s = sock.connect(to).await.map_err(|e| LnetError::peer_down(peer, format!("connect {to}: {e}")))?;
        s.set_nodelay(true).map_err(|e| LnetError::peer_down(peer, e))?;
        io::write_frame(&s, &hello(sh.nid, peer, sh.incarnation), None)
            .await
            .map_err(|e| LnetError::peer_down(peer, format!("HELLO: {e}")))?;
        let mut b = [0u8; HDR_SIZE];
        match io::read_exact(&s, &mut b).await {
            Ok(true) => {}
            Ok(false) => return Err(LnetError::peer_down(peer, "closed during HELLO")),
            Err(e) => return Err(LnetError::peer_down(peer, format!("HELLO: {e}"))),
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
        .map_err(|_| LnetError::peer_down(peer, format!("no HELLO within {:?}", sh.cfg.connect_timeout)))??;
    let (r, w) = s.into_split();
    let closed = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(super::read_conn(Arc::clone(sh), peer, r, Arc::clone(&closed)));
    sh.track(reader);
    sh.stats.connects.fetch_add(1, Ordering::Relaxed);
    Ok(Conn::new(w, closed))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BULK: usize = 1 << 20;
    const SMALL: usize = 200;

    #[test]
    fn small_frames_pass_queued_bulk_in_their_own_order() {
        // Empty queue, or only small frames: at the back.
        assert_eq!(place([].into_iter(), SMALL), None);
        assert_eq!(place([(SMALL, false), (SMALL, false)].into_iter(), SMALL), None);
        // Bulk frames queued: a small one goes before the first not started.
        assert_eq!(place([(BULK, true), (BULK, false), (SMALL, false)].into_iter(), SMALL), Some(1));
        assert_eq!(place([(SMALL, false), (BULK, false), (BULK, false)].into_iter(), SMALL), Some(1));
        // Behind earlier small frames that passed the same bulk.
        assert_eq!(place([(BULK, true), (SMALL, false), (BULK, false)].into_iter(), SMALL), Some(2));
        // Bulk frames always go to the back, and never pass anything.
        assert_eq!(place([(SMALL, false), (BULK, false)].into_iter(), BULK), None);
        assert_eq!(place([(BULK, false)].into_iter(), INLINE_MAX), Some(0));
        assert_eq!(place([(BULK, false)].into_iter(), INLINE_MAX + 1), None);
    }
}
