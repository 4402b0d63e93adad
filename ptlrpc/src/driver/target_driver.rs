//! Runs sans-IO [`Target`]s as one ptlrpc service on lnet and tokio.
//!
//! Owns: [`TargetDriver`] — one or more targets on one [`Service`], each
//! behind its own mutex; the service's [`Handler`] routes a request to its
//! target (CONNECT by [`ConnectData::target`](crate::wire::ConnectData::target), everything else by the
//! export handle's tag, [`TargetConfig::handle_tag`]; a driver of one
//! target takes everything) and runs the target's front hook; a tokio
//! timer task per target that runs [`Target::handle_timeout`] at
//! [`Target::poll_timeout`] (periodic commits, the evictor — exports
//! silent for 6 ping intervals — and the recovery window); target events
//! logged, counted in [`TargetMetrics`] and offered to subscribers.
//!
//! ## Front hooks
//!
//! A [`TargetFront`] runs on the worker thread, outside the target's lock,
//! for every request of its target — or, for a PING, on lnet's receive
//! path, where the gate only tries the target and may decline
//! ([`Gate::is_inline`]; the PING then goes to a worker). Through the
//! [`Gate`] it may
//!
//! 1. ask the target about the request ([`Gate::admit`]: export, conn_cnt,
//!    recovery stage, executed already?) — cheap, under the lock;
//! 2. do work outside the lock and hand the result to the target with the
//!    request ([`Gate::submit`]): the input reaches
//!    [`TargetService::plan`](crate::target::TargetService::plan) and, in
//!    the plan's change, the store's `apply`. An OST write GETs and
//!    verifies its pages here, so only the data write and the index batch
//!    run under the lock;
//! 3. answer a read itself ([`Gate::reply`] with the header
//!    [`Admitted::reply`] carries, or [`Gate::bulk_put_then_reply`] once
//!    its bulk data has left, without a worker waiting for it): reads never
//!    take the lock beyond the admission, and are refused during recovery
//!    by the target's rules.
//!
//! Replays and resends need nothing special from a front: a replayed
//! write's pages are fetched again from the client (it re-posts its bulk
//! on every send), and an update the target executed already is admitted
//! with [`Admitted::executed`] set — pass it on without work, the target
//! rebuilds its reply from the client's record. Targets without front work use
//! [`PassFront`] (every request straight to the target).
//!
//! Store commits stay off the request path: the periodic commit calls the
//! store's `commit_async`, which a store with a commit thread hands over
//! (its `committed()` advances when the data is durable).
//!
//! Must not: decide anything the target decides, or hold a target's mutex
//! while lnet is called or while a front works.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use lnet::{Lnet, MdBuffer, Nid};
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::{Notify, broadcast};

use super::DriverClock;
use super::error::{BulkError, Errno, ServiceError};
use super::handler::{Handler, Reply as HandlerReply, ReqCtx, Request};
use super::metrics::{ServiceMetrics, render};
use super::service::{ReplySender, Service, ServiceConfig};
use super::target_metrics::{TargetLabel, TargetMetrics};
use crate::fault::FaultInjector;
use crate::target::{Admission, Admitted, PeerId, Reply, Target, TargetConfig, TargetEvent, TargetService};
use crate::time::Time;
use crate::wire::{ArchivedConnectData, BulkDesc, Header, MsgKind, Op};

/// The shortest timer sleep (a deadline that did not move never spins).
const MIN_TICK: Duration = Duration::from_millis(1);

/// Target events buffered per subscriber before the oldest are dropped.
const EVENT_BACKLOG: usize = 1024;

/// How a single-target driver is set up.
#[derive(Debug, Clone)]
pub struct TargetDriverConfig {
    /// The target's name (metrics label, logs).
    pub name: String,
    /// The component (`mdt`, `ost`, `kv`) for the metrics label.
    pub component: String,
    /// The ptlrpc service (portal, threads, buffers, AT).
    pub service: ServiceConfig,
    /// The target (ping/evict intervals, recovery limits, commit interval).
    pub target: TargetConfig,
    /// Seed for export handle cookies.
    pub seed: u64,
}

/// One target of a driver serving several ([`TargetDriver::start_many`]).
pub struct TargetSpec<S: TargetService> {
    /// The target's name: CONNECTs whose [`ConnectData::target`] names it
    /// reach it; metrics label, logs.
    pub name: String,
    /// The component (`mdt`, `ost`, `kv`) for the metrics label.
    pub component: String,
    /// The target's settings (`handle_tag` is set by the driver).
    pub target: TargetConfig,
    /// Seed for export handle cookies.
    pub seed: u64,
    /// The service.
    pub service: S,
    /// Its store.
    pub store: S::Store,
    /// Its front hook.
    pub front: Arc<dyn TargetFront<S>>,
}

impl<S: TargetService> std::fmt::Debug for TargetSpec<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetSpec")
            .field("name", &self.name)
            .field("component", &self.component)
            .finish_non_exhaustive()
    }
}

/// The work a service does for its target's requests outside the target's
/// lock. See the module docs. A PING, and what [`TargetFront::inline`]
/// takes, may reach it on lnet's receive path ([`Gate::is_inline`]): the
/// front must not wait there, and must undo, or do nothing that matters
/// when done twice, if the gate declines (the request then runs again on
/// a worker).
pub trait TargetFront<S: TargetService>: Send + Sync + 'static {
    /// Handles `req`. Ends by passing it to the target
    /// ([`Gate::submit`]), answering it ([`Gate::reply`]), or leaving it
    /// to the target's own answer (an [`Admission::Refused`]). `Err`
    /// answers with that errno ([`Gate::reply_error`]).
    fn handle(&self, req: &Request, ctx: &mut ReqCtx<'_>, gate: &Gate<'_, S>) -> Result<(), Errno>;

    /// Whether `req` (besides PING) is served on lnet's receive path
    /// (`Handler::inline`): only a request the front answers from memory
    /// without waiting, and safe to run again after a decline. Default:
    /// none.
    fn inline(&self, _req: &Request) -> bool {
        false
    }
}

/// The front of a target without front work: every request straight to
/// the target with the default input.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassFront;

impl<S> TargetFront<S> for PassFront
where
    S: TargetService + Send + 'static,
    S::Store: Send,
    S::Input: Send,
    S::Input: Default,
{
    fn handle(&self, _req: &Request, ctx: &mut ReqCtx<'_>, gate: &Gate<'_, S>) -> Result<(), Errno> {
        gate.submit(ctx, S::Input::default())
    }
}

struct Locked<S: TargetService> {
    target: Target<S>,
    /// When the timer task will next wake.
    armed: Option<Time>,
}

struct Shared<S: TargetService> {
    name: String,
    label: TargetLabel,
    handle_tag: u16,
    clock: DriverClock,
    locked: Mutex<Locked<S>>,
    wake: Notify,
    metrics: Arc<TargetMetrics>,
    events: broadcast::Sender<TargetEvent>,
    front: Arc<dyn TargetFront<S>>,
}

/// One request's way into its target, for a [`TargetFront`].
pub struct Gate<'a, S: TargetService> {
    shared: &'a Shared<S>,
    req: &'a Request,
    /// On lnet's receive path (a PING): the target is only tried, never
    /// waited for.
    inline: bool,
    /// The target could not be had at once, or the request needs a worker:
    /// nothing was done; the service queues it.
    declined: Cell<bool>,
}

impl<S: TargetService> std::fmt::Debug for Gate<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").field("target", &self.shared.name).field("xid", &self.req.xid()).finish()
    }
}

impl<S: TargetService> Gate<'_, S> {
    /// The target's name.
    pub fn target_name(&self) -> &str {
        &self.shared.name
    }

    /// The driver's clock, now.
    pub fn now(&self) -> Time {
        self.shared.clock.now()
    }

    /// Whether the request is being served on lnet's receive path
    /// ([`ReqCtx::is_inline`]: PINGs and what the front's
    /// [`TargetFront::inline`] takes). There the gate never waits for the
    /// target: when its lock is taken, or the request needs more than
    /// memory ([`Target::ping_in_memory`]), the gate declines — every call
    /// does nothing from then on, an admission is [`Admission::Refused`]
    /// — and the request goes to a worker, where the front runs again. A
    /// front that counts or logs such a request may see it twice.
    pub fn is_inline(&self) -> bool {
        self.inline
    }

    /// Whether the gate has declined (see [`Gate::is_inline`]): what the
    /// front did for the request is to be undone, since it runs again.
    pub fn has_declined(&self) -> bool {
        self.declined.get()
    }

    /// On the receive path, declines the request (see [`Gate::is_inline`]):
    /// the front found it would have to wait (disk, say), before doing
    /// anything that matters twice. The request goes to a worker, where
    /// the front runs again. On a worker it does nothing and returns false.
    pub fn decline(&self) -> bool {
        if self.inline {
            self.declined.set(true);
        }
        self.inline
    }

    /// Runs `f` on the target: at once on a worker; on the receive path
    /// only if the target's lock is free and the request can be answered
    /// from memory, else `None` (declined).
    fn step(&self, f: impl FnOnce(&mut Target<S>)) -> Option<Vec<Reply>> {
        if !self.inline {
            return Some(self.shared.step(f));
        }
        if self.declined.get() {
            return None;
        }
        let h = self.req.header();
        let out = self.shared.try_step(|t| t.ping_in_memory(h), f);
        self.declined.set(out.is_none());
        out
    }

    /// Asks the target about the request ([`Target::admit`]); sends the
    /// answer of a refused one.
    pub fn admit(&self, ctx: &ReqCtx<'_>) -> Admission {
        let now = self.now();
        let from = peer_of(self.req.peer());
        let mut out = Admission::Refused;
        if let Some(replies) = self.step(|t| out = t.admit(now, from, self.req.header())) {
            send_ctx(ctx, replies);
        }
        out
    }

    /// Hands the request and the front's `input` to the target and sends
    /// whatever replies it produced.
    pub fn submit(&self, ctx: &ReqCtx<'_>, input: S::Input) -> Result<(), Errno> {
        let frame = self.req.frame()?;
        let now = self.now();
        let from = peer_of(self.req.peer());
        if let Some(replies) = self.step(|t| t.handle_request_with(now, from, &frame, input)) {
            send_ctx(ctx, replies);
        }
        Ok(())
    }

    /// Answers an admitted read: `status` 0 sends `admitted.reply` with
    /// `body` (its `last_committed` refreshed); a negative errno sends an
    /// error reply.
    pub fn reply(&self, ctx: &ReqCtx<'_>, admitted: &Admitted, status: i32, body: &[u8]) {
        let mut h = admitted.reply;
        // What is committed now (the read may have waited for a commit).
        let committed = if self.inline {
            match self.shared.locked.try_lock().filter(|_| !self.declined.get()) {
                Some(mut l) => l.target.last_committed_for(h.handle),
                None => return self.declined.set(true),
            }
        } else {
            self.shared.locked.lock().target.last_committed_for(h.handle)
        };
        h.last_committed = committed;
        h.status = status;
        if status != 0 {
            h.kind = MsgKind::Error;
        }
        ctx.send_reply(self.req.peer(), h, if status == 0 { body } else { &[] });
    }

    /// Answers an admitted read once `data` has gone to the client: PUTs
    /// it into the pages `desc` names and returns at once (no worker waits
    /// for the transfer, as [`ReqCtx::bulk_put_then`]). When the pages have
    /// left, `then` gets them and their CRC32C (0 without checksums), on
    /// lnet's thread, and its body (or negative errno) is answered as
    /// [`Gate::reply`] would, with the `last_committed` of now. `then`
    /// must not block. `Err`: the transfer could not start; nothing was
    /// sent.
    pub fn bulk_put_then_reply(
        &self,
        ctx: &mut ReqCtx<'_>,
        admitted: &Admitted,
        desc: &BulkDesc,
        data: MdBuffer,
        then: impl FnOnce(Result<(MdBuffer, u32), BulkError>) -> Result<Vec<u8>, i32> + Send + 'static,
    ) -> Result<(), Errno> {
        let mut h = admitted.reply;
        h.last_committed = self.shared.locked.lock().target.last_committed_for(h.handle);
        ctx.bulk_put_then(desc, data, move |sent| {
            let mut h = h;
            Ok(match then(sent) {
                Ok(body) => HandlerReply::whole(h, &body),
                Err(status) => {
                    (h.status, h.kind) = (status, MsgKind::Error);
                    HandlerReply::whole(h, &[])
                }
            })
        })?;
        Ok(())
    }

    /// Answers the request with `-errno` (header fields the import checks
    /// echoed).
    pub fn reply_error(&self, ctx: &ReqCtx<'_>, errno: Errno) {
        if self.declined.get() {
            return;
        }
        let rh = self.req.header();
        let mut h = Header::new(MsgKind::Error, rh.opcode, rh.xid);
        h.status = -errno.0;
        h.conn_cnt = rh.conn_cnt;
        h.handle = rh.handle;
        ctx.send_reply(self.req.peer(), h, &[]);
    }

    /// Runs `f` on the target (rare: a front needing more than admission)
    /// and sends whatever replies it produced. It waits for the target's
    /// lock even on the receive path: not for PINGs.
    pub fn with_target<R>(&self, ctx: &ReqCtx<'_>, f: impl FnOnce(&mut Target<S>) -> R) -> R {
        let mut out = None;
        let replies = self.shared.step(|t| out = Some(f(t)));
        send_ctx(ctx, replies);
        match out {
            Some(r) => r,
            None => unreachable!("step runs its closure exactly once"),
        }
    }
}

fn send_ctx(ctx: &ReqCtx<'_>, replies: Vec<Reply>) {
    for r in replies {
        match Nid::from_u64(r.to.0) {
            Some(nid) => ctx.send_reply(nid, r.header, &r.body),
            None => tracing::error!(peer = r.to.0, "reply to an unknown peer id dropped"),
        }
    }
}

/// Running targets on one service. Dropping it stops the timers and the
/// service.
pub struct TargetDriver<S: TargetService> {
    targets: Vec<Arc<Shared<S>>>,
    metrics: Arc<TargetMetrics>,
    service: Option<Service>,
    timers: Vec<tokio::task::JoinHandle<()>>,
}

impl<S: TargetService> std::fmt::Debug for TargetDriver<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.targets.iter().map(|t| t.name.as_str()).collect();
        f.debug_struct("TargetDriver").field("targets", &names).finish_non_exhaustive()
    }
}

fn peer_of(nid: Nid) -> PeerId {
    PeerId(nid.to_u64())
}

impl<S> TargetDriver<S>
where
    S: TargetService + Send + 'static,
    S::Store: Send,
    S::Input: Send,
{
    /// Boots one target on `store` with no front work and starts serving.
    /// Must be called inside a tokio runtime (lnet's).
    pub fn start(
        lnet: &Lnet,
        cfg: TargetDriverConfig,
        service: S,
        store: S::Store,
        faults: Arc<FaultInjector>,
    ) -> Result<TargetDriver<S>, ServiceError>
    where
        S::Input: Default,
    {
        let spec = TargetSpec {
            name: cfg.name,
            component: cfg.component,
            target: cfg.target,
            seed: cfg.seed,
            service,
            store,
            front: Arc::new(PassFront),
        };
        TargetDriver::start_many(lnet, cfg.service, vec![spec], faults)
    }

    /// Boots every target of `specs` (target `i` tags its export handles
    /// `i`) and serves them on one service. Must be called inside a tokio
    /// runtime (lnet's).
    pub fn start_many(
        lnet: &Lnet,
        service: ServiceConfig,
        specs: Vec<TargetSpec<S>>,
        faults: Arc<FaultInjector>,
    ) -> Result<TargetDriver<S>, ServiceError> {
        let metrics = Arc::new(TargetMetrics::new());
        let mut targets = Vec::with_capacity(specs.len());
        for (i, spec) in specs.into_iter().enumerate() {
            let handle_tag = u16::try_from(i).map_err(|_| ServiceError::Config("too many targets".into()))?;
            let clock = DriverClock::new();
            let mut tcfg = spec.target;
            tcfg.handle_tag = handle_tag;
            let target = Target::boot(clock.now(), tcfg, spec.service, spec.store, spec.seed);
            let (events, _) = broadcast::channel(EVENT_BACKLOG);
            let label = TargetLabel { component: spec.component, target: spec.name.clone() };
            metrics.add_target(&label);
            let shared = Arc::new(Shared {
                name: spec.name,
                label,
                handle_tag,
                clock,
                locked: Mutex::new(Locked { target, armed: None }),
                wake: Notify::new(),
                metrics: Arc::clone(&metrics),
                events,
                front: spec.front,
            });
            // Boot events (recovery started) before anyone can connect.
            let boot_replies = shared.step(|_| {});
            debug_assert!(boot_replies.is_empty());
            targets.push(shared);
        }
        if targets.is_empty() {
            return Err(ServiceError::Config("a target driver needs a target".into()));
        }
        let handler: Arc<dyn Handler> = Arc::new(TargetHandler { targets: targets.clone() });
        let svc = Service::start(lnet, service, handler, faults)?;
        let timers = targets.iter().map(|t| tokio::spawn(run_timer(Arc::clone(t), svc.reply_sender()))).collect();
        for t in &targets {
            let epoch = t.locked.lock().target.epoch();
            tracing::info!(target_name = %t.name, epoch, "target started");
        }
        Ok(TargetDriver { targets, metrics, service: Some(svc), timers })
    }

    /// How many targets it serves.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether it serves none (never: starting needs one).
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The name of target `i`.
    pub fn name_at(&self, i: usize) -> Option<&str> {
        self.targets.get(i).map(|t| t.name.as_str())
    }

    /// Runs `f` on the (first) target — an administrator's action, a
    /// query — and sends whatever replies it produced.
    pub fn with_target<R>(&self, f: impl FnOnce(&mut Target<S>) -> R) -> R {
        match self.with_target_at(0, f) {
            Some(r) => r,
            None => unreachable!("a driver has at least one target"),
        }
    }

    /// [`TargetDriver::with_target`] on target `i` (`None`: no such one).
    pub fn with_target_at<R>(&self, i: usize, f: impl FnOnce(&mut Target<S>) -> R) -> Option<R> {
        let shared = self.targets.get(i)?;
        let mut out = None;
        let replies = shared.step(|t| out = Some(f(t)));
        if let Some(svc) = &self.service {
            send_all(&svc.reply_sender(), replies);
        }
        out
    }

    /// Commits every target's store now (waits for it).
    pub fn sync(&self) {
        for i in 0..self.targets.len() {
            self.with_target_at(i, Target::sync);
        }
    }

    /// Evicts `uuid` (administrator) from the first target. Returns whether
    /// it had an export.
    pub fn evict_client(&self, uuid: &str) -> bool {
        self.evict_client_at(0, uuid)
    }

    /// Evicts `uuid` from target `i`.
    pub fn evict_client_at(&self, i: usize, uuid: &str) -> bool {
        let Some(now) = self.targets.get(i).map(|t| t.clock.now()) else { return false };
        self.with_target_at(i, |t| t.evict_client(now, uuid)).unwrap_or(false)
    }

    /// The first target's events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<TargetEvent> {
        self.targets[0].events.subscribe()
    }

    /// Target `i`'s events from now on.
    pub fn subscribe_at(&self, i: usize) -> Option<broadcast::Receiver<TargetEvent>> {
        self.targets.get(i).map(|t| t.events.subscribe())
    }

    /// The metrics of the service the targets run on (takes no target's
    /// lock; `None` once shut down).
    pub fn service_metrics(&self) -> Option<&ServiceMetrics> {
        self.service.as_ref().map(Service::metrics)
    }

    /// The targets' metrics.
    pub fn metrics(&self) -> &TargetMetrics {
        &self.metrics
    }

    /// The metrics label of target `i`.
    pub fn label_at(&self, i: usize) -> Option<&TargetLabel> {
        self.targets.get(i).map(|t| &t.label)
    }

    /// The targets' metrics as Prometheus text (no `# EOF`; export counts
    /// refreshed).
    pub fn render_target_metrics(&self) -> String {
        for t in &self.targets {
            let n = t.locked.lock().target.exports().len();
            self.metrics.set_exports(&t.label, n);
        }
        let text = render(self.metrics.registry());
        text.strip_suffix("# EOF\n").unwrap_or(&text).to_string()
    }

    /// The service's and the targets' metrics as one Prometheus text.
    pub fn render_metrics(&self) -> String {
        let svc = self.service.as_ref().map(Service::render_metrics).unwrap_or_default();
        let mut out = svc.strip_suffix("# EOF\n").unwrap_or(&svc).to_string();
        out.push_str(&self.render_target_metrics());
        out.push_str("# EOF\n");
        out
    }

    /// Stops the timers and the service (joining its threads); in-flight
    /// requests finish first. The stores are left as they are: commit
    /// with [`TargetDriver::sync`] before if they must be durable.
    pub fn shutdown(mut self) {
        for t in &self.timers {
            t.abort();
        }
        if let Some(svc) = self.service.take() {
            svc.shutdown();
        }
    }
}

impl<S: TargetService> Drop for TargetDriver<S> {
    fn drop(&mut self) {
        for t in &self.timers {
            t.abort();
        }
    }
}

impl<S: TargetService> Shared<S> {
    /// Runs `f` on the target, then drains its replies (returned) and
    /// events (logged, counted, published), and wakes the timer if the
    /// target now wants it earlier.
    fn step(&self, f: impl FnOnce(&mut Target<S>)) -> Vec<Reply> {
        self.step_locked(self.locked.lock(), f)
    }

    /// [`Shared::step`] only if the target's lock is free now and `ok`
    /// says yes under it; else `None`, nothing done.
    fn try_step(&self, ok: impl FnOnce(&Target<S>) -> bool, f: impl FnOnce(&mut Target<S>)) -> Option<Vec<Reply>> {
        let l = self.locked.try_lock()?;
        if !ok(&l.target) {
            return None;
        }
        Some(self.step_locked(l, f))
    }

    fn step_locked(&self, mut l: MutexGuard<'_, Locked<S>>, f: impl FnOnce(&mut Target<S>)) -> Vec<Reply> {
        let mut replies = Vec::new();
        let mut events = Vec::new();
        let rearm = {
            f(&mut l.target);
            while let Some(r) = l.target.poll_transmit() {
                replies.push(r);
            }
            while let Some(e) = l.target.poll_event() {
                events.push(e);
            }
            let due = l.target.poll_timeout();
            let rearm = due.is_some_and(|d| l.armed.is_none_or(|a| d < a));
            drop(l);
            rearm
        };
        for e in events {
            self.observe(e);
        }
        if rearm {
            self.wake.notify_one();
        }
        replies
    }

    fn observe(&self, ev: TargetEvent) {
        self.metrics.observe(&self.label, &ev);
        let name = &self.name;
        match &ev {
            TargetEvent::RecoveryStarted { clients, .. } => {
                tracing::info!(target_name = %name, clients, "recovery started");
            }
            TargetEvent::RecoveryDone { duration, recovered, evicted, retained, .. } => {
                tracing::info!(target_name = %name, ?duration, recovered, evicted, retained, "recovery done");
            }
            TargetEvent::Evicted { uuid, reason } => {
                tracing::warn!(target_name = %name, client = %uuid, ?reason, "export evicted");
            }
            TargetEvent::Gap { transno } => tracing::warn!(target_name = %name, ?transno, "recovery gap"),
            TargetEvent::Replayed { uuid, xid, applied, delayed, .. } => {
                tracing::debug!(target_name = %name, client = %uuid, xid = xid.0, applied, delayed, "replayed");
            }
        }
        // No subscriber is fine: events are counted and logged anyway.
        let _ = self.events.send(ev);
    }
}

fn send_all(to: &ReplySender, replies: Vec<Reply>) {
    for r in replies {
        match Nid::from_u64(r.to.0) {
            Some(nid) => to.send(nid, r.header, &r.body),
            None => tracing::error!(peer = r.to.0, xid = r.header.xid.0, "reply to an unknown peer id dropped"),
        }
    }
}

/// Sleeps until the target's next deadline (or an earlier one appears)
/// and runs its timers.
async fn run_timer<S: TargetService>(shared: Arc<Shared<S>>, replies: ReplySender) {
    loop {
        let now = shared.clock.now();
        if shared.locked.lock().target.poll_timeout().is_some_and(|d| d <= now) {
            let out = shared.step(|t| t.handle_timeout(now));
            send_all(&replies, out);
        }
        let due = {
            let mut l = shared.locked.lock();
            l.armed = l.target.poll_timeout();
            l.armed
        };
        // A target always has a commit deadline; the fallback only bounds
        // the sleep if it ever has none. The floor keeps a deadline that
        // did not move from spinning the task.
        let wait = due.map_or(Duration::from_secs(1), |d| d.saturating_since(shared.clock.now())).max(MIN_TICK);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.wake.notified() => {}
        }
    }
}

struct TargetHandler<S: TargetService> {
    targets: Vec<Arc<Shared<S>>>,
}

impl<S: TargetService> TargetHandler<S> {
    /// The target a request is for: the only one; by name for CONNECT; by
    /// the handle's tag otherwise.
    fn route(&self, req: &Request) -> Result<&Arc<Shared<S>>, Errno> {
        if let [only] = self.targets.as_slice() {
            return Ok(only);
        }
        if req.op().is_connect() {
            let data = req.access::<ArchivedConnectData>()?;
            let name = data.target.as_str();
            return self.targets.iter().find(|t| t.name == name).ok_or(Errno(crate::wire::errno::ENODEV));
        }
        let tag = (req.header().handle.0 >> 48) as u16;
        self.targets.iter().find(|t| t.handle_tag == tag).ok_or(Errno(crate::wire::errno::ENOTCONN))
    }
}

impl<S> Handler for TargetHandler<S>
where
    S: TargetService + Send + 'static,
    S::Store: Send,
    S::Input: Send,
{
    fn handle(&self, req: &Request, ctx: &mut ReqCtx<'_>) -> Result<HandlerReply, Errno> {
        let shared = self.route(req)?;
        let gate = Gate { shared, req, inline: ctx.is_inline(), declined: Cell::new(false) };
        let result = shared.front.handle(req, ctx, &gate);
        if ctx.deferred.get() {
            // A bulk transfer answers when it ends (`Gate::bulk_put_then_reply`).
            if let Err(e) = result {
                tracing::error!(xid = req.xid().0, errno = e.0, "front failed after deferring its reply; ignored");
            }
            return Ok(HandlerReply::deferred());
        }
        if let Err(e) = result {
            gate.reply_error(ctx, e);
        }
        if gate.declined.get() {
            return Ok(HandlerReply::declined());
        }
        Ok(HandlerReply::sent_by_handler())
    }

    /// PING, and what the front takes ([`TargetFront::inline`]), is
    /// answered on the receive path when the target's lock is free and
    /// the request needs nothing but memory (see [`Gate::is_inline`]);
    /// otherwise, and for CONNECT (a first connect writes and commits its
    /// client record), on a worker.
    fn inline(&self, req: &Request) -> bool {
        req.op() == Op::ObdPing || self.route(req).is_ok_and(|t| t.front.inline(req))
    }
}
