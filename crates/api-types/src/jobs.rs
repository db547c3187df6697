//! Scheduled jobs: `GET /v1/jobs`, `GET /v1/jobs/runs`, `POST /v1/jobs/trigger`.

use serde::{Deserialize, Serialize};

/// `GET /v1/jobs`. Fields in the order the answer has always had them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobList {
    pub app: String,
    pub jobs: Vec<JobView>,
    /// The scheduler's clock, which `next_run` and run times are on.
    pub now: u64,
}

/// A job as `wharf jobs` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobView {
    pub app: String,
    pub name: String,
    pub schedule: String,
    pub timezone: String,
    pub service: String,
    pub command: Vec<String>,
    pub timeout_secs: u64,
    pub retries: u32,
    pub concurrency: String,
    /// Unix ms, scheduler clock.
    pub next_run: Option<u64>,
    /// The newest finished (or running) run.
    pub last_run: Option<JobRun>,
    /// Runs active now (starting, running, or waiting to retry).
    pub active: usize,
}

/// One attempt of a job run. Times are the scheduler's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRun {
    pub app: String,
    pub job: String,
    /// Unique within the job; retries add ".2", ".3"...
    pub id: String,
    /// Orders runs (the scheduled time, or when a manual run was asked for).
    pub sort: u64,
    pub trigger: RunTrigger,
    /// The scheduled time it runs for (manual runs: None).
    pub scheduled_at: Option<u64>,
    /// 1 for the first try, 2 for the first retry...
    pub attempt: u32,
    pub state: RunState,
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
    #[serde(default)]
    pub deadline: Option<u64>,
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

/// Why a run happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunTrigger {
    Schedule,
    Manual,
}

impl RunTrigger {
    /// The wire name, e.g. "manual".
    pub fn as_str(self) -> &'static str {
        match self {
            RunTrigger::Schedule => "schedule",
            RunTrigger::Manual => "manual",
        }
    }
}

/// Where a run is. The first three are "active"; the rest are outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Starting,
    Running,
    Waiting,
    Succeeded,
    Failed,
    TimedOut,
    Skipped,
    FailedToStart,
    Replaced,
    Missed,
    Lost,
}

impl RunState {
    pub fn is_active(self) -> bool {
        matches!(self, RunState::Starting | RunState::Running | RunState::Waiting)
    }

    /// The wire name, e.g. "timed_out".
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Starting => "starting",
            RunState::Running => "running",
            RunState::Waiting => "waiting",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::TimedOut => "timed_out",
            RunState::Skipped => "skipped",
            RunState::FailedToStart => "failed_to_start",
            RunState::Replaced => "replaced",
            RunState::Missed => "missed",
            RunState::Lost => "lost",
        }
    }
}
