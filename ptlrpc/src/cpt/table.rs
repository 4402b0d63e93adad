//! The CPT table: which CPUs and NUMA nodes make up each CPU partition.
//!
//! Owns: reading cores, PUs and NUMA nodes out of an hwloc topology (the
//! real machine's or a synthetic one) into a [`Machine`], and splitting a
//! `Machine` into CPTs according to [`CptSettings`].
//!
//! Must not: bind threads or allocate memory (that is [`super::bind`] and
//! [`super::memory`]); panic on settings that do not fit the machine.
//!
//! Rules, after libcfs:
//! - default: one CPT per NUMA node that has CPUs, in node order;
//! - `npartitions = N` with N at most the number of such nodes: whole nodes,
//!   grouped contiguously and as evenly as possible;
//! - `npartitions = N` with more: the cores, in node order, cut into N
//!   contiguous runs whose sizes differ by at most one. A core's hardware
//!   threads always stay together. On a symmetric machine with N a multiple
//!   of the node count, no CPT spans two nodes;
//! - a pattern overrides both.

use std::collections::{BTreeMap, BTreeSet};

use hwlocality::Topology;
use hwlocality::bitmap::{BitmapIndex, BitmapRef};
use hwlocality::cpu::cpuset::CpuSet;
use hwlocality::memory::nodeset::NodeSet;
use hwlocality::object::types::ObjectType;

use super::settings::{CptPattern, CptSettings, PatternUnit};
use super::{CptError, bind};

/// One CPU partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cpt {
    /// Its index in the table, `0..table.len()`.
    pub index: u32,
    /// OS indexes of its processing units (Linux CPU numbers), ascending.
    pub cpus: Vec<u32>,
    /// OS indexes of the NUMA nodes its CPUs belong to, ascending.
    pub numa_nodes: Vec<u32>,
}

/// Where a table's topology came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopologySource {
    /// The machine this process runs on: its CPTs can be bound to.
    System,
    /// An hwloc synthetic description, e.g. `"pack:2 numa:1 core:4 pu:1"`:
    /// a model for tests and planning; its CPUs may not exist here.
    Synthetic(String),
}

/// The CPU partitions of one (real or synthetic) machine.
#[derive(Clone, Debug)]
pub struct CptTable {
    source: TopologySource,
    cpts: Vec<Cpt>,
    /// `cpusets[i]` is `cpts[i].cpus` as an hwloc set, built once.
    cpusets: Vec<CpuSet>,
    cpu_to_cpt: BTreeMap<u32, u32>,
}

impl CptTable {
    /// The CPTs of the machine this process runs on.
    pub fn from_system(settings: &CptSettings) -> Result<Self, CptError> {
        let topology = bind::system_topology()?;
        Self::build(topology, settings, TopologySource::System)
    }

    /// The CPTs of an hwloc synthetic topology, e.g.
    /// `"pack:2 numa:1 core:4 pu:1"` for 2 sockets of 4 single-threaded
    /// cores, one NUMA node per socket.
    pub fn from_synthetic(desc: &str, settings: &CptSettings) -> Result<Self, CptError> {
        let topology = Topology::builder()
            .from_synthetic(desc)
            .map_err(|e| CptError::Synthetic { desc: desc.to_owned(), reason: e.to_string() })?
            .build()
            .map_err(|e| CptError::Synthetic { desc: desc.to_owned(), reason: e.to_string() })?;
        Self::build(&topology, settings, TopologySource::Synthetic(desc.to_owned()))
    }

    fn build(topology: &Topology, settings: &CptSettings, source: TopologySource) -> Result<Self, CptError> {
        let pattern = settings.validate()?;
        let machine = Machine::from_topology(topology)?;
        let cpts = machine.partition(settings.npartitions, pattern.as_ref())?;
        let cpusets = cpts.iter().map(|c| bind::cpuset(&c.cpus)).collect::<Result<Vec<_>, _>>()?;
        let cpu_to_cpt = cpts.iter().flat_map(|c| c.cpus.iter().map(|&cpu| (cpu, c.index))).collect();
        Ok(Self { source, cpts, cpusets, cpu_to_cpt })
    }

    /// How many CPTs there are (at least one).
    pub fn len(&self) -> usize {
        self.cpts.len()
    }

    /// Always false: a table has at least one CPT.
    pub fn is_empty(&self) -> bool {
        self.cpts.is_empty()
    }

    /// CPT `index`, if there is one.
    pub fn cpt(&self, index: u32) -> Option<&Cpt> {
        self.cpts.get(index as usize)
    }

    /// The CPT that holds `cpu` (an OS PU index), if any.
    pub fn cpt_of_cpu(&self, cpu: u32) -> Option<u32> {
        self.cpu_to_cpt.get(&cpu).copied()
    }

    /// All CPTs, by index.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Cpt> {
        self.cpts.iter()
    }

    /// Where the topology came from.
    pub fn source(&self) -> &TopologySource {
        &self.source
    }

    /// CPT `index`'s CPUs as an hwloc set.
    pub(crate) fn cpuset_of(&self, index: u32) -> Option<&CpuSet> {
        self.cpusets.get(index as usize)
    }
}

/// A core: its hardware threads and its NUMA node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Core {
    /// OS PU indexes, ascending.
    pub(crate) cpus: Vec<u32>,
    /// OS index of its NUMA node.
    pub(crate) numa: u32,
}

/// What partitioning needs to know about a machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Machine {
    /// Cores sorted by NUMA node, then in topology order.
    pub(crate) cores: Vec<Core>,
    /// Every NUMA node, with or without CPUs, ascending.
    pub(crate) numa_nodes: Vec<u32>,
}

/// hwloc 2 gives every CPU-side object a nodeset; a machine without NUMA
/// information still has node 0.
fn first_node(nodeset: Option<BitmapRef<'_, NodeSet>>) -> Result<u32, CptError> {
    nodeset.and_then(|n| n.first_set()).map_or(Ok(0), os_index)
}

fn os_index(i: BitmapIndex) -> Result<u32, CptError> {
    u32::try_from(i).map_err(|_| CptError::Topology { reason: format!("index {i} does not fit in 32 bits") })
}

impl Machine {
    /// Reads the cores (PUs with no core object become one-PU cores) and
    /// NUMA nodes of `topology`.
    pub(crate) fn from_topology(topology: &Topology) -> Result<Self, CptError> {
        let mut covered = BTreeSet::new();
        let mut cores = Vec::new();
        for core in topology.objects_with_type(ObjectType::Core) {
            let Some(cpuset) = core.cpuset() else {
                continue;
            };
            let cpus = cpuset.iter_set().map(os_index).collect::<Result<Vec<_>, _>>()?;
            if cpus.is_empty() {
                continue;
            }
            covered.extend(cpus.iter().copied());
            cores.push(Core { cpus, numa: first_node(core.nodeset())? });
        }
        for pu in topology.objects_with_type(ObjectType::PU) {
            let Some(cpu) = pu.os_index() else { continue };
            let cpu = u32::try_from(cpu)
                .map_err(|_| CptError::Topology { reason: format!("PU index {cpu} does not fit in 32 bits") })?;
            if covered.insert(cpu) {
                cores.push(Core { cpus: vec![cpu], numa: first_node(pu.nodeset())? });
            }
        }
        if cores.is_empty() {
            return Err(CptError::NoCpus);
        }
        // Stable: keeps topology order within a node.
        cores.sort_by_key(|c| c.numa);
        let numa_nodes = topology
            .objects_with_type(ObjectType::NUMANode)
            .filter_map(|n| n.os_index())
            .filter_map(|i| u32::try_from(i).ok())
            .chain(cores.iter().map(|c| c.numa))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        Ok(Self { cores, numa_nodes })
    }

    /// NUMA nodes that have at least one core, ascending.
    fn nodes_with_cpus(&self) -> Vec<u32> {
        let set: BTreeSet<u32> = self.cores.iter().map(|c| c.numa).collect();
        set.into_iter().collect()
    }

    /// Splits the machine into CPTs; see the module docs for the rules.
    pub(crate) fn partition(
        &self,
        npartitions: Option<u32>,
        pattern: Option<&CptPattern>,
    ) -> Result<Vec<Cpt>, CptError> {
        if let Some(p) = pattern {
            return self.partition_by_pattern(p);
        }
        let nodes = self.nodes_with_cpus();
        let wanted = npartitions.map_or(nodes.len(), |n| n as usize);
        let groups: Vec<Vec<&Core>> = if wanted == 0 {
            return Err(super::SettingsError::ZeroPartitions.into());
        } else if wanted <= nodes.len() {
            // Whole NUMA nodes per CPT.
            split_evenly(&nodes, wanted)
                .into_iter()
                .map(|ns| self.cores.iter().filter(|c| ns.contains(&c.numa)).collect())
                .collect()
        } else if wanted <= self.cores.len() {
            // Whole cores per CPT; `cores` is sorted by node.
            split_evenly(&self.cores, wanted).into_iter().map(|cs| cs.iter().collect()).collect()
        } else {
            return Err(CptError::TooManyPartitions { requested: wanted, cores: self.cores.len() });
        };
        Ok(groups
            .into_iter()
            .enumerate()
            .map(|(i, cores)| {
                make_cpt(i, cores.iter().flat_map(|c| c.cpus.iter().copied()), cores.iter().map(|c| c.numa))
            })
            .collect())
    }

    fn partition_by_pattern(&self, pattern: &CptPattern) -> Result<Vec<Cpt>, CptError> {
        let numa_of: BTreeMap<u32, u32> =
            self.cores.iter().flat_map(|c| c.cpus.iter().map(|&cpu| (cpu, c.numa))).collect();
        let mut cpts = Vec::with_capacity(pattern.members.len());
        for (i, members) in pattern.members.iter().enumerate() {
            let cpt = u32::try_from(i).unwrap_or(u32::MAX);
            let cpus: Vec<u32> = match pattern.unit {
                PatternUnit::Cpu => {
                    if let Some(&cpu) = members.iter().find(|c| !numa_of.contains_key(c)) {
                        return Err(CptError::UnknownCpu { cpu, cpt });
                    }
                    members.clone()
                }
                PatternUnit::NumaNode => {
                    let mut cpus = Vec::new();
                    for &node in members {
                        if self.numa_nodes.binary_search(&node).is_err() {
                            return Err(CptError::UnknownNumaNode { node, cpt });
                        }
                        let before = cpus.len();
                        cpus.extend(self.cores.iter().filter(|c| c.numa == node).flat_map(|c| c.cpus.iter().copied()));
                        if cpus.len() == before {
                            return Err(CptError::NumaNodeWithoutCpus { node, cpt });
                        }
                    }
                    cpus
                }
            };
            let nodes: Vec<u32> = cpus.iter().filter_map(|c| numa_of.get(c).copied()).collect();
            cpts.push(make_cpt(i, cpus, nodes));
        }
        Ok(cpts)
    }
}

/// Cuts `items` into `parts` contiguous runs whose lengths differ by at most
/// one. Requires `1 <= parts <= items.len()`, so no run is empty.
fn split_evenly<T>(items: &[T], parts: usize) -> Vec<&[T]> {
    assert!(parts >= 1 && parts <= items.len(), "split_evenly({}, {parts})", items.len());
    (0..parts).map(|k| &items[k * items.len() / parts..(k + 1) * items.len() / parts]).collect()
}

fn make_cpt(index: usize, cpus: impl IntoIterator<Item = u32>, nodes: impl IntoIterator<Item = u32>) -> Cpt {
    let cpus: BTreeSet<u32> = cpus.into_iter().collect();
    let nodes: BTreeSet<u32> = nodes.into_iter().collect();
    Cpt {
        index: u32::try_from(index).unwrap_or(u32::MAX),
        cpus: cpus.into_iter().collect(),
        numa_nodes: nodes.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::split_evenly;

    #[test]
    fn split_evenly_makes_contiguous_runs_that_differ_by_at_most_one() {
        let items: Vec<u32> = (0..10).collect();
        for parts in 1..=10 {
            let runs = split_evenly(&items, parts);
            assert_eq!(runs.len(), parts);
            assert_eq!(runs.concat(), items);
            let (min, max) = (runs.iter().map(|r| r.len()).min(), runs.iter().map(|r| r.len()).max());
            assert!(min >= Some(1) && max <= min.map(|m| m + 1), "{parts}: {runs:?}");
        }
    }
}
