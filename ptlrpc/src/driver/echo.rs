//! The echo service: a handler for tests and benchmarks (Lustre's
//! `obdecho`).
//!
//! Owns: [`EchoHandler`], which serves every request inline on the
//! receive path (no worker thread) — PING answers empty; `OST_WRITE` GETs the client's pages (checksum verified, as
//! `ReqCtx::bulk_get_then` does) and, when storing, keeps them by offset;
//! `OST_READ` PUTs the stored pages for that offset (or fresh pool pages)
//! and returns their checksum in a [`BrwReply`]. Both answer from the
//! transfer's completion on lnet's thread: no worker waits on the bulk.
//! Without a store, the pages of finished transfers are kept (a bounded
//! list) for the next ones, as lnet-selftest's server keeps them.
//! Anything else is `-EOPNOTSUPP`.
//!
//! Must not: hold its store lock across a bulk transfer.

use std::collections::HashMap;
use std::sync::Arc;

use lnet::MdBuffer;
use lnet::mem::{PAGE_SIZE, Page};
use parking_lot::Mutex;

use super::error::Errno;
use super::handler::{Handler, Reply, ReqCtx, Request};
use crate::wire::{ArchivedBrwBody, BrwReply, Op};

/// Objects kept at most (a bound on the store).
const MAX_STORED: usize = 1024;

/// Page vectors kept for reuse at most (a bound on the spares).
const MAX_SPARE: usize = 64;

/// Written pages by offset.
type Store = Arc<Mutex<HashMap<u64, MdBuffer>>>;
/// Page vectors of finished transfers, for the next ones.
type Spare = Arc<Mutex<Vec<Vec<Page>>>>;

/// The echo handler.
#[derive(Debug, Default)]
pub struct EchoHandler {
    store: Option<Store>,
    spare: Spare,
}

impl EchoHandler {
    /// An echo handler that discards written data (benchmarks); it reuses
    /// the pages of finished transfers, as lnet-selftest's server does.
    pub fn new() -> EchoHandler {
        EchoHandler::default()
    }

    /// An echo handler that keeps written pages by offset (up to 1024
    /// writes) and reads them back.
    pub fn storing() -> EchoHandler {
        EchoHandler { store: Some(Arc::new(Mutex::new(HashMap::new()))), ..EchoHandler::default() }
    }

    /// Pages for `len` bytes: spare ones when they are enough, else fresh.
    fn pages(&self, ctx: &ReqCtx<'_>, len: usize) -> Result<MdBuffer, Errno> {
        let spare = self.spare.lock().pop();
        match spare {
            Some(mut pages) if pages.len() * PAGE_SIZE >= len => {
                pages.truncate(len.div_ceil(PAGE_SIZE));
                Ok(MdBuffer::from_pages_len(pages, len))
            }
            _ => Ok(ctx.alloc_bulk(len)?),
        }
    }

    fn write(&self, req: &Request, ctx: &mut ReqCtx<'_>) -> Result<Reply, Errno> {
        let body = req.access::<ArchivedBrwBody>()?;
        let desc = body.bulk.to_native();
        let offset = body.offset.to_native();
        let buf = self.pages(ctx, desc.len as usize)?;
        let (store, spare) = (self.store.clone(), Arc::clone(&self.spare));
        ctx.bulk_get_into_then(&desc, buf, move |data| {
            let data = data?;
            match store {
                Some(store) => {
                    let mut s = store.lock();
                    if s.len() < MAX_STORED || s.contains_key(&offset) {
                        s.insert(offset, data);
                    }
                }
                None => keep(&spare, data),
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
            _ => self.pages(ctx, desc.len as usize)?,
        };
        let (store, spare) = (self.store.clone(), Arc::clone(&self.spare));
        ctx.bulk_put_then(&desc, data, move |sent| {
            let (data, cksum) = sent?;
            match store {
                Some(store) => {
                    store.lock().insert(offset, data);
                }
                None => keep(&spare, data),
            }
            Reply::new(&BrwReply { len: desc.len, cksum_type: desc.cksum_type, cksum })
        })
    }
}

/// Keeps `data`'s pages for a later transfer (up to [`MAX_SPARE`]).
fn keep(spare: &Spare, data: MdBuffer) {
    if let MdBuffer::Pages { pages, .. } = data {
        let mut s = spare.lock();
        if s.len() < MAX_SPARE {
            s.push(pages);
        }
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

    /// Everything is answered on the receive path: a PING at once, a
    /// read or write by starting its transfer (memory only, nothing
    /// waits), the reply following from the transfer's completion.
    fn inline(&self, req: &Request) -> bool {
        matches!(req.op(), Op::ObdPing | Op::OstRead | Op::OstWrite)
    }
}
