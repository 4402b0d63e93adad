//! The lnet-backed driver end to end: a client and a service over the `lo`
//! LND and over tcp on loopback (a 127.x.y.z address per node and test, one
//! fixed port). Every wait is bounded; nothing sleeps to wait.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use lnet::{AckReq, EventHandler, Lnet, LnetConfig, MdBuffer, MdSpec, NetConfig, Target, TcpConfig, Tunables};
use parking_lot::Mutex;
use ptlrpc::at::AtSettings;
use ptlrpc::driver::{
    Client, ClientConfig, EchoHandler, Errno, Handler, Reply, ReqCtx, Request, RequestSet, RpcError, Service,
    ServiceConfig,
};
use ptlrpc::fault::{FaultInjector, FaultKind, FaultPoint, Trigger};
use ptlrpc::portals::ECHO_REQUEST_PORTAL;
use ptlrpc::wire::{BrwBody, BrwReply, Header, MsgFlags, MsgKind, Op, Xid, errno};

const BOUND: Duration = Duration::from_secs(30);
const TCP_PORT: u16 = 7997;

#[derive(Clone, Copy, Debug)]
enum Fabric {
    Lo,
    Tcp,
}

fn unique() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    (std::process::id() % 4000) * 64 + NEXT.fetch_add(1, Ordering::Relaxed) % 64
}

fn configs(fabric: Fabric) -> [LnetConfig; 2] {
    let tunables = Tunables { transaction_timeout: Duration::from_secs(5), ..Tunables::default() };
    let u = unique();
    let node = |i: u32| match fabric {
        Fabric::Lo => LnetConfig { nets: vec![NetConfig::Lo { addr: (u + 1) * 16 + i }], tunables: tunables.clone() },
        Fabric::Tcp => {
            let v = u + 1;
            // Second octet 1..=250 whatever the pid (no overflow, never 0).
            let addr = Ipv4Addr::new(127, ((v >> 8) % 250) as u8 + 1, v as u8, i as u8 + 1);
            LnetConfig {
                nets: vec![NetConfig::Tcp(TcpConfig { addr, port: TCP_PORT, ..TcpConfig::default() })],
                tunables: tunables.clone(),
            }
        }
    };
    [node(0), node(1)]
}

/// AT settings that keep tests short: a ~0.45 s request timeout, early
/// replies 0.2 s before a deadline extending it by 0.5 s.
fn short_at() -> AtSettings {
    AtSettings {
        at_min: Duration::from_millis(200),
        at_max: Duration::from_secs(10),
        at_history: Duration::from_secs(10),
        at_early_margin: Duration::from_millis(200),
        at_extra: Duration::from_millis(500),
        timeout_slack: Duration::from_millis(200),
    }
}

struct Pair {
    server: Lnet,
    client: Lnet,
    svc: Service,
    faults: Arc<FaultInjector>,
}

impl Pair {
    async fn start(fabric: Fabric, handler: Arc<dyn Handler>) -> Pair {
        Pair::start_with(fabric, handler, |c| c).await
    }

    async fn start_with(
        fabric: Fabric,
        handler: Arc<dyn Handler>,
        tune: impl FnOnce(ServiceConfig) -> ServiceConfig,
    ) -> Pair {
        let [s, c] = configs(fabric);
        let server = Lnet::start(s).await.expect("server lnet");
        let client = Lnet::start(c).await.expect("client lnet");
        let faults = Arc::new(FaultInjector::new(1));
        let cfg =
            tune(ServiceConfig { at: short_at(), bulk_timeout: Duration::from_secs(10), ..ServiceConfig::echo() });
        let svc = Service::start(&server, cfg, handler, Arc::clone(&faults)).expect("service starts");
        Pair { server, client, svc, faults }
    }

    fn client(&self, cfg: ClientConfig) -> Client {
        Client::new(&self.client, self.server.nid(), ECHO_REQUEST_PORTAL, cfg, Arc::clone(&self.faults))
    }

    fn default_client(&self) -> Client {
        self.client(ClientConfig { at: short_at(), ..ClientConfig::default() })
    }

    fn stop(self) {
        self.svc.shutdown();
        self.client.shutdown();
        self.server.shutdown();
    }
}

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(BOUND, f).await.expect("finishes within the bound")
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seed.wrapping_mul(131).wrapping_add(i as u64 * 7) % 251) as u8).collect()
}

fn pages(lnet: &Lnet, data: &[u8]) -> MdBuffer {
    let mut b = MdBuffer::from_pages_len(lnet.pool(0).alloc_bytes(data.len()).unwrap(), data.len());
    b.write_at(0, data);
    b
}

fn bytes(b: &MdBuffer) -> Vec<u8> {
    let mut v = vec![0; b.len()];
    b.read_at(0, &mut v);
    v
}

/// Records every request's xid and flags, then answers as the echo service.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(Xid, MsgFlags)>>,
    echo: EchoHandler,
}

impl Handler for Recorder {
    fn handle(&self, req: &Request, ctx: &mut ReqCtx<'_>) -> Result<Reply, Errno> {
        self.seen.lock().push((req.xid(), req.header().flags));
        self.echo.handle(req, ctx)
    }
}

/// Takes `delay` over every request (a slow service), then answers.
struct Slow {
    delay: Duration,
}

impl Handler for Slow {
    fn handle(&self, _req: &Request, _ctx: &mut ReqCtx<'_>) -> Result<Reply, Errno> {
        // The service being slow, not a test waiting: nothing ever sends.
        let (_tx, rx) = std::sync::mpsc::channel::<()>();
        let _ = rx.recv_timeout(self.delay);
        Ok(Reply::empty())
    }
}

async fn round_trip(fabric: Fabric) {
    let p = Pair::start(fabric, Arc::new(EchoHandler::new())).await;
    let c = p.default_client();
    let r = bounded(c.ping()).await.expect("ping");
    assert_eq!(r.header().kind, MsgKind::Reply);
    let e = bounded(c.rpc(Op::MdsGetattr, &())).await.expect_err("echo does not serve MDS ops");
    assert!(matches!(e, RpcError::Server { errno: errno::EOPNOTSUPP, .. }), "{e:?}");
    assert_eq!(e.errno(), errno::EOPNOTSUPP);
    assert_eq!(p.svc.metrics().handled(Op::ObdPing), 1);
    assert_eq!(p.svc.metrics().errors(Op::MdsGetattr), 1);
    let text = p.svc.render_metrics();
    assert!(text.contains(r#"ptlrpc_requests_handled_total{service="echo",operation="ObdPing"} 1"#), "{text}");
    assert!(text.contains("ptlrpc_service_seconds_bucket"), "{text}");
    assert_eq!(c.stats().resends, 0);
    p.stop();
}

async fn many_in_flight(fabric: Fabric) {
    let rec = Arc::new(Recorder::default());
    let p = Pair::start(fabric, rec.clone()).await;
    let c = p.default_client();
    let mut set = RequestSet::new();
    for _ in 0..200 {
        set.add(c.start(Op::ObdPing, &()));
    }
    let results = bounded(set.wait_all()).await;
    assert_eq!(results.len(), 200);
    let mut xids: Vec<Xid> = results.into_iter().map(|r| r.expect("ping").header().xid).collect();
    let n = xids.len();
    xids.sort();
    xids.dedup();
    assert_eq!(xids.len(), n, "xids are unique");
    let mut seen: Vec<Xid> = rec.seen.lock().iter().map(|(x, _)| *x).collect();
    seen.sort();
    assert_eq!(seen, xids);
    assert_eq!(p.svc.metrics().handled(Op::ObdPing), 200);
    p.stop();
}

async fn resend_after_dropped_reply(fabric: Fabric) {
    let rec = Arc::new(Recorder::default());
    let p = Pair::start(fabric, rec.clone()).await;
    let c = p.default_client();
    p.faults.set(FaultPoint::ReplyDrop, Trigger::Once);
    let r = bounded(c.ping()).await.expect("the resend gets a reply");
    let seen = rec.seen.lock().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].0, seen[1].0, "a resend keeps its xid");
    assert_eq!(r.header().xid, seen[0].0);
    assert!(!seen[0].1.contains(MsgFlags::RESEND) && seen[1].1.contains(MsgFlags::RESEND), "{seen:?}");
    assert_eq!((c.stats().timeouts, c.stats().resends), (1, 1));
    assert_eq!(p.faults.fired(FaultKind::ReplyDrop), 1);
    p.stop();
}

async fn timeout_maps_to_etimedout(fabric: Fabric) {
    let p = Pair::start(fabric, Arc::new(EchoHandler::new())).await;
    let c = p.client(ClientConfig { at: short_at(), max_sends: 2, ..ClientConfig::default() });
    p.faults.set(FaultPoint::RequestDrop, Trigger::EveryN(1));
    let e = bounded(c.ping()).await.expect_err("every request is dropped");
    assert!(matches!(e, RpcError::Timeout { sends: 2, .. }), "{e:?}");
    assert_eq!(e.errno(), errno::ETIMEDOUT);
    p.faults.clear_all();
    bounded(c.ping()).await.expect("and then the service answers");
    p.stop();
}

async fn early_replies_keep_slow_request_alive(fabric: Fabric) {
    let p = Pair::start(fabric, Arc::new(Slow { delay: Duration::from_millis(1500) })).await;
    // One send only: without early replies the ~0.45 s deadline would fail it.
    let c = p.client(ClientConfig { at: short_at(), max_sends: 1, ..ClientConfig::default() });
    assert!(c.request_timeout() < Duration::from_millis(500));
    let r = bounded(c.ping()).await.expect("early replies keep it alive");
    assert!(r.service_time() >= Duration::from_millis(1500), "{:?}", r.service_time());
    let s = c.stats();
    assert!(s.early_replies >= 2, "{s:?}");
    assert_eq!((s.timeouts, s.resends), (0, 0), "{s:?}");
    assert!(p.svc.metrics().early_replies.get() >= 2);
    // The reply's service time now drives the estimate.
    assert!(c.service_estimate() >= Duration::from_millis(1500));
    p.stop();
}

async fn malformed_requests(fabric: Fabric) {
    let p = Pair::start(fabric, Arc::new(EchoHandler::new())).await;
    let c = p.default_client();
    // A body that is not a BrwBody: the handler's validation says EPROTO.
    let e = bounded(c.rpc(Op::OstWrite, &7u8)).await.expect_err("a one-byte body is not a BrwBody");
    assert!(matches!(e, RpcError::Server { errno: errno::EPROTO, .. }), "{e:?}");
    // Garbage without a header: dropped, counted.
    let md = p.client.bind(MdSpec::new(MdBuffer::Inline(vec![0xee; 64]), EventHandler::None)).unwrap();
    p.client.put(&md, Target::new(p.server.nid(), ECHO_REQUEST_PORTAL.0, 0), AckReq::NoAck, 0).unwrap();
    // A header whose body length lies: answered -EPROTO (seen as a reply
    // to a request the client never made, so only counted here).
    let mut h = Header::new(MsgKind::Request, Op::ObdPing.opcode(), Xid(1));
    h.body_len = 100;
    let md = p.client.bind(MdSpec::new(MdBuffer::Inline(h.encode().to_vec()), EventHandler::None)).unwrap();
    p.client.put(&md, Target::new(p.server.nid(), ECHO_REQUEST_PORTAL.0, 0), AckReq::NoAck, 0).unwrap();
    // Messages from one peer arrive in order: once this PING is answered
    // both bad ones have been seen.
    bounded(c.ping()).await.expect("the service still answers");
    assert_eq!(p.svc.metrics().malformed.get(), 2);
    p.stop();
}

fn brw(offset: u64) -> impl Fn(ptlrpc::wire::BulkDesc) -> BrwBody {
    move |bulk| BrwBody { offset, bulk }
}

fn read_cksum(r: &ptlrpc::driver::RpcReply) -> Result<u32, RpcError> {
    Ok(r.body::<BrwReply>()?.cksum)
}

/// The echo service's bulk with the worker waiting on each transfer
/// (`ReqCtx::bulk_get` / `bulk_put`), where the echo handler defers its
/// reply to the transfer's completion.
#[derive(Default)]
struct BlockingEcho {
    store: Mutex<std::collections::HashMap<u64, MdBuffer>>,
}

impl Handler for BlockingEcho {
    fn handle(&self, req: &Request, ctx: &mut ReqCtx<'_>) -> Result<Reply, Errno> {
        let b: BrwBody = req.body()?;
        match req.op() {
            Op::OstWrite => {
                let data = ctx.bulk_get(&b.bulk)?;
                self.store.lock().insert(b.offset, data);
                Reply::new(&BrwReply { len: b.bulk.len, cksum_type: b.bulk.cksum_type, cksum: 0 })
            }
            Op::OstRead => {
                let data = self.store.lock().remove(&b.offset).ok_or(Errno(errno::EINVAL))?;
                let (data, cksum) = ctx.bulk_put(&b.bulk, data)?;
                self.store.lock().insert(b.offset, data);
                Reply::new(&BrwReply { len: b.bulk.len, cksum_type: b.bulk.cksum_type, cksum })
            }
            _ => Err(Errno::EOPNOTSUPP),
        }
    }
}

async fn bulk_round_trip(fabric: Fabric, corrupt: bool) {
    // The echo service starts its transfers inline, on the receive path;
    // `BlockingEcho` waits for them on a worker.
    bulk_round_trip_with(fabric, corrupt, Arc::new(EchoHandler::storing()), true).await;
    bulk_round_trip_with(fabric, corrupt, Arc::new(BlockingEcho::default()), false).await;
}

async fn bulk_round_trip_with(fabric: Fabric, corrupt: bool, handler: Arc<dyn Handler>, inline: bool) {
    let p = Pair::start(fabric, handler).await;
    let c = p.default_client();
    let len = 1 << 20;
    let data = pattern(9, len);
    if corrupt {
        p.faults.set(FaultPoint::BulkCorrupt, Trigger::Once);
    }
    let (r, _) = bounded(c.bulk_write(Op::OstWrite, pages(&p.client, &data), true, brw(4096))).await.expect("write");
    assert_eq!(r.body::<BrwReply>().unwrap().len, len as u32);
    assert_eq!(p.svc.metrics().bulk_cksum_errors.get(), u64::from(corrupt));
    if corrupt {
        p.faults.set(FaultPoint::BulkCorrupt, Trigger::Once);
    }
    let sink = MdBuffer::from_pages_len(p.client.pool(0).alloc_bytes(len).unwrap(), len);
    let (r, got) = bounded(c.bulk_read(Op::OstRead, sink, true, brw(4096), read_cksum)).await.expect("read");
    assert_eq!(r.body::<BrwReply>().unwrap().cksum, ptlrpc::driver::checksum(&got));
    assert!(bytes(&got) == data, "the data arrives intact");
    assert_eq!(c.stats().bulk_cksum_errors, u64::from(corrupt));
    // Every request inline or none (a read with a corrupted transfer is
    // sent again: three then).
    let m = p.svc.metrics();
    assert_eq!((m.served_inline.get() >= 2, m.served_inline.get() == 0), (inline, !inline));
    assert_eq!(m.inline_declined.get(), 0);
    if corrupt {
        assert_eq!(p.faults.fired(FaultKind::BulkCorrupt), 2);
        // Corrupt every transfer: the retries run out and the error says so.
        p.faults.set(FaultPoint::BulkCorrupt, Trigger::EveryN(1));
        let e = bounded(c.bulk_write(Op::OstWrite, pages(&p.client, &data), true, brw(0))).await.expect_err("no luck");
        assert_eq!(e.errno(), errno::EBADMSG, "{e:?}");
    }
    p.stop();
}

async fn bulk_plain(fabric: Fabric) {
    bulk_round_trip(fabric, false).await;
}

async fn bulk_corrupted(fabric: Fabric) {
    bulk_round_trip(fabric, true).await;
}

/// `MDS_GETATTR` waits (in `ReqCtx::blocking`, bounded) until an
/// `MDS_STATFS` has been handled; `MDS_STATFS` lets it go.
#[derive(Default)]
struct Rendezvous {
    released: Mutex<bool>,
    cv: parking_lot::Condvar,
}

impl Handler for Rendezvous {
    fn handle(&self, req: &Request, ctx: &mut ReqCtx<'_>) -> Result<Reply, Errno> {
        match req.op() {
            Op::MdsGetattr => ctx.blocking(|| {
                let mut r = self.released.lock();
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while !*r {
                    if self.cv.wait_until(&mut r, deadline).timed_out() {
                        return Err(Errno(errno::ETIMEDOUT));
                    }
                }
                Ok(Reply::empty())
            }),
            Op::MdsStatfs => {
                *self.released.lock() = true;
                self.cv.notify_all();
                Ok(Reply::empty())
            }
            _ => Err(Errno::EOPNOTSUPP),
        }
    }
}

/// With one running worker per CPT, a request waiting in
/// `ReqCtx::blocking` hands its slot on: the request it waits for is served
/// by the CPT's other worker meanwhile.
async fn blocking_hands_the_slot_on(fabric: Fabric) {
    let tune = |c| ServiceConfig { threads_per_cpt: 2, max_running: 1, ..c };
    let p = Pair::start_with(fabric, Arc::new(Rendezvous::default()), tune).await;
    let c = p.default_client();
    let waiter = tokio::spawn(c.start(Op::MdsGetattr, &()));
    bounded(c.rpc(Op::MdsStatfs, &())).await.expect("served while the other request waits");
    bounded(waiter).await.expect("joins").expect("released, not timed out");
    p.stop();
}

/// Answers `OST_READ` with a reply but never PUTs the data (and records
/// each request).
struct NoBulk(Arc<Recorder>);

impl Handler for NoBulk {
    fn handle(&self, req: &Request, _ctx: &mut ReqCtx<'_>) -> Result<Reply, Errno> {
        self.0.seen.lock().push((req.xid(), req.header().flags));
        let b: BrwBody = req.body()?;
        Reply::new(&BrwReply { len: b.bulk.len, cksum_type: 0, cksum: 0 })
    }
}

/// A read reply whose bulk never landed is read again, and in the end an
/// error, not stale pages.
async fn read_reply_needs_its_bulk(fabric: Fabric) {
    let rec = Arc::new(Recorder::default());
    let p = Pair::start(fabric, Arc::new(NoBulk(rec.clone()))).await;
    let cfg = ClientConfig { at: short_at(), bulk_release_wait: Duration::from_millis(300), ..ClientConfig::default() };
    let c = p.client(cfg);
    let sink = MdBuffer::from_pages_len(p.client.pool(0).alloc_bytes(8192).unwrap(), 8192);
    let e = bounded(c.bulk_read(Op::OstRead, sink, false, brw(0), read_cksum)).await.expect_err("no data came");
    assert!(matches!(e, RpcError::BulkMissing { got: 0, want: 8192, .. }), "{e:?}");
    assert_eq!(e.errno(), errno::EIO);
    assert_eq!(rec.seen.lock().len(), 4, "read once and again bulk_retries (3) times");
    p.stop();
}

/// A write whose pages were never posted: the deferred GET fails (the
/// client's lnet refuses it, or the service's timer unlinks it at the bulk
/// timeout) and the request is answered with an error, counted; the
/// service goes on.
async fn deferred_bulk_fails(fabric: Fabric) {
    let tune = |c| ServiceConfig { bulk_timeout: Duration::from_millis(300), ..c };
    let p = Pair::start_with(fabric, Arc::new(EchoHandler::new()), tune).await;
    let c = p.default_client();
    let bulk = ptlrpc::wire::BulkDesc { match_bits: 0x5eed, len: 8192, cksum_type: 0, cksum: 0 };
    let started = std::time::Instant::now();
    let e = bounded(c.rpc(Op::OstWrite, &BrwBody { offset: 0, bulk })).await.expect_err("nothing to GET");
    assert!(matches!(e, RpcError::Server { .. }), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(4), "answered by the bulk timeout, not lnet's (5 s)");
    assert_eq!((p.svc.metrics().bulk_errors.get(), p.svc.metrics().errors(Op::OstWrite)), (1, 1));
    let data = pattern(3, 8192);
    // Writes and reads go on, over pages the handler keeps between them.
    for _ in 0..3 {
        bounded(c.bulk_write(Op::OstWrite, pages(&p.client, &data), true, brw(0))).await.expect("then a write works");
        let sink = MdBuffer::from_pages_len(p.client.pool(0).alloc_bytes(4096).unwrap(), 4096);
        bounded(c.bulk_read(Op::OstRead, sink, true, brw(0), read_cksum)).await.expect("and a read");
    }
    p.stop();
}

/// PING is served inline, and asks for a bulk transfer there (refused).
struct InlineBulk;

impl Handler for InlineBulk {
    fn handle(&self, req: &Request, ctx: &mut ReqCtx<'_>) -> Result<Reply, Errno> {
        assert_eq!(ctx.is_inline(), req.op() == Op::ObdPing);
        let desc = ptlrpc::wire::BulkDesc { match_bits: 1, len: 4096, cksum_type: 0, cksum: 0 };
        let _pages = ctx.bulk_get(&desc)?;
        Ok(Reply::empty())
    }

    fn inline(&self, req: &Request) -> bool {
        req.op() == Op::ObdPing
    }
}

/// The echo service answers PINGs inline on the receive path: every one
/// is counted and measured, nothing stays queued or active, and the reply
/// carries its service time. A handler running inline gets no bulk.
async fn pings_served_inline(fabric: Fabric) {
    let p = Pair::start(fabric, Arc::new(EchoHandler::new())).await;
    let c = p.default_client();
    let mut set = RequestSet::new();
    for _ in 0..50 {
        set.add(c.start(Op::ObdPing, &()));
    }
    for r in bounded(set.wait_all()).await {
        assert!(r.expect("ping").service_time() < BOUND);
    }
    let m = p.svc.metrics();
    assert_eq!((m.handled(Op::ObdPing), m.errors(Op::ObdPing)), (50, 0));
    assert_eq!((m.queued.get(), m.active.get()), (0, 0));
    let text = p.svc.render_metrics();
    assert!(text.contains(r#"ptlrpc_service_seconds_count{service="echo",operation="ObdPing"} 50"#), "{text}");
    p.stop();

    let p = Pair::start(fabric, Arc::new(InlineBulk)).await;
    let c = p.default_client();
    let e = bounded(c.ping()).await.expect_err("no bulk inline");
    assert!(matches!(e, RpcError::Server { errno: errno::EIO, .. }), "{e:?}");
    assert_eq!((p.svc.metrics().errors(Op::ObdPing), p.svc.metrics().bulk_errors.get()), (1, 1));
    p.stop();
}

macro_rules! on_both {
    ($($name:ident => $body:ident;)*) => {
        mod on_lo {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let fabric = Fabric::Lo;
                    $body(fabric).await;
                }
            )*
        }
        mod on_tcp {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let fabric = Fabric::Tcp;
                    $body(fabric).await;
                }
            )*
        }
    };
}

on_both! {
    rpc_round_trip => round_trip;
    rpcs_in_flight => many_in_flight;
    resend_on_dropped_reply => resend_after_dropped_reply;
    timeout_is_etimedout => timeout_maps_to_etimedout;
    early_replies => early_replies_keep_slow_request_alive;
    malformed => malformed_requests;
    bulk_with_checksums => bulk_plain;
    bulk_corruption_retried => bulk_corrupted;
    blocking_frees_the_slot => blocking_hands_the_slot_on;
    read_reply_waits_for_bulk => read_reply_needs_its_bulk;
    inline_pings => pings_served_inline;
    deferred_bulk_failure => deferred_bulk_fails;
}
