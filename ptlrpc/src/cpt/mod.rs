//! # CPU partitions (CPTs): Lustre's libcfs CPT table, from hwloc
//!
//! A node's CPUs are split into CPU partitions. Each service runs one
//! request queue and a set of worker threads per CPT; the workers are bound
//! to their CPT's cores and allocate their buffers on its NUMA nodes, so a
//! request is received, handled and answered from one node's memory.
//!
//! Owns:
//!
//! | file | job |
//! | --- | --- |
//! | `settings` | [`CptSettings`] (`cpu_npartitions`, `cpu_pattern`), the pattern parser, [`SettingsError`] |
//! | `table` | [`CptTable`] / [`Cpt`] from the real topology or an hwloc synthetic one |
//! | `bind` | thread binding, the [`placement`] plan, [`spawn_bound`] / [`spawn_workers`] |
//! | `memory` | [`alloc_on`]: memory bound to a CPT's NUMA nodes |
//!
//! Unlike the rest of the crate this module talks to the operating system
//! (topology discovery, `sched_setaffinity` through hwloc, `mbind`), so only
//! drivers and service start-up call it, never a sans-IO state machine.
//! Tests model multi-socket machines with synthetic topologies such as
//! `"pack:2 numa:1 core:4 pu:2"` and check the [`placement`] plan, since
//! threads cannot be bound to cores a synthetic topology invents.
//!
//! Must not: panic on settings or on a machine that does not fit them;
//! split a core's hardware threads across CPTs (unless a pattern says so);
//! bind a thread to CPUs that are not on this machine.

mod bind;
mod memory;
mod settings;
mod table;

#[cfg(test)]
mod tests;

pub use bind::{
    WorkerPlacement, bind_current_thread, current_thread_binding, current_thread_last_cpu, placement, spawn_bound,
    spawn_workers,
};
pub use hwlocality::cpu::cpuset::CpuSet;
pub use memory::{CptMemory, MAX_ALLOC_BYTES, alloc_on};
pub use settings::{CptPattern, CptSettings, MAX_INDEX, MAX_PATTERN_LEN, PatternUnit, SettingsError, parse_pattern};
pub use table::{Cpt, CptTable, TopologySource};

/// Why a CPT table could not be built, or a thread bound, or memory placed.
#[derive(Debug, thiserror::Error)]
pub enum CptError {
    /// The settings are wrong whatever the machine.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// hwloc could not read this machine's topology.
    #[error("cannot read the machine's topology with hwloc: {reason}")]
    Topology {
        /// hwloc's error.
        reason: String,
    },
    /// hwloc rejected a synthetic topology description.
    #[error("bad hwloc synthetic topology {desc:?}: {reason}")]
    Synthetic {
        /// The description as given.
        desc: String,
        /// hwloc's error.
        reason: String,
    },
    /// The topology has no CPUs at all.
    #[error("the topology has no CPUs")]
    NoCpus,
    /// `npartitions` is larger than the number of cores.
    #[error("cpu_npartitions = {requested} but the machine has only {cores} cores (a core's threads are never split)")]
    TooManyPartitions {
        /// `npartitions`.
        requested: usize,
        /// Cores on the machine.
        cores: usize,
    },
    /// A pattern names a CPU the topology does not have.
    #[error("cpu_pattern: CPU {cpu} in CPT {cpt} does not exist on this topology")]
    UnknownCpu {
        /// The CPU.
        cpu: u32,
        /// The CPT that names it.
        cpt: u32,
    },
    /// A pattern names a NUMA node the topology does not have.
    #[error("cpu_pattern: NUMA node {node} in CPT {cpt} does not exist on this topology")]
    UnknownNumaNode {
        /// The node.
        node: u32,
        /// The CPT that names it.
        cpt: u32,
    },
    /// A pattern names a NUMA node that has memory but no CPUs.
    #[error("cpu_pattern: NUMA node {node} in CPT {cpt} has no CPUs")]
    NumaNodeWithoutCpus {
        /// The node.
        node: u32,
        /// The CPT that names it.
        cpt: u32,
    },
    /// Binding to a CPT with no CPUs.
    #[error("CPT {cpt} has no CPUs to bind to")]
    EmptyCpt {
        /// The CPT.
        cpt: u32,
    },
    /// Binding to CPUs this machine does not have (e.g. a synthetic CPT).
    #[error("CPUs {missing:?}{} are not on this machine", cpt.map(|c| format!(" of CPT {c}")).unwrap_or_default())]
    CpusNotOnThisMachine {
        /// The CPT, if known.
        cpt: Option<u32>,
        /// The CPUs that are not here.
        missing: Vec<u32>,
    },
    /// hwloc could not bind the thread.
    #[error("cannot bind the thread to CPT {cpt}: {reason}")]
    Bind {
        /// The CPT.
        cpt: u32,
        /// hwloc's error.
        reason: String,
    },
    /// hwloc could not report the thread's binding or location.
    #[error("cannot query the thread's CPU binding: {reason}")]
    Query {
        /// hwloc's error.
        reason: String,
    },
    /// The OS could not create a thread.
    #[error("cannot spawn thread {name:?}: {source}")]
    Spawn {
        /// The thread's name.
        name: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// hwloc could not allocate bound memory.
    #[error("cannot allocate {bytes} bytes on CPT {cpt}: {reason}")]
    Alloc {
        /// The CPT.
        cpt: u32,
        /// The size asked for.
        bytes: usize,
        /// Why.
        reason: String,
    },
}
