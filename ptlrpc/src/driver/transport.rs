//! The lnet plumbing every client-side sender shares: reply MDs and
//! request PUTs.
//!
//! Owns: [`attach_reply`] — a persistent reply MD matching one server NID
//! and one xid on [`REPLY_PORTAL`], early replies at offset 0 and the final
//! reply at [`crate::portals::FINAL_REPLY_OFFSET`], each delivered to a
//! callback as a [`ReplyEvent`] — [`put_request`], which PUTs an encoded
//! message to a service portal and reports a failed send, bulk pages
//! exposed to the server ([`attach_bulk`], [`release_bulk`]), and
//! [`Attached`], which unlinks an MD when dropped. [`super::Client`] (which owns xids and
//! resends itself) and [`super::ImportDriver`] (whose sans-IO import owns
//! them) both send through here.
//!
//! Must not: decide anything about a message (deadlines, resends, which
//! reply counts): it moves bytes and reports what lnet says.

use std::sync::Arc;
use std::time::Duration;

use lnet::{
    AckReq, Event, EventHandler, EventKind, InsertPos, Lnet, LnetError, MatchPeer, MatchSpec, Md, MdBuffer, MdOptions,
    MdSpec, Nid, Target, Threshold,
};
use rkyv::util::AlignedVec;
use tokio::sync::mpsc;

use crate::portals::{FINAL_REPLY_OFFSET, REPLY_PORTAL};
use crate::wire::{BODY_ALIGN, HEADER_LEN, Portal, Xid};

/// What a reply MD reports.
#[derive(Debug)]
pub(super) enum ReplyEvent {
    /// A message (early or final reply) landed; its bytes, 16-aligned.
    Message(AlignedVec<BODY_ALIGN>),
    /// A reply larger than the buffer arrived.
    Truncated {
        /// Bytes the server sent.
        len: u32,
        /// Room in the buffer.
        cap: u32,
    },
    /// lnet failed a receive into the MD.
    Failed(LnetError),
}

/// An MD that is unlinked when this is dropped (an RPC that ends or is
/// cancelled, a reply MD replaced by a resend's).
#[derive(Debug)]
pub(super) struct Attached {
    lnet: Lnet,
    pub(super) md: Md,
}

impl Attached {
    pub(super) fn new(lnet: &Lnet, md: Md) -> Attached {
        Attached { lnet: lnet.clone(), md }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        // An MD that already retired reports Unlinked: nothing to undo.
        let _ = self.lnet.unlink(&self.md);
    }
}

/// Attaches the reply MD for `xid` from `peer` only, persistent across
/// early replies, with room for a final reply of `reply_buf_len` body
/// bytes. `on_event` runs in the LND's context and must not block.
pub(super) fn attach_reply<F>(
    lnet: &Lnet,
    peer: Nid,
    xid: Xid,
    reply_buf_len: usize,
    on_event: F,
) -> Result<Attached, LnetError>
where
    F: Fn(ReplyEvent) + Send + Sync + 'static,
{
    let cb = Arc::new(move |ev: Event| {
        if ev.kind != EventKind::Put {
            return;
        }
        let msg = match ev.status {
            Err(e) => ReplyEvent::Failed(e),
            Ok(()) if ev.rlength > ev.mlength => ReplyEvent::Truncated { len: ev.rlength, cap: ev.mlength },
            Ok(()) => {
                let len = ev.mlength as usize;
                let mut b = AlignedVec::<BODY_ALIGN>::with_capacity(len);
                b.resize(len, 0);
                let got = ev.md.lock().read_at(ev.offset as usize, &mut b);
                b.resize(got, 0);
                ReplyEvent::Message(b)
            }
        };
        on_event(msg);
    });
    let spec = MdSpec::new(
        MdBuffer::Inline(vec![0; FINAL_REPLY_OFFSET + HEADER_LEN + reply_buf_len]),
        EventHandler::Callback(cb),
    )
    .threshold(Threshold::Infinite)
    .options(MdOptions::OP_PUT | MdOptions::MANAGE_REMOTE | MdOptions::TRUNCATE | MdOptions::ACK_DISABLE);
    let m = MatchSpec { peer: MatchPeer::Nid(peer), match_bits: xid.0, ignore_bits: 0 };
    let md = lnet.attach(REPLY_PORTAL.0, m, InsertPos::Tail, spec)?;
    Ok(Attached::new(lnet, md))
}

/// PUTs the encoded message `msg` to `portal` on `to` (match bits 0, no
/// ACK). `on_send_failed` runs (in the LND's context) if the send fails
/// after lnet accepted it; a refusal up front is the `Err`.
pub(super) fn put_request<F>(
    lnet: &Lnet,
    to: Nid,
    portal: Portal,
    msg: Vec<u8>,
    on_send_failed: F,
) -> Result<(), LnetError>
where
    F: Fn(LnetError) + Send + Sync + 'static,
{
    let cb = Arc::new(move |ev: Event| {
        if ev.kind == EventKind::Send
            && let Err(e) = ev.status
        {
            on_send_failed(e);
        }
    });
    let md = lnet.bind(MdSpec::new(MdBuffer::Inline(msg), EventHandler::Callback(cb)))?;
    lnet.put(&md, Target::new(to, portal.0, 0), AckReq::NoAck, 0)
}

/// What a bulk MD's callback reports.
#[derive(Debug)]
pub(super) struct BulkEvent {
    /// A PUT into the pages: the bytes that landed, or lnet's failure.
    pub(super) put: Option<Result<u32, LnetError>>,
    /// The MD's last event.
    pub(super) unlinked: bool,
}

/// Exposes `buf` for the server's bulk transfer on `portal` (`op`: GET
/// source or PUT sink) under `match_bits`, from `peer`, for any number of
/// transfers (a resent or replayed request's server transfers again),
/// offsets from the server so each starts at 0. The receiver gets every
/// event.
pub(super) fn attach_bulk(
    lnet: &Lnet,
    portal: Portal,
    op: MdOptions,
    peer: MatchPeer,
    match_bits: u64,
    buf: MdBuffer,
) -> Result<(Attached, mpsc::UnboundedReceiver<BulkEvent>), LnetError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let cb = Arc::new(move |ev: Event| {
        let put = (ev.kind == EventKind::Put).then(|| ev.status.as_ref().map(|()| ev.mlength).map_err(Clone::clone));
        let _ = tx.send(BulkEvent { put, unlinked: ev.unlinked });
    });
    let spec = MdSpec::new(buf, EventHandler::Callback(cb))
        .threshold(Threshold::Infinite)
        .options(op | MdOptions::MANAGE_REMOTE);
    let m = MatchSpec { peer, match_bits, ignore_bits: 0 };
    let md = lnet.attach(portal.0, m, InsertPos::Tail, spec)?;
    Ok((Attached::new(lnet, md), rx))
}

/// Waits (at most `wait`) for the server's PUT of `want` bytes into a
/// read's pages: a server replies once its PUT has left, so a reply
/// counts only once the data has landed. A failed or short PUT does not
/// end the wait: the MD takes any number of transfers, and a request
/// resent after its server died mid-PUT (the failed transfer's event is
/// still queued here) is answered with a whole one. `Err` holds the most
/// bytes one PUT brought and the last failure lnet reported.
pub(super) async fn await_put(
    events: &mut mpsc::UnboundedReceiver<BulkEvent>,
    want: u32,
    wait: Duration,
) -> Result<(), (u32, Option<LnetError>)> {
    let mut got = 0;
    let mut failed = None;
    let landed = async {
        while let Some(ev) = events.recv().await {
            match ev.put {
                Some(Ok(n)) if n >= want => return true,
                Some(Ok(n)) => got = got.max(n),
                Some(Err(e)) => failed = Some(e),
                None => {}
            }
            if ev.unlinked {
                break;
            }
        }
        false
    };
    match tokio::time::timeout(wait, landed).await {
        Ok(true) => Ok(()),
        Ok(false) | Err(_) => Err((got, failed)),
    }
}

/// Unlinks bulk pages and takes them back once lnet lets go of them
/// (waiting at most `wait` for each step).
pub(super) async fn release_bulk(
    bulk: Attached,
    mut events: mpsc::UnboundedReceiver<BulkEvent>,
    wait: Duration,
) -> Result<MdBuffer, LnetError> {
    let md = bulk.md.clone();
    drop(bulk); // unlinks
    let unlinked = async {
        while let Some(ev) = events.recv().await {
            if ev.unlinked {
                return true;
            }
        }
        false
    };
    if !tokio::time::timeout(wait, unlinked).await.unwrap_or(false) {
        return Err(LnetError::Invalid("bulk pages not released by lnet".into()));
    }
    // An LND may hold a handle a moment past the last event.
    let mut md = md;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match md.into_buffer() {
            Ok(b) => return Ok(b),
            Err(m) if tokio::time::Instant::now() < deadline => {
                md = m;
                tokio::task::yield_now().await;
            }
            Err(_) => return Err(LnetError::Invalid("bulk MD still referenced".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(r: Result<u32, LnetError>) -> BulkEvent {
        BulkEvent { put: Some(r), unlinked: false }
    }

    #[tokio::test(start_paused = true)]
    async fn a_whole_put_after_a_failed_one_lands() {
        // The first server died mid-PUT; the resent read's server PUT it all.
        let (tx, mut rx) = mpsc::unbounded_channel();
        tx.send(put(Err(LnetError::Invalid("connection reset".into())))).unwrap();
        tx.send(put(Ok(100))).unwrap();
        assert!(await_put(&mut rx, 100, Duration::from_secs(10)).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn only_failed_or_short_puts_is_missing_data_with_the_failure() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tx.send(put(Ok(40))).unwrap();
        tx.send(put(Err(LnetError::Invalid("connection reset".into())))).unwrap();
        tx.send(BulkEvent { put: None, unlinked: true }).unwrap();
        let (got, e) = await_put(&mut rx, 100, Duration::from_secs(10)).await.unwrap_err();
        assert_eq!(got, 40);
        assert!(matches!(e, Some(LnetError::Invalid(_))));
        // Nothing at all within the bound: the bytes seen, no failure.
        let (_tx, mut rx) = mpsc::unbounded_channel();
        assert_eq!(await_put(&mut rx, 100, Duration::from_secs(10)).await.unwrap_err().0, 0);
    }
}
