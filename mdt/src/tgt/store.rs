//! [`MdtStore`]: the MDT's namespace store as a [`TargetStore`].
//!
//! Owns: the per-client records (table `clients`, in ptlrpc's one
//! record form, `ClientRecord::encode`; reply bodies too large for a slot
//! under `reply_key` in `Meta`), the server record
//! (the epoch and last-transno keys the namespace's transactions stamp),
//! object versions (an inode's `version`; 0 when it does not exist), and
//! `apply`: one atomic batch with the planned namespace change, the
//! touched inodes stamped with the transaction's version, the client
//! record and the server record. Commits go to the commit thread
//! ([`Committer`]); `committed()` is what it made durable.
//!
//! Must not: decide anything about requests (the target does), or write a
//! change the target did not hand it.

use std::sync::Arc;
use std::time::Duration;

use ptlrpc::target::{ClientRecord, MAX_KEPT_REPLY, ObjId, Persisted, ServerRecord, TargetStore, Txn};
use ptlrpc::wire::{Fid, ObjVersion, Transno};

use crate::error::errno;
use crate::fid;
use crate::inode::Inode;
use crate::ns::{Namespace, Tx};
use crate::store::{Batch, Kv, Table, decode};
use crate::txn::{Committer, EPOCH_KEY, TRANSNO_KEY};

/// How long a synchronous commit may take.
const COMMIT_BOUND: Duration = Duration::from_secs(60);

/// A planned namespace change (see `crate::tgt::service`).
#[derive(Debug)]
pub struct MdtChange {
    /// The namespace transaction.
    pub tx: Tx,
    /// The reply body (kept for reconstruction when larger than a client
    /// record holds).
    pub reply: Vec<u8>,
}

/// The Meta key of `uuid`'s kept reply body in slot `tag` (bodies over
/// [`MAX_KEPT_REPLY`]).
pub fn reply_key(uuid: &str, tag: u16) -> Vec<u8> {
    let mut k = b"reply:".to_vec();
    k.extend_from_slice(uuid.as_bytes());
    k.push(0);
    k.extend_from_slice(&tag.to_be_bytes());
    k
}

/// The MDT's [`TargetStore`].
#[derive(Debug)]
pub struct MdtStore {
    ns: Arc<Namespace>,
    committer: Arc<Committer>,
}

impl MdtStore {
    /// The store of `ns` (mounted deferred), committed by `committer`.
    pub fn new(ns: Arc<Namespace>, committer: Arc<Committer>) -> MdtStore {
        MdtStore { ns, committer }
    }

    fn kv(&self) -> &dyn Kv {
        &**self.ns.kv()
    }

    fn write(&self, b: Batch) {
        if let Err(e) = self.kv().write(b) {
            tracing::error!(error = %e, "MDT record write failed");
        }
    }

    fn server_batch(b: &mut Batch, rec: &ServerRecord) {
        b.put(Table::Meta, EPOCH_KEY, u64::from(rec.epoch).to_be_bytes().to_vec());
        b.put(Table::Meta, TRANSNO_KEY, rec.last_transno.0.to_be_bytes().to_vec());
    }
}

fn read_u64(kv: &dyn Kv, key: &[u8]) -> u64 {
    kv.get(Table::Meta, key)
        .ok()
        .flatten()
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map_or(0, u64::from_be_bytes)
}

impl TargetStore for MdtStore {
    type Change = MdtChange;

    fn load(&self) -> Persisted {
        let kv = self.kv();
        let server = ServerRecord {
            epoch: u32::try_from(read_u64(kv, EPOCH_KEY)).unwrap_or(u32::MAX),
            last_transno: Transno(read_u64(kv, TRANSNO_KEY)),
        };
        let mut clients = Vec::new();
        let res = crate::store::scan(kv, Table::Clients, &[], crate::store::KEY_END, |_, v| {
            match ClientRecord::decode(v) {
                Ok(c) => clients.push(c),
                Err(e) => tracing::error!(error = %e, "corrupt client record skipped"),
            }
            Ok(())
        });
        if let Err(e) = res {
            tracing::error!(error = %e, "reading the client table");
        }
        Persisted { server, clients }
    }

    fn version(&self, obj: ObjId) -> ObjVersion {
        let f = Fid::from_u128(obj.0);
        match self.kv().get(Table::Inodes, &fid::key(f)) {
            Ok(Some(v)) => decode::<Inode>(Table::Inodes, &v).map_or(ObjVersion(0), |i| ObjVersion(i.version)),
            _ => ObjVersion(0),
        }
    }

    fn apply(&mut self, txn: Txn<MdtChange>) -> Result<(), i32> {
        let Txn { transno, version, change, client, server, tag, .. } = txn;
        let (mut b, effects) = change.tx.into_parts(version.0);
        if change.reply.len() > MAX_KEPT_REPLY {
            b.put(Table::Meta, reply_key(&client.uuid, tag), change.reply);
        } else {
            // The slot holds this reply itself: no older body may stand in.
            b.del(Table::Meta, reply_key(&client.uuid, tag));
        }
        b.put(Table::Clients, client.uuid.as_bytes().to_vec(), client.encode());
        MdtStore::server_batch(&mut b, &server);
        self.kv().write(b).map_err(|e| {
            // Dropping `effects` hands its OST objects back.
            tracing::error!(error = %e, transno = transno.0, "MDT transaction not written");
            errno::EIO
        })?;
        self.ns.applied(effects);
        self.ns.txn().applied(transno.0);
        Ok(())
    }

    fn put_client(&mut self, rec: ClientRecord) {
        let mut b = Batch::new();
        b.put(Table::Clients, rec.uuid.as_bytes().to_vec(), rec.encode());
        self.write(b);
    }

    fn remove_client(&mut self, uuid: &str) {
        let mut b = Batch::new();
        b.del(Table::Clients, uuid.as_bytes().to_vec());
        for tag in 0..=ptlrpc::target::MAX_SLOTS {
            b.del(Table::Meta, reply_key(uuid, tag));
        }
        self.write(b);
    }

    fn put_server(&mut self, rec: ServerRecord) {
        let mut b = Batch::new();
        MdtStore::server_batch(&mut b, &rec);
        self.write(b);
        self.ns.txn().set_epoch(rec.epoch);
        let last = self.ns.txn().last();
        if rec.last_transno.0 > last {
            self.ns.txn().applied(rec.last_transno.0);
        }
    }

    fn commit(&mut self) {
        if !self.committer.commit_now(COMMIT_BOUND) {
            tracing::error!("MDT commit did not finish in {COMMIT_BOUND:?}");
        }
    }

    fn commit_async(&mut self) {
        self.committer.ask();
    }

    fn committed(&self) -> Transno {
        Transno(self.ns.txn().committed())
    }
}
