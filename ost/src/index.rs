//! The object index: an embedded fjall database in `<dir>/index`.
//!
//! Owns: the records and their byte layout — per object ([`ObjRecord`]:
//! size, version, owner, mtime; keyed by [`OstId`], sequence first), each
//! sequence's last object id and the version of its id allocator
//! (creates are version-checked on replay like writes), its [`ServerRec`] (boot epoch, last transno), the last
//! committed transno and one ptlrpc [`ClientRecord`] per client UUID (in
//! its one byte form, `ClientRecord::encode`) —
//! staged in atomic batches and made durable by [`Index::persist`]
//! (`PersistMode::SyncAll`), which only commits call.
//!
//! Must not: decide anything, or accept a record of the wrong length: a
//! record that does not decode is an [`OstError::Index`] (a corrupt index
//! stops the target; it is never rewritten).

use std::path::{Path, PathBuf};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use ptlrpc::target::ClientRecord;
use ptlrpc::wire::OstId;

use crate::error::OstError;

/// The index's directory inside the target directory.
pub const INDEX_DIR: &str = "index";

/// What the index knows of one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ObjRecord {
    /// Size in bytes.
    pub size: u64,
    /// Version of the last change (`epoch << 32 | transno`).
    pub version: u64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, ns since the Unix epoch.
    pub mtime_ns: u64,
}

const OBJ_LEN: usize = 32;

impl ObjRecord {
    fn encode(&self) -> [u8; OBJ_LEN] {
        let mut b = [0u8; OBJ_LEN];
        b[0..8].copy_from_slice(&self.size.to_le_bytes());
        b[8..16].copy_from_slice(&self.version.to_le_bytes());
        b[16..20].copy_from_slice(&self.uid.to_le_bytes());
        b[20..24].copy_from_slice(&self.gid.to_le_bytes());
        b[24..32].copy_from_slice(&self.mtime_ns.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<ObjRecord> {
        let b: &[u8; OBJ_LEN] = b.try_into().ok()?;
        let u64_at =
            |i: usize| u64::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3], b[i + 4], b[i + 5], b[i + 6], b[i + 7]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Some(ObjRecord { size: u64_at(0), version: u64_at(8), uid: u32_at(16), gid: u32_at(20), mtime_ns: u64_at(24) })
    }
}

/// The target's own record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerRec {
    /// Boot epoch, bumped at each start.
    pub epoch: u32,
    /// The highest transno executed (durable as of the last commit).
    pub last_transno: u64,
}

/// Reads little-endian fields off a record; `None` when it runs short.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_at_checked(N)?;
        self.0 = rest;
        head.try_into().ok()
    }
    fn u64(&mut self) -> Option<u64> {
        self.take::<8>().map(u64::from_le_bytes)
    }
}

/// One staged write.
#[derive(Debug, Clone)]
pub enum Put {
    /// An object's record.
    Obj(OstId, ObjRecord),
    /// An object removed.
    DelObj(OstId),
    /// A sequence's last object id and its id allocator's version:
    /// `(seq, last id, version)`.
    LastId(u64, u64, u64),
    /// The server record.
    Server(ServerRec),
    /// A client's record.
    Client(ClientRecord),
    /// A client's record removed.
    DelClient(String),
    /// The last transno a commit made durable (staged by the commit
    /// thread just before it persists).
    Committed(u64),
}

/// The open index.
pub struct Index {
    path: PathBuf,
    db: Database,
    objects: Keyspace,
    records: Keyspace,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").field("path", &self.path).finish_non_exhaustive()
    }
}

const LAST_ID_PREFIX: &[u8] = b"last_id/";

/// A sequence's last object id and its id allocator's version.
pub type LastId = (u64, u64);
const KEY_SERVER: &[u8] = b"server";
const KEY_COMMITTED: &[u8] = b"committed";
const CLIENT_PREFIX: &[u8] = b"client/";

impl Index {
    /// Creates a new index under `dir` (which must not have one).
    pub fn create(dir: &Path) -> Result<Index, OstError> {
        let path = dir.join(INDEX_DIR);
        if path.exists() {
            return Err(OstError::Identity { path: dir.to_path_buf(), why: "an index already exists".into() });
        }
        let idx = Index::open_path(path)?;
        idx.stage(&[Put::Server(ServerRec::default())])?;
        idx.persist()?;
        Ok(idx)
    }

    /// Opens the index under `dir`; a missing or unreadable one is an error.
    pub fn open(dir: &Path) -> Result<Index, OstError> {
        let path = dir.join(INDEX_DIR);
        if !path.is_dir() {
            return Err(OstError::Index { path, reason: "missing (the directory is not a formatted target)".into() });
        }
        let idx = Index::open_path(path)?;
        // Every target has its server record from format on.
        idx.get(&idx.records, KEY_SERVER)?.ok_or_else(|| idx.corrupt("no server record"))?;
        Ok(idx)
    }

    fn open_path(path: PathBuf) -> Result<Index, OstError> {
        let err = |e: fjall::Error| OstError::Index { path: path.clone(), reason: e.to_string() };
        let db = Database::builder(&path).max_journaling_size(64 << 20).open().map_err(err)?;
        let objects = db.keyspace("objects", KeyspaceCreateOptions::default).map_err(err)?;
        let records = db.keyspace("records", KeyspaceCreateOptions::default).map_err(err)?;
        Ok(Index { path, db, objects, records })
    }

    fn corrupt(&self, why: &str) -> OstError {
        OstError::Index { path: self.path.clone(), reason: why.to_string() }
    }

    fn fj(&self, e: fjall::Error) -> OstError {
        OstError::Index { path: self.path.clone(), reason: e.to_string() }
    }

    fn get(&self, ks: &Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, OstError> {
        Ok(ks.get(key).map_err(|e| self.fj(e))?.map(|v| v.to_vec()))
    }

    /// An object's record.
    pub fn object(&self, oid: OstId) -> Result<Option<ObjRecord>, OstError> {
        match self.get(&self.objects, &oid.key())? {
            None => Ok(None),
            Some(v) => ObjRecord::decode(&v).map(Some).ok_or_else(|| self.corrupt(&format!("object {oid} record"))),
        }
    }

    fn last_id_key(seq: u64) -> Vec<u8> {
        let mut k = LAST_ID_PREFIX.to_vec();
        k.extend_from_slice(&seq.to_be_bytes());
        k
    }

    fn decode_last_id(&self, v: &[u8]) -> Result<(u64, u64), OstError> {
        let mut f = Fields(v);
        let id = f.u64().ok_or_else(|| self.corrupt("last_id record"))?;
        let version = f.u64().ok_or_else(|| self.corrupt("last_id record"))?;
        Ok((id, version))
    }

    /// Sequence `seq`'s last object id and its id allocator's version
    /// (`(0, 0)`: nothing created in it).
    pub fn last_id(&self, seq: u64) -> Result<(u64, u64), OstError> {
        match self.get(&self.records, &Index::last_id_key(seq))? {
            None => Ok((0, 0)),
            Some(v) => self.decode_last_id(&v),
        }
    }

    /// Every sequence's last object id and version, by sequence.
    pub fn last_ids(&self) -> Result<Vec<(u64, LastId)>, OstError> {
        let mut out = Vec::new();
        for kv in self.records.prefix(LAST_ID_PREFIX) {
            let (k, v) = kv.into_inner().map_err(|e| self.fj(e))?;
            let seq = k
                .get(LAST_ID_PREFIX.len()..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| self.corrupt("last_id key"))?;
            out.push((seq, self.decode_last_id(&v)?));
        }
        Ok(out)
    }

    /// The last transno a commit made durable (0 before the first).
    pub fn committed(&self) -> Result<u64, OstError> {
        match self.get(&self.records, KEY_COMMITTED)? {
            None => Ok(0),
            Some(v) => {
                let b: [u8; 8] = v.as_slice().try_into().map_err(|_| self.corrupt("committed record"))?;
                Ok(u64::from_le_bytes(b))
            }
        }
    }

    /// The server record.
    pub fn server(&self) -> Result<ServerRec, OstError> {
        let v = self.get(&self.records, KEY_SERVER)?.ok_or_else(|| self.corrupt("no server record"))?;
        let b: [u8; 12] = v.as_slice().try_into().map_err(|_| self.corrupt("server record"))?;
        let (e, t) = b.split_at(4);
        let epoch = u32::from_le_bytes(e.try_into().map_err(|_| self.corrupt("server record"))?);
        let last_transno = u64::from_le_bytes(t.try_into().map_err(|_| self.corrupt("server record"))?);
        Ok(ServerRec { epoch, last_transno })
    }

    /// Every client record.
    pub fn clients(&self) -> Result<Vec<ClientRecord>, OstError> {
        let mut out = Vec::new();
        for kv in self.records.prefix(CLIENT_PREFIX) {
            let (k, v) = kv.into_inner().map_err(|e| self.fj(e))?;
            let rest = k.get(CLIENT_PREFIX.len()..).ok_or_else(|| self.corrupt("client key"))?;
            let rec = ClientRecord::decode(&v).map_err(|e| self.corrupt(&e.to_string()))?;
            if rec.uuid.as_bytes() != rest {
                return Err(self.corrupt("client key and record disagree"));
            }
            out.push(rec);
        }
        Ok(out)
    }

    /// Objects in the index (approximate: the LSM tree's count).
    pub fn objects_approx(&self) -> u64 {
        self.objects.approximate_len() as u64
    }

    /// Applies `puts` atomically (volatile until [`Index::persist`]).
    pub fn stage(&self, puts: &[Put]) -> Result<(), OstError> {
        let mut b = self.db.batch();
        for p in puts {
            match p {
                Put::Obj(oid, r) => b.insert(&self.objects, oid.key().to_vec(), r.encode().to_vec()),
                Put::DelObj(oid) => b.remove(&self.objects, oid.key().to_vec()),
                Put::LastId(seq, id, version) => {
                    let mut v = id.to_le_bytes().to_vec();
                    v.extend_from_slice(&version.to_le_bytes());
                    b.insert(&self.records, Index::last_id_key(*seq), v);
                }
                Put::Committed(t) => b.insert(&self.records, KEY_COMMITTED.to_vec(), t.to_le_bytes().to_vec()),
                Put::Server(s) => {
                    let mut v = s.epoch.to_le_bytes().to_vec();
                    v.extend_from_slice(&s.last_transno.to_le_bytes());
                    b.insert(&self.records, KEY_SERVER.to_vec(), v);
                }
                Put::Client(c) => {
                    let mut k = CLIENT_PREFIX.to_vec();
                    k.extend_from_slice(c.uuid.as_bytes());
                    b.insert(&self.records, k, c.encode());
                }
                Put::DelClient(uuid) => {
                    let mut k = CLIENT_PREFIX.to_vec();
                    k.extend_from_slice(uuid.as_bytes());
                    b.remove(&self.records, k);
                }
            }
        }
        b.commit().map_err(|e| self.fj(e))
    }

    /// Makes everything staged durable.
    pub fn persist(&self) -> Result<(), OstError> {
        self.db.persist(PersistMode::SyncAll).map_err(|e| self.fj(e))
    }
}

#[cfg(test)]
mod tests {
    use ptlrpc::target::ReplySlot;
    use ptlrpc::wire::{ObjVersion, Transno, Xid};

    use super::*;

    fn client() -> ClientRecord {
        ClientRecord {
            uuid: "c1".into(),
            replied_xid: Xid(2),
            last_transno: Transno(44),
            slots: vec![ReplySlot {
                tag: 1,
                xid: Xid(3),
                transno: Transno(44),
                result: -5,
                pre_versions: [ObjVersion(1), ObjVersion(2), ObjVersion(0), ObjVersion(9)],
                post_version: ObjVersion(44),
                reply: vec![1, 2, 3],
            }],
            gap: Some(Transno(40)),
        }
    }

    #[test]
    fn records_round_trip_and_persist() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let idx = Index::create(dir.path()).expect("create");
            let r = ObjRecord { size: 5, version: 7, uid: 1, gid: 2, mtime_ns: 3 };
            idx.stage(&[
                Put::Obj(OstId::new(5, 9), r),
                Put::LastId(5, 9, 40),
                Put::LastId(6, 3, 41),
                Put::Server(ServerRec { epoch: 2, last_transno: 44 }),
                Put::Client(client()),
                Put::Client(ClientRecord { uuid: "c2".into(), ..ClientRecord::default() }),
                Put::DelClient("c2".into()),
            ])
            .expect("stage");
            idx.persist().expect("persist");
            assert!(Index::create(dir.path()).is_err(), "a second create refuses");
        }
        let idx = Index::open(dir.path()).expect("open");
        assert_eq!(idx.object(OstId::new(5, 9)).expect("get").map(|r| r.size), Some(5));
        assert_eq!(idx.object(OstId::new(6, 9)).expect("get"), None);
        assert_eq!(idx.last_id(5).expect("last id"), (9, 40));
        assert_eq!(idx.last_id(7).expect("last id"), (0, 0));
        assert_eq!(idx.last_ids().expect("last ids"), vec![(5, (9, 40)), (6, (3, 41))]);
        assert_eq!(idx.server().expect("server"), ServerRec { epoch: 2, last_transno: 44 });
        assert_eq!(idx.clients().expect("clients"), vec![client()]);
    }

    #[test]
    fn a_missing_index_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(Index::open(dir.path()), Err(OstError::Index { .. })));
        assert!(!dir.path().join(INDEX_DIR).exists(), "open created nothing");
    }
}
