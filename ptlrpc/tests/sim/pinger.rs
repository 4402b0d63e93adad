//! Pinger and evictor over the simulator: a silent client is evicted after
//! 6 ping intervals, a live one never; a dead server is detected within the
//! ping bounds.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use ptlrpc::Time;
use ptlrpc::at::{AtSettings, ClientAt};
use ptlrpc::evictor::{Evictor, EvictorEvent};
use ptlrpc::pinger::{ImportPinger, PingSettings, PingerEvent};
use ptlrpc::sim::{LinkConfig, Node, NodeId, SimRng, SimStats, Transmit, World, run_seeds};
use ptlrpc::wire::{ExportHandle, Header, MsgKind, Op, Portal, Xid, errno};

use crate::msg;

const PORTAL: Portal = Portal(28);
const MAX_PINGS_TRACKED: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The pinger's ping went unanswered.
    Discon,
    /// A CONNECT went unanswered.
    ConnectTimeout,
    /// The server answered -ENOTCONN: this client was evicted.
    Evicted,
}

#[derive(Debug, Clone, Copy)]
enum ImportState {
    Connecting { sent: Option<(Xid, Time, Time)> },
    Full,
}

#[derive(Debug)]
struct Client {
    server: NodeId,
    at: ClientAt,
    pinger: ImportPinger,
    state: ImportState,
    handle: ExportHandle,
    next_xid: u64,
    pings: BTreeMap<Xid, Time>,
    outbox: VecDeque<Transmit>,
    failures: Vec<(Time, Failure)>,
    connected: u32,
    malformed: u64,
}

impl Client {
    fn new(now: Time, server: NodeId) -> Client {
        Client {
            server,
            at: ClientAt::new(now, AtSettings::default()),
            pinger: ImportPinger::new(now, PingSettings::default()),
            state: ImportState::Connecting { sent: None },
            handle: ExportHandle::NONE,
            next_xid: 1,
            pings: BTreeMap::new(),
            outbox: VecDeque::new(),
            failures: Vec::new(),
            connected: 0,
            malformed: 0,
        }
    }

    fn xid(&mut self) -> Xid {
        self.next_xid += 1;
        Xid(self.next_xid)
    }

    fn send(&mut self, now: Time, op: Op) -> (Xid, Time) {
        let xid = self.xid();
        let timeout = self.at.request_timeout(now, PORTAL);
        let deadline = self.at.request_deadline(now, PORTAL);
        let bytes = msg::request(op, xid, self.handle, timeout);
        self.outbox.push_back(Transmit { to: self.server, bytes });
        (xid, deadline)
    }

    fn fail(&mut self, now: Time, f: Failure) {
        self.failures.push((now, f));
        self.state = ImportState::Connecting { sent: None };
    }

    /// Runs the import after any input: pinger events, CONNECT and PING.
    fn drive(&mut self, now: Time) {
        while let Some(PingerEvent::Discon { .. }) = self.pinger.poll_event() {
            self.fail(now, Failure::Discon);
        }
        match self.state {
            ImportState::Connecting { sent: None } => {
                let (xid, deadline) = self.send(now, Op::OstConnect);
                self.state = ImportState::Connecting { sent: Some((xid, now, deadline)) };
            }
            ImportState::Connecting { sent: Some(_) } => {}
            ImportState::Full => {
                if self.pinger.poll_transmit(now).is_some() {
                    let (xid, deadline) = self.send(now, Op::ObdPing);
                    self.pinger.handle_ping_sent(now, xid, deadline);
                    if self.pings.len() >= MAX_PINGS_TRACKED {
                        self.pings.pop_first();
                    }
                    self.pings.insert(xid, now);
                }
            }
        }
    }

    fn handle_reply(&mut self, now: Time, h: &Header) {
        match self.state {
            ImportState::Connecting { sent: Some((xid, sent, _)) } if h.xid == xid => {
                if h.status != 0 {
                    return;
                }
                self.at.handle_reply(now, PORTAL, sent, h.service_time);
                self.handle = h.handle;
                self.state = ImportState::Full;
                self.connected += 1;
                self.pings.clear();
                self.pinger.handle_connected(now);
            }
            ImportState::Full => {
                let Some(sent) = self.pings.remove(&h.xid) else {
                    return; // a duplicate, or a reply from an older connection
                };
                self.at.handle_reply(now, PORTAL, sent, h.service_time);
                if h.status == -errno::ENOTCONN {
                    self.fail(now, Failure::Evicted);
                } else {
                    self.pinger.handle_ping_reply(now, h.xid);
                }
            }
            _ => {}
        }
    }
}

impl Node for Client {
    fn handle_message(&mut self, now: Time, _from: NodeId, bytes: &[u8]) {
        match msg::parse(bytes) {
            Some(h) if h.kind != MsgKind::Request => self.handle_reply(now, &h),
            _ => self.malformed += 1,
        }
        self.drive(now);
    }

    fn handle_timeout(&mut self, now: Time) {
        match self.state {
            ImportState::Connecting { sent: Some((_, _, deadline)) } if now >= deadline => {
                self.fail(now, Failure::ConnectTimeout)
            }
            ImportState::Full => self.pinger.handle_timeout(now),
            _ => {}
        }
        self.drive(now);
    }

    fn poll_transmit(&mut self, now: Time) -> Option<Transmit> {
        self.drive(now);
        self.outbox.pop_front()
    }

    fn poll_timeout(&self) -> Option<Time> {
        match self.state {
            ImportState::Connecting { sent } => sent.map(|(_, _, deadline)| deadline),
            ImportState::Full => self.pinger.poll_timeout(),
        }
    }

    fn crash(&mut self) {
        self.outbox.clear();
    }
}

#[derive(Debug, Clone, Copy)]
struct Eviction {
    client: NodeId,
    at: Time,
    last_seen: Time,
}

#[derive(Debug)]
struct Server {
    evictor: Evictor<ExportHandle>,
    exports: BTreeMap<NodeId, ExportHandle>,
    owners: BTreeMap<ExportHandle, NodeId>,
    last_heard: BTreeMap<NodeId, Time>,
    evictions: Vec<Eviction>,
    rng: SimRng,
    outbox: VecDeque<Transmit>,
    malformed: u64,
}

impl Server {
    fn new(rng: SimRng) -> Server {
        Server {
            evictor: Evictor::new(&PingSettings::default(), 1024),
            exports: BTreeMap::new(),
            owners: BTreeMap::new(),
            last_heard: BTreeMap::new(),
            evictions: Vec::new(),
            rng,
            outbox: VecDeque::new(),
            malformed: 0,
        }
    }

    fn answer(&mut self, to: NodeId, req: &Header, status: i32, handle: ExportHandle) {
        let bytes = msg::reply(req, status, handle, Duration::from_micros(20));
        self.outbox.push_back(Transmit { to, bytes });
    }

    fn handle_request(&mut self, now: Time, from: NodeId, h: &Header) {
        let Ok(op) = Op::try_from(h.opcode) else {
            return self.answer(from, h, -errno::EOPNOTSUPP, ExportHandle::NONE);
        };
        match op {
            Op::OstConnect => {
                let handle = match self.exports.get(&from) {
                    Some(&e) if self.evictor.handle_request(now, e) => e,
                    _ => {
                        let e = ExportHandle(self.rng.next_u64() | 1);
                        if self.evictor.add_export(now, e).is_err() {
                            return self.answer(from, h, -errno::ENOTCONN, ExportHandle::NONE);
                        }
                        self.exports.insert(from, e);
                        self.owners.insert(e, from);
                        e
                    }
                };
                self.last_heard.insert(from, now);
                self.answer(from, h, 0, handle);
            }
            Op::ObdPing => {
                let ok = self.owners.get(&h.handle) == Some(&from) && self.evictor.handle_request(now, h.handle);
                if ok {
                    self.last_heard.insert(from, now);
                    self.answer(from, h, 0, h.handle);
                } else {
                    self.answer(from, h, -errno::ENOTCONN, ExportHandle::NONE);
                }
            }
            _ => self.answer(from, h, -errno::EOPNOTSUPP, h.handle),
        }
    }
}

impl Node for Server {
    fn handle_message(&mut self, now: Time, from: NodeId, bytes: &[u8]) {
        match msg::parse(bytes) {
            Some(h) if h.kind == MsgKind::Request => self.handle_request(now, from, &h),
            _ => self.malformed += 1,
        }
    }

    fn handle_timeout(&mut self, now: Time) {
        self.evictor.handle_timeout(now);
        while let Some(EvictorEvent::Evict { export, last_seen }) = self.evictor.poll_event() {
            if let Some(client) = self.owners.remove(&export) {
                self.exports.remove(&client);
                self.evictions.push(Eviction { client, at: now, last_seen });
            }
        }
    }

    fn poll_transmit(&mut self, _now: Time) -> Option<Transmit> {
        self.outbox.pop_front()
    }

    fn poll_timeout(&self) -> Option<Time> {
        self.evictor.poll_timeout()
    }

    fn crash(&mut self) {
        self.outbox.clear();
    }
}

#[derive(Debug)]
enum Sim {
    Client(Box<Client>),
    Server(Box<Server>),
}

impl Sim {
    fn client(&self) -> &Client {
        match self {
            Sim::Client(c) => c,
            Sim::Server(_) => panic!("not a client"),
        }
    }
    fn server(&self) -> &Server {
        match self {
            Sim::Server(s) => s,
            Sim::Client(_) => panic!("not a server"),
        }
    }
    fn node(&mut self) -> &mut dyn Node {
        match self {
            Sim::Client(c) => c.as_mut(),
            Sim::Server(s) => s.as_mut(),
        }
    }
}

impl Node for Sim {
    fn handle_message(&mut self, now: Time, from: NodeId, bytes: &[u8]) {
        self.node().handle_message(now, from, bytes)
    }
    fn handle_timeout(&mut self, now: Time) {
        self.node().handle_timeout(now)
    }
    fn poll_transmit(&mut self, now: Time) -> Option<Transmit> {
        self.node().poll_transmit(now)
    }
    fn poll_timeout(&self) -> Option<Time> {
        match self {
            Sim::Client(c) => c.poll_timeout(),
            Sim::Server(s) => s.poll_timeout(),
        }
    }
    fn crash(&mut self) {
        self.node().crash()
    }
}

fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(what()) }
}

/// One server, three clients over random (sometimes lossy) links. Client 1
/// falls silent (crash or partition); later the server dies.
fn pinger_scenario(seed: u64, trace: bool) -> Result<SimStats, String> {
    let ping = PingSettings::default();
    let at = AtSettings::default();
    let mut w: World<Sim> = World::new(seed);
    w.set_trace(trace);
    w.set_message_formatter(msg::describe);
    w.set_event_budget(200_000);
    let lossy = w.rng().chance(0.7);
    let max_fault = if lossy { 0.05 } else { 0.0 };

    let srv_rng = w.rng().fork();
    let server = w.add_node("server", Sim::Server(Box::new(Server::new(srv_rng))));
    let mut clients = Vec::new();
    for i in 0..3 {
        let stagger = w.rng().duration(Duration::ZERO, Duration::from_secs(10));
        w.advance(stagger);
        let c = w.add_node(&format!("c{i}"), Sim::Client(Box::new(Client::new(w.now(), server))));
        let up = LinkConfig::random(w.rng(), max_fault);
        let down = LinkConfig::random(w.rng(), max_fault);
        w.net().set_link(c, server, up);
        w.net().set_link(server, c, down);
        clients.push(c);
    }
    let max_delay = w.net().max_delay();
    let (live, silent) = ([clients[0], clients[2]], clients[1]);

    // Client 1 falls silent.
    let t_silent = Time::from_secs(30) + w.rng().duration(Duration::ZERO, Duration::from_secs(170));
    w.run_until(t_silent);
    if w.rng().chance(0.5) {
        w.crash(silent);
    } else {
        w.net().partition(&[silent], &[server]);
    }
    w.trace(format_args!("client {silent} falls silent"));
    let evict_by = t_silent + ping.evict_timeout() + max_delay;
    w.run_until(evict_by + Duration::from_secs(50));

    let evictions = w.node(server).server().evictions.clone();
    for e in &evictions {
        check(e.client == silent, || format!("live client {} evicted: {e:?}", e.client))?;
        check(e.at - e.last_seen == ping.evict_timeout(), || {
            format!("evicted after {:?} of silence, not 6 ping intervals", e.at - e.last_seen)
        })?;
    }
    check(evictions.len() == 1, || format!("silent client evictions: {evictions:?}"))?;
    let e = evictions[0];
    check(e.at <= evict_by, || format!("evicted at {}, later than {evict_by}", e.at))?;
    check(e.last_seen <= t_silent + max_delay, || {
        format!("heard from silent client at {} after {t_silent}", e.last_seen)
    })?;

    // The server dies; live clients must notice within the ping bounds.
    let t_dead = w.now() + w.rng().duration(Duration::ZERO, Duration::from_secs(30));
    w.run_until(t_dead);
    w.crash(server);
    w.trace(format_args!("server dies"));
    let ping_deadline = at.timeout_for(at.at_min) + 2 * max_delay;
    let detect_by = t_dead + ping.ping_interval() + ping_deadline + max_delay;
    w.run_until(detect_by + Duration::from_secs(30));

    for &c in &live {
        let client = w.node(c).client();
        check(client.connected >= 1, || format!("{c} never connected"))?;
        check(client.malformed == 0, || format!("{c} saw malformed messages"))?;
        let before: Vec<_> = client.failures.iter().filter(|f| f.0 <= t_dead).collect();
        check(!before.iter().any(|f| f.1 == Failure::Evicted), || format!("{c} was told it is evicted: {before:?}"))?;
        check(lossy || before.is_empty(), || format!("{c} failed on a lossless network: {before:?}"))?;
        let detected = client.failures.iter().find(|f| f.0 > t_dead);
        let Some(&(at_t, kind)) = detected else {
            return Err(format!("{c} never noticed the dead server"));
        };
        check(at_t <= detect_by, || format!("{c} noticed the dead server at {at_t} ({kind:?}), bound {detect_by}"))?;
    }
    check(w.node(server).server().malformed == 0, || "server saw malformed messages".into())?;
    Ok(w.stats())
}

#[test]
fn pinger_and_evictor_1000_seeds() {
    run_seeds("pinger_and_evictor_1000_seeds", 1000, |seed, trace| pinger_scenario(seed, trace).map(|_| ()));
}

#[test]
fn a_seed_replays_exactly() -> Result<(), String> {
    let a = pinger_scenario(42, false)?;
    assert_eq!(pinger_scenario(42, false)?, a);
    assert_ne!(pinger_scenario(43, false)?, a);
    assert!(a.delivered > 0 && a.timers > 0);
    Ok(())
}
