//! Service threads: the per-CPT workers and the early-reply timer, and the
//! one function that sends a reply.
//!
//! Owns: spawning (one set of workers per CPT, bound to the CPT's cores
//! when the CPT table describes this machine), the count of a CPT's
//! running and waking general workers that `max_running` wakes by and
//! its stack of sleeping ones (the last to sleep is woken first), [`blocking`] (a worker lends its running slot out while it waits),
//! the worker loop (high
//! priority first, then the CPT's policy; run the handler; measure the
//! service time from arrival; report it in the reply; metrics and a
//! tracing span per RPC; the same for a request served inline on its
//! receive path, [`serve_inline`]), the early-reply timer thread driving
//! [`crate::at::ServiceAt`], and [`send_reply`] with its fault points.
//!
//! Must not: hold a queue or AT lock while a handler runs or while lnet is
//! called.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lnet::{AckReq, Event, EventHandler, Lnet, MdBuffer, MdSpec, Nid, Target};
use parking_lot::MutexGuard;
use prometheus_client::metrics::counter::Counter;
use tracing::field::Empty;

use super::error::{Errno, ServiceError};
use super::handler::{Reply, ReqCtx, Request};
use super::service::{AtState, CptQueue, QueueState, ReqKey, Shared};
use crate::at::EarlyReply;
use crate::cpt;
use crate::fault::{FaultKind, FaultPoint};
use crate::portals::FINAL_REPLY_OFFSET;
use crate::time::Time;
use crate::wire::{HEADER_LEN, Header, MsgFlags, MsgKind, Op};

/// Starts every worker and the early-reply timer.
pub(super) fn spawn_all(shared: &Arc<Shared>) -> Result<Vec<JoinHandle<()>>, ServiceError> {
    let mut threads = Vec::new();
    for cpt_index in 0..shared.queues.len() {
        // One thread per CPT serves only the high-priority queue, so a PING
        // or CONNECT never waits behind long requests and costs one wake-up
        // of the thread that is idle for it, not of a busy pool.
        let roles = std::iter::once(Role::HighPriority).chain((0..shared.cfg.threads_per_cpt).map(Role::Any));
        for (i, role) in roles.enumerate() {
            let name = match role {
                Role::HighPriority => format!("{}{cpt_index:02}_hp", shared.cfg.name),
                Role::Any(_) => format!("{}{cpt_index:02}_{i:03}", shared.cfg.name),
            };
            let s = Arc::clone(shared);
            let spawned = std::thread::Builder::new().name(name.clone()).spawn(move || {
                bind(&s, cpt_index);
                run_worker(&s, cpt_index, role);
            });
            threads.push(spawned.map_err(|e| ServiceError::Spawn { name, err: e.to_string() })?);
        }
    }
    let name = format!("{}_at", shared.cfg.name);
    let s = Arc::clone(shared);
    let timer = std::thread::Builder::new().name(name.clone()).spawn(move || run_at_timer(&s));
    threads.push(timer.map_err(|e| ServiceError::Spawn { name, err: e.to_string() })?);
    Ok(threads)
}

/// Binds the calling worker to its CPT's cores when the table describes
/// this machine (a synthetic table's cores do not exist). A worker that
/// cannot be bound (a container without the right) runs unbound, logged:
/// the same as `cpt::spawn_bound`, minus refusing to run.
fn bind(shared: &Shared, cpt_index: usize) {
    let Some(table) = &shared.cfg.cpts else { return };
    if *table.source() != cpt::TopologySource::System {
        return;
    }
    let Some(c) = u32::try_from(cpt_index).ok().and_then(|i| table.cpt(i)) else { return };
    if let Err(e) = cpt::bind_current_thread(c) {
        tracing::warn!(service = %shared.cfg.name, cpt = cpt_index, err = %e, "worker runs unbound");
    }
}

/// Which requests a worker takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Only the high-priority queue (PING, CONNECT).
    HighPriority,
    /// High priority first, then the policy's queue; the worker's index
    /// among its CPT's general workers (its condition variable).
    Any(usize),
}

fn run_worker(shared: &Arc<Shared>, cpt: usize, role: Role) {
    let _rt = shared.rt.enter();
    if matches!(role, Role::Any(_)) {
        shared.queues[cpt].state.lock().running += 1;
    }
    while let Some(req) = next_request(shared, cpt, role) {
        shared.metrics.queued.dec();
        shared.metrics.active.inc();
        serve(shared, &req, Via::Worker { counted: matches!(role, Role::Any(_)) });
        shared.metrics.active.dec();
    }
}

/// Serves a request the handler takes inline ([`super::Handler::inline`])
/// on the calling thread — lnet's receive path — without queueing it or
/// tracking it for early replies. False: the handler declined it
/// ([`Reply::declined`]) and nothing was answered; the caller queues it.
pub(super) fn serve_inline(shared: &Arc<Shared>, req: &Request) -> bool {
    shared.metrics.active.inc();
    let served = serve(shared, req, Via::Inline);
    shared.metrics.active.dec();
    if served {
        shared.metrics.served_inline.inc();
    } else {
        shared.metrics.inline_declined.inc();
    }
    served
}

/// How a request reached [`serve`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// Through a queue, on a worker (`counted`: a general worker holding a
    /// running slot); tracked for early replies since it arrived.
    Worker { counted: bool },
    /// At once on its receive path: never queued, never tracked.
    Inline,
}

/// Sleeps general worker `w` of a CPT on its own condition variable (for
/// at most `limit`), on top of the CPT's idle stack, keeping the queue's
/// running and waking counts.
fn sleep(q: &CptQueue, st: &mut MutexGuard<'_, QueueState>, w: usize, limit: Option<Duration>) {
    st.running = st.running.saturating_sub(1);
    st.idle.push(w);
    match limit {
        Some(d) => {
            let _ = q.cvs[w].wait_for(st, d);
        }
        None => q.cvs[w].wait(st),
    }
    match st.idle.iter().rposition(|&i| i == w) {
        // Timed out, or woken by the service stopping: still on the stack.
        Some(at) => {
            st.idle.remove(at);
        }
        // Taken off the stack by a waker (`QueueState::take_wake`).
        None => st.waking = st.waking.saturating_sub(1),
    }
    st.running += 1;
}

/// Runs `f` on a general worker (`counted`) without holding its running
/// slot: another sleeping worker is woken for queued work if the slot was
/// what kept it asleep (see `ServiceConfig::max_running`).
pub(super) fn blocking<R>(shared: &Shared, cpt: usize, counted: bool, f: impl FnOnce() -> R) -> R {
    if !counted {
        return f();
    }
    let q = &shared.queues[cpt];
    let wake = {
        let mut st = q.state.lock();
        st.running = st.running.saturating_sub(1);
        if st.normal.is_empty() { None } else { st.take_wake(shared.cfg.max_running) }
    };
    if let Some(w) = wake {
        q.cvs[w].notify_one();
    }
    // Takes the slot back even if `f` unwinds (a handler panic is caught
    // by `serve`, and the worker goes on).
    struct Resume<'q>(&'q CptQueue);
    impl Drop for Resume<'_> {
        fn drop(&mut self) {
            self.0.state.lock().running += 1;
        }
    }
    let _resume = Resume(q);
    f()
}

fn next_request(shared: &Shared, cpt: usize, role: Role) -> Option<Request> {
    let q = &shared.queues[cpt];
    let mut st = q.state.lock();
    let mut spun = false;
    loop {
        if shared.stopping() {
            return None;
        }
        if let Some(r) = st.hp.pop_front() {
            q.pending.fetch_sub(1, Ordering::Relaxed);
            return Some(r);
        }
        let Role::Any(w) = role else {
            q.hp_cv.wait(&mut st);
            continue;
        };
        if let Some(r) = st.normal.dequeue(shared.clock.now()) {
            q.pending.fetch_sub(1, Ordering::Relaxed);
            return Some(r);
        }
        if !st.normal.is_empty() {
            // A policy holding requests back (rate limits) is asked again.
            sleep(q, &mut st, w, Some(Duration::from_millis(10)));
        } else if !spun && !shared.cfg.idle_spin.is_zero() {
            // Under load the next request is often microseconds away:
            // waiting for it awake saves a futex wake-up per request.
            spun = true;
            MutexGuard::unlocked(&mut st, || {
                let until = Instant::now() + shared.cfg.idle_spin;
                while q.pending.load(Ordering::Relaxed) == 0 && Instant::now() < until && !shared.stopping() {
                    std::hint::spin_loop();
                }
            });
        } else {
            spun = false;
            sleep(q, &mut st, w, None);
        }
    }
}

/// Runs the handler and answers; false when an inline handler declined
/// the request (nothing answered).
fn serve(shared: &Arc<Shared>, req: &Request, via: Via) -> bool {
    let hdr = req.header();
    let span = tracing::info_span!("rpc", service = %shared.cfg.name, xid = hdr.xid.0, opcode = req.op().name(),
        peer = %req.peer(), status = Empty, latency_us = Empty);
    let _entered = span.enter();
    let counted = via == Via::Worker { counted: true };
    let inline = via == Via::Inline;
    let mut ctx = ReqCtx {
        shared,
        peer: req.peer(),
        cpt: req.cpt(),
        counted: Cell::new(counted),
        inline,
        answer: Answer::of(req, inline),
        deferred: Cell::new(false),
    };
    let mut result = match catch_unwind(AssertUnwindSafe(|| shared.handler.handle(req, &mut ctx))) {
        Ok(r) => r,
        Err(_) => {
            tracing::error!("handler panicked; answering -EIO");
            Err(Errno::EIO)
        }
    };
    if ctx.deferred.get() {
        // A transfer the handler started answers when it completes.
        if !matches!(&result, Ok(r) if r.deferred) {
            tracing::error!("handler deferred its reply to a bulk transfer but returned another answer; ignored");
        }
        return true;
    }
    if matches!(&result, Ok(r) if r.declined) {
        if inline {
            return false;
        }
        tracing::error!("handler declined a request on a worker; answering -EIO");
        result = Err(Errno::EIO);
    }
    answer(shared, &ctx.answer, result);
    true
}

/// What answering a request needs once its handler has returned: kept by
/// a reply deferred to a bulk transfer's completion
/// ([`ReqCtx::bulk_get_then`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct Answer {
    peer: Nid,
    header: Header,
    op: Op,
    arrival: Time,
    /// Served inline: never tracked for early replies.
    inline: bool,
}

impl Answer {
    fn of(req: &Request, inline: bool) -> Answer {
        Answer { peer: req.peer(), header: *req.header(), op: req.op(), arrival: req.arrival(), inline }
    }
}

/// Ends a request with the handler's `result`: service time measured from
/// arrival (and taken off the early-reply timer), metrics, and the reply
/// (unless the handler sent its own) carrying that service time. Runs on
/// the worker, or on lnet's thread for a deferred reply.
pub(super) fn answer(shared: &Shared, a: &Answer, result: Result<Reply, Errno>) {
    let span = tracing::Span::current();
    let hdr = &a.header;
    let now = shared.clock.now();
    let key = ReqKey { peer: a.peer, xid: hdr.xid, op: a.op };
    let service_time = if a.inline {
        shared.at.lock().at.handle_served(now, a.arrival)
    } else {
        shared.at.lock().at.handle_reply_sent(now, key).unwrap_or(now - a.arrival)
    };
    let (mut h, body) = match result {
        Ok(reply) if reply.sent_by_handler => {
            span.record("latency_us", u64::try_from(service_time.as_micros()).unwrap_or(u64::MAX));
            shared.metrics.observe(a.op, service_time, false);
            return;
        }
        Ok(Reply { header: Some(h), body, .. }) => {
            span.record("status", h.status);
            span.record("latency_us", u64::try_from(service_time.as_micros()).unwrap_or(u64::MAX));
            shared.metrics.observe(a.op, service_time, h.status != 0);
            send_reply(shared, a.peer, h, &body);
            return;
        }
        Ok(reply) => {
            let mut h = Header::new(MsgKind::Reply, hdr.opcode, hdr.xid);
            h.transno = reply.transno;
            h.last_committed = reply.last_committed;
            (h, reply.body)
        }
        Err(e) => {
            let mut h = Header::new(MsgKind::Error, hdr.opcode, hdr.xid);
            h.status = -e.0;
            (h, Default::default())
        }
    };
    h.conn_cnt = hdr.conn_cnt;
    h.handle = hdr.handle;
    h.jobid = hdr.jobid;
    h.service_time = service_time;
    span.record("status", h.status);
    span.record("latency_us", u64::try_from(service_time.as_micros()).unwrap_or(u64::MAX));
    shared.metrics.observe(a.op, service_time, h.status != 0);
    send_reply(shared, a.peer, h, &body);
}

/// Sends a final or error reply (`h.body_len` is set here) to `peer`'s
/// reply portal at the final-reply offset, subject to the reply fault
/// points.
pub(super) fn send_reply(shared: &Shared, peer: Nid, mut h: Header, body: &[u8]) {
    if shared.faults.check(FaultKind::ReplyDrop).is_some() {
        shared.metrics.injected_drops.inc();
        tracing::info!(xid = h.xid.0, %peer, "fault injection: reply dropped");
        return;
    }
    h.body_len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut msg = Vec::with_capacity(HEADER_LEN + body.len());
    msg.extend_from_slice(&h.encode());
    msg.extend_from_slice(body);
    let to =
        Target { nid: peer, portal: shared.cfg.reply_portal.0, match_bits: h.xid.0, offset: FINAL_REPLY_OFFSET as u32 };
    let errors = shared.metrics.reply_send_errors.clone();
    if let Some(FaultPoint::ReplyDelay(d)) = shared.faults.check(FaultKind::ReplyDelay) {
        tracing::info!(xid = h.xid.0, %peer, delay = ?d, "fault injection: reply delayed");
        let lnet = shared.lnet.clone();
        shared.rt.spawn(async move {
            tokio::time::sleep(d).await;
            put_msg(&lnet, to, msg, errors);
        });
        return;
    }
    put_msg(&shared.lnet, to, msg, errors);
}

/// PUTs `msg` to `to` without an ACK, counting failures in `errors`.
fn put_msg(lnet: &Lnet, to: Target, msg: Vec<u8>, errors: Counter) {
    let on_event = errors.clone();
    let cb = Arc::new(move |ev: Event| {
        if let Err(e) = &ev.status {
            on_event.inc();
            tracing::debug!(peer = %ev.peer, err = %e, "reply send failed");
        }
    });
    let sent = lnet
        .bind(MdSpec::new(MdBuffer::Inline(msg), EventHandler::Callback(cb)))
        .and_then(|md| lnet.put(&md, to, AckReq::NoAck, 0));
    if let Err(e) = sent {
        errors.inc();
        tracing::warn!(peer = %to.nid, xid = to.match_bits, err = %e, "reply not sent");
    }
}

/// The early-reply timer: sleeps until the earliest tracked deadline minus
/// `at_early_margin`, then sends an early reply for each due request.
fn run_at_timer(shared: &Shared) {
    let _rt = shared.rt.enter();
    let mut st = shared.at.lock();
    loop {
        if shared.stopping() {
            return;
        }
        let now = shared.clock.now();
        st.at.handle_timeout(now);
        let mut due = Vec::new();
        while let Some(e) = st.at.poll_early_reply() {
            due.push(e);
        }
        let mut expired = Vec::new();
        while let Some(entry) = st.bulk.first_entry() {
            if entry.key().0 > now {
                break;
            }
            expired.push(entry.remove());
        }
        st.armed = st.next_wake();
        if !due.is_empty() || !expired.is_empty() {
            MutexGuard::unlocked(&mut st, || {
                send_early_replies(shared, &due);
                for md in &expired {
                    tracing::warn!(service = %shared.cfg.name, "bulk transfer timed out; unlinking it");
                    let _ = shared.lnet.unlink(md);
                }
            });
            continue;
        }
        wait(shared, &mut st);
    }
}

fn wait(shared: &Shared, st: &mut MutexGuard<'_, AtState>) {
    match st.armed {
        Some(t) => {
            let _ = shared.at_cv.wait_until(st, shared.clock.instant(t));
        }
        None => shared.at_cv.wait(st),
    }
}

fn send_early_replies(shared: &Shared, due: &[EarlyReply<ReqKey>]) {
    for e in due {
        let mut h = Header::new(MsgKind::Reply, e.key.op.opcode(), e.key.xid);
        h.flags = MsgFlags::EARLY_REPLY;
        h.timeout = e.timeout;
        h.service_time = e.service_estimate;
        let to = Target { nid: e.key.peer, portal: shared.cfg.reply_portal.0, match_bits: e.key.xid.0, offset: 0 };
        tracing::debug!(xid = e.key.xid.0, peer = %e.key.peer, timeout = ?e.timeout, "early reply");
        shared.metrics.early_replies.inc();
        put_msg(&shared.lnet, to, h.encode().to_vec(), shared.metrics.reply_send_errors.clone());
    }
}
