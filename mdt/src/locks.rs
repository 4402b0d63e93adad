//! [`MdtLocks`]: the MDT's lock manager — a `ptlrpc::ldlm::LockNamespace`
//! run on threads, its blocking callbacks sent to clients, its callback
//! timeout ending in eviction through the target.
//!
//! Reads (the `LDLM_ENQUEUE` intents, `crate::tgt::intent`) get protected-read
//! locks when nothing conflicts, never waiting; every modifying request
//! takes exclusive local locks on what it changes first
//! ([`MdtLocks::lock_local`]), which calls back every client caching it and
//! waits for their cancels (or their eviction at the callback timeout), and
//! holds them until the change is applied and answered.
//!
//! Owners are exports, keyed by their handle; the client's NID (from its
//! requests) is where callbacks go, on `LDLM_CB_REQUEST_PORTAL`. Locks are
//! not kept across an MDT restart: a restarted MDT has none, and clients
//! drop theirs when they reconnect to it.
//!
//! Must not: hold its state lock across a network send, an eviction or a
//! wait (the timer thread and callbacks run with it released).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use lnet::{Lnet, Nid};
use parking_lot::{Condvar, Mutex};
use ptlrpc::Time;
use ptlrpc::driver::{Client, ClientConfig, DriverClock};
use ptlrpc::fault::FaultInjector;
use ptlrpc::ldlm::{
    Enqueued, InodeBits, LdlmEvent, LdlmSettings, LockHandle, LockMode, LockNamespace, Owner, ResId, Wait,
};
use ptlrpc::portals::LDLM_CB_REQUEST_PORTAL;
use ptlrpc::wire::ldlm::{LdlmBlCallbackReq, LdlmLockDesc};
use ptlrpc::wire::{Fid, Op};

/// Evicts a client by UUID (the target driver's `evict_client`).
pub type Evictor = Box<dyn Fn(&str) + Send + Sync>;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct LockStats {
    /// Read locks granted.
    pub granted: std::sync::atomic::AtomicU64,
    /// Read locks refused (a conflict).
    pub refused: std::sync::atomic::AtomicU64,
    /// Blocking callbacks sent (re-sends included).
    pub callbacks: std::sync::atomic::AtomicU64,
    /// Locks clients cancelled.
    pub cancels: std::sync::atomic::AtomicU64,
    /// Clients evicted for not answering a callback.
    pub evictions: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct OwnerInfo {
    uuid: String,
    nid: Nid,
}

#[derive(Debug)]
struct State {
    ns: LockNamespace<u64>,
    owners: HashMap<u64, OwnerInfo>,
    stopping: bool,
}

/// What to do once the state lock is released.
enum Action {
    Callback(Nid, LdlmBlCallbackReq),
    Evict(String),
}

struct Shared {
    state: Mutex<State>,
    cond: Condvar,
    clock: DriverClock,
    evictor: OnceLock<Evictor>,
    lnet: Lnet,
    faults: Arc<FaultInjector>,
    rt: tokio::runtime::Handle,
    clients: Mutex<HashMap<Nid, Arc<Client>>>,
    stats: LockStats,
}

/// The MDT's lock manager.
pub struct MdtLocks {
    shared: Arc<Shared>,
    timer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for MdtLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MdtLocks").field("locks", &self.shared.state.lock().ns.len()).finish_non_exhaustive()
    }
}

/// A client's own locks its change leaves in place (`MdsReq::keeps`):
/// the export whose they are and their handles.
#[derive(Debug, Clone, Copy)]
pub struct Keeps<'a> {
    /// The export (the locks' owner).
    pub owner: u64,
    /// The handles (others' or unknown ones keep nothing).
    pub handles: &'a [u64],
}

impl Keeps<'_> {
    /// Keeps nothing.
    pub const NONE: Keeps<'static> = Keeps { owner: 0, handles: &[] };

    /// A local exclusive lock on `res` that keeps these.
    fn enqueue(&self, ns: &mut LockNamespace<u64>, now: Time, res: ResId, bits: InodeBits, wait: Wait) -> EnqResult {
        if self.handles.is_empty() {
            return ns.enqueue(now, Owner::Local, res, LockMode::Ex, bits, wait);
        }
        let hs: Vec<LockHandle> = self.handles.iter().map(|h| LockHandle(*h)).collect();
        ns.enqueue_keeping(now, self.owner, res, LockMode::Ex, bits, wait, &hs)
    }
}

type EnqResult = Result<Enqueued, ptlrpc::ldlm::LdlmError>;

/// Exclusive local locks held for one modifying request; dropped, they
/// are released.
#[derive(Debug)]
pub struct LocalLocks {
    shared: Weak<Shared>,
    handles: Vec<LockHandle>,
}

impl Drop for LocalLocks {
    fn drop(&mut self) {
        if let Some(s) = self.shared.upgrade() {
            let actions = {
                let mut st = s.state.lock();
                let now = s.clock.now();
                for h in self.handles.drain(..) {
                    let _ = st.ns.cancel(now, Owner::Local, h);
                }
                pump(&s, &mut st)
            };
            run(&s, actions);
        }
    }
}

fn fid_res(f: Fid) -> ResId {
    ResId(f.as_u128())
}

/// Drains the namespace's events into actions; wakes local waiters.
fn pump(s: &Shared, st: &mut State) -> Vec<Action> {
    let mut out = Vec::new();
    let mut woke = false;
    while let Some(ev) = st.ns.poll_event() {
        match ev {
            LdlmEvent::BlockingAst { owner, lock, res, bits } => {
                if let Some(o) = st.owners.get(&owner) {
                    let body = LdlmBlCallbackReq { handle: lock.0, res: Fid::from_u128(res.0), bits: bits.wire() };
                    out.push(Action::Callback(o.nid, body));
                }
            }
            LdlmEvent::Granted { .. } => woke = true,
            LdlmEvent::Evict { owner, lock } => {
                woke = true;
                if let Some(o) = st.owners.remove(&owner) {
                    tracing::warn!(client = %o.uuid, nid = %o.nid, lock = lock.0, "lock callback timed out: evicting");
                    out.push(Action::Evict(o.uuid));
                }
            }
        }
    }
    if woke {
        s.cond.notify_all();
    }
    out
}

fn run(s: &Arc<Shared>, actions: Vec<Action>) {
    use std::sync::atomic::Ordering::Relaxed;
    for a in actions {
        match a {
            Action::Callback(nid, body) => {
                s.stats.callbacks.fetch_add(1, Relaxed);
                let client = Arc::clone(s.clients.lock().entry(nid).or_insert_with(|| {
                    Arc::new(Client::new(
                        &s.lnet,
                        nid,
                        LDLM_CB_REQUEST_PORTAL,
                        ClientConfig::default(),
                        Arc::clone(&s.faults),
                    ))
                }));
                let rpc = client.start(Op::LdlmBlCallback, &body);
                s.rt.spawn(async move {
                    if let Err(e) = rpc.await {
                        tracing::debug!(%nid, lock = body.handle, error = %e, "blocking callback unanswered");
                    }
                });
            }
            Action::Evict(uuid) => {
                s.stats.evictions.fetch_add(1, Relaxed);
                match s.evictor.get() {
                    Some(evict) => evict(&uuid),
                    None => tracing::error!(client = %uuid, "no evictor set: lock holder not evicted"),
                }
            }
        }
    }
}

impl MdtLocks {
    /// A lock manager sending callbacks over `lnet` (tasks on `rt`), with
    /// a timer thread for callback deadlines.
    pub fn start(
        lnet: &Lnet,
        rt: tokio::runtime::Handle,
        faults: Arc<FaultInjector>,
        settings: LdlmSettings,
        cookie_base: u64,
    ) -> Arc<MdtLocks> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                ns: LockNamespace::new(settings, cookie_base),
                owners: HashMap::new(),
                stopping: false,
            }),
            cond: Condvar::new(),
            clock: DriverClock::new(),
            evictor: OnceLock::new(),
            lnet: lnet.clone(),
            faults,
            rt,
            clients: Mutex::new(HashMap::new()),
            stats: LockStats::default(),
        });
        let weak = Arc::downgrade(&shared);
        let timer = std::thread::Builder::new().name("mdt-ldlm".into()).spawn(move || timer_loop(&weak)).ok();
        Arc::new(MdtLocks { shared, timer: Mutex::new(timer) })
    }

    /// Where evictions go (set once the target driver runs).
    pub fn set_evictor(&self, evict: Evictor) {
        let _ = self.shared.evictor.set(evict);
    }

    /// The counters.
    pub fn stats(&self) -> &LockStats {
        &self.shared.stats
    }

    /// Locks in the table.
    pub fn len(&self) -> usize {
        self.shared.state.lock().ns.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A protected-read lock on `fid` for the client of export `owner`
    /// (UUID `uuid`, at `nid`), granted now or not at all.
    pub fn grant_read(&self, owner: u64, uuid: &str, nid: Nid, fid: Fid, bits: InodeBits) -> Option<LdlmLockDesc> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut st = self.shared.state.lock();
        if st.stopping {
            return None;
        }
        let now = self.shared.clock.now();
        let got = st.ns.enqueue(now, Owner::Remote(owner), fid_res(fid), LockMode::Pr, bits, Wait::NoWait);
        match got {
            Ok(Enqueued::Granted(h)) => {
                st.owners.entry(owner).or_insert_with(|| OwnerInfo { uuid: uuid.to_string(), nid });
                self.shared.stats.granted.fetch_add(1, Relaxed);
                Some(LdlmLockDesc { handle: h.0, res: fid, mode: LockMode::Pr.wire(), bits: bits.wire() })
            }
            _ => {
                self.shared.stats.refused.fetch_add(1, Relaxed);
                None
            }
        }
    }

    /// Client `owner` gives locks back (unknown handles are ignored: a
    /// lock already cancelled, or from before a restart).
    pub fn cancel(&self, owner: u64, handles: &[u64]) {
        use std::sync::atomic::Ordering::Relaxed;
        let actions = {
            let mut st = self.shared.state.lock();
            let now = self.shared.clock.now();
            for h in handles {
                if st.ns.cancel(now, Owner::Remote(owner), LockHandle(*h)).is_ok() {
                    self.shared.stats.cancels.fetch_add(1, Relaxed);
                }
            }
            pump(&self.shared, &mut st)
        };
        run(&self.shared, actions);
    }

    /// Drops every lock of export `owner` (disconnected).
    pub fn drop_owner(&self, owner: u64) {
        let actions = {
            let mut st = self.shared.state.lock();
            let now = self.shared.clock.now();
            st.ns.cancel_owner(now, owner);
            st.owners.remove(&owner);
            pump(&self.shared, &mut st)
        };
        run(&self.shared, actions);
    }

    /// Drops every lock of the client `uuid` (evicted, or gone).
    pub fn drop_client(&self, uuid: &str) {
        let owners: Vec<u64> =
            self.shared.state.lock().owners.iter().filter(|(_, o)| o.uuid == uuid).map(|(k, _)| *k).collect();
        for o in owners {
            self.drop_owner(o);
        }
    }

    /// Takes exclusive local locks on `wants` (merged per object, taken
    /// in FID order so two requests never wait on each other in a cycle),
    /// calling back the clients that cache them but the locks `keeps`
    /// names (the changing client's own); returns once all are
    /// granted. Bounded: holders answer or are evicted within the
    /// callback timeout; past three of those the request fails EAGAIN.
    pub fn lock_local(
        &self,
        wants: &[(Fid, InodeBits)],
        keeps: Keeps<'_>,
    ) -> Result<LocalLocks, ptlrpc::driver::Errno> {
        let merged = merge_wants(wants);
        let s = &self.shared;
        let mut guard = LocalLocks { shared: Arc::downgrade(s), handles: Vec::new() };
        let bound = s.state.lock().ns.settings().callback_timeout * 3;
        let deadline = std::time::Instant::now() + bound;
        for (fid, bits) in merged {
            let (h, actions) = {
                let mut st = s.state.lock();
                let now = s.clock.now();
                let got = keeps.enqueue(&mut st.ns, now, fid_res(fid), bits, Wait::Block);
                let h = match got {
                    Ok(Enqueued::Granted(h) | Enqueued::Waiting(h)) => h,
                    Ok(Enqueued::WouldBlock) | Err(_) => {
                        return Err(ptlrpc::driver::Errno(ptlrpc::wire::errno::EAGAIN));
                    }
                };
                (h, pump(s, &mut st))
            };
            guard.handles.push(h);
            run(s, actions);
            let mut st = s.state.lock();
            while !st.ns.lock(h).is_some_and(|l| l.granted) {
                if s.cond.wait_until(&mut st, deadline).timed_out() {
                    tracing::error!(fid = %fid, "local lock not granted within three callback timeouts");
                    return Err(ptlrpc::driver::Errno(ptlrpc::wire::errno::EAGAIN));
                }
            }
        }
        Ok(guard)
    }

    /// [`MdtLocks::lock_local`] granted now or not at all: `None` when a
    /// lock conflicts (nothing is called back, and what was taken is given
    /// back), for a request served on the receive path, which must not
    /// wait; a worker then takes them with [`MdtLocks::lock_local`].
    pub fn try_lock_local(&self, wants: &[(Fid, InodeBits)], keeps: Keeps<'_>) -> Option<LocalLocks> {
        let s = &self.shared;
        let mut guard = LocalLocks { shared: Arc::downgrade(s), handles: Vec::new() };
        let mut st = s.state.lock();
        if st.stopping {
            return None;
        }
        for (fid, bits) in merge_wants(wants) {
            let now = s.clock.now();
            match keeps.enqueue(&mut st.ns, now, fid_res(fid), bits, Wait::NoWait) {
                Ok(Enqueued::Granted(h)) => guard.handles.push(h),
                // Dropping the guard gives back what was taken.
                _ => {
                    drop(st);
                    return None;
                }
            }
        }
        Some(guard)
    }

    /// Stops the timer thread.
    pub fn stop(&self) {
        self.shared.state.lock().stopping = true;
        self.shared.cond.notify_all();
        if let Some(t) = self.timer.lock().take() {
            let _ = t.join();
        }
    }

    /// Prometheus text for the lock counters.
    pub fn render(&self, target: &str) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let st = &self.shared.stats;
        let n = self.len();
        let mut out = String::new();
        out.push_str("# TYPE sheen_ldlm_locks gauge\n");
        out.push_str(&format!("sheen_ldlm_locks{{target=\"{target}\"}} {n}\n"));
        out.push_str("# TYPE sheen_ldlm_total counter\n");
        for (what, v) in [
            ("granted", &st.granted),
            ("refused", &st.refused),
            ("callbacks", &st.callbacks),
            ("cancels", &st.cancels),
            ("evictions", &st.evictions),
        ] {
            out.push_str(&format!("sheen_ldlm_total{{target=\"{target}\",event=\"{what}\"}} {}\n", v.load(Relaxed)));
        }
        out
    }
}

fn timer_loop(weak: &Weak<Shared>) {
    loop {
        let Some(s) = weak.upgrade() else {
            return;
        };
        let actions = {
            let mut st = s.state.lock();
            if st.stopping {
                return;
            }
            let now = s.clock.now();
            st.ns.handle_timeout(now);
            let actions = pump(&s, &mut st);
            if actions.is_empty() {
                let wait = st
                    .ns
                    .poll_timeout()
                    .map_or(Duration::from_secs(1), |t: Time| t.saturating_since(now))
                    .min(Duration::from_secs(1));
                s.cond.wait_for(&mut st, wait);
            }
            actions
        };
        run(&s, actions);
    }
}

/// `wants` merged per object and sorted in FID order (two requests never
/// wait on each other in a cycle).
fn merge_wants(wants: &[(Fid, InodeBits)]) -> Vec<(Fid, InodeBits)> {
    let mut sorted: Vec<(Fid, InodeBits)> = wants.to_vec();
    sorted.sort_by_key(|(f, _)| f.as_u128());
    let mut merged: Vec<(Fid, InodeBits)> = Vec::new();
    for (f, b) in sorted {
        match merged.last_mut() {
            Some((lf, lb)) if *lf == f => *lb = *lb | b,
            _ => merged.push((f, b)),
        }
    }
    merged
}
