//! Bulk transfers a reply waits for without a worker waiting with it: the
//! handler starts the GET or PUT and returns; lnet's thread that delivers
//! the transfer's last event finishes it (checksum, bounded retry) and
//! answers the request, as lnet-selftest's server answers in its event
//! callback. A handler serving inline ([`super::Handler::inline`]) may
//! start one too: nothing here waits.
//!
//! Owns: [`ReqCtx::bulk_get_then`] (and `bulk_get_into_then`) /
//! [`ReqCtx::bulk_put_then`], the
//! per-transfer state their MD callbacks share, and the hand-off of the
//! reply to `worker::answer` (service time, metrics, the reply itself).
//! Each transfer is watched by the service's timer
//! ([`Shared::watch_bulk`]) and unlinked at the bulk timeout.
//!
//! Must not: block (it runs in lnet's callbacks), or copy the data.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Weak};

use lnet::{AckReq, Event, EventHandler, EventKind, MdBuffer, MdSpec, Nid, Target};
use parking_lot::Mutex;

use super::bulk::{checksum, corrupt};
use super::error::{BulkError, Errno};
use super::handler::{Reply, ReqCtx};
use super::service::Shared;
use super::worker::{Answer, answer};
use crate::fault::FaultKind;
use crate::portals::{BULK_GET_SOURCE_PORTAL, BULK_PUT_SINK_PORTAL};
use crate::time::Time;
use crate::wire::BulkDesc;

/// What a write's continuation gets: the client's pages, or why not.
type GetDone = Box<dyn FnOnce(Result<MdBuffer, BulkError>) -> Result<Reply, Errno> + Send>;
/// What a read's continuation gets: the pages and their CRC32C (0 without
/// checksums), or why not.
type PutDone = Box<dyn FnOnce(Result<(MdBuffer, u32), BulkError>) -> Result<Reply, Errno> + Send>;

enum Then {
    Get(GetDone),
    Put(PutDone, u32),
}

/// One deferred transfer: what its MD's events add up to, and what to do
/// with them.
struct Transfer {
    shared: Weak<Shared>,
    answer: Answer,
    peer: Nid,
    desc: BulkDesc,
    state: Mutex<State>,
}

struct State {
    then: Option<Then>,
    /// Attempts left after the current one (a write's checksum mismatch).
    retries: u32,
    attempt: u32,
    error: Option<BulkError>,
    moved: Option<u32>,
    /// The timer's key for the current attempt (its MD's cookie), while
    /// it runs: events of any other MD are ignored.
    watch: Option<(Time, u64)>,
}

impl ReqCtx<'_> {
    /// A write's data, with the reply deferred: GETs the client's pages
    /// named by `desc` into fresh pool pages and returns at once. When the
    /// transfer ends (checksum verified and the transfer retried on a
    /// mismatch, as [`ReqCtx::bulk_get`] does), `then` runs on the lnet
    /// thread that completed it and its result answers the request
    /// (service time, metrics and reply as from the worker). `then` must
    /// not block. The handler returns what this returns; an `Err` (the
    /// transfer could not start) is the handler's answer, and `then` does
    /// not run.
    pub fn bulk_get_then(
        &mut self,
        desc: &BulkDesc,
        then: impl FnOnce(Result<MdBuffer, BulkError>) -> Result<Reply, Errno> + Send + 'static,
    ) -> Result<Reply, Errno> {
        let buf = self.alloc_bulk(desc.len as usize)?;
        self.bulk_get_into_then(desc, buf, then)
    }

    /// As [`ReqCtx::bulk_get_then`], into the caller's pages `buf` (of
    /// `desc.len` bytes), e.g. kept from an earlier request.
    pub fn bulk_get_into_then(
        &mut self,
        desc: &BulkDesc,
        buf: MdBuffer,
        then: impl FnOnce(Result<MdBuffer, BulkError>) -> Result<Reply, Errno> + Send + 'static,
    ) -> Result<Reply, Errno> {
        if buf.len() != desc.len as usize {
            return Err(BulkError::TooBig { len: desc.len, cap: buf.len() }.into());
        }
        self.defer(desc, buf, Then::Get(Box::new(then)), self.shared.cfg.bulk_retries)
    }

    /// A read's data, with the reply deferred: PUTs `data` into the
    /// client's pages named by `desc` (no ACK, as [`ReqCtx::bulk_put`])
    /// and returns at once; `then` gets the pages back and, with checksums
    /// on, their CRC32C once they have left, on lnet's thread, and its
    /// result answers the request. As [`ReqCtx::bulk_get_then`] otherwise.
    pub fn bulk_put_then(
        &mut self,
        desc: &BulkDesc,
        data: MdBuffer,
        then: impl FnOnce(Result<(MdBuffer, u32), BulkError>) -> Result<Reply, Errno> + Send + 'static,
    ) -> Result<Reply, Errno> {
        if data.len() < desc.len as usize {
            return Err(BulkError::TooBig { len: desc.len, cap: data.len() }.into());
        }
        let cksum = if desc.checksummed() { checksum(&data) } else { 0 };
        self.defer(desc, data, Then::Put(Box::new(then), cksum), 0)
    }

    fn defer(&mut self, desc: &BulkDesc, buf: MdBuffer, then: Then, retries: u32) -> Result<Reply, Errno> {
        // Allowed inline too: starting a transfer does not wait, and its
        // completion answers on whichever lnet thread delivers it.
        if self.deferred.get() {
            tracing::error!(peer = %self.peer, xid = desc.match_bits, "a second deferred bulk transfer refused");
            return Err(Errno::EIO);
        }
        let t = Arc::new(Transfer {
            shared: Arc::downgrade(self.shared),
            answer: self.answer,
            peer: self.peer,
            desc: *desc,
            state: Mutex::new(State { then: Some(then), retries, attempt: 1, error: None, moved: None, watch: None }),
        });
        if let Err(e) = t.start(self.shared, buf) {
            self.shared.metrics.bulk_errors.inc();
            return Err(e.into());
        }
        self.deferred.set(true);
        Ok(Reply::deferred())
    }
}

impl Transfer {
    fn is_get(&self) -> bool {
        matches!(self.state.lock().then, Some(Then::Get(_)))
    }

    /// Starts one attempt over `buf`. On failure nothing was started and
    /// the pages are dropped.
    fn start(self: &Arc<Self>, shared: &Shared, buf: MdBuffer) -> Result<(), BulkError> {
        let lnet = &shared.lnet;
        let get = self.is_get();
        let me = Arc::clone(self);
        let cb = Arc::new(move |ev: Event| me.on_event(ev));
        let md = lnet.bind(MdSpec::new(buf, EventHandler::Callback(cb)))?;
        let deadline = shared.clock.now() + shared.cfg.bulk_timeout;
        {
            let mut st = self.state.lock();
            st.watch = Some((deadline, md.cookie()));
            st.error = None;
            st.moved = None;
        }
        shared.watch_bulk(deadline, md.clone());
        let started = if get {
            lnet.get(&md, Target::new(self.peer, BULK_GET_SOURCE_PORTAL.0, self.desc.match_bits))
        } else {
            lnet.put(&md, Target::new(self.peer, BULK_PUT_SINK_PORTAL.0, self.desc.match_bits), AckReq::NoAck, 0)
        };
        if let Err(e) = started {
            shared.unwatch_bulk(deadline, md.cookie());
            self.state.lock().watch = None;
            let _ = lnet.unlink(&md);
            return Err(e.into());
        }
        Ok(())
    }

    fn on_event(self: &Arc<Self>, ev: Event) {
        let mut st = self.state.lock();
        if st.watch.is_none_or(|(_, cookie)| cookie != ev.md.cookie()) {
            // An attempt that never started (its unlink's event): the
            // caller of `start` reports that failure.
            return;
        }
        if let Err(e) = &ev.status
            && st.error.is_none()
        {
            st.error = Some(e.clone().into());
        }
        if matches!(ev.kind, EventKind::Reply | EventKind::Ack) {
            st.moved = Some(ev.mlength);
        }
        if !ev.unlinked {
            return;
        }
        let watch = st.watch.take();
        let error = st.error.take();
        let moved = st.moved.take();
        drop(st);
        let Some(shared) = self.shared.upgrade() else { return };
        if let Some((deadline, cookie)) = watch {
            shared.unwatch_bulk(deadline, cookie);
        }
        // The last event: lnet is done with the pages (an LND may still
        // hold a handle a moment, so they are taken out, not unwrapped).
        let buf = std::mem::replace(&mut *ev.md.lock(), MdBuffer::Inline(Vec::new()));
        drop(ev);
        let outcome = match error {
            Some(e) => Err(e),
            None => self.check(&shared, buf, moved),
        };
        match outcome {
            Ok(Some(buf)) => self.finish(&shared, Ok(buf)),
            Ok(None) => {} // retried
            Err(e) => {
                shared.metrics.bulk_errors.inc();
                self.finish(&shared, Err(e));
            }
        }
    }

    /// A successful attempt's pages: `Some` when done, `None` when a
    /// write's checksum mismatch started another attempt.
    fn check(
        self: &Arc<Self>,
        shared: &Shared,
        mut buf: MdBuffer,
        moved: Option<u32>,
    ) -> Result<Option<MdBuffer>, BulkError> {
        if !self.is_get() {
            return Ok(Some(buf));
        }
        let want = self.desc.len;
        let got = moved.unwrap_or(0);
        if got < want {
            return Err(BulkError::Short { got, want });
        }
        if shared.faults.check(FaultKind::BulkCorrupt).is_some() {
            tracing::info!(xid = self.desc.match_bits, "fault injection: bulk corrupted");
            corrupt(&mut buf);
        }
        if !self.desc.checksummed() {
            return Ok(Some(buf));
        }
        let got = checksum(&buf);
        if got == self.desc.cksum {
            return Ok(Some(buf));
        }
        shared.metrics.bulk_cksum_errors.inc();
        let (attempt, retry) = {
            let mut st = self.state.lock();
            let retry = st.retries > 0;
            if retry {
                st.retries -= 1;
                st.attempt += 1;
            }
            (st.attempt, retry)
        };
        tracing::warn!(peer = %self.peer, xid = self.desc.match_bits, attempt, want = self.desc.cksum, got,
            "bulk write checksum mismatch");
        if !retry {
            return Err(BulkError::Checksum { attempts: attempt });
        }
        self.start(shared, buf)?;
        Ok(None)
    }

    /// Runs the continuation and answers the request with its result.
    fn finish(&self, shared: &Shared, pages: Result<MdBuffer, BulkError>) {
        let Some(then) = self.state.lock().then.take() else { return };
        let run = AssertUnwindSafe(|| match then {
            Then::Get(f) => f(pages),
            Then::Put(f, cksum) => f(pages.map(|b| (b, cksum))),
        });
        let result = catch_unwind(run).unwrap_or_else(|_| {
            tracing::error!(xid = self.desc.match_bits, "bulk continuation panicked; answering -EIO");
            Err(Errno::EIO)
        });
        answer(shared, &self.answer, result);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use lnet::{Lnet, LnetConfig, NetConfig};

    use super::*;
    use crate::driver::{EchoHandler, Service, ServiceConfig};
    use crate::fault::FaultInjector;

    /// The service's timer unlinks a watched transfer whose deadline
    /// passed (a peer that never answers a GET), and forgets it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_timer_unlinks_a_transfer_past_its_deadline() {
        let addr = 0x7e57_0000 + std::process::id() % 4096;
        let lnet =
            Lnet::start(LnetConfig { nets: vec![NetConfig::Lo { addr }], ..LnetConfig::default() }).await.unwrap();
        let svc = Service::start(
            &lnet,
            ServiceConfig::echo(),
            Arc::new(EchoHandler::new()),
            Arc::new(FaultInjector::default()),
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let cb = Arc::new(move |ev: Event| {
            if ev.unlinked {
                let _ = tx.send(());
            }
        });
        let md = lnet.bind(MdSpec::new(MdBuffer::Inline(vec![0; 16]), EventHandler::Callback(cb))).unwrap();
        let shared = Arc::clone(&svc.shared);
        shared.watch_bulk(shared.clock.now(), md);
        let unlinked = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(10))).await.unwrap();
        unlinked.expect("the timer unlinked it");
        assert!(shared.at.lock().bulk.is_empty(), "and forgot it");
        drop(shared);
        svc.shutdown();
        lnet.shutdown();
    }
}
