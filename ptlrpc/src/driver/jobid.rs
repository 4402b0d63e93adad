//! The job a task's requests are made for: a task-local job id that every
//! request an [`super::ImportDriver`] submits from inside [`with_jobid`]
//! carries in its header (and keeps on resends and replays), in place of
//! the import's own (`ImportConfig::jobid`). A FUSE mount runs each
//! caller's operation inside the caller's job id.
//!
//! Owns: [`with_jobid`], [`current_jobid`]. Must not: be read by anything
//! but request submission (a task spawned from inside the scope does not
//! inherit it: the spawner passes it on).

use std::future::Future;

use crate::wire::JobId;

tokio::task_local! {
    static JOBID: JobId;
}

/// Runs `f` with requests made for `job`.
pub async fn with_jobid<F: Future>(job: JobId, f: F) -> F::Output {
    JOBID.scope(job, f).await
}

/// The job id of the running task's scope, if any.
pub fn current_jobid() -> Option<JobId> {
    JOBID.try_with(|j| *j).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_scope_sets_the_job_id() {
        assert_eq!(current_jobid(), None);
        let job = JobId::new("42");
        assert_eq!(with_jobid(job, async { current_jobid() }).await, Some(job));
        assert_eq!(current_jobid(), None);
    }
}
