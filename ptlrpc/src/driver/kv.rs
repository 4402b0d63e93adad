//! A key-value service on the target framework, over [`FileStore`]: the
//! smallest real target, for process-level recovery tests and the
//! recovery benchmark (the `kv-target` binary serves it).
//!
//! Owns: [`KvReq`] (the request body), [`KvService`] (put = an update of
//! one object whose pre-op version VBR checks on replay; get = a read) and
//! the opcodes, portal and connect data its clients use ([`kv_import_config`]).
//!
//! Must not: grow into a file system; mdt and ost bring the real services.

use rkyv::{Archive, Deserialize, Serialize};

use super::file_store::FileStore;
use crate::import::{ImportConfig, PathId};
use crate::portals::MDS_REQUEST_PORTAL;
use crate::target::{ObjId, Plan, TargetService};
use crate::wire::{ConnectData, Frame, Op, Portal, connect_flags, errno};

/// The portal the kv target serves (the MDS request portal).
pub const KV_PORTAL: Portal = MDS_REQUEST_PORTAL;
/// The opcode of a put.
pub const KV_PUT: Op = Op::MdsReint;
/// The opcode of a get.
pub const KV_GET: Op = Op::MdsGetattr;

/// A key-value request body.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum KvReq {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: u32,
        /// The value.
        value: u64,
    },
    /// Reads `key` (the reply body is the value, 8 bytes little endian, 0
    /// when unset).
    Get {
        /// The key.
        key: u32,
    },
}

/// The key-value service.
#[derive(Debug, Default, Clone, Copy)]
pub struct KvService;

impl TargetService for KvService {
    type Store = FileStore;
    type Input = ();

    fn plan(
        &mut self,
        store: &FileStore,
        _uuid: &str,
        _op: Op,
        req: &Frame<'_>,
        (): (),
    ) -> Result<Plan<Vec<(ObjId, Vec<u8>)>>, i32> {
        match req.deserialize::<KvReq>().map_err(|_| errno::EPROTO)? {
            KvReq::Put { key, value } => Ok(Plan::Update {
                objects: vec![ObjId(u128::from(key))],
                change: vec![(ObjId(u128::from(key)), value.to_le_bytes().to_vec())],
                body: Vec::new(),
            }),
            KvReq::Get { key } => {
                let v = store.get(ObjId(u128::from(key))).map_or_else(|| vec![0; 8], |(_, v)| v.to_vec());
                Ok(Plan::Read { body: v })
            }
        }
    }
}

/// A get's reply body as a value (`None` if it is not 8 bytes).
pub fn kv_value(body: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(body.try_into().ok()?))
}

/// Import settings for a kv client `uuid` with `paths` connection paths.
pub fn kv_import_config(uuid: &str, paths: usize) -> ImportConfig {
    let paths = (0..paths).map(|i| PathId(u32::try_from(i).unwrap_or(u32::MAX))).collect();
    let mut cfg = ImportConfig::new(uuid, Op::MdsConnect, Op::MdsDisconnect, KV_PORTAL, paths);
    cfg.connect_data = ConnectData {
        flags: connect_flags::VERSION | connect_flags::VBR | connect_flags::IMP_RECOV | connect_flags::BRW_SIZE,
        version: 1,
        brw_size: 1 << 20,
        ..ConnectData::default()
    };
    cfg
}
