//! The lock table in the deterministic simulator: a server driving a
//! [`LockNamespace`] and clients that enqueue, hold, cancel, answer (or
//! ignore) blocking callbacks, over lossy, duplicating, reordering links.
//!
//! Checked after every event: the server never has two conflicting locks
//! granted, and no two clients the server still counts as alive believe
//! they hold conflicting locks at once (nor one of them beside the
//! server's own lock). At the end, with the network healed and the
//! clients quiet: nothing waits, every request was answered, and a
//! client only ever lost locks by being evicted when it ignored a
//! callback or its network did.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use super::*;
use crate::sim::{LinkConfig, Node, NodeId, SimRng, Transmit, World, run_seeds};
use crate::time::Time;

/// A client, by node and incarnation (a new one after each eviction).
type Who = (u32, u32);

const RESOURCES: u64 = 3;
const SERVER: NodeId = NodeId(0);

#[derive(Debug, Clone, PartialEq)]
enum Msg {
    Enqueue { inc: u32, req: u64, res: u64, mode: LockMode, bits: InodeBits, nowait: bool },
    Granted { req: u64, lock: u64 },
    WouldBlock { req: u64 },
    Cancel { inc: u32, lock: u64 },
    Ast { lock: u64 },
    Evicted { inc: u32 },
}

fn put(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}

fn get(b: &[u8], i: usize) -> u64 {
    b.get(1 + i * 8..9 + i * 8).and_then(|s| s.try_into().ok()).map(u64::from_le_bytes).unwrap_or(0)
}

impl Msg {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        match *self {
            Msg::Enqueue { inc, req, res, mode, bits, nowait } => {
                v.push(0);
                for x in [u64::from(inc), req, res, u64::from(mode.wire()), bits.wire(), u64::from(nowait)] {
                    put(&mut v, x);
                }
            }
            Msg::Granted { req, lock } => {
                v.push(1);
                put(&mut v, req);
                put(&mut v, lock);
            }
            Msg::WouldBlock { req } => {
                v.push(2);
                put(&mut v, req);
            }
            Msg::Cancel { inc, lock } => {
                v.push(3);
                put(&mut v, u64::from(inc));
                put(&mut v, lock);
            }
            Msg::Ast { lock } => {
                v.push(4);
                put(&mut v, lock);
            }
            Msg::Evicted { inc } => {
                v.push(5);
                put(&mut v, u64::from(inc));
            }
        }
        v
    }

    fn decode(b: &[u8]) -> Msg {
        let g = |i| get(b, i);
        match b.first() {
            Some(0) => Msg::Enqueue {
                inc: g(0) as u32,
                req: g(1),
                res: g(2),
                mode: LockMode::from_wire(g(3) as u32).unwrap_or(LockMode::Nl),
                bits: InodeBits::from_wire(g(4)).unwrap_or(InodeBits::NONE),
                nowait: g(5) != 0,
            },
            Some(1) => Msg::Granted { req: g(0), lock: g(1) },
            Some(2) => Msg::WouldBlock { req: g(0) },
            Some(3) => Msg::Cancel { inc: g(0) as u32, lock: g(1) },
            Some(4) => Msg::Ast { lock: g(0) },
            _ => Msg::Evicted { inc: g(0) as u32 },
        }
    }
}

fn describe(b: &[u8]) -> String {
    format!("{:?}", Msg::decode(b))
}

#[derive(Debug)]
struct Server {
    ns: LockNamespace<Who>,
    /// (client, req) -> lock, so a resent enqueue finds its lock.
    reqs: HashMap<(Who, u64), LockHandle>,
    by_lock: HashMap<LockHandle, (Who, u64)>,
    evicted: BTreeSet<Who>,
    out: Vec<Transmit>,
    rng: SimRng,
    /// The server's own lock: held until the time given.
    local: Option<(LockHandle, Option<Time>)>,
    next_local: Time,
}

impl Server {
    fn send(&mut self, to: u32, m: Msg) {
        self.out.push(Transmit { to: NodeId(to), bytes: m.encode() });
    }

    fn pump(&mut self, now: Time) {
        while let Some(ev) = self.ns.poll_event() {
            match ev {
                LdlmEvent::BlockingAst { owner, lock, .. } => self.send(owner.0, Msg::Ast { lock: lock.0 }),
                LdlmEvent::Granted { owner: Owner::Remote(who), lock } => {
                    if let Some(&(_, req)) = self.by_lock.get(&lock) {
                        self.send(who.0, Msg::Granted { req, lock: lock.0 });
                    }
                }
                LdlmEvent::Granted { owner: Owner::Local, lock } => {
                    if let Some((h, until)) = &mut self.local
                        && *h == lock
                    {
                        *until = Some(now + self.rng.duration(Duration::from_micros(10), Duration::from_millis(5)));
                    }
                }
                LdlmEvent::Evict { owner, .. } => {
                    self.evicted.insert(owner);
                    self.forget(owner);
                }
            }
        }
    }

    fn forget(&mut self, who: Who) {
        self.reqs.retain(|(w, _), _| *w != who);
        self.by_lock.retain(|_, (w, _)| *w != who);
    }
}

impl Node for Server {
    fn handle_message(&mut self, now: Time, from: NodeId, bytes: &[u8]) {
        let m = Msg::decode(bytes);
        let inc = match &m {
            Msg::Enqueue { inc, .. } | Msg::Cancel { inc, .. } => *inc,
            _ => return,
        };
        let who = (from.0, inc);
        if self.evicted.contains(&who) {
            self.send(from.0, Msg::Evicted { inc });
            return;
        }
        match m {
            Msg::Enqueue { req, res, mode, bits, nowait, .. } => {
                if let Some(h) = self.reqs.get(&(who, req)).copied() {
                    // A resend: answer again if granted, else the grant will come.
                    if self.ns.lock(h).is_some_and(|l| l.granted) {
                        self.send(from.0, Msg::Granted { req, lock: h.0 });
                    }
                    return;
                }
                let wait = if nowait { Wait::NoWait } else { Wait::Block };
                match self.ns.enqueue(now, Owner::Remote(who), ResId(u128::from(res)), mode, bits, wait) {
                    Ok(Enqueued::Granted(h)) => {
                        self.reqs.insert((who, req), h);
                        self.by_lock.insert(h, (who, req));
                        self.send(from.0, Msg::Granted { req, lock: h.0 });
                    }
                    Ok(Enqueued::Waiting(h)) => {
                        self.reqs.insert((who, req), h);
                        self.by_lock.insert(h, (who, req));
                    }
                    Ok(Enqueued::WouldBlock) | Err(_) => self.send(from.0, Msg::WouldBlock { req }),
                }
            }
            Msg::Cancel { lock, .. } => {
                let h = LockHandle(lock);
                if self.ns.cancel(now, Owner::Remote(who), h).is_ok()
                    && let Some(k) = self.by_lock.remove(&h)
                {
                    self.reqs.remove(&k);
                }
            }
            _ => {}
        }
        self.pump(now);
    }

    fn handle_timeout(&mut self, now: Time) {
        self.ns.handle_timeout(now);
        if let Some((h, Some(until))) = self.local
            && until <= now
        {
            self.local = None;
            let _ = self.ns.cancel(now, Owner::Local, h);
        }
        if self.local.is_none() && self.next_local <= now && now < Time::from_secs(STOP_SECS) {
            let res = ResId(u128::from(self.rng.below(RESOURCES)));
            let bits = [InodeBits::LOOKUP, InodeBits::UPDATE, InodeBits::KNOWN][self.rng.below(3) as usize];
            // Half the time the change is a client's own that keeps its
            // locks on the resource (a create in a directory it caches).
            let owners: BTreeSet<Who> = self.by_lock.values().map(|(w, _)| *w).collect();
            let keeper = if self.rng.below(2) == 0 && !owners.is_empty() {
                owners.iter().nth(self.rng.below(owners.len() as u64) as usize).copied()
            } else {
                None
            };
            let got = match keeper {
                Some(k) => {
                    let mut keeps: Vec<LockHandle> = self.by_lock.keys().copied().collect();
                    keeps.sort();
                    self.ns.enqueue_keeping(now, k, res, LockMode::Ex, bits, Wait::Block, &keeps)
                }
                None => self.ns.enqueue(now, Owner::Local, res, LockMode::Ex, bits, Wait::Block),
            };
            match got {
                Ok(Enqueued::Granted(h)) => {
                    let until = now + self.rng.duration(Duration::from_micros(10), Duration::from_millis(5));
                    self.local = Some((h, Some(until)));
                }
                Ok(Enqueued::Waiting(h)) => self.local = Some((h, None)),
                _ => {}
            }
            self.next_local = now + self.rng.duration(Duration::from_millis(1), Duration::from_millis(200));
        }
        if now >= Time::from_secs(STOP_SECS) {
            self.next_local = Time::from_secs(STOP_SECS);
        }
        self.pump(now);
    }

    fn poll_transmit(&mut self, _now: Time) -> Option<Transmit> {
        if self.out.is_empty() { None } else { Some(self.out.remove(0)) }
    }

    fn poll_timeout(&self) -> Option<Time> {
        let mut t = self.ns.poll_timeout();
        let mut take = |x: Time| t = Some(t.map_or(x, |y| y.min(x)));
        match self.local {
            Some((_, Some(until))) => take(until),
            Some((_, None)) => {}
            None if self.next_local < Time::from_secs(STOP_SECS) => take(self.next_local),
            None => {}
        }
        t
    }
}

/// Clients stop asking for locks (and the server for its own) here.
const STOP_SECS: u64 = 8;

#[derive(Debug)]
struct Client {
    inc: u32,
    rng: SimRng,
    /// Ignores blocking callbacks (a hung or dead application).
    deaf: bool,
    next_req: u64,
    /// The outstanding enqueue: (req, resource, mode, bits, nowait, resend at).
    pending: Option<(u64, u64, LockMode, InodeBits, bool, Time)>,
    /// Locks this client believes it holds: handle -> (res, mode, bits, release at).
    held: BTreeMap<u64, (u64, LockMode, InodeBits, Time)>,
    next_op: Time,
    /// Callbacks that came before their grant (the two travel apart): the
    /// grant, when it comes, is given back at once.
    revoked: VecDeque<u64>,
    out: Vec<Transmit>,
    answered: u64,
    asked: u64,
    evictions: u32,
}

impl Client {
    fn new(rng: SimRng, deaf: bool) -> Client {
        Client {
            inc: 0,
            rng,
            deaf,
            next_req: 0,
            pending: None,
            held: BTreeMap::new(),
            next_op: Time::from_millis(1),
            revoked: VecDeque::new(),
            out: Vec::new(),
            answered: 0,
            asked: 0,
            evictions: 0,
        }
    }

    fn send(&mut self, m: Msg) {
        self.out.push(Transmit { to: SERVER, bytes: m.encode() });
    }

    fn enqueue_msg(&self) -> Option<Msg> {
        self.pending.map(|(req, res, mode, bits, nowait, _)| Msg::Enqueue {
            inc: self.inc,
            req,
            res,
            mode,
            bits,
            nowait,
        })
    }
}

const RESEND: Duration = Duration::from_millis(500);

impl Node for Client {
    fn handle_message(&mut self, now: Time, _from: NodeId, bytes: &[u8]) {
        match Msg::decode(bytes) {
            Msg::Granted { req, lock } => {
                if let Some((p, res, mode, bits, _, _)) = self.pending
                    && p == req
                {
                    self.pending = None;
                    self.answered += 1;
                    if self.revoked.contains(&lock) {
                        self.send(Msg::Cancel { inc: self.inc, lock });
                        return;
                    }
                    let until = now + self.rng.duration(Duration::from_micros(100), Duration::from_millis(300));
                    self.held.insert(lock, (res, mode, bits, until));
                } else if !self.held.contains_key(&lock) {
                    // A late duplicate of a grant for a lock given back already.
                    self.send(Msg::Cancel { inc: self.inc, lock });
                }
            }
            Msg::WouldBlock { req } if self.pending.is_some_and(|p| p.0 == req) => {
                self.pending = None;
                self.answered += 1;
            }
            Msg::Ast { lock } if !self.deaf => {
                if self.held.remove(&lock).is_none() {
                    if self.revoked.len() >= 64 {
                        self.revoked.pop_front();
                    }
                    self.revoked.push_back(lock);
                }
                self.send(Msg::Cancel { inc: self.inc, lock });
            }
            Msg::Evicted { inc } if inc == self.inc => {
                self.inc += 1;
                self.evictions += 1;
                self.held.clear();
                self.revoked.clear();
                if self.pending.take().is_some() {
                    self.answered += 1;
                }
            }
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: Time) {
        let due: Vec<u64> = self.held.iter().filter(|(_, h)| h.3 <= now).map(|(l, _)| *l).collect();
        for lock in due {
            self.held.remove(&lock);
            self.send(Msg::Cancel { inc: self.inc, lock });
        }
        if let Some(p) = &mut self.pending
            && p.5 <= now
        {
            p.5 = now + RESEND;
            if let Some(m) = self.enqueue_msg() {
                self.send(m);
            }
        }
        if self.pending.is_none() && self.next_op <= now && now < Time::from_secs(STOP_SECS) {
            self.next_req += 1;
            let res = self.rng.below(RESOURCES);
            let mode =
                [LockMode::Pr, LockMode::Pr, LockMode::Cr, LockMode::Pw, LockMode::Ex][self.rng.below(5) as usize];
            let bits = [InodeBits::LOOKUP, InodeBits::UPDATE, InodeBits::KNOWN][self.rng.below(3) as usize];
            let nowait = self.rng.chance(0.3);
            self.pending = Some((self.next_req, res, mode, bits, nowait, now + RESEND));
            self.asked += 1;
            if let Some(m) = self.enqueue_msg() {
                self.send(m);
            }
            self.next_op = now + self.rng.duration(Duration::from_millis(1), Duration::from_millis(100));
        }
        if now >= Time::from_secs(STOP_SECS) {
            self.next_op = Time::from_secs(STOP_SECS);
        }
    }

    fn poll_transmit(&mut self, _now: Time) -> Option<Transmit> {
        if self.out.is_empty() { None } else { Some(self.out.remove(0)) }
    }

    fn poll_timeout(&self) -> Option<Time> {
        let mut t: Option<Time> = None;
        let mut take = |x: Time| t = Some(t.map_or(x, |y| y.min(x)));
        for h in self.held.values() {
            take(h.3);
        }
        if let Some(p) = self.pending {
            take(p.5);
        }
        if self.pending.is_none() && self.next_op < Time::from_secs(STOP_SECS) {
            take(self.next_op);
        }
        t
    }
}

#[derive(Debug)]
enum N {
    S(Server),
    C(Client),
}

impl Node for N {
    fn handle_message(&mut self, now: Time, from: NodeId, bytes: &[u8]) {
        match self {
            N::S(s) => s.handle_message(now, from, bytes),
            N::C(c) => c.handle_message(now, from, bytes),
        }
    }
    fn handle_timeout(&mut self, now: Time) {
        match self {
            N::S(s) => s.handle_timeout(now),
            N::C(c) => c.handle_timeout(now),
        }
    }
    fn poll_transmit(&mut self, now: Time) -> Option<Transmit> {
        match self {
            N::S(s) => s.poll_transmit(now),
            N::C(c) => c.poll_transmit(now),
        }
    }
    fn poll_timeout(&self) -> Option<Time> {
        match self {
            N::S(s) => s.poll_timeout(),
            N::C(c) => c.poll_timeout(),
        }
    }
}

fn server(w: &World<N>) -> &Server {
    match w.node(SERVER) {
        N::S(s) => s,
        N::C(_) => unreachable!("node 0 is the server"),
    }
}

fn client(w: &World<N>, id: u32) -> &Client {
    match w.node(NodeId(id)) {
        N::C(c) => c,
        N::S(_) => unreachable!("nodes 1.. are clients"),
    }
}

/// What each live client (and the server) believes it holds must be
/// compatible.
fn check(w: &World<N>, clients: u32) -> Result<(), String> {
    let s = server(w);
    s.ns.check()?;
    // (who, handle, resource, mode, bits); the server's own lock may
    // coexist with the client locks it keeps.
    let mut held: Vec<(String, u64, u64, LockMode, InodeBits)> = Vec::new();
    let mut kept: Vec<u64> = Vec::new();
    if let Some((h, Some(_))) = s.local
        && let Some(l) = s.ns.lock(h)
    {
        held.push(("server".into(), h.0, l.res.0 as u64, l.mode, l.bits));
        kept = l.keeps.iter().map(|k| k.0).collect();
    }
    for id in 1..=clients {
        let c = client(w, id);
        if s.evicted.contains(&(id, c.inc)) {
            continue;
        }
        for (lock, (res, mode, bits, _)) in &c.held {
            held.push((format!("n{id}/{lock}"), *lock, *res, *mode, *bits));
        }
    }
    for (i, a) in held.iter().enumerate() {
        for b in &held[i + 1..] {
            let server_keeps = a.0 == "server" && kept.contains(&b.1);
            if a.2 == b.2 && !server_keeps && conflicts((a.3, a.4), (b.3, b.4)) {
                return Err(format!(
                    "{} holds {} {} and {} holds {} {} on resource {}",
                    a.0, a.3, a.4, b.0, b.3, b.4, a.2
                ));
            }
        }
    }
    Ok(())
}

fn scenario(seed: u64, trace: bool, max_fault: f64) -> Result<(), String> {
    let mut w: World<N> = World::new(seed);
    w.set_trace(trace);
    w.set_message_formatter(describe);
    let mut rng = w.rng().fork();
    let clients = 2 + rng.below(3) as u32;
    let settings = LdlmSettings {
        callback_timeout: Duration::from_secs(2),
        ast_resend: Duration::from_millis(400),
        max_locks: 10_000,
    };
    let s = Server {
        ns: LockNamespace::new(settings, rng.next_u64()),
        reqs: HashMap::new(),
        by_lock: HashMap::new(),
        evicted: BTreeSet::new(),
        out: Vec::new(),
        rng: rng.fork(),
        local: None,
        next_local: Time::from_millis(5),
    };
    w.add_node("server", N::S(s));
    let deaf = if rng.chance(0.3) { 1 + rng.below(u64::from(clients)) as u32 } else { 0 };
    for id in 1..=clients {
        let c = Client::new(rng.fork(), id == deaf);
        w.add_node(&format!("c{id}"), N::C(c));
    }
    for a in 0..=clients {
        for b in 0..=clients {
            if a != b {
                let link = LinkConfig::random(&mut rng, max_fault);
                w.net().set_link(NodeId(a), NodeId(b), link);
            }
        }
    }
    // A partition cuts one client off for a while, now and then.
    let cut = rng.chance(0.3).then(|| (1 + rng.below(u64::from(clients)) as u32, Time::from_secs(rng.range(1, 5))));
    let mut healed = cut.is_none();
    let mut quiet = false;
    while w.now() < Time::from_secs(STOP_SECS + 10) {
        if let Some((id, at)) = cut {
            if !healed
                && w.now() >= at
                && w.now() < at + Duration::from_secs(3)
                && w.net().connected(NodeId(id), SERVER)
            {
                w.net().partition(&[NodeId(id)], &[SERVER]);
            } else if !healed && w.now() >= at + Duration::from_secs(3) {
                w.net().heal();
                healed = true;
            }
        }
        if !quiet && w.now() >= Time::from_secs(STOP_SECS) {
            quiet = true;
            // Quiet end: no more loss, so every request can be answered.
            for a in 0..=clients {
                for b in 0..=clients {
                    if a != b {
                        w.net().set_link(NodeId(a), NodeId(b), LinkConfig::ideal(Duration::from_millis(1)));
                    }
                }
            }
        }
        if !w.step() {
            break;
        }
        check(&w, clients).map_err(|e| format!("at {}: {e}", w.now()))?;
    }
    w.run_until(Time::from_secs(STOP_SECS + 10));
    check(&w, clients)?;
    let s = server(&w);
    if s.ns.waiting() != 0 {
        return Err(format!("{} locks still waiting at the end", s.ns.waiting()));
    }
    let mut asked = 0;
    for id in 1..=clients {
        let c = client(&w, id);
        asked += c.asked;
        if c.pending.is_some() || c.answered != c.asked {
            return Err(format!("client n{id}: {} asked, {} answered, pending {:?}", c.asked, c.answered, c.pending));
        }
        if c.evictions > 0 && id != deaf && max_fault == 0.0 && cut.is_none_or(|(cid, _)| cid != id) {
            return Err(format!(
                "client n{id} evicted {} times on a clean network without ignoring a callback",
                c.evictions
            ));
        }
    }
    if asked == 0 {
        return Err("no client asked for a lock".into());
    }
    Ok(())
}

#[test]
fn no_conflicting_grants_and_every_waiter_answered_on_clean_links() {
    run_seeds("ldlm::sim_tests::clean", 200, |seed, trace| scenario(seed, trace, 0.0));
}

#[test]
fn lost_callbacks_end_in_eviction_not_a_hang() {
    run_seeds("ldlm::sim_tests::faulty", 1000, |seed, trace| scenario(seed, trace, 0.1));
}

/// One deaf holder: the writer waiting behind it is granted once the
/// callback timeout evicts it, not later.
#[test]
fn a_deaf_holder_is_evicted_at_the_callback_timeout() {
    let mut ns: LockNamespace<Who> = LockNamespace::new(
        LdlmSettings {
            callback_timeout: Duration::from_secs(2),
            ast_resend: Duration::from_millis(400),
            max_locks: 10,
        },
        9,
    );
    let t0 = Time::from_secs(1);
    let Enqueued::Granted(_) =
        ns.enqueue(t0, Owner::Remote((1, 0)), ResId(1), LockMode::Pr, InodeBits::KNOWN, Wait::Block).unwrap()
    else {
        panic!()
    };
    let Enqueued::Waiting(w) =
        ns.enqueue(t0, Owner::Local, ResId(1), LockMode::Ex, InodeBits::UPDATE, Wait::Block).unwrap()
    else {
        panic!()
    };
    let mut granted_at = None;
    let mut now = t0;
    while let Some(t) = ns.poll_timeout() {
        now = t;
        ns.handle_timeout(now);
        while let Some(e) = ns.poll_event() {
            if e == (LdlmEvent::Granted { owner: Owner::Local, lock: w }) {
                granted_at = Some(now);
            }
        }
    }
    assert_eq!(granted_at, Some(t0 + Duration::from_secs(2)));
    assert_eq!(now, t0 + Duration::from_secs(2));
}
