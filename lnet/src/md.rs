//! Memory descriptors: the buffers LNet moves bytes into and out of.
//!
//! Owns [`MdBuffer`] (a page vector from a [`crate::mem::PagePool`] or a
//! small inline buffer), the user-visible [`Md`] handle, the options an MD
//! is created with, and the scatter/gather views LNDs use to do I/O straight
//! on the MD's pages. The life cycle of an MD (threshold, pending
//! operations, unlink) belongs to the core, not here.

use std::fmt;
use std::io::{IoSlice, IoSliceMut};
use std::ops::BitOr;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use crate::event::EventHandler;
use crate::mem::{PAGE_SIZE, Page};

/// The bytes of an MD.
pub enum MdBuffer {
    /// Bulk pages; `len` bytes of them are in use (the last page may be partial).
    Pages {
        /// The pages, in order.
        pages: Vec<Page>,
        /// Bytes of the region.
        len: usize,
    },
    /// A small heap buffer, for requests, replies and pings.
    Inline(Vec<u8>),
}

impl fmt::Debug for MdBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MdBuffer::Pages { pages, len } => write!(f, "Pages({} pages, {len} bytes)", pages.len()),
            MdBuffer::Inline(v) => write!(f, "Inline({} bytes)", v.len()),
        }
    }
}

impl MdBuffer {
    /// A page-vector region covering all of `pages`.
    pub fn from_pages(pages: Vec<Page>) -> MdBuffer {
        let len = pages.len() * PAGE_SIZE;
        MdBuffer::Pages { pages, len }
    }

    /// A page-vector region of `len` bytes (at most the pages' size).
    pub fn from_pages_len(pages: Vec<Page>, len: usize) -> MdBuffer {
        let len = len.min(pages.len() * PAGE_SIZE);
        MdBuffer::Pages { pages, len }
    }

    /// Bytes in the region.
    pub fn len(&self) -> usize {
        match self {
            MdBuffer::Pages { len, .. } => *len,
            MdBuffer::Inline(v) => v.len(),
        }
    }

    /// True for an empty region.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Scatter/gather view of `[offset, offset+len)` for sending: one slice
    /// per run of pages that are adjacent in their slab.
    ///
    /// The range is clamped to the region.
    pub fn io_slices(&self, offset: usize, len: usize) -> Vec<IoSlice<'_>> {
        let end = (offset.saturating_add(len)).min(self.len());
        if offset >= end {
            return Vec::new();
        }
        match self {
            MdBuffer::Inline(v) => vec![IoSlice::new(&v[offset..end])],
            MdBuffer::Pages { pages, .. } => {
                crate::mem::contiguous(pages, offset, end).into_iter().map(IoSlice::new).collect()
            }
        }
    }

    /// Scatter/gather view of `[offset, offset+len)` for receiving straight
    /// into the region. The range is clamped to the region.
    pub fn io_slices_mut(&mut self, offset: usize, len: usize) -> Vec<IoSliceMut<'_>> {
        let end = (offset.saturating_add(len)).min(self.len());
        if offset >= end {
            return Vec::new();
        }
        match self {
            MdBuffer::Inline(v) => vec![IoSliceMut::new(&mut v[offset..end])],
            MdBuffer::Pages { pages, .. } => {
                crate::mem::contiguous_mut(pages, offset, end).into_iter().map(IoSliceMut::new).collect()
            }
        }
    }

    /// Copies `dst.len()` bytes starting at `offset` out of the region;
    /// returns how many were copied (short at the end of the region).
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) -> usize {
        let mut done = 0;
        for s in self.io_slices(offset, dst.len()) {
            dst[done..done + s.len()].copy_from_slice(&s);
            done += s.len();
        }
        done
    }

    /// Copies `src` into the region at `offset`; returns how many bytes fit.
    pub fn write_at(&mut self, offset: usize, src: &[u8]) -> usize {
        let mut done = 0;
        for mut s in self.io_slices_mut(offset, src.len()) {
            let n = s.len();
            s.copy_from_slice(&src[done..done + n]);
            done += n;
        }
        done
    }

    /// Copies `len` bytes from `src[soff..]` into `self[doff..]` with no
    /// intermediate buffer; returns the bytes copied.
    pub fn copy_from(&mut self, doff: usize, src: &MdBuffer, soff: usize, len: usize) -> usize {
        let mut done = 0;
        for s in src.io_slices(soff, len) {
            let n = self.write_at(doff + done, &s);
            done += n;
            if n < s.len() {
                break;
            }
        }
        done
    }

    /// Copies within one region (source and destination MD are the same).
    pub fn copy_within(&mut self, doff: usize, soff: usize, len: usize) -> usize {
        let len = len.min(self.len().saturating_sub(soff)).min(self.len().saturating_sub(doff));
        let mut tmp = vec![0u8; len];
        self.read_at(soff, &mut tmp);
        self.write_at(doff, &tmp)
    }

    /// The pages of a page-vector region.
    pub fn pages(&self) -> Option<&[Page]> {
        match self {
            MdBuffer::Pages { pages, .. } => Some(pages),
            MdBuffer::Inline(_) => None,
        }
    }
}

/// MD options, as LNet's `LNET_MD_*` flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MdOptions(u32);

impl MdOptions {
    /// Peers may PUT into the MD.
    pub const OP_PUT: MdOptions = MdOptions(1);
    /// Peers may GET from the MD.
    pub const OP_GET: MdOptions = MdOptions(1 << 1);
    /// The offset comes from the incoming message (else the MD keeps a local
    /// offset that advances with each message, for request buffers).
    pub const MANAGE_REMOTE: MdOptions = MdOptions(1 << 2);
    /// Accept messages larger than the room left, truncating them.
    pub const TRUNCATE: MdOptions = MdOptions(1 << 3);
    /// Never send ACKs for PUTs into this MD, even when asked.
    pub const ACK_DISABLE: MdOptions = MdOptions(1 << 4);
    /// No options.
    pub const NONE: MdOptions = MdOptions(0);

    /// True when every flag of `o` is set.
    pub fn contains(self, o: MdOptions) -> bool {
        self.0 & o.0 == o.0
    }
}

impl BitOr for MdOptions {
    type Output = MdOptions;
    fn bitor(self, rhs: MdOptions) -> MdOptions {
        MdOptions(self.0 | rhs.0)
    }
}

/// How many operations an MD takes before it unlinks itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threshold {
    /// Until unlinked explicitly (a persistent MD).
    Infinite,
    /// This many operations (1 = one-shot).
    Ops(u32),
}

/// Everything needed to create an MD.
#[derive(Debug)]
pub struct MdSpec {
    /// The bytes.
    pub buffer: MdBuffer,
    /// Operations before auto-unlink.
    pub threshold: Threshold,
    /// Options.
    pub options: MdOptions,
    /// With a locally managed offset: unlink once fewer than this many bytes
    /// are left (Lustre's `max_size`), so a request never straddles the end.
    pub min_free: usize,
    /// Opaque value handed back with every event.
    pub user_ptr: u64,
    /// Where events go.
    pub handler: EventHandler,
}

impl MdSpec {
    /// A one-shot MD over `buffer` with events to `handler`.
    pub fn new(buffer: MdBuffer, handler: impl Into<EventHandler>) -> MdSpec {
        MdSpec {
            buffer,
            threshold: Threshold::Ops(1),
            options: MdOptions::NONE,
            min_free: 0,
            user_ptr: 0,
            handler: handler.into(),
        }
    }

    /// Sets the threshold.
    pub fn threshold(mut self, t: Threshold) -> MdSpec {
        self.threshold = t;
        self
    }

    /// Sets the options.
    pub fn options(mut self, o: MdOptions) -> MdSpec {
        self.options = o;
        self
    }

    /// Sets the user pointer.
    pub fn user_ptr(mut self, p: u64) -> MdSpec {
        self.user_ptr = p;
        self
    }

    /// Sets the minimum free space (see the field).
    pub fn min_free(mut self, n: usize) -> MdSpec {
        self.min_free = n;
        self
    }
}

pub(crate) struct MdInner {
    pub(crate) cookie: u64,
    pub(crate) len: usize,
    pub(crate) options: MdOptions,
    pub(crate) min_free: usize,
    pub(crate) user_ptr: u64,
    pub(crate) handler: EventHandler,
    pub(crate) buf: Mutex<MdBuffer>,
}

/// A handle to an MD; cheap to clone. The bytes stay reachable through it
/// after the MD is unlinked.
#[derive(Clone)]
pub struct Md {
    pub(crate) inner: Arc<MdInner>,
}

impl fmt::Debug for Md {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Md({:#x}, {} bytes)", self.inner.cookie, self.inner.len)
    }
}

impl Md {
    pub(crate) fn new(cookie: u64, spec: MdSpec) -> Md {
        Md {
            inner: Arc::new(MdInner {
                cookie,
                len: spec.buffer.len(),
                options: spec.options,
                min_free: spec.min_free,
                user_ptr: spec.user_ptr,
                handler: spec.handler,
                buf: Mutex::new(spec.buffer),
            }),
        }
    }

    /// The MD's unique cookie (its wire handle).
    pub fn cookie(&self) -> u64 {
        self.inner.cookie
    }

    /// Bytes in the MD.
    pub fn len(&self) -> usize {
        self.inner.len
    }

    /// True for an empty MD.
    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// The user pointer given at creation.
    pub fn user_ptr(&self) -> u64 {
        self.inner.user_ptr
    }

    /// Locks the bytes. LNDs hold this only for the length of one
    /// non-blocking syscall or copy; callers should do the same while
    /// the MD is linked.
    pub fn lock(&self) -> MutexGuard<'_, MdBuffer> {
        self.inner.buf.lock()
    }

    /// Takes the buffer back once every other handle is gone (after unlink).
    pub fn into_buffer(self) -> Result<MdBuffer, Md> {
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => Ok(inner.buf.into_inner()),
            Err(inner) => Err(Md { inner }),
        }
    }

    /// True when both handles name the same MD.
    pub fn same(&self, other: &Md) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// A byte range of an MD, the unit an LND sends from or receives into.
#[derive(Clone, Debug)]
pub struct MdSlice {
    /// The MD.
    pub md: Md,
    /// First byte.
    pub offset: usize,
    /// Bytes.
    pub len: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::PagePool;

    #[test]
    fn slices_cover_ranges_across_pages() {
        let pool = PagePool::new(0, 8, 8);
        let mut b = MdBuffer::from_pages_len(pool.alloc(3).unwrap(), 3 * PAGE_SIZE - 10);
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        assert_eq!(b.write_at(4000, &data), 5000);
        let mut back = vec![0u8; 5000];
        assert_eq!(b.read_at(4000, &mut back), 5000);
        assert_eq!(back, data);
        // A fresh pool hands out adjacent slots: one slice.
        let s = b.io_slices(4000, 5000);
        assert_eq!(s.iter().map(|s| s.len()).collect::<Vec<_>>(), vec![5000]);
        assert_eq!(b.io_slices_mut(3 * PAGE_SIZE - 20, 100).iter().map(|s| s.len()).sum::<usize>(), 10);
        assert!(b.io_slices(b.len(), 1).is_empty());
    }

    #[test]
    fn copy_between_buffers() {
        let mut a = MdBuffer::Inline((0..100u8).collect());
        let mut b = MdBuffer::Inline(vec![0; 50]);
        assert_eq!(b.copy_from(10, &a, 20, 100), 40);
        assert_eq!(b.lock_free_view()[10], 20);
        assert_eq!(a.copy_within(0, 90, 20), 10);
    }

    impl MdBuffer {
        fn lock_free_view(&self) -> Vec<u8> {
            let mut v = vec![0; self.len()];
            self.read_at(0, &mut v);
            v
        }
    }
}
