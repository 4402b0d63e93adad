//! Transactions: transnos, versions and the commit thread.
//!
//! Every modifying operation is one atomic batch written without fsync,
//! carrying the new `last_transno`. The commit thread makes a durable
//! commit ([`Kv::persist`]) every interval (or when asked) and only then
//! advances `last_committed` to the last transno applied before it — what
//! replies report, and what clients drop from their replay lists.
//! Transnos of a boot start at `epoch << 32` (the epoch is bumped at each
//! boot), so a transno is also the version it gives objects
//! (`seeds/002`: versions are `epoch << 32 | transno`).
//!
//! Owns: [`TxnState`] (epoch, last transno, last committed) and
//! [`Committer`] (the thread).
//!
//! Must not: hand out a transno outside the namespace's write lock, or
//! advance `last_committed` before the commit that covers it returned.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::error::Result;
use crate::store::{Batch, Kv, Table};

/// Meta key of the boot epoch.
pub const EPOCH_KEY: &[u8] = b"epoch";
/// Meta key of the last transno.
pub const TRANSNO_KEY: &[u8] = b"last_transno";

/// Transaction counters.
#[derive(Debug)]
pub struct TxnState {
    epoch: AtomicU32,
    last: AtomicU64,
    committed: AtomicU64,
}

fn read_u64(kv: &dyn Kv, key: &[u8]) -> Result<u64> {
    Ok(kv.get(Table::Meta, key)?.and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok()).map_or(0, u64::from_be_bytes))
}

impl TxnState {
    /// Boots: bumps the epoch durably and starts transnos at
    /// `epoch << 32`. Returns the state and the previous boot's last
    /// transno (what survived).
    pub fn boot(kv: &dyn Kv) -> Result<(TxnState, u64)> {
        let prev_epoch = read_u64(kv, EPOCH_KEY)?;
        let prev_last = read_u64(kv, TRANSNO_KEY)?;
        let epoch = u32::try_from(prev_epoch + 1).unwrap_or(u32::MAX);
        let start = u64::from(epoch) << 32;
        let mut b = Batch::new();
        b.put(Table::Meta, EPOCH_KEY, u64::from(epoch).to_be_bytes().to_vec());
        b.put(Table::Meta, TRANSNO_KEY, start.to_be_bytes().to_vec());
        kv.write(b)?;
        kv.persist()?;
        Ok((
            TxnState { epoch: AtomicU32::new(epoch), last: AtomicU64::new(start), committed: AtomicU64::new(start) },
            prev_last,
        ))
    }

    /// The counters as stored, nothing bumped: the target framework owns
    /// the epoch and the transnos (`crate::tgt`); `last` and `committed`
    /// start at the stored last transno (what survived).
    pub fn adopt(kv: &dyn Kv) -> Result<TxnState> {
        let epoch = u32::try_from(read_u64(kv, EPOCH_KEY)?).unwrap_or(u32::MAX);
        let last = read_u64(kv, TRANSNO_KEY)?;
        Ok(TxnState { epoch: AtomicU32::new(epoch), last: AtomicU64::new(last), committed: AtomicU64::new(last) })
    }

    /// The target booted with `epoch` (deferred mode).
    pub fn set_epoch(&self, epoch: u32) {
        self.epoch.store(epoch, Ordering::Release);
    }

    /// The boot epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The next transno; the caller puts [`TxnState::stamp`] in its batch
    /// and calls [`TxnState::applied`] after writing it. Under the write lock.
    pub fn next(&self) -> u64 {
        self.last.load(Ordering::Acquire) + 1
    }

    /// Adds the transno record to `b`.
    pub fn stamp(b: &mut Batch, transno: u64) {
        b.put(Table::Meta, TRANSNO_KEY, transno.to_be_bytes().to_vec());
    }

    /// `transno`'s batch is written.
    pub fn applied(&self, transno: u64) {
        self.last.store(transno, Ordering::Release);
    }

    /// The last transno applied.
    pub fn last(&self) -> u64 {
        self.last.load(Ordering::Acquire)
    }

    /// The last transno durably committed.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Sets `last_committed` (deferred mode: the store's commit thread
    /// persisted up to `upto`).
    pub fn set_committed(&self, upto: u64) {
        self.committed.fetch_max(upto, Ordering::AcqRel);
    }

    /// Persists and advances `last_committed`. Returns the new value.
    pub fn commit(&self, kv: &dyn Kv) -> Result<u64> {
        let upto = self.last();
        kv.persist()?;
        self.committed.fetch_max(upto, Ordering::AcqRel);
        Ok(self.committed())
    }
}

#[derive(Debug, Default)]
struct Ctl {
    stop: bool,
    asked: bool,
    commits: u64,
}

/// The commit thread.
#[derive(Debug)]
pub struct Committer {
    ctl: Arc<(Mutex<Ctl>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    /// Starts committing `txn` on `kv` every `interval`.
    pub fn start(kv: Arc<dyn Kv>, txn: Arc<TxnState>, interval: Duration) -> Committer {
        let ctl: Arc<(Mutex<Ctl>, Condvar)> = Arc::default();
        let c = Arc::clone(&ctl);
        let thread = std::thread::Builder::new()
            .name("mdt-commit".into())
            .spawn(move || {
                loop {
                    {
                        let (m, cv) = &*c;
                        let mut g = m.lock();
                        if !g.stop && !g.asked {
                            cv.wait_for(&mut g, interval);
                        }
                        if g.stop {
                            break;
                        }
                        g.asked = false;
                    }
                    if txn.last() > txn.committed()
                        && let Err(e) = txn.commit(&*kv)
                    {
                        tracing::error!(error = %e, "commit failed");
                    }
                    let (m, cv) = &*c;
                    m.lock().commits += 1;
                    cv.notify_all();
                }
                if let Err(e) = txn.commit(&*kv) {
                    tracing::error!(error = %e, "final commit failed");
                }
            })
            .ok();
        Committer { ctl, thread }
    }

    /// Asks for a commit now and waits (bounded) until one has run.
    pub fn commit_now(&self, bound: Duration) -> bool {
        let (m, cv) = &*self.ctl;
        let mut g = m.lock();
        let target = g.commits + 2;
        g.asked = true;
        cv.notify_all();
        let deadline = std::time::Instant::now() + bound;
        while g.commits < target {
            if cv.wait_until(&mut g, deadline).timed_out() {
                return false;
            }
            if g.commits < target {
                g.asked = true;
                cv.notify_all();
            }
        }
        true
    }

    /// Asks for a commit soon, without waiting.
    pub fn ask(&self) {
        let (m, cv) = &*self.ctl;
        m.lock().asked = true;
        cv.notify_all();
    }

    /// Stops the thread after a final commit.
    pub fn stop(&mut self) {
        {
            let (m, cv) = &*self.ctl;
            m.lock().stop = true;
            cv.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.stop();
    }
}
