//! The job id every request of this client carries in its header (for
//! the servers' per-job statistics), chosen like Lustre's `jobid_var`:
//! `SHEEN_JOBID_VAR` names the environment variable that holds it
//! (`SLURM_JOB_ID`, ...; default `SHEEN_JOBID`), `procname_uid` makes it
//! `program.uid`, `disable` sends none. The library API's requests carry
//! this process's job id (read once, when a target client is made). A FUSE
//! mount's requests carry the calling process's: [`PidJobs`] reads the
//! setting from `/proc/PID/environ` of the process the kernel names in the
//! request, and keeps it per pid for [`PID_JOB_TTL`] (an environment is
//! fixed at exec, so only an exec or a pid reused within that time shows an
//! old id — job ids label statistics, they grant nothing). A request runs
//! inside [`ptlrpc::driver::with_jobid`]; tasks it spawns take the id along
//! ([`carry`]).
//!
//! Owns: [`from_env`], [`PidJobs`], [`carry`]. Must not: fail (an unset or
//! odd setting, or an unreadable process, sends the mount's id).

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ptlrpc::wire::JobId;

/// How long a process's job id is kept.
pub const PID_JOB_TTL: Duration = Duration::from_secs(10);
/// Processes kept at most (the table is emptied when full).
const PIDS_KEPT: usize = 4096;
/// The most of `/proc/PID/environ` read.
const ENVIRON_MAX: u64 = 1 << 20;

/// The variable naming where the job id comes from.
pub const VAR_ENV: &str = "SHEEN_JOBID_VAR";
/// Where the job id comes from when `SHEEN_JOBID_VAR` is not set.
pub const DEFAULT_VAR: &str = "SHEEN_JOBID";

/// The job id from this process's environment.
pub fn from_env() -> JobId {
    let uid = crate::fs::Cred::current().uid;
    let procname = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "unknown".into());
    from_vars(|k| std::env::var(k).ok(), &procname, uid)
}

/// The job id `get` (an environment) gives a process `procname` of `uid`.
pub fn from_vars(get: impl Fn(&str) -> Option<String>, procname: &str, uid: u32) -> JobId {
    let var = get(VAR_ENV).unwrap_or_else(|| DEFAULT_VAR.to_string());
    match var.as_str() {
        "disable" | "" => JobId::EMPTY,
        "procname_uid" => JobId::new(&format!("{procname}.{uid}")),
        v => get(v).filter(|s| !s.is_empty()).map_or(JobId::EMPTY, |s| JobId::new(&s)),
    }
}

/// `f`, run with the job id of the task that calls this (for tasks a
/// request spawns: write-behind, striped I/O).
pub fn carry<F: Future>(f: F) -> impl Future<Output = F::Output> {
    let job = ptlrpc::driver::current_jobid();
    async move {
        match job {
            Some(j) => ptlrpc::driver::with_jobid(j, f).await,
            None => f.await,
        }
    }
}

/// The job id a process's environment (`environ`: `KEY=value` NUL
/// separated) and name give it.
pub fn from_environ(environ: &[u8], procname: &str, uid: u32) -> JobId {
    let get = |k: &str| {
        environ.split(|&b| b == 0).find_map(|kv| {
            let kv = std::str::from_utf8(kv).ok()?;
            let (key, v) = kv.split_once('=')?;
            (key == k).then(|| v.to_string())
        })
    };
    from_vars(get, procname, uid)
}

/// The job id of process `pid` (its `/proc` entries), or `None` when it
/// cannot be read (gone, a kernel thread).
fn read_pid(pid: u32, uid: u32) -> Option<JobId> {
    use std::io::Read;
    let mut environ = Vec::new();
    std::fs::File::open(format!("/proc/{pid}/environ")).ok()?.take(ENVIRON_MAX).read_to_end(&mut environ).ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    Some(from_environ(&environ, comm.trim_end(), uid))
}

/// Job ids of the processes calling a FUSE mount, by pid (see the module
/// docs for how long one is kept).
#[derive(Debug)]
pub struct PidJobs {
    mount: JobId,
    pids: Mutex<HashMap<u32, (JobId, Instant)>>,
}

impl PidJobs {
    /// Job ids by pid; `mount` (the mount's own) when a process's cannot
    /// be read.
    pub fn new(mount: JobId) -> PidJobs {
        PidJobs { mount, pids: Mutex::new(HashMap::new()) }
    }

    /// The job id of `pid` (running as `uid`) at `now`.
    pub fn job(&self, pid: u32, uid: u32, now: Instant) -> JobId {
        self.job_with(pid, now, || read_pid(pid, uid))
    }

    /// [`PidJobs::job`] with the process read by `read`.
    pub fn job_with(&self, pid: u32, now: Instant, read: impl FnOnce() -> Option<JobId>) -> JobId {
        if pid == 0 {
            return self.mount;
        }
        if let Some(&(j, at)) = self.pids.lock().get(&pid)
            && now.saturating_duration_since(at) < PID_JOB_TTL
        {
            return j;
        }
        // Read without the lock (a /proc read may wait on the process).
        let Some(j) = read() else { return self.mount };
        let mut m = self.pids.lock();
        if m.len() >= PIDS_KEPT {
            m.clear();
        }
        m.insert(pid, (j, now));
        j
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn the_variable_named_by_sheen_jobid_var_gives_the_id() {
        assert_eq!(from_vars(env(&[("SHEEN_JOBID", "j1")]), "dd", 0), JobId::new("j1"));
        let slurm = [("SHEEN_JOBID_VAR", "SLURM_JOB_ID"), ("SLURM_JOB_ID", "4242"), ("SHEEN_JOBID", "x")];
        assert_eq!(from_vars(env(&slurm), "dd", 0), JobId::new("4242"));
        assert_eq!(from_vars(env(&[("SHEEN_JOBID_VAR", "procname_uid")]), "dd", 7), JobId::new("dd.7"));
        assert_eq!(from_vars(env(&[("SHEEN_JOBID_VAR", "disable"), ("SHEEN_JOBID", "j")]), "dd", 0), JobId::EMPTY);
        assert_eq!(from_vars(env(&[("SHEEN_JOBID_VAR", "UNSET_VAR")]), "dd", 0), JobId::EMPTY);
        assert_eq!(from_vars(env(&[]), "dd", 0), JobId::EMPTY);
    }

    #[test]
    fn environ_blocks_parse() {
        let e = b"PATH=/bin\0SHEEN_JOBID_VAR=SLURM_JOB_ID\0SLURM_JOB_ID=77=x\0\0";
        assert_eq!(from_environ(e, "dd", 0), JobId::new("77=x"));
        assert_eq!(from_environ(b"SHEEN_JOBID=j", "dd", 0), JobId::new("j"));
        assert_eq!(from_environ(b"\xff\0SHEEN_JOBID=k\0", "dd", 0), JobId::new("k"));
        assert_eq!(from_environ(b"", "dd", 0), JobId::EMPTY);
    }

    #[test]
    fn a_pid_is_read_once_per_ttl_and_unreadable_ones_get_the_mounts() {
        let mount = JobId::new("mount");
        let jobs = PidJobs::new(mount);
        let t0 = Instant::now();
        let reads = std::cell::Cell::new(0);
        let read = |j: &'static str| {
            reads.set(reads.get() + 1);
            Some(JobId::new(j))
        };
        assert_eq!(jobs.job_with(10, t0, || read("a")), JobId::new("a"));
        assert_eq!(jobs.job_with(10, t0 + PID_JOB_TTL / 2, || read("b")), JobId::new("a"), "kept");
        assert_eq!(reads.get(), 1);
        assert_eq!(jobs.job_with(10, t0 + PID_JOB_TTL, || read("b")), JobId::new("b"), "read again");
        assert_eq!(jobs.job_with(11, t0, || None), mount, "gone: the mount's");
        assert_eq!(jobs.job_with(0, t0, || read("k")), mount, "the kernel's own requests");
        assert_eq!(reads.get(), 2);
    }

    #[test]
    fn a_real_process_environment_gives_its_job_id() {
        use std::io::BufRead;
        // A shell that says it runs (its environment is set up by then: a
        // process is visible before exec has laid out its new one).
        let mut child = std::process::Command::new("sh")
            .args(["-c", "echo ready; read x"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .env("SHEEN_JOBID_VAR", "MY_JOB")
            .env("MY_JOB", "job-42")
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n");
        let jobs = PidJobs::new(JobId::EMPTY);
        assert_eq!(jobs.job(child.id(), 0, Instant::now()), JobId::new("job-42"));
        drop(child.stdin.take());
        child.wait().unwrap();
        assert_eq!(read_pid(u32::MAX, 0), None);
    }
}
