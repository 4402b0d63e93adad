//! Events and event queues.
//!
//! Owns the completion record LNet hands to users ([`Event`]) and the two
//! ways of receiving them: an [`EventQueue`] the caller polls or awaits, or
//! a callback run in the completing LND's context (LNet's EQ callback, which
//! ptlrpc uses to avoid a task hop). Never calls into the LNet core.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::error::LnetError;
use crate::md::Md;
use crate::nid::Nid;

/// What completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum EventKind {
    /// A PUT or GET this node initiated has left (or failed to leave).
    Send,
    /// A PUT from a peer landed in a local MD.
    Put,
    /// A peer's GET was served from a local MD (the REPLY has been sent).
    Get,
    /// The REPLY to a GET this node initiated landed in the GET's MD.
    Reply,
    /// The ACK of a PUT this node initiated arrived.
    Ack,
    /// An MD was unlinked while idle.
    Unlink,
}

/// One completion, as LNet's `lnet_event_t`.
#[derive(Clone)]
pub struct Event {
    /// What completed.
    pub kind: EventKind,
    /// `Ok` or why the operation failed.
    pub status: Result<(), LnetError>,
    /// The node that initiated the operation (for PUT/GET: the peer; for
    /// SEND/REPLY/ACK: the peer we talked to).
    pub peer: Nid,
    /// Portal index of the operation.
    pub portal: u32,
    /// Match bits of the operation.
    pub match_bits: u64,
    /// Bytes the initiator asked for.
    pub rlength: u32,
    /// Bytes actually moved into or out of the MD.
    pub mlength: u32,
    /// Offset within the MD where the bytes went or came from.
    pub offset: u32,
    /// The 64 bits of out-of-band data a PUT carries.
    pub hdr_data: u64,
    /// The MD the event is about.
    pub md: Md,
    /// True when this was the MD's last event: it has been unlinked.
    pub unlinked: bool,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("kind", &self.kind)
            .field("status", &self.status)
            .field("peer", &format_args!("{}", self.peer))
            .field("portal", &self.portal)
            .field("match_bits", &format_args!("{:#x}", self.match_bits))
            .field("rlength", &self.rlength)
            .field("mlength", &self.mlength)
            .field("offset", &self.offset)
            .field("md", &self.md.cookie())
            .field("unlinked", &self.unlinked)
            .finish()
    }
}

struct EqInner {
    queue: Mutex<VecDeque<Event>>,
    notify: Notify,
    posted: AtomicU64,
}

/// A queue of events that the caller polls or awaits.
#[derive(Clone)]
pub struct EventQueue {
    inner: Arc<EqInner>,
}

impl fmt::Debug for EventQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventQueue").field("len", &self.len()).finish()
    }
}

impl Default for EventQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl EventQueue {
    /// An empty queue.
    pub fn new() -> EventQueue {
        EventQueue {
            inner: Arc::new(EqInner {
                queue: Mutex::new(VecDeque::new()),
                notify: Notify::new(),
                posted: AtomicU64::new(0),
            }),
        }
    }

    pub(crate) fn post(&self, ev: Event) {
        self.inner.queue.lock().push_back(ev);
        self.inner.posted.fetch_add(1, Ordering::Relaxed);
        self.inner.notify.notify_one();
    }

    /// The next event, if one is queued.
    pub fn poll(&self) -> Option<Event> {
        self.inner.queue.lock().pop_front()
    }

    /// Waits for the next event.
    pub async fn next(&self) -> Event {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(ev) = self.poll() {
                return ev;
            }
            notified.await;
        }
    }

    /// Events waiting to be taken.
    pub fn len(&self) -> usize {
        self.inner.queue.lock().len()
    }

    /// True when no event waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events ever posted to this queue.
    pub fn posted(&self) -> u64 {
        self.inner.posted.load(Ordering::Relaxed)
    }
}

/// A callback run for each event, in the context that completed it.
pub type EventCallback = Arc<dyn Fn(Event) + Send + Sync>;

/// Where an MD's events go.
#[derive(Clone, Default)]
pub enum EventHandler {
    /// Events are dropped (fire-and-forget sends).
    #[default]
    None,
    /// Events are queued for the caller.
    Queue(EventQueue),
    /// Events are handed to a callback, which must not block; it may call
    /// back into LNet (no LNet lock is held while it runs).
    Callback(EventCallback),
}

impl fmt::Debug for EventHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventHandler::None => f.write_str("None"),
            EventHandler::Queue(q) => q.fmt(f),
            EventHandler::Callback(_) => f.write_str("Callback"),
        }
    }
}

impl EventHandler {
    pub(crate) fn deliver(&self, ev: Event) {
        match self {
            EventHandler::None => {}
            EventHandler::Queue(q) => q.post(ev),
            EventHandler::Callback(cb) => cb(ev),
        }
    }
}

impl From<EventQueue> for EventHandler {
    fn from(q: EventQueue) -> Self {
        EventHandler::Queue(q)
    }
}
