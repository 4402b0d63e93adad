//! Adaptive timeouts in virtual time: a service that slows from 1 ms to
//! 40 s per request. Client deadlines follow the service's reported times,
//! and early replies keep the slow requests from timing out.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use ptlrpc::Time;
use ptlrpc::at::{AtSettings, ClientAt, ServiceAt};
use ptlrpc::sim::{LinkConfig, Node, NodeId, Transmit, World, run_seeds};
use ptlrpc::wire::{ExportHandle, Header, MsgFlags, MsgKind, Op, Portal, Xid};

use crate::msg;

const PORTAL: Portal = Portal(28);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Service times per request: a ramp from 1 ms to 40 s, or an abrupt jump.
fn schedule(ramp: bool) -> Vec<Duration> {
    let mut s = vec![ms(1); 5];
    if ramp {
        s.extend([ms(10), ms(100), ms(1_000), ms(3_000), ms(8_000), ms(20_000)]);
    }
    s.extend([ms(40_000); 3]);
    s
}

/// What the client saw for one request.
#[derive(Debug, Clone, Copy)]
struct Done {
    /// The timeout the request carried when first sent.
    timeout: Duration,
    /// Its deadline, relative to sending, when first sent.
    first_deadline: Duration,
    /// The service time the reply reported.
    service_time: Duration,
    early_replies: u32,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    xid: Xid,
    sent: Time,
    timeout: Duration,
    first_deadline: Duration,
    deadline: Time,
    early_replies: u32,
}

#[derive(Debug)]
struct Client {
    server: NodeId,
    at: ClientAt,
    to_send: u32,
    next_xid: u64,
    next_send: Option<Time>,
    current: Option<InFlight>,
    outbox: VecDeque<Transmit>,
    done: Vec<Done>,
    timeouts: Vec<(Time, Xid)>,
}

impl Client {
    fn send(&mut self, now: Time, xid: Xid, resend: bool) -> (Duration, Time) {
        let timeout = self.at.request_timeout(now, PORTAL);
        let deadline = self.at.request_deadline(now, PORTAL);
        let mut h = Header::new(MsgKind::Request, Op::OstGetattr.opcode(), xid);
        h.timeout = timeout;
        if resend {
            h.flags = MsgFlags::RESEND;
        }
        let bytes = match ptlrpc::wire::encode(&h, &()) {
            Ok(b) => b.to_vec(),
            Err(e) => panic!("encode: {e}"),
        };
        self.outbox.push_back(Transmit { to: self.server, bytes });
        (timeout, deadline)
    }

    fn drive(&mut self, now: Time) {
        if self.current.is_none() && self.to_send > 0 && self.next_send.is_some_and(|t| now >= t) {
            self.to_send -= 1;
            self.next_send = None;
            self.next_xid += 1;
            let xid = Xid(self.next_xid);
            let (timeout, deadline) = self.send(now, xid, false);
            self.current =
                Some(InFlight { xid, sent: now, timeout, first_deadline: deadline - now, deadline, early_replies: 0 });
        }
    }
}

impl Node for Client {
    fn handle_message(&mut self, now: Time, _from: NodeId, bytes: &[u8]) {
        let Some(h) = msg::parse(bytes) else { return };
        let Some(cur) = self.current.as_mut().filter(|c| c.xid == h.xid) else {
            return; // duplicate or late
        };
        if h.flags.contains(MsgFlags::EARLY_REPLY) {
            cur.deadline = self.at.early_reply_deadline(now, cur.sent, h.timeout, cur.deadline);
            cur.early_replies += 1;
        } else {
            self.at.handle_reply(now, PORTAL, cur.sent, h.service_time);
            self.done.push(Done {
                timeout: cur.timeout,
                first_deadline: cur.first_deadline,
                service_time: h.service_time,
                early_replies: cur.early_replies,
            });
            self.current = None;
            self.next_send = Some(now + Duration::from_secs(1));
        }
        self.drive(now);
    }

    fn handle_timeout(&mut self, now: Time) {
        if let Some(cur) = self.current
            && now >= cur.deadline
        {
            // A timeout: resend with the same xid.
            self.timeouts.push((now, cur.xid));
            let (_, deadline) = self.send(now, cur.xid, true);
            self.current = Some(InFlight { sent: now, deadline, ..cur });
        }
        self.drive(now);
    }

    fn poll_transmit(&mut self, now: Time) -> Option<Transmit> {
        self.drive(now);
        self.outbox.pop_front()
    }

    fn poll_timeout(&self) -> Option<Time> {
        match self.current {
            Some(c) => Some(c.deadline),
            None if self.to_send > 0 => self.next_send,
            None => None,
        }
    }
}

type Key = (NodeId, Xid);

#[derive(Debug)]
struct Server {
    at: ServiceAt<Key>,
    early_replies: bool,
    schedule: Vec<Duration>,
    started: u32,
    working: BTreeMap<Key, (Time, Header)>,
    replies: BTreeMap<Key, Vec<u8>>,
    outbox: VecDeque<Transmit>,
    sent_early: u32,
}

impl Server {
    fn finish_due(&mut self, now: Time) {
        let due: Vec<Key> = self.working.iter().filter(|(_, (t, _))| *t <= now).map(|(k, _)| *k).collect();
        for key in due {
            let Some((_, req)) = self.working.remove(&key) else { continue };
            let service = self.at.handle_reply_sent(now, key).unwrap_or_default();
            let bytes = msg::reply(&req, 0, ExportHandle::NONE, service);
            self.replies.insert(key, bytes.clone());
            self.outbox.push_back(Transmit { to: key.0, bytes });
        }
    }
}

impl Node for Server {
    fn handle_message(&mut self, now: Time, from: NodeId, bytes: &[u8]) {
        let Some(h) = msg::parse(bytes).filter(|h| h.kind == MsgKind::Request) else {
            return;
        };
        let key = (from, h.xid);
        if let Some(r) = self.replies.get(&key) {
            // Resend of an answered request: reconstruct the reply.
            let bytes = r.clone();
            self.outbox.push_back(Transmit { to: from, bytes });
            return;
        }
        if self.working.contains_key(&key) {
            return; // duplicate or resend of a request in progress
        }
        let service = self.schedule.get(self.started as usize).copied().unwrap_or(ms(1));
        self.started += 1;
        if self.at.handle_request(now, key, h.timeout).is_ok() {
            self.working.insert(key, (now + service, h));
        }
    }

    fn handle_timeout(&mut self, now: Time) {
        self.finish_due(now);
        if self.early_replies {
            self.at.handle_timeout(now);
            while let Some(er) = self.at.poll_early_reply() {
                if let Some((_, req)) = self.working.get(&er.key) {
                    let bytes = msg::early_reply(req, er.timeout, er.service_estimate);
                    self.outbox.push_back(Transmit { to: er.key.0, bytes });
                    self.sent_early += 1;
                }
            }
        }
    }

    fn poll_transmit(&mut self, _now: Time) -> Option<Transmit> {
        self.outbox.pop_front()
    }

    fn poll_timeout(&self) -> Option<Time> {
        let work = self.working.values().map(|(t, _)| *t).min();
        let early = if self.early_replies { self.at.poll_timeout() } else { None };
        match (work, early) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[derive(Debug)]
enum Sim {
    Client(Box<Client>),
    Server(Box<Server>),
}

impl Node for Sim {
    fn handle_message(&mut self, now: Time, from: NodeId, bytes: &[u8]) {
        match self {
            Sim::Client(c) => c.handle_message(now, from, bytes),
            Sim::Server(s) => s.handle_message(now, from, bytes),
        }
    }
    fn handle_timeout(&mut self, now: Time) {
        match self {
            Sim::Client(c) => c.handle_timeout(now),
            Sim::Server(s) => s.handle_timeout(now),
        }
    }
    fn poll_transmit(&mut self, now: Time) -> Option<Transmit> {
        match self {
            Sim::Client(c) => c.poll_transmit(now),
            Sim::Server(s) => s.poll_transmit(now),
        }
    }
    fn poll_timeout(&self) -> Option<Time> {
        match self {
            Sim::Client(c) => c.poll_timeout(),
            Sim::Server(s) => s.poll_timeout(),
        }
    }
}

struct Outcome {
    done: Vec<Done>,
    timeouts: Vec<(Time, Xid)>,
    sent_early: u32,
}

fn run(seed: u64, trace: bool, ramp: bool, early_replies: bool) -> Outcome {
    let settings = AtSettings::default();
    let mut w: World<Sim> = World::new(seed);
    w.set_trace(trace);
    w.set_message_formatter(msg::describe);
    // Delay, jitter, duplication and reordering, but no loss: every timeout
    // here would be spurious.
    let mut link = LinkConfig::random(w.rng(), 0.05);
    link.loss = 0.0;
    w.net().set_default_link(link);
    let schedule = schedule(ramp);
    let n = schedule.len() as u32;
    let server = w.add_node(
        "server",
        Sim::Server(Box::new(Server {
            at: ServiceAt::new(w.now(), settings, 64),
            early_replies,
            schedule,
            started: 0,
            working: BTreeMap::new(),
            replies: BTreeMap::new(),
            outbox: VecDeque::new(),
            sent_early: 0,
        })),
    );
    let client = w.add_node(
        "client",
        Sim::Client(Box::new(Client {
            server,
            at: ClientAt::new(w.now(), settings),
            to_send: n,
            next_xid: 0,
            next_send: Some(Time::from_secs(1)),
            current: None,
            outbox: VecDeque::new(),
            done: Vec::new(),
            timeouts: Vec::new(),
        })),
    );
    w.run_until(Time::from_secs(3_600));
    let sent_early = match w.node(server) {
        Sim::Server(s) => s.sent_early,
        Sim::Client(_) => 0,
    };
    match w.node(client) {
        Sim::Client(c) => Outcome { done: c.done.clone(), timeouts: c.timeouts.clone(), sent_early },
        Sim::Server(_) => panic!("client node is a server"),
    }
}

fn at_scenario(seed: u64, trace: bool) -> Result<(), String> {
    let settings = AtSettings::default();
    let ramp = seed.is_multiple_of(2);
    let expect = schedule(ramp);
    let out = run(seed, trace, ramp, true);
    if !out.timeouts.is_empty() {
        return Err(format!("spurious timeouts: {:?}", out.timeouts));
    }
    if out.done.len() != expect.len() {
        return Err(format!("{} of {} requests done", out.done.len(), expect.len()));
    }
    let mut worst = Duration::ZERO;
    for (i, (d, want)) in out.done.iter().zip(&expect).enumerate() {
        // Service times are reported (to the µs) and measured from arrival.
        if d.service_time < *want || d.service_time > *want + ms(1) {
            return Err(format!("request {i}: service time {:?}, want {want:?}", d.service_time));
        }
        // The deadline follows the worst service time seen so far.
        let follows = settings.timeout_for(worst.max(settings.at_min));
        if d.timeout != follows || d.first_deadline < d.timeout {
            return Err(format!(
                "request {i}: timeout {:?} deadline {:?}, want timeout {follows:?}",
                d.timeout, d.first_deadline
            ));
        }
        // Early replies were needed exactly when the service outran the
        // first deadline less the early margin.
        let needed = d.service_time + settings.at_early_margin > d.timeout;
        if needed != (d.early_replies > 0) {
            return Err(format!("request {i}: {d:?}: early replies needed: {needed}"));
        }
        worst = worst.max(d.service_time);
    }
    if out.sent_early == 0 {
        return Err("no early replies were sent".into());
    }
    Ok(())
}

#[test]
fn adaptive_timeouts_follow_a_slowing_service() {
    run_seeds("adaptive_timeouts_follow_a_slowing_service", 200, at_scenario);
}

/// The control: without early replies the same service makes the client
/// time out, so it is the early replies that prevent spurious timeouts.
#[test]
fn without_early_replies_the_client_times_out() {
    let out = run(1, false, false, false);
    assert!(!out.timeouts.is_empty());
    assert_eq!(out.sent_early, 0);
}
