//! Runs a sans-IO [`Import`] on lnet and tokio (quinn style: one mutex,
//! one driver task).
//!
//! Owns: [`ImportDriver`] — the import behind one mutex; a driver task that
//! feeds it replies (from reply-MD callbacks, through a channel, so no
//! callback ever takes the mutex) and timeouts (a tokio timer at
//! [`Import::poll_timeout`], which covers request deadlines, connect
//! attempts, reconnect backoff and the pinger), and sends what
//! [`Import::poll_transmit`] produces (a caller's new request is sent
//! from the caller's own thread right after it is queued — one thread
//! switch less per request — under a sender lock that keeps every send in
//! the import's order; the task sends the rest) through
//! `driver::transport`: the
//! reply MD for the xid on the chosen path's NID first, then the PUT to the
//! service portal. Reply MDs live until their final reply or until the
//! connection they were sent on is gone (the import ignores replies from
//! older connections). The async API: [`ImportDriver::connect`],
//! [`ImportDriver::rpc`] (done when the import delivers the reply or fails
//! the request: evicted, closed), [`ImportDriver::state`],
//! [`ImportDriver::history`], lost replays, and
//! [`ImportDriver::target_restarted`] (imperative recovery: the MGS's
//! restart notice, which the MGC and the MDT's config follower deliver,
//! names the target's NIDs; the reconnect goes there at once).
//!
//! Bulk: [`ImportDriver::rpc_bulk`] sends a request carrying pages
//! ([`BulkAttachment`]). The pages are exposed to the server under match
//! bits of their own (not the xid: the body naming them is archived
//! before the import picks the xid, and stays the same on every resend
//! and replay), posted once for the request's whole life and for any
//! peer (a failover path reaches them too), so every resend and replay
//! finds them. A read's sink pages come back with its reply. A modifying
//! request's source pages stay posted, with the request, while it is in
//! the import's replay list (replied, not yet committed), so a replay
//! after a target restart re-sends its data; they are unlinked and freed
//! once it is committed or lost.
//!
//! Must not: own xids, deadlines or resends (the import does), hold the
//! mutex across an await or an lnet call, or drop an import event: every
//! request's end reaches its caller and every lost replay is counted,
//! logged and kept (bounded) for the user.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use lnet::{Lnet, LnetError, MatchPeer, MdBuffer, MdOptions, Nid};
use parking_lot::Mutex;
use rkyv::rancor;
use rkyv::util::AlignedVec;
use thiserror::Error;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use super::DriverClock;
use super::bulk::checksum;
use super::transport::{self, Attached, ReplyEvent};
use crate::import::{
    Import, ImportConfig, ImportError, ImportEvent, ImportStateKind, ImportStats, PathId, ReplayFixup, ReqKind,
    RequestSpec, StateHistory,
};
use crate::portals::{BULK_GET_SOURCE_PORTAL, BULK_PUT_SINK_PORTAL};
use crate::time::Time;
use crate::wire::{
    BODY_ALIGN, BulkDesc, CKSUM_CRC32C, ConnCnt, ConnectData, DecodeError, Frame, Header, MsgFlags, Op, Transno,
    WireBody, WireDecode, Xid, encode_raw,
};

/// The shortest timer sleep.
const MIN_TICK: Duration = Duration::from_millis(1);

/// Lost replays kept for [`ImportDriver::take_lost`] at most (more are
/// counted and logged).
const MAX_LOST_KEPT: usize = 4096;

/// How an RPC through an import ended badly.
#[derive(Debug, Clone, Error)]
pub enum ImportRpcError {
    /// The import failed the request (evicted, closed, full, VBR).
    #[error("import: {0}")]
    Import(#[from] ImportError),
    /// The target answered with an error status.
    #[error("{op:?} xid {xid}: target returned -{errno}")]
    Server {
        /// The operation.
        op: Op,
        /// The request's xid.
        xid: Xid,
        /// Positive errno.
        errno: i32,
    },
    /// The body could not be archived.
    #[error("encoding the request: {0}")]
    Encode(String),
    /// The driver stopped before the request ended.
    #[error("import driver stopped")]
    Shutdown,
    /// lnet refused the bulk pages, or did not give a read's back.
    #[error("bulk: {0}")]
    Bulk(LnetError),
    /// A read was answered but its data did not land in the pages.
    #[error("xid {xid}: {got} of {want} bulk bytes landed ({err:?})")]
    BulkMissing {
        /// The request.
        xid: Xid,
        /// Bytes that landed.
        got: u32,
        /// Bytes expected.
        want: u32,
        /// lnet's failure, if it reported one.
        err: Option<LnetError>,
    },
}

/// A final, successful reply.
#[derive(Debug, Clone)]
pub struct ImportReply {
    /// The request's xid.
    pub xid: Xid,
    /// The reply header (transno, last_committed, pre-op versions).
    pub header: Header,
    /// The archived body.
    pub body: Vec<u8>,
}

impl ImportReply {
    /// The body validated and deserialized as `T`.
    pub fn body<T>(&self) -> Result<T, DecodeError>
    where
        T: WireDecode,
    {
        let mut copy = AlignedVec::<BODY_ALIGN>::with_capacity(self.body.len());
        copy.extend_from_slice(&self.body);
        rkyv::from_bytes::<T, rancor::Error>(&copy)
            .map_err(|e| DecodeError::Body { xid: self.xid, reason: e.to_string() })
    }
}

/// A replied, uncommitted request the import lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LostReplay {
    /// The request.
    pub xid: Xid,
    /// Its transno.
    pub transno: Transno,
    /// Why.
    pub error: ImportError,
}

/// Driver-level counters (the import keeps its own: [`ImportStats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportDriverStats {
    /// Messages handed to lnet.
    pub sent: u64,
    /// Sends lnet refused or failed.
    pub send_failures: u64,
    /// Early replies received (the import keeps its own deadlines).
    pub early_replies: u64,
    /// Replies that did not parse.
    pub bad_replies: u64,
    /// Replayed-but-lost requests reported.
    pub lost_replays: u64,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    send_failures: AtomicU64,
    early_replies: AtomicU64,
    bad_replies: AtomicU64,
    lost_replays: AtomicU64,
}

type Waiter = oneshot::Sender<Result<ImportReply, ImportRpcError>>;

struct State {
    import: Import,
    waiters: HashMap<Xid, (Op, Waiter)>,
    lost: VecDeque<LostReplay>,
    /// Source pages of modifying requests, until they leave the import
    /// (committed, failed or lost).
    attachments: HashMap<Xid, Attached>,
    /// When the driver task wakes next by itself (its import's deadline
    /// when it last looked): a caller that sent a request with an earlier
    /// deadline wakes it.
    task_due: Option<Time>,
}

/// What sending needs, behind its own lock (taken before `State`'s):
/// sends are one at a time, in the order the import gave them, whether
/// the driver task or a caller sends.
struct Sender {
    /// Reply MDs of requests sent, by xid, with the connection they went
    /// out on.
    mds: HashMap<Xid, (ConnCnt, Attached)>,
    /// Where reply MDs post replies (the driver task).
    tx: mpsc::UnboundedSender<Input>,
}

/// Which way a request's bulk data moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkDir {
    /// The server GETs the pages (a write).
    Source,
    /// The server PUTs into the pages (a read).
    Sink,
}

/// Pages a request carries.
#[derive(Debug)]
pub struct BulkAttachment {
    /// The pages (their length is the transfer's).
    pub pages: MdBuffer,
    /// Which way the data moves.
    pub dir: BulkDir,
    /// Whether the descriptor carries the CRC32C of a write's pages (the
    /// server verifies it) or asks the server for a read's.
    pub checksum: bool,
}

/// A bulk request's reply.
#[derive(Debug)]
pub struct BulkReply {
    /// The final reply.
    pub reply: ImportReply,
    /// A read's filled pages (`None` for a write: the driver keeps those
    /// until the write is committed).
    pub pages: Option<MdBuffer>,
}

/// How long to wait for lnet to let go of a read's pages.
const BULK_RELEASE_WAIT: Duration = Duration::from_secs(10);

/// Match bits for bulk pages of imports: the top bit set, so they never
/// meet a [`super::Client`]'s (its xids, wall-clock microseconds).
fn next_bulk_bits() -> u64 {
    static BITS: AtomicU64 = AtomicU64::new(1 << 63);
    BITS.fetch_add(1, Ordering::Relaxed)
}

struct Shared {
    lnet: Lnet,
    paths: Vec<Nid>,
    cfg: ImportConfig,
    reply_buf_len: usize,
    clock: DriverClock,
    state: Mutex<State>,
    sender: Mutex<Sender>,
    wake: Notify,
    /// Woken whenever events were drained (replies, commits, state
    /// changes): a caller held back by a full import tries again.
    room: Notify,
    stopping: AtomicBool,
    kind: watch::Sender<ImportStateKind>,
    /// Set when the driver task has ended (after a close: once its
    /// DISCONNECT was handed to lnet).
    ended: watch::Sender<bool>,
    counters: Counters,
}

/// What reply MDs tell the driver task.
enum Input {
    Reply(AlignedVec<BODY_ALIGN>),
}

/// A handle to one import run over lnet. Cheap to clone; when the last
/// clone is dropped the driver stops as [`ImportDriver::abort`] does (call
/// [`ImportDriver::close`] first to disconnect cleanly).
#[derive(Clone)]
pub struct ImportDriver {
    shared: Arc<Shared>,
    _stop_on_drop: Arc<StopOnDrop>,
}

/// Stops the driver task when the last handle goes.
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stopping.store(true, Ordering::Release);
        self.0.wake.notify_one();
    }
}

impl std::fmt::Debug for ImportDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportDriver")
            .field("client", &self.shared.cfg.client_uuid)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// A first xid no other import of this process (nor a `Client`, whose xids
/// are wall-clock microseconds) will reach: reply MDs match on xid.
fn first_xid() -> u64 {
    static IMPORTS: AtomicU64 = AtomicU64::new(0);
    let n = IMPORTS.fetch_add(1, Ordering::Relaxed) & 0x7_FFFF;
    let us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_micros() as u64);
    (1 << 63) | (n << 44) | (us & ((1 << 44) - 1))
}

/// A first connection count above any an earlier process of the same
/// client reached: 16 per second since 2026-01-01 (a u32 lasts 8 years;
/// a process that reconnects more than 16 times a second for its whole
/// life could still be above it, and then waits for its old export's
/// eviction, as before).
fn first_conn_cnt() -> u32 {
    const SINCE: u64 = 1_767_225_600;
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    u32::try_from(secs.saturating_sub(SINCE).saturating_mul(16)).unwrap_or(u32::MAX / 2)
}

/// Why an import driver could not start.
#[derive(Debug, Clone, Error)]
pub enum ImportDriverError {
    /// No connection path.
    #[error("an import needs at least one path")]
    NoPaths,
    /// Not inside a tokio runtime.
    #[error("an import driver must start inside a tokio runtime")]
    NoRuntime,
}

impl ImportDriver {
    /// Starts a driver for an import of `cfg.client_uuid` whose connection
    /// paths are `paths` (failover NIDs, tried in turn; `cfg.paths` and
    /// `cfg.first_xid` are set here). Call [`ImportDriver::connect`] next.
    pub fn start(
        lnet: &Lnet,
        paths: Vec<Nid>,
        mut cfg: ImportConfig,
        reply_buf_len: usize,
    ) -> Result<ImportDriver, ImportDriverError> {
        if paths.is_empty() {
            return Err(ImportDriverError::NoPaths);
        }
        tokio::runtime::Handle::try_current().map_err(|_| ImportDriverError::NoRuntime)?;
        cfg.paths = (0..paths.len()).map(|i| PathId(u32::try_from(i).unwrap_or(u32::MAX))).collect();
        cfg.first_xid = first_xid();
        cfg.first_conn_cnt = first_conn_cnt();
        let clock = DriverClock::new();
        let import = Import::new(clock.now(), cfg.clone());
        let (tx, rx) = mpsc::unbounded_channel();
        let (kind, _) = watch::channel(import.kind());
        let shared = Arc::new(Shared {
            lnet: lnet.clone(),
            paths,
            cfg,
            reply_buf_len,
            clock,
            state: Mutex::new(State {
                import,
                waiters: HashMap::new(),
                lost: VecDeque::new(),
                attachments: HashMap::new(),
                task_due: None,
            }),
            sender: Mutex::new(Sender { mds: HashMap::new(), tx }),
            wake: Notify::new(),
            room: Notify::new(),
            stopping: AtomicBool::new(false),
            kind,
            ended: watch::channel(false).0,
            counters: Counters::default(),
        });
        tokio::spawn(run(Arc::clone(&shared), rx));
        Ok(ImportDriver { _stop_on_drop: Arc::new(StopOnDrop(Arc::clone(&shared))), shared })
    }

    /// This import's client UUID.
    pub fn client_uuid(&self) -> &str {
        &self.shared.cfg.client_uuid
    }

    /// Starts connecting (from NEW) and waits until the import is FULL.
    /// Returns the final state if it closed instead.
    pub async fn connect(&self) -> Result<(), ImportStateKind> {
        self.with_import(|i, now| i.connect(now));
        match self.wait_state(|k| matches!(k, ImportStateKind::Full | ImportStateKind::Closed)).await {
            ImportStateKind::Full => Ok(()),
            k => Err(k),
        }
    }

    /// Sends `body` as `op` (`kind`: read, modify or open) and waits for
    /// the import to deliver its final reply or fail it.
    pub async fn rpc<B>(&self, op: Op, kind: ReqKind, body: &B) -> Result<ImportReply, ImportRpcError>
    where
        B: WireBody,
    {
        let bytes = rkyv::to_bytes::<rancor::Error>(body).map_err(|e| ImportRpcError::Encode(e.to_string()))?;
        self.rpc_raw(op, kind, bytes.to_vec()).await
    }

    /// [`ImportDriver::rpc`] with a body archived already.
    pub async fn rpc_raw(&self, op: Op, kind: ReqKind, body: Vec<u8>) -> Result<ImportReply, ImportRpcError> {
        self.submit(op, kind, body, None, None).await
    }

    /// [`ImportDriver::rpc`] with a [`ReplayFixup`]: when the reply
    /// arrives, the body kept for replay is rewritten from it (an open's
    /// handle, a create's layout), in the same step that puts the request
    /// on the replay list.
    pub async fn rpc_with_fixup<B>(
        &self,
        op: Op,
        kind: ReqKind,
        body: &B,
        fixup: ReplayFixup,
    ) -> Result<ImportReply, ImportRpcError>
    where
        B: WireBody,
    {
        let bytes = rkyv::to_bytes::<rancor::Error>(body).map_err(|e| ImportRpcError::Encode(e.to_string()))?;
        self.submit(op, kind, bytes.to_vec(), None, Some(fixup)).await
    }

    /// [`ImportDriver::rpc_with_fixup`] with a body archived already.
    pub async fn rpc_raw_with_fixup(
        &self,
        op: Op,
        kind: ReqKind,
        body: Vec<u8>,
        fixup: ReplayFixup,
    ) -> Result<ImportReply, ImportRpcError> {
        self.submit(op, kind, body, None, Some(fixup)).await
    }

    /// The open request `open` was closed by request `close` (see
    /// [`Import::release_open`]). Returns whether the open was held.
    pub fn release_open(&self, open: Xid, close: Option<Xid>) -> bool {
        let mut found = false;
        self.with_import(|i, _| found = i.release_open(open, close));
        found
    }

    /// Sends a request carrying `bulk`'s pages: `make_body` gets the
    /// descriptor naming them (match bits, length, the pages' CRC32C for a
    /// checksummed write). See the module docs for the pages' life.
    pub async fn rpc_bulk<B, F>(
        &self,
        op: Op,
        kind: ReqKind,
        bulk: BulkAttachment,
        make_body: F,
    ) -> Result<BulkReply, ImportRpcError>
    where
        F: FnOnce(BulkDesc) -> B,
        B: WireBody,
    {
        let BulkAttachment { pages, dir, checksum: cksum_on } = bulk;
        let len = u32::try_from(pages.len()).map_err(|_| ImportRpcError::Encode("bulk larger than 4 GiB".into()))?;
        let write = dir == BulkDir::Source;
        let desc = BulkDesc {
            match_bits: next_bulk_bits(),
            len,
            cksum_type: if cksum_on { CKSUM_CRC32C } else { 0 },
            cksum: if cksum_on && write { checksum(&pages) } else { 0 },
        };
        let bytes =
            rkyv::to_bytes::<rancor::Error>(&make_body(desc)).map_err(|e| ImportRpcError::Encode(e.to_string()))?;
        let (portal, md_op) = match dir {
            BulkDir::Source => (BULK_GET_SOURCE_PORTAL, MdOptions::OP_GET),
            BulkDir::Sink => (BULK_PUT_SINK_PORTAL, MdOptions::OP_PUT),
        };
        let (attached, mut events) =
            transport::attach_bulk(&self.shared.lnet, portal, md_op, MatchPeer::Any, desc.match_bits, pages)
                .map_err(ImportRpcError::Bulk)?;
        if write && kind.modifies() {
            let reply = self.submit(op, kind, bytes.to_vec(), Some(attached), None).await?;
            return Ok(BulkReply { reply, pages: None });
        }
        let reply = self.submit(op, kind, bytes.to_vec(), None, None).await;
        // A read's reply counts once its data has landed.
        let landed = match (&reply, dir) {
            (Ok(_), BulkDir::Sink) => transport::await_put(&mut events, len, BULK_RELEASE_WAIT).await,
            _ => Ok(()),
        };
        let pages = transport::release_bulk(attached, events, BULK_RELEASE_WAIT).await.map_err(ImportRpcError::Bulk)?;
        let reply = reply?;
        if let Err((got, err)) = landed {
            return Err(ImportRpcError::BulkMissing { xid: reply.xid, got, want: len, err });
        }
        Ok(BulkReply { reply, pages: Some(pages) })
    }

    /// Submits a request (with the source pages of a modifying one, kept
    /// while the import holds it) and waits for its end.
    async fn submit(
        &self,
        op: Op,
        kind: ReqKind,
        body: Vec<u8>,
        mut pages: Option<Attached>,
        fixup: Option<ReplayFixup>,
    ) -> Result<ImportReply, ImportRpcError> {
        let jobid = super::jobid::current_jobid();
        let spec = RequestSpec { op, portal: self.shared.cfg.portal, body, kind, jobid };
        // A full import (its request and replay lists at their limit) holds
        // the caller back until replies or commits make room: backpressure,
        // as Lustre throttles RPCs in flight, not an error.
        let rx = loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut st = self.shared.state.lock();
                let now = self.shared.clock.now();
                match st.import.submit_with_fixup(now, spec.clone(), fixup) {
                    Ok(xid) => {
                        let (tx, rx) = oneshot::channel();
                        st.waiters.insert(xid, (op, tx));
                        if let Some(p) = pages.take() {
                            st.attachments.insert(xid, p);
                        }
                        self.shared.drain_events(&mut st);
                        break rx;
                    }
                    Err(ImportError::Full(_)) if !self.shared.stopping.load(Ordering::Acquire) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            self.shared.wake.notify_one();
            room.await;
        };
        // Sent from here, not by the driver task: one thread switch less
        // per request. The task sleeps until the import's deadline as it
        // last saw it; a request due earlier wakes it.
        let (due, _) = transmit(&self.shared, None);
        let wake = {
            let st = self.shared.state.lock();
            due.is_some_and(|d| st.task_due.is_none_or(|t| d < t))
        };
        if wake {
            self.shared.wake.notify_one();
        }
        rx.await.unwrap_or(Err(ImportRpcError::Shutdown))
    }

    /// Imperative recovery: the target restarted, reconnect now.
    pub fn handle_target_restarted(&self) {
        self.with_import(Import::handle_target_restarted);
    }

    /// Imperative recovery with the MGS's notice: the target restarted and
    /// serves at `nids`; reconnect now, first over the path to the first of
    /// them this import knows (the paths are fixed at start: a NID it does
    /// not know is logged and the configured paths are used).
    pub fn target_restarted(&self, nids: &[Nid]) {
        let paths: Vec<PathId> = nids
            .iter()
            .filter_map(|n| self.shared.paths.iter().position(|p| p == n))
            .map(|i| PathId(u32::try_from(i).unwrap_or(u32::MAX)))
            .collect();
        if paths.is_empty() && !nids.is_empty() {
            tracing::warn!(client = %self.shared.cfg.client_uuid, ?nids, "target restarted at NIDs this import has no path to; reconnecting over its own");
        }
        tracing::info!(client = %self.shared.cfg.client_uuid, ?nids, "target restarted: reconnecting now");
        // lnet may be backing off its connection to the dead target.
        for &n in nids.iter().chain(&self.shared.paths) {
            self.shared.lnet.notify_alive(n);
        }
        self.with_import(|i, now| i.handle_target_restarted_at(now, &paths));
    }

    /// The target was deactivated (or reactivated) by the administrator:
    /// a deactivated import sends no pings.
    pub fn set_deactivated(&self, deactivated: bool) {
        self.with_import(|i, now| i.set_deactivated(now, deactivated));
    }

    /// Closes the import (DISCONNECT if connected; pending requests fail).
    pub fn close(&self) {
        self.with_import(Import::close);
    }

    /// Stops the driver at once, sending nothing more (a client that dies:
    /// its target sees silence). Pending callers get `Shutdown`.
    pub fn abort(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }

    /// Whether the target is deactivated (no pings).
    pub fn is_deactivated(&self) -> bool {
        self.shared.state.lock().import.is_deactivated()
    }

    /// The import's state.
    pub fn state(&self) -> ImportStateKind {
        *self.shared.kind.borrow()
    }

    /// The import's recent transitions.
    pub fn history(&self) -> StateHistory {
        self.shared.state.lock().import.history().clone()
    }

    /// What the target agreed to at the last connect.
    pub fn connect_data(&self) -> Option<ConnectData> {
        self.shared.state.lock().import.negotiated().cloned()
    }

    /// Bulk pages held for uncommitted requests.
    pub fn bulk_held(&self) -> usize {
        self.shared.state.lock().attachments.len()
    }

    /// The highest `last_committed` the target reported.
    pub fn last_committed(&self) -> Transno {
        self.shared.state.lock().import.last_committed()
    }

    /// Replay entries held (replied, not yet committed).
    pub fn replay_len(&self) -> usize {
        self.shared.state.lock().import.replay_list().len()
    }

    /// Modifying requests in flight at once, as negotiated at the last
    /// connect (1 before one, or without `MULTIMODRPCS`).
    pub fn max_mod_rpcs(&self) -> u16 {
        self.shared.state.lock().import.max_mod_rpcs()
    }

    /// The import's generation (bumped on every successful connect).
    pub fn generation(&self) -> u64 {
        self.shared.state.lock().import.generation()
    }

    /// The import's counters.
    pub fn import_stats(&self) -> ImportStats {
        self.shared.state.lock().import.stats()
    }

    /// The driver's counters.
    pub fn stats(&self) -> ImportDriverStats {
        let c = &self.shared.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ImportDriverStats {
            sent: g(&c.sent),
            send_failures: g(&c.send_failures),
            early_replies: g(&c.early_replies),
            bad_replies: g(&c.bad_replies),
            lost_replays: g(&c.lost_replays),
        }
    }

    /// Takes the lost replays reported so far (at most [`MAX_LOST_KEPT`]
    /// are kept; `stats().lost_replays` counts all).
    pub fn take_lost(&self) -> Vec<LostReplay> {
        self.shared.state.lock().lost.drain(..).collect()
    }

    /// Closes the import and waits until its driver has ended, so the
    /// DISCONNECT has been handed to lnet (dropping the last handle right
    /// after [`ImportDriver::close`] can stop the driver before it sends).
    pub async fn close_and_wait(&self) {
        self.close();
        let mut rx = self.shared.ended.subscribe();
        let _ = rx.wait_for(|e| *e).await;
    }

    /// Waits until the state satisfies `pred`; returns that state.
    pub async fn wait_state(&self, pred: impl Fn(ImportStateKind) -> bool) -> ImportStateKind {
        let mut rx = self.shared.kind.subscribe();
        match rx.wait_for(|k| pred(*k)).await {
            Ok(k) => *k,
            // The sender lives as long as `self`: unreachable in practice.
            Err(_) => self.state(),
        }
    }

    /// Runs `f` on the import and drains its events at once, so
    /// [`ImportDriver::state`] reflects `f` when this returns.
    fn with_import(&self, f: impl FnOnce(&mut Import, crate::Time)) {
        {
            let mut st = self.shared.state.lock();
            let now = self.shared.clock.now();
            f(&mut st.import, now);
            self.shared.drain_events(&mut st);
        }
        self.shared.wake.notify_one();
    }
}

impl Shared {
    /// Hands every import event to its consumer; never drops one.
    fn drain_events(&self, st: &mut State) {
        self.room.notify_waiters();
        while let Some(ev) = st.import.poll_event() {
            let uuid = &self.cfg.client_uuid;
            match ev {
                ImportEvent::Reply { xid, header, body } => {
                    if let Some((op, tx)) = st.waiters.remove(&xid) {
                        let r = if header.status != 0 {
                            let errno =
                                header.status.checked_neg().filter(|e| *e > 0).unwrap_or(crate::wire::errno::EPROTO);
                            Err(ImportRpcError::Server { op, xid, errno })
                        } else {
                            Ok(ImportReply { xid, header, body })
                        };
                        // A caller that went away no longer wants it.
                        let _ = tx.send(r);
                    }
                }
                ImportEvent::Failed { xid, error } => {
                    tracing::info!(client = %uuid, xid = xid.0, %error, "request failed");
                    if let Some((_, tx)) = st.waiters.remove(&xid) {
                        let _ = tx.send(Err(error.into()));
                    }
                }
                ImportEvent::ReplayLost { xid, transno, error } => {
                    tracing::warn!(client = %uuid, xid = xid.0, transno = transno.0, %error, "replied update lost");
                    self.counters.lost_replays.fetch_add(1, Ordering::Relaxed);
                    if st.lost.len() < MAX_LOST_KEPT {
                        st.lost.push_back(LostReplay { xid, transno, error });
                    }
                }
                ImportEvent::Connected { generation, flags, .. } => {
                    tracing::info!(client = %uuid, generation, flags = ?flags, "connected");
                }
                ImportEvent::StateChanged { from, to, .. } => {
                    tracing::info!(client = %uuid, ?from, ?to, "import state");
                    self.kind.send_replace(to);
                }
            }
        }
        if !st.attachments.is_empty() {
            // Pages go once their request left the import.
            let replay: HashSet<Xid> = st.import.replay_list().iter().map(|e| e.xid).collect();
            let State { attachments, waiters, .. } = st;
            attachments.retain(|x, _| waiters.contains_key(x) || replay.contains(x));
        }
    }

    /// Fails every waiting caller with `Shutdown` (the driver stopped).
    fn fail_all(&self) {
        let mut st = self.state.lock();
        for (_, (_, tx)) in st.waiters.drain() {
            let _ = tx.send(Err(ImportRpcError::Shutdown));
        }
    }
}

/// The driver task: runs timers, feeds replies, sends.
async fn run(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Input>) {
    loop {
        if shared.stopping.load(Ordering::Acquire) {
            break;
        }
        let now = shared.clock.now();
        let (due, closed) = transmit(&shared, Some(now));
        if closed {
            break;
        }
        // The floor keeps a deadline that did not move from spinning.
        let wait = due.map(|d| d.saturating_since(now).max(MIN_TICK));
        tokio::select! {
            input = rx.recv() => {
                let Some(first) = input else { break };
                let mut batch = vec![first];
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                feed(&shared, batch);
            }
            () = shared.wake.notified() => {}
            () = sleep_opt(wait) => {}
        }
    }
    shared.sender.lock().mds.clear();
    shared.fail_all();
    shared.ended.send_replace(true);
}

/// Sends what the import has to send, in its order (the sender lock
/// serializes the driver task and callers); `task_now`: the driver task,
/// which also handles a passed deadline and records when it wakes next.
/// Returns the import's next deadline and whether it closed.
fn transmit(shared: &Arc<Shared>, task_now: Option<Time>) -> (Option<Time>, bool) {
    let mut snd = shared.sender.lock();
    let (out, due, conn_cnt, closed) = {
        let mut st = shared.state.lock();
        let now = task_now.unwrap_or_else(|| shared.clock.now());
        if task_now.is_some() && st.import.poll_timeout().is_some_and(|t| now >= t) {
            st.import.handle_timeout(now);
        }
        let mut out = Vec::new();
        while let Some(o) = st.import.poll_transmit(now) {
            out.push(o);
        }
        shared.drain_events(&mut st);
        let closed = st.import.kind() == ImportStateKind::Closed;
        let due = st.import.poll_timeout();
        if task_now.is_some() {
            st.task_due = due;
        }
        (out, due, st.import.conn_cnt(), closed)
    };
    // Replies on older connections are ignored by the import.
    snd.mds.retain(|_, (c, _)| *c == conn_cnt);
    for o in out {
        send(shared, &mut snd, o);
    }
    (due, closed)
}

async fn sleep_opt(wait: Option<Duration>) {
    match wait {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Feeds replies to the import; early replies extend their request's
/// deadline there.
fn feed(shared: &Shared, batch: Vec<Input>) {
    let now = shared.clock.now();
    let mut snd = shared.sender.lock();
    let mds = &mut snd.mds;
    let mut st = shared.state.lock();
    for Input::Reply(bytes) in batch {
        let frame = match Frame::parse(&bytes) {
            Ok(f) => f,
            Err(e) => {
                shared.counters.bad_replies.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(client = %shared.cfg.client_uuid, err = %e, "malformed reply dropped");
                continue;
            }
        };
        let h = frame.header();
        if h.flags.contains(MsgFlags::EARLY_REPLY) {
            shared.counters.early_replies.fetch_add(1, Ordering::Relaxed);
            st.import.handle_early_reply(now, &frame);
            continue;
        }
        if mds.get(&h.xid).is_some_and(|(c, _)| *c == h.conn_cnt) {
            mds.remove(&h.xid);
        }
        st.import.handle_reply(now, &frame);
    }
}

/// Sends one message: its reply MD first (replacing an earlier send's),
/// then the PUT.
fn send(shared: &Arc<Shared>, snd: &mut Sender, o: crate::import::Outgoing) {
    let Sender { mds, tx } = snd;
    let fail = |what: &str, err: &dyn std::fmt::Display| {
        shared.counters.send_failures.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(client = %shared.cfg.client_uuid, xid = o.header.xid.0, err = %err, "{what}");
    };
    let Some(&nid) = shared.paths.get(o.path.0 as usize) else {
        fail("no such path", &o.path.0);
        return;
    };
    let msg = match encode_raw(&o.header, &o.body) {
        Ok(m) => m,
        Err(e) => return fail("encoding failed", &e),
    };
    let xid = o.header.xid;
    mds.remove(&xid);
    let itx = tx.clone();
    let attached = transport::attach_reply(&shared.lnet, nid, xid, shared.reply_buf_len, move |ev| match ev {
        // The driver task gone means the import is gone too.
        ReplyEvent::Message(b) => {
            let _ = itx.send(Input::Reply(b));
        }
        ReplyEvent::Truncated { len, cap } => tracing::warn!(xid = xid.0, len, cap, "reply truncated; dropped"),
        ReplyEvent::Failed(e) => tracing::debug!(xid = xid.0, err = %e, "reply receive failed"),
    });
    match attached {
        Ok(a) => {
            mds.insert(xid, (o.header.conn_cnt, a));
        }
        Err(e) => return fail("attaching the reply MD failed", &e),
    }
    let on_fail = Arc::clone(shared);
    let sent = transport::put_request(&shared.lnet, nid, shared.cfg.portal, msg.to_vec(), move |e| {
        on_fail.counters.send_failures.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(xid = xid.0, err = %e, "request send failed; the import's deadline will tell");
    });
    match sent {
        Ok(()) => {
            shared.counters.sent.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => fail("lnet refused the send", &e),
    }
}
