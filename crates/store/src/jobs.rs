//! Scheduled jobs in the store: each job's typed definition ([`JobRecord`],
//! kept in its app's [`AppRecord`](crate::AppRecord) so it changes and rolls
//! back with the app in one write), one record per run (attempt) of a job,
//! keyed by job and time so the scheduler can claim a scheduled time exactly
//! once, and a cursor per job (the last scheduled time it has dealt with).

use serde::{Deserialize, Serialize};
use wharf_spec::Job;

use crate::{Db, Op, StoreError};

/// One `[job.NAME]` of an app as it was deployed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job: Job,
    /// The release whose wharf.toml declared it.
    pub release: String,
    /// The deployment that recorded it; None when it was read from the
    /// wharf.toml text of a record written before jobs were recorded.
    #[serde(default)]
    pub deployment: Option<u64>,
}

impl JobRecord {
    /// The jobs of a wharf.toml text as stored before jobs were recorded.
    /// The text was validated when it was deployed; one that no longer
    /// parses (a later wharf is stricter) gives its error, for the caller
    /// to say so and go on with no jobs rather than lose the app.
    pub fn from_source(source: &str, release: &str) -> Result<Vec<JobRecord>, wharf_spec::SpecError> {
        let spec = wharf_spec::parse(source, wharf_spec::FILE_NAME)?;
        Ok(spec
            .jobs
            .into_values()
            .map(|job| JobRecord { job, release: release.to_string(), deployment: None })
            .collect())
    }
}

/// Why a run happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunTrigger {
    /// Its scheduled time came.
    Schedule,
    /// `wharf job trigger`.
    Manual,
}

/// Where a run is. The first three are "active"; the rest are outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Claimed (the intent is recorded); its task is being started.
    Starting,
    /// Its task runs.
    Running,
    /// A failed attempt's retry, waiting for its backoff (`not_before`).
    Waiting,
    /// Exited with status 0.
    Succeeded,
    /// Exited with another status (or was killed by a signal).
    Failed,
    /// Outlived its timeout and was stopped.
    TimedOut,
    /// Not run: the previous run was still running (concurrency "forbid").
    Skipped,
    /// Its task could not be started (see the message).
    FailedToStart,
    /// Stopped because a newer run replaced it (concurrency "replace").
    Replaced,
    /// Scheduled times that passed while the server was down; not run.
    Missed,
    /// The server stopped before this run's outcome could be observed.
    Lost,
}

impl RunState {
    pub fn is_active(self) -> bool {
        matches!(self, RunState::Starting | RunState::Running | RunState::Waiting)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Starting => "starting",
            RunState::Running => "running",
            RunState::Waiting => "waiting",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::TimedOut => "timed out",
            RunState::Skipped => "skipped",
            RunState::FailedToStart => "failed to start",
            RunState::Replaced => "replaced",
            RunState::Missed => "missed",
            RunState::Lost => "lost",
        }
    }
}

/// One attempt of a job run. Times are the scheduler's clock, Unix ms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRunRecord {
    pub app: String,
    pub job: String,
    /// Unique within the job, e.g. "20260130-0300" (scheduled), "m20260130-091502-k3f9a"
    /// (manual); retries add ".2", ".3"...
    pub id: String,
    /// Orders runs in the store (the scheduled time, or when a manual run was asked for).
    pub sort: u64,
    pub trigger: RunTrigger,
    /// The scheduled time it runs for (manual runs: None).
    pub scheduled_at: Option<u64>,
    /// 1 for the first try, 2 for the first retry...
    pub attempt: u32,
    pub state: RunState,
    /// The service whose revision it runs with, and that revision.
    pub service: String,
    #[serde(default)]
    pub revision: Option<u64>,
    /// The one-off task; its output is in the log stream under this id.
    #[serde(default)]
    pub task: Option<String>,
    pub created_at: u64,
    #[serde(default)]
    pub started_at: Option<u64>,
    #[serde(default)]
    pub ended_at: Option<u64>,
    /// When a running attempt is stopped as timed out.
    #[serde(default)]
    pub deadline: Option<u64>,
    /// A waiting retry starts at this time.
    #[serde(default)]
    pub not_before: Option<u64>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub signal: Option<i32>,
    /// What happened, in words.
    #[serde(default)]
    pub message: String,
}

impl JobRunRecord {
    fn key(&self) -> String {
        run_key(&self.app, &self.job, self.sort, &self.id)
    }
}

/// The last scheduled time of a job that the scheduler has dealt with (run,
/// skipped or noted as missed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCursor {
    pub app: String,
    pub job: String,
    pub last: u64,
}

fn run_key(app: &str, job: &str, sort: u64, id: &str) -> String {
    format!("jobruns/{app}/{job}/{sort:013}-{id}")
}
fn cursor_key(app: &str, job: &str) -> String {
    format!("jobcursors/{app}/{job}")
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records always serialize")
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { key: key.to_string(), reason: e.to_string() })
}

impl Db {
    /// Records a new run only if no run with its key exists, together with
    /// the job's cursor. Returns false (and changes nothing) when the run was
    /// already claimed, e.g. by this scheduler before a restart.
    pub async fn claim_job_run(&self, run: &JobRunRecord, cursor: Option<&JobCursor>) -> Result<bool, StoreError> {
        let key = run.key();
        let mut ops = vec![Op::Expect { key: key.clone(), value: None }, Op::Put { key, value: encode(run) }];
        if let Some(c) = cursor {
            ops.push(Op::Put { key: cursor_key(&c.app, &c.job), value: encode(c) });
        }
        match self.store.apply(ops).await {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Overwrites a run (a state change).
    pub async fn put_job_run(&self, run: &JobRunRecord) -> Result<(), StoreError> {
        self.store.apply(vec![Op::Put { key: run.key(), value: encode(run) }]).await
    }

    /// Runs of one job, oldest first.
    pub async fn job_runs(&self, app: &str, job: &str) -> Result<Vec<JobRunRecord>, StoreError> {
        self.list_runs(&format!("jobruns/{app}/{job}/")).await
    }

    /// Runs of every job of every app, oldest first per job.
    pub async fn all_job_runs(&self) -> Result<Vec<JobRunRecord>, StoreError> {
        self.list_runs("jobruns/").await
    }

    async fn list_runs(&self, prefix: &str) -> Result<Vec<JobRunRecord>, StoreError> {
        let pairs = self.store.list(prefix).await?;
        pairs.iter().map(|(k, v)| decode(k, v)).collect()
    }

    pub async fn job_cursor(&self, app: &str, job: &str) -> Result<Option<JobCursor>, StoreError> {
        let key = cursor_key(app, job);
        match self.store.get(&key).await? {
            Some(bytes) => decode(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub async fn put_job_cursor(&self, c: &JobCursor) -> Result<(), StoreError> {
        self.store.apply(vec![Op::Put { key: cursor_key(&c.app, &c.job), value: encode(c) }]).await
    }

    /// Keeps the newest `keep` runs of a job (active runs are always kept).
    pub async fn trim_job_runs(&self, app: &str, job: &str, keep: usize) -> Result<(), StoreError> {
        let runs = self.job_runs(app, job).await?;
        if runs.len() <= keep {
            return Ok(());
        }
        let excess = runs.len() - keep;
        let ops: Vec<Op> =
            runs.iter().take(excess).filter(|r| !r.state.is_active()).map(|r| Op::Delete { key: r.key() }).collect();
        if ops.is_empty() {
            return Ok(());
        }
        self.store.apply(ops).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::MemStore;

    fn run(id: &str, sort: u64, state: RunState) -> JobRunRecord {
        JobRunRecord {
            app: "a".into(),
            job: "j".into(),
            id: id.into(),
            sort,
            trigger: RunTrigger::Schedule,
            scheduled_at: Some(sort),
            attempt: 1,
            state,
            service: "web".into(),
            revision: Some(1),
            task: None,
            created_at: sort,
            started_at: None,
            ended_at: None,
            deadline: None,
            not_before: None,
            exit_code: None,
            signal: None,
            message: String::new(),
        }
    }

    #[tokio::test]
    async fn a_scheduled_time_is_claimed_once() {
        let db = Db::new(Arc::new(MemStore::new()));
        let cursor = JobCursor { app: "a".into(), job: "j".into(), last: 60_000 };
        assert!(db.claim_job_run(&run("1", 60_000, RunState::Starting), Some(&cursor)).await.unwrap());
        assert!(!db.claim_job_run(&run("1", 60_000, RunState::Starting), Some(&cursor)).await.unwrap());
        assert_eq!(db.job_runs("a", "j").await.unwrap().len(), 1);
        assert_eq!(db.job_cursor("a", "j").await.unwrap(), Some(cursor));
    }

    #[tokio::test]
    async fn trimming_keeps_the_newest_and_the_active() {
        let db = Db::new(Arc::new(MemStore::new()));
        db.put_job_run(&run("0", 1, RunState::Running)).await.unwrap();
        for i in 2..10 {
            db.put_job_run(&run(&i.to_string(), i, RunState::Succeeded)).await.unwrap();
        }
        db.trim_job_runs("a", "j", 3).await.unwrap();
        let ids: Vec<String> = db.job_runs("a", "j").await.unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["0", "7", "8", "9"]);
    }
}
