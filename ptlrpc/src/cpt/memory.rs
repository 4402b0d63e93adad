//! Memory on a CPT's NUMA nodes.
//!
//! Owns: [`alloc_on`], a buffer allocated with hwloc's bound allocation
//! (`hwloc_alloc_membind`, policy *bind*) on the CPT's nodes.
//!
//! The buffer is uninitialised memory, handed out as `MaybeUninit<u8>`:
//! this crate forbids `unsafe`, so it cannot turn it into `&[u8]`. It suits
//! buffers that are registered and filled by the RDMA verbs module (which
//! owns the one `unsafe` block allowed for that). Ordinary buffers need
//! nothing from here: a worker bound with [`super::bind_current_thread`]
//! allocates a `Vec` and Linux's first-touch policy places its pages on the
//! worker's NUMA node when the worker first writes them.
//!
//! Must not: allocate on nodes that are not on this machine (hwloc refuses:
//! [`CptError::Alloc`]).

use std::mem::MaybeUninit;

use hwlocality::bitmap::BitmapIndex;
use hwlocality::memory::binding::{Bytes, MemoryBindingFlags, MemoryBindingPolicy};
use hwlocality::memory::nodeset::NodeSet;

use super::{Cpt, CptError, bind};

/// Largest single allocation, 1 GiB: a limit, not a hwloc one.
pub const MAX_ALLOC_BYTES: usize = 1 << 30;

/// Memory bound to one CPT's NUMA nodes. Freed on drop.
#[derive(Debug)]
pub struct CptMemory {
    cpt: u32,
    bytes: Bytes<'static>,
}

impl CptMemory {
    /// The CPT it was allocated for.
    pub fn cpt(&self) -> u32 {
        self.cpt
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True if it is zero bytes long (never: [`alloc_on`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The bytes, not yet initialised.
    pub fn as_uninit(&self) -> &[MaybeUninit<u8>] {
        &self.bytes
    }

    /// The bytes, for writing.
    pub fn as_uninit_mut(&mut self) -> &mut [MaybeUninit<u8>] {
        &mut self.bytes
    }
}

/// Allocates `bytes` bytes on `cpt`'s NUMA nodes of this machine.
pub fn alloc_on(cpt: &Cpt, bytes: usize) -> Result<CptMemory, CptError> {
    let alloc_err = |reason: String| CptError::Alloc { cpt: cpt.index, bytes, reason };
    if bytes == 0 || bytes > MAX_ALLOC_BYTES {
        return Err(alloc_err(format!("size must be between 1 and {MAX_ALLOC_BYTES} bytes")));
    }
    let nodes: NodeSet = cpt
        .numa_nodes
        .iter()
        .map(|&n| BitmapIndex::try_from(n as usize))
        .collect::<Result<_, _>>()
        .map_err(|_| alloc_err(format!("bad NUMA node in {:?}", cpt.numa_nodes)))?;
    if nodes.is_empty() {
        return Err(alloc_err("the CPT has no NUMA node".to_owned()));
    }
    let topology = bind::system_topology()?;
    let bytes = topology
        .allocate_bound_memory(bytes, &nodes, MemoryBindingPolicy::Bind, MemoryBindingFlags::empty())
        .map_err(|e| alloc_err(e.to_string()))?;
    Ok(CptMemory { cpt: cpt.index, bytes })
}
