//! Scenario tests of the lock table.

use std::time::Duration;

use super::*;
use crate::time::Time;

const R: ResId = ResId(7);
const LU: InodeBits = InodeBits::KNOWN;

fn ns() -> LockNamespace<u32> {
    LockNamespace::new(
        LdlmSettings { callback_timeout: Duration::from_secs(10), ast_resend: Duration::from_secs(3), max_locks: 100 },
        1000,
    )
}

fn granted(e: Enqueued) -> LockHandle {
    match e {
        Enqueued::Granted(h) => h,
        other => panic!("expected a grant, got {other:?}"),
    }
}

fn events(ns: &mut LockNamespace<u32>) -> Vec<LdlmEvent<u32>> {
    std::iter::from_fn(|| ns.poll_event()).collect()
}

#[test]
fn readers_share_and_a_writer_waits_for_their_cancels() {
    let mut ns = ns();
    let t = Time::ZERO;
    let a = granted(ns.enqueue(t, Owner::Remote(1), R, LockMode::Pr, LU, Wait::Block).unwrap());
    let b = granted(ns.enqueue(t, Owner::Remote(2), R, LockMode::Pr, LU, Wait::Block).unwrap());
    let Enqueued::Waiting(w) = ns.enqueue(t, Owner::Local, R, LockMode::Ex, InodeBits::UPDATE, Wait::Block).unwrap()
    else {
        panic!("EX must wait")
    };
    let ev = events(&mut ns);
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert!(ev.iter().all(|e| matches!(e, LdlmEvent::BlockingAst { .. })));
    // A reader arriving now queues behind the writer, and a no-wait one is refused.
    assert_eq!(ns.enqueue(t, Owner::Remote(3), R, LockMode::Pr, LU, Wait::NoWait).unwrap(), Enqueued::WouldBlock);
    ns.cancel(t, Owner::Remote(1), a).unwrap();
    assert!(events(&mut ns).is_empty());
    ns.cancel(t, Owner::Remote(2), b).unwrap();
    assert_eq!(events(&mut ns), vec![LdlmEvent::Granted { owner: Owner::Local, lock: w }]);
    ns.check().unwrap();
    ns.cancel(t, Owner::Local, w).unwrap();
    assert!(ns.is_empty());
}

#[test]
fn disjoint_bits_do_not_conflict() {
    let mut ns = ns();
    let t = Time::ZERO;
    granted(ns.enqueue(t, Owner::Remote(1), R, LockMode::Pr, InodeBits::LOOKUP, Wait::Block).unwrap());
    granted(ns.enqueue(t, Owner::Local, R, LockMode::Ex, InodeBits::UPDATE, Wait::Block).unwrap());
    assert!(events(&mut ns).is_empty());
}

#[test]
fn a_holder_that_never_cancels_is_evicted_and_the_waiter_granted() {
    let mut ns = ns();
    let t0 = Time::ZERO;
    let a = granted(ns.enqueue(t0, Owner::Remote(1), R, LockMode::Pr, LU, Wait::Block).unwrap());
    granted(ns.enqueue(t0, Owner::Remote(1), ResId(8), LockMode::Pr, LU, Wait::Block).unwrap());
    let Enqueued::Waiting(w) = ns.enqueue(t0, Owner::Local, R, LockMode::Ex, LU, Wait::Block).unwrap() else {
        panic!()
    };
    assert_eq!(events(&mut ns), vec![LdlmEvent::BlockingAst { owner: 1, lock: a, res: R, bits: LU }]);
    // Re-sent every 3 s until the 10 s deadline.
    assert_eq!(ns.poll_timeout(), Some(Time::from_secs(3)));
    ns.handle_timeout(Time::from_secs(3));
    assert_eq!(events(&mut ns).len(), 1);
    ns.handle_timeout(Time::from_secs(6));
    ns.handle_timeout(Time::from_secs(9));
    assert_eq!(events(&mut ns).len(), 2);
    assert_eq!(ns.poll_timeout(), Some(Time::from_secs(10)));
    ns.handle_timeout(Time::from_secs(10));
    assert_eq!(
        events(&mut ns),
        vec![LdlmEvent::Evict { owner: 1, lock: a }, LdlmEvent::Granted { owner: Owner::Local, lock: w }]
    );
    // Every lock of the evicted owner is gone.
    assert!(ns.locks_of(Owner::Remote(1)).is_empty());
    assert_eq!(ns.poll_timeout(), None);
    ns.check().unwrap();
}

#[test]
fn cancel_of_an_unknown_or_foreign_lock_is_refused() {
    let mut ns = ns();
    let a = granted(ns.enqueue(Time::ZERO, Owner::Remote(1), R, LockMode::Pr, LU, Wait::Block).unwrap());
    assert_eq!(ns.cancel(Time::ZERO, Owner::Remote(2), a), Err(LdlmError::NoLock(a)));
    assert_eq!(ns.cancel(Time::ZERO, Owner::Remote(1), LockHandle(5)), Err(LdlmError::NoLock(LockHandle(5))));
    ns.cancel(Time::ZERO, Owner::Remote(1), a).unwrap();
    assert_eq!(ns.cancel(Time::ZERO, Owner::Remote(1), a), Err(LdlmError::NoLock(a)));
}

#[test]
fn waiters_are_granted_in_order_and_compatible_ones_together() {
    let mut ns = ns();
    let t = Time::ZERO;
    let x = granted(ns.enqueue(t, Owner::Local, R, LockMode::Ex, LU, Wait::Block).unwrap());
    let mut w = Vec::new();
    for (o, m) in [(1, LockMode::Pr), (2, LockMode::Pr), (3, LockMode::Ex), (4, LockMode::Pr)] {
        match ns.enqueue(t, Owner::Remote(o), R, m, LU, Wait::Block).unwrap() {
            Enqueued::Waiting(h) => w.push(h),
            e => panic!("{e:?}"),
        }
    }
    assert!(events(&mut ns).is_empty(), "local holders get no callbacks");
    ns.cancel(t, Owner::Local, x).unwrap();
    let ev = events(&mut ns);
    // The two readers are granted; the writer waits and calls them back; the last reader waits behind it.
    assert_eq!(ev[0], LdlmEvent::Granted { owner: Owner::Remote(1), lock: w[0] });
    assert_eq!(ev[1], LdlmEvent::Granted { owner: Owner::Remote(2), lock: w[1] });
    assert_eq!(ev.len(), 4, "{ev:?}");
    assert!(matches!(ev[2], LdlmEvent::BlockingAst { owner: 1, .. }));
    assert!(matches!(ev[3], LdlmEvent::BlockingAst { owner: 2, .. }));
    ns.cancel(t, Owner::Remote(1), w[0]).unwrap();
    ns.cancel(t, Owner::Remote(2), w[1]).unwrap();
    let ev = events(&mut ns);
    assert_eq!(ev[0], LdlmEvent::Granted { owner: Owner::Remote(3), lock: w[2] });
    assert!(matches!(ev[1], LdlmEvent::BlockingAst { owner: 3, .. }));
    ns.check().unwrap();
}

#[test]
fn the_table_has_a_bound() {
    let mut ns = ns();
    for i in 0..100 {
        ns.enqueue(Time::ZERO, Owner::Remote(1), ResId(i), LockMode::Pr, LU, Wait::Block).unwrap();
    }
    assert_eq!(
        ns.enqueue(Time::ZERO, Owner::Remote(1), R, LockMode::Pr, LU, Wait::Block),
        Err(LdlmError::TooManyLocks(100))
    );
    assert_eq!(ns.cancel_owner(Time::ZERO, 1), 100);
    assert!(ns.is_empty());
}

#[test]
fn a_local_lock_keeps_the_locks_its_client_names_and_calls_back_the_rest() {
    let mut ns = ns();
    let t = Time::ZERO;
    let mine = granted(ns.enqueue(t, Owner::Remote(1), R, LockMode::Pr, LU, Wait::Block).unwrap());
    // Client 1's own create in the directory: its lock stays, nothing is
    // called back, and the local lock is granted at once.
    let l = granted(ns.enqueue_keeping(t, 1, R, LockMode::Ex, InodeBits::UPDATE, Wait::NoWait, &[mine]).unwrap());
    assert!(events(&mut ns).is_empty());
    ns.check().unwrap();
    // One way: client 1's new enqueue still waits for the local lock.
    assert_eq!(ns.enqueue(t, Owner::Remote(1), R, LockMode::Pr, LU, Wait::NoWait).unwrap(), Enqueued::WouldBlock);
    ns.cancel(t, Owner::Local, l).unwrap();
    assert!(ns.lock(mine).is_some_and(|k| k.granted));

    // Another client's lock is not kept though named: it is called back.
    let theirs = granted(ns.enqueue(t, Owner::Remote(2), R, LockMode::Pr, LU, Wait::Block).unwrap());
    let Enqueued::Waiting(w) =
        ns.enqueue_keeping(t, 1, R, LockMode::Ex, InodeBits::UPDATE, Wait::Block, &[mine, theirs]).unwrap()
    else {
        panic!("client 2's lock must block client 1's change")
    };
    assert_eq!(
        events(&mut ns),
        vec![LdlmEvent::BlockingAst { owner: 2, lock: theirs, res: R, bits: LU }],
        "only the lock not kept is called back"
    );
    ns.cancel(t, Owner::Remote(2), theirs).unwrap();
    assert_eq!(events(&mut ns), vec![LdlmEvent::Granted { owner: Owner::Local, lock: w }]);
    ns.check().unwrap();
    ns.cancel(t, Owner::Local, w).unwrap();

    // A kept handle of another resource or an unknown one keeps nothing.
    let other = granted(ns.enqueue(t, Owner::Remote(1), ResId(8), LockMode::Pr, LU, Wait::Block).unwrap());
    let Enqueued::Waiting(_) = ns
        .enqueue_keeping(t, 3, R, LockMode::Ex, InodeBits::UPDATE, Wait::Block, &[mine, other, LockHandle(99)])
        .unwrap()
    else {
        panic!("client 3 cannot keep client 1's lock")
    };
    assert_eq!(events(&mut ns), vec![LdlmEvent::BlockingAst { owner: 1, lock: mine, res: R, bits: LU }]);
    ns.check().unwrap();
}
