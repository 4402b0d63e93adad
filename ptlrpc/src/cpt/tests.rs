//! CPT tests: synthetic machines for the partitioning rules and the worker
//! plan; the real machine for binding and bound memory.

use std::collections::BTreeSet;

use super::*;

/// 2 sockets x 4 single-threaded cores, one NUMA node per socket.
const TWO_SOCKETS: &str = "pack:2 numa:1 core:4 pu:1";
/// The same with 2 hardware threads per core (PUs 2k and 2k+1 share core k).
const TWO_SOCKETS_HT: &str = "pack:2 numa:1 core:4 pu:2";

fn npartitions(n: u32) -> CptSettings {
    CptSettings { npartitions: Some(n), pattern: None }
}

fn pattern(p: &str) -> CptSettings {
    CptSettings { npartitions: None, pattern: Some(p.to_owned()) }
}

fn cpus_of(table: &CptTable) -> Vec<Vec<u32>> {
    table.iter().map(|c| c.cpus.clone()).collect()
}

fn nodes_of(table: &CptTable) -> Vec<Vec<u32>> {
    table.iter().map(|c| c.numa_nodes.clone()).collect()
}

#[test]
fn synthetic_two_sockets_default_is_one_cpt_per_numa_node() {
    let t = CptTable::from_synthetic(TWO_SOCKETS, &CptSettings::default()).unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(cpus_of(&t), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
    assert_eq!(nodes_of(&t), vec![vec![0], vec![1]]);
    assert_eq!(t.cpt(1).map(|c| c.index), Some(1));
    assert!(t.cpt(2).is_none());
    assert_eq!(t.cpt_of_cpu(5), Some(1));
    assert_eq!(t.cpt_of_cpu(0), Some(0));
    assert_eq!(t.cpt_of_cpu(8), None);
    assert_eq!(t.source(), &TopologySource::Synthetic(TWO_SOCKETS.into()));
}

#[test]
fn synthetic_npartitions_four_splits_cores_evenly() {
    let t = CptTable::from_synthetic(TWO_SOCKETS, &npartitions(4)).unwrap();
    assert_eq!(cpus_of(&t), vec![vec![0, 1], vec![2, 3], vec![4, 5], vec![6, 7]]);
    // No CPT spans two sockets.
    assert_eq!(nodes_of(&t), vec![vec![0], vec![0], vec![1], vec![1]]);
}

#[test]
fn synthetic_npartitions_fewer_than_nodes_groups_whole_nodes() {
    let t = CptTable::from_synthetic(TWO_SOCKETS, &npartitions(1)).unwrap();
    assert_eq!(cpus_of(&t), vec![(0..8).collect::<Vec<_>>()]);
    assert_eq!(nodes_of(&t), vec![vec![0, 1]]);
    let t = CptTable::from_synthetic("pack:4 numa:1 core:1 pu:1", &npartitions(3)).unwrap();
    assert_eq!(cpus_of(&t), vec![vec![0], vec![1], vec![2, 3]]);
}

#[test]
fn hyperthreads_of_a_core_stay_in_one_cpt() {
    for n in 1..=8 {
        let t = CptTable::from_synthetic(TWO_SOCKETS_HT, &npartitions(n)).unwrap();
        assert_eq!(t.len(), n as usize);
        for core in 0..8 {
            assert_eq!(t.cpt_of_cpu(2 * core), t.cpt_of_cpu(2 * core + 1), "npartitions={n}: core {core} split");
        }
        let sizes: BTreeSet<usize> = t.iter().map(|c| c.cpus.len()).collect();
        assert!(sizes.len() <= 2, "npartitions={n}: uneven {sizes:?}");
    }
    let t = CptTable::from_synthetic(TWO_SOCKETS_HT, &npartitions(8)).unwrap();
    assert_eq!(t.cpt(3).map(|c| c.cpus.clone()), Some(vec![6, 7]));
}

#[test]
fn more_partitions_than_cores_is_an_error() {
    let err = CptTable::from_synthetic(TWO_SOCKETS_HT, &npartitions(9)).unwrap_err();
    assert!(matches!(err, CptError::TooManyPartitions { requested: 9, cores: 8 }), "{err}");
    assert!(err.to_string().contains("only 8 cores"), "{err}");
    let err = CptTable::from_synthetic(TWO_SOCKETS, &npartitions(0)).unwrap_err();
    assert!(matches!(err, CptError::Settings(SettingsError::ZeroPartitions)));
}

#[test]
fn cpu_pattern_overrides_npartitions() {
    let mut s = pattern("0[0,1] 1[2-7]");
    s.npartitions = Some(4);
    let t = CptTable::from_synthetic(TWO_SOCKETS, &s).unwrap();
    assert_eq!(cpus_of(&t), vec![vec![0, 1], vec![2, 3, 4, 5, 6, 7]]);
    assert_eq!(nodes_of(&t), vec![vec![0], vec![0, 1]]);
    // CPUs left out of every CPT belong to none.
    let t = CptTable::from_synthetic(TWO_SOCKETS, &pattern("1[7] 0[0]")).unwrap();
    assert_eq!(cpus_of(&t), vec![vec![0], vec![7]]);
    assert_eq!(t.cpt_of_cpu(3), None);
}

#[test]
fn numa_pattern_takes_whole_nodes() {
    let t = CptTable::from_synthetic(TWO_SOCKETS, &pattern("N 0[1] 1[0]")).unwrap();
    assert_eq!(cpus_of(&t), vec![vec![4, 5, 6, 7], vec![0, 1, 2, 3]]);
    assert_eq!(nodes_of(&t), vec![vec![1], vec![0]]);
}

#[test]
fn bad_patterns_are_errors_not_panics() {
    let cases: &[(&str, &str)] = &[
        ("0[0] 1[8]", "CPU 8 in CPT 1 does not exist"),
        ("N 0[0] 1[2]", "NUMA node 2 in CPT 1 does not exist"),
        ("0[0,1] 1[1]", "CPU 1 is in CPT 0 and again in CPT 1"),
        ("0[0] 0[1]", "CPT 0 is given twice"),
        ("0[0", "expected ',' or ']'"),
        ("garbage", "expected a CPT number"),
    ];
    for (p, want) in cases {
        let err = CptTable::from_synthetic(TWO_SOCKETS, &pattern(p)).unwrap_err();
        assert!(err.to_string().contains(want), "{p:?}: {err} lacks {want:?}");
    }
}

#[test]
fn bad_synthetic_description_is_an_error() {
    let err = CptTable::from_synthetic("pack:two", &CptSettings::default()).unwrap_err();
    assert!(matches!(err, CptError::Synthetic { .. }), "{err}");
}

#[test]
fn synthetic_two_sockets_workers_bound_to_their_cpt() {
    for settings in [CptSettings::default(), npartitions(4), npartitions(1)] {
        let t = CptTable::from_synthetic(TWO_SOCKETS_HT, &settings).unwrap();
        let plan = placement(&t, 3);
        assert_eq!(plan.len(), t.len() * 3);
        for cpt in t.iter() {
            let workers: Vec<&WorkerPlacement> = plan.iter().filter(|p| p.cpt == cpt.index).collect();
            assert_eq!(workers.iter().map(|p| p.worker).collect::<Vec<_>>(), vec![0, 1, 2]);
            for w in workers {
                let cpus: Vec<u32> = w.cpuset.iter_set().map(|i| u32::try_from(i).unwrap()).collect();
                assert!(!cpus.is_empty());
                assert!(
                    cpus.iter().all(|&c| t.cpt_of_cpu(c) == Some(cpt.index)),
                    "{settings:?}: worker {} of CPT {} may run on {cpus:?}, CPT has {:?}",
                    w.worker,
                    cpt.index,
                    cpt.cpus
                );
                assert_eq!(cpus, cpt.cpus);
            }
        }
    }
    assert!(placement(&CptTable::from_synthetic(TWO_SOCKETS, &CptSettings::default()).unwrap(), 0).is_empty());
}

#[test]
fn synthetic_cpts_cannot_be_bound_here() {
    // 32 CPUs: CPT 3 is CPUs 24-31, which this machine does not have.
    let t = CptTable::from_synthetic("pack:4 numa:1 core:8 pu:1", &CptSettings::default()).unwrap();
    let cpt = t.cpt(3).unwrap();
    let err = bind_current_thread(cpt).unwrap_err();
    assert!(matches!(err, CptError::CpusNotOnThisMachine { cpt: Some(3), .. }), "{err}");
    let joined = spawn_bound(cpt, "cpt-nobind", || 7).unwrap().join().unwrap();
    assert!(joined.is_err());
}

// ---- the real machine ----

/// Every CPU hwloc sees here.
fn system_cpus() -> Vec<u32> {
    let topology = bind::system_topology().unwrap();
    topology.cpuset().iter_set().map(|i| u32::try_from(i).unwrap()).collect()
}

#[test]
fn system_default_covers_every_cpu_once() {
    let t = CptTable::from_system(&CptSettings::default()).unwrap();
    assert_eq!(t.source(), &TopologySource::System);
    assert!(!t.is_empty());
    let mut all: Vec<u32> = t.iter().flat_map(|c| c.cpus.clone()).collect();
    all.sort_unstable();
    assert_eq!(all, system_cpus());
    let nodes: BTreeSet<u32> = t.iter().flat_map(|c| c.numa_nodes.clone()).collect();
    // One CPT per NUMA node with CPUs (this VM: 1 node, 2 cores -> 1 CPT).
    assert_eq!(t.len(), nodes.len());
    for cpt in t.iter() {
        assert_eq!(cpt.numa_nodes.len(), 1);
    }
}

#[test]
fn system_bound_thread_stays_in_its_cpt() {
    let t = CptTable::from_system(&CptSettings::default()).unwrap();
    let cpt = t.cpt(0).unwrap().clone();
    let expected = cpt.cpus.clone();
    let handle = spawn_bound(&cpt, "cpt-test-0", move || {
        let binding = current_thread_binding()?;
        let mut seen = BTreeSet::new();
        for _ in 0..200 {
            seen.insert(current_thread_last_cpu()?);
            std::thread::yield_now();
        }
        Ok::<_, CptError>((binding, seen))
    })
    .unwrap();
    let (binding, seen) = handle.join().unwrap().unwrap().unwrap();
    assert_eq!(binding, expected);
    assert!(seen.iter().all(|c| expected.contains(c)), "{seen:?} not in {expected:?}");
}

#[test]
fn system_one_cpu_per_cpt_workers_run_on_their_cpu() {
    let cpus = system_cpus();
    if cpus.len() < 2 {
        return; // Nothing to tell apart on one CPU.
    }
    let p = format!("0[{}] 1[{}]", cpus[0], cpus[1]);
    let t = CptTable::from_system(&pattern(&p)).unwrap();
    let handles = spawn_workers(&t, 2, "cpt_test", |w| {
        let name = std::thread::current().name().map(str::to_owned);
        let last = current_thread_last_cpu()?;
        Ok::<_, CptError>((w.cpt, name, current_thread_binding()?, last))
    })
    .unwrap();
    assert_eq!(handles.len(), 4);
    for h in handles {
        let (cpt, name, binding, last) = h.join().unwrap().unwrap().unwrap();
        let want = cpus[cpt as usize];
        assert_eq!(binding, vec![want], "worker {name:?}");
        assert_eq!(last, want, "worker {name:?}");
        assert!(name.unwrap().starts_with(&format!("cpt_test{cpt:02}_")));
    }
}

#[test]
fn system_pattern_naming_a_missing_cpu_is_an_error() {
    let err = CptTable::from_system(&pattern("0[65535]")).unwrap_err();
    assert!(matches!(err, CptError::UnknownCpu { cpu: 65535, cpt: 0 }), "{err}");
    let n = u32::try_from(system_cpus().len()).unwrap();
    let err = CptTable::from_system(&npartitions(n + 1)).unwrap_err();
    assert!(matches!(err, CptError::TooManyPartitions { .. }), "{err}");
}

#[test]
fn alloc_on_binds_memory_to_the_cpt_nodes() {
    let t = CptTable::from_system(&CptSettings::default()).unwrap();
    let cpt = t.cpt(0).unwrap();
    let mut mem = alloc_on(cpt, 1 << 20).unwrap();
    assert_eq!(mem.len(), 1 << 20);
    assert_eq!(mem.cpt(), 0);
    for b in mem.as_uninit_mut() {
        b.write(0xA5);
    }
    assert!(alloc_on(cpt, 0).is_err());
    assert!(alloc_on(cpt, MAX_ALLOC_BYTES + 1).is_err());
    // A synthetic CPT on a node this machine lacks.
    let far = CptTable::from_synthetic("pack:2 numa:1 core:1 pu:1", &CptSettings::default()).unwrap();
    let err = alloc_on(far.cpt(1).unwrap(), 4096).unwrap_err();
    assert!(matches!(err, CptError::Alloc { cpt: 1, .. }), "{err}");
}
