//! A small file-backed [`TargetStore`]: an append-only log in a directory,
//! durable at each commit, that survives `kill -9` and power loss.
//!
//! Owns: [`FileStore`] — the live state in memory (objects with versions
//! and byte values, the client table, the server record), an append-only
//! log (`target.log`, records framed and checksummed by `log`) written as
//! transactions apply, and the commit thread. [`TargetStore::commit`]
//! appends a commit mark and hands it to the commit thread, which
//! `fdatasync`s the log and only then advances [`TargetStore::committed`]
//! — so `last_committed` never names a transno a power cut could lose.
//! Opening replays the log up to its last commit mark and truncates what
//! follows (records of the transaction group a crash interrupted, or a torn
//! frame). An exclusive lock on the log keeps a second process out.
//! [`read_journal`] lists the committed transactions of a directory's log
//! (tests check that nothing ran twice).
//!
//! Must not: claim a commit it could not make durable: after a write or
//! sync error the store logs it once and `committed()` stops advancing.
//! The log is never compacted (the mdt and ost stores replace this one);
//! it is for tests and the kv demo target.

mod log;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use thiserror::Error;

use crate::target::{ClientRecord, JournalEntry, ObjId, Persisted, ServerRecord, TargetStore, Txn};
use crate::wire::{ObjVersion, PRE_VERSIONS, Transno, Xid};
use log::LogRec;

/// The log's file name inside the store's directory.
pub const LOG_FILE: &str = "target.log";

/// Why a store could not be opened or read.
#[derive(Debug, Error)]
pub enum StoreError {
    /// An I/O error on `path`.
    #[error("{path}: {err}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        err: std::io::Error,
    },
    /// Another process holds the store.
    #[error("{0} is locked by another process")]
    Locked(PathBuf),
    /// A record could not be archived.
    #[error("encoding a log record: {0}")]
    Encode(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |err| StoreError::Io { path: path.to_path_buf(), err }
}

/// The value of a key: a version and bytes.
type Object = (ObjVersion, Vec<u8>);

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<ObjId, Object>,
    clients: BTreeMap<String, ClientRecord>,
    server: ServerRecord,
}

impl State {
    /// A logged client record (its CRC passed; one that still does not
    /// decode is reported and skipped).
    fn put_client(&mut self, bytes: &[u8]) {
        match ClientRecord::decode(bytes) {
            Ok(c) => {
                self.clients.insert(c.uuid.clone(), c);
            }
            Err(e) => tracing::error!(error = %e, "a logged client record is skipped"),
        }
    }

    fn apply(&mut self, rec: &LogRec) {
        match rec {
            LogRec::Txn { version, objects, change, client, epoch, last_transno, .. } => {
                let version = ObjVersion(*version);
                for (obj, value) in change {
                    self.objects.insert(ObjId(*obj), (version, value.clone()));
                }
                for obj in objects {
                    if let Some((v, _)) = self.objects.get_mut(&ObjId(*obj)) {
                        *v = version;
                    }
                }
                self.put_client(client);
                self.server = log::server_record(*epoch, *last_transno);
            }
            LogRec::PutClient(c) => self.put_client(c),
            LogRec::RemoveClient(uuid) => {
                self.clients.remove(uuid);
            }
            LogRec::PutServer { epoch, last_transno } => self.server = log::server_record(*epoch, *last_transno),
            LogRec::Commit { .. } => {}
        }
    }
}

/// What the store and its commit thread share.
#[derive(Debug, Default)]
struct Durable {
    committed: AtomicU64,
    failed: AtomicBool,
    syncs: AtomicU64,
    lock: Mutex<()>,
    synced: Condvar,
}

impl Durable {
    fn fail(&self, what: &str, err: &dyn std::fmt::Display) {
        if !self.failed.swap(true, Ordering::AcqRel) {
            tracing::error!(err = %err, "target store: {what} failed; commits stop advancing");
        }
    }
}

/// The file-backed store. See the module docs.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    state: State,
    writer: BufWriter<File>,
    dirty: bool,
    durable: Arc<Durable>,
    /// Commit marks for the commit thread (taken on drop to stop it).
    to_sync: Option<mpsc::Sender<Transno>>,
    thread: Option<JoinHandle<()>>,
    commits: u64,
}

impl FileStore {
    /// Opens (creating if needed) the store in `dir`: replays its log up to
    /// the last commit mark, truncates the rest, takes the lock and starts
    /// the commit thread.
    pub fn open(dir: &Path) -> Result<FileStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(LOG_FILE);
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io(&path))?;
        file.try_lock().map_err(|_| StoreError::Locked(path.clone()))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io(&path))?;
        let contents = log::read_log(&bytes);
        if contents.discarded > 0 || contents.torn {
            tracing::info!(path = %path.display(), discarded = contents.discarded, torn = contents.torn,
                "target store: dropping the log's uncommitted tail");
        }
        file.set_len(contents.committed_len).map_err(io(&path))?;
        file.sync_all().map_err(io(&path))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
        let mut state = State::default();
        for r in &contents.records {
            state.apply(r);
        }
        let durable = Arc::new(Durable::default());
        durable.committed.store(state.server.last_transno.0, Ordering::Release);
        let sync_file = file.try_clone().map_err(io(&path))?;
        let (to_sync, rx) = mpsc::channel();
        let d = Arc::clone(&durable);
        let thread = std::thread::Builder::new()
            .name("target-commit".into())
            .spawn(move || commit_thread(&sync_file, &rx, &d))
            .map_err(io(&path))?;
        let append = OpenOptions::new().append(true).open(&path).map_err(io(&path))?;
        tracing::info!(path = %path.display(), records = contents.records.len(),
            last_transno = state.server.last_transno.0, clients = state.clients.len(), "target store opened");
        Ok(FileStore {
            dir: dir.to_path_buf(),
            state,
            writer: BufWriter::with_capacity(64 << 10, append),
            dirty: false,
            durable,
            to_sync: Some(to_sync),
            thread: Some(thread),
            commits: 0,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The live value and version of `obj`.
    pub fn get(&self, obj: ObjId) -> Option<(ObjVersion, &[u8])> {
        self.state.objects.get(&obj).map(|(v, x)| (*v, x.as_slice()))
    }

    /// Commit marks written since open.
    pub fn commits(&self) -> u64 {
        self.commits
    }

    /// Syncs the commit thread has completed since open.
    pub fn syncs(&self) -> u64 {
        self.durable.syncs.load(Ordering::Acquire)
    }

    /// Waits (blocking, at most `timeout`) until `committed()` reaches `t`.
    /// Returns whether it did.
    pub fn wait_committed(&self, t: Transno, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.durable.lock.lock();
        while self.committed() < t {
            if self.failed() || self.durable.synced.wait_until(&mut guard, deadline).timed_out() {
                return self.committed() >= t;
            }
        }
        true
    }

    /// Whether a write or sync failed (commits no longer advance).
    pub fn failed(&self) -> bool {
        self.durable.failed.load(Ordering::Acquire)
    }

    fn append(&mut self, rec: &LogRec) {
        if self.failed() {
            return;
        }
        let written = log::encode(rec).and_then(|b| self.writer.write_all(&b).map_err(io(&self.dir)));
        if let Err(e) = written {
            self.durable.fail("appending to the log", &e);
        }
        self.dirty = true;
    }
}

impl Drop for FileStore {
    /// Stops the commit thread (after its last sync) so the lock is free
    /// once this returns. Records after the last commit mark are left for
    /// the next open to drop.
    fn drop(&mut self) {
        let _ = self.writer.flush();
        self.to_sync = None;
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("target store: the commit thread panicked");
        }
    }
}

/// Syncs the log for each commit mark handed over (coalescing a backlog)
/// and only then publishes the transno it covers.
fn commit_thread(file: &File, rx: &mpsc::Receiver<Transno>, durable: &Durable) {
    while let Ok(mut t) = rx.recv() {
        while let Ok(more) = rx.try_recv() {
            t = t.max(more);
        }
        if durable.failed.load(Ordering::Acquire) {
            continue;
        }
        match file.sync_data() {
            Ok(()) => {
                let _guard = durable.lock.lock();
                durable.committed.fetch_max(t.0, Ordering::AcqRel);
                durable.syncs.fetch_add(1, Ordering::AcqRel);
                durable.synced.notify_all();
            }
            Err(e) => durable.fail("syncing the log", &e),
        }
    }
}

impl TargetStore for FileStore {
    type Change = Vec<(ObjId, Vec<u8>)>;

    fn load(&self) -> Persisted {
        Persisted { server: self.state.server, clients: self.state.clients.values().cloned().collect() }
    }

    fn version(&self, obj: ObjId) -> ObjVersion {
        self.state.objects.get(&obj).map_or(ObjVersion(0), |(v, _)| *v)
    }

    fn apply(&mut self, txn: Txn<Self::Change>) -> Result<(), i32> {
        let rec = LogRec::Txn {
            transno: txn.transno.0,
            version: txn.version.0,
            replay: txn.replay,
            objects: txn.objects.iter().map(|o| o.0).collect(),
            pre_versions: txn.pre_versions.iter().map(|v| v.0).collect(),
            change: txn.change.into_iter().map(|(o, v)| (o.0, v)).collect(),
            xid: txn.xid.0,
            client: txn.client.encode(),
            epoch: txn.server.epoch,
            last_transno: txn.server.last_transno.0,
        };
        self.append(&rec);
        self.state.apply(&rec);
        Ok(())
    }

    fn put_client(&mut self, rec: ClientRecord) {
        let r = LogRec::PutClient(rec.encode());
        self.append(&r);
        self.state.apply(&r);
    }

    fn remove_client(&mut self, uuid: &str) {
        let r = LogRec::RemoveClient(uuid.to_string());
        self.append(&r);
        self.state.apply(&r);
    }

    fn put_server(&mut self, rec: ServerRecord) {
        let r = LogRec::server(rec.epoch, rec.last_transno);
        self.append(&r);
        self.state.apply(&r);
    }

    fn commit(&mut self) {
        if !self.dirty || self.failed() {
            return;
        }
        let t = self.state.server.last_transno;
        self.append(&LogRec::Commit { last_transno: t.0 });
        if let Err(e) = self.writer.flush() {
            self.durable.fail("writing the log", &e);
            return;
        }
        self.dirty = false;
        self.commits += 1;
        if self.to_sync.as_ref().is_none_or(|s| s.send(t).is_err()) {
            self.durable.fail("handing a commit to the commit thread", &"the thread is gone");
        }
    }

    fn committed(&self) -> Transno {
        Transno(self.durable.committed.load(Ordering::Acquire))
    }
}

/// The committed transactions in `dir`'s log, in log order (read only; the
/// store may be open in another process).
pub fn read_journal(dir: &Path) -> Result<Vec<JournalEntry>, StoreError> {
    let path = dir.join(LOG_FILE);
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    let out = log::read_log(&bytes)
        .records
        .into_iter()
        .filter_map(|r| match r {
            LogRec::Txn { transno, replay, objects, pre_versions, client, xid, .. } => {
                let mut pre = [ObjVersion(0); PRE_VERSIONS];
                for (p, v) in pre.iter_mut().zip(&pre_versions) {
                    *p = ObjVersion(*v);
                }
                let c = ClientRecord::decode(&client).ok()?;
                Some(JournalEntry {
                    transno: Transno(transno),
                    uuid: c.uuid,
                    xid: Xid(xid),
                    replay,
                    pre_versions: pre,
                    objects: objects.into_iter().map(ObjId).collect(),
                })
            }
            _ => None,
        })
        .collect();
    Ok(out)
}

#[cfg(test)]
mod tests;
