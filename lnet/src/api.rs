//! The user-facing LNet instance.
//!
//! Owns start-up (the lo NI plus every configured network, in order),
//! the monitor task that expires overdue ACKs and REPLYs, the bulk page
//! pools, and the public operations (attach, bind, put, get, unlink,
//! counters). The mechanics live in [`crate::core`].

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::config::{LnetConfig, NetConfig};
use crate::core::{Counters, Inner, Ni};
use crate::error::{LnetError, Result};
use crate::lnd::{Lnd, LndCtx, LndStats};
use crate::md::{Md, MdSpec};
use crate::mem::PagePool;
use crate::nid::Nid;
use crate::peer::PeerInfo;
use crate::portal::{InsertPos, MatchSpec};

/// Where a PUT or GET goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The peer.
    pub nid: Nid,
    /// Portal index on the peer.
    pub portal: u32,
    /// Match bits.
    pub match_bits: u64,
    /// Remote offset (for MDs that manage offsets remotely).
    pub offset: u32,
}

impl Target {
    /// A target at offset 0.
    pub fn new(nid: Nid, portal: u32, match_bits: u64) -> Target {
        Target { nid, portal, match_bits, offset: 0 }
    }
}

/// Whether a PUT asks for an ACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckReq {
    /// Send an ACK event when the target has the data.
    Ack,
    /// Fire and forget (only the SEND event).
    NoAck,
}

/// Pages per slab in the default pool (1 MiB: one bulk RPC).
const POOL_SLAB_PAGES: usize = 256;
/// The default pool's ceiling (1 GiB).
const POOL_MAX_PAGES: usize = 1 << 18;

/// One LNet instance: this node's NIs, portals and MDs.
#[derive(Clone)]
pub struct Lnet {
    inner: Arc<Inner>,
    pool: PagePool,
}

impl std::fmt::Debug for Lnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lnet").field("nids", &self.nids()).finish()
    }
}

fn cookie_base() -> u64 {
    // Unique per start; not a secret, just never equal to a previous run's.
    let t =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let mix = t ^ (u64::from(std::process::id()) << 40);
    mix.wrapping_mul(0x9E37_79B9_7F4A_7C15) & !0xFFFF_FFFF
}

impl Lnet {
    /// Brings up `0@lo` and every configured network. Must run inside a
    /// tokio runtime.
    pub async fn start(cfg: LnetConfig) -> Result<Lnet> {
        cfg.validate().map_err(|e| LnetError::Invalid(e.to_string()))?;
        let inner = Arc::new(Inner::new(cfg.tunables.clone(), cookie_base()));
        let ctx = |ni| LndCtx { inner: Arc::downgrade(&inner), ni };
        let lo_addr = cfg
            .nets
            .iter()
            .find_map(|n| match n {
                NetConfig::Lo { addr } => Some(*addr),
                _ => None,
            })
            .unwrap_or(0);
        let lo = crate::lnd::lo::LoLnd::start(lo_addr, ctx(0))?;
        let mut nis = vec![Ni { nid: lo.nid(), lnd: lo as Arc<dyn Lnd> }];
        let mut tcps = Vec::new();
        // Created before the NIs so an RDMA LND can register its slabs.
        let pool = PagePool::new(0, POOL_SLAB_PAGES, POOL_MAX_PAGES);
        let mut accept_o2ib = Vec::new();
        for n in &cfg.nets {
            if let NetConfig::Tcp(tc) = n {
                let lnd = crate::lnd::tcp::TcpLnd::bind(tc.clone(), ctx(nis.len()), cfg.tunables.max_payload).await?;
                nis.push(Ni { nid: lnd.nid(), lnd: lnd.clone() as Arc<dyn Lnd> });
                tcps.push(lnd);
            }
            if let NetConfig::O2ib(oc) = n {
                let (lnd, accept) =
                    crate::lnd::start_o2ib(oc.clone(), ctx(nis.len()), cfg.tunables.max_payload, pool.clone())?;
                nis.push(Ni { nid: lnd.nid(), lnd });
                accept_o2ib.push(accept);
            }
        }
        inner.set_nis(nis);
        for t in tcps {
            t.start_accepting();
        }
        for accept in accept_o2ib {
            if let Err(e) = accept() {
                inner.shutdown();
                return Err(e);
            }
        }
        spawn_monitor(Arc::downgrade(&inner));
        tracing::info!(nids = ?inner.nis.get().map(|v| v.iter().map(|n| n.nid.to_string()).collect::<Vec<_>>()), "lnet up");
        let lnet = Lnet { inner, pool };
        crate::ping::serve(&lnet)?;
        Ok(lnet)
    }

    /// This node's primary NID: the first configured network's, else `0@lo`.
    pub fn nid(&self) -> Nid {
        let nis = self.nids();
        nis.get(1).or(nis.first()).copied().unwrap_or(Nid::LO)
    }

    /// Every local NID (the lo NI first).
    pub fn nids(&self) -> Vec<Nid> {
        self.inner.nis.get().map(|v| v.iter().map(|n| n.nid).collect()).unwrap_or_default()
    }

    /// The bulk page pool of CPU partition `cpt` (one partition for now).
    pub fn pool(&self, _cpt: u32) -> &PagePool {
        &self.pool
    }

    /// Attaches a match entry with its MD to `portal` (LNetMEAttach + LNetMDAttach).
    pub fn attach(&self, portal: u32, spec: MatchSpec, pos: InsertPos, md: MdSpec) -> Result<Md> {
        self.inner.md_bind(md, Some((portal, spec, pos)), false)
    }

    /// Attaches an MD LNet keeps for itself (left out of the counters).
    pub(crate) fn attach_internal(&self, portal: u32, spec: MatchSpec, md: MdSpec) -> Result<Md> {
        self.inner.md_bind(md, Some((portal, spec, InsertPos::Tail)), true)
    }

    /// Creates a free-floating MD to PUT from or GET into (LNetMDBind).
    pub fn bind(&self, md: MdSpec) -> Result<Md> {
        self.inner.md_bind(md, None, false)
    }

    /// Sends the whole MD to `to` (LNetPut).
    pub fn put(&self, md: &Md, to: Target, ack: AckReq, hdr_data: u64) -> Result<()> {
        self.inner.put(md, to.nid, to.portal, to.match_bits, to.offset, hdr_data, ack == AckReq::Ack)
    }

    /// Fetches up to the MD's length from `from` into the MD (LNetGet).
    pub fn get(&self, md: &Md, from: Target) -> Result<()> {
        self.inner.get(md, from.nid, from.portal, from.match_bits, from.offset)
    }

    /// Unlinks an MD: at once when idle (an UNLINK event), else when its
    /// pending operations end; responses still awaited fail with `Unlinked`.
    pub fn unlink(&self, md: &Md) -> Result<()> {
        self.inner.md_unlink(md)
    }

    /// Instance counters.
    pub fn counters(&self) -> Counters {
        self.inner.counters()
    }

    /// Waits until nothing is in flight, queued or awaited (see
    /// [`Counters::is_idle`]); woken by completions, never by polling.
    pub async fn wait_idle(&self) {
        loop {
            let n = self.inner.progress.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.counters().is_idle() {
                return;
            }
            n.await;
        }
    }

    /// `nid` is known to be up again (a target's restart notice): the
    /// LND serving its network tries to connect at once on the next send
    /// instead of waiting out a reconnect backoff.
    pub fn notify_alive(&self, nid: Nid) {
        for ni in self.inner.nis.get().into_iter().flatten().filter(|n| n.nid.net == nid.net) {
            ni.lnd.notify_alive(nid);
        }
    }

    /// Every known peer with health, credits and counters.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.inner.peers()
    }

    /// Per-NI driver statistics.
    pub fn lnd_stats(&self) -> Vec<(Nid, LndStats)> {
        self.inner.nis.get().map(|v| v.iter().map(|n| (n.nid, n.lnd.stats())).collect()).unwrap_or_default()
    }

    /// Fails what is pending and closes every NI.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }
}

fn spawn_monitor(inner: Weak<Inner>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match inner.upgrade() {
                Some(i) => i.expire(tokio::time::Instant::now()),
                None => break,
            }
        }
    });
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(nis) = self.nis.get() {
            for ni in nis {
                ni.lnd.shutdown();
            }
        }
    }
}
