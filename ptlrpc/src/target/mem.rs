//! An in-memory [`TargetStore`] with explicit durable commits, for the
//! simulator and unit tests.
//!
//! Owns: [`MemStore`], two copies of the target's state — live (what
//! requests see) and durable (what the last [`TargetStore::commit`]
//! saved) — and an optional journal of applied transactions that lives in
//! the same state, so a crash rolls it back with everything else. A crash
//! ([`MemStore::crash`]) reverts live to durable.
//!
//! Must not: be used for real data; it holds everything in memory.

use std::collections::BTreeMap;

use super::store::{ClientRecord, ObjId, Persisted, ServerRecord, TargetStore, Txn};
use crate::wire::{ObjVersion, PRE_VERSIONS, Transno, Xid};

/// One applied transaction, as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// Its transno.
    pub transno: Transno,
    /// The client.
    pub uuid: String,
    /// The request's xid.
    pub xid: Xid,
    /// Whether it was a replay.
    pub replay: bool,
    /// The objects' versions just before it.
    pub pre_versions: [ObjVersion; PRE_VERSIONS],
    /// The objects.
    pub objects: Vec<ObjId>,
}

#[derive(Debug, Clone)]
struct State<V> {
    objects: BTreeMap<ObjId, (ObjVersion, V)>,
    clients: BTreeMap<String, ClientRecord>,
    server: ServerRecord,
    journal: Vec<JournalEntry>,
}

impl<V> Default for State<V> {
    fn default() -> Self {
        State {
            objects: BTreeMap::new(),
            clients: BTreeMap::new(),
            server: ServerRecord::default(),
            journal: Vec::new(),
        }
    }
}

/// The in-memory store. Its change type writes values to objects.
#[derive(Debug, Clone)]
pub struct MemStore<V> {
    live: State<V>,
    durable: State<V>,
    journal: bool,
    dirty: bool,
    commits: u64,
}

impl<V: Clone> Default for MemStore<V> {
    fn default() -> Self {
        MemStore::new(false)
    }
}

impl<V: Clone> MemStore<V> {
    /// An empty store; `journal` keeps a journal of every transaction (for
    /// tests: it grows without bound).
    pub fn new(journal: bool) -> MemStore<V> {
        MemStore { live: State::default(), durable: State::default(), journal, dirty: false, commits: 0 }
    }

    /// The node crashed: everything since the last commit is gone.
    pub fn crash(&mut self) {
        self.live = self.durable.clone();
        self.dirty = false;
    }

    /// The live value and version of `obj`.
    pub fn get(&self, obj: ObjId) -> Option<(ObjVersion, &V)> {
        self.live.objects.get(&obj).map(|(v, x)| (*v, x))
    }

    /// The live journal (empty unless journaling).
    pub fn journal(&self) -> &[JournalEntry] {
        &self.live.journal
    }

    /// The durable journal.
    pub fn durable_journal(&self) -> &[JournalEntry] {
        &self.durable.journal
    }

    /// The live client table.
    pub fn clients(&self) -> impl Iterator<Item = &ClientRecord> {
        self.live.clients.values()
    }

    /// The live server record.
    pub fn server(&self) -> ServerRecord {
        self.live.server
    }

    /// Commits done.
    pub fn commits(&self) -> u64 {
        self.commits
    }
}

impl<V: Clone> TargetStore for MemStore<V> {
    type Change = Vec<(ObjId, V)>;

    fn load(&self) -> Persisted {
        Persisted { server: self.live.server, clients: self.live.clients.values().cloned().collect() }
    }

    fn version(&self, obj: ObjId) -> ObjVersion {
        self.live.objects.get(&obj).map_or(ObjVersion(0), |(v, _)| *v)
    }

    fn apply(&mut self, txn: Txn<Self::Change>) -> Result<(), i32> {
        for (obj, value) in txn.change {
            self.live.objects.insert(obj, (txn.version, value));
        }
        for obj in &txn.objects {
            if let Some((v, _)) = self.live.objects.get_mut(obj) {
                *v = txn.version;
            }
        }
        if self.journal {
            self.live.journal.push(JournalEntry {
                transno: txn.transno,
                uuid: txn.client.uuid.clone(),
                xid: txn.xid,
                replay: txn.replay,
                pre_versions: txn.pre_versions,
                objects: txn.objects,
            });
        }
        self.live.clients.insert(txn.client.uuid.clone(), txn.client);
        self.live.server = txn.server;
        self.dirty = true;
        Ok(())
    }

    fn put_client(&mut self, rec: ClientRecord) {
        self.live.clients.insert(rec.uuid.clone(), rec);
        self.dirty = true;
    }

    fn remove_client(&mut self, uuid: &str) {
        self.live.clients.remove(uuid);
        self.dirty = true;
    }

    fn put_server(&mut self, rec: ServerRecord) {
        self.live.server = rec;
        self.dirty = true;
    }

    fn commit(&mut self) {
        if self.dirty {
            self.durable = self.live.clone();
            self.dirty = false;
            self.commits += 1;
        }
    }

    fn committed(&self) -> Transno {
        self.durable.server.last_transno
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(transno: u64, obj: u128, value: u32) -> Txn<Vec<(ObjId, u32)>> {
        Txn {
            transno: Transno(transno),
            version: ObjVersion(transno),
            objects: vec![ObjId(obj)],
            pre_versions: [ObjVersion(0); PRE_VERSIONS],
            change: vec![(ObjId(obj), value)],
            xid: Xid(transno),
            tag: 1,
            client: ClientRecord { uuid: "c".into(), last_transno: Transno(transno), ..ClientRecord::default() },
            server: ServerRecord { epoch: 1, last_transno: Transno(transno) },
            replay: false,
        }
    }

    #[test]
    fn crash_reverts_to_last_commit() {
        let mut s = MemStore::<u32>::new(true);
        s.apply(txn(1, 7, 10)).expect("apply");
        s.commit();
        s.apply(txn(2, 7, 20)).expect("apply");
        assert_eq!(s.get(ObjId(7)).map(|(v, x)| (v, *x)), Some((ObjVersion(2), 20)));
        assert_eq!(s.committed(), Transno(1));
        s.crash();
        assert_eq!(s.get(ObjId(7)).map(|(v, x)| (v, *x)), Some((ObjVersion(1), 10)));
        assert_eq!(s.journal().len(), 1);
        assert_eq!(s.load().clients[0].last_transno, Transno(1));
        assert_eq!(s.version(ObjId(8)), ObjVersion(0));
    }
}
