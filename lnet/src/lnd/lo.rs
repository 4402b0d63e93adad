//! The `lo` LND: messages between LNet instances of one process.
//!
//! `0@lo` is always the local node itself; `N@lo` (N > 0) names another
//! instance in this process, registered in the process-wide lo fabric. A
//! message is delivered by copying the sender's MD range straight into the
//! receiver's MD range (one copy, no intermediate buffer, as Lustre's lolnd).
//! Deliveries run on one worker task per instance, so `send` never re-enters
//! the core.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};

use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::{Delivery, Lnd, LndCtx, LndStats, TxMsg};
use crate::error::{LnetError, Result};
use crate::md::MdSlice;
use crate::nid::{Net, NetType, Nid};

static FABRIC: LazyLock<Mutex<HashMap<u32, Weak<LoLnd>>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// The in-process LND.
pub struct LoLnd {
    nid: Nid,
    ctx: LndCtx,
    queue: mpsc::UnboundedSender<TxMsg>,
    shut: AtomicBool,
    delivered: AtomicU64,
}

impl std::fmt::Debug for LoLnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoLnd({})", self.nid)
    }
}

impl LoLnd {
    /// Starts the lo NI as `addr@lo` (0: not reachable by other instances).
    pub fn start(addr: u32, ctx: LndCtx) -> Result<Arc<LoLnd>> {
        let nid = Nid { net: Net::new(NetType::Lo, 0), addr };
        let (queue, rx) = mpsc::unbounded_channel();
        let lnd = Arc::new(LoLnd { nid, ctx, queue, shut: AtomicBool::new(false), delivered: AtomicU64::new(0) });
        if addr != 0 {
            let mut f = FABRIC.lock();
            if f.get(&addr).is_some_and(|w| w.strong_count() > 0) {
                return Err(LnetError::Invalid(format!("{nid} is already in use in this process")));
            }
            f.insert(addr, Arc::downgrade(&lnd));
        }
        tokio::spawn(worker(Arc::downgrade(&lnd), rx));
        Ok(lnd)
    }

    fn is_self(&self, peer: Nid) -> bool {
        // The core routes to this NI only lo NIDs and its own NIDs on other nets.
        peer.net.kind != NetType::Lo || peer.addr == 0 || peer == self.nid
    }

    fn deliver(&self, tx: TxMsg) {
        if self.shut.load(Ordering::Acquire) {
            tx.complete(&self.ctx, Err(LnetError::Shutdown));
            return;
        }
        let dest = if self.is_self(tx.peer) {
            Some(self.ctx.clone())
        } else {
            FABRIC
                .lock()
                .get(&tx.peer.addr)
                .and_then(Weak::upgrade)
                .filter(|d| !d.shut.load(Ordering::Acquire))
                .map(|d| d.ctx.clone())
        };
        let Some(dest) = dest else {
            let err = LnetError::PeerDown { nid: tx.peer, why: "no such node in this process".into() };
            let peer = tx.peer;
            tx.complete(&self.ctx, Err(err.clone()));
            self.ctx.peer_down(peer, err);
            return;
        };
        match dest.parse(tx.hdr.src, &tx.hdr) {
            Delivery::Sink { sink, token } => {
                if let Some(src) = &tx.payload {
                    copy(src, &sink);
                }
                drop(sink);
                dest.recv_done(token, Ok(()));
            }
            Delivery::Discard => {}
        }
        self.delivered.fetch_add(1, Ordering::Relaxed);
        tx.complete(&self.ctx, Ok(()));
    }
}

/// Copies as much of `src` as fits into `dst`, MD to MD.
fn copy(src: &MdSlice, dst: &MdSlice) {
    let len = src.len.min(dst.len);
    if src.md.same(&dst.md) {
        src.md.lock().copy_within(dst.offset, src.offset, len);
        return;
    }
    // Lock in address order so two workers copying in opposite directions
    // between the same MDs cannot deadlock.
    let (a, b) = (Arc::as_ptr(&src.md.inner) as usize, Arc::as_ptr(&dst.md.inner) as usize);
    if a < b {
        let s = src.md.lock();
        let mut d = dst.md.lock();
        d.copy_from(dst.offset, &s, src.offset, len);
    } else {
        let mut d = dst.md.lock();
        let s = src.md.lock();
        d.copy_from(dst.offset, &s, src.offset, len);
    }
}

async fn worker(lnd: Weak<LoLnd>, mut rx: mpsc::UnboundedReceiver<TxMsg>) {
    while let Some(tx) = rx.recv().await {
        match lnd.upgrade() {
            Some(l) => l.deliver(tx),
            None => break,
        }
    }
}

impl Lnd for LoLnd {
    fn nid(&self) -> Nid {
        self.nid
    }

    fn send(&self, tx: TxMsg) {
        if let Err(mpsc::error::SendError(tx)) = self.queue.send(tx) {
            // The worker only stops when the runtime does.
            tx.complete(&self.ctx, Err(LnetError::Shutdown));
        }
    }

    fn shutdown(&self) {
        if self.shut.swap(true, Ordering::AcqRel) || self.nid.addr == 0 {
            return;
        }
        let others: Vec<Arc<LoLnd>> = {
            let mut f = FABRIC.lock();
            if f.get(&self.nid.addr).is_some_and(|w| std::ptr::eq(w.as_ptr(), self)) {
                f.remove(&self.nid.addr);
            }
            f.values().filter_map(Weak::upgrade).collect()
        };
        // As a closing connection would: every other node learns we are gone.
        for o in others {
            o.ctx.peer_down(self.nid, LnetError::PeerDown { nid: self.nid, why: "node shut down".into() });
        }
    }

    fn stats(&self) -> LndStats {
        LndStats::default()
    }
}
