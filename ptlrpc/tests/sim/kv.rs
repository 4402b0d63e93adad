//! A test-only key-value target on the target framework, its clients, and
//! the checks every recovery run must pass.
//!
//! put(key, value) is an update of one object (the key) whose pre-op
//! version VBR checks on replay; get(key) is a read. Clients keep up to
//! `window` operations outstanding (with `window` > 1 they ask for as many
//! reply slots: several puts in flight) and record what they saw; `Checks` compares that
//! with the store's journal (which lives in the store's state, so crashes
//! roll it back with the data).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ptlrpc::Time;
use ptlrpc::import::{Import, ImportConfig, ImportEvent, ImportStateKind, PathId, ReqKind, RequestSpec};
use ptlrpc::sim::{Node, NodeId, SimRng, Transmit};
use ptlrpc::target::{MemStore, ObjId, PeerId, Plan, Target, TargetConfig, TargetEvent, TargetService};
use ptlrpc::wire::{
    ConnectData, Frame, MsgFlags, ObjVersion, Op, PRE_VERSIONS, Portal, Transno, Xid, connect_flags, encode_raw, errno,
};
use rkyv::{Archive, Deserialize, Serialize};

pub const PORTAL: Portal = Portal(12);

/// A key-value request body.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum KvReq {
    /// Sets `key` to `value`.
    Put { key: u32, value: u64 },
    /// Reads `key`.
    Get { key: u32 },
}

fn archive(req: &KvReq) -> Vec<u8> {
    match rkyv::to_bytes::<rkyv::rancor::Error>(req) {
        Ok(b) => b.to_vec(),
        Err(e) => panic!("archiving a kv request: {e}"),
    }
}

/// The key-value service.
#[derive(Debug, Default)]
pub struct KvService;

impl TargetService for KvService {
    type Store = MemStore<u64>;
    type Input = ();

    fn plan(
        &mut self,
        store: &MemStore<u64>,
        _uuid: &str,
        _op: Op,
        req: &Frame<'_>,
        (): (),
    ) -> Result<Plan<Vec<(ObjId, u64)>>, i32> {
        match req.deserialize::<KvReq>().map_err(|_| errno::EPROTO)? {
            KvReq::Put { key, value } => Ok(Plan::Update {
                objects: vec![ObjId(u128::from(key))],
                change: vec![(ObjId(u128::from(key)), value)],
                body: Vec::new(),
            }),
            KvReq::Get { key } => {
                let v = store.get(ObjId(u128::from(key))).map(|(_, v)| *v).unwrap_or(0);
                Ok(Plan::Read { body: v.to_le_bytes().to_vec() })
            }
        }
    }
}

pub fn target_config() -> TargetConfig {
    TargetConfig { commit_interval: Duration::from_secs(5), ..TargetConfig::default() }
}

/// The server node: a target, or (while down) just its store.
#[derive(Debug)]
pub struct Server {
    pub target: Option<Target<KvService>>,
    store: Option<MemStore<u64>>,
    seed: SimRng,
    pub boots: Vec<Time>,
    pub events: Vec<(Time, TargetEvent)>,
    /// Violations found while running (replay order).
    pub violations: Vec<String>,
    last_primary: Option<Transno>,
    cfg: TargetConfig,
    /// The chance each reply is dropped after the request was handled
    /// (ptlrpc's `reply_drop` fault point), and the dice for it.
    pub reply_drop: f64,
    drop_rng: SimRng,
    /// Replies dropped.
    pub dropped: u64,
}

impl Server {
    pub fn new(now: Time, seed: &mut SimRng) -> Server {
        Server::with(now, seed, target_config(), 0.0)
    }

    /// A server with its own target settings that drops a `reply_drop`
    /// share of its replies.
    pub fn with(now: Time, seed: &mut SimRng, cfg: TargetConfig, reply_drop: f64) -> Server {
        let mut s = Server {
            cfg,
            reply_drop,
            drop_rng: seed.fork(),
            dropped: 0,
            target: None,
            store: Some(MemStore::new(true)),
            seed: seed.fork(),
            boots: Vec::new(),
            events: Vec::new(),
            violations: Vec::new(),
            last_primary: None,
        };
        s.restart(now);
        s
    }

    pub fn store(&self) -> &MemStore<u64> {
        match (&self.target, &self.store) {
            (Some(t), _) => t.store(),
            (None, Some(s)) => s,
            (None, None) => unreachable!("the server holds its store or a target"),
        }
    }

    fn drain(&mut self, now: Time) {
        let Some(t) = &mut self.target else { return };
        while let Some(ev) = t.poll_event() {
            if let TargetEvent::Replayed { delayed: false, applied: true, ran_as, .. } = &ev {
                if self.last_primary.is_some_and(|p| p >= *ran_as) {
                    self.violations.push(format!("(c) primary replay {ran_as:?} after {:?}", self.last_primary));
                }
                self.last_primary = Some(*ran_as);
            }
            self.events.push((now, ev));
        }
    }
}

impl Node for Server {
    fn handle_message(&mut self, now: Time, from: NodeId, bytes: &[u8]) {
        if let (Some(t), Ok(frame)) = (&mut self.target, Frame::parse(bytes)) {
            t.handle_request(now, PeerId(u64::from(from.0)), &frame);
        }
        self.drain(now);
    }
    fn handle_timeout(&mut self, now: Time) {
        if let Some(t) = &mut self.target {
            t.handle_timeout(now);
        }
        self.drain(now);
    }
    fn poll_transmit(&mut self, _now: Time) -> Option<Transmit> {
        let mut r = self.target.as_mut()?.poll_transmit()?;
        while self.reply_drop > 0.0 && self.drop_rng.chance(self.reply_drop) {
            self.dropped += 1;
            r = self.target.as_mut()?.poll_transmit()?;
        }
        let bytes = encode_raw(&r.header, &r.body).ok()?.to_vec();
        Some(Transmit { to: NodeId(u32::try_from(r.to.0).unwrap_or(u32::MAX)), bytes })
    }
    fn poll_timeout(&self) -> Option<Time> {
        self.target.as_ref()?.poll_timeout()
    }
    fn crash(&mut self) {
        if let Some(t) = self.target.take() {
            let mut store = t.into_store();
            store.crash();
            self.store = Some(store);
        }
    }
    fn restart(&mut self, now: Time) {
        if let Some(store) = self.store.take() {
            let seed = self.seed.next_u64();
            self.target = Some(Target::boot(now, self.cfg.clone(), KvService, store, seed));
            self.boots.push(now);
            self.last_primary = None;
            self.drain(now);
        }
    }
}

/// An update the client saw acknowledged.
#[derive(Debug, Clone)]
pub struct Acked {
    pub xid: Xid,
    pub transno: Transno,
    pub pre: [ObjVersion; PRE_VERSIONS],
}

/// A client node: an import and a workload.
#[derive(Debug)]
pub struct Client {
    pub uuid: String,
    pub import: Import,
    paths: Vec<NodeId>,
    rng: SimRng,
    pub ops_left: u32,
    next_op: Option<Time>,
    window: usize,
    outstanding: BTreeMap<Xid, KvReq>,
    /// The most puts outstanding at once.
    pub max_puts_outstanding: usize,
    pub acked: BTreeMap<Xid, Acked>,
    pub lost: BTreeSet<Xid>,
    pub failed: BTreeSet<Xid>,
    pub states: Vec<(Time, ImportStateKind)>,
    pub errors: Vec<String>,
    /// Connect dispositions seen, with times.
    pub connects: Vec<(Time, MsgFlags)>,
}

impl Client {
    pub fn new(now: Time, index: usize, paths: Vec<NodeId>, ops: u32, window: usize, rng: &mut SimRng) -> Client {
        Client::with(now, index, paths, ops, window, rng, |_| {})
    }

    /// A client whose import settings `tune` adjusts.
    pub fn with(
        now: Time,
        index: usize,
        paths: Vec<NodeId>,
        ops: u32,
        window: usize,
        rng: &mut SimRng,
        tune: impl FnOnce(&mut ImportConfig),
    ) -> Client {
        let uuid = format!("client-{index}");
        let path_ids = (0..paths.len()).map(|i| PathId(i as u32)).collect();
        let mut cfg = ImportConfig::new(&uuid, Op::MdsConnect, Op::MdsDisconnect, PORTAL, path_ids);
        cfg.connect_data = ConnectData {
            flags: connect_flags::VERSION | connect_flags::VBR | connect_flags::IMP_RECOV | connect_flags::BRW_SIZE,
            version: 1,
            brw_size: 1 << 20,
            ..ConnectData::default()
        };
        let mut rng = rng.fork();
        cfg.seed = rng.next_u64();
        cfg.first_xid = 1 + rng.below(1000);
        cfg.max_mod_rpcs = u16::try_from(window).unwrap_or(u16::MAX);
        tune(&mut cfg);
        let mut import = Import::new(now, cfg);
        import.connect(now);
        Client {
            uuid,
            import,
            paths,
            next_op: Some(now + Duration::from_millis(rng.below(3000))),
            rng,
            ops_left: ops,
            window: window.max(1),
            outstanding: BTreeMap::new(),
            max_puts_outstanding: 0,
            acked: BTreeMap::new(),
            lost: BTreeSet::new(),
            failed: BTreeSet::new(),
            states: vec![(now, ImportStateKind::New)],
            errors: Vec::new(),
            connects: Vec::new(),
        }
    }

    /// Submits put(key, value) now (scenario tests; the client must be idle).
    pub fn put(&mut self, now: Time, key: u32, value: u64) -> Xid {
        assert!(self.outstanding.len() < self.window, "{} is busy", self.uuid);
        let req = KvReq::Put { key, value };
        let spec =
            RequestSpec { op: Op::MdsReint, portal: PORTAL, body: archive(&req), kind: ReqKind::Modify, jobid: None };
        match self.import.submit(now, spec) {
            Ok(xid) => {
                self.outstanding.insert(xid, req);
                self.note_outstanding();
                xid
            }
            Err(e) => panic!("submit: {e}"),
        }
    }

    fn note_outstanding(&mut self) {
        let puts = self.outstanding.values().filter(|r| matches!(r, KvReq::Put { .. })).count();
        self.max_puts_outstanding = self.max_puts_outstanding.max(puts);
    }

    /// When the next operation may start after one finished.
    fn pause(&mut self) -> Duration {
        let most = if self.window > 1 { 500 } else { 5000 };
        Duration::from_millis(self.rng.below(most))
    }

    pub fn kind(&self) -> ImportStateKind {
        self.import.kind()
    }

    fn work(&mut self, now: Time) {
        while let Some(ev) = self.import.poll_event() {
            match ev {
                ImportEvent::Reply { xid, header, .. } => {
                    if let Some(req) = self.outstanding.remove(&xid) {
                        if let KvReq::Put { .. } = req {
                            if header.status == 0 {
                                self.acked
                                    .insert(xid, Acked { xid, transno: header.transno, pre: header.pre_versions });
                            } else {
                                self.errors.push(format!("put xid {xid} failed with {}", header.status));
                            }
                        }
                        let p = self.pause();
                        self.next_op = Some(self.next_op.map_or(now + p, |t| t.min(now + p)));
                    }
                }
                ImportEvent::Failed { xid, .. } => {
                    self.failed.insert(xid);
                    if self.outstanding.remove(&xid).is_some() {
                        let p = self.pause();
                        self.next_op = Some(self.next_op.map_or(now + p, |t| t.min(now + p)));
                    }
                }
                ImportEvent::ReplayLost { xid, .. } => {
                    self.lost.insert(xid);
                }
                ImportEvent::StateChanged { at, to, .. } => self.states.push((at, to)),
                ImportEvent::Connected { flags, .. } => self.connects.push((now, flags)),
            }
        }
        if self.outstanding.len() < self.window && self.ops_left > 0 && self.next_op.is_some_and(|t| now >= t) {
            self.ops_left -= 1;
            self.next_op = (self.outstanding.len() + 1 < self.window).then(|| now + self.pause());
            let key = self.rng.below(5) as u32;
            let req =
                if self.rng.chance(0.8) { KvReq::Put { key, value: self.rng.next_u64() } } else { KvReq::Get { key } };
            let kind = if matches!(req, KvReq::Put { .. }) { ReqKind::Modify } else { ReqKind::Read };
            let op = if kind == ReqKind::Modify { Op::MdsReint } else { Op::MdsGetattr };
            let spec = RequestSpec { op, portal: PORTAL, body: archive(&req), kind, jobid: None };
            match self.import.submit(now, spec) {
                Ok(xid) => {
                    self.outstanding.insert(xid, req);
                    self.note_outstanding();
                }
                Err(e) => self.errors.push(format!("submit: {e}")),
            }
            self.work(now);
        }
    }

    /// Whether the workload is finished and nothing is pending.
    pub fn idle(&self) -> bool {
        self.ops_left == 0 && self.outstanding.is_empty()
    }

    /// The import's path to `node`, if it has one.
    pub fn path_to(&self, node: NodeId) -> Option<PathId> {
        self.paths.iter().position(|&p| p == node).map(|i| PathId(i as u32))
    }

    /// The first time at or after `t` the import entered FULL.
    pub fn full_since(&self, t: Time) -> Option<Time> {
        self.states.iter().find(|(at, k)| *at >= t && *k == ImportStateKind::Full).map(|(at, _)| *at)
    }
}

impl Node for Client {
    fn handle_message(&mut self, now: Time, _from: NodeId, bytes: &[u8]) {
        if let Ok(frame) = Frame::parse(bytes) {
            self.import.handle_reply(now, &frame);
        }
        self.work(now);
    }
    fn handle_timeout(&mut self, now: Time) {
        self.import.handle_timeout(now);
        self.work(now);
    }
    fn poll_transmit(&mut self, now: Time) -> Option<Transmit> {
        let out = self.import.poll_transmit(now)?;
        let to = self.paths[out.path.0 as usize];
        let bytes = encode_raw(&out.header, &out.body).ok()?.to_vec();
        Some(Transmit { to, bytes })
    }
    fn poll_timeout(&self) -> Option<Time> {
        let room = self.outstanding.len() < self.window && self.ops_left > 0;
        match (self.import.poll_timeout(), self.next_op.filter(|_| room)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Every node kind in a recovery world.
#[derive(Debug)]
pub enum SimNode {
    Server(Box<Server>),
    Client(Box<Client>),
    /// A failover path nobody answers on.
    Dead,
}

impl SimNode {
    pub fn server(&self) -> &Server {
        match self {
            SimNode::Server(s) => s,
            _ => panic!("not a server"),
        }
    }
    pub fn client(&self) -> &Client {
        match self {
            SimNode::Client(c) => c,
            _ => panic!("not a client"),
        }
    }
    pub fn server_mut(&mut self) -> &mut Server {
        match self {
            SimNode::Server(s) => s,
            _ => panic!("not a server"),
        }
    }
    pub fn client_mut(&mut self) -> &mut Client {
        match self {
            SimNode::Client(c) => c,
            _ => panic!("not a client"),
        }
    }
}

impl Node for SimNode {
    fn handle_message(&mut self, now: Time, from: NodeId, bytes: &[u8]) {
        match self {
            SimNode::Server(s) => s.handle_message(now, from, bytes),
            SimNode::Client(c) => c.handle_message(now, from, bytes),
            SimNode::Dead => {}
        }
    }
    fn handle_timeout(&mut self, now: Time) {
        match self {
            SimNode::Server(s) => s.handle_timeout(now),
            SimNode::Client(c) => c.handle_timeout(now),
            SimNode::Dead => {}
        }
    }
    fn poll_transmit(&mut self, now: Time) -> Option<Transmit> {
        match self {
            SimNode::Server(s) => s.poll_transmit(now),
            SimNode::Client(c) => c.poll_transmit(now),
            SimNode::Dead => None,
        }
    }
    fn poll_timeout(&self) -> Option<Time> {
        match self {
            SimNode::Server(s) => s.poll_timeout(),
            SimNode::Client(c) => c.poll_timeout(),
            SimNode::Dead => None,
        }
    }
    fn crash(&mut self) {
        if let SimNode::Server(s) = self {
            s.crash();
        }
    }
    fn restart(&mut self, now: Time) {
        if let SimNode::Server(s) = self {
            s.restart(now);
        }
    }
}

/// Checks (a)-(d) against the server's store. `durable` selects the
/// durable journal (at a crash) or the live one (at the end).
pub fn check_store(server: &Server, clients: &[&Client], durable: bool, end: bool) -> Result<(), String> {
    let store = server.store();
    let journal = if durable { store.durable_journal() } else { store.journal() };
    let mut seen = BTreeSet::new();
    for e in journal {
        if !seen.insert((e.uuid.clone(), e.xid)) {
            return Err(format!("(b) {} xid {} executed twice", e.uuid, e.xid));
        }
    }
    for c in clients {
        let in_replay: BTreeSet<Xid> = c.import.replay_list().iter().map(|e| e.xid).collect();
        for a in c.acked.values() {
            if c.lost.contains(&a.xid) {
                continue;
            }
            let present = seen.contains(&(c.uuid.clone(), a.xid));
            // (a) what the client was told is committed is durable.
            if durable && !in_replay.contains(&a.xid) && !present {
                return Err(format!(
                    "(a) {} xid {} (transno {:?}) was committed but is gone",
                    c.uuid, a.xid, a.transno
                ));
            }
            // Every acknowledged update survives or is reported lost.
            if end && !present {
                return Err(format!("{} xid {} acknowledged, not lost, yet missing", c.uuid, a.xid));
            }
        }
        // (d) replays ran only on the versions the original saw.
        for e in journal.iter().filter(|e| e.replay && e.uuid == c.uuid) {
            if let Some(a) = c.acked.get(&e.xid)
                && a.pre[0] != e.pre_versions[0]
            {
                return Err(format!(
                    "(d) {} xid {} replayed on {:?}, original saw {:?}",
                    c.uuid, e.xid, e.pre_versions[0], a.pre[0]
                ));
            }
        }
    }
    if let Some(v) = server.violations.first() {
        return Err(v.clone());
    }
    Ok(())
}
