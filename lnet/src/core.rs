//! The LNet core: MDs, matching, credits, transactions and events.
//!
//! Owns all mutable LNet state behind one lock: the portal table, live MDs
//! and their pending operations, messages waiting for or holding credits,
//! responses (ACK/REPLY) being waited for, and the peer table. LNDs enter
//! through [`crate::lnd::LndCtx`]; users through [`crate::Lnet`].
//!
//! Rules: LND sends and events are carried out after the lock is dropped,
//! in the order the state changes made them, by one thread at a time (see
//! `flush`), so LNDs and handlers may call back in.
//! Every message handed to an LND holds one peer and one NI credit until its
//! `send_done`; every MD operation holds one `pending` count until its final
//! event; an MD unlinks when its threshold is used up, or it was asked to,
//! and nothing is pending.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::config::Tunables;
use crate::error::LnetError;
use crate::event::{Event, EventHandler, EventKind};
use crate::lnd::{Delivery, Lnd, RecvToken, TxMsg};
use crate::md::{Md, MdOptions, MdSlice, MdSpec, Threshold};
use crate::nid::Nid;
use crate::peer::{CreditQueue, PeerInfo, PeerState};
use crate::portal::{InsertPos, MAX_PORTALS, MatchSpec, PortalTable};
use crate::wire::{LnetHdr, MsgBody};

pub(crate) struct Ni {
    pub(crate) nid: Nid,
    pub(crate) lnd: Arc<dyn Lnd>,
}

/// Whole-instance counters; `*_in_use`, `queued`, `awaiting`, `mds` and
/// `msgs` return to zero when the instance is idle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Messages owned by the core (queued or handed to an LND).
    pub msgs: usize,
    /// Live MDs.
    pub mds: usize,
    /// Match entries on portals.
    pub match_entries: usize,
    /// Peer credits held by messages.
    pub peer_credits_in_use: u32,
    /// NI credits held by messages.
    pub ni_credits_in_use: u32,
    /// Messages waiting for a credit.
    pub queued: usize,
    /// ACKs and REPLYs being waited for.
    pub awaiting: usize,
    /// Messages sent.
    pub send_count: u64,
    /// Messages received.
    pub recv_count: u64,
    /// Messages dropped (no match, stale response, not for us).
    pub drop_count: u64,
    /// Payload bytes sent.
    pub send_bytes: u64,
    /// Payload bytes received.
    pub recv_bytes: u64,
    /// Sends that failed.
    pub send_errors: u64,
    /// Responses that never came.
    pub timeouts: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AwaitKind {
    Ack,
    Reply,
}

#[derive(Debug)]
struct Awaiting {
    peer: Nid,
    kind: AwaitKind,
    tx: u64,
    deadline: Instant,
    portal: u32,
    match_bits: u64,
    rlength: u32,
}

impl Awaiting {
    /// The event fields of the operation this response belongs to.
    fn ev_info(&self, peer: Nid, mlength: u32) -> EvInfo {
        EvInfo {
            peer,
            portal: self.portal,
            match_bits: self.match_bits,
            rlength: self.rlength,
            mlength,
            offset: 0,
            hdr_data: 0,
        }
    }
}

struct MdState {
    md: Md,
    threshold: Threshold,
    pending: u32,
    unlink: bool,
    portal: Option<u32>,
    local_offset: usize,
    awaiting: VecDeque<Awaiting>,
}

impl MdState {
    fn usable(&self) -> bool {
        !self.unlink && self.threshold != Threshold::Ops(0)
    }

    fn consume(&mut self) {
        if let Threshold::Ops(n) = &mut self.threshold {
            *n = n.saturating_sub(1);
        }
    }

    fn done(&self) -> bool {
        self.pending == 0 && (self.unlink || self.threshold == Threshold::Ops(0))
    }
}

#[derive(Debug)]
enum TxPurpose {
    Put { md: u64, ev: EvInfo },
    Get { md: u64, ev: EvInfo },
    Reply { md: u64, ev: EvInfo },
    Control,
}

struct TxState {
    peer: Nid,
    ni: usize,
    msg: Option<TxMsg>,
    peer_credit: bool,
    ni_credit: bool,
    bytes: u32,
    purpose: TxPurpose,
}

/// The fields of an event that the operation fixes up front.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EvInfo {
    peer: Nid,
    portal: u32,
    match_bits: u64,
    rlength: u32,
    mlength: u32,
    offset: u32,
    hdr_data: u64,
}

/// What a pending receive is for.
#[derive(Debug)]
pub(crate) enum RecvKind {
    Put { ev: EvInfo, ack_wmd: Option<u64> },
    Reply { ev: EvInfo },
}

/// Work the core hands out once its lock is dropped.
enum Action {
    Send(usize, TxMsg),
    Event(EventHandler, Event),
}

struct State {
    portals: PortalTable,
    mds: HashMap<u64, MdState>,
    next_cookie: u64,
    txs: HashMap<u64, TxState>,
    next_tx: u64,
    peers: HashMap<Nid, PeerState>,
    ni_credits: Vec<CreditQueue>,
    counters: Counters,
    /// MDs LNet keeps for itself (persistent, attached): not counted.
    internal_mds: usize,
    shutdown: bool,
    /// Sends and events in the order the state changes made them; carried
    /// out after the lock is dropped, by one thread at a time, so messages to
    /// a peer leave in order, each MD's events arrive in order, the
    /// `unlinked` one last, and LNDs and handlers may call back in.
    outbox: VecDeque<Action>,
}

pub(crate) struct Inner {
    pub(crate) tunables: Tunables,
    /// Woken whenever an operation completes, for [`crate::Lnet::wait_idle`].
    pub(crate) progress: tokio::sync::Notify,
    pub(crate) nis: OnceLock<Vec<Ni>>,
    state: Mutex<State>,
    delivering: AtomicBool,
}

impl Counters {
    /// True when nothing is in flight, queued or awaited.
    pub fn is_idle(&self) -> bool {
        self.msgs == 0
            && self.awaiting == 0
            && self.queued == 0
            && self.peer_credits_in_use == 0
            && self.ni_credits_in_use == 0
    }
}

impl Inner {
    /// Carries out queued sends and events, unless another thread is
    /// already doing so (it will pick these up too).
    fn flush(&self) {
        loop {
            if self.delivering.swap(true, Ordering::Acquire) {
                return;
            }
            loop {
                let batch = std::mem::take(&mut self.state.lock().outbox);
                if batch.is_empty() {
                    break;
                }
                for a in batch {
                    match a {
                        Action::Send(ni, msg) => match self.nis().get(ni) {
                            Some(n) => n.lnd.send(msg),
                            None => tracing::error!(ni, "message routed to a missing NI"),
                        },
                        Action::Event(h, ev) => h.deliver(ev),
                    }
                }
            }
            self.delivering.store(false, Ordering::Release);
            if self.state.lock().outbox.is_empty() {
                return;
            }
        }
    }

    pub(crate) fn new(tunables: Tunables, cookie_base: u64) -> Inner {
        Inner {
            tunables,
            progress: tokio::sync::Notify::new(),
            nis: OnceLock::new(),
            state: Mutex::new(State {
                portals: PortalTable::new(),
                mds: HashMap::new(),
                // Cookies start at a random base so a restarted node's MDs
                // never match a stale REPLY/ACK meant for its former self.
                next_cookie: cookie_base | 1,
                txs: HashMap::new(),
                next_tx: 1,
                peers: HashMap::new(),
                ni_credits: Vec::new(),
                counters: Counters::default(),
                internal_mds: 0,
                shutdown: false,
                outbox: VecDeque::new(),
            }),
            delivering: AtomicBool::new(false),
        }
    }

    pub(crate) fn set_nis(&self, nis: Vec<Ni>) {
        let credits = nis.iter().map(|_| CreditQueue::new(self.tunables.credits)).collect();
        self.state.lock().ni_credits = credits;
        let _ = self.nis.set(nis);
    }

    fn nis(&self) -> &[Ni] {
        self.nis.get().map(Vec::as_slice).unwrap_or(&[])
    }

    fn is_self(&self, nid: Nid) -> bool {
        nid == Nid::LO || self.nis().iter().any(|ni| ni.nid == nid)
    }

    /// The NI to reach `target` and the source NID to use.
    fn route(&self, target: Nid) -> Result<(usize, Nid), LnetError> {
        if self.is_self(target) {
            // NI 0 is always the lo NI; a message to ourselves keeps src == dst.
            return Ok((0, target));
        }
        self.nis()
            .iter()
            .position(|ni| ni.nid.net == target.net)
            .map(|i| (i, self.nis()[i].nid))
            .ok_or(LnetError::NoRoute(target.net))
    }

    // ---- user operations -------------------------------------------------

    /// Creates an MD (attached to a portal when `me` is given). `internal`
    /// MDs belong to LNet itself (the ping responder) and are left out of
    /// the counters.
    pub(crate) fn md_bind(
        &self,
        spec: MdSpec,
        me: Option<(u32, MatchSpec, InsertPos)>,
        internal: bool,
    ) -> Result<Md, LnetError> {
        if let Some((portal, ..)) = me
            && portal >= MAX_PORTALS
        {
            return Err(LnetError::Invalid(format!("portal {portal} is not below {MAX_PORTALS}")));
        }
        if spec.threshold == Threshold::Ops(0) {
            return Err(LnetError::Invalid("MD threshold must be at least 1".into()));
        }
        let mut st = self.state.lock();
        if st.shutdown {
            return Err(LnetError::Shutdown);
        }
        let cookie = st.next_cookie;
        st.next_cookie = st.next_cookie.wrapping_add(2);
        let threshold = spec.threshold;
        let md = Md::new(cookie, spec);
        if let Some((portal, m, pos)) = me {
            st.portals.attach(portal, m, cookie, pos);
        }
        st.mds.insert(
            cookie,
            MdState {
                md: md.clone(),
                threshold,
                pending: 0,
                unlink: false,
                portal: me.map(|(p, ..)| p),
                local_offset: 0,
                awaiting: VecDeque::new(),
            },
        );
        if internal {
            st.internal_mds += 1;
        }
        Ok(md)
    }

    pub(crate) fn md_unlink(&self, md: &Md) -> Result<(), LnetError> {
        {
            let mut st = self.state.lock();
            let cookie = md.cookie();
            let Some(ms) = st.mds.get_mut(&cookie) else {
                return Err(LnetError::Unlinked);
            };
            ms.unlink = true;
            let awaiting: Vec<Awaiting> = ms.awaiting.drain(..).collect();
            if let Some(p) = ms.portal.take() {
                st.portals.detach(p, cookie);
            }
            for aw in awaiting {
                st.fail_awaiting(cookie, aw, LnetError::Unlinked);
            }
            if let Some(ms) = st.mds.get(&cookie)
                && ms.pending == 0
            {
                let ev = Event {
                    kind: EventKind::Unlink,
                    status: Ok(()),
                    peer: Nid::LO,
                    portal: 0,
                    match_bits: 0,
                    rlength: 0,
                    mlength: 0,
                    offset: 0,
                    hdr_data: 0,
                    md: ms.md.clone(),
                    unlinked: true,
                };
                let h = ms.md.inner.handler.clone();
                st.outbox.push_back(Action::Event(h, ev));
                st.remove_md(cookie);
            }
        }
        self.flush();
        self.progress.notify_waiters();
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn put(
        &self,
        md: &Md,
        target: Nid,
        portal: u32,
        match_bits: u64,
        offset: u32,
        hdr_data: u64,
        ack: bool,
    ) -> Result<(), LnetError> {
        let (ni, src) = self.route(target)?;
        let len = self.check_len(md.len())?;
        let mut st = self.state.lock();
        let cookie = md.cookie();
        let id = st.start_op(cookie)?;
        let ev = EvInfo { peer: target, portal, match_bits, rlength: len, mlength: len, offset, hdr_data };
        if ack {
            st.expect(cookie, AwaitKind::Ack, id, &ev, self.tunables.transaction_timeout);
        }
        let hdr = LnetHdr {
            src,
            dst: target,
            payload_len: len,
            body: MsgBody::Put { portal, match_bits, offset, hdr_data, ack_wmd: ack.then_some(cookie) },
        };
        let payload = (len > 0).then(|| MdSlice { md: md.clone(), offset: 0, len: len as usize });
        st.launch(self, id, ni, target, hdr, payload, TxPurpose::Put { md: cookie, ev });
        drop(st);
        self.flush();
        Ok(())
    }

    pub(crate) fn get(&self, md: &Md, target: Nid, portal: u32, match_bits: u64, offset: u32) -> Result<(), LnetError> {
        let (ni, src) = self.route(target)?;
        let len = self.check_len(md.len())?;
        let mut st = self.state.lock();
        let cookie = md.cookie();
        let id = st.start_op(cookie)?;
        let ev = EvInfo { peer: target, portal, match_bits, rlength: len, mlength: 0, offset, hdr_data: 0 };
        st.expect(cookie, AwaitKind::Reply, id, &ev, self.tunables.transaction_timeout);
        let hdr = LnetHdr {
            src,
            dst: target,
            payload_len: 0,
            body: MsgBody::Get { portal, match_bits, offset, sink_len: len, reply_wmd: cookie },
        };
        st.launch(self, id, ni, target, hdr, None, TxPurpose::Get { md: cookie, ev });
        drop(st);
        self.flush();
        Ok(())
    }

    fn check_len(&self, len: usize) -> Result<u32, LnetError> {
        let max = self.tunables.max_payload as usize;
        if len > max {
            return Err(LnetError::TooBig { len, max });
        }
        Ok(len as u32)
    }

    /// Fails every waiting response whose deadline has passed.
    pub(crate) fn expire(&self, now: Instant) {
        {
            let mut st = self.state.lock();
            let mut expired = Vec::new();
            for (&cookie, ms) in st.mds.iter_mut() {
                while let Some(i) = ms.awaiting.iter().position(|a| a.deadline <= now) {
                    if let Some(aw) = ms.awaiting.remove(i) {
                        expired.push((cookie, aw));
                    }
                }
            }
            for (cookie, aw) in expired {
                st.counters.timeouts += 1;
                let peer = aw.peer;
                if let Some(p) = st.peers.get_mut(&peer) {
                    p.failed();
                }
                tracing::warn!(%peer, portal = aw.portal, "no {:?} within the transaction timeout", aw.kind);
                st.fail_awaiting(cookie, aw, LnetError::Timeout(peer));
            }
        }
        self.flush();
        self.progress.notify_waiters();
    }

    pub(crate) fn shutdown(&self) {
        {
            let mut st = self.state.lock();
            if st.shutdown {
                return;
            }
            st.shutdown = true;
            let cookies: Vec<u64> = st.mds.keys().copied().collect();
            for cookie in cookies {
                let aws: Vec<Awaiting> =
                    st.mds.get_mut(&cookie).map(|m| m.awaiting.drain(..).collect()).unwrap_or_default();
                for aw in aws {
                    st.fail_awaiting(cookie, aw, LnetError::Shutdown);
                }
            }
            // Messages still waiting for credits never reached an LND.
            let waiting: Vec<u64> = st.txs.iter().filter(|(_, t)| t.msg.is_some()).map(|(&id, _)| id).collect();
            for id in waiting {
                st.unqueue(id);
                st.complete_tx(self, id, Err(LnetError::Shutdown));
            }
        }
        self.flush();
        for ni in self.nis() {
            ni.lnd.shutdown();
        }
    }

    // ---- LND upcalls -----------------------------------------------------

    pub(crate) fn send_done(&self, id: u64, res: Result<(), LnetError>) {
        self.state.lock().complete_tx(self, id, res);
        self.flush();
        self.progress.notify_waiters();
    }

    pub(crate) fn parse(&self, ni: usize, from: Nid, hdr: &LnetHdr) -> Delivery {
        let d = self.state.lock().parse(self, ni, from, hdr);
        self.flush();
        d
    }

    pub(crate) fn recv_done(&self, token: RecvToken, res: Result<(), LnetError>) {
        {
            let mut st = self.state.lock();
            match token.kind {
                RecvKind::Put { ev, ack_wmd } => {
                    let ack_ok =
                        st.mds.get(&token.md).is_some_and(|m| !m.md.inner.options.contains(MdOptions::ACK_DISABLE));
                    let ok = res.is_ok();
                    st.finish_op(token.md, EventKind::Put, res, ev);
                    if let (Some(wmd), true, true) = (ack_wmd, ok, ack_ok) {
                        st.send_control(
                            self,
                            token.peer,
                            MsgBody::Ack { wmd, match_bits: ev.match_bits, mlength: ev.mlength },
                        );
                    }
                }
                RecvKind::Reply { ev } => st.finish_op(token.md, EventKind::Reply, res, ev),
            }
        }
        self.flush();
        self.progress.notify_waiters();
    }

    pub(crate) fn peer_down(&self, nid: Nid, err: LnetError) {
        {
            let mut st = self.state.lock();
            let tunables_credits = self.tunables.peer_credits;
            st.peers.entry(nid).or_insert_with(|| PeerState::new(tunables_credits)).failed();
            // Messages queued for the peer (no LND has them yet).
            let queued: Vec<u64> =
                st.txs.iter().filter(|(_, t)| t.peer == nid && t.msg.is_some()).map(|(&id, _)| id).collect();
            for id in queued {
                st.unqueue(id);
                st.complete_tx(self, id, Err(err.clone()));
            }
            // Responses the peer will never send.
            let mut lost = Vec::new();
            for (&cookie, ms) in st.mds.iter_mut() {
                let (gone, keep): (VecDeque<Awaiting>, VecDeque<Awaiting>) =
                    ms.awaiting.drain(..).partition(|a| a.peer == nid);
                ms.awaiting = keep;
                lost.extend(gone.into_iter().map(|a| (cookie, a)));
            }
            for (cookie, aw) in lost {
                st.fail_awaiting(cookie, aw, err.clone());
            }
        }
        tracing::info!(peer = %nid, %err, "peer down");
        self.flush();
        self.progress.notify_waiters();
    }

    pub(crate) fn peer_alive(&self, nid: Nid) {
        let mut st = self.state.lock();
        let credits = self.tunables.peer_credits;
        st.peers.entry(nid).or_insert_with(|| PeerState::new(credits)).alive(Instant::now());
    }

    pub(crate) fn count_drop(&self, nid: Option<Nid>) {
        let mut st = self.state.lock();
        st.counters.drop_count += 1;
        if let Some(nid) = nid {
            let credits = self.tunables.peer_credits;
            st.peers.entry(nid).or_insert_with(|| PeerState::new(credits)).counters.drop_count += 1;
        }
    }

    // ---- introspection ---------------------------------------------------

    pub(crate) fn counters(&self) -> Counters {
        let st = self.state.lock();
        let mut c = st.counters;
        c.msgs = st.txs.len();
        c.mds = st.mds.len() - st.internal_mds;
        c.match_entries = st.portals.entries() - st.internal_mds;
        c.peer_credits_in_use = st.peers.values().map(|p| p.credits.in_use()).sum();
        c.ni_credits_in_use = st.ni_credits.iter().map(CreditQueue::in_use).sum();
        c.queued = st.peers.values().map(|p| p.credits.waiting.len()).sum::<usize>()
            + st.ni_credits.iter().map(|n| n.waiting.len()).sum::<usize>();
        c.awaiting = st.mds.values().map(|m| m.awaiting.len()).sum();
        c
    }

    pub(crate) fn peers(&self) -> Vec<PeerInfo> {
        let st = self.state.lock();
        let now = Instant::now();
        let mut v: Vec<PeerInfo> = st
            .peers
            .iter()
            .map(|(&nid, p)| PeerInfo {
                nid,
                health: p.health,
                failures: p.failures,
                last_alive_secs_ago: p.last_alive.map(|t| now.saturating_duration_since(t).as_secs()),
                max_credits: p.credits.max,
                credits: p.credits.avail,
                min_credits: p.credits.min_avail,
                queued: p.credits.waiting.len(),
                counters: p.counters,
            })
            .collect();
        v.sort_by_key(|p| p.nid);
        v
    }
}

impl State {
    fn start_op(&mut self, cookie: u64) -> Result<u64, LnetError> {
        if self.shutdown {
            return Err(LnetError::Shutdown);
        }
        let ms = self.mds.get_mut(&cookie).ok_or(LnetError::Unlinked)?;
        if !ms.usable() {
            return Err(LnetError::Unlinked);
        }
        ms.consume();
        ms.pending += 1;
        let id = self.next_tx;
        self.next_tx += 1;
        Ok(id)
    }

    fn expect(&mut self, cookie: u64, kind: AwaitKind, tx: u64, ev: &EvInfo, timeout: std::time::Duration) {
        if let Some(ms) = self.mds.get_mut(&cookie) {
            ms.pending += 1;
            ms.awaiting.push_back(Awaiting {
                peer: ev.peer,
                kind,
                tx,
                deadline: Instant::now() + timeout,
                portal: ev.portal,
                match_bits: ev.match_bits,
                rlength: ev.rlength,
            });
        }
    }

    fn take_awaiting(&mut self, cookie: u64, peer: Nid, kind: AwaitKind) -> Option<Awaiting> {
        let ms = self.mds.get_mut(&cookie)?;
        let i = ms.awaiting.iter().position(|a| a.peer == peer && a.kind == kind)?;
        ms.awaiting.remove(i)
    }

    fn fail_awaiting(&mut self, cookie: u64, aw: Awaiting, err: LnetError) {
        let kind = match aw.kind {
            AwaitKind::Ack => EventKind::Ack,
            AwaitKind::Reply => EventKind::Reply,
        };
        let ev = aw.ev_info(aw.peer, 0);
        self.finish_op(cookie, kind, Err(err), ev);
    }

    fn remove_md(&mut self, cookie: u64) {
        if let Some(ms) = self.mds.remove(&cookie)
            && let Some(p) = ms.portal
        {
            self.portals.detach(p, cookie);
        }
    }

    /// Ends one pending operation of an MD with its event.
    fn finish_op(&mut self, cookie: u64, kind: EventKind, status: Result<(), LnetError>, ev: EvInfo) {
        let Some(ms) = self.mds.get_mut(&cookie) else {
            tracing::error!(cookie, ?kind, "operation finished on an MD that is gone");
            return;
        };
        debug_assert!(ms.pending > 0, "MD pending count underflow");
        ms.pending = ms.pending.saturating_sub(1);
        let done = ms.done();
        let event = Event {
            kind,
            status,
            peer: ev.peer,
            portal: ev.portal,
            match_bits: ev.match_bits,
            rlength: ev.rlength,
            mlength: ev.mlength,
            offset: ev.offset,
            hdr_data: ev.hdr_data,
            md: ms.md.clone(),
            unlinked: done,
        };
        self.outbox.push_back(Action::Event(ms.md.inner.handler.clone(), event));
        if done {
            self.remove_md(cookie);
        }
    }

    fn peer_mut(&mut self, nid: Nid, credits: u32) -> &mut PeerState {
        self.peers.entry(nid).or_insert_with(|| PeerState::new(credits))
    }

    #[allow(clippy::too_many_arguments)]
    fn launch(
        &mut self,
        inner: &Inner,
        id: u64,
        ni: usize,
        peer: Nid,
        hdr: LnetHdr,
        payload: Option<MdSlice>,
        purpose: TxPurpose,
    ) {
        let bytes = hdr.payload_len;
        self.txs.insert(
            id,
            TxState {
                peer,
                ni,
                msg: Some(TxMsg { id, peer, hdr, payload }),
                peer_credit: false,
                ni_credit: false,
                bytes,
                purpose,
            },
        );
        let p = self.peer_mut(peer, inner.tunables.peer_credits);
        if p.credits.take() {
            if let Some(t) = self.txs.get_mut(&id) {
                t.peer_credit = true;
            }
            self.ni_stage(id);
        } else {
            p.credits.waiting.push_back(id);
        }
    }

    fn ni_stage(&mut self, id: u64) {
        let Some(ni) = self.txs.get(&id).map(|t| t.ni) else { return };
        let Some(q) = self.ni_credits.get_mut(ni) else { return };
        if q.take() {
            if let Some(t) = self.txs.get_mut(&id) {
                t.ni_credit = true;
            }
            self.dispatch(id);
        } else {
            q.waiting.push_back(id);
        }
    }

    fn dispatch(&mut self, id: u64) {
        let Some(t) = self.txs.get_mut(&id) else { return };
        let Some(msg) = t.msg.take() else { return };
        self.outbox.push_back(Action::Send(t.ni, msg));
    }

    /// Removes a not-yet-dispatched message from whichever credit queue holds it.
    fn unqueue(&mut self, id: u64) {
        let Some(t) = self.txs.get(&id) else { return };
        let (peer, ni) = (t.peer, t.ni);
        if let Some(p) = self.peers.get_mut(&peer) {
            p.credits.waiting.retain(|&x| x != id);
        }
        if let Some(q) = self.ni_credits.get_mut(ni) {
            q.waiting.retain(|&x| x != id);
        }
    }

    fn send_control(&mut self, inner: &Inner, to: Nid, body: MsgBody) {
        let Ok((ni, src)) = inner.route(to) else {
            tracing::warn!(%to, "no route for a control message");
            return;
        };
        let id = self.next_tx;
        self.next_tx += 1;
        let hdr = LnetHdr { src, dst: to, payload_len: 0, body };
        self.launch(inner, id, ni, to, hdr, None, TxPurpose::Control);
    }

    fn complete_tx(&mut self, inner: &Inner, id: u64, res: Result<(), LnetError>) {
        let Some(t) = self.txs.remove(&id) else {
            tracing::error!(id, "LND completed a message the core does not know");
            return;
        };
        if t.ni_credit
            && let Some(q) = self.ni_credits.get_mut(t.ni)
        {
            q.give_back();
            if let Some(next) = q.waiting.pop_front() {
                q.take();
                if let Some(n) = self.txs.get_mut(&next) {
                    n.ni_credit = true;
                }
                self.dispatch(next);
            }
        }
        let credits = inner.tunables.peer_credits;
        let p = self.peer_mut(t.peer, credits);
        match &res {
            Ok(()) => {
                p.counters.send_count += 1;
                p.counters.send_bytes += u64::from(t.bytes);
            }
            Err(_) => p.counters.send_errors += 1,
        }
        let mut next_for_peer = None;
        if t.peer_credit {
            p.credits.give_back();
            if let Some(next) = p.credits.waiting.pop_front() {
                p.credits.take();
                next_for_peer = Some(next);
            }
        }
        if let Some(next) = next_for_peer {
            if let Some(n) = self.txs.get_mut(&next) {
                n.peer_credit = true;
            }
            self.ni_stage(next);
        }
        match &res {
            Ok(()) => {
                self.counters.send_count += 1;
                self.counters.send_bytes += u64::from(t.bytes);
            }
            Err(e) => {
                self.counters.send_errors += 1;
                tracing::debug!(peer = %t.peer, err = %e, "send failed");
            }
        }
        match t.purpose {
            TxPurpose::Put { md, ev } | TxPurpose::Get { md, ev } => {
                if res.is_err() {
                    // The response will never come: stop waiting for it.
                    let aw = self.mds.get_mut(&md).and_then(|ms| {
                        let i = ms.awaiting.iter().position(|a| a.tx == id)?;
                        ms.awaiting.remove(i)
                    });
                    if aw.is_some()
                        && let Some(ms) = self.mds.get_mut(&md)
                    {
                        ms.pending = ms.pending.saturating_sub(1);
                    }
                }
                self.finish_op(md, EventKind::Send, res, ev);
            }
            TxPurpose::Reply { md, ev } => self.finish_op(md, EventKind::Get, res, ev),
            TxPurpose::Control => {}
        }
    }

    fn parse(&mut self, inner: &Inner, _ni: usize, from: Nid, hdr: &LnetHdr) -> Delivery {
        let credits = inner.tunables.peer_credits;
        {
            let p = self.peer_mut(from, credits);
            p.counters.recv_count += 1;
            p.counters.recv_bytes += u64::from(hdr.payload_len);
            p.alive(Instant::now());
        }
        self.counters.recv_count += 1;
        self.counters.recv_bytes += u64::from(hdr.payload_len);
        if self.shutdown || !inner.is_self(hdr.dst) {
            return self.drop_msg(from, credits, "not for this node or shutting down", hdr);
        }
        match hdr.body {
            MsgBody::Put { portal, match_bits, offset, hdr_data, ack_wmd } => {
                let Some((cookie, off, mlen)) =
                    self.match_md(portal, from, match_bits, offset, hdr.payload_len, MdOptions::OP_PUT)
                else {
                    return self.drop_msg(from, credits, "PUT matched no MD", hdr);
                };
                let ev = EvInfo {
                    peer: from,
                    portal,
                    match_bits,
                    rlength: hdr.payload_len,
                    mlength: mlen,
                    offset: off,
                    hdr_data,
                };
                let md = self.mds[&cookie].md.clone();
                Delivery::Sink {
                    sink: MdSlice { md, offset: off as usize, len: mlen as usize },
                    token: RecvToken { md: cookie, peer: from, kind: RecvKind::Put { ev, ack_wmd } },
                }
            }
            MsgBody::Get { portal, match_bits, offset, sink_len, reply_wmd } => {
                let Some((cookie, off, mlen)) =
                    self.match_md(portal, from, match_bits, offset, sink_len, MdOptions::OP_GET)
                else {
                    self.drop_msg(from, credits, "GET matched no MD", hdr);
                    self.send_control(
                        inner,
                        from,
                        MsgBody::Reply {
                            wmd: reply_wmd,
                            status: LnetError::NoMatch { nid: hdr.dst, portal, match_bits }.errno(),
                        },
                    );
                    return Delivery::Discard;
                };
                let md = self.mds[&cookie].md.clone();
                let ev = EvInfo {
                    peer: from,
                    portal,
                    match_bits,
                    rlength: sink_len,
                    mlength: mlen,
                    offset: off,
                    hdr_data: 0,
                };
                let id = self.next_tx;
                self.next_tx += 1;
                let Ok((rni, src)) = inner.route(from) else {
                    tracing::warn!(%from, "GET from a peer we cannot route back to");
                    return Delivery::Discard;
                };
                let reply =
                    LnetHdr { src, dst: from, payload_len: mlen, body: MsgBody::Reply { wmd: reply_wmd, status: 0 } };
                let payload = (mlen > 0).then_some(MdSlice { md, offset: off as usize, len: mlen as usize });
                self.launch(inner, id, rni, from, reply, payload, TxPurpose::Reply { md: cookie, ev });
                Delivery::Discard
            }
            MsgBody::Reply { wmd, status } => {
                let Some(aw) = self.take_awaiting(wmd, from, AwaitKind::Reply) else {
                    return self.drop_msg(from, credits, "REPLY for no pending GET", hdr);
                };
                let mut ev = aw.ev_info(from, 0);
                if status != 0 {
                    let err = if status == -crate::error::libc_errno::ENOENT {
                        LnetError::NoMatch { nid: from, portal: aw.portal, match_bits: aw.match_bits }
                    } else {
                        LnetError::Proto { peer: from.to_string(), why: format!("REPLY status {status}") }
                    };
                    self.finish_op(wmd, EventKind::Reply, Err(err), ev);
                    return Delivery::Discard;
                }
                let Some(ms) = self.mds.get(&wmd) else {
                    return Delivery::Discard;
                };
                let mlen = hdr.payload_len.min(ms.md.len() as u32);
                ev.mlength = mlen;
                Delivery::Sink {
                    sink: MdSlice { md: ms.md.clone(), offset: 0, len: mlen as usize },
                    token: RecvToken { md: wmd, peer: from, kind: RecvKind::Reply { ev } },
                }
            }
            MsgBody::Ack { wmd, mlength, .. } => {
                let Some(aw) = self.take_awaiting(wmd, from, AwaitKind::Ack) else {
                    return self.drop_msg(from, credits, "ACK for no pending PUT", hdr);
                };
                self.finish_op(wmd, EventKind::Ack, Ok(()), aw.ev_info(from, mlength));
                Delivery::Discard
            }
            MsgBody::Hello { .. } => self.drop_msg(from, credits, "HELLO outside a handshake", hdr),
        }
    }

    fn drop_msg(&mut self, from: Nid, credits: u32, why: &str, hdr: &LnetHdr) -> Delivery {
        self.counters.drop_count += 1;
        self.peer_mut(from, credits).counters.drop_count += 1;
        tracing::debug!(peer = %from, ?hdr, "dropping message: {why}");
        Delivery::Discard
    }

    /// Finds the first MD on `portal` that takes the message; consumes one
    /// operation of it and returns (cookie, offset, matched length).
    fn match_md(
        &mut self,
        portal: u32,
        from: Nid,
        bits: u64,
        roffset: u32,
        rlen: u32,
        op: MdOptions,
    ) -> Option<(u64, u32, u32)> {
        let candidates: Vec<u64> = self.portals.candidates(portal, from, bits).collect();
        for cookie in candidates {
            let Some(ms) = self.mds.get_mut(&cookie) else { continue };
            let opts = ms.md.inner.options;
            if !ms.usable() || !opts.contains(op) {
                continue;
            }
            let len = ms.md.len();
            let off = if opts.contains(MdOptions::MANAGE_REMOTE) { roffset as usize } else { ms.local_offset };
            if off > len {
                continue;
            }
            let room = len - off;
            let want = rlen as usize;
            let mlen = if want <= room {
                want
            } else if opts.contains(MdOptions::TRUNCATE) || op == MdOptions::OP_GET {
                room
            } else {
                continue;
            };
            ms.consume();
            ms.pending += 1;
            if !opts.contains(MdOptions::MANAGE_REMOTE) {
                ms.local_offset += mlen;
                if len - ms.local_offset < ms.md.inner.min_free {
                    ms.threshold = Threshold::Ops(0);
                }
            }
            if ms.threshold == Threshold::Ops(0)
                && let Some(p) = ms.portal.take()
            {
                // Used up: take it off the portal now; it unlinks when idle.
                self.portals.detach(p, cookie);
            }
            return Some((cookie, off as u32, mlen as u32));
        }
        None
    }
}
