//! The scheduler: runs each `[job.NAME]` at its scheduled times as a one-off
//! task of its service's current revision.
//!
//! Restart- and deploy-safe by construction:
//! - A run is keyed in the store by job + scheduled time and created only if
//!   absent, *before* its task starts. A deploy (old and new tasks side by
//!   side) or a server killed with -9 and restarted can never start the same
//!   scheduled time twice: the second claim fails.
//! - Everything needed to follow a run (its task, its deadline) is in its
//!   record, so a restarted scheduler re-adopts runs still in progress (the
//!   driver re-adopts their processes) and finishes their records.
//! - Scheduled times that passed while the server was down are not run as a
//!   backlog: one `missed` record says how many and which; the latest of them
//!   still runs if it is less than [`GRACE`] late. Then the schedule goes on.
//!
//! Time comes from a [`Clock`] so that tests cover a day of schedules in
//! milliseconds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use wharf_api_types::JobView;
use wharf_logs::Level;
use wharf_runtime::{DriverError, ExitInfo, TaskState};
use wharf_spec::{Concurrency, Job, Schedule};
use wharf_store::{Db, JobCursor, JobRecord, JobRunRecord, RunState, RunTrigger, StoreError};

use crate::clock::{Clock, SystemClock};
use crate::component::BackgroundLoop;
use crate::controller::{ControlError, Controller};
use crate::error::{Busy, NotFound, Unavailable};

/// A scheduled time this late (server down, busy) still runs; older ones are missed.
pub const GRACE: Duration = Duration::from_secs(60);
/// Runs kept per job (active ones are always kept).
pub const RUNS_KEPT: usize = 100;
/// First retry backoff; doubles per attempt up to [`RETRY_MAX`].
const RETRY_BASE: Duration = Duration::from_secs(10);
const RETRY_MAX: Duration = Duration::from_secs(300);
/// Most missed times counted one by one in a `missed` record.
const MISSED_COUNTED: usize = 10_000;

/// What the scheduler sees of a run's task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Observed {
    Running,
    Exited(ExitInfo),
    /// The driver does not have it (any more).
    Gone,
}

/// Why a run's task could not be started. Its text goes into the run's
/// message ("failed to start: ...") and the event, so each variant's text
/// is the text of what failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// The controller the runner belongs to is gone.
    #[error("the server is stopping")]
    Stopping,
    /// The job names a service the app does not run (any more).
    #[error("service {service} of app {app} is not deployed")]
    NotDeployed { app: String, service: String },
    /// Reading the service or its revision from the store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Building the task from the revision (its revision, its user).
    #[error(transparent)]
    Task(#[from] ControlError),
    /// The job's command could not be executed (not found, not executable).
    #[error(transparent)]
    Command(DriverError),
    /// The driver refused the task for another reason.
    #[error(transparent)]
    Driver(DriverError),
}

impl From<DriverError> for StartError {
    fn from(e: DriverError) -> Self {
        match e {
            DriverError::Spawn { .. } => StartError::Command(e),
            e => StartError::Driver(e),
        }
    }
}

/// How runs are carried out: by the controller's driver in production, by
/// a fake in tests.
#[async_trait]
pub(crate) trait Runner: Send + Sync + 'static {
    /// Starts the task `task` for a run of `job`; returns the revision used.
    async fn start(&self, app: &str, job: &Job, run: &JobRunRecord, task: &str) -> Result<u64, StartError>;
    fn observe(&self, task: &str) -> Observed;
    /// Stops a task (graceful, then SIGKILL); returns how it ended.
    async fn stop(&self, task: &str) -> ExitInfo;
    /// Forgets an exited task.
    async fn remove(&self, task: &str);
    fn event(&self, kind: &str, level: Level, run: &JobRunRecord, message: String);
}

/// An app's jobs with their parsed schedules, by name.
type AppJobs = Arc<BTreeMap<String, (Job, Schedule)>>;

pub(crate) struct Scheduler {
    db: Db,
    clock: Arc<dyn Clock>,
    runner: Arc<dyn Runner>,
    /// One tick or trigger at a time: a concurrency check and the start it
    /// allows happen together.
    lock: tokio::sync::Mutex<()>,
    /// Tasks being stopped (timeout, replace), so ticks don't stop them twice.
    stopping: Arc<Mutex<HashSet<String>>>,
    /// Exits of one-off tasks the driver forgot at recovery (they ended while
    /// no server watched).
    recovered: Mutex<HashMap<String, Option<ExitInfo>>>,
    /// Jobs per app with their parsed schedules, and the records they came from.
    specs: Mutex<HashMap<String, (Vec<JobRecord>, AppJobs)>>,
    woken: tokio::sync::Notify,
}

impl BackgroundLoop for Scheduler {
    fn start(self: Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        tokio::spawn(self.run(stop));
    }

    fn wake(&self) {
        self.woken.notify_one();
    }
}

impl Scheduler {
    pub(crate) fn new(db: Db, clock: Arc<dyn Clock>, runner: Arc<dyn Runner>) -> Scheduler {
        Scheduler {
            db,
            clock,
            runner,
            lock: tokio::sync::Mutex::new(()),
            stopping: Arc::default(),
            recovered: Mutex::default(),
            specs: Mutex::default(),
            woken: tokio::sync::Notify::new(),
        }
    }

    pub(crate) fn note_recovered(&self, forgotten: &[wharf_runtime::ForgottenTask]) {
        let mut r = self.recovered.lock().unwrap();
        for f in forgotten {
            r.insert(f.task.clone(), f.last_exit);
        }
    }

    /// Jobs of every deployed app, from the typed records its deploy wrote.
    async fn jobs(&self) -> Result<Vec<(String, AppJobs)>, ControlError> {
        let apps = self.db.apps().await?;
        let mut specs = self.specs.lock().unwrap();
        specs.retain(|app, _| apps.iter().any(|a| &a.name == app));
        let mut out = Vec::new();
        for a in apps {
            if let Some((records, jobs)) = specs.get(&a.name) {
                if records.as_slice() == a.jobs() {
                    out.push((a.name.clone(), jobs.clone()));
                    continue;
                }
            }
            // Schedules were validated when deployed; one that no longer
            // parses means nothing to schedule rather than a crash.
            let jobs: BTreeMap<String, (Job, Schedule)> = a
                .jobs()
                .iter()
                .filter_map(|r| r.job.parsed_schedule().ok().map(|s| (r.job.name.clone(), (r.job.clone(), s))))
                .collect();
            let jobs = Arc::new(jobs);
            specs.insert(a.name.clone(), (a.jobs().to_vec(), jobs.clone()));
            out.push((a.name, jobs));
        }
        Ok(out)
    }

    /// Runs the scheduler until `stop` turns true.
    pub(crate) async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let (next, active) = match self.tick().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("scheduler tick failed: {e}");
                    (None, true)
                }
            };
            // Active runs are looked at 4 times a second (exits, timeouts);
            // otherwise the scheduler sleeps until the next due time, and at
            // least once a second looks for newly deployed jobs.
            let poll = if active { Duration::from_millis(250) } else { Duration::from_secs(1) };
            let clock = self.clock.clone();
            let until = next.unwrap_or(u64::MAX);
            tokio::select! {
                _ = clock.sleep_until(until) => {}
                _ = tokio::time::sleep(poll) => {}
                _ = self.woken.notified() => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// One pass: follow active runs, start due ones. Returns the next time
    /// something is due (clock ms) and whether any run is active.
    pub(crate) async fn tick(&self) -> Result<(Option<u64>, bool), ControlError> {
        let _guard = self.lock.lock().await;
        let jobs = self.jobs().await?;
        let find = |app: &str, job: &str| -> Option<(Job, Schedule)> {
            jobs.iter().find(|(a, _)| a == app).and_then(|(_, js)| js.get(job).cloned())
        };
        let mut next: Option<u64> = None;
        let mut soonest = |t: u64| next = Some(next.map_or(t, |n: u64| n.min(t)));

        for run in self.db.all_job_runs().await?.into_iter().filter(|r| r.state.is_active()) {
            let job = find(&run.app, &run.job).map(|(j, _)| j);
            if let Some(t) = self.follow(run, job.as_ref()).await? {
                soonest(t);
            }
        }
        let now = self.clock.now_ms();
        for (app, js) in &jobs {
            for (job, schedule) in js.values() {
                self.due(app, job, schedule, now).await?;
                if let Some(t) = schedule.next_after(self.clock.now_ms()) {
                    soonest(t);
                }
            }
        }
        let active = self.db.all_job_runs().await?.iter().any(|r| r.state.is_active());
        Ok((next, active))
    }

    /// Moves an active run along; returns when it next needs looking at.
    async fn follow(&self, mut run: JobRunRecord, job: Option<&Job>) -> Result<Option<u64>, ControlError> {
        let now = self.clock.now_ms();
        match run.state {
            RunState::Waiting => {
                let not_before = run.not_before.unwrap_or(0);
                if now < not_before {
                    return Ok(Some(not_before));
                }
                let Some(job) = job else {
                    return self.end(run, RunState::Skipped, None, "not retried: the job was removed".into()).await;
                };
                self.launch(run, job).await?;
                Ok(None)
            }
            RunState::Starting | RunState::Running => {
                let Some(task) = run.task.clone() else {
                    return self.end(run, RunState::Lost, None, "the run has no task".into()).await;
                };
                if self.stopping.lock().unwrap().contains(&task) {
                    return Ok(None);
                }
                match self.runner.observe(&task) {
                    Observed::Exited(exit) => {
                        self.runner.remove(&task).await;
                        let (state, message) = outcome(&exit);
                        self.finish(run, state, Some(exit), message, job).await?;
                        Ok(None)
                    }
                    Observed::Gone => {
                        let recovered = self.recovered.lock().unwrap().remove(&task);
                        match recovered {
                            Some(Some(exit)) => {
                                let (state, message) = outcome(&exit);
                                self.finish(run, state, Some(exit), message, job).await?;
                            }
                            _ if run.state == RunState::Starting => {
                                let msg = "the server stopped while the run was starting; it did not run".into();
                                self.finish(run, RunState::FailedToStart, None, msg, job).await?;
                            }
                            _ => {
                                let msg = "its task ended while the server was down; the outcome is unknown".into();
                                self.end(run, RunState::Lost, None, msg).await?;
                            }
                        }
                        Ok(None)
                    }
                    Observed::Running => {
                        if run.state == RunState::Starting {
                            // Started just before a restart: it runs, so it is adopted.
                            run.state = RunState::Running;
                            run.started_at = run.started_at.or(Some(now));
                            self.db.put_job_run(&run).await?;
                        }
                        let deadline = run.deadline.unwrap_or(u64::MAX);
                        if now >= deadline {
                            let timeout = run.deadline.unwrap_or(now).saturating_sub(run.started_at.unwrap_or(now));
                            let msg = format!("stopped: still running after its timeout of {}", humantime_ms(timeout));
                            self.stop_and_end(run, RunState::TimedOut, msg, job.cloned());
                            return Ok(None);
                        }
                        Ok(Some(deadline))
                    }
                }
            }
            _ => Ok(None),
        }
    }

    /// Starts the due scheduled time of a job, if there is one.
    async fn due(&self, app: &str, job: &Job, schedule: &Schedule, now: u64) -> Result<(), ControlError> {
        let Some(cursor) = self.db.job_cursor(app, &job.name).await? else {
            // A new job starts from now: times before it existed are not missed.
            let c = JobCursor { app: app.into(), job: job.name.clone(), last: now };
            self.db.put_job_cursor(&c).await?;
            return Ok(());
        };
        let Some(latest) = schedule.last_at_or_before(now).filter(|t| *t > cursor.last) else {
            return Ok(());
        };
        let late = now - latest > GRACE.as_millis() as u64;
        let mut missed = schedule.between(cursor.last, latest.saturating_sub(1), MISSED_COUNTED);
        if late {
            missed.push(latest);
        }
        let new_cursor = JobCursor { app: app.into(), job: job.name.clone(), last: latest };
        if let (Some(first), Some(last)) = (missed.first().copied(), missed.last().copied()) {
            let n = missed.len();
            let count = if n >= MISSED_COUNTED { format!("at least {n}") } else { n.to_string() };
            let message = format!(
                "{count} scheduled run(s) from {} to {} UTC were missed while the server was down or busy; they are not run",
                utc_minute(first),
                utc_minute(last)
            );
            let mut rec =
                self.record(app, job, RunTrigger::Schedule, Some(first), first, format!("missed-{}", compact(first)));
            rec.state = RunState::Missed;
            rec.ended_at = Some(now);
            rec.message = message.clone();
            let cursor = late.then_some(&new_cursor);
            if self.db.claim_job_run(&rec, cursor).await? {
                self.runner.event("job.run_missed", Level::Warn, &rec, format!("job {}: {message}", job.name));
            }
        }
        if late {
            self.db.put_job_cursor(&new_cursor).await?;
            return Ok(());
        }
        self.start_run(app, job, RunTrigger::Schedule, Some(latest), Some(new_cursor)).await?;
        Ok(())
    }

    fn record(
        &self,
        app: &str,
        job: &Job,
        trigger: RunTrigger,
        scheduled_at: Option<u64>,
        sort: u64,
        id: String,
    ) -> JobRunRecord {
        JobRunRecord {
            app: app.to_string(),
            job: job.name.clone(),
            id,
            sort,
            trigger,
            scheduled_at,
            attempt: 1,
            state: RunState::Starting,
            service: job.service.clone(),
            revision: None,
            task: None,
            created_at: self.clock.now_ms(),
            started_at: None,
            ended_at: None,
            deadline: None,
            not_before: None,
            exit_code: None,
            signal: None,
            message: String::new(),
        }
    }

    /// A new run of `job` (scheduled or manual), under its concurrency
    /// policy. Returns its record: started, skipped, or None when this
    /// scheduled time was already claimed.
    async fn start_run(
        &self,
        app: &str,
        job: &Job,
        trigger: RunTrigger,
        scheduled_at: Option<u64>,
        cursor: Option<JobCursor>,
    ) -> Result<Option<JobRunRecord>, ControlError> {
        let now = self.clock.now_ms();
        let (sort, id) = match scheduled_at {
            Some(t) => (t, compact(t)),
            None => (now, format!("m{}-{}", compact_secs(now), crate::reconcile::short_id())),
        };
        let mut rec = self.record(app, job, trigger, scheduled_at, sort, id);
        let active: Vec<JobRunRecord> =
            self.db.job_runs(app, &job.name).await?.into_iter().filter(|r| r.state.is_active()).collect();
        if !active.is_empty() {
            match job.concurrency {
                Concurrency::Forbid => {
                    let ids: Vec<&str> = active.iter().map(|r| r.id.as_str()).collect();
                    rec.state = RunState::Skipped;
                    rec.ended_at = Some(now);
                    rec.message = format!("skipped: the previous run ({}) is still running", ids.join(", "));
                    if !self.db.claim_job_run(&rec, cursor.as_ref()).await? {
                        return Ok(None);
                    }
                    let msg = format!("job {} run {} {}", job.name, rec.id, rec.message);
                    self.runner.event("job.run_skipped", Level::Warn, &rec, msg);
                    return Ok(Some(rec));
                }
                Concurrency::Replace => {
                    // Claimed first, so a restart in between cannot replace twice.
                    if !self.db.claim_job_run(&rec, cursor.as_ref()).await? {
                        return Ok(None);
                    }
                    for old in active {
                        let msg = format!("stopped: replaced by run {}", rec.id);
                        if old.state == RunState::Waiting || old.task.is_none() {
                            self.end(old, RunState::Replaced, None, msg).await?;
                        } else {
                            self.stop_and_end(old, RunState::Replaced, msg, None);
                        }
                    }
                    return self.launch(rec, job).await.map(Some);
                }
                Concurrency::Allow => {}
            }
        }
        if !self.db.claim_job_run(&rec, cursor.as_ref()).await? {
            return Ok(None);
        }
        self.launch(rec, job).await.map(Some)
    }

    /// Starts the task of a claimed (or waiting) run.
    async fn launch(&self, mut rec: JobRunRecord, job: &Job) -> Result<JobRunRecord, ControlError> {
        let now = self.clock.now_ms();
        let task = format!("{}-job-{}-{}", rec.app, rec.job, crate::reconcile::short_id());
        // The intent, with its task id, is in the store before the task exists.
        rec.state = RunState::Starting;
        rec.task = Some(task.clone());
        rec.service = job.service.clone();
        rec.started_at = Some(now);
        rec.deadline = Some(wharf_runtime::deadline::ms_after(now, job.timeout));
        rec.not_before = None;
        self.db.put_job_run(&rec).await?;
        match self.runner.start(&rec.app, job, &rec, &task).await {
            Ok(revision) => {
                rec.state = RunState::Running;
                rec.revision = Some(revision);
                self.db.put_job_run(&rec).await?;
                let how = match (rec.trigger, rec.scheduled_at) {
                    (RunTrigger::Manual, _) => "triggered by hand".to_string(),
                    (_, Some(t)) => format!("scheduled for {} UTC", utc_minute(t)),
                    _ => String::new(),
                };
                let attempt = if rec.attempt > 1 { format!(", attempt {}", rec.attempt) } else { String::new() };
                let msg = format!(
                    "job {} run {} started ({how}{attempt}) as task {task} with {}@{revision}",
                    rec.job, rec.id, rec.service
                );
                self.runner.event("job.run_started", Level::Info, &rec, msg);
                self.db.trim_job_runs(&rec.app, &rec.job, RUNS_KEPT).await?;
                Ok(rec)
            }
            Err(e) => {
                rec.task = None;
                let msg = format!("failed to start: {e}");
                self.finish(rec.clone(), RunState::FailedToStart, None, msg, Some(job)).await?;
                Ok(self.db.job_runs(&rec.app, &rec.job).await?.into_iter().find(|r| r.id == rec.id).unwrap_or(rec))
            }
        }
    }

    /// Records an outcome, then schedules a retry if the job wants one.
    async fn finish(
        &self,
        run: JobRunRecord,
        state: RunState,
        exit: Option<ExitInfo>,
        message: String,
        job: Option<&Job>,
    ) -> Result<(), ControlError> {
        let retry = matches!(state, RunState::Failed | RunState::TimedOut | RunState::FailedToStart)
            && job.is_some_and(|j| run.attempt <= j.retries);
        if retry {
            let retries = job.map_or(0, |j| j.retries);
            let (next, wait) = retry_of(&run, self.clock.now_ms(), retries, state.as_str());
            // Claimed before the outcome is written: a restart in between
            // finishes the run again and finds the retry already there.
            self.db.claim_job_run(&next, None).await?;
            self.end(run, state, exit, format!("{message}; retrying in {}", humantime_ms(wait.as_millis() as u64)))
                .await?;
            return Ok(());
        }
        self.end(run, state, exit, message).await.map(|_| ())
    }

    /// Writes a run's outcome and says so in the log stream.
    async fn end(
        &self,
        mut run: JobRunRecord,
        state: RunState,
        exit: Option<ExitInfo>,
        message: String,
    ) -> Result<Option<u64>, ControlError> {
        end_record(&mut run, state, exit, message, self.clock.now_ms());
        self.db.put_job_run(&run).await?;
        report(&*self.runner, &run);
        Ok(None)
    }

    /// Stops a run's task in the background, then records `state`.
    fn stop_and_end(&self, run: JobRunRecord, state: RunState, message: String, job: Option<Job>) {
        let Some(task) = run.task.clone() else { return };
        if !self.stopping.lock().unwrap().insert(task.clone()) {
            return;
        }
        let (db, clock, runner, stopping) =
            (self.db.clone(), self.clock.clone(), self.runner.clone(), self.stopping.clone());
        let retries = job.as_ref().map_or(0, |j| j.retries);
        tokio::spawn(async move {
            let exit = runner.stop(&task).await;
            let mut run = run;
            let now = clock.now_ms();
            let retry = state == RunState::TimedOut && run.attempt <= retries;
            let mut message = message;
            if retry {
                let (next, wait) = retry_of(&run, now, retries, "timed out");
                if let Err(e) = db.claim_job_run(&next, None).await {
                    tracing::warn!("cannot record the retry of job run {}: {e}", run.id);
                }
                message = format!("{message}; retrying in {}", humantime_ms(wait.as_millis() as u64));
            }
            end_record(&mut run, state, Some(exit), message, now);
            if let Err(e) = db.put_job_run(&run).await {
                tracing::warn!("cannot record the end of job run {}: {e}", run.id);
            }
            report(&*runner, &run);
            stopping.lock().unwrap().remove(&task);
        });
    }

    pub(crate) async fn trigger(&self, app: &str, job_name: &str) -> Result<JobRunRecord, ControlError> {
        let _guard = self.lock.lock().await;
        let jobs = self.jobs().await?;
        let job = jobs
            .iter()
            .find(|(a, _)| a == app)
            .and_then(|(_, js)| js.get(job_name).map(|(j, _)| j.clone()))
            .ok_or_else(|| no_such_job(app, job_name, &jobs))?;
        let rec =
            self.start_run(app, &job, RunTrigger::Manual, None, None).await?.ok_or(Unavailable::RunNotRecorded)?;
        if rec.state == RunState::Skipped {
            return Err(Busy::JobRunning {
                job: job_name.to_string(),
                reason: rec.message.trim_start_matches("skipped: ").to_string(),
            }
            .into());
        }
        Ok(rec)
    }

    pub(crate) async fn views(&self, app: &str) -> Result<Vec<JobView>, ControlError> {
        let jobs = self.jobs().await?;
        let now = self.clock.now_ms();
        let mut out = Vec::new();
        for (a, js) in jobs.iter().filter(|(a, _)| a == app) {
            for (job, schedule) in js.values() {
                let runs = self.db.job_runs(a, &job.name).await?;
                let last_run = runs.iter().rev().find(|r| r.state != RunState::Waiting).cloned();
                out.push(JobView {
                    app: a.clone(),
                    name: job.name.clone(),
                    schedule: job.schedule.clone(),
                    timezone: job.timezone.clone(),
                    service: job.service.clone(),
                    command: job.command.clone(),
                    timeout_secs: job.timeout.as_secs(),
                    retries: job.retries,
                    concurrency: job.concurrency.as_str().to_string(),
                    next_run: schedule.next_after(now),
                    last_run: last_run.map(crate::wire::job_run),
                    active: runs.iter().filter(|r| r.state.is_active()).count(),
                });
            }
        }
        Ok(out)
    }

    pub(crate) async fn runs(&self, app: &str, job: &str) -> Result<Vec<JobRunRecord>, ControlError> {
        let runs = self.db.job_runs(app, job).await?;
        if runs.is_empty() {
            let jobs = self.jobs().await?;
            let known = jobs.iter().any(|(a, js)| a == app && js.contains_key(job));
            if !known {
                return Err(no_such_job(app, job, &jobs).into());
            }
        }
        Ok(runs)
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }
}

fn no_such_job(app: &str, job: &str, jobs: &[(String, AppJobs)]) -> NotFound {
    let known = jobs.iter().filter(|(a, _)| a == app).flat_map(|(_, js)| js.keys().cloned()).collect();
    NotFound::Job { app: app.to_string(), job: job.to_string(), known }
}

/// The next attempt of a failed run: waiting out its backoff, with nothing
/// of the attempt before it but the job, service and trigger. Also returns
/// the backoff.
fn retry_of(run: &JobRunRecord, now: u64, retries: u32, why: &str) -> (JobRunRecord, Duration) {
    let wait = (RETRY_BASE * 2u32.saturating_pow(run.attempt - 1)).min(RETRY_MAX);
    let base = run.id.split('.').next().unwrap_or(&run.id);
    let next = JobRunRecord {
        id: format!("{base}.{}", run.attempt + 1),
        attempt: run.attempt + 1,
        state: RunState::Waiting,
        task: None,
        revision: None,
        created_at: now,
        started_at: None,
        ended_at: None,
        deadline: None,
        not_before: Some(wharf_runtime::deadline::ms_after(now, wait)),
        exit_code: None,
        signal: None,
        message: format!("retry {} of {retries} after run {} {why}", run.attempt, run.id),
        ..run.clone()
    };
    (next, wait)
}

fn end_record(run: &mut JobRunRecord, state: RunState, exit: Option<ExitInfo>, message: String, now: u64) {
    run.state = state;
    run.ended_at = Some(now);
    run.message = message;
    match exit {
        Some(ExitInfo::Code(c)) => run.exit_code = Some(c),
        Some(ExitInfo::Signal(s)) => run.signal = Some(s),
        _ => {}
    }
}

fn report(runner: &dyn Runner, run: &JobRunRecord) {
    let (kind, level) = match run.state {
        RunState::Succeeded => ("job.run_succeeded", Level::Info),
        RunState::Failed => ("job.run_failed", Level::Error),
        RunState::TimedOut => ("job.run_timed_out", Level::Error),
        RunState::FailedToStart => ("job.run_failed_to_start", Level::Error),
        RunState::Replaced => ("job.run_replaced", Level::Warn),
        RunState::Lost => ("job.run_lost", Level::Warn),
        RunState::Skipped => ("job.run_skipped", Level::Warn),
        _ => ("job.run_ended", Level::Info),
    };
    let took = match (run.started_at, run.ended_at) {
        (Some(s), Some(e)) if run.task.is_some() => format!(" after {}", humantime_ms(e.saturating_sub(s))),
        _ => String::new(),
    };
    let msg = format!("job {} run {} {}{took}: {}", run.job, run.id, run.state.as_str(), run.message);
    runner.event(kind, level, run, msg);
}

fn outcome(exit: &ExitInfo) -> (RunState, String) {
    match exit {
        e if e.success() => (RunState::Succeeded, "exited with code 0".into()),
        ExitInfo::Unknown => {
            (RunState::Lost, "exited; its status is unknown (it was re-adopted after a server restart)".into())
        }
        e => (RunState::Failed, e.to_string()),
    }
}

fn humantime_ms(ms: u64) -> String {
    crate::controller::fmt_duration(std::time::Duration::from_millis(ms))
}

/// A scheduler time (Unix ms) in UTC, formatted.
fn utc(ms: u64, format: &str) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64).map_or_else(|| ms.to_string(), |t| t.format(format).to_string())
}

/// "20260130-0300": a scheduled run's id.
fn compact(ms: u64) -> String {
    utc(ms, "%Y%m%d-%H%M")
}

fn compact_secs(ms: u64) -> String {
    utc(ms, "%Y%m%d-%H%M%S")
}

/// "2026-01-30 03:00".
fn utc_minute(ms: u64) -> String {
    utc(ms, "%Y-%m-%d %H:%M")
}

// ---- the controller's side -------------------------------------------------

/// The scheduler of a controller, made at start with the chosen clock.
pub(crate) struct Jobs {
    pub(crate) scheduler: OnceLock<Arc<Scheduler>>,
    clock: Mutex<Arc<dyn Clock>>,
}

impl Default for Jobs {
    fn default() -> Self {
        Jobs { scheduler: OnceLock::new(), clock: Mutex::new(Arc::new(SystemClock)) }
    }
}

/// Runs jobs as one-off tasks through the controller's driver.
struct DriverRunner {
    ctl: Weak<Controller>,
}

impl DriverRunner {
    fn ctl(&self) -> Result<Arc<Controller>, StartError> {
        self.ctl.upgrade().ok_or(StartError::Stopping)
    }
}

#[async_trait]
impl Runner for DriverRunner {
    async fn start(&self, app: &str, job: &Job, run: &JobRunRecord, task: &str) -> Result<u64, StartError> {
        let ctl = self.ctl()?;
        let svc = ctl
            .db
            .service(app, &job.service)
            .await?
            .ok_or_else(|| StartError::NotDeployed { app: app.to_string(), service: job.service.clone() })?;
        // The revision that has the traffic (during a blue-green deploy, the old one until the switch).
        let number = crate::strategy::PoolLayout::of(&svc).serving_revision();
        let rev = ctl.catalog.revision(app, &job.service, number).await?;
        let mut spec = ctl.task_spec(app, &job.service, &rev, task, job.command.clone(), false)?;
        spec.env.insert("WHARF_JOB".into(), job.name.clone());
        spec.env.insert("WHARF_JOB_RUN".into(), run.id.clone());
        ctl.catalog.remember(&spec);
        ctl.driver.start(spec).await?;
        Ok(number)
    }

    fn observe(&self, task: &str) -> Observed {
        let Ok(ctl) = self.ctl() else { return Observed::Running };
        match ctl.driver.task(task) {
            None => Observed::Gone,
            Some(t) if t.state == TaskState::Exited => Observed::Exited(t.last_exit.unwrap_or(ExitInfo::Unknown)),
            Some(_) => Observed::Running,
        }
    }

    async fn stop(&self, task: &str) -> ExitInfo {
        match self.ctl() {
            Ok(ctl) => ctl.driver.stop(task).await.unwrap_or(ExitInfo::Unknown),
            Err(_) => ExitInfo::Unknown,
        }
    }

    async fn remove(&self, task: &str) {
        if let Ok(ctl) = self.ctl() {
            let _ = ctl.driver.remove(task).await;
        }
    }

    fn event(&self, kind: &str, level: Level, run: &JobRunRecord, message: String) {
        if let Ok(ctl) = self.ctl() {
            ctl.events.event_full(kind, level, Some(&run.app), Some(&run.service), run.task.as_deref(), message);
        }
    }
}

impl Controller {
    /// The clock the scheduler will use; call before [`Controller::start`].
    /// Production keeps the system clock.
    pub fn use_clock(&self, clock: Arc<dyn Clock>) {
        *self.jobs.clock.lock().unwrap() = clock;
    }

    /// Starts the scheduler loop (from [`Controller::start`]).
    pub(crate) fn start_scheduler(self: &Arc<Self>, report: &wharf_runtime::RecoverReport) {
        let clock = self.jobs.clock.lock().unwrap().clone();
        let runner = Arc::new(DriverRunner { ctl: Arc::downgrade(self) });
        let scheduler = Arc::new(Scheduler::new(self.db.clone(), clock, runner));
        scheduler.note_recovered(&report.forgotten);
        if self.jobs.scheduler.set(scheduler.clone()).is_ok() {
            scheduler.start(self.stopping());
        }
    }

    fn scheduler(&self) -> Result<&Arc<Scheduler>, ControlError> {
        self.jobs.scheduler.get().ok_or_else(|| Unavailable::SchedulerNotStarted.into())
    }

    /// Every job of an app, with its next and last run.
    pub async fn jobs_view(&self, app: &str) -> Result<Vec<JobView>, ControlError> {
        self.scheduler()?.views(app).await
    }

    /// The recorded runs of a job, oldest first.
    pub async fn job_runs(&self, app: &str, job: &str) -> Result<Vec<JobRunRecord>, ControlError> {
        self.scheduler()?.runs(app, job).await
    }

    /// Runs a job now, under its concurrency policy ([`ControlError::Busy`]
    /// when "forbid" skips it).
    pub async fn trigger_job(&self, app: &str, job: &str) -> Result<JobRunRecord, ControlError> {
        let s = self.scheduler()?;
        let rec = s.trigger(app, job).await;
        s.wake();
        rec
    }

    /// The scheduler's time (Unix ms): the system clock in production.
    pub fn scheduler_now_ms(&self) -> u64 {
        self.jobs.scheduler.get().map_or_else(|| self.now_ms(), |s| s.now_ms())
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
