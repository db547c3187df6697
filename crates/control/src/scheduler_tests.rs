//! The scheduler on a test clock, an in-memory store and a fake runner whose
//! "tasks" run for a number of clock seconds: days of schedules in seconds.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use wharf_logs::Level;
use wharf_runtime::{DriverError, ExitInfo};
use wharf_spec::Job;
use wharf_store::{AppRecord, Batch, Db, JobRecord, JobRunRecord, MemStore, RunState, RunTrigger};

use super::{Observed, Runner, Scheduler, StartError};
use crate::clock::{Clock, TestClock};
use crate::controller::ControlError;

const MIN: u64 = 60_000;
const HOUR: u64 = 60 * MIN;
/// 2026-03-28 00:00:00 UTC; Europe's clocks go forward the next night.
const SAT: u64 = 1_774_656_000_000;

/// (job, scheduled time, trigger, attempt) of a start.
type Start = (String, Option<u64>, RunTrigger, u32);

#[derive(Default)]
struct Fake {
    /// task → (ends at, exit code); None: runs until stopped.
    tasks: Mutex<HashMap<String, Option<(u64, i32)>>>,
    /// (job, scheduled time, trigger, attempt) of every start.
    starts: Mutex<Vec<Start>>,
    stops: Mutex<Vec<String>>,
    events: Mutex<Vec<(String, String)>>,
}

struct FakeRunner {
    fake: Arc<Fake>,
    clock: Arc<TestClock>,
}

#[async_trait]
impl Runner for FakeRunner {
    /// `command = ["run", SECONDS, CODE]`, `["forever"]` or `["unstartable"]`.
    async fn start(&self, _app: &str, job: &Job, run: &JobRunRecord, task: &str) -> Result<u64, StartError> {
        let end = match job.command[0].as_str() {
            "run" => Some((
                self.clock.now_ms() + job.command[1].parse::<u64>().unwrap() * 1000,
                job.command[2].parse().unwrap(),
            )),
            "forever" => None,
            program => {
                return Err(StartError::from(DriverError::Spawn {
                    task: task.to_string(),
                    program: program.to_string(),
                    workdir: ".".into(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such program"),
                    hint: String::new(),
                }))
            }
        };
        self.fake.tasks.lock().unwrap().insert(task.to_string(), end);
        self.fake.starts.lock().unwrap().push((job.name.clone(), run.scheduled_at, run.trigger, run.attempt));
        Ok(1)
    }

    fn observe(&self, task: &str) -> Observed {
        match self.fake.tasks.lock().unwrap().get(task) {
            None => Observed::Gone,
            Some(Some((end, code))) if self.clock.now_ms() >= *end => Observed::Exited(ExitInfo::Code(*code)),
            Some(_) => Observed::Running,
        }
    }

    async fn stop(&self, task: &str) -> ExitInfo {
        self.fake.tasks.lock().unwrap().remove(task);
        self.fake.stops.lock().unwrap().push(task.to_string());
        ExitInfo::Signal(libc::SIGTERM)
    }

    async fn remove(&self, task: &str) {
        self.fake.tasks.lock().unwrap().remove(task);
    }

    fn event(&self, kind: &str, _level: Level, _run: &JobRunRecord, message: String) {
        self.fake.events.lock().unwrap().push((kind.to_string(), message));
    }
}

struct World {
    db: Db,
    clock: Arc<TestClock>,
    fake: Arc<Fake>,
}

impl World {
    fn new(start: u64) -> World {
        World { db: Db::new(Arc::new(MemStore::new())), clock: Arc::new(TestClock::new(start)), fake: Arc::default() }
    }

    /// A new scheduler on the same store and tasks: a server (re)start.
    fn scheduler(&self) -> Scheduler {
        let runner = Arc::new(FakeRunner { fake: self.fake.clone(), clock: self.clock.clone() });
        Scheduler::new(self.db.clone(), self.clock.clone(), runner)
    }

    /// Deploys an app whose wharf.toml has these `[job]` tables, recording
    /// its typed jobs as a deploy does.
    async fn deploy(&self, jobs: &str) {
        self.deploy_with(jobs, true).await
    }

    /// `typed` false: the app record as written before jobs were recorded,
    /// with only the wharf.toml text.
    async fn deploy_with(&self, jobs: &str, typed: bool) {
        let source = format!("app = \"shop\"\n[service.web]\ncommand = \"web\"\n{jobs}");
        let spec = wharf_spec::parse(&source, "wharf.toml").unwrap_or_else(|e| panic!("{e}"));
        let jobs = typed.then(|| {
            spec.jobs.into_values().map(|job| JobRecord { job, release: "r".into(), deployment: Some(1) }).collect()
        });
        let mut b = Batch::default();
        b.put_app(&AppRecord {
            name: "shop".into(),
            release: "r".into(),
            routes: vec![],
            source,
            deployed_at: 0,
            jobs,
        });
        self.db.commit(b).await.unwrap();
    }

    /// Advances the clock in steps, ticking every scheduler after each.
    async fn run(&self, schedulers: &[&Scheduler], total: Duration, step: Duration) {
        let steps = total.as_millis() / step.as_millis();
        for _ in 0..steps {
            self.clock.advance(step);
            for s in schedulers {
                s.tick().await.unwrap();
            }
            // Let background stops finish.
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
        }
    }

    async fn runs(&self, job: &str) -> Vec<JobRunRecord> {
        self.db.job_runs("shop", job).await.unwrap()
    }

    fn scheduled_starts(&self, job: &str) -> Vec<u64> {
        self.fake.starts.lock().unwrap().iter().filter(|s| s.0 == job).filter_map(|s| s.1).collect()
    }
}

fn job(name: &str, schedule: &str, command: &str, extra: &str) -> String {
    format!("[job.{name}]\nschedule = \"{schedule}\"\ncommand = \"{command}\"\n{extra}\n")
}

#[tokio::test]
async fn every_minute_for_a_day_across_three_deploys_a_restart_and_two_schedulers_runs_once_per_minute() {
    let w = World::new(SAT - 5_000);
    w.deploy(&job("tick", "* * * * *", "run 20 0", "")).await;
    let first = w.scheduler();
    first.tick().await.unwrap(); // the job appears at SAT - 5s
    w.run(&[&first], Duration::from_secs(6 * 3600), Duration::from_secs(15)).await;
    // Deploy 1: a changed command.
    w.deploy(&job("tick", "* * * * *", "run 25 0", "")).await;
    w.run(&[&first], Duration::from_secs(3 * 3600), Duration::from_secs(15)).await;
    // The server is killed and restarted: a new scheduler on the same store.
    drop(first);
    let second = w.scheduler();
    w.run(&[&second], Duration::from_secs(3 * 3600), Duration::from_secs(15)).await;
    // Deploy 2, and for an hour an old and a new scheduler tick side by side
    // (old and new containers overlapping during a deploy).
    w.deploy(&job("tick", "* * * * *", "run 10 0", "timeout = \"50s\"")).await;
    let third = w.scheduler();
    w.run(&[&second, &third], Duration::from_secs(3600), Duration::from_secs(15)).await;
    drop(second);
    // Deploy 3.
    w.deploy(&job("tick", "* * * * *", "run 5 0", "")).await;
    w.run(&[&third], Duration::from_secs(11 * 3600 + 15), Duration::from_secs(15)).await;

    let starts = w.scheduled_starts("tick");
    let distinct: BTreeSet<u64> = starts.iter().copied().collect();
    assert_eq!(starts.len(), distinct.len(), "no scheduled time ran twice");
    let expected: BTreeSet<u64> = (0..=24 * 60).map(|m| SAT + m * MIN).collect();
    let missing: Vec<_> = expected.difference(&distinct).collect();
    assert!(missing.is_empty(), "every minute ran: {} missing, e.g. {:?}", missing.len(), missing.first());
    let extra: Vec<_> = distinct.difference(&expected).map(|t| (*t as i64 - SAT as i64) / 1000).collect();
    assert!(extra.is_empty(), "only the day's minutes ran: {extra:?}");
    let runs = w.runs("tick").await;
    assert_eq!(runs.len(), super::RUNS_KEPT, "history is trimmed");
    assert!(runs.iter().all(|r| r.state == RunState::Succeeded || r.state.is_active()), "{runs:#?}");
}

#[tokio::test]
async fn hourly_and_daily_runs_follow_a_time_zone_across_daylight_saving() {
    let w = World::new(SAT);
    w.deploy(&format!(
        "{}{}",
        job("hourly", "0 * * * *", "run 1 0", "timezone = \"Europe/Paris\""),
        job("morning", "0 3 * * *", "run 1 0", "timezone = \"Europe/Paris\"")
    ))
    .await;
    let s = w.scheduler();
    s.tick().await.unwrap();
    w.run(&[&s], Duration::from_secs(3 * 24 * 3600), Duration::from_secs(60)).await;
    assert_eq!(w.scheduled_starts("hourly").len(), 72, "every UTC hour is a local full hour");
    // 03:00 in Paris: 02:00 UTC on Saturday (winter time), 01:00 UTC from Sunday (summer time).
    assert_eq!(w.scheduled_starts("morning"), [SAT + 2 * HOUR, SAT + 25 * HOUR, SAT + 49 * HOUR]);
}

#[tokio::test]
async fn an_overlapping_run_is_skipped_and_recorded() {
    let w = World::new(SAT);
    w.deploy(&job("slow", "* * * * *", "run 90 0", "")).await;
    let s = w.scheduler();
    s.tick().await.unwrap();
    w.run(&[&s], Duration::from_secs(10 * 60), Duration::from_secs(5)).await;
    let runs = w.runs("slow").await;
    let states: Vec<RunState> = runs.iter().map(|r| r.state).collect();
    use RunState::*;
    assert_eq!(
        states,
        [Succeeded, Skipped, Succeeded, Skipped, Succeeded, Skipped, Succeeded, Skipped, Running, Skipped]
    );
    assert!(runs[1].message.contains("previous run (20260328-0001) is still running"), "{}", runs[1].message);
    assert_eq!(w.scheduled_starts("slow").len(), 5);
    assert!(w.fake.events.lock().unwrap().iter().any(|(k, _)| k == "job.run_skipped"));
}

#[tokio::test]
async fn a_run_past_its_timeout_is_stopped_and_recorded() {
    let w = World::new(SAT);
    w.deploy(&job("stuck", "0 * * * *", "forever", "timeout = \"30s\"")).await;
    let s = w.scheduler();
    s.tick().await.unwrap();
    w.run(&[&s], Duration::from_secs(2 * 3600 + 60), Duration::from_secs(5)).await;
    let runs = w.runs("stuck").await;
    assert_eq!(runs.len(), 2, "{runs:#?}");
    for r in &runs {
        assert_eq!(r.state, RunState::TimedOut, "{r:#?}");
        assert!(r.message.contains("timeout of 30s"), "{}", r.message);
        assert_eq!(r.signal, Some(libc::SIGTERM));
        let took = r.ended_at.unwrap() - r.started_at.unwrap();
        assert!((30_000..=35_000).contains(&took), "stopped at its deadline (one step late at most): {took}");
    }
    assert_eq!(w.fake.stops.lock().unwrap().len(), 2);
    assert!(w.fake.events.lock().unwrap().iter().any(|(k, _)| k == "job.run_timed_out"));
}

#[tokio::test]
async fn a_timed_out_run_is_retried_as_a_fresh_attempt() {
    let w = World::new(SAT + 58 * MIN);
    w.deploy(&job("stuck", "0 * * * *", "forever", "timeout = \"30s\"\nretries = 1")).await;
    let s = w.scheduler();
    s.tick().await.unwrap();
    w.run(&[&s], Duration::from_secs(4 * 60), Duration::from_secs(5)).await;
    let runs = w.runs("stuck").await;
    let summary: Vec<(&str, u32, RunState)> = runs.iter().map(|r| (r.id.as_str(), r.attempt, r.state)).collect();
    assert_eq!(summary, [("20260328-0100", 1, RunState::TimedOut), ("20260328-0100.2", 2, RunState::TimedOut)]);
    assert!(runs[0].message.contains("retrying in 10s"), "{}", runs[0].message);
    // The retry started 10 s after the first attempt was stopped, as a run of its own.
    let retry = &runs[1];
    assert!(retry.message.contains("timeout of 30s"), "{}", retry.message);
    let gap = retry.started_at.unwrap() - runs[0].ended_at.unwrap();
    assert!((10_000..=15_000).contains(&gap), "{gap}");
    assert_ne!(retry.task, runs[0].task);
}

#[tokio::test]
async fn a_failed_run_is_retried_with_backoff() {
    let w = World::new(SAT + 50 * MIN);
    w.deploy(&job("flaky", "0 * * * *", "run 1 3", "retries = 2")).await;
    let s = w.scheduler();
    s.tick().await.unwrap();
    w.run(&[&s], Duration::from_secs(40 * 60), Duration::from_secs(1)).await;
    let runs = w.runs("flaky").await;
    let summary: Vec<(String, u32, RunState, Option<i32>)> =
        runs.iter().map(|r| (r.id.clone(), r.attempt, r.state, r.exit_code)).collect();
    assert_eq!(
        summary,
        [
            ("20260328-0100".to_string(), 1, RunState::Failed, Some(3)),
            ("20260328-0100.2".to_string(), 2, RunState::Failed, Some(3)),
            ("20260328-0100.3".to_string(), 3, RunState::Failed, Some(3)),
        ]
    );
    // 10 s, then 20 s after each failure.
    let gap = |a: &JobRunRecord, b: &JobRunRecord| b.started_at.unwrap() - a.ended_at.unwrap();
    assert!((10_000..=11_000).contains(&gap(&runs[0], &runs[1])), "{}", gap(&runs[0], &runs[1]));
    assert!((20_000..=21_000).contains(&gap(&runs[1], &runs[2])), "{}", gap(&runs[1], &runs[2]));
}

#[tokio::test]
async fn times_missed_while_down_are_noted_once_and_not_run_as_a_backlog() {
    let w = World::new(SAT);
    w.deploy(&job("tick", "* * * * *", "run 1 0", "")).await;
    let s = w.scheduler();
    s.tick().await.unwrap();
    w.run(&[&s], Duration::from_secs(5 * 60), Duration::from_secs(10)).await;
    assert_eq!(w.scheduled_starts("tick").len(), 5);
    // Down for an hour and a half (no ticks), then back 10 s after a minute.
    drop(s);
    w.clock.advance(Duration::from_secs(90 * 60));
    let s = w.scheduler();
    s.tick().await.unwrap();
    let missed: Vec<JobRunRecord> = w.runs("tick").await.into_iter().filter(|r| r.state == RunState::Missed).collect();
    assert_eq!(missed.len(), 1, "one note");
    assert!(
        missed[0].message.starts_with("89 scheduled run(s) from 2026-03-28 00:06 to 2026-03-28 01:34"),
        "{}",
        missed[0].message
    );
    // The latest time (10 s late) still runs, once; then the schedule goes on.
    assert_eq!(w.scheduled_starts("tick").len(), 6);
    assert_eq!(*w.scheduled_starts("tick").last().unwrap(), SAT + 95 * MIN);
    w.run(&[&s], Duration::from_secs(3 * 60), Duration::from_secs(10)).await;
    assert_eq!(w.scheduled_starts("tick").len(), 9);
}

#[tokio::test]
async fn replace_stops_the_running_run_and_allow_overlaps() {
    let w = World::new(SAT);
    w.deploy(&format!(
        "{}{}",
        job("latest", "* * * * *", "forever", "concurrency = \"replace\""),
        job("both", "* * * * *", "run 90 0", "concurrency = \"allow\"")
    ))
    .await;
    let s = w.scheduler();
    s.tick().await.unwrap();
    w.run(&[&s], Duration::from_secs(3 * 60), Duration::from_secs(5)).await;
    let states: Vec<RunState> = w.runs("latest").await.iter().map(|r| r.state).collect();
    assert_eq!(states, [RunState::Replaced, RunState::Replaced, RunState::Running]);
    assert_eq!(w.fake.stops.lock().unwrap().len(), 2);
    let both: Vec<RunState> = w.runs("both").await.iter().map(|r| r.state).collect();
    assert_eq!(both, [RunState::Succeeded, RunState::Running, RunState::Running]);
}

#[tokio::test]
async fn a_manual_trigger_runs_now_unless_forbidden_by_a_running_run() {
    let w = World::new(SAT);
    w.deploy(&job("report", "0 3 * * *", "run 60 0", "")).await;
    let s = w.scheduler();
    s.tick().await.unwrap();
    let run = s.trigger("shop", "report").await.unwrap();
    assert_eq!((run.state, run.trigger, run.scheduled_at), (RunState::Running, RunTrigger::Manual, None));
    let err = s.trigger("shop", "report").await.unwrap_err();
    assert!(matches!(&err, ControlError::Busy(m) if m.to_string().contains("still running")), "{err}");
    assert!(
        matches!(s.trigger("shop", "nope").await, Err(ControlError::NotFound(m)) if m.to_string().contains("its jobs: report"))
    );
    w.run(&[&s], Duration::from_secs(70), Duration::from_secs(5)).await;
    // Both were asked for in the same millisecond: their order in the history is not fixed.
    let mut states: Vec<&str> = w.runs("report").await.iter().map(|r| r.state.as_str()).collect();
    states.sort();
    assert_eq!(states, ["skipped", "succeeded"]);
    assert!(s.trigger("shop", "report").await.is_ok(), "free again");
}

#[tokio::test]
async fn a_run_that_cannot_start_is_recorded() {
    let w = World::new(SAT);
    w.deploy(&job("broken", "0 * * * *", "unstartable", "")).await;
    let s = w.scheduler();
    s.tick().await.unwrap();
    w.run(&[&s], Duration::from_secs(3600), Duration::from_secs(30)).await;
    let runs = w.runs("broken").await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].state, RunState::FailedToStart);
    assert!(runs[0].message.contains("no such program"), "{}", runs[0].message);
    assert!(w.clock.now_ms() > SAT);
}

#[tokio::test]
async fn jobs_of_an_app_recorded_before_jobs_were_typed_run_once_per_time() {
    let w = World::new(SAT - 5_000);
    w.deploy_with(&job("sweep", "*/15 * * * *", "run 5 0", ""), false).await;
    // Two schedulers side by side: both read the old record, one migrates it.
    let (a, b) = (w.scheduler(), w.scheduler());
    a.tick().await.unwrap();
    b.tick().await.unwrap();
    w.run(&[&a, &b], Duration::from_secs(3600), Duration::from_secs(30)).await;
    let expected: Vec<u64> = (0..4).map(|i| SAT + i * 15 * MIN).collect();
    assert_eq!(w.scheduled_starts("sweep"), expected);
    let app = w.db.app("shop").await.unwrap().unwrap();
    let names: Vec<(&str, Option<u64>)> = app.jobs().iter().map(|r| (r.job.name.as_str(), r.deployment)).collect();
    assert_eq!(names, [("sweep", None)], "the typed jobs were written back");
}

#[tokio::test]
async fn the_scheduler_reads_the_typed_jobs_not_the_text() {
    let w = World::new(SAT - 5_000);
    let typed = wharf_spec::parse(
        &format!("app = \"shop\"\n[service.web]\ncommand = \"web\"\n{}", job("typed", "0 * * * *", "run 1 0", "")),
        "wharf.toml",
    )
    .unwrap();
    let jobs = typed.jobs.into_values().map(|job| JobRecord { job, release: "r".into(), deployment: Some(1) });
    let source =
        format!("app = \"shop\"\n[service.web]\ncommand = \"web\"\n{}", job("text", "0 * * * *", "run 1 0", ""));
    let mut b = Batch::default();
    b.put_app(&AppRecord {
        name: "shop".into(),
        release: "r".into(),
        routes: vec![],
        source,
        deployed_at: 0,
        jobs: Some(jobs.collect()),
    });
    w.db.commit(b).await.unwrap();
    let s = w.scheduler();
    s.tick().await.unwrap();
    w.run(&[&s], Duration::from_secs(3600), Duration::from_secs(60)).await;
    assert_eq!(w.scheduled_starts("typed"), [SAT]);
    assert!(w.scheduled_starts("text").is_empty());
}

#[test]
fn a_start_error_says_what_failed_in_the_words_of_what_failed() {
    let not_found = StartError::from(DriverError::NotFound { task: "t1".into() });
    assert!(matches!(not_found, StartError::Driver(_)), "{not_found:?}");
    assert_eq!(not_found.to_string(), "no task `t1`");
    let spawn = StartError::from(DriverError::Spawn {
        task: "t1".into(),
        program: "nope".into(),
        workdir: "/srv".into(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "not found"),
        hint: String::new(),
    });
    assert!(matches!(spawn, StartError::Command(_)), "{spawn:?}");
    assert_eq!(spawn.to_string(), "cannot start `nope` (task `t1`, workdir /srv): not found");
    let store = StartError::from(wharf_store::StoreError::Backend("disk gone".into()));
    assert_eq!(store.to_string(), "store backend error: disk gone");
    let missing = StartError::NotDeployed { app: "shop".into(), service: "web".into() };
    assert_eq!(missing.to_string(), "service web of app shop is not deployed");
    assert_eq!(StartError::Stopping.to_string(), "the server is stopping");
}
