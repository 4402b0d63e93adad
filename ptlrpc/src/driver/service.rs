//! A ptlrpc service: request portal, request buffers, per-CPT queues and
//! worker threads.
//!
//! Owns: [`ServiceConfig`], [`Service`] (start and shutdown) and the
//! receive path: request buffers are persistent lnet MDs with a locally
//! managed offset and `min_free`, posted on the service's portal and
//! re-posted when they retire; their events arrive through an
//! [`EventHandler::Callback`] in the LND's context (no task hop), where a
//! request is copied out, checked, registered with the service's adaptive
//! timeouts and queued on its CPT: PING and CONNECT on the high-priority
//! queue, everything else through the CPT's [`Policy`] — or, for a
//! request the handler takes inline ([`Handler::inline`]), served there
//! and then, untracked (or queued after all, if the handler
//! declines it there). Malformed input is
//! counted, logged and answered with an error reply when the header names
//! an xid, otherwise dropped — never a panic. Workers and the early-reply
//! timer live in `driver::worker`.
//!
//! Must not: block in an lnet callback, or let a queue grow without bound
//! (a full queue answers `-EBUSY`).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use lnet::{
    Event, EventHandler, EventKind, InsertPos, Lnet, MatchSpec, Md, MdBuffer, MdOptions, MdSpec, Nid, Threshold,
};
use parking_lot::{Condvar, Mutex};
use rkyv::util::AlignedVec;

use super::DriverClock;
use super::error::{Errno, ServiceError};
use super::handler::{Handler, Request};
use super::metrics::{ServiceMetrics, render};
use super::policy::{Policy, PolicyFactory, fifo};
use super::worker;
use crate::at::{AtSettings, ServiceAt};
use crate::cpt::CptTable;
use crate::fault::{FaultInjector, FaultKind};
use crate::portals::{ECHO_REQUEST_PORTAL, REPLY_PORTAL};
use crate::time::Time;
use crate::wire::{BODY_ALIGN, DecodeError, Frame, HEADER_LEN, Header, MAX_BODY_LEN, MsgKind, Op, Portal, Xid, errno};

/// How a service is set up.
#[derive(Clone)]
pub struct ServiceConfig {
    /// Name for logs, thread names and the metrics' `service` label.
    pub name: String,
    /// The request portal.
    pub portal: Portal,
    /// The portal replies go to on the client.
    pub reply_portal: Portal,
    /// Worker threads per CPT.
    pub threads_per_cpt: usize,
    /// Request buffers posted at once.
    pub nbufs: usize,
    /// Bytes per request buffer.
    pub buf_size: usize,
    /// Largest request accepted (header + body); a buffer retires when less
    /// than this is left in it.
    pub max_req_size: usize,
    /// Requests one CPT may hold queued before answering `-EBUSY`.
    pub max_queued: usize,
    /// Requests tracked for early replies at once.
    pub max_tracked: usize,
    /// Adaptive-timeout settings.
    pub at: AtSettings,
    /// How long one bulk transfer may take.
    pub bulk_timeout: Duration,
    /// Extra attempts of a bulk transfer whose checksum does not match.
    pub bulk_retries: u32,
    /// Largest bulk transfer a handler may start.
    pub max_bulk: usize,
    /// How long an idle worker polls its queue before sleeping (0: sleep at
    /// once). Saves a wake-up per request under load, at the cost of CPU.
    pub idle_spin: Duration,
    /// General workers of a CPT running requests at once before an arriving
    /// request wakes another (0: every arrival wakes a sleeping worker, as
    /// Lustre does). A worker waiting in [`super::ReqCtx::blocking`] (bulk
    /// transfers among them) does not count, so a slot is never held by a
    /// thread that only waits; set this only for services whose handlers
    /// wait nowhere else (a running worker picks up the queue when it is
    /// done). Saves a futex wake-up and a thread switch per request.
    pub max_running: usize,
    /// The scheduling policy of each CPT's normal queue.
    pub policy: PolicyFactory,
    /// CPU partitions: one queue, `threads_per_cpt` workers and one
    /// high-priority worker each, bound
    /// to the CPT's cores when the table describes this machine. `None`:
    /// one unbound CPT.
    pub cpts: Option<Arc<CptTable>>,
}

impl fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("name", &self.name)
            .field("portal", &self.portal)
            .field("threads_per_cpt", &self.threads_per_cpt)
            .field("nbufs", &self.nbufs)
            .field("buf_size", &self.buf_size)
            .field("max_req_size", &self.max_req_size)
            .field("at", &self.at)
            .field("cpts", &self.cpts.as_ref().map(|t| t.len()))
            .finish_non_exhaustive()
    }
}

impl ServiceConfig {
    /// Defaults for a service called `name` on `portal`.
    pub fn new(name: impl Into<String>, portal: Portal) -> ServiceConfig {
        ServiceConfig {
            name: name.into(),
            portal,
            reply_portal: REPLY_PORTAL,
            threads_per_cpt: 2,
            nbufs: 16,
            buf_size: 256 << 10,
            max_req_size: 16 << 10,
            max_queued: 16 << 10,
            max_tracked: 64 << 10,
            at: AtSettings::default(),
            bulk_timeout: Duration::from_secs(100),
            bulk_retries: 3,
            max_bulk: 4 << 20,
            idle_spin: Duration::ZERO,
            max_running: 0,
            policy: fifo(),
            cpts: None,
        }
    }

    /// The echo service's defaults.
    pub fn echo() -> ServiceConfig {
        ServiceConfig::new("echo", ECHO_REQUEST_PORTAL)
    }

    fn validate(&self) -> Result<(), ServiceError> {
        let bad = |why: &str| Err(ServiceError::Config(format!("{}: {why}", self.name)));
        if self.threads_per_cpt == 0 || self.nbufs == 0 {
            return bad("threads_per_cpt and nbufs must be at least 1");
        }
        if self.max_req_size < HEADER_LEN || self.max_req_size > HEADER_LEN + MAX_BODY_LEN {
            return bad("max_req_size must hold a header and at most MAX_BODY_LEN of body");
        }
        if self.buf_size < 2 * self.max_req_size {
            return bad("buf_size must hold at least two maximal requests");
        }
        if self.max_queued == 0 || self.max_tracked == 0 {
            return bad("max_queued and max_tracked must be at least 1");
        }
        Ok(())
    }
}

/// Names one request for the early-reply timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct ReqKey {
    pub(super) peer: Nid,
    pub(super) xid: Xid,
    pub(super) op: Op,
}

pub(super) struct QueueState {
    pub(super) hp: VecDeque<Request>,
    pub(super) normal: Box<dyn Policy>,
    /// General workers awake: handling a request (outside
    /// [`super::ReqCtx::blocking`]) or looking at the queue.
    pub(super) running: usize,
    /// General workers asleep, by index into the CPT's `cvs`, the most
    /// recent last: a request wakes the worker that slept last (its stack
    /// and data still in cache, its CPU likely near), not the one asleep
    /// longest, as a condition variable would.
    pub(super) idle: Vec<usize>,
    /// Sleeping workers already signalled (taken off `idle`), not yet
    /// awake.
    pub(super) waking: usize,
}

impl QueueState {
    fn len(&self) -> usize {
        self.hp.len() + self.normal.len()
    }

    /// A sleeping general worker to wake for queued work, under the
    /// service's `max_running`: taken off `idle` and counted as waking
    /// (the caller notifies its condition variable once, after dropping
    /// the lock).
    pub(super) fn take_wake(&mut self, max_running: usize) -> Option<usize> {
        if max_running != 0 && self.running + self.waking >= max_running {
            return None;
        }
        let w = self.idle.pop()?;
        self.waking += 1;
        Some(w)
    }
}

pub(super) struct CptQueue {
    pub(super) state: Mutex<QueueState>,
    /// One per general worker of the CPT: wakes that worker.
    pub(super) cvs: Vec<Condvar>,
    /// Wakes the CPT's high-priority worker.
    pub(super) hp_cv: Condvar,
    /// Requests queued (read without the lock by spinning workers).
    pub(super) pending: AtomicUsize,
}

pub(super) struct AtState {
    pub(super) at: ServiceAt<ReqKey>,
    /// When the timer thread will next wake (None: when notified).
    pub(super) armed: Option<Time>,
    /// Bulk transfers whose reply waits for them
    /// ([`super::ReqCtx::bulk_get_then`]), by deadline and MD cookie: the
    /// timer unlinks those still running at their deadline.
    pub(super) bulk: BTreeMap<(Time, u64), Md>,
}

impl AtState {
    /// When the timer must next wake: the first early-reply or bulk
    /// deadline.
    pub(super) fn next_wake(&self) -> Option<Time> {
        let bulk = self.bulk.first_key_value().map(|((t, _), _)| *t);
        match (self.at.poll_timeout(), bulk) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// What the service's callbacks, workers and timer share.
pub(crate) struct Shared {
    pub(super) cfg: ServiceConfig,
    pub(super) lnet: Lnet,
    pub(super) handler: Arc<dyn Handler>,
    pub(super) faults: Arc<FaultInjector>,
    pub(super) metrics: ServiceMetrics,
    pub(super) clock: DriverClock,
    pub(super) queues: Vec<CptQueue>,
    pub(super) at: Mutex<AtState>,
    pub(super) at_cv: Condvar,
    pub(super) stopping: AtomicBool,
    buffers: Mutex<Vec<Md>>,
    pub(super) rt: tokio::runtime::Handle,
}

/// A running service. Dropping it stops the workers (without waiting for
/// them); [`Service::shutdown`] also joins them.
pub struct Service {
    pub(super) shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.shared.cfg.name)
            .field("portal", &self.shared.cfg.portal)
            .field("cpts", &self.shared.queues.len())
            .field("threads", &self.threads.len())
            .finish()
    }
}

impl Service {
    /// Posts the request buffers and starts the workers and the early-reply
    /// timer. Must be called inside a tokio runtime (lnet's).
    pub fn start(
        lnet: &Lnet,
        cfg: ServiceConfig,
        handler: Arc<dyn Handler>,
        faults: Arc<FaultInjector>,
    ) -> Result<Service, ServiceError> {
        cfg.validate()?;
        let rt = tokio::runtime::Handle::try_current().map_err(|_| ServiceError::NoRuntime)?;
        let ncpts = cfg.cpts.as_ref().map_or(1, |t| t.len()).max(1);
        let clock = DriverClock::new();
        let now = clock.now();
        let queues = (0..ncpts)
            .map(|i| CptQueue {
                state: Mutex::new(QueueState {
                    hp: VecDeque::new(),
                    normal: (cfg.policy)(i),
                    running: 0,
                    idle: Vec::new(),
                    waking: 0,
                }),
                cvs: (0..cfg.threads_per_cpt).map(|_| Condvar::new()).collect(),
                hp_cv: Condvar::new(),
                pending: AtomicUsize::new(0),
            })
            .collect();
        let shared = Arc::new(Shared {
            metrics: ServiceMetrics::new(&cfg.name),
            at: Mutex::new(AtState {
                at: ServiceAt::new(now, cfg.at, cfg.max_tracked),
                armed: None,
                bulk: BTreeMap::new(),
            }),
            cfg,
            lnet: lnet.clone(),
            handler,
            faults,
            clock,
            queues,
            at_cv: Condvar::new(),
            stopping: AtomicBool::new(false),
            buffers: Mutex::new(Vec::new()),
            rt,
        });
        let mut svc = Service { shared: Arc::clone(&shared), threads: Vec::new() };
        for _ in 0..shared.cfg.nbufs {
            shared.post_buffer()?;
        }
        svc.threads = worker::spawn_all(&shared)?;
        tracing::info!(service = %shared.cfg.name, portal = shared.cfg.portal.0, cpts = ncpts,
            threads = svc.threads.len(), "service started");
        Ok(svc)
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.shared.cfg.name
    }

    /// The request portal.
    pub fn portal(&self) -> Portal {
        self.shared.cfg.portal
    }

    /// CPTs (queues) the service runs.
    pub fn cpts(&self) -> usize {
        self.shared.queues.len()
    }

    /// The service's metrics.
    pub fn metrics(&self) -> &ServiceMetrics {
        &self.shared.metrics
    }

    /// The service's metrics as Prometheus text.
    pub fn render_metrics(&self) -> String {
        render(self.shared.metrics.registry())
    }

    /// The service-time estimate of the service's adaptive timeouts.
    pub fn service_estimate(&self) -> Duration {
        let now = self.shared.clock.now();
        self.shared.at.lock().at.service_estimate(now)
    }

    /// A handle that sends replies built whole by the caller (see
    /// [`super::ReqCtx::send_reply`]) from outside a handler, e.g. a timer
    /// answering a held request.
    pub fn reply_sender(&self) -> ReplySender {
        ReplySender { shared: Arc::clone(&self.shared) }
    }

    /// Stops taking requests, wakes and joins the workers and the timer.
    pub fn shutdown(mut self) {
        self.shared.stop();
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!(service = %self.shared.cfg.name, "a service thread panicked");
            }
        }
    }
}

/// Sends replies on a service's behalf (see [`Service::reply_sender`]).
#[derive(Clone)]
pub struct ReplySender {
    shared: Arc<Shared>,
}

impl fmt::Debug for ReplySender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplySender").field("service", &self.shared.cfg.name).finish()
    }
}

impl ReplySender {
    /// Sends `header` (its `body_len` is set here) and `body` to `peer`'s
    /// reply portal, through the service's reply fault points.
    pub fn send(&self, peer: Nid, header: Header, body: &[u8]) {
        worker::send_reply(&self.shared, peer, header, body);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.shared.stop();
    }
}

impl Shared {
    fn stop(&self) {
        if self.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        let bufs = std::mem::take(&mut *self.buffers.lock());
        for md in bufs {
            // Already retiring buffers report Unlinked: nothing to do.
            let _ = self.lnet.unlink(&md);
        }
        for q in &self.queues {
            let _guard = q.state.lock();
            for cv in &q.cvs {
                cv.notify_all();
            }
            q.hp_cv.notify_all();
        }
        let bulk = {
            let mut at = self.at.lock();
            self.at_cv.notify_all();
            std::mem::take(&mut at.bulk)
        };
        for md in bulk.into_values() {
            let _ = self.lnet.unlink(&md);
        }
    }

    /// Has the timer unlink `md` (a deferred bulk transfer's) at
    /// `deadline` unless [`Shared::unwatch_bulk`] comes first.
    pub(super) fn watch_bulk(&self, deadline: Time, md: Md) {
        let mut st = self.at.lock();
        st.bulk.insert((deadline, md.cookie()), md);
        if st.armed.is_none_or(|armed| deadline < armed) {
            st.armed = Some(deadline);
            self.at_cv.notify_one();
        }
    }

    /// The transfer watched with `deadline` and `cookie` ended.
    pub(super) fn unwatch_bulk(&self, deadline: Time, cookie: u64) {
        self.at.lock().bulk.remove(&(deadline, cookie));
    }

    pub(super) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn post_buffer(self: &Arc<Self>) -> Result<(), ServiceError> {
        let weak = Arc::downgrade(self);
        let cb = Arc::new(move |ev: Event| {
            if let Some(s) = weak.upgrade() {
                s.on_buffer_event(ev);
            }
        });
        let spec = MdSpec::new(MdBuffer::Inline(vec![0; self.cfg.buf_size]), EventHandler::Callback(cb))
            .threshold(Threshold::Infinite)
            .options(MdOptions::OP_PUT)
            .min_free(self.cfg.max_req_size);
        let md = self.lnet.attach(self.cfg.portal.0, MatchSpec::any(), InsertPos::Tail, spec)?;
        self.buffers.lock().push(md);
        Ok(())
    }

    /// A request buffer event, in the LND's context.
    fn on_buffer_event(self: &Arc<Self>, ev: Event) {
        if ev.kind == EventKind::Put {
            match &ev.status {
                Ok(()) => {
                    let len = ev.mlength as usize;
                    let mut bytes = AlignedVec::<BODY_ALIGN>::with_capacity(len);
                    bytes.resize(len, 0);
                    let got = ev.md.lock().read_at(ev.offset as usize, &mut bytes);
                    bytes.resize(got, 0);
                    self.accept(ev.peer, bytes);
                }
                Err(e) => tracing::warn!(service = %self.cfg.name, peer = %ev.peer, err = %e, "request receive failed"),
            }
        }
        if ev.unlinked {
            self.buffers.lock().retain(|m| !m.same(&ev.md));
            if !self.stopping()
                && let Err(e) = self.post_buffer()
            {
                tracing::error!(service = %self.cfg.name, err = %e, "re-posting a request buffer failed");
            }
        }
    }

    /// Checks and queues one request.
    fn accept(self: &Arc<Self>, peer: Nid, bytes: AlignedVec<BODY_ALIGN>) {
        let now = self.clock.now();
        let (header, op) = match Frame::parse(&bytes) {
            Ok(f) => (*f.header(), f.op()),
            Err(e) => return self.malformed(peer, &bytes, &e),
        };
        if header.kind != MsgKind::Request {
            self.metrics.malformed.inc();
            tracing::warn!(service = %self.cfg.name, %peer, xid = header.xid.0, kind = ?header.kind,
                "dropping a message that is not a request");
            return;
        }
        if self.faults.check(FaultKind::RequestDrop).is_some() {
            self.metrics.injected_drops.inc();
            tracing::info!(service = %self.cfg.name, %peer, xid = header.xid.0, "fault injection: request dropped");
            return;
        }
        let cpt = self.cpt_for(peer);
        let req = Request { peer, header, op, bytes, arrival: now, cpt };
        let hp = op.is_high_priority();
        if self.handler.inline(&req) && worker::serve_inline(self, &req) {
            return;
        }
        let key = ReqKey { peer, xid: header.xid, op };
        self.track(now, key, header.timeout);
        let q = &self.queues[cpt];
        let mut st = q.state.lock();
        if st.len() >= self.cfg.max_queued {
            drop(st);
            self.at.lock().at.forget(key);
            self.metrics.overflow.inc();
            tracing::warn!(service = %self.cfg.name, %peer, xid = header.xid.0, cpt, "queue full: -EBUSY");
            self.send_error(peer, &header, Errno(errno::EBUSY));
            return;
        }
        if hp {
            st.hp.push_back(req);
        } else {
            st.normal.enqueue(req);
        }
        q.pending.fetch_add(1, Ordering::Relaxed);
        let wake = if hp { None } else { st.take_wake(self.cfg.max_running) };
        drop(st);
        self.metrics.queued.inc();
        if hp {
            q.hp_cv.notify_one();
        } else if let Some(w) = wake {
            q.cvs[w].notify_one();
        }
    }

    /// Registers a request with the early-reply timer, waking the timer if
    /// this request is due before it would wake.
    fn track(&self, now: Time, key: ReqKey, client_timeout: Duration) {
        let mut st = self.at.lock();
        if let Err(e) = st.at.handle_request(now, key, client_timeout) {
            // A resend of a request still pending, or too many tracked: it is
            // still served, only without early replies.
            tracing::debug!(service = %self.cfg.name, xid = key.xid.0, err = %e, "request not tracked for early replies");
            return;
        }
        if let Some(due) = st.next_wake()
            && st.armed.is_none_or(|armed| due < armed)
        {
            st.armed = Some(due);
            self.at_cv.notify_one();
        }
    }

    fn cpt_for(&self, peer: Nid) -> usize {
        let n = self.queues.len();
        if n == 1 {
            return 0;
        }
        let h = u64::from(peer.addr).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        (h as usize) % n
    }

    fn malformed(&self, peer: Nid, bytes: &[u8], err: &DecodeError) {
        self.metrics.malformed.inc();
        tracing::warn!(service = %self.cfg.name, %peer, len = bytes.len(), err = %err, "malformed request");
        if err.reply_xid().is_some()
            && let Ok(header) = Header::decode(bytes)
            && header.kind == MsgKind::Request
        {
            self.send_error(peer, &header, Errno(err.errno()));
        }
    }

    /// Answers `req` with an error reply carrying `errno`.
    pub(super) fn send_error(&self, peer: Nid, req: &Header, errno: Errno) {
        let mut h = Header::new(MsgKind::Error, req.opcode, req.xid);
        h.status = -errno.0;
        h.conn_cnt = req.conn_cnt;
        h.handle = req.handle;
        worker::send_reply(self, peer, h, &[]);
    }
}
