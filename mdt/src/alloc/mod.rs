//! OST objects for file layouts: the MDT's table of OSTs, pools, precreated
//! id ranges and QoS allocation.
//!
//! Owns: [`Allocator`] — one entry per OST the config log added (its
//! [`OstApi`], admin state, connection state, space, the object sequence
//! this MDT creates in there, the last allocated id and the pool of
//! precreated ids in it), pools, the file-system default striping,
//! asynchronous precreation (the `mdt-precreate` thread,
//! [`Allocator::run_precreator`], refills an OST's pool when it falls below
//! half a precreate batch, so a create waits for an OST only when the pool
//! is empty; one precreate or orphan cleanup per OST at a time), and the
//! application of config records in the seed's order
//! (`seeds/000`): add (read the last allocated id back, clean up orphans
//! above it, join the global pool), activate (allow allocation, reset the
//! round-robin), deactivate (no new objects), remove (only when
//! deactivated; dropped from every pool).
//!
//! Objects a transaction takes are [`Taken`]: if the transaction is
//! dropped (a failed plan, a replay VBR refused, a failed write) the
//! caller hands them back ([`Allocator::give_back`]) and they return to
//! the front of their pool. A create replayed after an MDT restart claims
//! the objects of its original layout ([`Allocator::claim`]) instead of
//! taking new ones; orphan cleanup (objects above the last allocated id,
//! up to the OST's own last id) must therefore run only once the MDT's
//! recovery is over, at the cursors the replays left — the daemon does
//! not reach OSTs ([`Allocator::refresh`]) before that. After a cleanup,
//! an object a late (delayed) replay names above the cleaned cursor is
//! gone, and the replay gets a new one from the same OST.
//!
//! OST objects are named by sequence and id ([`OstId`], Lustre's
//! `ost_id`). Each OST gets a sequence of its own from the MDT's sequence
//! server (`crate::seq`, owner `"\0ost<index>"`), durable before its first
//! object is precreated; ids run from 1 to the configured width
//! ([`AllocConfig::ost_seq_width`], Lustre's `seq.*.width`), and when the
//! next precreate would pass it — with every object of the old sequence
//! handed out — the OST rolls over to a fresh sequence, so no (sequence,
//! id) is ever handed out twice. Cursors are kept per sequence (a late
//! stamp of the old one cannot move the new one's back); orphan cleanup
//! covers the current and the previous sequence.
//!
//! Lock order: the namespace's writer lock, then this allocator's state,
//! then the sequence server ([`Allocator::seqs`], shared with the
//! namespace, which also takes it under its writer lock for client and
//! MDT sequences). The sequence server's lock is the innermost: nothing
//! is locked while it is held (the lazy-load guard, `seqs`, is let go
//! before it is taken), and a new OST sequence ([`Allocator::new_seq`],
//! from the precreator) is taken with the state lock let go, so no two
//! threads wait on each other through these locks.
//!
//! Must not: write the store except for precreate records and sequence
//! grants: [`Allocator::allocate`] returns the OST cursors the caller
//! writes in the same batch as the layout.

pub mod ost;
pub mod qos;

#[cfg(test)]
pub mod fake;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use ptlrpc::wire::OstId;
use ptlrpc::wire::mds::{Layout, StripeObj, StripeSpec};
use ptlrpc::wire::mgs::{ConfigCmd, TargetKind};
use rand::SeedableRng;
use rand::rngs::SmallRng;

pub use ost::{OstApi, OstError, OstStatfs, RpcOst};
use qos::Candidate;

use crate::error::{MdtError, Result, errno};
use crate::seq::Sequences;
use crate::store::{Batch, Kv, Table};

/// Object ids per OST sequence by default (Lustre's
/// `LUSTRE_DATA_SEQ_MAX_WIDTH`).
pub const OST_SEQ_WIDTH: u64 = 0xFFFF_FFFF;

/// Makes the [`OstApi`] of OST `index` at `nids`.
pub type OstFactory = Arc<dyn Fn(u32, &[String]) -> Arc<dyn OstApi> + Send + Sync>;

/// Allocation settings.
#[derive(Debug, Clone)]
pub struct AllocConfig {
    /// The file system's default striping.
    pub default_stripe: StripeSpec,
    /// Free-space imbalance (percent) beyond which allocation is weighted.
    pub qos_threshold_pct: u32,
    /// Objects precreated per OST_CREATE.
    pub precreate_batch: u32,
    /// An OST with less than this percent free takes no objects.
    pub full_pct: u32,
    /// Object ids per OST sequence (Lustre's `seq.*.width`).
    pub ost_seq_width: u64,
}

impl Default for AllocConfig {
    fn default() -> AllocConfig {
        AllocConfig {
            default_stripe: StripeSpec {
                stripe_size: 1 << 20,
                stripe_count: 1,
                stripe_offset: -1,
                pool: String::new(),
            },
            qos_threshold_pct: 17,
            precreate_batch: 1024,
            full_pct: 1,
            ost_seq_width: OST_SEQ_WIDTH,
        }
    }
}

/// An OST as the allocator sees it.
struct Ost {
    api: Arc<dyn OstApi>,
    nids: Vec<String>,
    /// Activated (config log); deactivate clears it.
    admin_active: bool,
    /// Reached: orphans cleaned up and space known.
    connected: bool,
    space: OstStatfs,
    /// The sequence this MDT creates objects in on this OST (0: none yet).
    seq: u64,
    /// The one before it (0: none) and its last id handed out: orphan
    /// cleanup covers it too.
    prev: (u64, u64),
    /// Last id of `seq` handed out (durable with the layouts that use it).
    last_used: u64,
    /// The precreated ids not handed out yet, ascending ranges all above
    /// `last_used`.
    pool: VecDeque<(u64, u64)>,
    /// The highest id precreated (recorded before any is handed out, so
    /// orphan cleanup finds the unused ones after a crash).
    precreated: u64,
    /// A precreate or orphan cleanup of this OST is under way (the lock is
    /// not held during it).
    busy: bool,
    /// Bumped whenever the pool is dropped: an object taken before cannot
    /// go back into the new pool.
    generation: u64,
    /// Per sequence, the allocation cursor at this boot's orphan cleanup
    /// of it (absent: none yet): objects above it from before the boot are
    /// destroyed.
    cleaned_at: BTreeMap<u64, u64>,
}

impl Ost {
    fn pooled(&self) -> u64 {
        self.pool.iter().map(|(a, b)| b - a + 1).sum()
    }

    /// Takes the next pooled id.
    fn take(&mut self) -> Option<OstId> {
        let (a, b) = self.pool.front_mut()?;
        let id = *a;
        if *a == *b {
            self.pool.pop_front();
        } else {
            *a += 1;
        }
        Some(OstId::new(self.seq, id))
    }

    /// Forgets the pool (the OST restarted or is being cleaned up).
    fn reset_pool(&mut self) {
        self.pool.clear();
        self.generation += 1;
        self.precreated = self.precreated.max(self.last_used);
    }

    /// Puts `id` back at the front of the pool.
    fn untake(&mut self, id: u64) {
        match self.pool.front_mut() {
            Some((a, _)) if *a == id + 1 => *a = id,
            _ => self.pool.push_front((id, id)),
        }
    }
}

/// One OST object a transaction took (from a pool, or claimed by a
/// replay): handed back with [`Allocator::give_back`] if the transaction
/// is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    ost: u32,
    id: OstId,
    /// The OST's cursor (in `id.seq`) before.
    prev: u64,
    /// The pool generation it came from.
    generation: u64,
    /// From the pool (goes back there), or claimed (only the cursor moved).
    pooled: bool,
}

/// One OST's state for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OstReport {
    /// Index.
    pub index: u32,
    /// Activated.
    pub active: bool,
    /// Reached.
    pub connected: bool,
    /// Space.
    pub space: OstStatfs,
    /// The sequence objects are created in.
    pub seq: u64,
    /// Last allocated object id in it.
    pub last_used: u64,
}

struct State {
    osts: BTreeMap<u32, Ost>,
    /// OSTs the config log removed (their objects went with them); an OST
    /// neither here nor in `osts` is not added yet (the config log is
    /// still being applied after a restart).
    removed: BTreeSet<u32>,
    /// Never wait for an OST in `allocate` (the target framework calls it
    /// under the target's lock): only OSTs with pooled objects are
    /// candidates.
    nonblocking: bool,
    /// The precreator should look at the pools.
    refill_wanted: bool,
    /// The precreator should exit.
    precreator_stop: bool,
    pools: BTreeMap<String, BTreeSet<u32>>,
    rr: usize,
    rng: SmallRng,
    cfg: AllocConfig,
}

/// The OST table and allocator.
pub struct Allocator {
    kv: Arc<dyn Kv>,
    /// The sequence server, shared with the namespace (loaded on first use).
    seqs: Mutex<Option<Arc<Mutex<Sequences>>>>,
    factory: OstFactory,
    state: Mutex<State>,
    /// Notified when an OST's usability or pool may have changed.
    changed: Condvar,
    /// Wakes the precreator.
    refill: Condvar,
}

impl fmt::Debug for Allocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state.lock();
        f.debug_struct("Allocator").field("osts", &s.osts.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

/// The Osts-table key of `index`.
pub fn ost_key(index: u32) -> [u8; 4] {
    index.to_be_bytes()
}

/// The key of OST `index`'s cursor in sequence `seq`.
fn cursor_key(index: u32, seq: u64) -> Vec<u8> {
    let mut k = ost_key(index).to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The key of OST `index`'s sequences (current, previous).
fn seq_key(index: u32) -> Vec<u8> {
    let mut k = ost_key(index).to_vec();
    k.push(b's');
    k
}

fn precreated_key(index: u32, seq: u64) -> Vec<u8> {
    let mut k = ost_key(index).to_vec();
    k.push(b'p');
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn get_u64(kv: &dyn Kv, key: &[u8]) -> Result<u64> {
    Ok(kv.get(Table::Osts, key)?.and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok()).map_or(0, u64::from_be_bytes))
}

/// Adds the cursor of OST `index` (object `id` handed out) to `b`.
pub fn stamp_ost(b: &mut Batch, index: u32, id: OstId) {
    b.put(Table::Osts, cursor_key(index, id.seq), id.oid.to_be_bytes().to_vec());
}

/// The end of the last precreate range in sequence `seq` on OST `index`.
fn stored_precreated(kv: &dyn Kv, index: u32, seq: u64) -> Result<u64> {
    get_u64(kv, &precreated_key(index, seq))
}

/// The last id of sequence `seq` allocated on OST `index` as stored.
pub fn stored_last_used(kv: &dyn Kv, index: u32, seq: u64) -> Result<u64> {
    get_u64(kv, &cursor_key(index, seq))
}

/// OST `index`'s current and previous sequences as stored (0: none).
pub fn stored_seqs(kv: &dyn Kv, index: u32) -> Result<(u64, u64)> {
    Ok(kv
        .get(Table::Osts, &seq_key(index))?
        .and_then(|v| {
            let cur = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
            let prev = u64::from_be_bytes(v.get(8..16)?.try_into().ok()?);
            Some((cur, prev))
        })
        .unwrap_or((0, 0)))
}

/// The sequence server's grantee name of OST `index`'s sequences.
fn seq_owner(index: u32) -> String {
    format!("\0ost{index}")
}

impl Allocator {
    /// An allocator with no OSTs yet; they come from the config log.
    pub fn new(kv: Arc<dyn Kv>, factory: OstFactory, cfg: AllocConfig) -> Allocator {
        let state = State {
            osts: BTreeMap::new(),
            removed: BTreeSet::new(),
            nonblocking: false,
            refill_wanted: false,
            precreator_stop: false,
            pools: BTreeMap::new(),
            rr: 0,
            rng: SmallRng::seed_from_u64(0x5eed),
            cfg,
        };
        Allocator {
            kv,
            seqs: Mutex::new(None),
            factory,
            state: Mutex::new(state),
            changed: Condvar::new(),
            refill: Condvar::new(),
        }
    }

    /// The sequence server's state, shared by this allocator (OST
    /// sequences) and the namespace (client and MDT sequences): loaded
    /// from the store on first use.
    pub fn seqs(&self) -> Result<Arc<Mutex<Sequences>>> {
        let mut g = self.seqs.lock();
        if let Some(s) = &*g {
            return Ok(Arc::clone(s));
        }
        let s = Arc::new(Mutex::new(Sequences::load(&*self.kv)?));
        *g = Some(Arc::clone(&s));
        Ok(s)
    }

    /// Takes a fresh sequence for OST `index` after `old`: the grant, the
    /// OST's sequence record (new, old) and the new sequence's empty
    /// cursors are durable before it returns.
    fn new_seq(&self, index: u32, old: u64) -> Result<u64> {
        let seqs = self.seqs()?;
        let mut sq = seqs.lock();
        let p = sq.grant(&seq_owner(index), 1);
        let new = p.range.start;
        let mut b = p.batch();
        let mut v = new.to_be_bytes().to_vec();
        v.extend_from_slice(&old.to_be_bytes());
        b.put(Table::Osts, seq_key(index), v);
        b.put(Table::Osts, cursor_key(index, new), 0u64.to_be_bytes().to_vec());
        b.put(Table::Osts, precreated_key(index, new), 0u64.to_be_bytes().to_vec());
        self.kv.write(b)?;
        self.kv.persist()?;
        sq.granted(p);
        tracing::info!(
            ost = index,
            seq = format_args!("{new:#x}"),
            old = format_args!("{old:#x}"),
            "new object sequence"
        );
        Ok(new)
    }

    /// From now on `allocate` never waits for an OST: it takes only
    /// pooled objects and answers EAGAIN when every usable OST's pool is
    /// empty (callers wait beforehand with [`Allocator::wait_pools`]).
    pub fn set_nonblocking(&self) {
        self.state.lock().nonblocking = true;
    }

    /// Waits up to `bound` (outside any lock of the caller's) until every
    /// usable OST pools at least one object, asking the precreator to
    /// refill, and — when activated OSTs exist but none is reached yet
    /// (just after a restart) — until one is; returns whether that holds.
    pub fn wait_pools(&self, bound: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + bound;
        let mut s = self.state.lock();
        loop {
            let full_pct = s.cfg.full_pct;
            let empty = s.osts.values().any(|o| usable(o, full_pct) && o.pooled() == 0);
            let unreached = !s.osts.values().any(|o| usable(o, full_pct))
                && s.osts.values().any(|o| o.admin_active && !o.connected);
            if !empty && !unreached {
                return true;
            }
            s.refill_wanted = true;
            self.refill.notify_all();
            if self.changed.wait_until(&mut s, deadline).timed_out() {
                return false;
            }
        }
    }

    /// The file system's default striping.
    pub fn default_stripe(&self) -> StripeSpec {
        self.state.lock().cfg.default_stripe.clone()
    }

    /// Whether any OST was added.
    pub fn has_osts(&self) -> bool {
        !self.state.lock().osts.is_empty()
    }

    /// Every OST's state.
    pub fn report(&self) -> Vec<OstReport> {
        self.state
            .lock()
            .osts
            .iter()
            .map(|(&index, o)| OstReport {
                index,
                active: o.admin_active,
                connected: o.connected,
                space: o.space,
                seq: o.seq,
                last_used: o.last_used,
            })
            .collect()
    }

    /// OSTs that take objects now.
    pub fn usable(&self) -> usize {
        let s = self.state.lock();
        s.osts.values().filter(|o| usable(o, s.cfg.full_pct)).count()
    }

    /// Waits up to `bound` until exactly `n` OSTs take objects; returns how
    /// many do.
    pub fn wait_usable(&self, n: usize, bound: std::time::Duration) -> usize {
        let deadline = std::time::Instant::now() + bound;
        let mut s = self.state.lock();
        loop {
            let now = s.osts.values().filter(|o| usable(o, s.cfg.full_pct)).count();
            if now == n || self.changed.wait_until(&mut s, deadline).timed_out() {
                return s.osts.values().filter(|o| usable(o, s.cfg.full_pct)).count();
            }
        }
    }

    /// Pools and members.
    pub fn pools(&self) -> BTreeMap<String, BTreeSet<u32>> {
        self.state.lock().pools.clone()
    }

    /// Applies one config record. Refusals (remove of an active OST) are
    /// logged and ignored, as the seed says followers check. Never calls
    /// an OST: added or restarted OSTs are reached by the next
    /// [`Allocator::refresh`] (the daemon's housekeeping thread), so a dead
    /// OST cannot stall the config log.
    pub fn apply(&self, cmd: &ConfigCmd) -> Result<()> {
        match cmd {
            ConfigCmd::AddTarget { kind: TargetKind::Ost, index, nids, .. } => {
                let (seq, prev_seq) = stored_seqs(&*self.kv, *index)?;
                let last_used = if seq == 0 { 0 } else { stored_last_used(&*self.kv, *index, seq)? };
                let prev_last = if prev_seq == 0 { 0 } else { stored_last_used(&*self.kv, *index, prev_seq)? };
                let api = (self.factory)(*index, nids);
                let mut s = self.state.lock();
                s.removed.remove(index);
                s.osts.entry(*index).or_insert(Ost {
                    api,
                    nids: nids.clone(),
                    admin_active: true,
                    connected: false,
                    space: OstStatfs::default(),
                    seq,
                    prev: (prev_seq, prev_last),
                    last_used,
                    pool: VecDeque::new(),
                    precreated: last_used,
                    busy: false,
                    generation: 0,
                    cleaned_at: BTreeMap::new(),
                });
            }
            ConfigCmd::TargetRestart { kind: TargetKind::Ost, index, nids, .. } => {
                // The import to the OST reconnects at once and replays what
                // it holds; only an OST that moved gets a new one.
                let api = self.state.lock().osts.get(index).map(|o| Arc::clone(&o.api));
                let Some(api) = api else { return Ok(()) };
                let api = if api.restarted(nids) { api } else { (self.factory)(*index, nids) };
                let mut s = self.state.lock();
                let Some(o) = s.osts.get_mut(index) else { return Ok(()) };
                o.api = api;
                o.nids = nids.clone();
                o.connected = false;
                o.reset_pool();
            }
            ConfigCmd::Activate { kind: TargetKind::Ost, index } => {
                let mut s = self.state.lock();
                if let Some(o) = s.osts.get_mut(index) {
                    o.admin_active = true;
                }
                s.rr = 0;
            }
            ConfigCmd::Deactivate { kind: TargetKind::Ost, index } => {
                if let Some(o) = self.state.lock().osts.get_mut(index) {
                    o.admin_active = false;
                }
            }
            ConfigCmd::Remove { kind: TargetKind::Ost, index } => {
                let mut s = self.state.lock();
                match s.osts.get(index) {
                    Some(o) if o.admin_active => {
                        tracing::warn!(ost = index, "remove of an active OST ignored: deactivate it first");
                    }
                    Some(_) => {
                        s.osts.remove(index);
                        s.removed.insert(*index);
                        for p in s.pools.values_mut() {
                            p.remove(index);
                        }
                    }
                    None => {}
                }
            }
            ConfigCmd::PoolNew { pool } => {
                self.state.lock().pools.entry(pool.clone()).or_default();
            }
            ConfigCmd::PoolAdd { pool, ost } => {
                self.state.lock().pools.entry(pool.clone()).or_default().insert(*ost);
            }
            ConfigCmd::PoolRemove { pool, ost } => {
                if let Some(p) = self.state.lock().pools.get_mut(pool) {
                    p.remove(ost);
                }
            }
            ConfigCmd::PoolDestroy { pool } => {
                self.state.lock().pools.remove(pool);
            }
            ConfigCmd::SetParam { key, value } => self.set_param(key, value),
            _ => {}
        }
        self.changed.notify_all();
        Ok(())
    }

    fn set_param(&self, key: &str, value: &str) {
        let mut s = self.state.lock();
        let n = value.parse::<u32>();
        match (key, n) {
            ("lov.qos_threshold_rr", Ok(v)) => s.cfg.qos_threshold_pct = v.min(100),
            ("lov.stripesize", Ok(v)) if v > 0 => s.cfg.default_stripe.stripe_size = v,
            ("lov.stripecount", Ok(v)) => s.cfg.default_stripe.stripe_count = v,
            _ => tracing::info!(key, value, "parameter not used by the MDT allocator"),
        }
    }

    /// Reaches OST `index`: destroys the objects this MDT precreated there
    /// but never used (orphan cleanup: ids above the last allocated one,
    /// up to the recorded end of the last precreate range) and reads its
    /// space. Network calls run without the lock.
    pub fn connect(&self, index: u32) {
        let api = {
            let mut s = self.state.lock();
            loop {
                match s.osts.get_mut(&index) {
                    None => return,
                    Some(o) if o.busy => {
                        // A precreate is in flight: its range must be
                        // recorded before the cleanup reads the record.
                        self.changed.wait_for(&mut s, std::time::Duration::from_secs(1));
                    }
                    Some(o) => {
                        o.busy = true;
                        o.reset_pool();
                        break Arc::clone(&o.api);
                    }
                }
            }
        };
        let cursors = self.state.lock().osts.get(&index).map(|o| [o.prev, (o.seq, o.last_used)]).unwrap_or_default();
        let res = self.cleanup_orphans(index, &*api, cursors).and_then(|()| {
            api.statfs().map_err(|e| MdtError::Ost { ost: index, why: e.to_string(), errno: e.errno() })
        });
        let mut s = self.state.lock();
        if let Some(o) = s.osts.get_mut(&index) {
            o.busy = false;
            match res {
                Ok(space) => {
                    o.connected = true;
                    o.space = space;
                    o.reset_pool();
                }
                Err(e) => {
                    o.connected = false;
                    tracing::warn!(ost = index, error = %e, "OST not reachable");
                }
            }
        }
        s.refill_wanted = true;
        self.refill.notify_all();
        self.changed.notify_all();
    }

    /// Destroys the unused objects of the previous and the current
    /// sequence (`cursors`: each with its last id handed out).
    fn cleanup_orphans(&self, index: u32, api: &dyn OstApi, cursors: [(u64, u64); 2]) -> Result<()> {
        let ost_err = |e: OstError| MdtError::Ost { ost: index, why: e.to_string(), errno: e.errno() };
        for (seq, last_used) in cursors {
            if seq == 0 {
                continue;
            }
            // The OST's own last id covers precreates whose record a crash
            // lost (records are written, not persisted, before use).
            let ost_last = api.last_id(seq).map_err(ost_err)?;
            let precreated = stored_precreated(&*self.kv, index, seq)?.max(ost_last);
            for oid in last_used + 1..=precreated {
                api.destroy(OstId::new(seq, oid)).map_err(ost_err)?;
            }
            if precreated > last_used {
                tracing::info!(
                    ost = index,
                    seq = format_args!("{seq:#x}"),
                    destroyed = precreated - last_used,
                    "orphan objects cleaned up"
                );
                let mut b = Batch::new();
                b.put(Table::Osts, precreated_key(index, seq), last_used.to_be_bytes().to_vec());
                self.kv.write(b)?;
            }
            if let Some(o) = self.state.lock().osts.get_mut(&index) {
                if o.seq == seq {
                    // Ids up to the OST's last one are spent (the orphans
                    // just destroyed): the next precreate comes after them.
                    o.precreated = precreated.max(last_used);
                }
                let c = o.cleaned_at.entry(seq).or_insert(last_used);
                *c = (*c).max(last_used);
            }
        }
        Ok(())
    }

    /// Refreshes every OST's space (reconnecting those not reached).
    pub fn refresh(&self) {
        let all: Vec<(u32, bool, Arc<dyn OstApi>)> =
            self.state.lock().osts.iter().map(|(&i, o)| (i, o.connected, Arc::clone(&o.api))).collect();
        // One thread per OST: an OST that does not answer costs the round
        // (and a stopping daemon) one request timeout, not one per silent
        // OST, and never holds up another OST's reconnection (its orphan
        // cleanup, then its precreates: after an MDT restart every create
        // waits for pools that only that fills).
        std::thread::scope(|scope| {
            for (index, connected, api) in all {
                if !connected {
                    scope.spawn(move || self.connect(index));
                    continue;
                }
                scope.spawn(move || {
                    let res = api.statfs();
                    if let Some(o) = self.state.lock().osts.get_mut(&index) {
                        match res {
                            Ok(space) => o.space = space,
                            Err(e) => {
                                o.connected = false;
                                tracing::warn!(ost = index, error = %e, "OST lost");
                            }
                        }
                    }
                });
            }
        });
    }

    /// Space over all OSTs (KiB total, free) and how many take objects.
    pub fn space(&self) -> (u64, u64, u32) {
        let s = self.state.lock();
        let usable = s.osts.values().filter(|o| usable(o, s.cfg.full_pct)).count() as u32;
        let total = s.osts.values().map(|o| o.space.kbytes).sum();
        let free = s.osts.values().map(|o| o.space.kbytes_free).sum();
        (total, free, usable)
    }

    /// The striping `req` asks for, inheriting unset fields from the
    /// directory default `dir` and then the file-system default.
    pub fn resolve(&self, req: Option<&StripeSpec>, dir: Option<&StripeSpec>) -> StripeSpec {
        let fs = self.default_stripe();
        let pick = |f: &dyn Fn(&StripeSpec) -> Option<StripeSpec>| -> Option<StripeSpec> {
            req.and_then(f).or_else(|| dir.and_then(f))
        };
        StripeSpec {
            stripe_size: pick(&|s| (s.stripe_size != 0).then(|| s.clone())).map_or(fs.stripe_size, |s| s.stripe_size),
            stripe_count: pick(&|s| (s.stripe_count != 0).then(|| s.clone()))
                .map_or(fs.stripe_count, |s| s.stripe_count),
            stripe_offset: pick(&|s| (s.stripe_offset >= 0).then(|| s.clone()))
                .map_or(fs.stripe_offset, |s| s.stripe_offset),
            pool: pick(&|s| (!s.pool.is_empty()).then(|| s.clone())).map_or(fs.pool, |s| s.pool),
        }
    }

    /// Objects for a new file striped per `spec`; adds the OST cursors to
    /// `b` and what it took to `taken`. `Ok(None)` when no OST was ever
    /// added (a file without objects).
    pub fn allocate(&self, spec: &StripeSpec, b: &mut Batch, taken: &mut Vec<Taken>) -> Result<Option<Layout>> {
        let mut s = self.state.lock();
        if s.osts.is_empty() {
            return Ok(None);
        }
        let pool = if spec.pool.is_empty() {
            None
        } else {
            Some(
                s.pools
                    .get(&spec.pool)
                    .cloned()
                    .ok_or_else(|| MdtError::posix(errno::EINVAL, format!("no pool {}", spec.pool)))?,
            )
        };
        let (full_pct, nonblocking) = (s.cfg.full_pct, s.nonblocking);
        let in_pool = |i: &u32, o: &Ost| usable(o, full_pct) && pool.as_ref().is_none_or(|p| p.contains(i));
        let cands: Vec<Candidate> = s
            .osts
            .iter()
            .filter(|(i, o)| in_pool(i, o) && (!nonblocking || o.pooled() > 0))
            .map(|(&ost, o)| Candidate { ost, free: o.space.kbytes_free })
            .collect();
        if cands.is_empty() {
            if nonblocking && s.osts.iter().any(|(i, o)| in_pool(i, o)) {
                s.refill_wanted = true;
                self.refill.notify_all();
                return Err(MdtError::posix(errno::EAGAIN, "precreated objects used up; retry"));
            }
            return Err(MdtError::posix(errno::ENOSPC, "no OST can take objects"));
        }
        let count = if spec.stripe_count == u32::MAX { cands.len() } else { spec.stripe_count.max(1) as usize };
        let offset = u32::try_from(spec.stripe_offset).ok();
        let threshold = s.cfg.qos_threshold_pct;
        let batch = s.cfg.precreate_batch.max(1);
        let State { rr, rng, .. } = &mut *s;
        let chosen = qos::choose(&cands, count, offset, threshold, rr, rng);
        let mut objects = Vec::with_capacity(chosen.len());
        let low = u64::from(batch / 2);
        for ost in chosen {
            let (id, generation) = self.take_id(&mut s, ost, batch)?;
            if let Some(o) = s.osts.get_mut(&ost) {
                taken.push(Taken { ost, id, prev: o.last_used, generation, pooled: true });
                o.last_used = id.oid;
                if o.pooled() < low && !o.busy {
                    s.refill_wanted = true;
                    self.refill.notify_all();
                }
            }
            stamp_ost(b, ost, id);
            objects.push(StripeObj { ost, id });
        }
        Ok(Some(Layout { stripe_size: spec.stripe_size, pool: spec.pool.clone(), objects }))
    }

    /// A replayed create's original `layout`: its objects are claimed (the
    /// cursors move up to them, stamped in `b`) — they exist unless an
    /// orphan cleanup of this boot destroyed them (above the cleaned
    /// cursor: a replay after recovery), and those are replaced by new
    /// objects from the same OST's pool.
    pub fn claim(&self, layout: &Layout, b: &mut Batch, taken: &mut Vec<Taken>) -> Result<Layout> {
        let mut s = self.state.lock();
        let batch = s.cfg.precreate_batch.max(1);
        let mut out = layout.clone();
        for obj in &mut out.objects {
            let Some(o) = s.osts.get_mut(&obj.ost) else {
                // The OST was removed (its objects with it): keep the name.
                continue;
            };
            if o.cleaned_at.get(&obj.id.seq).is_none_or(|&c| obj.id.oid <= c) {
                if obj.id.seq == o.seq && obj.id.oid > o.last_used {
                    taken.push(Taken {
                        ost: obj.ost,
                        id: obj.id,
                        prev: o.last_used,
                        generation: o.generation,
                        pooled: false,
                    });
                    o.last_used = obj.id.oid;
                    stamp_ost(b, obj.ost, obj.id);
                } else if obj.id.seq == o.prev.0 && obj.id.oid > o.prev.1 {
                    // The previous sequence's cursor (kept per sequence).
                    o.prev.1 = obj.id.oid;
                    stamp_ost(b, obj.ost, obj.id);
                }
                continue;
            }
            let (id, generation) = self.take_id(&mut s, obj.ost, batch)?;
            if let Some(o) = s.osts.get_mut(&obj.ost) {
                taken.push(Taken { ost: obj.ost, id, prev: o.last_used, generation, pooled: true });
                o.last_used = id.oid;
            }
            stamp_ost(b, obj.ost, id);
            obj.id = id;
        }
        Ok(out)
    }

    /// A transaction that took `taken` was dropped: its objects go back to
    /// the front of their pools and the cursors back to where they were.
    /// One taken from a pool since dropped (the OST reconnected) is left
    /// to the OST (logged): the cleanup ran above it.
    pub fn give_back(&self, taken: &[Taken]) {
        let mut s = self.state.lock();
        for t in taken.iter().rev() {
            let Some(o) = s.osts.get_mut(&t.ost) else { continue };
            if o.seq != t.id.seq || o.last_used != t.id.oid || o.generation != t.generation {
                tracing::warn!(ost = t.ost, id = %t.id, "object of a dropped transaction not returned: left on the OST");
                continue;
            }
            o.last_used = t.prev;
            if t.pooled {
                o.untake(t.id.oid);
            }
        }
        drop(s);
        self.changed.notify_all();
    }

    /// The next pooled id of `ost`; when its pool is empty, waits for the
    /// precreate in flight or precreates `batch` itself (the only case a
    /// create waits for an OST).
    fn take_id(&self, s: &mut parking_lot::MutexGuard<'_, State>, ost: u32, batch: u32) -> Result<(OstId, u64)> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let o = s.osts.get_mut(&ost).ok_or_else(|| MdtError::posix(errno::EIO, "chosen OST vanished"))?;
            if let Some(id) = o.take() {
                return Ok((id, o.generation));
            }
            if s.nonblocking {
                s.refill_wanted = true;
                self.refill.notify_all();
                return Err(MdtError::posix(errno::EAGAIN, format!("OST {ost}: precreated objects used up; retry")));
            }
            let o = s.osts.get_mut(&ost).ok_or_else(|| MdtError::posix(errno::EIO, "chosen OST vanished"))?;
            if o.busy {
                if self.changed.wait_until(s, deadline).timed_out() {
                    return Err(MdtError::Ost { ost, why: "precreate took too long".into(), errno: errno::EIO });
                }
                continue;
            }
            self.precreate_into(s, ost, batch)?;
        }
    }

    /// Precreates `batch` objects on `ost` with the lock released, records
    /// the new range's end, and adds it to the pool. The caller checked the
    /// OST is not busy.
    fn precreate_into(&self, s: &mut parking_lot::MutexGuard<'_, State>, ost: u32, batch: u32) -> Result<()> {
        let width = s.cfg.ost_seq_width.max(1);
        let (api, rollover) = {
            let o = s.osts.get_mut(&ost).ok_or_else(|| MdtError::posix(errno::EIO, "OST vanished"))?;
            let used_up = o.seq == 0 || o.precreated.max(o.last_used) >= width;
            if used_up && !o.pool.is_empty() {
                // The sequence's last objects are still pooled.
                return Ok(());
            }
            o.busy = true;
            (Arc::clone(&o.api), used_up.then_some(o.seq))
        };
        if let Some(old) = rollover {
            let new = parking_lot::MutexGuard::unlocked(s, || self.new_seq(ost, old));
            let o = s.osts.get_mut(&ost).ok_or_else(|| MdtError::posix(errno::EIO, "OST vanished"))?;
            match new {
                Ok(new) => {
                    o.prev = (o.seq, o.last_used);
                    o.seq = new;
                    o.last_used = 0;
                    o.precreated = 0;
                    o.reset_pool();
                }
                Err(e) => {
                    o.busy = false;
                    self.changed.notify_all();
                    return Err(e);
                }
            }
        }
        let (seq, count) = {
            let o = s.osts.get_mut(&ost).ok_or_else(|| MdtError::posix(errno::EIO, "OST vanished"))?;
            (o.seq, u64::from(batch).min(width - o.precreated.max(o.last_used)) as u32)
        };
        let res = parking_lot::MutexGuard::unlocked(s, || api.precreate(seq, count));
        let out = (|| {
            let o = s.osts.get_mut(&ost).ok_or_else(|| MdtError::posix(errno::EIO, "OST vanished"))?;
            match res {
                Ok((first, last))
                    if o.seq == seq && last >= first && first > o.precreated.max(o.last_used) && last <= width =>
                {
                    // Recorded before any of them is used, so a crash
                    // leaves them to the next orphan cleanup.
                    let mut pb = Batch::new();
                    pb.put(Table::Osts, precreated_key(ost, seq), last.to_be_bytes().to_vec());
                    self.kv.write(pb)?;
                    o.precreated = last;
                    o.pool.push_back((first, last));
                    Ok(())
                }
                Ok((first, last)) => {
                    let why = format!(
                        "precreate in {seq:#x} gave {first}..={last} after {} (width {width})",
                        o.precreated.max(o.last_used)
                    );
                    Err(MdtError::Ost { ost, why, errno: errno::EIO })
                }
                Err(e) => {
                    o.connected = false;
                    Err(MdtError::Ost { ost, why: e.to_string(), errno: e.errno() })
                }
            }
        })();
        if let Some(o) = s.osts.get_mut(&ost) {
            o.busy = false;
        }
        self.changed.notify_all();
        out
    }

    /// The `mdt-precreate` thread's body: refills every usable OST whose
    /// pool fell below half a batch, woken by allocations (or once a
    /// second), until [`Allocator::stop_precreator`].
    pub fn run_precreator(&self) {
        let mut s = self.state.lock();
        loop {
            if s.precreator_stop {
                return;
            }
            if !s.refill_wanted {
                self.refill.wait_for(&mut s, std::time::Duration::from_secs(1));
            }
            s.refill_wanted = false;
            let (batch, full_pct) = (s.cfg.precreate_batch.max(1), s.cfg.full_pct);
            let low: Vec<u32> = s
                .osts
                .iter()
                .filter(|(_, o)| usable(o, full_pct) && !o.busy && o.pooled() < u64::from(batch / 2))
                .map(|(&i, _)| i)
                .collect();
            for ost in low {
                if s.precreator_stop {
                    return;
                }
                if s.osts.get(&ost).is_some_and(|o| !o.busy)
                    && let Err(e) = self.precreate_into(&mut s, ost, batch)
                {
                    tracing::warn!(ost, error = %e, "precreate ahead failed");
                }
            }
        }
    }

    /// Ends [`Allocator::run_precreator`].
    pub fn stop_precreator(&self) {
        self.state.lock().precreator_stop = true;
        self.refill.notify_all();
    }

    /// Ids pooled for OST `index` (precreated, not handed out).
    pub fn pooled(&self, index: u32) -> u64 {
        self.state.lock().osts.get(&index).map_or(0, Ost::pooled)
    }

    /// Waits up to `bound` until OST `index` pools at least `n` ids and no
    /// precreate of it is in flight; returns how many it pools.
    pub fn wait_pooled(&self, index: u32, n: u64, bound: std::time::Duration) -> u64 {
        let deadline = std::time::Instant::now() + bound;
        let mut s = self.state.lock();
        loop {
            let (pooled, busy) = s.osts.get(&index).map_or((0, false), |o| (o.pooled(), o.busy));
            if (pooled >= n && !busy) || self.changed.wait_until(&mut s, deadline).timed_out() {
                return s.osts.get(&index).map_or(0, Ost::pooled);
            }
        }
    }

    /// Destroys object `id` on OST `ost`. `Ok(true)`: gone (or the OST was
    /// removed, taking it along); `Ok(false)`: retry later (also while the
    /// OST is not added yet: after a restart the config log is replayed
    /// while the destroy log already runs).
    pub fn destroy(&self, ost: u32, id: OstId) -> bool {
        let api = {
            let s = self.state.lock();
            match s.osts.get(&ost) {
                Some(o) => Arc::clone(&o.api),
                None => return s.removed.contains(&ost),
            }
        };
        match api.destroy(id) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(ost, %id, error = %e, "destroy deferred");
                false
            }
        }
    }

    /// OST `index`'s last allocated object (None if unknown).
    pub fn last_used(&self, index: u32) -> Option<OstId> {
        self.state.lock().osts.get(&index).map(|o| OstId::new(o.seq, o.last_used))
    }

    /// OST `index`'s connection (the namespace checker asks it about
    /// objects).
    pub fn api(&self, index: u32) -> Option<Arc<dyn OstApi>> {
        self.state.lock().osts.get(&index).map(|o| Arc::clone(&o.api))
    }

    /// The sequences OST `index` was granted (current and older ones).
    pub fn ost_seqs(&self, index: u32) -> Result<Vec<u64>> {
        Ok(self.seqs()?.lock().granted_to(&seq_owner(index)))
    }

    /// The NIDs of OST `index`.
    pub fn nids(&self, index: u32) -> Option<Vec<String>> {
        self.state.lock().osts.get(&index).map(|o| o.nids.clone())
    }
}

fn usable(o: &Ost, full_pct: u32) -> bool {
    let full =
        o.space.kbytes > 0 && u128::from(o.space.kbytes_free) * 100 < u128::from(full_pct) * u128::from(o.space.kbytes);
    o.admin_active && o.connected && !full
}
