//! Who an MDS request acts for: the credentials ([`Creds`]: fsuid, fsgid,
//! supplementary groups) the MDT checks permissions with, as Lustre's
//! client puts `fsuid`/`fsgid`/`suppgid` in every MDS request.
//!
//! The library API acts as its process ([`process`], read when the file
//! system is mounted; `Sheen::set_cred` changes it). A FUSE mount acts as
//! each request's caller: the kernel gives its fsuid and fsgid, and
//! [`PidGroups`] reads its supplementary groups from `/proc/PID/status`,
//! kept per (pid, uid, gid) for [`PID_GROUPS_TTL`] — a process that
//! changes its uid or gid is read again at once; one that only drops a
//! supplementary group keeps it here for up to that long (Lustre's identity
//! cache keeps groups for minutes). A request runs inside [`with_creds`];
//! the mdc reads [`current`].
//!
//! The same scope carries the request's early lock cancels
//! ([`with_cancels`]): lock handles the caller gave up before its change,
//! packed into the first modifying MDS request it makes
//! ([`take_cancels`]), as Lustre packs ELC handles into the request, and
//! the locks that request keeps ([`take_keeps`]).
//!
//! Owns: [`with_creds`], [`current`], [`with_cancels`], [`take_cancels`],
//! [`take_keeps`],
//! [`process`], [`PidGroups`]. Must
//! not: fail (an unreadable process has no supplementary groups, which
//! can only refuse more, never grant more).

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
pub use ptlrpc::wire::mds::Creds;

/// How long a process's supplementary groups are kept.
pub const PID_GROUPS_TTL: Duration = Duration::from_secs(2);
/// Processes kept at most (the table is emptied when full).
const PIDS_KEPT: usize = 4096;
/// Supplementary groups sent at most (Linux's `NGROUPS_MAX`).
const GROUPS_MAX: usize = 65536;

/// What a FUSE call's first modifying MDS request carries about this
/// client's locks.
#[derive(Debug, Default)]
struct LockNotes {
    /// Given up with the request (early lock cancel).
    cancels: Vec<u64>,
    /// Left in place by the request (`MdsReq::keeps`).
    keeps: Vec<u64>,
}

tokio::task_local! {
    static CREDS: Creds;
    static CANCELS: std::cell::RefCell<LockNotes>;
}

/// `f`, with lock handles `handles` to give up with its first modifying
/// MDS request, and `keeps`, locks of this client's that request leaves
/// in place (`MdsReq::keeps`); also returns the cancels no request took.
pub async fn with_cancels<F: Future>(handles: Vec<u64>, keeps: Vec<u64>, f: F) -> (F::Output, Vec<u64>) {
    CANCELS
        .scope(std::cell::RefCell::new(LockNotes { cancels: handles, keeps }), async {
            let out = f.await;
            (out, take_cancels())
        })
        .await
}

/// The early lock cancels of the request running on this task (taken:
/// the next request carries none).
pub fn take_cancels() -> Vec<u64> {
    CANCELS.try_with(|c| std::mem::take(&mut c.borrow_mut().cancels)).unwrap_or_default()
}

/// The locks the request running on this task keeps (taken with the
/// first modifying request, like [`take_cancels`]).
pub fn take_keeps() -> Vec<u64> {
    CANCELS.try_with(|c| std::mem::take(&mut c.borrow_mut().keeps)).unwrap_or_default()
}

/// `f`, run as `c`: the MDS requests it makes carry `c`.
pub async fn with_creds<F: Future>(c: Creds, f: F) -> F::Output {
    CREDS.scope(c, f).await
}

/// The credentials of the request running on this task, if any.
pub fn current() -> Option<Creds> {
    CREDS.try_with(Creds::clone).ok()
}

/// This process's credentials (`/proc/self/status`: fsuid, fsgid and
/// supplementary groups; root's if it cannot be read).
pub fn process() -> Creds {
    std::fs::read_to_string("/proc/self/status").map(|s| creds_of_status(&s)).unwrap_or_default()
}

/// The fsuid (the fourth `Uid:` field), fsgid and supplementary groups
/// in a `/proc/PID/status` text.
pub fn creds_of_status(status: &str) -> Creds {
    let fs_id = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|ids| ids.split_whitespace().nth(3))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    Creds { uid: fs_id("Uid:"), gid: fs_id("Gid:"), groups: groups_of_status(status) }
}

/// The supplementary groups in a `/proc/PID/status` text (its `Groups:`
/// line; none if it has none).
pub fn groups_of_status(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| g.split_whitespace().filter_map(|n| n.parse().ok()).take(GROUPS_MAX).collect())
        .unwrap_or_default()
}

fn read_pid(pid: u32) -> Option<Vec<u32>> {
    std::fs::read_to_string(format!("/proc/{pid}/status")).ok().map(|s| groups_of_status(&s))
}

/// A FUSE caller: pid, fsuid, fsgid.
type Caller = (u32, u32, u32);

/// Supplementary groups of the processes calling a FUSE mount (see the
/// module docs for how long they are kept).
#[derive(Debug, Default)]
pub struct PidGroups {
    pids: Mutex<HashMap<Caller, (Vec<u32>, Instant)>>,
}

impl PidGroups {
    /// An empty table.
    pub fn new() -> PidGroups {
        PidGroups::default()
    }

    /// The credentials of process `pid` calling as `uid`/`gid` at `now`.
    pub fn creds(&self, pid: u32, uid: u32, gid: u32, now: Instant) -> Creds {
        self.creds_with(pid, uid, gid, now, || read_pid(pid))
    }

    /// [`PidGroups::creds`] with the groups read by `read`.
    pub fn creds_with(
        &self,
        pid: u32,
        uid: u32,
        gid: u32,
        now: Instant,
        read: impl FnOnce() -> Option<Vec<u32>>,
    ) -> Creds {
        if pid == 0 {
            // The kernel's own requests.
            return Creds { uid, gid, groups: Vec::new() };
        }
        let key = (pid, uid, gid);
        if let Some((g, at)) = self.pids.lock().get(&key)
            && now.saturating_duration_since(*at) < PID_GROUPS_TTL
        {
            return Creds { uid, gid, groups: g.clone() };
        }
        // Read without the lock (a /proc read may wait on the process).
        let groups = read().unwrap_or_default();
        let mut m = self.pids.lock();
        if m.len() >= PIDS_KEPT {
            m.clear();
        }
        m.insert(key, (groups.clone(), now));
        Creds { uid, gid, groups }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_groups_parse() {
        let s = "Name:\tsh\nUid:\t1000\t1001\t1002\t1003\nGid:\t5\t6\t7\t8\nGroups:\t4 24 1000 \nNgid:\t0\n";
        assert_eq!(groups_of_status(s), vec![4, 24, 1000]);
        assert_eq!(creds_of_status(s), Creds { uid: 1003, gid: 8, groups: vec![4, 24, 1000] });
        assert_eq!(groups_of_status("Name:\tsh\nGroups:\t\n"), Vec::<u32>::new());
        assert_eq!(groups_of_status(""), Vec::<u32>::new());
    }

    #[test]
    fn groups_are_read_once_per_ttl_and_per_identity() {
        let t = PidGroups::new();
        let t0 = Instant::now();
        let reads = std::cell::Cell::new(0);
        let read = |g: Vec<u32>| {
            reads.set(reads.get() + 1);
            Some(g)
        };
        assert_eq!(t.creds_with(10, 1, 2, t0, || read(vec![5])).groups, vec![5]);
        assert_eq!(t.creds_with(10, 1, 2, t0 + PID_GROUPS_TTL / 2, || read(vec![6])).groups, vec![5], "kept");
        assert_eq!(reads.get(), 1);
        // A changed uid or gid is another identity: read again.
        let c = t.creds_with(10, 3, 2, t0, || read(vec![7]));
        assert_eq!((c.uid, c.gid, c.groups), (3, 2, vec![7]));
        assert_eq!(t.creds_with(10, 1, 2, t0 + PID_GROUPS_TTL, || read(vec![8])).groups, vec![8], "expired");
        assert_eq!(t.creds_with(11, 1, 2, t0, || None).groups, Vec::<u32>::new(), "gone: no groups");
        assert_eq!(t.creds_with(0, 1, 2, t0, || read(vec![9])).groups, Vec::<u32>::new(), "the kernel");
        assert_eq!(reads.get(), 3);
    }

    #[test]
    fn this_process_reads_as_itself() {
        let me = process();
        let c = PidGroups::new().creds(std::process::id(), me.uid, me.gid, Instant::now());
        let mut a = c.groups.clone();
        let mut b = me.groups.clone();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b);
    }

    #[tokio::test]
    async fn a_scope_gives_its_creds() {
        assert_eq!(current(), None);
        let c = Creds { uid: 1, gid: 2, groups: vec![3] };
        assert_eq!(with_creds(c.clone(), async { current() }).await, Some(c));
    }
}
