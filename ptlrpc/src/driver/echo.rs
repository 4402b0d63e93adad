//! The echo service: a handler for tests and benchmarks (Lustre's
//! `obdecho`).
//!
//! Owns: [`EchoHandler`] — PING answers empty, inline on the receive
//! path; `OST_WRITE` GETs the client's pages (checksum verified, as
//! `ReqCtx::bulk_get_then` does) and, when storing, keeps them by offset;
//! `OST_READ` PUTs the stored pages for that offset (or fresh pool pages)
//! and returns their checksum in a [`BrwReply`]. Both answer from the
//! transfer's completion on lnet's thread: no worker waits on the bulk.
//! Anything else is `-EOPNOTSUPP`.
//!
//! Must not: hold its store lock across a bulk transfer.

use std::collections::HashMap;
use std::sync::Arc;

use lnet::MdBuffer;
use parking_lot::Mutex;

use super::error::Errno;
use super::handler::{Handler, Reply, ReqCtx, Request};
use crate::wire::{ArchivedBrwBody, BrwReply, Op};

/// Objects kept at most (a bound on the store).
const MAX_STORED: usize = 1024;

/// Written pages by offset.
type Store = Arc<Mutex<HashMap<u64, MdBuffer>>>;

/// The echo handler.
#[derive(Debug, Default)]
pub struct EchoHandler {
    store: Option<Store>,
}

impl EchoHandler {
    /// An echo handler that discards written data (benchmarks).
    pub fn new() -> EchoHandler {
        EchoHandler { store: None }
    }

    /// An echo handler that keeps written pages by offset (up to 1024
    /// writes) and reads them back.
    pub fn storing() -> EchoHandler {
        EchoHandler { store: Some(Arc::new(Mutex::new(HashMap::new()))) }
    }

    fn write(&self, req: &Request, ctx: &mut ReqCtx<'_>) -> Result<Reply, Errno> {
        let body = req.access::<ArchivedBrwBody>()?;
        let desc = body.bulk.to_native();
        let offset = body.offset.to_native();
        let store = self.store.clone();
        ctx.bulk_get_then(&desc, move |data| {
            let data = data?;
            if let Some(store) = store {
                let mut s = store.lock();
                if s.len() < MAX_STORED || s.contains_key(&offset) {
                    s.insert(offset, data);
                }
            }
            Reply::new(&BrwReply { len: desc.len, cksum_type: desc.cksum_type, cksum: 0 })
        })
    }

    fn read(&self, req: &Request, ctx: &mut ReqCtx<'_>) -> Result<Reply, Errno> {
        let body = req.access::<ArchivedBrwBody>()?;
        let desc = body.bulk.to_native();
        let offset = body.offset.to_native();
        let stored = self.store.as_ref().and_then(|s| s.lock().remove(&offset));
        let data = match stored {
            Some(d) if d.len() >= desc.len as usize => d,
            _ => ctx.alloc_bulk(desc.len as usize)?,
        };
        let store = self.store.clone();
        ctx.bulk_put_then(&desc, data, move |sent| {
            let (data, cksum) = sent?;
            if let Some(store) = store {
                store.lock().insert(offset, data);
            }
            Reply::new(&BrwReply { len: desc.len, cksum_type: desc.cksum_type, cksum })
        })
    }
}

impl Handler for EchoHandler {
    fn handle(&self, req: &Request, ctx: &mut ReqCtx<'_>) -> Result<Reply, Errno> {
        match req.op() {
            Op::ObdPing => Ok(Reply::empty()),
            Op::OstWrite => self.write(req, ctx),
            Op::OstRead => self.read(req, ctx),
            _ => Err(Errno::EOPNOTSUPP),
        }
    }

    /// PING is answered at once, on the receive path.
    fn inline(&self, req: &Request) -> bool {
        req.op() == Op::ObdPing
    }
}
