//! The client side of a connection: one import per target, sans-IO.
//!
//! Owns: [`Import`], the state machine of Lustre's `obd_import` —
//! connecting over several paths (failover NIDs) in turn with backoff,
//! connect-data negotiation, the sending/delayed/replay lists
//! ([`lists`]), pinging through [`ImportPinger`] (whose DISCON events it
//! consumes), reconnects with resends, replay (primary and delayed, with
//! the versions VBR checks), the lock-replay placeholder stage, waiting for
//! the target to end recovery, eviction (every lost request reported) and
//! imperative recovery ([`Import::handle_target_restarted`]). States and
//! their edges live in [`state`]; connect and recovery handling in
//! `recover`.
//!
//! Must not: perform I/O, read a clock or draw unseeded randomness: inputs
//! are `handle_*(now, ..)`, outputs `poll_transmit`, `poll_timeout`,
//! `poll_event`. It never drops a caller's request silently: every request
//! ends in exactly one [`ImportEvent::Reply`] or [`ImportEvent::Failed`],
//! and every replied-but-uncommitted request that is lost is reported with
//! [`ImportEvent::ReplayLost`].

pub mod lists;
mod recover;
mod replay_list;
pub mod state;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::Duration;

use thiserror::Error;

pub use lists::{ReplayEntry, ReplayFixup, ReplayList, ReqKind, RequestSpec};
pub use state::{HISTORY_LEN, ImportState, ImportStateKind, ReplayMode, Sent, StateHistory};

use crate::at::{AtSettings, ClientAt};
use crate::pinger::{ImportPinger, PingSettings, PingerEvent};
use crate::request::XidSeq;
use crate::seeded::SeededRng;
use crate::time::Time;
use crate::wire::{
    ConnCnt, ConnectData, ExportHandle, Frame, Header, JobId, MsgFlags, MsgKind, Op, Portal, Transno, Xid, errno,
};
use lists::{Phase, Requests};

/// Times a request answered -EINPROGRESS is resent before that answer
/// is final (Lustre's osc `resend_count`).
pub const MAX_IN_PROGRESS_RESENDS: u32 = 10;

/// The least time a CONNECT is given (Lustre's `CONNECTION_SWITCH_MIN`).
const CONNECT_TIMEOUT_MIN: Duration = Duration::from_secs(5);

/// Pings an import tracks in flight at once (one per ping interval until
/// the oldest one's deadline; more are sent but their replies ignored).
const MAX_PINGS: usize = 32;

/// One connection path to the target (a failover NID); the driver maps it
/// to an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathId(pub u32);

/// A message the import wants sent on `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The path to send on.
    pub path: PathId,
    /// The header (body length is filled in by `wire::encode_raw`).
    pub header: Header,
    /// The archived body.
    pub body: Vec<u8>,
}

/// Why a request (or a replay entry) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ImportError {
    /// The target evicted this client; the request's outcome is unknown.
    #[error("evicted by the target")]
    Evicted,
    /// The import was closed.
    #[error("import closed")]
    Closed,
    /// A replay failed the target's version check (-EOVERFLOW).
    #[error("replay failed the version check")]
    VersionMismatch,
    /// The import holds its limit of requests already.
    #[error("import holds {0} requests already")]
    Full(usize),
    /// The target refused a replay with this (positive) errno: its
    /// effect is gone (what it needed no longer exists).
    #[error("the target refused the replay with -{0}")]
    ReplayRefused(i32),
}

/// What the import tells its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportEvent {
    /// The final reply to request `xid` (status may be an error).
    Reply {
        /// The request.
        xid: Xid,
        /// The reply header.
        header: Header,
        /// The reply body.
        body: Vec<u8>,
    },
    /// Request `xid` will get no reply.
    Failed {
        /// The request.
        xid: Xid,
        /// Why.
        error: ImportError,
    },
    /// A replied, uncommitted request was lost (eviction, version
    /// mismatch, close): its effect may be gone.
    ReplayLost {
        /// The request.
        xid: Xid,
        /// The transno it had.
        transno: Transno,
        /// Why.
        error: ImportError,
    },
    /// Connected (or reconnected) to the target.
    Connected {
        /// The import generation (bumped on every successful connect).
        generation: u64,
        /// The reply's connect disposition flags.
        flags: MsgFlags,
        /// The negotiated connect data.
        data: ConnectData,
    },
    /// The import changed state.
    StateChanged {
        /// When.
        at: Time,
        /// From.
        from: ImportStateKind,
        /// To.
        to: ImportStateKind,
    },
}

/// Import settings.
#[derive(Debug, Clone)]
pub struct ImportConfig {
    /// This client's UUID (the target keeps one export per UUID).
    pub client_uuid: String,
    /// CONNECT opcode of the service.
    pub connect_op: Op,
    /// DISCONNECT opcode of the service.
    pub disconnect_op: Op,
    /// The service portal (for adaptive timeouts of CONNECT and PING).
    pub portal: Portal,
    /// Connection paths, tried in turn. Must not be empty.
    pub paths: Vec<PathId>,
    /// What the client asks for (`client_uuid` and `transno` are filled in).
    pub connect_data: ConnectData,
    /// Ping tunables.
    pub ping: PingSettings,
    /// Adaptive timeout tunables.
    pub at: AtSettings,
    /// First reconnect backoff after every path failed once.
    pub backoff_min: Duration,
    /// Largest reconnect backoff.
    pub backoff_max: Duration,
    /// Requests plus replay entries held at most.
    pub max_requests: usize,
    /// First xid (drivers start from the wall clock, as Lustre does).
    pub first_xid: u64,
    /// The connection count before the first CONNECT. Drivers start it
    /// from the wall clock, so a restarted client process (the same UUID,
    /// as an MDT's imports to its OSTs keep) connects above what its old
    /// incarnation reached instead of being dropped as stale until the
    /// target evicts the old export.
    pub first_conn_cnt: u32,
    /// Seed for reconnect jitter.
    pub seed: u64,
    /// Job id every request carries (jobstats).
    pub jobid: JobId,
    /// Modifying requests in flight at once to ask for (Lustre's
    /// `max_mod_rpcs_in_flight`); the target may grant fewer. 1 asks for
    /// nothing (one at a time).
    pub max_mod_rpcs: u16,
}

impl ImportConfig {
    /// Defaults for `client_uuid` connecting with `connect_op` over `paths`.
    pub fn new(client_uuid: &str, connect_op: Op, disconnect_op: Op, portal: Portal, paths: Vec<PathId>) -> Self {
        ImportConfig {
            client_uuid: client_uuid.to_string(),
            connect_op,
            disconnect_op,
            portal,
            paths,
            connect_data: ConnectData::default(),
            ping: PingSettings::default(),
            at: AtSettings::default(),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(25),
            max_requests: 1024,
            first_xid: 1,
            first_conn_cnt: 0,
            seed: 0,
            jobid: JobId::EMPTY,
            max_mod_rpcs: 1,
        }
    }
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportStats {
    /// CONNECTs sent.
    pub connects: u64,
    /// Successful connects.
    pub connected: u64,
    /// Evictions noticed.
    pub evictions: u64,
    /// Replays sent.
    pub replays: u64,
    /// Requests resent.
    pub resends: u64,
    /// Replies read after their request's deadline (kept out of the
    /// adaptive timeouts: see `Import::at_sample`).
    pub late_replies: u64,
    /// Replies that failed to parse.
    pub malformed: u64,
}

/// One import. See the module docs.
#[derive(Debug)]
pub struct Import {
    cfg: ImportConfig,
    state: ImportState,
    history: StateHistory,
    xids: XidSeq,
    rng: SeededRng,
    at: ClientAt,
    pinger: ImportPinger,
    /// Pings in flight, oldest first (the pinger sends one every interval
    /// even while an earlier one is unanswered), at most [`MAX_PINGS`].
    pings: VecDeque<Sent>,
    requests: Requests,
    replay: ReplayList,
    outbox: VecDeque<Outgoing>,
    events: VecDeque<ImportEvent>,
    remote: ExportHandle,
    conn_cnt: ConnCnt,
    generation: u64,
    had_connection: bool,
    negotiated: Option<ConnectData>,
    last_committed: Transno,
    path: usize,
    tried_in_round: usize,
    backoff: Duration,
    vbr_failed: bool,
    deactivated: bool,
    stats: ImportStats,
}

impl Import {
    /// A new import (state NEW). Panics if `cfg.paths` is empty.
    pub fn new(now: Time, cfg: ImportConfig) -> Import {
        assert!(!cfg.paths.is_empty(), "an import needs at least one connection path");
        Import {
            xids: XidSeq::new(cfg.first_xid),
            rng: SeededRng::new(cfg.seed),
            at: ClientAt::new(now, cfg.at),
            pinger: ImportPinger::new(now, cfg.ping),
            backoff: cfg.backoff_min,
            conn_cnt: ConnCnt(cfg.first_conn_cnt),
            cfg,
            state: ImportState::New,
            history: StateHistory::default(),
            pings: VecDeque::new(),
            requests: Requests::default(),
            replay: ReplayList::default(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            remote: ExportHandle::NONE,
            generation: 0,
            had_connection: false,
            negotiated: None,
            last_committed: Transno(0),
            path: 0,
            tried_in_round: 0,
            vbr_failed: false,
            deactivated: false,
            stats: ImportStats::default(),
        }
    }

    /// The current state.
    pub fn state(&self) -> &ImportState {
        &self.state
    }

    /// The current state's kind.
    pub fn kind(&self) -> ImportStateKind {
        self.state.kind()
    }

    /// The transition history.
    pub fn history(&self) -> &StateHistory {
        &self.history
    }

    /// The highest `last_committed` the target has reported.
    pub fn last_committed(&self) -> Transno {
        self.last_committed
    }

    /// The generation: bumped on every successful connect.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The connection count: bumped on every CONNECT sent.
    pub fn conn_cnt(&self) -> ConnCnt {
        self.conn_cnt
    }

    /// The target's handle for our export.
    pub fn remote_handle(&self) -> ExportHandle {
        self.remote
    }

    /// The connect data the target agreed to, once connected.
    pub fn negotiated(&self) -> Option<&ConnectData> {
        self.negotiated.as_ref()
    }

    /// The replay list.
    pub fn replay_list(&self) -> &ReplayList {
        &self.replay
    }

    /// Requests without a final reply (sending plus delayed).
    pub fn pending_requests(&self) -> usize {
        self.requests.len()
    }

    /// The path index in use.
    pub fn current_path(&self) -> PathId {
        self.cfg.paths[self.path]
    }

    /// Counters.
    pub fn stats(&self) -> ImportStats {
        self.stats
    }

    /// Starts connecting (from NEW).
    pub fn connect(&mut self, now: Time) {
        if self.kind() == ImportStateKind::New {
            self.start_connect(now);
        }
    }

    /// Queues a request; it goes out when the import is FULL (and, if it
    /// modifies, when one of the negotiated reply slots is free).
    pub fn submit(&mut self, now: Time, spec: RequestSpec) -> Result<Xid, ImportError> {
        self.submit_with_fixup(now, spec, None)
    }

    /// [`Import::submit`] with a [`ReplayFixup`]: once the reply arrives,
    /// the body kept for replay is rewritten from it.
    pub fn submit_with_fixup(
        &mut self,
        now: Time,
        spec: RequestSpec,
        fixup: Option<ReplayFixup>,
    ) -> Result<Xid, ImportError> {
        if self.kind() == ImportStateKind::Closed {
            return Err(ImportError::Closed);
        }
        let held = self.requests.len() + self.replay.len();
        if held >= self.cfg.max_requests {
            // Replies kept for replay fill it: ask the target now what it
            // has committed instead of waiting for the next ping.
            if !self.replay.is_empty() {
                self.pinger.request_ping();
                self.drive(now);
            }
            return Err(ImportError::Full(held));
        }
        let xid = self.xids.next_xid();
        self.requests.insert(xid, spec, fixup);
        self.drive(now);
        Ok(xid)
    }

    /// The open request `xid` was closed by request `close` (its reply
    /// arrived): the open leaves the replay list once it is committed and
    /// the close is no longer held for replay (a replayed close finds its
    /// open handle restored by the open's replay). `None`: a close that
    /// leaves nothing to replay.
    pub fn release_open(&mut self, xid: Xid, close: Option<Xid>) -> bool {
        let found = self.replay.release_open(xid, close);
        self.replay.prune_committed(self.last_committed);
        self.pinger.set_uncommitted(!self.replay.is_empty());
        found
    }

    /// Imperative recovery: the target restarted (the MGS said so), so
    /// reconnect now instead of waiting for a ping to fail.
    pub fn handle_target_restarted(&mut self, now: Time) {
        self.handle_target_restarted_at(now, &[]);
    }

    /// Imperative recovery naming where the target now serves: the
    /// reconnect goes first to the first of `paths` this import knows
    /// (a failover partner took over), or over the current path when it
    /// knows none of them.
    pub fn handle_target_restarted_at(&mut self, now: Time, paths: &[PathId]) {
        use ImportStateKind as K;
        if let Some(i) = paths.iter().find_map(|p| self.cfg.paths.iter().position(|q| q == p)) {
            self.path = i;
        }
        self.tried_in_round = 0;
        self.backoff = self.cfg.backoff_min;
        match self.kind() {
            K::Full | K::Replay | K::ReplayLocks | K::ReplayWait | K::Recover => self.disconnect(now),
            K::Discon => self.set_state(now, ImportState::Discon { retry_at: now }),
            K::Connecting => self.start_connect(now),
            K::New | K::Evicted | K::Closed => {}
        }
        self.drive(now);
    }

    /// The administrator deactivated (or reactivated) the target (the
    /// config log's record): a deactivated import sends no pings (the
    /// seed's `imp_deactive`); requests still go out if submitted (the
    /// user refuses new I/O to a deactivated target itself).
    pub fn set_deactivated(&mut self, now: Time, deactivated: bool) {
        self.deactivated = deactivated;
        if !deactivated {
            self.pinger.handle_request_sent(now);
        }
        self.drive(now);
    }

    /// Whether the target is deactivated ([`Import::set_deactivated`]).
    pub fn is_deactivated(&self) -> bool {
        self.deactivated
    }

    fn pinger_timeout(&self) -> Option<Time> {
        if self.deactivated { None } else { self.pinger.poll_timeout() }
    }

    /// Closes the import: DISCONNECT goes out if connected; every request
    /// fails and every replay entry is reported lost.
    pub fn close(&mut self, now: Time) {
        if self.kind() == ImportStateKind::Closed {
            return;
        }
        if self.kind() == ImportStateKind::Full {
            let xid = self.xids.next_xid();
            let h = self.header(now, self.cfg.disconnect_op, xid, MsgFlags::EMPTY);
            self.push(h, Vec::new());
        }
        for (xid, _) in self.requests.drain_all() {
            self.events.push_back(ImportEvent::Failed { xid, error: ImportError::Closed });
        }
        for e in self.replay.drain() {
            self.events.push_back(ImportEvent::ReplayLost {
                xid: e.xid,
                transno: e.transno,
                error: ImportError::Closed,
            });
        }
        self.pings.clear();
        self.set_state(now, ImportState::Closed);
    }

    /// A reply (or error reply) arrived. Replies to anything but the
    /// current connection's messages are ignored.
    pub fn handle_reply(&mut self, now: Time, frame: &Frame<'_>) {
        let h = *frame.header();
        if h.kind == MsgKind::Request || h.flags.contains(MsgFlags::EARLY_REPLY) || h.conn_cnt != self.conn_cnt {
            return;
        }
        match &self.state {
            ImportState::Connecting { attempt, .. } if attempt.xid == h.xid => self.connect_reply(now, frame),
            ImportState::Replay { in_flight: Some((s, t)), .. } if s.xid == h.xid => {
                let (s, t) = (*s, *t);
                self.replay_reply(now, &h, s, t);
            }
            ImportState::ReplayWait { ping, .. } if ping.xid == h.xid => self.replay_wait_reply(now, &h),
            ImportState::Full => self.full_reply(now, frame),
            _ => {}
        }
        self.drive(now);
    }

    /// An early reply: the target needs longer for request `xid` and says
    /// how long in total (`timeout`). The request's deadline moves out
    /// (never in); nothing else changes and the AT history is untouched.
    pub fn handle_early_reply(&mut self, now: Time, frame: &Frame<'_>) {
        let h = *frame.header();
        if !h.flags.contains(MsgFlags::EARLY_REPLY) || h.conn_cnt != self.conn_cnt {
            return;
        }
        let at = &self.at;
        if let Some(r) = self.requests.get_mut(h.xid)
            && let Phase::Sent { sent, deadline, conn_cnt } = r.phase
        {
            let deadline = at.early_reply_deadline(now, sent, h.timeout, deadline);
            r.phase = Phase::Sent { sent, deadline, conn_cnt };
        }
        if let ImportState::Replay { in_flight: Some((s, _)), .. } = &mut self.state
            && s.xid == h.xid
        {
            s.deadline = at.early_reply_deadline(now, s.sent, h.timeout, s.deadline);
        }
    }

    /// Timers: connect, request and ping deadlines, reconnect backoff.
    pub fn handle_timeout(&mut self, now: Time) {
        match &self.state {
            ImportState::Connecting { attempt, .. } if now >= attempt.deadline => self.connect_failed(now),
            ImportState::Replay { in_flight: Some((s, _)), .. } if now >= s.deadline => self.disconnect(now),
            ImportState::ReplayWait { ping, .. } if now >= ping.deadline => self.resend_done_ping(now),
            ImportState::Full => {
                if self.requests.earliest_deadline().is_some_and(|d| now >= d) {
                    self.disconnect(now);
                } else {
                    self.pinger.handle_timeout(now);
                }
            }
            _ => {}
        }
        self.drive(now);
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self, now: Time) -> Option<Outgoing> {
        self.drive(now);
        self.outbox.pop_front()
    }

    /// When [`Import::handle_timeout`] should next run.
    pub fn poll_timeout(&self) -> Option<Time> {
        match &self.state {
            ImportState::Connecting { attempt, .. } => Some(attempt.deadline),
            ImportState::Discon { retry_at } => Some(*retry_at),
            ImportState::Replay { in_flight: Some((s, _)), .. } => Some(s.deadline),
            ImportState::ReplayWait { ping, .. } => Some(ping.deadline),
            ImportState::Full => match (self.requests.earliest_deadline(), self.pinger_timeout()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            _ => None,
        }
    }

    /// The next event for the user. Callers must drain events: they are
    /// how failures are reported, so none is ever dropped.
    pub fn poll_event(&mut self) -> Option<ImportEvent> {
        self.events.pop_front()
    }

    /// The one place the state changes: asserts the edge, records it.
    fn set_state(&mut self, now: Time, to: ImportState) {
        let (from, to_kind) = (self.kind(), to.kind());
        assert!(
            from.can_move_to(to_kind) || (from == to_kind && from == ImportStateKind::Discon),
            "illegal import transition {from:?} -> {to_kind:?}"
        );
        self.state = to;
        if from != to_kind {
            self.history.record(now, from, to_kind);
            self.events.push_back(ImportEvent::StateChanged { at: now, from, to: to_kind });
        }
    }

    /// Runs whatever the state allows now: reconnects, replays, sends.
    fn drive(&mut self, now: Time) {
        // Each pass makes progress or stops; the bound guards a logic bug.
        for _ in 0..64 {
            while let Some(PingerEvent::Discon { .. }) = self.pinger.poll_event() {
                if self.kind() == ImportStateKind::Full {
                    self.disconnect(now);
                }
            }
            let progressed = match &self.state {
                ImportState::Evicted => {
                    self.start_connect(now);
                    true
                }
                ImportState::Discon { retry_at } if now >= *retry_at => {
                    self.start_connect(now);
                    true
                }
                ImportState::Replay { in_flight: None, .. } => {
                    self.replay_next(now);
                    true
                }
                ImportState::ReplayLocks { mode } => {
                    let mode = *mode;
                    self.send_done_ping(now, mode);
                    true
                }
                ImportState::Recover => {
                    self.set_state(now, ImportState::Full);
                    true
                }
                ImportState::Full => {
                    self.pump_full(now);
                    false
                }
                _ => false,
            };
            if !progressed {
                return;
            }
        }
    }

    /// Modifying requests in flight at once, as negotiated (1 unless the
    /// target agreed to `MULTIMODRPCS`).
    pub fn max_mod_rpcs(&self) -> u16 {
        self.negotiated
            .as_ref()
            .filter(|d| d.flags & crate::wire::connect_flags::MULTIMODRPCS != 0)
            .map_or(1, |d| u16::try_from(d.max_mod_rpcs).unwrap_or(u16::MAX).clamp(1, self.cfg.max_mod_rpcs.max(1)))
    }

    fn pump_full(&mut self, now: Time) {
        let max_mod = self.max_mod_rpcs();
        while let Some((xid, resend, tag)) = self.requests.next_to_send(max_mod) {
            let Some(req) = self.requests.get(xid) else { break };
            let (op, portal, body) = (req.spec.op, req.spec.portal, req.spec.body.clone());
            let flags = if resend { MsgFlags::RESEND } else { MsgFlags::EMPTY };
            let jobid = req.spec.jobid;
            let mut h = self.header(now, op, xid, flags);
            h.jobid = jobid.unwrap_or(self.cfg.jobid);
            h.tag = tag;
            h.timeout = self.at.request_timeout(now, portal);
            let deadline = self.at.request_deadline(now, portal);
            if let Some(r) = self.requests.get_mut(xid) {
                r.phase = Phase::Sent { sent: now, deadline, conn_cnt: self.conn_cnt };
            }
            if resend {
                self.stats.resends += 1;
            }
            self.pinger.handle_request_sent(now);
            self.push(h, body);
        }
        if !self.deactivated && self.pinger.poll_transmit(now).is_some() {
            let xid = self.xids.next_xid();
            let h = self.header(now, Op::ObdPing, xid, MsgFlags::EMPTY);
            let deadline = self.at.request_deadline(now, self.cfg.portal);
            self.pinger.handle_ping_sent(now, xid, deadline);
            if self.pings.len() < MAX_PINGS {
                self.pings.push_back(Sent { xid, sent: now, deadline });
            }
            self.push(h, Vec::new());
        }
    }

    fn full_reply(&mut self, now: Time, frame: &Frame<'_>) {
        let h = *frame.header();
        if let Some(i) = self.pings.iter().position(|p| p.xid == h.xid) {
            let p = self.pings.remove(i).unwrap_or(Sent { xid: h.xid, sent: now, deadline: now });
            self.at_sample(now, self.cfg.portal, p.sent, p.deadline, h.service_time);
            if h.status == -errno::ENOTCONN || h.status == -errno::ESHUTDOWN {
                self.disconnect(now);
            } else {
                self.note_committed(h.last_committed);
                self.pinger.handle_ping_reply(now, h.xid);
            }
            return;
        }
        let Some(req) = self.requests.get(h.xid) else { return };
        let Phase::Sent { sent, deadline, conn_cnt } = req.phase else { return };
        if conn_cnt != h.conn_cnt {
            return;
        }
        if h.status == -errno::ENOTCONN || h.status == -errno::EAGAIN || h.status == -errno::ESHUTDOWN {
            // The target lost or has not recovered our export, or is
            // shutting down: reconnect (until it is back), and the request
            // is resent.
            self.disconnect(now);
            return;
        }
        if h.status == -errno::EINPROGRESS
            && let Some(r) = self.requests.get_mut(h.xid)
            && r.in_progress < MAX_IN_PROGRESS_RESENDS
        {
            // The target did nothing this time (a write's bulk data came
            // in corrupt): resend now, a new bulk transfer.
            r.in_progress += 1;
            r.phase = Phase::Resend;
            let portal = r.spec.portal;
            self.at_sample(now, portal, sent, deadline, h.service_time);
            return;
        }
        let Some(req) = self.requests.remove(h.xid) else { return };
        self.at_sample(now, req.spec.portal, sent, deadline, h.service_time);
        if req.spec.kind.modifies() && h.status == 0 && h.transno > Transno(0) {
            let mut spec = req.spec;
            if let Some(body) = req.fixup.and_then(|f| f(&spec.body, frame.body_bytes())) {
                spec.body = body;
            }
            self.replay.add(ReplayEntry {
                xid: h.xid,
                transno: h.transno,
                pre_versions: h.pre_versions,
                open: spec.kind == ReqKind::Open,
                tag: req.tag,
                closed_by: None,
                delayed_pending: false,
                spec,
            });
        }
        self.note_committed(h.last_committed);
        self.events.push_back(ImportEvent::Reply { xid: h.xid, header: h, body: frame.body_bytes().to_vec() });
    }

    /// Folds a reply's round trip into the adaptive timeouts, unless it
    /// came after the request's deadline: a running client would have
    /// timed the request out first, so such a reply was read late by a
    /// stalled process (SIGSTOP, a long pause) and its round trip measures
    /// the stall, not the network. Taken in, one 20 s stop made every
    /// deadline 20 s longer for the 10 minutes of AT history.
    fn at_sample(&mut self, now: Time, portal: Portal, sent: Time, deadline: Time, service_time: Duration) {
        if now <= deadline {
            self.at.handle_reply(now, portal, sent, service_time);
        } else {
            self.stats.late_replies += 1;
        }
    }

    /// Folds a reported `last_committed` in and prunes the replay list.
    fn note_committed(&mut self, last_committed: Transno) {
        self.last_committed = self.last_committed.max(last_committed);
        self.replay.prune_committed(self.last_committed);
        self.pinger.set_uncommitted(!self.replay.is_empty());
    }

    /// The connection failed: back to DISCON, resend what was in flight
    /// once reconnected.
    fn disconnect(&mut self, now: Time) {
        self.requests.connection_lost();
        self.pings.clear();
        self.set_state(now, ImportState::Discon { retry_at: now });
    }

    /// A request header on the current connection. Its `replied_xid` is
    /// the lowest xid without a final reply (this one included) minus one.
    fn header(&self, now: Time, op: Op, xid: Xid, flags: MsgFlags) -> Header {
        let mut h = Header::new(MsgKind::Request, op.opcode(), xid);
        let lowest = self.requests.lowest_xid().map_or(xid, |l| l.min(xid));
        h.replied_xid = Xid(lowest.0.saturating_sub(1));
        h.flags = flags;
        h.conn_cnt = self.conn_cnt;
        h.handle = self.remote;
        h.timeout = self.at.request_timeout(now, self.cfg.portal);
        h.jobid = self.cfg.jobid;
        h
    }

    fn push(&mut self, header: Header, body: Vec<u8>) {
        self.outbox.push_back(Outgoing { path: self.cfg.paths[self.path], header, body });
    }
}
