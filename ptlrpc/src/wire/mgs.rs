//! MGS bodies: target registration, the configuration log and its
//! administration.
//!
//! Owns: [`TargetRegReq`]/[`TargetRegReply`] (`MGS_TARGET_REG`: a target
//! announces itself and its NIDs at every start, which is also how the MGS
//! learns of a restart for imperative recovery), [`ConfigReadReq`]/
//! [`ConfigReadReply`] (`MGS_CONFIG_READ`: records from an index on, with a
//! bounded long-poll), the log records ([`ConfigRecord`], [`ConfigCmd`]),
//! and [`MgsAdminReq`]/[`MgsAdminReply`] (`MGS_SET_INFO`: lifecycle,
//! parameters and pools).
//!
//! Must not: hold behaviour; the MGS (`mdt::mgs`) decides what is legal.

use rkyv::{Archive, Deserialize, Serialize};

/// What kind of target.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum TargetKind {
    /// A metadata target.
    Mdt,
    /// An object storage target.
    Ost,
}

/// `MGS_TARGET_REG`: a target starting up.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TargetRegReq {
    /// File system name.
    pub fsname: String,
    /// MDT or OST.
    pub kind: TargetKind,
    /// The target's index.
    pub index: u32,
    /// Where it serves (NIDs as text, `192.168.1.2@tcp`).
    pub nids: Vec<String>,
    /// Where it may fail over to.
    pub failover: Vec<String>,
    /// Its boot instance (epoch); a new one means it restarted.
    pub instance: u32,
}

/// Reply to `MGS_TARGET_REG`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct TargetRegReply {
    /// The index of the log record that added the target (first
    /// registration) or announced its restart.
    pub record: u64,
    /// Whether this registration added the target to the file system.
    pub added: bool,
}

/// `MGS_CONFIG_READ`: the log of `fsname` from index `from`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ConfigReadReq {
    /// File system name.
    pub fsname: String,
    /// First record index wanted (records are numbered from 1).
    pub from: u64,
    /// Records at most.
    pub max: u32,
    /// When nothing is there yet, wait up to this long (ms) for a record.
    pub wait_ms: u32,
}

/// One configuration command.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum ConfigCmd {
    /// A target joined (inactive OSTs take no objects until activated).
    AddTarget {
        /// MDT or OST.
        kind: TargetKind,
        /// Index.
        index: u32,
        /// NIDs.
        nids: Vec<String>,
        /// Failover NIDs.
        failover: Vec<String>,
    },
    /// Allow allocation on the target again.
    Activate {
        /// MDT or OST.
        kind: TargetKind,
        /// Index.
        index: u32,
    },
    /// Stop allocating on (and pinging) the target.
    Deactivate {
        /// MDT or OST.
        kind: TargetKind,
        /// Index.
        index: u32,
    },
    /// Drop a deactivated target, and its index from every pool.
    Remove {
        /// MDT or OST.
        kind: TargetKind,
        /// Index.
        index: u32,
    },
    /// A tunable.
    SetParam {
        /// `component.name`.
        key: String,
        /// Its value.
        value: String,
    },
    /// A new, empty pool.
    PoolNew {
        /// Pool name.
        pool: String,
    },
    /// An OST joins a pool.
    PoolAdd {
        /// Pool name.
        pool: String,
        /// OST index.
        ost: u32,
    },
    /// An OST leaves a pool.
    PoolRemove {
        /// Pool name.
        pool: String,
        /// OST index.
        ost: u32,
    },
    /// An empty pool is destroyed.
    PoolDestroy {
        /// Pool name.
        pool: String,
    },
    /// Imperative recovery: the target restarted with a new instance;
    /// followers reconnect now instead of waiting for a ping to fail.
    TargetRestart {
        /// MDT or OST.
        kind: TargetKind,
        /// Index.
        index: u32,
        /// The new boot instance.
        instance: u32,
        /// Where it now serves.
        nids: Vec<String>,
    },
}

/// A numbered record of a file system's log.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ConfigRecord {
    /// Its index (1, 2, ...; never reused).
    pub index: u64,
    /// What it says.
    pub cmd: ConfigCmd,
}

/// Reply to `MGS_CONFIG_READ`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct ConfigReadReply {
    /// Records from the requested index, in order.
    pub records: Vec<ConfigRecord>,
    /// The index to ask for next.
    pub next: u64,
}

/// `MGS_SET_INFO`: an administrative change to `fsname`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum MgsAdminReq {
    /// Activate a target.
    Activate {
        /// File system.
        fsname: String,
        /// MDT or OST.
        kind: TargetKind,
        /// Index.
        index: u32,
    },
    /// Deactivate a target.
    Deactivate {
        /// File system.
        fsname: String,
        /// MDT or OST.
        kind: TargetKind,
        /// Index.
        index: u32,
    },
    /// Remove a deactivated target.
    Remove {
        /// File system.
        fsname: String,
        /// MDT or OST.
        kind: TargetKind,
        /// Index.
        index: u32,
    },
    /// Set a parameter.
    SetParam {
        /// File system.
        fsname: String,
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// Create a pool.
    PoolNew {
        /// File system.
        fsname: String,
        /// Pool.
        pool: String,
    },
    /// Add an OST to a pool.
    PoolAdd {
        /// File system.
        fsname: String,
        /// Pool.
        pool: String,
        /// OST index.
        ost: u32,
    },
    /// Remove an OST from a pool.
    PoolRemove {
        /// File system.
        fsname: String,
        /// Pool.
        pool: String,
        /// OST index.
        ost: u32,
    },
    /// Destroy an empty pool.
    PoolDestroy {
        /// File system.
        fsname: String,
        /// Pool.
        pool: String,
    },
    /// List pools and their OSTs (changes nothing).
    PoolList {
        /// File system.
        fsname: String,
    },
    /// List registered targets (changes nothing).
    Targets {
        /// File system.
        fsname: String,
    },
}

/// A pool and its members.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct PoolInfo {
    /// Pool name.
    pub name: String,
    /// OST indices, ascending.
    pub osts: Vec<u32>,
}

/// A registered target as the MGS knows it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TargetInfo {
    /// MDT or OST.
    pub kind: TargetKind,
    /// Index.
    pub index: u32,
    /// NIDs.
    pub nids: Vec<String>,
    /// Failover NIDs.
    pub failover: Vec<String>,
    /// Allocation allowed.
    pub active: bool,
    /// Its last boot instance.
    pub instance: u32,
}

/// Reply to `MGS_SET_INFO`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct MgsAdminReply {
    /// The log record written (0 for queries).
    pub record: u64,
    /// Pools (PoolList).
    pub pools: Vec<PoolInfo>,
    /// Targets (Targets).
    pub targets: Vec<TargetInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Frame, Header, MsgKind, Op, Xid, encode};

    #[test]
    fn config_log_round_trips_and_truncation_is_rejected() {
        let rep = ConfigReadReply {
            records: vec![
                ConfigRecord {
                    index: 1,
                    cmd: ConfigCmd::AddTarget {
                        kind: TargetKind::Ost,
                        index: 3,
                        nids: vec!["10.0.0.3@tcp".into()],
                        failover: vec!["10.0.0.4@tcp".into()],
                    },
                },
                ConfigRecord { index: 2, cmd: ConfigCmd::PoolAdd { pool: "fast".into(), ost: 3 } },
                ConfigRecord {
                    index: 3,
                    cmd: ConfigCmd::TargetRestart { kind: TargetKind::Mdt, index: 0, instance: 7, nids: vec![] },
                },
            ],
            next: 4,
        };
        let bytes = encode(&Header::new(MsgKind::Reply, Op::MgsConfigRead.opcode(), Xid(1)), &rep).expect("encodes");
        let f = Frame::parse(&bytes).expect("parses");
        assert_eq!(f.deserialize::<ConfigReadReply>().expect("validates"), rep);
        let short = &f.body_bytes()[..f.body_bytes().len() - 5];
        assert!(rkyv::from_bytes::<ConfigReadReply, rkyv::rancor::Error>(short).is_err());
        let adm = MgsAdminReq::Remove { fsname: "sheen".into(), kind: TargetKind::Ost, index: 3 };
        let bytes = encode(&Header::new(MsgKind::Request, Op::MgsSetInfo.opcode(), Xid(2)), &adm).expect("encodes");
        assert_eq!(Frame::parse(&bytes).expect("parses").deserialize::<MgsAdminReq>().expect("validates"), adm);
    }
}
