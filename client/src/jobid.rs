//! The job id every request of this client carries in its header (for
//! the servers' per-job statistics), chosen like Lustre's `jobid_var`:
//! `SHEEN_JOBID_VAR` names the environment variable that holds it
//! (`SLURM_JOB_ID`, ...; default `SHEEN_JOBID`), `procname_uid` makes it
//! `program.uid`, `disable` sends none. Read once, when a target client is
//! made. A FUSE mount is one process: its requests carry the mount's job
//! id, not each caller's.
//!
//! Owns: [`from_env`]. Must not: fail (an unset or odd setting sends no id).

use ptlrpc::wire::JobId;

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
}
