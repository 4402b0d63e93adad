//! Runs a sans-IO [`Target`] as a ptlrpc service on lnet and tokio.
//!
//! Owns: [`TargetDriver`] — one [`Target`] behind one mutex; a
//! [`Service`] whose [`Handler`] feeds each request into the target and
//! sends whatever replies it produced (the target builds whole headers:
//! connect dispositions, transnos, versions, held PINGs answered later);
//! a tokio timer task that runs [`Target::handle_timeout`] at
//! [`Target::poll_timeout`] (store commits at the commit interval, the
//! evictor — exports silent for 6 ping intervals — and the recovery
//! window); target events logged, counted in [`TargetMetrics`] and offered
//! to subscribers.
//!
//! Must not: decide anything the target decides, or hold the target's
//! mutex while lnet is called.

use std::sync::Arc;
use std::time::Duration;

use lnet::{Lnet, Nid};
use parking_lot::Mutex;
use tokio::sync::{Notify, broadcast};

use super::DriverClock;
use super::error::{Errno, ServiceError};
use super::handler::{Handler, Reply as HandlerReply, ReqCtx, Request};
use super::metrics::render;
use super::service::{ReplySender, Service, ServiceConfig};
use super::target_metrics::TargetMetrics;
use crate::fault::FaultInjector;
use crate::target::{PeerId, Reply, Target, TargetConfig, TargetEvent, TargetService};
use crate::time::Time;

/// The shortest timer sleep (a deadline that did not move never spins).
const MIN_TICK: Duration = Duration::from_millis(1);

/// Target events buffered per subscriber before the oldest are dropped.
const EVENT_BACKLOG: usize = 1024;

/// How a target driver is set up.
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

struct Locked<S: TargetService> {
    target: Target<S>,
    /// When the timer task will next wake.
    armed: Option<Time>,
}

struct Shared<S: TargetService> {
    name: String,
    clock: DriverClock,
    locked: Mutex<Locked<S>>,
    wake: Notify,
    metrics: TargetMetrics,
    events: broadcast::Sender<TargetEvent>,
}

/// A running target. Dropping it stops the timer and the service.
pub struct TargetDriver<S: TargetService> {
    shared: Arc<Shared<S>>,
    service: Option<Service>,
    timer: tokio::task::JoinHandle<()>,
}

impl<S: TargetService> std::fmt::Debug for TargetDriver<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetDriver").field("name", &self.shared.name).finish_non_exhaustive()
    }
}

fn peer_of(nid: Nid) -> PeerId {
    PeerId(nid.to_u64())
}

impl<S> TargetDriver<S>
where
    S: TargetService + Send + 'static,
    S::Store: Send,
{
    /// Boots the target on `store` and starts serving. Must be called
    /// inside a tokio runtime (lnet's).
    pub fn start(
        lnet: &Lnet,
        cfg: TargetDriverConfig,
        service: S,
        store: S::Store,
        faults: Arc<FaultInjector>,
    ) -> Result<TargetDriver<S>, ServiceError> {
        let clock = DriverClock::new();
        let now = clock.now();
        let target = Target::boot(now, cfg.target.clone(), service, store, cfg.seed);
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        let shared = Arc::new(Shared {
            name: cfg.name.clone(),
            clock,
            locked: Mutex::new(Locked { target, armed: None }),
            wake: Notify::new(),
            metrics: TargetMetrics::new(&cfg.component, &cfg.name),
            events,
        });
        // Boot events (recovery started) before anyone can connect.
        let boot_replies = shared.step(|_| {});
        debug_assert!(boot_replies.is_empty());
        let handler: Arc<dyn Handler> = Arc::new(TargetHandler { shared: Arc::clone(&shared) });
        let svc = Service::start(lnet, cfg.service, handler, faults)?;
        let timer = tokio::spawn(run_timer(Arc::clone(&shared), svc.reply_sender()));
        tracing::info!(target_name = %cfg.name, epoch = shared.locked.lock().target.epoch(), "target started");
        Ok(TargetDriver { shared, service: Some(svc), timer })
    }

    /// Runs `f` on the target (an administrator's action, a query) and
    /// sends whatever replies it produced.
    pub fn with_target<R>(&self, f: impl FnOnce(&mut Target<S>) -> R) -> R {
        let mut out = None;
        let replies = self.shared.step(|t| out = Some(f(t)));
        if let Some(svc) = &self.service {
            send_all(&svc.reply_sender(), replies);
        }
        match out {
            Some(r) => r,
            None => unreachable!("step runs its closure exactly once"),
        }
    }

    /// Commits the store now.
    pub fn sync(&self) {
        self.with_target(Target::sync);
    }

    /// Evicts `uuid` (administrator). Returns whether it had an export.
    pub fn evict_client(&self, uuid: &str) -> bool {
        let now = self.shared.clock.now();
        self.with_target(|t| t.evict_client(now, uuid))
    }

    /// Target events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<TargetEvent> {
        self.shared.events.subscribe()
    }

    /// The target's metrics.
    pub fn metrics(&self) -> &TargetMetrics {
        &self.shared.metrics
    }

    /// The service's and the target's metrics as one Prometheus text.
    pub fn render_metrics(&self) -> String {
        let svc = self.service.as_ref().map(Service::render_metrics).unwrap_or_default();
        let mut out = svc.strip_suffix("# EOF\n").unwrap_or(&svc).to_string();
        out.push_str(&render(self.shared.metrics.registry()));
        out
    }

    /// Stops the timer and the service (joining its threads).
    pub fn shutdown(mut self) {
        self.timer.abort();
        if let Some(svc) = self.service.take() {
            svc.shutdown();
        }
    }
}

impl<S: TargetService> Drop for TargetDriver<S> {
    fn drop(&mut self) {
        self.timer.abort();
    }
}

impl<S: TargetService> Shared<S> {
    /// Runs `f` on the target, then drains its replies (returned) and
    /// events (logged, counted, published), and wakes the timer if the
    /// target now wants it earlier.
    fn step(&self, f: impl FnOnce(&mut Target<S>)) -> Vec<Reply> {
        let mut replies = Vec::new();
        let mut events = Vec::new();
        let rearm = {
            let mut l = self.locked.lock();
            f(&mut l.target);
            while let Some(r) = l.target.poll_transmit() {
                replies.push(r);
            }
            while let Some(e) = l.target.poll_event() {
                events.push(e);
            }
            let due = l.target.poll_timeout();
            due.is_some_and(|d| l.armed.is_none_or(|a| d < a))
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
        self.metrics.observe(&ev);
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
    shared: Arc<Shared<S>>,
}

impl<S> Handler for TargetHandler<S>
where
    S: TargetService + Send + 'static,
    S::Store: Send,
{
    fn handle(&self, req: &Request, ctx: &mut ReqCtx<'_>) -> Result<HandlerReply, Errno> {
        let frame = req.frame()?;
        let now = self.shared.clock.now();
        let from = peer_of(req.peer());
        let replies = self.shared.step(|t| t.handle_request(now, from, &frame));
        for r in replies {
            match Nid::from_u64(r.to.0) {
                Some(nid) => ctx.send_reply(nid, r.header, &r.body),
                None => tracing::error!(peer = r.to.0, "reply to an unknown peer id dropped"),
            }
        }
        Ok(HandlerReply::sent_by_handler())
    }
}
