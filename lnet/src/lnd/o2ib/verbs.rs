//! The o2ib LND's only unsafe code: verbs and rdma_cm through
//! `rdma-mummy-sys` (sideway's FFI layer, which `dlopen()`s libibverbs and
//! librdmacm at run time, so the binary starts on hosts without them).
//!
//! Owns every raw pointer the LND uses — event channels, cm ids, the
//! protection domain, memory regions, completion queues and queue pairs —
//! and the ownership rule that makes the rest of the LND safe: memory the
//! NIC may touch is *moved into* an [`Endpoint`] when a work request is
//! posted (its in-flight table keyed by `wr_id`) or exposed to the peer
//! (its exposed table), and handed back only by the completion, or after
//! the queue pair is in the error state (no further access), or when the
//! queue pair is destroyed. Every posted local address is checked against
//! the memory its [`Hold`] keeps alive. Nothing here knows about LNet
//! messages, credits or peers.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::{NonNull, null_mut};
use std::sync::Arc;

use rdma_mummy_sys as sys;
use tokio::io::unix::AsyncFd;

use crate::md::{MdBuffer, MdSlice};
use crate::mem::{MemRegion, PagePool};

/// Checks that libibverbs loads and lists at least one RDMA device.
pub(super) fn probe() -> Result<usize, String> {
    match sideway::ibverbs::device::DeviceList::new() {
        Ok(l) if !l.is_empty() => Ok(l.len()),
        Ok(_) => Err("no RDMA devices (load rdma_rxe or an HCA driver; see deploy/rdma.md)".into()),
        Err(e) => Err(format!("cannot list RDMA devices: {e} (is libibverbs1 installed?)")),
    }
}

fn last_err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
        sin_zero: [0; 8],
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own (its channel is alive); no memory is passed.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl < 0 {
        return Err(last_err("F_GETFL"));
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
        return Err(last_err("F_SETFL"));
    }
    Ok(())
}

/// A borrowed fd for tokio's reactor; the owner deregisters before closing.
struct FdRef(RawFd);

impl AsRawFd for FdRef {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

fn register_fd(fd: RawFd) -> io::Result<AsyncFd<FdRef>> {
    set_nonblocking(fd)?;
    // SAFETY: the fd belongs to a channel owned by the caller, which drops
    // this AsyncFd (deregistering it) before it destroys the channel.
    unsafe { AsyncFd::register(FdRef(fd)) }.map_err(|e| io::Error::other(e.to_string()))
}

// ------------------------------------------------------------------ rdma_cm

/// An rdma_cm event channel with its fd on tokio's reactor.
pub(super) struct EventChannel {
    ch: NonNull<sys::rdma_event_channel>,
    afd: Option<AsyncFd<FdRef>>,
}

// SAFETY: librdmacm's channel calls are thread-safe; the pointer is only
// used through &self methods that call into librdmacm.
unsafe impl Send for EventChannel {}
// SAFETY: as above.
unsafe impl Sync for EventChannel {}

impl Drop for EventChannel {
    fn drop(&mut self) {
        self.afd.take();
        // SAFETY: every CmId holds an Arc to its channel, so none is left.
        unsafe { sys::rdma_destroy_event_channel(self.ch.as_ptr()) };
    }
}

/// What happened on a cm id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CmEventKind {
    AddrResolved,
    AddrError,
    RouteResolved,
    RouteError,
    ConnectRequest,
    ConnectResponse,
    ConnectError,
    Unreachable,
    Rejected,
    Established,
    Disconnected,
    DeviceRemoval,
    TimewaitExit,
    Other(u32),
}

impl CmEventKind {
    fn from_raw(t: u32) -> CmEventKind {
        use sys::rdma_cm_event_type as t_;
        match t {
            t_::RDMA_CM_EVENT_ADDR_RESOLVED => CmEventKind::AddrResolved,
            t_::RDMA_CM_EVENT_ADDR_ERROR => CmEventKind::AddrError,
            t_::RDMA_CM_EVENT_ROUTE_RESOLVED => CmEventKind::RouteResolved,
            t_::RDMA_CM_EVENT_ROUTE_ERROR => CmEventKind::RouteError,
            t_::RDMA_CM_EVENT_CONNECT_REQUEST => CmEventKind::ConnectRequest,
            t_::RDMA_CM_EVENT_CONNECT_RESPONSE => CmEventKind::ConnectResponse,
            t_::RDMA_CM_EVENT_CONNECT_ERROR => CmEventKind::ConnectError,
            t_::RDMA_CM_EVENT_UNREACHABLE => CmEventKind::Unreachable,
            t_::RDMA_CM_EVENT_REJECTED => CmEventKind::Rejected,
            t_::RDMA_CM_EVENT_ESTABLISHED => CmEventKind::Established,
            t_::RDMA_CM_EVENT_DISCONNECTED => CmEventKind::Disconnected,
            t_::RDMA_CM_EVENT_DEVICE_REMOVAL => CmEventKind::DeviceRemoval,
            t_::RDMA_CM_EVENT_TIMEWAIT_EXIT => CmEventKind::TimewaitExit,
            other => CmEventKind::Other(other),
        }
    }
}

/// A cm event, copied out and acknowledged.
pub(super) struct CmEvent {
    pub kind: CmEventKind,
    pub status: i32,
    /// The connection's private data (request, accept or reject).
    pub private: Vec<u8>,
    /// For a connect request: the new id, owned from here on.
    pub new_id: Option<CmId>,
}

impl std::fmt::Debug for CmEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}(status {})", self.kind, self.status)
    }
}

impl EventChannel {
    /// A new nonblocking channel registered with the current tokio runtime.
    pub fn new() -> io::Result<Arc<EventChannel>> {
        // SAFETY: plain constructor; a null return is checked.
        let ch = unsafe { sys::rdma_create_event_channel() };
        let ch = NonNull::new(ch).ok_or_else(|| last_err("rdma_create_event_channel"))?;
        let mut me = EventChannel { ch, afd: None };
        // SAFETY: `ch` is a live channel.
        let fd = unsafe { me.ch.as_ref().fd };
        me.afd = Some(register_fd(fd)?);
        Ok(Arc::new(me))
    }

    /// The next event, waiting for one without blocking a thread.
    pub async fn next(self: &Arc<Self>) -> io::Result<CmEvent> {
        loop {
            if let Some(e) = self.try_next()? {
                return Ok(e);
            }
            let Some(afd) = self.afd.as_ref() else { return Err(io::Error::other("channel closed")) };
            let mut g = afd.readable().await?;
            g.clear_ready();
        }
    }

    fn try_next(self: &Arc<Self>) -> io::Result<Option<CmEvent>> {
        let mut ev: *mut sys::rdma_cm_event = null_mut();
        // SAFETY: live channel; `ev` receives a pointer owned by librdmacm until acked.
        let r = unsafe { sys::rdma_get_cm_event(self.ch.as_ptr(), &mut ev) };
        if r != 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock { Ok(None) } else { Err(e) };
        }
        // SAFETY: success returned a valid event, which we read and then ack
        // exactly once; private data is copied before the ack frees it.
        unsafe {
            let kind = CmEventKind::from_raw((*ev).event);
            let status = (*ev).status;
            let conn = (*ev).param.conn;
            let private = if conn.private_data.is_null() || conn.private_data_len == 0 {
                Vec::new()
            } else {
                std::slice::from_raw_parts(conn.private_data as *const u8, usize::from(conn.private_data_len)).to_vec()
            };
            let new_id = if kind == CmEventKind::ConnectRequest {
                NonNull::new((*ev).id).map(|id| CmId { id, ch: Arc::clone(self), has_qp: false })
            } else {
                None
            };
            sys::rdma_ack_cm_event(ev);
            Ok(Some(CmEvent { kind, status, private, new_id }))
        }
    }
}

/// An rdma_cm id (a "socket" for RDMA connections), owned.
pub(super) struct CmId {
    id: NonNull<sys::rdma_cm_id>,
    ch: Arc<EventChannel>,
    has_qp: bool,
}

// SAFETY: librdmacm calls on an id are thread-safe; we never share the raw
// struct's fields mutably.
unsafe impl Send for CmId {}
// SAFETY: as above.
unsafe impl Sync for CmId {}

impl Drop for CmId {
    fn drop(&mut self) {
        // SAFETY: the id is live; its QP (if any) goes first; all its events
        // were acknowledged when read, so destroy does not block forever.
        unsafe {
            if self.has_qp {
                sys::rdma_destroy_qp(self.id.as_ptr());
            }
            sys::rdma_destroy_id(self.id.as_ptr());
        }
    }
}

fn check(r: i32, what: &str) -> io::Result<()> {
    if r == 0 { Ok(()) } else { Err(last_err(what)) }
}

impl CmId {
    /// A new id (RC, port space TCP) on `ch`.
    pub fn new(ch: &Arc<EventChannel>) -> io::Result<CmId> {
        let mut id: *mut sys::rdma_cm_id = null_mut();
        // SAFETY: live channel; `id` receives the new id.
        let r = unsafe { sys::rdma_create_id(ch.ch.as_ptr(), &mut id, null_mut(), sys::rdma_port_space::RDMA_PS_TCP) };
        check(r, "rdma_create_id")?;
        let id = NonNull::new(id).ok_or_else(|| io::Error::other("rdma_create_id returned null"))?;
        Ok(CmId { id, ch: Arc::clone(ch), has_qp: false })
    }

    /// Binds to a local address (and through it, a device).
    pub fn bind(&self, addr: SocketAddrV4) -> io::Result<()> {
        let mut sa = sockaddr_in(addr);
        // SAFETY: `sa` is a valid sockaddr_in for the call's duration.
        let r = unsafe { sys::rdma_bind_addr(self.id.as_ptr(), (&mut sa as *mut libc::sockaddr_in).cast()) };
        check(r, &format!("rdma_bind_addr {addr}"))
    }

    /// Starts listening.
    pub fn listen(&self, backlog: i32) -> io::Result<()> {
        // SAFETY: live id.
        check(unsafe { sys::rdma_listen(self.id.as_ptr(), backlog) }, "rdma_listen")
    }

    /// Resolves `dst` from `src`; completes with AddrResolved or AddrError.
    pub fn resolve_addr(&self, src: SocketAddrV4, dst: SocketAddrV4, timeout_ms: i32) -> io::Result<()> {
        let (mut s, mut d) = (sockaddr_in(src), sockaddr_in(dst));
        // SAFETY: both sockaddrs are valid for the call's duration.
        let r = unsafe {
            sys::rdma_resolve_addr(
                self.id.as_ptr(),
                (&mut s as *mut libc::sockaddr_in).cast(),
                (&mut d as *mut libc::sockaddr_in).cast(),
                timeout_ms,
            )
        };
        check(r, &format!("rdma_resolve_addr {dst}"))
    }

    /// Resolves the route; completes with RouteResolved or RouteError.
    pub fn resolve_route(&self, timeout_ms: i32) -> io::Result<()> {
        // SAFETY: live id.
        check(unsafe { sys::rdma_resolve_route(self.id.as_ptr(), timeout_ms) }, "rdma_resolve_route")
    }

    /// Moves the id (and its future events) to another channel.
    pub fn migrate(&mut self, ch: &Arc<EventChannel>) -> io::Result<()> {
        // SAFETY: both live; librdmacm moves pending events with the id.
        check(unsafe { sys::rdma_migrate_id(self.id.as_ptr(), ch.ch.as_ptr()) }, "rdma_migrate_id")?;
        self.ch = Arc::clone(ch);
        Ok(())
    }

    fn conn_param(private: &[u8], retry: u8, rnr: u8) -> sys::rdma_conn_param {
        sys::rdma_conn_param {
            private_data: private.as_ptr().cast(),
            private_data_len: private.len().min(255) as u8,
            responder_resources: 0,
            initiator_depth: 0,
            flow_control: 0,
            retry_count: retry.min(7),
            rnr_retry_count: rnr.min(7),
            srq: 0,
            qp_num: 0,
        }
    }

    /// Connects (after the route is resolved and a QP exists).
    pub fn connect(&self, private: &[u8], retry: u8, rnr: u8) -> io::Result<()> {
        let mut p = Self::conn_param(private, retry, rnr);
        // SAFETY: `p` and the private data it points at outlive the call (copied by librdmacm).
        check(unsafe { sys::rdma_connect(self.id.as_ptr(), &mut p) }, "rdma_connect")
    }

    /// Accepts a connect request (after a QP exists).
    pub fn accept(&self, private: &[u8], retry: u8, rnr: u8) -> io::Result<()> {
        let mut p = Self::conn_param(private, retry, rnr);
        // SAFETY: as for connect.
        check(unsafe { sys::rdma_accept(self.id.as_ptr(), &mut p) }, "rdma_accept")
    }

    /// Rejects a connect request with a reason in the private data.
    pub fn reject(&self, private: &[u8]) -> io::Result<()> {
        // SAFETY: the private data outlives the call.
        let r = unsafe { sys::rdma_reject(self.id.as_ptr(), private.as_ptr().cast(), private.len().min(255) as u8) };
        check(r, "rdma_reject")
    }

    /// Starts a disconnect (the QP moves to the error state).
    pub fn disconnect(&self) {
        // SAFETY: live id; failure (not connected) is harmless.
        unsafe { sys::rdma_disconnect(self.id.as_ptr()) };
    }

    /// The device this id is bound to, once bound or resolved.
    pub fn device(&self) -> Option<Device> {
        // SAFETY: reading a field of a live id; librdmacm keeps the context
        // open for the life of the process.
        NonNull::new(unsafe { self.id.as_ref().verbs }).map(Device)
    }

    /// The peer's IPv4 address (for a connect request).
    pub fn peer_ipv4(&self) -> Option<Ipv4Addr> {
        // SAFETY: live id; the route's address union is plain data.
        unsafe {
            let sa = sys::rdma_get_peer_addr(self.id.as_ref());
            if i32::from(sa.sa_family) != libc::AF_INET {
                return None;
            }
            let sin = &*(sa as *const libc::sockaddr).cast::<libc::sockaddr_in>();
            Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
        }
    }
}

// ------------------------------------------------------------- device, PD

/// An open device context (owned by librdmacm for the process's life).
#[derive(Clone, Copy, Debug)]
pub(super) struct Device(NonNull<sys::ibv_context>);

// SAFETY: verbs contexts are thread-safe.
unsafe impl Send for Device {}
// SAFETY: as above.
unsafe impl Sync for Device {}

/// Device limits the LND sizes its queues by.
#[derive(Clone, Copy, Debug)]
pub(super) struct Caps {
    pub max_qp_wr: u32,
    pub max_sge: u32,
    pub max_cqe: u32,
}

impl Device {
    /// Queries the device's limits.
    pub fn caps(&self) -> io::Result<Caps> {
        let mut a = std::mem::MaybeUninit::<sys::ibv_device_attr>::zeroed();
        // SAFETY: live context; `a` is written by the call.
        let r = unsafe { sys::ibv_query_device(self.0.as_ptr(), a.as_mut_ptr()) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        // SAFETY: zero-initialised and filled in by a successful query.
        let a = unsafe { a.assume_init() };
        Ok(Caps {
            max_qp_wr: a.max_qp_wr.max(1) as u32,
            max_sge: a.max_sge.max(1) as u32,
            max_cqe: a.max_cqe.max(1) as u32,
        })
    }
}

/// A protection domain.
pub(super) struct Pd {
    pd: NonNull<sys::ibv_pd>,
    dev: Device,
}

// SAFETY: PDs are used only through thread-safe verbs calls.
unsafe impl Send for Pd {}
// SAFETY: as above.
unsafe impl Sync for Pd {}

impl std::fmt::Debug for Pd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pd({:p})", self.pd)
    }
}

impl Drop for Pd {
    fn drop(&mut self) {
        // SAFETY: every MR and QP holds an Arc<Pd>, so none is left.
        unsafe { sys::ibv_dealloc_pd(self.pd.as_ptr()) };
    }
}

impl Pd {
    /// Allocates a PD on `dev`.
    pub fn new(dev: Device) -> io::Result<Arc<Pd>> {
        // SAFETY: live context.
        let pd = unsafe { sys::ibv_alloc_pd(dev.0.as_ptr()) };
        Ok(Arc::new(Pd { pd: NonNull::new(pd).ok_or_else(|| last_err("ibv_alloc_pd"))?, dev }))
    }
}

fn access_all() -> i32 {
    use sys::ibv_access_flags as a;
    (a::IBV_ACCESS_LOCAL_WRITE | a::IBV_ACCESS_REMOTE_WRITE | a::IBV_ACCESS_REMOTE_READ).0 as i32
}

struct Mr(NonNull<sys::ibv_mr>);

// SAFETY: an MR handle is immutable after registration.
unsafe impl Send for Mr {}
// SAFETY: as above.
unsafe impl Sync for Mr {}

impl Mr {
    /// # Safety
    /// `[addr, addr+len)` must stay allocated until the MR is dropped.
    unsafe fn register(pd: &Pd, addr: usize, len: usize) -> io::Result<Mr> {
        // SAFETY: the caller guarantees the range outlives the MR.
        let mr = unsafe { sys::ibv_reg_mr(pd.pd.as_ptr(), addr as *mut libc::c_void, len, access_all()) };
        NonNull::new(mr).map(Mr).ok_or_else(|| last_err(&format!("ibv_reg_mr {len} bytes")))
    }
    fn lkey(&self) -> u32 {
        // SAFETY: live MR; plain field read.
        unsafe { self.0.as_ref().lkey }
    }
    fn rkey(&self) -> u32 {
        // SAFETY: live MR; plain field read.
        unsafe { self.0.as_ref().rkey }
    }
}

impl Drop for Mr {
    fn drop(&mut self) {
        // SAFETY: live MR, deregistered once.
        unsafe { sys::ibv_dereg_mr(self.0.as_ptr()) };
    }
}

/// An owned, registered heap buffer (message buffers and bounce buffers).
pub(super) struct RegBuf {
    // Field order: the MR is deregistered before the memory is freed.
    mr: Mr,
    buf: Box<[u8]>,
    _pd: Arc<Pd>,
}

impl std::fmt::Debug for RegBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegBuf({} bytes @{:p})", self.buf.len(), self.buf.as_ptr())
    }
}

impl RegBuf {
    /// A zeroed buffer of `len` bytes registered with `pd`.
    pub fn new(pd: &Arc<Pd>, len: usize) -> io::Result<RegBuf> {
        let buf = vec![0u8; len.max(1)].into_boxed_slice();
        // SAFETY: the box is kept in the same struct and dropped after the MR.
        let mr = unsafe { Mr::register(pd, buf.as_ptr() as usize, buf.len())? };
        Ok(RegBuf { mr, buf, _pd: Arc::clone(pd) })
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf
    }
    pub fn addr(&self) -> u64 {
        self.buf.as_ptr() as u64
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn lkey(&self) -> u32 {
        self.mr.lkey()
    }
    pub fn rkey(&self) -> u32 {
        self.mr.rkey()
    }
    fn covers(&self, addr: u64, len: u64) -> bool {
        addr >= self.addr() && addr.saturating_add(len) <= self.addr() + self.buf.len() as u64
    }
}

/// One page-pool slab registered once with the PD.
pub(super) struct SlabMr {
    mr: Mr,
    region: MemRegion,
    _pool: PagePool,
    _pd: Arc<Pd>,
}

impl SlabMr {
    /// Registers `region`, which must be one of `pool`'s slabs (checked).
    pub fn register(pd: &Arc<Pd>, pool: &PagePool, region: MemRegion) -> io::Result<SlabMr> {
        if !pool.regions().contains(&region) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "region is not a slab of this pool"));
        }
        // SAFETY: slabs are never freed while their pool lives (pools only
        // grow), and we keep a handle on the pool for the MR's life.
        let mr = unsafe { Mr::register(pd, region.addr, region.len)? };
        Ok(SlabMr { mr, region, _pool: pool.clone(), _pd: Arc::clone(pd) })
    }
    pub fn region(&self) -> MemRegion {
        self.region
    }
    pub fn lkey(&self) -> u32 {
        self.mr.lkey()
    }
    pub fn rkey(&self) -> u32 {
        self.mr.rkey()
    }
    pub fn contains(&self, addr: usize, len: usize) -> bool {
        addr >= self.region.addr && addr.saturating_add(len) <= self.region.addr + self.region.len
    }
}

// ------------------------------------------------------------------ holds

/// Memory a work request (or the peer, through an rkey) may touch; kept
/// alive by the endpoint until the hardware is done with it.
#[derive(Debug)]
pub(super) enum Hold {
    /// A message buffer (SEND or RECV).
    Buf(RegBuf),
    /// A message buffer plus the payload an RDMA chain reads from.
    Chain(RegBuf, Payload),
    /// A sink exposed to the peer's RDMA WRITEs.
    Sink(Payload),
}

/// Payload memory: an MD's pages (zero copy) or a registered bounce buffer.
#[derive(Debug)]
pub(super) enum Payload {
    Md(MdSlice),
    Bounce(RegBuf),
}

impl Payload {
    /// The sorted addresses of an MD's pages (looked up once per post,
    /// not once per sge: a scattered 1 MiB payload has 256 sges).
    fn page_addrs(&self) -> Vec<u64> {
        let Payload::Md(s) = self else { return Vec::new() };
        let g = s.md.lock();
        let MdBuffer::Pages { pages, .. } = &*g else { return Vec::new() };
        let mut v: Vec<u64> = pages.iter().map(|p| p.addr() as u64).collect();
        v.sort_unstable();
        v
    }

    fn covers(&self, pages: &[u64], addr: u64, len: u64) -> bool {
        match self {
            Payload::Bounce(b) => b.covers(addr, len),
            Payload::Md(_) => {
                // Every page the range touches must be one of the MD's pages.
                let ps = crate::mem::PAGE_SIZE as u64;
                let end = addr.saturating_add(len);
                let mut pos = addr - addr % ps;
                while pos < end {
                    if pages.binary_search(&pos).is_err() {
                        return false;
                    }
                    pos += ps;
                }
                true
            }
        }
    }
}

impl Hold {
    /// The first sge of `chain` outside the memory this hold keeps alive.
    fn uncovered(&self, chain: &[SendWr]) -> Option<Sge> {
        let pages = match self {
            Hold::Chain(_, p) | Hold::Sink(p) => p.page_addrs(),
            Hold::Buf(_) => Vec::new(),
        };
        let covers = |addr: u64, len: u64| match self {
            Hold::Buf(b) => b.covers(addr, len),
            Hold::Chain(b, p) => b.covers(addr, len) || p.covers(&pages, addr, len),
            Hold::Sink(p) => p.covers(&pages, addr, len),
        };
        chain.iter().flat_map(|w| w.sges.iter()).find(|s| !covers(s.addr, u64::from(s.len))).copied()
    }
}

// -------------------------------------------------------------- endpoint

/// One scatter/gather element.
#[derive(Clone, Copy, Debug)]
pub(super) struct Sge {
    pub addr: u64,
    pub len: u32,
    pub lkey: u32,
}

/// What a send work request does.
#[derive(Clone, Copy, Debug)]
pub(super) enum SendOp {
    Send,
    Write { remote_addr: u64, rkey: u32 },
}

/// A send work request; in a chain only the last is signaled.
#[derive(Clone, Debug)]
pub(super) struct SendWr {
    pub op: SendOp,
    pub sges: Vec<Sge>,
}

/// A work completion, with the memory it releases.
#[derive(Debug)]
pub(super) struct Completion {
    pub wr_id: u64,
    pub ok: bool,
    pub status: String,
    pub is_recv: bool,
    pub byte_len: u32,
    pub hold: Option<Hold>,
}

/// A connected queue pair: its cm id, CQ with completion channel, and
/// the tables that own posted and exposed memory.
pub(super) struct Endpoint {
    cq_fd: Option<AsyncFd<FdRef>>,
    id: CmId,
    cq: NonNull<sys::ibv_cq>,
    cc: NonNull<sys::ibv_comp_channel>,
    qp: NonNull<sys::ibv_qp>,
    inflight: HashMap<u64, Hold>,
    exposed: HashMap<u64, Hold>,
    killed: bool,
    unacked: u32,
    _pd: Arc<Pd>,
}

// SAFETY: the raw handles are used only through &mut self (one task owns
// an endpoint) and verbs calls, which are thread-safe.
unsafe impl Send for Endpoint {}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Endpoint(inflight {}, exposed {})", self.inflight.len(), self.exposed.len())
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.cq_fd.take();
        // SAFETY: teardown in dependency order: the QP (through the id) goes
        // first, so the NIC no longer touches any held memory; then the CQ,
        // then its channel. The tables are dropped after this function.
        unsafe {
            if self.id.has_qp {
                sys::rdma_destroy_qp(self.id.id.as_ptr());
                self.id.has_qp = false;
            }
            if self.unacked > 0 {
                sys::ibv_ack_cq_events(self.cq.as_ptr(), self.unacked);
            }
            sys::ibv_destroy_cq(self.cq.as_ptr());
            sys::ibv_destroy_comp_channel(self.cc.as_ptr());
        }
        self.inflight.clear();
        self.exposed.clear();
    }
}

impl Endpoint {
    /// Creates the CQ (with a completion channel on tokio) and an RC QP on `id`.
    pub fn new(id: CmId, pd: &Arc<Pd>, send_wr: u32, recv_wr: u32, send_sge: u32) -> io::Result<Endpoint> {
        let ctx = pd.dev.0.as_ptr();
        // SAFETY: live context.
        let cc = NonNull::new(unsafe { sys::ibv_create_comp_channel(ctx) })
            .ok_or_else(|| last_err("ibv_create_comp_channel"))?;
        let cqe = (send_wr + recv_wr) as i32;
        // SAFETY: live context and channel.
        let cq = match NonNull::new(unsafe { sys::ibv_create_cq(ctx, cqe, null_mut(), cc.as_ptr(), 0) }) {
            Some(cq) => cq,
            None => {
                let e = last_err("ibv_create_cq");
                // SAFETY: the channel has no CQ yet.
                unsafe { sys::ibv_destroy_comp_channel(cc.as_ptr()) };
                return Err(e);
            }
        };
        let mut ep = Endpoint {
            cq_fd: None,
            id,
            cq,
            cc,
            qp: NonNull::dangling(),
            inflight: HashMap::new(),
            exposed: HashMap::new(),
            killed: false,
            unacked: 0,
            _pd: Arc::clone(pd),
        };
        // SAFETY: the channel is live and owned by `ep` (fd deregistered first in Drop).
        let fd = unsafe { ep.cc.as_ref().fd };
        ep.cq_fd = Some(register_fd(fd)?);
        let mut attr = sys::ibv_qp_init_attr {
            qp_context: null_mut(),
            send_cq: cq.as_ptr(),
            recv_cq: cq.as_ptr(),
            srq: null_mut(),
            cap: sys::ibv_qp_cap {
                max_send_wr: send_wr,
                max_recv_wr: recv_wr,
                max_send_sge: send_sge,
                max_recv_sge: 1,
                max_inline_data: 0,
            },
            qp_type: sys::ibv_qp_type::IBV_QPT_RC,
            sq_sig_all: 0,
        };
        // SAFETY: live id, PD and CQ; attr valid for the call.
        check(unsafe { sys::rdma_create_qp(ep.id.id.as_ptr(), pd.pd.as_ptr(), &mut attr) }, "rdma_create_qp")?;
        ep.id.has_qp = true;
        // SAFETY: rdma_create_qp succeeded, so id->qp is set.
        ep.qp = NonNull::new(unsafe { ep.id.id.as_ref().qp }).ok_or_else(|| io::Error::other("no QP after create"))?;
        ep.arm()?;
        Ok(ep)
    }

    /// The cm id.
    pub fn id(&self) -> &CmId {
        &self.id
    }

    fn arm(&mut self) -> io::Result<()> {
        // SAFETY: live CQ.
        let r = unsafe { sys::ibv_req_notify_cq(self.cq.as_ptr(), 0) };
        if r != 0 { Err(io::Error::from_raw_os_error(r)) } else { Ok(()) }
    }

    /// Waits until the completion channel fires, consumes its events and
    /// re-arms the CQ; then call [`Endpoint::poll`] until it returns 0.
    pub async fn wait(&mut self) -> io::Result<()> {
        let Some(afd) = self.cq_fd.as_ref() else { return Err(io::Error::other("endpoint closed")) };
        let mut g = afd.readable().await?;
        g.clear_ready();
        loop {
            let mut cq: *mut sys::ibv_cq = null_mut();
            let mut ctx: *mut libc::c_void = null_mut();
            // SAFETY: live, nonblocking channel; outputs are plain pointers.
            let r = unsafe { sys::ibv_get_cq_event(self.cc.as_ptr(), &mut cq, &mut ctx) };
            if r != 0 {
                break;
            }
            self.unacked += 1;
        }
        if self.unacked > 0 {
            // SAFETY: acknowledges exactly the events we got for our CQ.
            unsafe { sys::ibv_ack_cq_events(self.cq.as_ptr(), self.unacked) };
            self.unacked = 0;
        }
        self.arm()
    }

    /// Polls up to 32 completions into `out`; returns how many.
    pub fn poll(&mut self, out: &mut Vec<Completion>) -> io::Result<usize> {
        let mut wc = [std::mem::MaybeUninit::<sys::ibv_wc>::zeroed(); 32];
        // SAFETY: live CQ; room for 32 entries.
        let n = unsafe { sys::ibv_poll_cq(self.cq.as_ptr(), 32, wc.as_mut_ptr().cast()) };
        if n < 0 {
            return Err(io::Error::other(format!("ibv_poll_cq failed ({n})")));
        }
        for w in &wc[..n as usize] {
            // SAFETY: the first n entries were written by poll_cq.
            let w = unsafe { w.assume_init() };
            let ok = w.status == sys::ibv_wc_status::IBV_WC_SUCCESS;
            let status = if ok {
                String::new()
            } else {
                // SAFETY: returns a static C string for any status value.
                let s = unsafe { std::ffi::CStr::from_ptr(sys::ibv_wc_status_str(w.status)) };
                format!("{} (status {}, vendor error {:#x})", s.to_string_lossy(), w.status, w.vendor_err)
            };
            // Only signaled WRs carry holds; unsignaled ones report errors with wr_id 0.
            let hold = if w.wr_id == 0 { None } else { self.inflight.remove(&w.wr_id) };
            out.push(Completion {
                wr_id: w.wr_id,
                ok,
                status,
                is_recv: w.opcode & sys::ibv_wc_opcode::IBV_WC_RECV != 0,
                byte_len: w.byte_len,
                hold,
            });
        }
        Ok(n as usize)
    }

    /// Posts a receive into a message buffer (moved in until completion).
    pub fn post_recv(&mut self, wr_id: u64, buf: RegBuf) -> Result<(), (io::Error, RegBuf)> {
        if self.killed || wr_id == 0 || self.inflight.contains_key(&wr_id) {
            return Err((io::Error::other("endpoint dead or wr_id reused"), buf));
        }
        let mut sge = sys::ibv_sge { addr: buf.addr(), length: buf.len() as u32, lkey: buf.lkey() };
        let mut wr = sys::ibv_recv_wr { wr_id, next: null_mut(), sg_list: &mut sge, num_sge: 1 };
        let mut bad: *mut sys::ibv_recv_wr = null_mut();
        // SAFETY: the buffer is registered and moves into the in-flight table
        // below, staying alive and untouched until its completion or QP teardown.
        let r = unsafe { sys::ibv_post_recv(self.qp.as_ptr(), &mut wr, &mut bad) };
        if r != 0 {
            return Err((io::Error::from_raw_os_error(r), buf));
        }
        self.inflight.insert(wr_id, Hold::Buf(buf));
        Ok(())
    }

    /// Posts a chain of send WRs; the last is signaled with `wr_id` and
    /// `hold` (which must cover every local sge) stays in flight until it
    /// completes. Earlier WRs are unsignaled (wr_id 0).
    pub fn post_send(&mut self, wr_id: u64, chain: &[SendWr], hold: Hold) -> Result<(), (io::Error, Option<Hold>)> {
        if self.killed || wr_id == 0 || chain.is_empty() || self.inflight.contains_key(&wr_id) {
            return Err((io::Error::other("endpoint dead, empty chain or wr_id reused"), Some(hold)));
        }
        if let Some(s) = hold.uncovered(chain) {
            return Err((io::Error::other(format!("sge {:#x}+{} outside held memory", s.addr, s.len)), Some(hold)));
        }
        let mut sges: Vec<Vec<sys::ibv_sge>> = chain
            .iter()
            .map(|w| w.sges.iter().map(|s| sys::ibv_sge { addr: s.addr, length: s.len, lkey: s.lkey }).collect())
            .collect();
        // SAFETY: ibv_send_wr is plain data (pointers and integers); zero is a valid start.
        let mut wrs: Vec<sys::ibv_send_wr> = (0..chain.len()).map(|_| unsafe { std::mem::zeroed() }).collect();
        let n = chain.len();
        for (i, w) in chain.iter().enumerate() {
            let last = i + 1 == n;
            let wr = &mut wrs[i];
            wr.wr_id = if last { wr_id } else { 0 };
            wr.sg_list = sges[i].as_mut_ptr();
            wr.num_sge = sges[i].len() as i32;
            wr.send_flags = if last { sys::ibv_send_flags::IBV_SEND_SIGNALED.0 } else { 0 };
            match w.op {
                SendOp::Send => wr.opcode = sys::ibv_wr_opcode::IBV_WR_SEND,
                SendOp::Write { remote_addr, rkey } => {
                    wr.opcode = sys::ibv_wr_opcode::IBV_WR_RDMA_WRITE;
                    wr.wr.rdma = sys::rdma_t { remote_addr, rkey };
                }
            }
        }
        for i in 0..n.saturating_sub(1) {
            let next: *mut sys::ibv_send_wr = &mut wrs[i + 1];
            wrs[i].next = next;
        }
        let mut bad: *mut sys::ibv_send_wr = null_mut();
        // SAFETY: every local sge was checked to lie in `hold`, which moves
        // into the in-flight table below until the signaled completion (RC
        // completes a chain in order) or QP teardown; the WR structs and sge
        // arrays outlive the call.
        let r = unsafe { sys::ibv_post_send(self.qp.as_ptr(), wrs.as_mut_ptr(), &mut bad) };
        if r != 0 {
            if bad != wrs.as_mut_ptr() {
                // Part of the chain was posted: the memory must stay put until
                // the QP is torn down, so keep it and report the failure.
                self.inflight.insert(wr_id, hold);
                self.kill();
                return Err((io::Error::from_raw_os_error(r), None));
            }
            return Err((io::Error::from_raw_os_error(r), Some(hold)));
        }
        self.inflight.insert(wr_id, hold);
        Ok(())
    }

    /// Lets the peer write into `hold` (a sink) until [`Endpoint::unexpose`].
    pub fn expose(&mut self, key: u64, hold: Hold) {
        self.exposed.insert(key, hold);
    }

    /// Takes back an exposed sink once the peer said it is done writing.
    pub fn unexpose(&mut self, key: u64) -> Option<Hold> {
        self.exposed.remove(&key)
    }

    /// Moves the QP to the error state: outstanding WRs flush with errors
    /// and the peer can no longer write into exposed memory.
    pub fn kill(&mut self) {
        if self.killed {
            return;
        }
        self.killed = true;
        self.id.disconnect();
        // SAFETY: ibv_qp_attr is plain data; only the state is used (mask IBV_QP_STATE).
        let mut attr: sys::ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.qp_state = sys::ibv_qp_state::IBV_QPS_ERR;
        // SAFETY: live QP; attr valid for the call.
        unsafe { sys::ibv_modify_qp(self.qp.as_ptr(), &mut attr, sys::ibv_qp_attr_mask::IBV_QP_STATE.0 as i32) };
    }

    /// After [`Endpoint::kill`]: every exposed sink (the peer can no longer write).
    pub fn take_exposed(&mut self) -> Vec<(u64, Hold)> {
        if !self.killed {
            return Vec::new();
        }
        self.exposed.drain().collect()
    }

    /// Work requests still owned by the hardware.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }
}
