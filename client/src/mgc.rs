//! mgc: the client of the management service — reads a file system's
//! configuration log into the target table a mount needs, follows the log
//! live afterwards, and sends the administrative requests of `sheen
//! targets`.
//!
//! Owns: [`Mgc`], [`FsConfig`] (the fold of the log), and
//! [`MgcFollower`]: a task driving ptlrpc's sans-IO
//! [`ConfigFollower`] (the MDT's follower runs the same logic) over a
//! long-poll read, handing each new record, once and in order, to the
//! mount. A read the MGS does not answer in time (it restarted) is given
//! up and asked again from the next index, so an MGS restart neither
//! skips nor repeats a record.
//!
//! Must not: act on records itself (the mount's target table does,
//! `crate::targets`), or block the runtime.
//!
//! Not yet: the MGC has no import to the MGS (no CONNECT, no pinger): it
//! learns the MGS is gone only from a read that goes unanswered; an MGS
//! whose log was rebuilt with lower indices is not detected (the follower
//! waits for indices it already has).

use std::collections::BTreeMap;
use std::sync::Arc;

use lnet::{Lnet, NetType, Nid};
use ptlrpc::Time;
use ptlrpc::config_log::{ConfigFollower, FollowSettings, FollowerStats};
use ptlrpc::driver::{Client, ClientConfig};
use ptlrpc::fault::FaultInjector;
use ptlrpc::portals::MGS_REQUEST_PORTAL;
use ptlrpc::wire::Op;
use ptlrpc::wire::mgs::{
    ConfigCmd, ConfigReadReply, ConfigReadReq, ConfigRecord, MgsAdminReply, MgsAdminReq, TargetKind, TargetRegReply,
    TargetRegReq,
};
use tokio::sync::watch;

use crate::error::{ClientError, Result};
use crate::rpc;

/// Records asked for per config read.
const READ_BATCH: u32 = 256;
/// Config reads at most per mount (a bound on a runaway log).
const MAX_READS: u32 = 10_000;

/// A target as the configuration log describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetEntry {
    /// Where it serves.
    pub nids: Vec<Nid>,
    /// Allocation allowed (OSTs).
    pub active: bool,
}

/// A file system's targets, from its configuration log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsConfig {
    /// MDTs by index.
    pub mdts: BTreeMap<u32, TargetEntry>,
    /// OSTs by index.
    pub osts: BTreeMap<u32, TargetEntry>,
    /// `set_param` values.
    pub params: BTreeMap<String, String>,
    /// The next record index.
    pub next: u64,
}

impl FsConfig {
    fn table(&mut self, k: TargetKind) -> &mut BTreeMap<u32, TargetEntry> {
        if k == TargetKind::Mdt { &mut self.mdts } else { &mut self.osts }
    }

    /// Applies one record.
    pub fn apply(&mut self, cmd: &ConfigCmd) {
        let parse = |v: &[String]| parse_nids(v);
        match cmd {
            ConfigCmd::AddTarget { kind, index, nids, .. } => {
                self.table(*kind).insert(*index, TargetEntry { nids: parse(nids), active: true });
            }
            ConfigCmd::Activate { kind, index } | ConfigCmd::Deactivate { kind, index } => {
                if let Some(t) = self.table(*kind).get_mut(index) {
                    t.active = matches!(cmd, ConfigCmd::Activate { .. });
                }
            }
            ConfigCmd::Remove { kind, index } => {
                self.table(*kind).remove(index);
            }
            ConfigCmd::TargetRestart { kind, index, nids, .. } => {
                if let Some(t) = self.table(*kind).get_mut(index) {
                    t.nids = parse(nids);
                }
            }
            ConfigCmd::SetParam { key, value } => {
                self.params.insert(key.clone(), value.clone());
            }
            ConfigCmd::PoolNew { .. }
            | ConfigCmd::PoolAdd { .. }
            | ConfigCmd::PoolRemove { .. }
            | ConfigCmd::PoolDestroy { .. } => {}
        }
    }
}

/// The NIDs a record names that others can reach (`0@lo` names the
/// server's own loopback NI: useless to anyone else).
pub fn parse_nids(v: &[String]) -> Vec<Nid> {
    v.iter().filter_map(|n| n.parse::<Nid>().ok()).filter(|n| n.net.kind != NetType::Lo).collect()
}

/// Following a file system's log: the task, and how far it got.
#[derive(Debug)]
pub struct MgcFollower {
    task: tokio::task::JoinHandle<()>,
    next: watch::Receiver<u64>,
    stats: Arc<parking_lot::Mutex<FollowerStats>>,
}

impl MgcFollower {
    /// The next record index it will apply.
    pub fn next(&self) -> u64 {
        *self.next.borrow()
    }

    /// Waits (at most `bound`) until records up to `index` are applied;
    /// returns the next index then.
    pub async fn wait_applied(&self, index: u64, bound: std::time::Duration) -> u64 {
        let mut rx = self.next.clone();
        let _ = tokio::time::timeout(bound, rx.wait_for(|n| *n > index)).await;
        self.next()
    }

    /// A receiver of the next index, changed after each record applied.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.next.clone()
    }

    /// The follower's counters (reads, failures, gaps, stale answers).
    pub fn stats(&self) -> FollowerStats {
        *self.stats.lock()
    }

    /// Stops following.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for MgcFollower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client of one MGS.
#[derive(Debug, Clone)]
pub struct Mgc {
    rpc: Client,
    lnet: Lnet,
}

impl Mgc {
    /// A client of the MGS at `mgs`.
    pub fn new(lnet: &Lnet, mgs: Nid) -> Mgc {
        let cfg = ClientConfig { reply_buf_len: 256 << 10, ..ClientConfig::default() };
        Mgc {
            rpc: Client::new(lnet, mgs, MGS_REQUEST_PORTAL, cfg, Arc::new(FaultInjector::default())),
            lnet: lnet.clone(),
        }
    }

    /// The MGS's NID.
    pub fn nid(&self) -> Nid {
        self.rpc.target()
    }

    /// Reads the whole configuration log of `fsname`.
    pub async fn config(&self, fsname: &str) -> Result<FsConfig> {
        let mut cfg = FsConfig { next: 1, ..FsConfig::default() };
        for _ in 0..MAX_READS {
            let req = ConfigReadReq { fsname: fsname.into(), from: cfg.next, max: READ_BATCH, wait_ms: 0 };
            let r: ConfigReadReply = rpc::call(&self.rpc, "config read", Op::MgsConfigRead, &req).await?;
            if r.records.is_empty() {
                return Ok(cfg);
            }
            for rec in &r.records {
                cfg.apply(&rec.cmd);
            }
            if r.next <= cfg.next {
                return Err(ClientError::Config(format!("config log of {fsname} does not advance at {}", cfg.next)));
            }
            cfg.next = r.next;
        }
        Err(ClientError::Config(format!("config log of {fsname} longer than {MAX_READS} reads")))
    }

    /// Follows `fsname`'s log from record `from` (what a mount read
    /// already ends before it), calling `apply` with each new record, in
    /// order, once. Must be called inside a tokio runtime.
    pub fn follow(
        &self,
        fsname: &str,
        from: u64,
        settings: FollowSettings,
        mut apply: impl FnMut(&ConfigRecord) + Send + 'static,
    ) -> MgcFollower {
        let (tx, next) = watch::channel(from);
        let stats = Arc::new(parking_lot::Mutex::new(FollowerStats::default()));
        let (rpc, fsname, st) = (self.rpc.clone(), fsname.to_string(), Arc::clone(&stats));
        let lnet = self.lnet.clone();
        let task = tokio::spawn(async move {
            let epoch = tokio::time::Instant::now();
            let now = || Time::from_epoch(epoch.elapsed());
            let mut f = ConfigFollower::new(now(), &fsname, from, settings);
            let mut failures = 0;
            loop {
                f.handle_timeout(now());
                *st.lock() = f.stats();
                let Some(due) = f.poll_read(now()) else {
                    tokio::time::sleep(f.poll_timeout().saturating_since(now())).await;
                    continue;
                };
                let bound = due.deadline.saturating_since(now());
                if f.stats().failures > failures {
                    // The follower paces its retries itself: lnet need not
                    // back off its connection to the MGS on top of that.
                    failures = f.stats().failures;
                    lnet.notify_alive(rpc.target());
                }
                match tokio::time::timeout(bound, rpc.start(Op::MgsConfigRead, &due.req)).await {
                    Ok(Ok(reply)) => match reply.body::<ConfigReadReply>() {
                        Ok(r) => {
                            for rec in f.handle_reply(now(), due.id, &r) {
                                apply(&rec);
                                tx.send_replace(rec.index + 1);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "config log reply did not decode; retrying");
                            f.handle_error(now(), due.id);
                        }
                    },
                    Ok(Err(e)) => {
                        tracing::info!(error = %e, next = f.next(), "config log read failed; retrying");
                        f.handle_error(now(), due.id);
                    }
                    // Given up at its deadline: the next pass asks again.
                    Err(_) => tracing::info!(next = f.next(), "MGS did not answer a config read; asking again"),
                }
            }
        });
        MgcFollower { task, next, stats }
    }

    /// An administrative request.
    pub async fn admin(&self, req: &MgsAdminReq) -> Result<MgsAdminReply> {
        rpc::call(&self.rpc, "mgs admin", Op::MgsSetInfo, req).await
    }

    /// Registers a target (what a starting target does itself; for tools
    /// and tests).
    pub async fn register(&self, req: &TargetRegReq) -> Result<TargetRegReply> {
        rpc::call(&self.rpc, "target register", Op::MgsTargetReg, req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_builds_the_target_table() {
        let mut c = FsConfig::default();
        let add = |kind, index, nid: &str| ConfigCmd::AddTarget {
            kind,
            index,
            nids: vec!["0@lo".into(), nid.into(), "garbage".into()],
            failover: vec![],
        };
        c.apply(&add(TargetKind::Mdt, 0, "127.0.0.1@tcp"));
        c.apply(&add(TargetKind::Ost, 0, "127.0.0.2@tcp"));
        c.apply(&add(TargetKind::Ost, 1, "127.0.0.3@tcp"));
        c.apply(&ConfigCmd::Deactivate { kind: TargetKind::Ost, index: 1 });
        c.apply(&ConfigCmd::TargetRestart {
            kind: TargetKind::Ost,
            index: 0,
            instance: 2,
            nids: vec!["127.0.0.9@tcp".into()],
        });
        assert_eq!(c.mdts.len(), 1);
        assert_eq!(c.osts[&0].nids, vec!["127.0.0.9@tcp".parse::<Nid>().unwrap()]);
        assert!(!c.osts[&1].active);
        c.apply(&ConfigCmd::Remove { kind: TargetKind::Ost, index: 1 });
        assert_eq!(c.osts.keys().copied().collect::<Vec<_>>(), vec![0]);
    }
}
