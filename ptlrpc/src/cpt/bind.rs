//! Binding threads to CPTs, and the worker placement plan.
//!
//! Owns: the process-wide hwloc topology of this machine (built once),
//! [`placement`] — which worker of which CPT may run on which CPUs — and the
//! thread spawning that follows it ([`spawn_bound`], [`spawn_workers`]).
//!
//! As in Lustre's ptlrpc, a service thread is bound to its whole CPT, not
//! to one core: the kernel balances the CPT's workers over its cores, and
//! everything the worker touches first (request buffers, replies) lands on
//! the CPT's NUMA node.
//!
//! Must not: bind to CPUs that do not exist here. A table built from a
//! synthetic topology can be planned with [`placement`], never bound: the
//! binding calls check the CPUs against this machine and return
//! [`CptError::CpusNotOnThisMachine`].

use std::sync::OnceLock;
use std::thread::JoinHandle;

use hwlocality::Topology;
use hwlocality::bitmap::BitmapIndex;
use hwlocality::cpu::binding::CpuBindingFlags;
use hwlocality::cpu::cpuset::CpuSet;

use super::{Cpt, CptError, CptTable};

/// This machine's topology, built on first use and shared by every binding
/// and allocation (hwloc topologies are `Sync` and expensive to build).
pub(crate) fn system_topology() -> Result<&'static Topology, CptError> {
    static SYSTEM: OnceLock<Result<Topology, String>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| Topology::new().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|reason| CptError::Topology { reason: reason.clone() })
}

/// `cpus` as an hwloc set.
pub(crate) fn cpuset(cpus: &[u32]) -> Result<CpuSet, CptError> {
    cpus.iter()
        .map(|&cpu| {
            BitmapIndex::try_from(cpu as usize)
                .map_err(|_| CptError::CpusNotOnThisMachine { cpt: None, missing: vec![cpu] })
        })
        .collect()
}

fn to_u32s(set: &CpuSet) -> Vec<u32> {
    // Indexes in an hwloc bitmap are below 2^31.
    set.iter_set().filter_map(|i| u32::try_from(i).ok()).collect()
}

/// Where one worker thread of a service runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerPlacement {
    /// Its CPT.
    pub cpt: u32,
    /// Its number within the CPT, `0..workers_per_cpt`.
    pub worker: u32,
    /// The CPUs it is bound to: all of its CPT's CPUs.
    pub cpuset: CpuSet,
}

/// The plan for `workers_per_cpt` workers on every CPT of `table`, CPT by
/// CPT. [`spawn_workers`] follows it on this machine; on a synthetic table
/// it is what tests check.
pub fn placement(table: &CptTable, workers_per_cpt: u32) -> Vec<WorkerPlacement> {
    table
        .iter()
        .flat_map(|cpt| {
            let cpuset = table.cpuset_of(cpt.index).cloned().unwrap_or_default();
            (0..workers_per_cpt).map(move |worker| WorkerPlacement { cpt: cpt.index, worker, cpuset: cpuset.clone() })
        })
        .collect()
}

/// Binds the calling thread to `set`, after checking that every CPU in it
/// exists on this machine (and that it is not empty).
fn bind_current_thread_to(cpt: u32, set: &CpuSet) -> Result<(), CptError> {
    let topology = system_topology()?;
    if set.is_empty() {
        return Err(CptError::EmptyCpt { cpt });
    }
    let here = topology.cpuset();
    let missing: Vec<u32> = to_u32s(set).into_iter().filter(|&cpu| !here.is_set(cpu as usize)).collect();
    if !missing.is_empty() {
        return Err(CptError::CpusNotOnThisMachine { cpt: Some(cpt), missing });
    }
    topology.bind_cpu(set, CpuBindingFlags::THREAD).map_err(|e| CptError::Bind { cpt, reason: e.to_string() })
}

/// Binds the calling thread to `cpt`'s CPUs (hwloc `set_cpubind`, thread
/// scope). Fails if any of them is not on this machine.
pub fn bind_current_thread(cpt: &Cpt) -> Result<(), CptError> {
    bind_current_thread_to(cpt.index, &cpuset(&cpt.cpus)?)
}

/// The CPUs the calling thread is bound to (hwloc `get_cpubind`).
pub fn current_thread_binding() -> Result<Vec<u32>, CptError> {
    let set = system_topology()?
        .cpu_binding(CpuBindingFlags::THREAD)
        .map_err(|e| CptError::Query { reason: e.to_string() })?;
    Ok(to_u32s(&set))
}

/// The CPU the calling thread last ran on (hwloc `get_last_cpu_location`).
pub fn current_thread_last_cpu() -> Result<u32, CptError> {
    let set = system_topology()?
        .last_cpu_location(CpuBindingFlags::THREAD)
        .map_err(|e| CptError::Query { reason: e.to_string() })?;
    to_u32s(&set)
        .first()
        .copied()
        .ok_or(CptError::Query { reason: "hwloc returned an empty last CPU location".to_owned() })
}

fn spawn_on<T, F>(cpt: u32, set: CpuSet, name: String, f: F) -> Result<JoinHandle<Result<T, CptError>>, CptError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            bind_current_thread_to(cpt, &set)?;
            Ok(f())
        })
        .map_err(|source| CptError::Spawn { name, source })
}

/// Spawns a thread called `name`, binds it to `cpt`, then runs `f` on it.
///
/// `Err` if the thread cannot be created. If it cannot be bound, `f` does
/// not run and joining returns the binding error: a service that would
/// rather run unbound (a container without binding rights) can catch that
/// and spawn a plain thread.
pub fn spawn_bound<T, F>(cpt: &Cpt, name: impl Into<String>, f: F) -> Result<JoinHandle<Result<T, CptError>>, CptError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    spawn_on(cpt.index, cpuset(&cpt.cpus)?, name.into(), f)
}

/// Spawns the workers of [`placement`]`(table, workers_per_cpt)`, each bound
/// to its CPT and named `{prefix}{cpt:02}_{worker:03}` (Lustre's
/// `ll_ost00_001`). `f` gets the worker's placement.
pub fn spawn_workers<T, F>(
    table: &CptTable,
    workers_per_cpt: u32,
    prefix: &str,
    f: F,
) -> Result<Vec<JoinHandle<Result<T, CptError>>>, CptError>
where
    F: Fn(&WorkerPlacement) -> T + Clone + Send + 'static,
    T: Send + 'static,
{
    placement(table, workers_per_cpt)
        .into_iter()
        .map(|p| {
            let f = f.clone();
            let name = format!("{prefix}{:02}_{:03}", p.cpt, p.worker);
            spawn_on(p.cpt, p.cpuset.clone(), name, move || f(&p))
        })
        .collect()
}
