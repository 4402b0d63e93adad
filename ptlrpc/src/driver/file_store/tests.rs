use std::time::Duration;

use super::*;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sheen-filestore-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn txn(transno: u64, obj: u128, value: u8) -> Txn<Vec<(ObjId, Vec<u8>)>> {
    Txn {
        transno: Transno(transno),
        version: ObjVersion(transno),
        objects: vec![ObjId(obj)],
        pre_versions: [ObjVersion(0); PRE_VERSIONS],
        change: vec![(ObjId(obj), vec![value])],
        xid: crate::wire::Xid(transno),
        tag: 1,
        client: ClientRecord { uuid: "c".into(), last_transno: Transno(transno), ..ClientRecord::default() },
        server: ServerRecord { epoch: 1, last_transno: Transno(transno) },
        replay: false,
    }
}

#[test]
fn reopen_keeps_what_was_committed_and_nothing_after() {
    let d = dir("reopen");
    let mut s = FileStore::open(&d).unwrap();
    assert!(matches!(FileStore::open(&d), Err(StoreError::Locked(_))));
    s.apply(txn(1, 7, 10)).expect("apply");
    s.commit();
    assert!(s.wait_committed(Transno(1), Duration::from_secs(10)));
    s.apply(txn(2, 7, 20)).expect("apply");
    assert_eq!(s.get(ObjId(7)), Some((ObjVersion(2), &[20u8][..])));
    assert_eq!(s.committed(), Transno(1));
    drop(s); // no commit mark for txn 2: a crash before the next commit
    let s = FileStore::open(&d).unwrap();
    assert_eq!(s.get(ObjId(7)), Some((ObjVersion(1), &[10u8][..])));
    assert_eq!(s.committed(), Transno(1));
    assert_eq!(s.load().clients[0].last_transno, Transno(1));
    let j = read_journal(&d).unwrap();
    assert_eq!(j.iter().map(|e| e.transno).collect::<Vec<_>>(), vec![Transno(1)]);
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
}
