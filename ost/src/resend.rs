//! Answers to resent requests: a bounded cache of the replies to recent
//! modifying requests, per (export, xid).
//!
//! Owns: [`ReplyCache`]. A client that lost a reply resends the request
//! with the same xid; the handler answers from here instead of executing
//! it again (a second CREATE would allocate a second range of objects). In
//! memory only: after a restart a client resends its uncommitted writes as
//! new requests (`client`), and ptlrpc's target framework will bring
//! reconstruction from the durable client records.
//!
//! Must not: grow past [`MAX_SAVED`] entries.

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;
use ptlrpc::wire::{OstAttr, OstBrwReply, OstCreateReply};

/// Replies kept at most.
pub const MAX_SAVED: usize = 4096;

/// A saved reply body and its transno.
#[derive(Debug, Clone, Copy)]
pub enum Saved {
    /// CREATE.
    Create(OstCreateReply, u64),
    /// WRITE.
    Write(OstBrwReply, u64),
    /// SETATTR, PUNCH.
    Attr(OstAttr, u64),
    /// DESTROY.
    Empty(u64),
}

/// (export handle, xid).
type Key = (u64, u64);

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Key, Saved>,
    order: VecDeque<Key>,
}

/// The cache.
#[derive(Debug, Default)]
pub struct ReplyCache {
    inner: Mutex<Inner>,
}

impl ReplyCache {
    /// The saved reply to `xid` of export `handle`, if any.
    pub fn get(&self, handle: u64, xid: u64) -> Option<Saved> {
        self.inner.lock().map.get(&(handle, xid)).copied()
    }

    /// Saves a reply, dropping the oldest past the bound.
    pub fn put(&self, handle: u64, xid: u64, saved: Saved) {
        let mut g = self.inner.lock();
        if g.map.insert((handle, xid), saved).is_none() {
            g.order.push_back((handle, xid));
        }
        while g.order.len() > MAX_SAVED {
            if let Some(k) = g.order.pop_front() {
                g.map.remove(&k);
            }
        }
    }
}
