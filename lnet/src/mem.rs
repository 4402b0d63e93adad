//! Bulk pages: per-CPU-partition pools of 4 KiB-aligned pages.
//!
//! This is lnet's registered-memory module and the only one in the crate
//! (besides the o2ib verbs module) allowed `unsafe`. A pool allocates pages
//! in slabs: one contiguous, page-aligned allocation per slab, which an RDMA
//! LND registers once ([`PagePool::regions`]). A [`Page`] is the unique owner
//! of one slot in a slab; dropping it returns the slot to the pool's free list,
//! so pages are reused without reallocation. The pool never touches page
//! contents and knows nothing of MDs or LNDs.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{LnetError, Result};

/// Size of a bulk page.
pub const PAGE_SIZE: usize = 4096;

#[repr(C, align(4096))]
struct PageBuf(UnsafeCell<[u8; PAGE_SIZE]>);

struct Slab {
    pages: Box<[PageBuf]>,
}

// SAFETY: a slab's bytes are only reached through `Page`, and the pool hands
// each (slab, index) slot to at most one live `Page` at a time (free list
// discipline below), so no two threads ever alias one page mutably.
unsafe impl Sync for Slab {}

impl Slab {
    fn new(npages: usize) -> Slab {
        let pages: Vec<PageBuf> = (0..npages).map(|_| PageBuf(UnsafeCell::new([0u8; PAGE_SIZE]))).collect();
        Slab { pages: pages.into_boxed_slice() }
    }

    fn region(&self) -> MemRegion {
        MemRegion { addr: self.pages.as_ptr() as usize, len: self.pages.len() * PAGE_SIZE }
    }
}

/// An address range an RDMA LND can register once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemRegion {
    /// Start address (page aligned).
    pub addr: usize,
    /// Length in bytes.
    pub len: usize,
}

struct PoolState {
    slabs: Vec<Arc<Slab>>,
    free: Vec<(u32, u32)>,
    in_use: usize,
}

struct PoolInner {
    cpt: u32,
    slab_pages: usize,
    max_pages: usize,
    state: Mutex<PoolState>,
}

/// A pool of bulk pages for one CPU partition (CPT).
#[derive(Clone)]
pub struct PagePool {
    inner: Arc<PoolInner>,
}

impl fmt::Debug for PagePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.state.lock();
        f.debug_struct("PagePool")
            .field("cpt", &self.inner.cpt)
            .field("slabs", &st.slabs.len())
            .field("in_use", &st.in_use)
            .field("free", &st.free.len())
            .finish()
    }
}

/// Occupancy of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PoolStats {
    /// Pages handed out now.
    pub in_use: usize,
    /// Pages allocated in slabs (in use + free).
    pub total: usize,
    /// The most pages the pool may ever hold.
    pub max: usize,
}

impl PagePool {
    /// A pool for CPT `cpt` that grows in slabs of `slab_pages` up to `max_pages`.
    pub fn new(cpt: u32, slab_pages: usize, max_pages: usize) -> PagePool {
        let slab_pages = slab_pages.clamp(1, 1 << 20);
        PagePool {
            inner: Arc::new(PoolInner {
                cpt,
                slab_pages,
                max_pages: max_pages.max(slab_pages),
                state: Mutex::new(PoolState { slabs: Vec::new(), free: Vec::new(), in_use: 0 }),
            }),
        }
    }

    /// The CPT this pool serves.
    pub fn cpt(&self) -> u32 {
        self.inner.cpt
    }

    /// Allocates `n` pages, growing the pool by whole slabs when needed.
    pub fn alloc(&self, n: usize) -> Result<Vec<Page>> {
        let mut st = self.inner.state.lock();
        while st.free.len() < n {
            let total = st.slabs.len() * self.inner.slab_pages;
            if total + self.inner.slab_pages > self.inner.max_pages {
                return Err(LnetError::NoPages { cpt: self.inner.cpt, limit: self.inner.max_pages });
            }
            let slab_idx = st.slabs.len() as u32;
            st.slabs.push(Arc::new(Slab::new(self.inner.slab_pages)));
            // Hand out low indexes first so a fresh pool fills slabs in order.
            st.free.extend((0..self.inner.slab_pages as u32).rev().map(|i| (slab_idx, i)));
        }
        st.in_use += n;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let Some((s, i)) = st.free.pop() else { unreachable!("free list was grown to at least n entries above") };
            out.push(Page {
                slab: Arc::clone(&st.slabs[s as usize]),
                slab_idx: s,
                idx: i,
                pool: Arc::clone(&self.inner),
            });
        }
        // Pages come back one by one as a buffer drops, in order, so the
        // stack hands them out reversed: in slab order they are runs of
        // adjacent slots again (one I/O slice each, see `contiguous`).
        out.sort_unstable_by_key(|p| (p.slab_idx, p.idx));
        Ok(out)
    }

    /// Allocates enough pages for `len` bytes.
    pub fn alloc_bytes(&self, len: usize) -> Result<Vec<Page>> {
        self.alloc(len.div_ceil(PAGE_SIZE))
    }

    /// The slabs' address ranges, for one-time RDMA registration.
    pub fn regions(&self) -> Vec<MemRegion> {
        self.inner.state.lock().slabs.iter().map(|s| s.region()).collect()
    }

    /// Current occupancy.
    pub fn stats(&self) -> PoolStats {
        let st = self.inner.state.lock();
        PoolStats { in_use: st.in_use, total: st.slabs.len() * self.inner.slab_pages, max: self.inner.max_pages }
    }
}

/// One 4 KiB-aligned bulk page, uniquely owned; returns to its pool on drop.
pub struct Page {
    slab: Arc<Slab>,
    slab_idx: u32,
    idx: u32,
    pool: Arc<PoolInner>,
}

impl fmt::Debug for Page {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Page(cpt {} slab {} #{} @{:#x})", self.pool.cpt, self.slab_idx, self.idx, self.addr())
    }
}

impl Page {
    fn cell(&self) -> &UnsafeCell<[u8; PAGE_SIZE]> {
        &self.slab.pages[self.idx as usize].0
    }

    /// The page's bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: this `Page` is the only handle to its slot (see `Slab`), and a
        // shared borrow of `self` excludes `as_mut_slice` for its lifetime.
        unsafe { &*self.cell().get() }
    }

    /// The page's bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: unique owner of the slot and `&mut self` is exclusive, so no
        // other reference to these bytes exists.
        unsafe { &mut *self.cell().get() }
    }

    /// The page's address, for RDMA work requests and zero-copy checks.
    pub fn addr(&self) -> usize {
        self.cell().get() as usize
    }

    /// Which slab (registration unit) of its pool the page lives in.
    pub fn slab(&self) -> u32 {
        self.slab_idx
    }
}

/// Splits `[offset, end)` of `pages`, taken as one region of whole pages,
/// into runs of pages that are adjacent slots of one slab: `(first page,
/// pages in the run, start in the first page, bytes)`.
fn runs(pages: &[Page], offset: usize, end: usize) -> Vec<(usize, usize, usize, usize)> {
    let end = end.min(pages.len() * PAGE_SIZE);
    let mut out = Vec::new();
    let mut pos = offset;
    while pos < end {
        let first = pos / PAGE_SIZE;
        let mut last = first;
        while (last + 1) * PAGE_SIZE < end && pages[last].precedes(&pages[last + 1]) {
            last += 1;
        }
        let stop = end.min((last + 1) * PAGE_SIZE);
        out.push((first, last - first + 1, pos % PAGE_SIZE, stop - pos));
        pos = stop;
    }
    out
}

/// The bytes `[offset, end)` of `pages` (one region of whole pages) as
/// few slices as possible: pages that are adjacent slots of one slab make
/// one slice. Fewer, longer slices make vectored I/O and checksums cheaper.
pub fn contiguous(pages: &[Page], offset: usize, end: usize) -> Vec<&[u8]> {
    runs(pages, offset, end)
        .into_iter()
        .map(|(first, _, start, len)| {
            // SAFETY: the run's pages are adjacent slots of one slab, so
            // `[start, start + len)` from the first one lies inside that
            // slab's single allocation (`span_ptr` derives the pointer from
            // the whole allocation). Every byte belongs to a `Page` of
            // `pages`, each the only handle to its slot, and `pages` is
            // borrowed shared for the slices' lifetime, so nothing writes to
            // them meanwhile.
            unsafe { std::slice::from_raw_parts(pages[first].span_ptr().add(start), len) }
        })
        .collect()
}

/// As [`contiguous`], writable.
pub fn contiguous_mut(pages: &mut [Page], offset: usize, end: usize) -> Vec<&mut [u8]> {
    runs(pages, offset, end)
        .into_iter()
        .map(|(first, _, start, len)| {
            // SAFETY: as in `contiguous`, and `pages` is borrowed exclusively
            // for the slices' lifetime; the runs do not overlap, so the
            // slices never alias one another.
            unsafe { std::slice::from_raw_parts_mut(pages[first].span_ptr().add(start), len) }
        })
        .collect()
}

impl Page {
    /// True when `next` is the slot right after this one in the same slab.
    fn precedes(&self, next: &Page) -> bool {
        Arc::ptr_eq(&self.slab, &next.slab) && next.idx == self.idx + 1
    }

    /// A pointer to the page's first byte derived from its slab's whole
    /// allocation, so that it may reach on into the slab's next slots.
    fn span_ptr(&self) -> *mut u8 {
        let base = self.slab.pages.as_ptr();
        // SAFETY: `idx` is a slot of this slab (the pool only hands out
        // in-range slots), so the offset stays inside the allocation.
        let cell = unsafe { base.add(self.idx as usize) }.cast::<UnsafeCell<[u8; PAGE_SIZE]>>();
        // `PageBuf` is `repr(C)` around the cell, so the cast keeps the
        // address; the bytes are writable through the cell.
        UnsafeCell::raw_get(cell).cast::<u8>()
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let mut st = self.pool.state.lock();
        st.in_use -= 1;
        st.free.push((self.slab_idx, self.idx));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_aligned_and_reused() {
        let pool = PagePool::new(0, 16, 64);
        let pages = pool.alloc(16).unwrap();
        let addrs: Vec<usize> = pages.iter().map(Page::addr).collect();
        assert!(addrs.iter().all(|a| a % PAGE_SIZE == 0));
        assert_eq!(pool.stats().in_use, 16);
        drop(pages);
        assert_eq!(pool.stats().in_use, 0);
        let again = pool.alloc(16).unwrap();
        let mut a2: Vec<usize> = again.iter().map(Page::addr).collect();
        let mut a1 = addrs.clone();
        a1.sort_unstable();
        a2.sort_unstable();
        assert_eq!(a1, a2, "pages reused, not reallocated");
        assert_eq!(pool.regions().len(), 1);
    }

    #[test]
    fn grows_by_slabs_up_to_the_limit() {
        let pool = PagePool::new(1, 4, 8);
        let a = pool.alloc(6).unwrap();
        assert_eq!(pool.regions().len(), 2);
        assert!(matches!(pool.alloc(3), Err(LnetError::NoPages { cpt: 1, .. })));
        drop(a);
        assert_eq!(pool.alloc(8).unwrap().len(), 8);
    }

    #[test]
    fn adjacent_slots_make_one_slice() {
        let pool = PagePool::new(0, 4, 8);
        // Slots 0, 1, 2 of one slab, then slot 0 of the next slab.
        let mut pages = pool.alloc(3).unwrap();
        let _gap = pool.alloc(1).unwrap();
        pages.extend(pool.alloc(1).unwrap());
        let lens = |v: Vec<&[u8]>| v.iter().map(|s| s.len()).collect::<Vec<_>>();
        assert_eq!(lens(contiguous(&pages, 10, 4 * PAGE_SIZE)), vec![3 * PAGE_SIZE - 10, PAGE_SIZE]);
        assert_eq!(lens(contiguous(&pages, PAGE_SIZE, PAGE_SIZE + 5)), vec![5]);
        assert!(contiguous(&pages, 5 * PAGE_SIZE, 6 * PAGE_SIZE).is_empty());
        for (i, s) in contiguous_mut(&mut pages, 0, 5 * PAGE_SIZE).into_iter().enumerate() {
            s.fill(i as u8 + 1);
        }
        assert!(pages[..3].iter().all(|p| p.as_slice().iter().all(|&b| b == 1)));
        assert!(pages[3].as_slice().iter().all(|&b| b == 2), "the next slab's page is the second run");
    }

    #[test]
    fn freed_pages_come_back_as_one_slice() {
        let pool = PagePool::new(0, 64, 64);
        let one_slice = |p: &[Page]| contiguous(p, 0, p.len() * PAGE_SIZE).len();
        let a = pool.alloc(16).unwrap();
        let b = pool.alloc(16).unwrap();
        assert_eq!((one_slice(&a), one_slice(&b)), (1, 1));
        // Freed in order (as a Vec drops), then handed out again: still
        // ascending, adjacent slots.
        drop(a);
        let c = pool.alloc(16).unwrap();
        assert_eq!(one_slice(&c), 1, "reused pages keep their slab order");
        drop(b);
        drop(c);
        let d = pool.alloc(32).unwrap();
        assert!(one_slice(&d) <= 2, "two freed runs make at most two slices");
    }

    #[test]
    fn pages_hold_their_bytes() {
        let pool = PagePool::new(0, 8, 8);
        let mut p = pool.alloc(2).unwrap();
        p[0].as_mut_slice().fill(0xab);
        p[1].as_mut_slice().fill(0xcd);
        assert!(p[0].as_slice().iter().all(|&b| b == 0xab));
        assert!(p[1].as_slice().iter().all(|&b| b == 0xcd));
        let r = pool.regions()[0];
        assert!(p.iter().all(|pg| pg.addr() >= r.addr && pg.addr() < r.addr + r.len));
    }
}
