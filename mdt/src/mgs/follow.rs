//! Following an MGS: the [`MgsApi`] a target or client uses (in-process
//! [`LocalMgs`], or [`RpcMgs`] over ptlrpc) and [`Follower`], a thread
//! that drives ptlrpc's sans-IO [`ConfigFollower`] (the same logic the
//! client's MGC runs): reads the config log from index 1 and hands every
//! record, in order, to a callback — waiting on the MGS (long-poll) for
//! new ones, giving a read up when the MGS does not answer (it restarted)
//! and resuming from the next index.
//!
//! Must not: skip or repeat a record within one follower's life (the
//! [`ConfigFollower`]'s rule); spin on an unreachable MGS (its bounded
//! backoff).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use ptlrpc::Time;
use ptlrpc::config_log::{ConfigFollower, FollowSettings};
use ptlrpc::driver::{Client, RpcError};
use ptlrpc::wire::mgs::{
    ConfigReadReply, ConfigReadReq, ConfigRecord, MgsAdminReply, MgsAdminReq, TargetRegReply, TargetRegReq,
};
use ptlrpc::wire::{Op, WireBody, WireDecode};

use super::Mgs;
use crate::error::{MdtError, Result, errno};
use crate::stop::StopSignal;

/// What a follower needs from the MGS.
pub trait MgsApi: Send + Sync + std::fmt::Debug {
    /// Registers a starting target.
    fn register(&self, req: &TargetRegReq) -> Result<TargetRegReply>;
    /// Reads `req` (records from `req.from`, the MGS waiting up to
    /// `req.wait_ms` for new ones), giving up after `bound`.
    fn read(&self, req: &ConfigReadReq, bound: Duration) -> Result<ConfigReadReply>;
    /// An administrative request.
    fn admin(&self, req: &MgsAdminReq) -> Result<MgsAdminReply>;
}

/// The MGS in this process.
#[derive(Debug, Clone)]
pub struct LocalMgs(pub Arc<Mgs>);

impl MgsApi for LocalMgs {
    fn register(&self, req: &TargetRegReq) -> Result<TargetRegReply> {
        self.0.register(req)
    }

    fn read(&self, req: &ConfigReadReq, _bound: Duration) -> Result<ConfigReadReply> {
        Ok(self.0.read(&req.fsname, req.from, req.max, Duration::from_millis(u64::from(req.wait_ms))))
    }

    fn admin(&self, req: &MgsAdminReq) -> Result<MgsAdminReply> {
        self.0.admin(req)
    }
}

/// The MGS over ptlrpc (blocking on a runtime handle; not for async
/// contexts).
#[derive(Debug, Clone)]
pub struct RpcMgs {
    client: Client,
    rt: tokio::runtime::Handle,
}

impl RpcMgs {
    /// Calls go through `client`, blocking on `rt`.
    pub fn new(client: Client, rt: tokio::runtime::Handle) -> RpcMgs {
        RpcMgs { client, rt }
    }

    fn call<B, R>(&self, op: Op, body: &B, bound: Duration) -> Result<R>
    where
        B: WireBody,
        R: WireDecode,
    {
        let fut = self.client.start(op, body);
        match self.rt.block_on(async { tokio::time::timeout(bound, fut).await }) {
            Err(_) => Err(MdtError::posix(errno::ENOTCONN, format!("MGS {op:?}: no answer within {bound:?}"))),
            Ok(Err(RpcError::Server { errno, .. })) => Err(MdtError::posix(errno, format!("MGS {op:?}"))),
            Ok(Err(e)) => Err(MdtError::posix(errno::ENOTCONN, format!("MGS {op:?}: {e}"))),
            Ok(Ok(r)) => r.body::<R>().map_err(|e| MdtError::posix(errno::EIO, format!("MGS {op:?} reply: {e}"))),
        }
    }
}

const RPC_BOUND: Duration = Duration::from_secs(30);

impl MgsApi for RpcMgs {
    fn register(&self, req: &TargetRegReq) -> Result<TargetRegReply> {
        self.call(Op::MgsTargetReg, req, RPC_BOUND)
    }

    fn read(&self, req: &ConfigReadReq, bound: Duration) -> Result<ConfigReadReply> {
        self.call(Op::MgsConfigRead, req, bound)
    }

    fn admin(&self, req: &MgsAdminReq) -> Result<MgsAdminReply> {
        self.call(Op::MgsSetInfo, req, RPC_BOUND)
    }
}

/// How far a follower got: the next record index it will apply, with a
/// condition variable to wait on.
#[derive(Debug)]
pub struct Progress {
    next: Mutex<u64>,
    cv: Condvar,
}

impl Default for Progress {
    fn default() -> Progress {
        Progress { next: Mutex::new(1), cv: Condvar::new() }
    }
}

impl Progress {
    /// Records applied so far.
    pub fn applied(&self) -> u64 {
        *self.next.lock() - 1
    }

    /// Waits until at least `n` records are applied, up to `bound`.
    pub fn wait_applied(&self, n: u64, bound: Duration) -> u64 {
        let deadline = std::time::Instant::now() + bound;
        let mut g = self.next.lock();
        while *g - 1 < n {
            if self.cv.wait_until(&mut g, deadline).timed_out() {
                break;
            }
        }
        *g - 1
    }

    fn set(&self, next: u64) {
        *self.next.lock() = next;
        self.cv.notify_all();
    }
}

/// A thread following one file system's log.
#[derive(Debug)]
pub struct Follower {
    stop: Arc<StopSignal>,
    next: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Follower {
    /// Follows `fsname` on `mgs` from record 1, calling `apply` for each
    /// record; each read waits up to `wait` for new records.
    pub fn start(
        mgs: Arc<dyn MgsApi>,
        fsname: String,
        wait: Duration,
        progress: Arc<Progress>,
        mut apply: impl FnMut(&ConfigRecord) + Send + 'static,
    ) -> Follower {
        let stop = Arc::new(StopSignal::default());
        let next = Arc::new(AtomicU64::new(1));
        let (s, n) = (Arc::clone(&stop), Arc::clone(&next));
        let settings = FollowSettings { wait, ..FollowSettings::default() };
        let thread = std::thread::Builder::new()
            .name("mgs-follow".into())
            .spawn(move || {
                let epoch = std::time::Instant::now();
                let now = || Time::from_epoch(epoch.elapsed());
                let mut f = ConfigFollower::new(now(), &fsname, 1, settings);
                while !s.is_stopped() {
                    f.handle_timeout(now());
                    let Some(due) = f.poll_read(now()) else {
                        if s.wait(f.poll_timeout().saturating_since(now())) {
                            return;
                        }
                        continue;
                    };
                    let bound = due.deadline.saturating_since(now());
                    match mgs.read(&due.req, bound) {
                        Ok(r) => {
                            for rec in f.handle_reply(now(), due.id, &r) {
                                apply(&rec);
                                n.store(rec.index + 1, Ordering::Release);
                                progress.set(rec.index + 1);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, next = f.next(), "config log read failed; retrying");
                            f.handle_error(now(), due.id);
                        }
                    }
                }
            })
            .ok();
        Follower { stop, next, thread }
    }

    /// The next record index it will apply.
    pub fn next(&self) -> u64 {
        self.next.load(Ordering::Acquire)
    }

    /// Stops after the current read returns.
    pub fn stop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.stop();
    }
}
