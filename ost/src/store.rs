//! The OST's binding of ptlrpc's `TargetStore`: what one transaction of
//! the target framework does to object files and the index.
//!
//! Owns: [`OstChange`] (a planned change: create a range, destroy, set
//! attributes, punch, write pages) and [`OstStore`] — object versions
//! from the index (the id allocator is an object too, so a replayed
//! CREATE is version-checked), `apply` (the data work, then the change's
//! records with the client's and server's in one index batch), client and
//! server records outside transactions, and commits handed to the
//! target's commit thread (`commit_async`) or run at once (`commit`).
//!
//! Must not: decide what a request means (`service` does) or touch the
//! network.

use std::sync::Arc;

use lnet::MdBuffer;
use ptlrpc::target::{ClientRecord, ObjId, Persisted, ServerRecord, TargetStore, Txn};
use ptlrpc::wire::{ObjVersion, OstId, OstPunch, OstSetattr, Transno, errno};

use crate::error::OstError;
use crate::index::{Put, ServerRec};
use crate::target::{Ost, WriteRuns};

/// The framework's object id of OST object `oid`: sequence in the high
/// 64 bits, id in the low.
pub fn obj_id(oid: OstId) -> ObjId {
    ObjId(u128::from(oid.seq) << 64 | u128::from(oid.oid))
}

/// The object standing for sequence `seq`'s id allocator (CREATE's
/// version): id 0 of the sequence, which names no object.
pub fn last_id_obj(seq: u64) -> ObjId {
    obj_id(OstId::new(seq, 0))
}

/// One planned change.
#[derive(Debug)]
pub enum OstChange {
    /// Create `count` objects of sequence `seq` from `first`.
    Create {
        /// The sequence.
        seq: u64,
        /// The first new id.
        first: u64,
        /// How many.
        count: u32,
    },
    /// Destroy an object.
    Destroy {
        /// Its id.
        oid: OstId,
    },
    /// Set attributes.
    Setattr(OstSetattr),
    /// Truncate or punch a hole.
    Punch(OstPunch),
    /// Write pages.
    Write {
        /// The object.
        oid: OstId,
        /// Where the pages go.
        runs: WriteRuns,
        /// The pages the front fetched (`None`: a request that reached the
        /// target without them, which only an executed one may).
        data: Option<MdBuffer>,
        /// The modification time the write sets (the one its reply states).
        mtime_ns: u64,
    },
}

/// One target's store.
#[derive(Debug)]
pub struct OstStore {
    ost: Arc<Ost>,
    persisted: Persisted,
}

impl OstStore {
    /// The store of `ost`; reads its client table now, so a corrupt one
    /// is an error at start.
    pub fn new(ost: Arc<Ost>) -> Result<OstStore, OstError> {
        let s = ost.server_record()?;
        let clients = ost.index().clients()?;
        let server = ServerRecord { epoch: s.epoch, last_transno: Transno(s.last_transno) };
        Ok(OstStore { ost, persisted: Persisted { server, clients } })
    }

    /// The target.
    pub fn ost(&self) -> &Arc<Ost> {
        &self.ost
    }

    fn apply_change(&self, txn: Txn<OstChange>) -> Result<(), OstError> {
        let version = txn.version.0;
        let mut destroyed = None;
        let (mut puts, dirty) = match txn.change {
            OstChange::Create { seq, first, count } => (self.ost.create_objects(seq, first, count, version)?, None),
            OstChange::Destroy { oid } => {
                destroyed = Some(oid);
                (vec![Put::DelObj(oid)], None)
            }
            OstChange::Setattr(s) => {
                let (r, o) = self.ost.setattr_object(&s, version)?;
                (vec![Put::Obj(s.oid, r)], Some((o, 0)))
            }
            OstChange::Punch(p) => {
                let (r, o) = self.ost.punch_object(&p, version)?;
                (vec![Put::Obj(p.oid, r)], Some((o, 0)))
            }
            OstChange::Write { oid, runs, data, mtime_ns } => {
                let data = data.ok_or_else(|| OstError::Invalid("a write without its pages".into()))?;
                let who = (txn.client.uuid.as_str(), txn.xid.0);
                let (r, o) = self.ost.write_object(oid, &runs, &data, (version, mtime_ns), who)?;
                (vec![Put::Obj(oid, r)], Some((o, runs.len)))
            }
        };
        puts.push(Put::Client(txn.client));
        puts.push(Put::Server(ServerRec { epoch: txn.server.epoch, last_transno: txn.server.last_transno.0 }));
        self.ost.stage(txn.transno.0, puts, dirty.as_ref().map(|(o, n)| (o, *n)));
        if let Some(oid) = destroyed {
            self.ost.remove_object(oid);
        }
        Ok(())
    }
}

impl TargetStore for OstStore {
    type Change = OstChange;

    fn load(&self) -> Persisted {
        self.persisted.clone()
    }

    fn version(&self, obj: ObjId) -> ObjVersion {
        let oid = OstId::new((obj.0 >> 64) as u64, obj.0 as u64);
        if oid.oid == 0 {
            return ObjVersion(self.ost.last_id(oid.seq).1);
        }
        match self.ost.record_opt(oid) {
            Ok(r) => ObjVersion(r.map_or(0, |r| r.version)),
            Err(e) => {
                tracing::error!(target_name = self.ost.name(), %oid, err = %e, "reading an object's version");
                ObjVersion(0)
            }
        }
    }

    fn apply(&mut self, txn: Txn<OstChange>) -> Result<(), i32> {
        self.apply_change(txn).map_err(|e| {
            if !matches!(e, OstError::NoObject(_) | OstError::NoSpace { .. }) {
                tracing::warn!(target_name = self.ost.name(), err = %e, "change failed");
            }
            match e.errno() {
                0 => errno::EIO,
                n => n,
            }
        })
    }

    fn put_client(&mut self, rec: ClientRecord) {
        self.ost.stage_records(vec![Put::Client(rec)]);
    }

    fn remove_client(&mut self, uuid: &str) {
        self.ost.stage_records(vec![Put::DelClient(uuid.to_string())]);
    }

    fn put_server(&mut self, rec: ServerRecord) {
        self.ost.stage_records(vec![Put::Server(ServerRec { epoch: rec.epoch, last_transno: rec.last_transno.0 })]);
    }

    fn commit(&mut self) {
        if let Err(e) = self.ost.commit_once() {
            tracing::error!(target_name = self.ost.name(), err = %e, "commit failed");
        }
    }

    fn commit_async(&mut self) {
        self.ost.request_commit();
    }

    fn committed(&self) -> Transno {
        Transno(self.ost.committed())
    }
}
