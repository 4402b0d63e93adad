//! mgc: the client of the management service — reads a file system's
//! configuration log into the target table a mount needs, and sends the
//! administrative requests of `sheen targets`.
//!
//! Owns: [`Mgc`], [`FsConfig`]. Must not: cache the log past one read
//! (a mount reads it once; following updates comes with the lock manager).

use std::collections::BTreeMap;
use std::sync::Arc;

use lnet::{Lnet, NetType, Nid};
use ptlrpc::driver::{Client, ClientConfig};
use ptlrpc::fault::FaultInjector;
use ptlrpc::portals::MGS_REQUEST_PORTAL;
use ptlrpc::wire::Op;
use ptlrpc::wire::mgs::{
    ConfigCmd, ConfigReadReply, ConfigReadReq, MgsAdminReply, MgsAdminReq, TargetKind, TargetRegReply, TargetRegReq,
};

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
        // `0@lo` names the server's own loopback NI: useless to anyone else.
        let parse = |v: &[String]| {
            v.iter().filter_map(|n| n.parse::<Nid>().ok()).filter(|n| n.net.kind != NetType::Lo).collect::<Vec<_>>()
        };
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

/// A client of one MGS.
#[derive(Debug, Clone)]
pub struct Mgc {
    rpc: Client,
}

impl Mgc {
    /// A client of the MGS at `mgs`.
    pub fn new(lnet: &Lnet, mgs: Nid) -> Mgc {
        let cfg = ClientConfig { reply_buf_len: 256 << 10, ..ClientConfig::default() };
        Mgc { rpc: Client::new(lnet, mgs, MGS_REQUEST_PORTAL, cfg, Arc::new(FaultInjector::default())) }
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
