//! Bulk data, server-driven: the server GETs a client's pages for a write
//! and PUTs into them for a read, over lnet MDs on the pages themselves.
//!
//! Owns: [`ReqCtx::bulk_get`] / [`ReqCtx::bulk_put`] (a handler's blocking
//! transfers on its worker thread, bounded by the service's bulk timeout,
//! waited out in [`ReqCtx::blocking`] and woken once, by the MD's last
//! event; a read's PUT asks for no ACK, since the client checks the bulk
//! landed before it accepts the reply),
//! CRC32C over pages ([`checksum`]), the write-side verification with a
//! bounded retry of the transfer on mismatch, and the `BulkCorrupt` fault
//! point's corruption ([`corrupt`]).
//!
//! Must not: wait without a bound, or copy the data: the GET lands in pages
//! from `lnet.pool(cpt)` and the PUT leaves from the handler's pages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lnet::{AckReq, Event, EventHandler, EventKind, LnetError, Md, MdBuffer, MdSpec, Target};
use parking_lot::{Condvar, Mutex};

use super::error::BulkError;
use super::handler::ReqCtx;
use crate::fault::FaultKind;
use crate::portals::{BULK_GET_SOURCE_PORTAL, BULK_PUT_SINK_PORTAL};
use crate::wire::BulkDesc;

/// CRC32C over the bytes of `buf`.
pub fn checksum(buf: &MdBuffer) -> u32 {
    buf.io_slices(0, buf.len()).iter().fold(0, |crc, s| crc32c::crc32c_append(crc, s))
}

/// Flips one byte in the middle of `buf` (the `BulkCorrupt` fault).
pub fn corrupt(buf: &mut MdBuffer) {
    let at = buf.len() / 2;
    let mut b = [0u8; 1];
    if buf.read_at(at, &mut b) == 1 {
        b[0] ^= 0x5a;
        buf.write_at(at, &b);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Get,
    Put,
}

/// How long to wait for an MD's last event after unlinking it.
const UNLINK_WAIT: Duration = Duration::from_secs(5);

impl ReqCtx<'_> {
    /// Pages for `len` bytes from this CPT's bulk pool.
    pub fn alloc_bulk(&self, len: usize) -> Result<MdBuffer, BulkError> {
        if len > self.shared.cfg.max_bulk {
            return Err(BulkError::TooBig { len: len as u32, cap: self.shared.cfg.max_bulk });
        }
        let pool = self.shared.lnet.pool(self.cpt as u32);
        Ok(MdBuffer::from_pages_len(pool.alloc_bytes(len)?, len))
    }

    /// A write's data: GETs the client's pages named by `desc` into fresh
    /// pool pages. With checksums on, verifies the client's CRC32C and
    /// retries the transfer (up to the service's `bulk_retries`) on a
    /// mismatch, counting each one.
    pub fn bulk_get(&mut self, desc: &BulkDesc) -> Result<MdBuffer, BulkError> {
        let attempts = 1 + self.shared.cfg.bulk_retries;
        let mut buf = self.alloc_bulk(desc.len as usize)?;
        for attempt in 1..=attempts {
            buf = self.transfer(Dir::Get, desc, buf)?;
            if self.shared.faults.check(FaultKind::BulkCorrupt).is_some() {
                tracing::info!(xid = desc.match_bits, "fault injection: bulk corrupted");
                corrupt(&mut buf);
            }
            if !desc.checksummed() {
                return Ok(buf);
            }
            let got = checksum(&buf);
            if got == desc.cksum {
                return Ok(buf);
            }
            self.shared.metrics.bulk_cksum_errors.inc();
            tracing::warn!(peer = %self.peer, xid = desc.match_bits, attempt, want = desc.cksum, got,
                "bulk write checksum mismatch");
        }
        Err(BulkError::Checksum { attempts })
    }

    /// A read's data: PUTs `data` into the client's pages named by `desc`
    /// and waits until the pages have left (no ACK: the client checks the
    /// bulk arrived before it takes the reply). Returns the pages and, with checksums on,
    /// their CRC32C for the reply (else 0).
    pub fn bulk_put(&mut self, desc: &BulkDesc, data: MdBuffer) -> Result<(MdBuffer, u32), BulkError> {
        if data.len() < desc.len as usize {
            return Err(BulkError::TooBig { len: desc.len, cap: data.len() });
        }
        let cksum = if desc.checksummed() { checksum(&data) } else { 0 };
        let data = self.transfer(Dir::Put, desc, data)?;
        Ok((data, cksum))
    }

    /// One GET or PUT with the pages of `buf`; returns them when lnet is
    /// done with them.
    fn transfer(&self, dir: Dir, desc: &BulkDesc, buf: MdBuffer) -> Result<MdBuffer, BulkError> {
        let r = self.transfer_inner(dir, desc, buf);
        if r.is_err() {
            self.shared.metrics.bulk_errors.inc();
        }
        r
    }

    fn transfer_inner(&self, dir: Dir, desc: &BulkDesc, buf: MdBuffer) -> Result<MdBuffer, BulkError> {
        if self.inline {
            tracing::error!(peer = %self.peer, xid = desc.match_bits, "bulk transfer from an inline handler refused");
            return Err(BulkError::Inline);
        }
        let lnet = &self.shared.lnet;
        let want = desc.len;
        let done = Arc::new(Completion::default());
        let on_event = Arc::clone(&done);
        // The worker is woken once, by the MD's last event.
        let cb = Arc::new(move |ev: Event| on_event.record(&ev));
        let md = lnet.bind(MdSpec::new(buf, EventHandler::Callback(cb)))?;
        // A read's PUT asks for no ACK: the client accepts the reply only
        // once its sink MD has taken the whole PUT (`Client::bulk_read`), as
        // a Lustre client checks its bulk MD's events before the reply, so
        // the reply goes as soon as the pages have left.
        let started = match dir {
            Dir::Get => lnet.get(&md, Target::new(self.peer, BULK_GET_SOURCE_PORTAL.0, desc.match_bits)),
            Dir::Put => {
                lnet.put(&md, Target::new(self.peer, BULK_PUT_SINK_PORTAL.0, desc.match_bits), AckReq::NoAck, 0)
            }
        };
        if let Err(e) = started {
            let _ = lnet.unlink(&md);
            return Err(e.into());
        }
        let deadline = Instant::now() + self.shared.cfg.bulk_timeout;
        let outcome = self.blocking(|| {
            let mut st = done.state.lock();
            while !st.unlinked {
                if done.cv.wait_until(&mut st, deadline).timed_out() && !st.unlinked {
                    drop(st);
                    let _ = lnet.unlink(&md);
                    // Wait (bounded) for lnet to let go of the pages.
                    let mut st = done.state.lock();
                    let until = Instant::now() + UNLINK_WAIT;
                    while !st.unlinked && !done.cv.wait_until(&mut st, until).timed_out() {}
                    return Err(BulkError::Timeout);
                }
            }
            match st.error.take() {
                Some(e) => Err(e),
                None => Ok(st.moved),
            }
        });
        let moved = outcome?;
        let got = moved.unwrap_or(0);
        if dir == Dir::Get && got < want {
            return Err(BulkError::Short { got, want });
        }
        reclaim(md, UNLINK_WAIT).map_err(|_| BulkError::Lnet(LnetError::Invalid("bulk MD still referenced".into())))
    }
}

/// What a bulk MD's events have said so far; the waiting worker is woken
/// only by the last one.
#[derive(Default)]
struct Completion {
    state: Mutex<CompletionState>,
    cv: Condvar,
}

#[derive(Default)]
struct CompletionState {
    /// The first failure an event reported.
    error: Option<BulkError>,
    /// Bytes moved, from a GET's REPLY (or an ACK).
    moved: Option<u32>,
    unlinked: bool,
}

impl Completion {
    fn record(&self, ev: &Event) {
        let mut st = self.state.lock();
        if let Err(e) = &ev.status
            && st.error.is_none()
        {
            st.error = Some(e.clone().into());
        }
        if matches!(ev.kind, EventKind::Reply | EventKind::Ack) {
            st.moved = Some(ev.mlength);
        }
        if ev.unlinked {
            st.unlinked = true;
            drop(st);
            self.cv.notify_one();
        }
    }
}

/// Takes an MD's pages back after its last event. An LND may still hold a
/// handle for a moment after that event (lo drops its message after
/// completing it), so this yields and tries again, for at most `wait`.
pub(super) fn reclaim(mut md: Md, wait: Duration) -> Result<MdBuffer, Md> {
    let deadline = Instant::now() + wait;
    loop {
        match md.into_buffer() {
            Ok(b) => return Ok(b),
            Err(m) if Instant::now() < deadline => {
                md = m;
                std::thread::yield_now();
            }
            Err(m) => return Err(m),
        }
    }
}
