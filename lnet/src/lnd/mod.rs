//! The LND interface: what every network driver provides and what LNet
//! gives it back.
//!
//! An LND moves messages (a header plus an optional MD slice of payload)
//! to peers on its network and feeds received headers to the core through
//! [`LndCtx`], which tells it where the payload goes. LNDs own connections
//! and wire framing; they never touch portals, credits or events.

pub mod lo;
#[cfg(feature = "o2ib")]
pub mod o2ib;
pub mod tcp;

use std::fmt;
use std::sync::Weak;

use crate::core::Inner;
use crate::error::LnetError;
use crate::md::MdSlice;
use crate::nid::Nid;
use crate::wire::LnetHdr;

/// A message handed to an LND.
#[derive(Debug)]
pub struct TxMsg {
    /// The core's id for it; echo it in [`LndCtx::send_done`].
    pub id: u64,
    /// Where it goes (a peer on the LND's network).
    pub peer: Nid,
    /// The header.
    pub hdr: LnetHdr,
    /// The payload, `hdr.payload_len` bytes of an MD.
    pub payload: Option<MdSlice>,
}

impl TxMsg {
    /// Completes the message, releasing its hold on the MD first, so that
    /// when the owner sees the final event nothing in LNet still holds it.
    pub fn complete(self, ctx: &LndCtx, res: Result<(), LnetError>) {
        let id = self.id;
        drop(self);
        ctx.send_done(id, res);
    }
}

/// Where an incoming message's payload goes.
#[derive(Debug)]
pub enum Delivery {
    /// Read `sink.len` payload bytes straight into the sink, discard the rest
    /// of the payload, then call [`LndCtx::recv_done`] with the token.
    Sink {
        /// The destination bytes.
        sink: MdSlice,
        /// Completion token.
        token: RecvToken,
    },
    /// Nothing to keep: discard the payload (if any).
    Discard,
}

/// Proof of a pending receive; consumed by [`LndCtx::recv_done`].
#[derive(Debug)]
pub struct RecvToken {
    pub(crate) md: u64,
    pub(crate) peer: Nid,
    pub(crate) kind: crate::core::RecvKind,
}

/// A network driver.
///
/// Contract: `send` must not block (it may write without blocking and may
/// complete the message before returning); it is called without LNet's lock
/// and by one thread at a time per LNet instance, in the order the core
/// released the messages. Every message given to `send` is completed
/// exactly once with [`LndCtx::send_done`] (via [`TxMsg::complete`]).
pub trait Lnd: Send + Sync + fmt::Debug {
    /// This NI's NID.
    fn nid(&self) -> Nid;
    /// Queues a message for transmission.
    fn send(&self, tx: TxMsg);
    /// Closes connections and stops tasks; pending sends fail.
    fn shutdown(&self);
    /// Driver counters.
    fn stats(&self) -> LndStats;
    /// The peer is known to be up again (Lustre's `lnd_notify`: the MGS
    /// said it restarted): a connection backoff toward it ends now.
    fn notify_alive(&self, _peer: Nid) {}
}

/// The live counters behind [`LndStats`], shared by an LND's tasks.
#[derive(Debug, Default)]
pub(crate) struct LndCounters {
    pub(crate) conns: std::sync::atomic::AtomicU64,
    pub(crate) connects: std::sync::atomic::AtomicU64,
    pub(crate) accepts: std::sync::atomic::AtomicU64,
    pub(crate) connect_failures: std::sync::atomic::AtomicU64,
    pub(crate) proto_errors: std::sync::atomic::AtomicU64,
}

impl LndCounters {
    /// A snapshot.
    pub(crate) fn snapshot(&self) -> LndStats {
        use std::sync::atomic::Ordering::Relaxed;
        LndStats {
            conns: self.conns.load(Relaxed),
            connects: self.connects.load(Relaxed),
            accepts: self.accepts.load(Relaxed),
            connect_failures: self.connect_failures.load(Relaxed),
            proto_errors: self.proto_errors.load(Relaxed),
        }
    }
}

/// Counters every LND keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LndStats {
    /// Connections up now.
    pub conns: u64,
    /// Connections this node initiated.
    pub connects: u64,
    /// Connections accepted from peers.
    pub accepts: u64,
    /// Failed connection attempts.
    pub connect_failures: u64,
    /// Connections closed for malformed input.
    pub proto_errors: u64,
}

/// The core's side of the LND interface, one per NI.
#[derive(Clone)]
pub struct LndCtx {
    pub(crate) inner: Weak<Inner>,
    pub(crate) ni: usize,
}

impl fmt::Debug for LndCtx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LndCtx(ni {})", self.ni)
    }
}

impl LndCtx {
    /// Decides where a received message's payload goes. `from` is the
    /// peer as authenticated by the LND's handshake.
    pub fn parse(&self, from: Nid, hdr: &LnetHdr) -> Delivery {
        match self.inner.upgrade() {
            Some(inner) => inner.parse(self.ni, from, hdr),
            None => Delivery::Discard,
        }
    }

    /// Completes a receive started by [`Delivery::Sink`]; the LND must
    /// have dropped the sink first.
    pub fn recv_done(&self, token: RecvToken, res: Result<(), LnetError>) {
        if let Some(inner) = self.inner.upgrade() {
            inner.recv_done(token, res);
        }
    }

    /// Completes a send.
    pub fn send_done(&self, id: u64, res: Result<(), LnetError>) {
        if let Some(inner) = self.inner.upgrade() {
            inner.send_done(id, res);
        }
    }

    /// A connection to `nid` died: fail what waits on it.
    pub fn peer_down(&self, nid: Nid, err: LnetError) {
        if let Some(inner) = self.inner.upgrade() {
            inner.peer_down(nid, err);
        }
    }

    /// A connection to `nid` came up or carried traffic.
    pub fn peer_alive(&self, nid: Nid) {
        if let Some(inner) = self.inner.upgrade() {
            inner.peer_alive(nid);
        }
    }

    /// Counts a message dropped by the LND itself (malformed frame).
    pub fn count_drop(&self, nid: Option<Nid>) {
        if let Some(inner) = self.inner.upgrade() {
            inner.count_drop(nid);
        }
    }

    /// The payload limit from the tunables.
    pub fn max_payload(&self) -> u32 {
        self.inner.upgrade().map(|i| i.tunables.max_payload).unwrap_or(crate::wire::MAX_PAYLOAD_HARD)
    }
}

/// Starts accepting connections once the core knows its NIs.
pub(crate) type StartAccepting = Box<dyn FnOnce() -> Result<(), LnetError> + Send>;

/// Starts an o2ib NI; the returned closure starts accepting connections
/// once the core knows its NIs. Without the `o2ib` feature, or on a host
/// with no RDMA stack, this fails with [`LnetError::LndUnavailable`].
pub(crate) fn start_o2ib(
    cfg: crate::config::O2ibConfig,
    ctx: LndCtx,
    max_payload: u32,
    pool: crate::mem::PagePool,
) -> Result<(std::sync::Arc<dyn Lnd>, StartAccepting), LnetError> {
    #[cfg(feature = "o2ib")]
    {
        let lnd = o2ib::O2ibLnd::start(cfg, ctx, max_payload, pool)?;
        let l = std::sync::Arc::clone(&lnd);
        Ok((lnd, Box::new(move || l.start_accepting())))
    }
    #[cfg(not(feature = "o2ib"))]
    {
        let _ = (cfg, ctx, max_payload, pool);
        Err(LnetError::LndUnavailable("o2ib", "o2ib unavailable: lnet was built without the `o2ib` feature".into()))
    }
}
