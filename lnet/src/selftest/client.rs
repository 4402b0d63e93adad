//! The selftest client over LNet.
//!
//! Owns the in-flight slots: each is a task that loops attaching a one-shot
//! reply MD (and, for BRW, a bulk MD over pages it reuses), PUTting a
//! request to the server's request portal and awaiting the events the
//! round needs, recording each round's latency. Every wait is bounded, and
//! a peer that goes down ends the run with an error.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::proto::{self, FLAG_CHECK, MSG_SIZE, Op, Reply, Request};
use super::{BULK_PORTAL, Phases, REPLY_PORTAL, REQ_PORTAL, RunSpec, Sample, WAIT_MAX, phases};
use crate::api::{AckReq, Lnet, Target};
use crate::event::{Event, EventKind, EventQueue};
use crate::md::{Md, MdBuffer, MdOptions, MdSpec};
use crate::nid::Nid;
use crate::portal::{InsertPos, MatchPeer, MatchSpec};

const TAG_REQ: u64 = 1;
const TAG_REPLY: u64 = 2;
const TAG_BULK: u64 = 3;

/// How often the peer's health is looked at.
const PEER_POLL: Duration = Duration::from_millis(100);

/// One in-flight slot.
struct Slot {
    lnet: Lnet,
    peer: Nid,
    id: u64,
    seq: u64,
    eq: EventQueue,
    /// The last round's bulk MD, whose pages the next round reuses.
    prev_bulk: Option<Md>,
}

impl Slot {
    fn new(lnet: &Lnet, peer: Nid, id: u64) -> Slot {
        Slot { lnet: lnet.clone(), peer, id, seq: 0, eq: EventQueue::new(), prev_bulk: None }
    }

    /// A buffer of `size` bytes, over the previous round's pages when they
    /// are free again.
    fn bulk_buffer(&mut self, size: usize) -> anyhow::Result<MdBuffer> {
        if let Some(md) = self.prev_bulk.take()
            && let Ok(MdBuffer::Pages { pages, .. }) = md.into_buffer()
            && pages.len() * crate::mem::PAGE_SIZE >= size
        {
            return Ok(MdBuffer::from_pages_len(pages, size));
        }
        let pages = self.lnet.pool(0).alloc_bytes(size).context("allocating bulk pages")?;
        Ok(MdBuffer::from_pages_len(pages, size))
    }

    /// One request/reply round (with its bulk transfer); returns its
    /// latency breakdown.
    async fn round(&mut self, op: Op, size: usize, check: bool) -> anyhow::Result<Phases> {
        let t0 = proto::wall_ns();
        self.seq += 1;
        let xid = (self.id << 40) | self.seq;
        let peer = self.peer;
        let only_peer = |bits| MatchSpec { peer: MatchPeer::Nid(peer), match_bits: bits, ignore_bits: 0 };
        let reply_md = self.lnet.attach(
            REPLY_PORTAL,
            only_peer(xid),
            InsertPos::Tail,
            MdSpec::new(MdBuffer::Inline(vec![0; MSG_SIZE]), self.eq.clone())
                .options(MdOptions::OP_PUT)
                .user_ptr(TAG_REPLY),
        )?;
        let bulk_md = if op.is_bulk() {
            let mut buf = self.bulk_buffer(size)?;
            if check && op == Op::BrwWrite {
                proto::fill_md(&mut buf, size, xid);
            }
            let opts = if op == Op::BrwWrite { MdOptions::OP_GET } else { MdOptions::OP_PUT };
            let spec = MdSpec::new(buf, self.eq.clone()).options(opts).user_ptr(TAG_BULK);
            match self.lnet.attach(BULK_PORTAL, only_peer(xid), InsertPos::Tail, spec) {
                Ok(md) => Some(md),
                Err(e) => {
                    let _ = self.lnet.unlink(&reply_md);
                    return Err(e.into());
                }
            }
        } else {
            None
        };
        let req = Request {
            op,
            xid,
            bulk_bits: xid,
            reply_portal: REPLY_PORTAL,
            bulk_portal: BULK_PORTAL,
            size: size as u32,
            flags: if check { FLAG_CHECK } else { 0 },
            seed: xid,
        };
        let sent = self
            .lnet
            .bind(MdSpec::new(MdBuffer::Inline(req.encode().to_vec()), self.eq.clone()).user_ptr(TAG_REQ))
            .and_then(|md| self.lnet.put(&md, Target::new(self.peer, REQ_PORTAL, 0), AckReq::NoAck, 0));
        let t_put = proto::wall_ns();
        let res = match sent {
            Ok(()) => self.await_round(&req, check).await.map(|(rep, t_rep)| phases(t0, t_put, &rep, t_rep)),
            Err(e) => Err(anyhow!(e).context("sending the request")),
        };
        if res.is_err() {
            let _ = self.lnet.unlink(&reply_md);
            if let Some(b) = &bulk_md {
                let _ = self.lnet.unlink(b);
            }
        }
        self.prev_bulk = bulk_md;
        res
    }

    /// Waits for the request's SEND, the reply's PUT and (for BRW) the
    /// bulk's GET or PUT, in whatever order they come.
    async fn await_round(&mut self, req: &Request, check: bool) -> anyhow::Result<(Reply, u64)> {
        let deadline = Instant::now() + WAIT_MAX;
        let mut reply = None;
        let (mut sent, mut replied, mut bulk) = (false, false, !req.op.is_bulk());
        while !(sent && replied && bulk) {
            let ev = tokio::time::timeout_at(deadline, self.eq.next()).await.map_err(|_| {
                anyhow!(
                    "no {} from {} within {WAIT_MAX:?} (xid {:#x})",
                    if !sent {
                        "request send completion"
                    } else if !replied {
                        "reply"
                    } else {
                        "bulk transfer"
                    },
                    self.peer,
                    req.xid
                )
            })?;
            if ev.kind == EventKind::Unlink {
                continue;
            }
            match ev.md.user_ptr() {
                TAG_REQ => {
                    status(&ev, "sending the request")?;
                    sent = true;
                }
                TAG_REPLY => {
                    status(&ev, "receiving the reply")?;
                    reply = Some((check_reply(&ev, req)?, proto::wall_ns()));
                    replied = true;
                }
                TAG_BULK => {
                    status(&ev, "bulk transfer")?;
                    if ev.mlength != req.size {
                        bail!("short bulk transfer: {} of {} bytes", ev.mlength, req.size);
                    }
                    if check && req.op == Op::BrwRead && !proto::verify_md(&ev.md.lock(), req.size as usize, req.seed) {
                        bail!("bulk read data from {} does not match the pattern (xid {:#x})", self.peer, req.xid);
                    }
                    bulk = true;
                }
                other => bail!("event for an unknown MD (user_ptr {other})"),
            }
        }
        reply.ok_or_else(|| anyhow!("round ended without a reply"))
    }
}

fn status(ev: &Event, what: &str) -> anyhow::Result<()> {
    ev.status.clone().map_err(|e| anyhow!(e).context(format!("{what} ({:?} event from {})", ev.kind, ev.peer)))
}

fn check_reply(ev: &Event, req: &Request) -> anyhow::Result<Reply> {
    let mut b = [0u8; MSG_SIZE];
    let n = (ev.mlength as usize).min(MSG_SIZE);
    let got = ev.md.lock().read_at(0, &mut b[..n]);
    let rep = Reply::decode(&b[..got]).map_err(|why| anyhow!("bad reply from {}: {why}", ev.peer))?;
    if rep.xid != req.xid || rep.op != req.op {
        bail!("reply from {} answers xid {:#x} {:?}, expected {:#x} {:?}", ev.peer, rep.xid, rep.op, req.xid, req.op);
    }
    if rep.status != 0 {
        bail!("server {} failed the request: {} ({})", ev.peer, proto::status_name(rep.status), rep.status);
    }
    Ok(rep)
}

async fn slot_loop(mut slot: Slot, op: Op, size: usize, check: bool, until: Instant) -> anyhow::Result<Sample> {
    let mut s = Sample::default();
    let per_round = if op.is_bulk() { size as u64 } else { 0 };
    while Instant::now() < until {
        let t = Instant::now();
        let ph = slot.round(op, size, check).await?;
        s.lat_ns.push(t.elapsed().as_nanos() as u64);
        s.phases.push(ph);
        s.ops += 1;
        s.bytes += per_round;
    }
    Ok(s)
}

/// Resolves with an error once `peer` is seen failing.
async fn watch_peer(lnet: Lnet, peer: Nid) -> anyhow::Error {
    let failures = |l: &Lnet| l.peers().iter().find(|p| p.nid == peer).map_or(0, |p| p.failures);
    let start = failures(&lnet);
    loop {
        tokio::time::sleep(PEER_POLL).await;
        if failures(&lnet) > start {
            return anyhow!("peer {peer} went down (connection refused, reset or closed)");
        }
    }
}

/// Runs one test over LNet against the server at `peer`.
pub async fn run(lnet: &Lnet, peer: Nid, spec: &RunSpec) -> anyhow::Result<Sample> {
    // One ping first, so connections are up before the clock starts.
    let mut warm = Slot::new(lnet, peer, 0);
    tokio::time::timeout(WAIT_MAX, warm.round(Op::Ping, 0, false))
        .await
        .map_err(|_| anyhow!("no answer from {peer} within {WAIT_MAX:?}"))?
        .with_context(|| format!("pinging {peer}"))?;
    let start = Instant::now();
    let until = start + spec.duration;
    let mut set = JoinSet::new();
    for i in 0..spec.concurrency {
        let slot = Slot::new(lnet, peer, i as u64 + 1);
        set.spawn(slot_loop(slot, spec.op, spec.size, spec.check, until));
    }
    let monitor = watch_peer(lnet.clone(), peer);
    tokio::pin!(monitor);
    let mut total = Sample::default();
    loop {
        tokio::select! {
            r = set.join_next() => match r {
                None => break,
                Some(Ok(Ok(s))) => total.merge(s),
                Some(Ok(Err(e))) => {
                    set.abort_all();
                    return Err(e);
                }
                Some(Err(e)) => {
                    set.abort_all();
                    bail!("a client slot died: {e}");
                }
            },
            e = &mut monitor => {
                set.abort_all();
                return Err(e);
            }
        }
    }
    total.elapsed = start.elapsed();
    Ok(total)
}
