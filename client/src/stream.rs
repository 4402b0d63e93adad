//! One open file's streaming state: readahead on sequential reads and
//! write-behind of writes, both within that open only.
//!
//! Readahead: when a read starts where the previous one ended, the data
//! comes from a window of [`READAHEAD_WINDOW`] bytes read from the objects
//! at once (parallel BRWs), with the file's size asked at the same time;
//! the next window is fetched while this one is used. Any other read, any
//! write through this open and its close drop the windows. A window is at
//! most one window ahead of the reader and lives only while the stream is
//! sequential: a reader on this open may see another client's write to a
//! range it has already fetched only at its next non-sequential read or
//! open (close-to-open, as without the lock manager nothing more is promised).
//!
//! Write-behind: a write is answered once its data is copied; the BRWs run
//! in the background with at most [`WRITE_BEHIND_BYTES`] in flight per
//! open (below the grant each OST gives a client at connect, so the OSTs
//! never refuse it for space). A write overlapping one in flight waits for
//! everything in flight first (writes to one range land in order). The
//! first failure is kept and returned by the next write, `flush`, fsync or
//! close, like Lustre's asynchronous write errors.
//!
//! Owns: [`Stream`]. Must not: keep data past a close, or serve a read
//! from a window that a write through this open could have changed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::error::{ClientError, Result};
use crate::lov_io::StripedFile;

/// Bytes one readahead window holds.
pub const READAHEAD_WINDOW: usize = 8 << 20;
/// Bytes of writes in flight per open file at most (KiB granularity).
pub const WRITE_BEHIND_BYTES: u64 = 32 << 20;
const WB_KIB: u32 = (WRITE_BEHIND_BYTES >> 10) as u32;

/// Data read ahead: `data` starts at file offset `off`; `eof` when the
/// file (as its objects said then) ends within it.
#[derive(Debug)]
struct Window {
    off: u64,
    data: Vec<u8>,
    eof: bool,
}

impl Window {
    fn end(&self) -> u64 {
        self.off + self.data.len() as u64
    }
}

#[derive(Debug, Default)]
struct ReadAhead {
    /// Where a sequential read would start.
    next: u64,
    cur: Option<Window>,
    pending: Option<(u64, JoinHandle<Result<Window>>)>,
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        if let Some((_, h)) = self.pending.take() {
            h.abort();
        }
    }
}

/// Reads `len` bytes at `off` and the file's size at once; the window
/// holds what lies below the size.
async fn fetch(d: StripedFile, off: u64, len: usize) -> Result<Window> {
    let mut data = vec![0u8; len];
    let (r, g) = tokio::join!(d.read(off, &mut data, u64::MAX), d.glimpse());
    r?;
    let size = g?.size;
    let keep = size.saturating_sub(off).min(len as u64) as usize;
    data.truncate(keep);
    Ok(Window { off, data, eof: off + len as u64 >= size })
}

/// The streaming state of one open file.
#[derive(Debug)]
pub struct Stream {
    ra: Mutex<ReadAhead>,
    wb: Arc<Semaphore>,
    /// Writes in flight: (id, start, end).
    inflight: Arc<Mutex<Vec<(u64, u64, u64)>>>,
    error: Arc<Mutex<Option<ClientError>>>,
    next_id: AtomicU64,
}

impl Default for Stream {
    fn default() -> Stream {
        Stream {
            ra: Mutex::new(ReadAhead::default()),
            wb: Arc::new(Semaphore::new(WB_KIB as usize)),
            inflight: Arc::new(Mutex::new(Vec::new())),
            error: Arc::new(Mutex::new(None)),
            next_id: AtomicU64::new(1),
        }
    }
}

fn closed() -> ClientError {
    ClientError::Local("write-behind closed".into())
}

impl Stream {
    /// Drops the readahead windows.
    pub fn invalidate(&self) {
        *self.ra.lock() = ReadAhead::default();
    }

    /// Reads into `buf` from `off` (bytes read; 0 at the end).
    pub async fn read(&self, d: &StripedFile, off: u64, buf: &mut [u8]) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut st = std::mem::take(&mut *self.ra.lock());
        if off != st.next {
            // Not sequential: read just this, with the size asked at once.
            st = ReadAhead::default();
            let w = fetch(d.clone(), off, buf.len()).await?;
            buf[..w.data.len()].copy_from_slice(&w.data);
            st.next = off + w.data.len() as u64;
            *self.ra.lock() = st;
            return Ok(w.data.len());
        }
        let mut done = 0usize;
        while done < buf.len() {
            let pos = off + done as u64;
            if let Some(w) = st.cur.as_ref().filter(|w| w.off <= pos && pos < w.end()) {
                let from = (pos - w.off) as usize;
                let n = (w.data.len() - from).min(buf.len() - done);
                buf[done..done + n].copy_from_slice(&w.data[from..from + n]);
                done += n;
                continue;
            }
            if st.cur.as_ref().is_some_and(|w| w.eof && pos >= w.end()) {
                break;
            }
            let next = match st.pending.take() {
                Some((p, h)) if p == pos => h.await.map_err(|e| ClientError::Local(format!("readahead: {e}")))??,
                other => {
                    if let Some((_, h)) = other {
                        h.abort();
                    }
                    fetch(d.clone(), pos, READAHEAD_WINDOW).await?
                }
            };
            let (end, eof, empty) = (next.end(), next.eof, next.data.is_empty());
            st.cur = Some(next);
            if empty {
                break;
            }
            if !eof {
                st.pending = Some((end, tokio::spawn(crate::jobid::carry(fetch(d.clone(), end, READAHEAD_WINDOW)))));
            }
        }
        st.next = off + done as u64;
        *self.ra.lock() = st;
        Ok(done)
    }

    /// The first write failure not reported yet.
    fn take_error(&self) -> Result<()> {
        match self.error.lock().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Starts writing `data` at `off`; returns once the data is copied
    /// (and, past [`WRITE_BEHIND_BYTES`] in flight, once room is free).
    pub async fn write_behind(&self, d: &StripedFile, off: u64, data: &[u8]) -> Result<usize> {
        self.take_error()?;
        self.invalidate();
        let end = off + data.len() as u64;
        let overlaps = self.inflight.lock().iter().any(|&(_, s, e)| s < end && off < e);
        if overlaps {
            self.flush().await?;
        }
        let kib = u32::try_from(data.len().div_ceil(1024)).unwrap_or(WB_KIB).clamp(1, WB_KIB);
        let permit = Arc::clone(&self.wb).acquire_many_owned(kib).await.map_err(|_| closed())?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.inflight.lock().push((id, off, end));
        let (d, buf) = (d.clone(), data.to_vec());
        let (inflight, error) = (Arc::clone(&self.inflight), Arc::clone(&self.error));
        let mut write = Box::pin(crate::jobid::carry(async move {
            if let Err(e) = d.write(off, &buf).await {
                error.lock().get_or_insert(e);
            }
            inflight.lock().retain(|x| x.0 != id);
            drop(permit);
        }));
        // Polled once here, the BRW leaves from the writer's thread (a
        // small one is sent whole); the task that waits for its reply then
        // starts off the writer's path instead of before the send. A future
        // answers the waker of its latest poll: the task's from then on.
        let sent = std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx))).await;
        if sent.is_pending() {
            tokio::spawn(write);
        }
        Ok(data.len())
    }

    /// Waits for every write in flight; returns the first failure.
    pub async fn flush(&self) -> Result<()> {
        drop(self.wb.acquire_many(WB_KIB).await.map_err(|_| closed())?);
        self.take_error()
    }

    /// Waits for every write in flight, leaving a failure for whoever
    /// reports it (a later write, flush, fsync or close).
    pub async fn settle(&self) -> Result<()> {
        drop(self.wb.acquire_many(WB_KIB).await.map_err(|_| closed())?);
        Ok(())
    }

    /// Whether writes are in flight.
    pub fn writing(&self) -> bool {
        !self.inflight.lock().is_empty()
    }
}
