//! The server side of connections and transactions: a target framework
//! mdt and ost build on, sans-IO.
//!
//! Owns: [`Target`] — exports (one per client UUID, random handle
//! cookies, stale conn_cnt dropped; [`export`]), connect-data negotiation
//! (`connect`), transno assignment and object versions `epoch << 32 |
//! transno` (the epoch bumped at each boot), the per-client record written
//! in the same transaction as each change ([`store`]), `last_committed` on
//! every reply, reply reconstruction for resent requests, recovery after a
//! restart (`recovery`: window, transno-ordered replay, gaps and VBR,
//! delayed recovery, retained exports), several modifying requests in
//! flight per client (each in its reply slot, named by the request's tag;
//! slots freed as the client acknowledges replies with `replied_xid`,
//! Lustre's multiple modify RPCs), and eviction (ping timeout via
//! [`Evictor`], VBR failure, administrator).
//!
//! Front hooks: a driver may run work outside the target for a request
//! (bulk transfers, reads). [`Target::admit`] is the cheap check it asks
//! first — the export, its conn_cnt and stage, whether the request is a
//! resend the target will answer from the client's record — and
//! [`Target::handle_request_with`] takes the request with the work's
//! result ([`TargetService::Input`]). Reads admitted so are answered by
//! the driver with the header [`Admitted::reply`] carries; they follow the
//! same rules as here (refused with -EAGAIN while the export recovers).
//!
//! Must not: perform I/O or read a clock (storage goes through
//! [`TargetStore`], time arrives as `now`), execute a request twice (an
//! update is known as run while its slot holds it, while this boot
//! remembers its xid, once the client acknowledged it, or — replays — when
//! its transno is at or below what was durable at boot), or panic on wire
//! input.

mod connect;
pub mod export;
pub mod mem;
mod recovery;
pub mod store;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

pub use connect::negotiate;
pub use export::{Export, ExportStage, Exports};
pub use mem::{JournalEntry, MemStore};
pub use store::{
    ClientRecord, MAX_KEPT_REPLY, ObjId, Persisted, Plan, RECORD_FORMAT, RecordError, ReplySlot, ServerRecord,
    TargetService, TargetStore, Txn,
};

use crate::evictor::{Evictor, EvictorEvent};
use crate::pinger::PingSettings;
use crate::seeded::SeededRng;
use crate::time::Time;
use crate::wire::{
    ConnectData, ExportHandle, Frame, Header, MsgFlags, MsgKind, ObjVersion, Op, PRE_VERSIONS, Transno, Xid,
    connect_flags, errno,
};
use recovery::Recovery;

/// Where a request came from (the driver maps it to a NID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(pub u64);

/// A reply the target wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// To whom.
    pub to: PeerId,
    /// The header.
    pub header: Header,
    /// The archived body.
    pub body: Vec<u8>,
}

/// Why an export was evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EvictReason {
    /// Silent for the evict timeout.
    PingTimeout,
    /// A replay failed its version check.
    VersionMismatch,
    /// An administrator asked.
    Admin,
    /// Connected but did not finish replaying by the hard recovery limit.
    RecoveryAborted,
    /// Too many disconnected exports retained.
    RetainedOverflow,
}

/// What the target reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetEvent {
    /// Recovery began at boot for `clients` known clients.
    RecoveryStarted {
        /// When.
        at: Time,
        /// Known clients.
        clients: usize,
    },
    /// A replay was handled.
    Replayed {
        /// The client.
        uuid: String,
        /// The request.
        xid: Xid,
        /// Its original transno.
        transno: Transno,
        /// The transno it ran with (new in delayed recovery).
        ran_as: Transno,
        /// Delayed (version-checked, new transno) rather than primary.
        delayed: bool,
        /// Applied (versions matched) or refused with -EOVERFLOW.
        applied: bool,
    },
    /// Primary recovery skipped a missing transno.
    Gap {
        /// The first missing transno.
        transno: Transno,
    },
    /// Primary recovery ended.
    RecoveryDone {
        /// When.
        at: Time,
        /// How long since boot.
        duration: Duration,
        /// Clients recovered.
        recovered: usize,
        /// Clients evicted at the end.
        evicted: usize,
        /// Clients retained for delayed recovery.
        retained: usize,
    },
    /// An export was torn down.
    Evicted {
        /// The client.
        uuid: String,
        /// Why.
        reason: EvictReason,
    },
}

/// What [`Target::admit`] says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The target handles it whole (CONNECT, DISCONNECT, PING): pass it to
    /// [`Target::handle_request_with`] without front work.
    Pass,
    /// Refused or dropped (unknown export, stale conn_cnt, recovering);
    /// any answer is in [`Target::poll_transmit`].
    Refused,
    /// The export takes it: do the front work, then pass it on (updates)
    /// or answer it with [`Admitted::reply`] (reads). An update marked
    /// [`Admitted::executed`] goes on without front work.
    Admitted(Box<Admitted>),
}

/// A request [`Target::admit`] let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The client's UUID.
    pub uuid: String,
    /// What was negotiated at connect (checksums, brw size, grant).
    pub data: ConnectData,
    /// A replay (primary or delayed).
    pub replay: bool,
    /// If the request is an update: the client's record says it ran
    /// already (a resend whose reply was lost, a replay done before the
    /// crash, an old duplicate). The target answers it from the record or
    /// drops it; the front passes it on without work. Meaningless for
    /// reads (their xids interleave with updates').
    pub executed: bool,
    /// The header of a read's reply: kind Reply, status 0, no transno,
    /// the client's `last_committed`. A driver answering a read itself
    /// sets status (and kind for errors) and sends it.
    pub reply: Header,
}

/// Target settings.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// obd_timeout and ping intervals (recovery limits are 3x and 9x
    /// obd_timeout; exports silent for 6 ping intervals are evicted).
    pub ping: PingSettings,
    /// What the target supports: flags it honours and the limits it
    /// answers with.
    pub supported: ConnectData,
    /// How often the store commits.
    pub commit_interval: Duration,
    /// Exports held at most.
    pub max_exports: usize,
    /// Disconnected exports retained for delayed recovery at most.
    pub max_retained: usize,
    /// Replays queued at most during recovery.
    pub max_queued_replays: usize,
    /// The top 16 bits of every export handle this target hands out: a
    /// driver serving several targets on one service routes by it.
    pub handle_tag: u16,
}

impl Default for TargetConfig {
    fn default() -> TargetConfig {
        TargetConfig {
            ping: PingSettings::default(),
            supported: ConnectData {
                flags: connect_flags::ALL,
                version: 1,
                brw_size: 4 << 20,
                grant: 64 << 20,
                cksum_types: crate::wire::CKSUM_CRC32C,
                max_easize: 64 << 10,
                max_bytes: 1 << 44,
                max_mod_rpcs: 8,
                ..ConnectData::default()
            },
            commit_interval: Duration::from_secs(5),
            max_exports: 4096,
            max_retained: 64,
            max_queued_replays: 1 << 16,
            handle_tag: 0,
        }
    }
}

impl TargetConfig {
    /// Soft recovery limit: 3x obd_timeout.
    pub fn recovery_soft(&self) -> Duration {
        self.ping.obd_timeout * 3
    }

    /// Hard recovery limit: 9x obd_timeout.
    pub fn recovery_hard(&self) -> Duration {
        self.ping.obd_timeout * 9
    }
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetStats {
    /// Requests seen.
    pub requests: u64,
    /// Modifying requests executed (replays included).
    pub executed: u64,
    /// Replies rebuilt from client records.
    pub reconstructed: u64,
    /// Requests dropped for a stale conn_cnt or as old duplicates.
    pub dropped_stale: u64,
    /// CONNECTs dropped because one was in progress.
    pub dropped_connecting: u64,
    /// Replays refused by VBR.
    pub vbr_mismatches: u64,
    /// Bodies that failed to parse.
    pub malformed: u64,
}

/// One target. See the module docs.
#[derive(Debug)]
pub struct Target<S: TargetService> {
    cfg: TargetConfig,
    service: S,
    store: S::Store,
    records: BTreeMap<String, ClientRecord>,
    rng: SeededRng,
    epoch: u32,
    last_transno: Transno,
    booted: Time,
    exports: Exports,
    evictor: Evictor<ExportHandle>,
    recovery: Option<Recovery>,
    /// The front inputs of queued replays, by transno.
    replay_inputs: BTreeMap<Transno, S::Input>,
    outbox: VecDeque<(Reply, Option<String>)>,
    events: VecDeque<TargetEvent>,
    next_commit: Time,
    stats: TargetStats,
}

/// Reply slots (tags) a client may use at most; a higher tag is refused
/// with -EPROTO.
pub const MAX_SLOTS: u16 = 256;

/// What the target knows of an update's earlier execution.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Prior {
    /// Not run, as far as the target knows: run it.
    No,
    /// Run; its reply is in the client's slot.
    Slot(ReplySlot),
    /// Run (or acknowledged by the client) and its slot gone: a duplicate.
    /// Its transno, when known.
    Done(Option<Transno>),
}

/// How a modifying request runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A new request: new transno.
    Normal,
    /// A primary replay: its own transno, versions checked.
    Primary,
    /// A delayed replay: versions checked, new transno.
    Delayed,
}

impl<S: TargetService> Target<S> {
    /// Mounts `store`: bumps the epoch, loads the client table and, if it
    /// holds clients, starts recovery.
    pub fn boot(now: Time, cfg: TargetConfig, service: S, mut store: S::Store, seed: u64) -> Target<S> {
        let persisted = store.load();
        let epoch = persisted.server.epoch.wrapping_add(1);
        let last_transno = persisted.server.last_transno;
        store.put_server(ServerRecord { epoch, last_transno });
        store.commit();
        let evictor = Evictor::new(&cfg.ping, cfg.max_exports);
        let mut t = Target {
            next_commit: now + cfg.commit_interval,
            cfg,
            service,
            store,
            records: BTreeMap::new(),
            rng: SeededRng::new(seed),
            epoch,
            last_transno,
            booted: now,
            exports: Exports::default(),
            evictor,
            recovery: None,
            replay_inputs: BTreeMap::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            stats: TargetStats::default(),
        };
        for rec in persisted.clients {
            let handle = t.new_handle();
            let mut e =
                Export::new(&rec.uuid, handle, PeerId(0), ExportStage::Recovering { connected: false, done: false });
            e.boot_transno = Some(rec.last_transno);
            e.own_committed = rec.last_transno;
            t.exports.insert(e);
            t.records.insert(rec.uuid.clone(), rec);
        }
        if t.exports.is_empty() {
            t.start_epoch();
        } else {
            let committed = t.store.committed();
            t.recovery = Some(Recovery::new(now, &t.cfg, committed));
            t.events.push_back(TargetEvent::RecoveryStarted { at: now, clients: t.exports.len() });
        }
        t
    }

    /// The crash: hands the store back (the caller reverts it to its last
    /// commit and may boot again).
    pub fn into_store(self) -> S::Store {
        self.store
    }

    /// The store.
    pub fn store(&self) -> &S::Store {
        &self.store
    }

    /// The service.
    pub fn service(&self) -> &S {
        &self.service
    }

    /// The exports.
    pub fn exports(&self) -> &Exports {
        &self.exports
    }

    /// The boot epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// When this boot began.
    pub fn booted(&self) -> Time {
        self.booted
    }

    /// Whether primary recovery is under way.
    pub fn is_recovering(&self) -> bool {
        self.recovery.is_some()
    }

    /// Whether the PING `h` is answered from memory alone: no recovery
    /// under way and its export (if it names one) in the normal stage. A
    /// ping that ends a client's replay, or evicts a delayed one (which
    /// commits), is not. The driver answers such pings on lnet's receive
    /// path.
    pub fn ping_in_memory(&self, h: &Header) -> bool {
        if self.is_recovering() {
            return false;
        }
        self.exports.uuid_of(h.handle).and_then(|u| self.exports.get(u)).is_none_or(|e| e.stage == ExportStage::Normal)
    }

    /// Counters.
    pub fn stats(&self) -> TargetStats {
        self.stats
    }

    /// A request arrived from `from` (a service without front work).
    pub fn handle_request(&mut self, now: Time, from: PeerId, frame: &Frame<'_>)
    where
        S::Input: Default,
    {
        self.handle_request_with(now, from, frame, S::Input::default());
    }

    /// The cheap check a driver's front hook asks before working on a
    /// request outside the target (see the module docs). Counts the
    /// request and keeps the export alive when it answers
    /// [`Admission::Admitted`] or [`Admission::Refused`]; the request is
    /// counted again if it is then passed on.
    pub fn admit(&mut self, now: Time, from: PeerId, h: &Header) -> Admission {
        if h.kind != MsgKind::Request {
            return Admission::Refused;
        }
        let Ok(op) = Op::try_from(h.opcode) else { return Admission::Pass };
        if op.is_connect() || op.is_disconnect() || op == Op::ObdPing {
            return Admission::Pass;
        }
        self.stats.requests += 1;
        let Some(uuid) = self.exports.uuid_of(h.handle).map(str::to_string) else {
            self.reply_error(from, h, errno::ENOTCONN);
            return Admission::Refused;
        };
        let Some(e) = self.exports.get_mut(&uuid) else { return Admission::Refused };
        if h.conn_cnt < e.conn_cnt {
            self.stats.dropped_stale += 1;
            return Admission::Refused;
        }
        let stage = e.stage;
        let replay = h.flags.contains(MsgFlags::REPLAY);
        let refuse = match stage {
            ExportStage::Retained { .. } => Some(errno::ENOTCONN),
            ExportStage::Normal => None,
            _ if replay => None,
            _ => Some(errno::EAGAIN),
        };
        if let Some(err) = refuse {
            self.reply_error(from, h, err);
            return Admission::Refused;
        }
        e.peer = from;
        let data = e.data.clone();
        if matches!(stage, ExportStage::Normal | ExportStage::Delayed) {
            self.evictor.handle_request(now, h.handle);
        }
        self.acknowledge(&uuid, h.replied_xid);
        let executed = self.prior(&uuid, h, replay) != Prior::No;
        let mut reply = Header::new(MsgKind::Reply, h.opcode, h.xid);
        reply.conn_cnt = h.conn_cnt;
        reply.handle = h.handle;
        reply.last_committed = self.exports.committed_for(h.handle, self.store.committed());
        if replay {
            self.stats.requests -= 1;
        }
        Admission::Admitted(Box::new(Admitted { uuid, data, replay, executed, reply }))
    }

    /// The `last_committed` the client of export `handle` is told now
    /// (for a reply a driver builds itself, e.g. after a read that waited
    /// for a commit).
    pub fn last_committed_for(&mut self, handle: ExportHandle) -> Transno {
        self.exports.committed_for(handle, self.store.committed())
    }

    /// A request arrived from `from`, with the front hook's `input`.
    pub fn handle_request_with(&mut self, now: Time, from: PeerId, frame: &Frame<'_>, input: S::Input) {
        let h = *frame.header();
        if h.kind != MsgKind::Request {
            return;
        }
        self.stats.requests += 1;
        let op = frame.op();
        if op.is_connect() {
            self.handle_connect(now, from, frame);
            self.recovery_progress(now);
            return;
        }
        let Some(uuid) = self.exports.uuid_of(h.handle).map(str::to_string) else {
            self.reply_error(from, &h, errno::ENOTCONN);
            return;
        };
        let Some(e) = self.exports.get_mut(&uuid) else { return };
        if h.conn_cnt < e.conn_cnt {
            self.stats.dropped_stale += 1;
            return;
        }
        if matches!(e.stage, ExportStage::Retained { .. }) {
            self.reply_error(from, &h, errno::ENOTCONN);
            return;
        }
        e.peer = from;
        let stage = e.stage;
        if matches!(stage, ExportStage::Normal | ExportStage::Delayed) {
            self.evictor.handle_request(now, h.handle);
        }
        self.acknowledge(&uuid, h.replied_xid);
        if op.is_disconnect() {
            self.handle_disconnect(from, &uuid, &h);
        } else if op == Op::ObdPing {
            self.handle_ping(now, from, &uuid, &h);
        } else if h.flags.contains(MsgFlags::REPLAY) {
            match stage {
                ExportStage::Recovering { .. } => self.queue_replay(from, &uuid, frame, input),
                _ => self.execute(from, &uuid, frame, Mode::Delayed, input),
            }
        } else if stage == ExportStage::Normal {
            self.execute(from, &uuid, frame, Mode::Normal, input);
        } else {
            self.reply_error(from, &h, errno::EAGAIN);
        }
        self.recovery_progress(now);
    }

    /// Timers: commits, evictions, recovery limits.
    pub fn handle_timeout(&mut self, now: Time) {
        if now >= self.next_commit {
            self.store.commit_async();
            self.next_commit = now + self.cfg.commit_interval;
        }
        self.evictor.handle_timeout(now);
        while let Some(EvictorEvent::Evict { export, .. }) = self.evictor.poll_event() {
            if let Some(uuid) = self.exports.uuid_of(export).map(str::to_string) {
                self.evict(&uuid, EvictReason::PingTimeout);
            }
        }
        self.recovery_progress(now);
    }

    /// Commits the store now (an administrator's sync, or tests).
    pub fn sync(&mut self) {
        self.store.commit();
    }

    /// Evicts `uuid` on an administrator's request.
    pub fn evict_client(&mut self, now: Time, uuid: &str) -> bool {
        let found = self.exports.get(uuid).is_some();
        if found {
            self.evict(uuid, EvictReason::Admin);
            self.recovery_progress(now);
        }
        found
    }

    /// The next reply to send.
    pub fn poll_transmit(&mut self) -> Option<Reply> {
        let (reply, connecting) = self.outbox.pop_front()?;
        if let Some(e) = connecting.and_then(|u| self.exports.get_mut(&u)) {
            e.connecting = false;
        }
        Some(reply)
    }

    /// When [`Target::handle_timeout`] should next run.
    pub fn poll_timeout(&self) -> Option<Time> {
        let mut t = self.next_commit;
        if let Some(e) = self.evictor.poll_timeout() {
            t = t.min(e);
        }
        if let Some(r) = self.recovery.as_ref().and_then(Recovery::next_deadline) {
            t = t.min(r);
        }
        Some(t)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<TargetEvent> {
        self.events.pop_front()
    }

    /// New transnos start at `epoch << 32` once recovery is over. The mark
    /// is committed (with every replay before it), so the next recovery
    /// expects `epoch << 32 | 1` and sees no false gap at the boundary.
    fn start_epoch(&mut self) {
        self.last_transno = self.last_transno.max(Transno(u64::from(self.epoch) << 32));
        self.store.put_server(ServerRecord { epoch: self.epoch, last_transno: self.last_transno });
        self.store.commit();
    }

    fn new_handle(&mut self) -> ExportHandle {
        loop {
            let tag = u64::from(self.cfg.handle_tag) << 48;
            let h = ExportHandle(tag | (self.rng.next_u64() & ((1 << 48) - 1)));
            if h != ExportHandle::NONE && !self.exports.has_handle(h) {
                return h;
            }
        }
    }

    fn handle_ping(&mut self, now: Time, from: PeerId, uuid: &str, h: &Header) {
        let Some(e) = self.exports.get_mut(uuid) else { return };
        if !h.flags.contains(MsgFlags::REQ_REPLAY_DONE) {
            self.reply(from, h, 0, Transno(0), None, MsgFlags::EMPTY, Vec::new());
            return;
        }
        match e.stage {
            ExportStage::Recovering { connected, .. } => {
                e.stage = ExportStage::Recovering { connected, done: true };
                e.held_ping = Some(*h);
            }
            ExportStage::Delayed if e.vbr_failed => {
                self.evict(uuid, EvictReason::VersionMismatch);
                self.reply_error(from, h, errno::ENOTCONN);
            }
            ExportStage::Delayed => {
                e.stage = ExportStage::Normal;
                let handle = e.handle;
                let _ = self.evictor.add_export(now, handle);
                self.reply(from, h, 0, Transno(0), None, MsgFlags::EMPTY, Vec::new());
            }
            _ => self.reply(from, h, 0, Transno(0), None, MsgFlags::EMPTY, Vec::new()),
        }
    }

    fn handle_disconnect(&mut self, from: PeerId, uuid: &str, h: &Header) {
        self.store.commit();
        self.reply(from, h, 0, Transno(0), None, MsgFlags::EMPTY, Vec::new());
        if let Some(e) = self.exports.remove(uuid) {
            self.evictor.remove_export(e.handle);
        }
        self.records.remove(uuid);
        self.store.remove_client(uuid);
        self.service.export_gone(&mut self.store, uuid);
        self.store.commit();
    }

    /// The client acknowledged every reply up to `xid` (a request's
    /// `replied_xid`): frees its slots and forgets what it covers.
    fn acknowledge(&mut self, uuid: &str, xid: Xid) {
        if let Some(r) = self.records.get_mut(uuid)
            && r.acknowledge(xid)
            && let Some(e) = self.exports.get_mut(uuid)
        {
            e.acknowledged(xid);
        }
    }

    /// Whether the update `h` of `uuid` ran before: its reply in a slot,
    /// executed in this boot, acknowledged, or (replays) committed before
    /// the crash.
    fn prior(&self, uuid: &str, h: &Header, replay: bool) -> Prior {
        let rec = self.records.get(uuid);
        if let Some(s) = rec.and_then(|r| r.slot_of(h.xid)) {
            return Prior::Slot(s.clone());
        }
        let e = self.exports.get(uuid);
        if let Some(&(t, _)) = e.and_then(|e| e.done.get(&h.xid)) {
            return Prior::Done(Some(t));
        }
        if replay {
            let boot = e.and_then(|e| e.boot_transno).unwrap_or(Transno(0));
            let committed = self.recovery.as_ref().map_or(Transno(0), Recovery::boot_committed);
            if h.transno.covered_by(boot) || h.transno.covered_by(committed) {
                return Prior::Done(None);
            }
        } else if rec.is_some_and(|r| h.xid <= r.replied_xid) {
            return Prior::Done(None);
        }
        Prior::No
    }

    /// Runs a modifying (or read) request. Resent and duplicate requests
    /// are answered from the client's slots, never re-executed.
    fn execute(&mut self, from: PeerId, uuid: &str, frame: &Frame<'_>, mode: Mode, input: S::Input) {
        let h = *frame.header();
        if h.tag > MAX_SLOTS {
            self.reply_error(from, &h, errno::EPROTO);
            return;
        }
        let replay = mode != Mode::Normal;
        let prior = self.prior(uuid, &h, replay);
        if replay && !matches!(prior, Prior::No) {
            // A replay of what ran already: the service restores its
            // in-memory state for it (open handles), nothing runs again.
            self.service.replay_executed(&self.store, uuid, frame.op(), frame);
        }
        if let Prior::Slot(slot) = &prior {
            self.stats.reconstructed += 1;
            let body = self.service.reconstruct(uuid, slot, frame);
            self.reply(from, &h, slot.result, slot.transno, Some(slot.pre_versions), MsgFlags::EMPTY, body);
            return;
        }
        if replay && let Prior::Done(t) = prior {
            // A replay done before: answered, not planned again.
            let transno = if mode == Mode::Primary { h.transno } else { t.unwrap_or(h.transno) };
            self.reply(from, &h, 0, transno, Some(h.pre_versions), MsgFlags::EMPTY, Vec::new());
            return;
        }
        let plan = match self.service.plan(&self.store, uuid, frame.op(), frame, input) {
            Ok(p) => p,
            Err(e) => {
                self.reply_error(from, &h, e);
                return;
            }
        };
        let (objects, change, body) = match plan {
            Plan::Read { body } => {
                self.reply(from, &h, 0, Transno(0), None, MsgFlags::EMPTY, body);
                return;
            }
            Plan::Update { objects, change, body } => (objects, change, body),
        };
        if let Prior::Done(_) = prior {
            // Executed already: a stale duplicate.
            self.stats.dropped_stale += 1;
            return;
        }
        if objects.len() > PRE_VERSIONS {
            self.reply_error(from, &h, errno::EINVAL);
            return;
        }
        let mut pre = [ObjVersion(0); PRE_VERSIONS];
        for (p, o) in pre.iter_mut().zip(&objects) {
            *p = self.store.version(*o);
        }
        let vbr_failed = self.exports.get(uuid).is_some_and(|e| e.vbr_failed);
        if replay && (vbr_failed || pre[..objects.len()] != h.pre_versions[..objects.len()]) {
            // After one mismatch, later replays of the client are refused
            // too: what ran of its replays stays a prefix of its list.
            self.stats.vbr_mismatches += 1;
            if let Some(e) = self.exports.get_mut(uuid) {
                e.vbr_failed = true;
            }
            self.events.push_back(TargetEvent::Replayed {
                uuid: uuid.into(),
                xid: h.xid,
                transno: h.transno,
                ran_as: Transno(0),
                delayed: mode == Mode::Delayed,
                applied: false,
            });
            self.reply_error(from, &h, errno::EOVERFLOW);
            return;
        }
        let transno = if mode == Mode::Primary { h.transno } else { Transno(self.last_transno.0 + 1) };
        let last_transno = self.last_transno.max(transno);
        let version = ObjVersion(transno.0);
        let mut client =
            self.records.get(uuid).cloned().unwrap_or_else(|| ClientRecord { uuid: uuid.into(), ..Default::default() });
        client.last_transno = client.last_transno.max(transno);
        client.set_slot(ReplySlot {
            tag: h.tag,
            xid: h.xid,
            transno,
            result: 0,
            pre_versions: pre,
            post_version: version,
            reply: if body.len() <= MAX_KEPT_REPLY { body.clone() } else { Vec::new() },
        });
        let server = ServerRecord { epoch: self.epoch, last_transno };
        let txn = Txn {
            transno,
            version,
            objects,
            pre_versions: pre,
            change,
            xid: h.xid,
            tag: h.tag,
            client: client.clone(),
            server,
            replay,
        };
        if let Err(e) = self.store.apply(txn) {
            // Nothing was recorded: the transno is not used.
            self.reply_error(from, &h, e);
            return;
        }
        self.last_transno = last_transno;
        self.records.insert(uuid.to_string(), client);
        self.stats.executed += 1;
        if let Some(e) = self.exports.get_mut(uuid) {
            e.executed(h.xid, transno, replay);
        }
        if replay {
            self.events.push_back(TargetEvent::Replayed {
                uuid: uuid.into(),
                xid: h.xid,
                transno: h.transno,
                ran_as: transno,
                delayed: mode == Mode::Delayed,
                applied: true,
            });
        }
        self.reply(from, &h, 0, transno, Some(pre), MsgFlags::EMPTY, body);
    }

    /// Tears an export down: record removed, held PING answered -ENOTCONN.
    fn evict(&mut self, uuid: &str, reason: EvictReason) {
        let Some(e) = self.exports.remove(uuid) else { return };
        self.evictor.remove_export(e.handle);
        self.records.remove(uuid);
        self.store.remove_client(uuid);
        self.service.export_gone(&mut self.store, uuid);
        if let Some(h) = e.held_ping {
            self.reply_error(e.peer, &h, errno::ENOTCONN);
        }
        if let Some(r) = &mut self.recovery {
            for t in r.forget(uuid) {
                self.replay_inputs.remove(&t);
            }
        }
        self.events.push_back(TargetEvent::Evicted { uuid: uuid.into(), reason });
    }

    fn reply_error(&mut self, to: PeerId, req: &Header, err: i32) {
        self.reply(to, req, -err, Transno(0), None, MsgFlags::EMPTY, Vec::new());
    }

    #[allow(clippy::too_many_arguments)]
    fn reply(
        &mut self,
        to: PeerId,
        req: &Header,
        status: i32,
        transno: Transno,
        pre: Option<[ObjVersion; PRE_VERSIONS]>,
        flags: MsgFlags,
        body: Vec<u8>,
    ) {
        let kind = if status == 0 { MsgKind::Reply } else { MsgKind::Error };
        let mut h = Header::new(kind, req.opcode, req.xid);
        h.status = status;
        h.flags = flags;
        h.conn_cnt = req.conn_cnt;
        h.handle = req.handle;
        h.transno = transno;
        h.last_committed = self.exports.committed_for(req.handle, self.store.committed());
        if let Some(p) = pre {
            h.pre_versions = p;
        }
        self.outbox.push_back((Reply { to, header: h, body }, None));
    }
}
