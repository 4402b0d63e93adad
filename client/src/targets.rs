//! A mount's target table, kept current by the configuration log: the
//! OST clients by index and the folded [`FsConfig`], changed by each
//! record the MGC follows.
//!
//! Owns: [`Targets`] — an OST added after mount gets an osc (its import
//! connects on first use, so new files striped onto it work without a
//! remount); activate and deactivate set the osc's standing (a deactivated
//! OST gets no new I/O, its callers a clear EIO, and its import no
//! pings); remove closes the
//! osc's import for good (its files' I/O fails with an EIO saying so);
//! a target's restart notice goes to the mdc's or the osc's import,
//! which reconnects at once (imperative recovery).
//!
//! Must not: send anything but what an import does on its own (a remove's
//! DISCONNECT), or block the runtime (it runs on the MGC's task).

use std::collections::BTreeMap;
use std::sync::Arc;

use lnet::Lnet;
use parking_lot::RwLock;
use ptlrpc::driver::ImportDriver;
use ptlrpc::wire::mgs::{ConfigCmd, ConfigRecord, TargetKind};

use crate::mgc::{FsConfig, parse_nids};
use crate::options::MountOptions;
use crate::osc::{Osc, OstStanding};

/// Records applied live, kept for inspection at most.
const APPLIED_KEPT: usize = 1024;

#[derive(Debug, Default)]
struct Table {
    /// Every osc made, removed ones included (files opened before a remove
    /// still reach their osc and learn it is gone).
    oscs: BTreeMap<u32, Arc<Osc>>,
    config: FsConfig,
    /// Indices of the records applied live, latest last.
    applied: Vec<u64>,
}

/// The target table. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Targets {
    table: Arc<RwLock<Table>>,
    lnet: Lnet,
    fsname: String,
    uuid: String,
    opts: MountOptions,
    mdc: ImportDriver,
}

impl Targets {
    /// The table `config` (read at mount) describes, for client `uuid`
    /// whose MDT import is `mdc`.
    pub fn new(
        lnet: &Lnet,
        fsname: &str,
        uuid: &str,
        opts: MountOptions,
        mdc: ImportDriver,
        config: FsConfig,
    ) -> Targets {
        let t = Targets {
            table: Arc::default(),
            lnet: lnet.clone(),
            fsname: fsname.to_string(),
            uuid: uuid.to_string(),
            opts,
            mdc,
        };
        {
            let mut tab = t.table.write();
            for (&i, e) in &config.osts {
                if let Some(osc) = t.make_osc(i, e) {
                    tab.oscs.insert(i, osc);
                }
            }
            tab.config = config;
        }
        t
    }

    fn make_osc(&self, index: u32, e: &crate::mgc::TargetEntry) -> Option<Arc<Osc>> {
        let nid = e.nids.first().copied()?;
        let osc = Osc::with_options(&self.lnet, &self.fsname, index, nid, &self.uuid, &self.opts);
        if !e.active {
            osc.set_standing(OstStanding::Inactive);
        }
        Some(Arc::new(osc))
    }

    /// OST `index`'s client (a removed OST's too: it refuses I/O).
    pub fn osc(&self, index: u32) -> Option<Arc<Osc>> {
        self.table.read().oscs.get(&index).cloned()
    }

    /// The OSTs in the file system (removed ones left out).
    pub fn oscs(&self) -> BTreeMap<u32, Arc<Osc>> {
        let t = self.table.read();
        t.oscs.iter().filter(|(_, o)| o.standing() != OstStanding::Removed).map(|(&i, o)| (i, Arc::clone(o))).collect()
    }

    /// The configuration as folded so far.
    pub fn config(&self) -> FsConfig {
        self.table.read().config.clone()
    }

    /// Indices of the records applied since mount, in order (the latest
    /// [`APPLIED_KEPT`]).
    pub fn applied(&self) -> Vec<u64> {
        self.table.read().applied.clone()
    }

    /// Applies one record the MGC followed.
    pub fn apply(&self, rec: &ConfigRecord) {
        let mut closing = None;
        {
            let mut t = self.table.write();
            t.config.apply(&rec.cmd);
            t.config.next = t.config.next.max(rec.index + 1);
            if t.applied.len() >= APPLIED_KEPT {
                t.applied.remove(0);
            }
            t.applied.push(rec.index);
            match &rec.cmd {
                ConfigCmd::AddTarget { kind: TargetKind::Ost, index, .. } => {
                    let known = t.oscs.get(index).is_some_and(|o| o.standing() != OstStanding::Removed);
                    let entry = t.config.osts.get(index).cloned();
                    if !known && let Some(osc) = entry.and_then(|e| self.make_osc(*index, &e)) {
                        tracing::info!(ost = index, "OST added: osc ready");
                        t.oscs.insert(*index, osc);
                    }
                }
                ConfigCmd::Activate { kind: TargetKind::Ost, index } => {
                    if let Some(o) = t.oscs.get(index) {
                        o.set_standing(OstStanding::Active);
                    }
                }
                ConfigCmd::Deactivate { kind: TargetKind::Ost, index } => {
                    if let Some(o) = t.oscs.get(index) {
                        tracing::info!(ost = index, "OST deactivated: no new I/O goes to it");
                        o.set_standing(OstStanding::Inactive);
                    }
                }
                ConfigCmd::Remove { kind: TargetKind::Ost, index } => {
                    if let Some(o) = t.oscs.get(index) {
                        tracing::info!(ost = index, "OST removed: its import closes");
                        o.set_standing(OstStanding::Removed);
                        closing = Some(Arc::clone(o));
                    }
                }
                ConfigCmd::TargetRestart { kind, index, nids, .. } => {
                    let nids = parse_nids(nids);
                    match kind {
                        TargetKind::Ost => {
                            if let Some(o) = t.oscs.get(index).filter(|o| o.standing() != OstStanding::Removed) {
                                o.target_restarted(&nids);
                            }
                        }
                        TargetKind::Mdt if *index == 0 => self.mdc.target_restarted(&nids),
                        TargetKind::Mdt => {}
                    }
                }
                _ => {}
            }
        }
        if let Some(o) = closing {
            tokio::spawn(async move { o.disconnect().await });
        }
    }
}
