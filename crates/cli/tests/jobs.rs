//! Scheduled jobs with the real binary. The server runs its scheduler on a
//! clock 20 times faster than real time (`--clock-scale`, a hidden test
//! flag), so a scheduled minute passes in 3 real seconds; runs themselves are
//! real processes.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(120);
const SCALE: &str = "20";

/// A worker service and jobs; `version` changes the worker's revision.
fn app(version: u32, marks: &Path) -> String {
    let marks = marks.display();
    format!(
        r#"app = "cron"

[service.worker]
command = ["sleep", "100000"]
env = {{ VERSION = "{version}" }}
deploy = {{ bake = "0s" }}

[job.tick]
schedule = "* * * * *"
command = ["sh", "-c", "echo tick $WHARF_JOB_RUN v$VERSION; echo $WHARF_JOB_RUN >> {marks}"]

[job.hello]
schedule = "0 0 1 1 *"
command = ["sh", "-c", "echo hello from a job; echo second line >&2; exit 3"]

[job.stuck]
schedule = "0 0 1 1 *"
command = ["sleep", "1000"]
timeout = "30s"

[job.slow]
schedule = "* * * * *"
command = ["sleep", "5"]
"#
    )
}

fn runs(s: &Server, job: &str) -> Vec<serde_json::Value> {
    s.json(&["job", "runs", job, "--json"]).as_array().unwrap().clone()
}

fn marks(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
}

#[test]
fn a_job_every_minute_runs_exactly_once_per_minute_across_three_deploys() {
    let s = Server::start_with(&["--clock-scale", SCALE]);
    let out = writable_tempdir();
    let marks_file = out.path().join("ran.txt");
    let dir = app_dir(&app(1, &marks_file));
    s.deploy(dir.path());
    wait_for("two runs", LONG, || (marks(&marks_file).len() >= 2).then_some(()));
    for version in 2..=4 {
        std::fs::write(dir.path().join("wharf.toml"), app(version, &marks_file)).unwrap();
        s.deploy(dir.path());
        let seen = marks(&marks_file).len();
        wait_for("two more runs after the deploy", LONG, || (marks(&marks_file).len() >= seen + 2).then_some(()));
    }
    let ran = marks(&marks_file);
    let distinct: BTreeSet<&String> = ran.iter().collect();
    assert_eq!(distinct.len(), ran.len(), "a scheduled minute ran twice: {ran:?}");
    // Every minute from the first run to the last, once, none missed.
    let tick = runs(&s, "tick");
    let times: Vec<u64> =
        tick.iter().filter(|r| r["state"] != "missed").map(|r| r["scheduled_at"].as_u64().unwrap()).collect();
    assert!(times.len() >= 8, "{tick:#?}");
    assert!(times.windows(2).all(|w| w[1] - w[0] == 60_000), "one run per minute, no gap: {times:?}");
    assert!(tick.iter().all(|r| r["state"] == "succeeded" || r["state"] == "running"), "{tick:#?}");
    // Each run used the revision current at its time, and ran with its env.
    let revisions: Vec<u64> = tick.iter().filter_map(|r| r["revision"].as_u64()).collect();
    assert!(revisions.windows(2).all(|w| w[0] <= w[1]) && revisions.last() == Some(&4), "{revisions:?}");
    let logs = s.ok(&["logs", "-n", "10000", "--source", "stdout"]);
    assert!(logs.contains(" v4"), "run output is in the stream: {logs}");
    // Start and end of every run are events.
    assert!(!s.events("job.run_started").is_empty());
    assert!(!s.events("job.run_succeeded").is_empty());

    // `wharf jobs` lists every job with its next run and last outcome.
    let jobs = s.json(&["jobs", "--json"]);
    let names: Vec<&str> = jobs["jobs"].as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["hello", "slow", "stuck", "tick"]);
    let text = s.ok(&["jobs"]);
    assert!(
        text.contains("tick") && text.contains("* * * * *") && text.contains("UTC") && text.contains("ago"),
        "{text}"
    );

    // Overlaps of the 5-second (100 scheduled seconds) job are skipped and recorded.
    let slow = runs(&s, "slow");
    let skipped: Vec<&serde_json::Value> = slow.iter().filter(|r| r["state"] == "skipped").collect();
    assert!(!skipped.is_empty(), "{slow:#?}");
    assert!(skipped[0]["message"].as_str().unwrap().contains("is still running"), "{slow:#?}");
    let ran_slow: Vec<&serde_json::Value> = slow.iter().filter(|r| r["task"].is_string()).collect();
    for w in ran_slow.windows(2) {
        assert!(
            w[1]["started_at"].as_u64().unwrap() >= w[0]["ended_at"].as_u64().unwrap_or(u64::MAX),
            "runs never overlap: {slow:#?}"
        );
    }
}

#[test]
fn trigger_follows_the_output_and_exits_with_the_runs_status_and_a_timed_out_run_is_stopped() {
    let s = Server::start_with(&["--clock-scale", SCALE]);
    let out = writable_tempdir();
    let dir = app_dir(&app(1, &out.path().join("ran.txt")));
    s.deploy(dir.path());

    let run = s.wharf(&["job", "trigger", "hello"]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(stdout.contains("hello from a job") && stdout.contains("second line"), "{stdout}");
    assert!(stderr.contains("failed (exit 3)"), "{stderr}");
    let hello = runs(&s, "hello");
    assert_eq!(hello.len(), 1);
    assert_eq!(hello[0]["trigger"], "manual");
    assert_eq!(hello[0]["exit_code"], 3);
    // The run's lines are in the stream under its task.
    let task = hello[0]["task"].as_str().unwrap();
    let logs = s.ok(&["logs", "--task", task]);
    assert!(logs.contains("hello from a job"), "{logs}");
    let table = s.ok(&["job", "runs", "hello"]);
    assert!(table.contains("failed (exit 3)") && table.contains(task), "{table}");

    // A run that outlives its timeout (30 scheduled seconds) is stopped and recorded.
    let run = s.wharf(&["job", "trigger", "stuck"]);
    assert_eq!(run.status.code(), Some(124), "{}", String::from_utf8_lossy(&run.stderr));
    let stuck = runs(&s, "stuck");
    assert_eq!(stuck[0]["state"], "timed_out", "{stuck:#?}");
    assert!(stuck[0]["message"].as_str().unwrap().contains("timeout"), "{stuck:#?}");
    let task = stuck[0]["task"].as_str().unwrap().to_string();
    assert!(s.tasks().iter().all(|t| t["id"] != task.as_str()), "the task is gone");
    assert!(pids_with_env("WHARF_TASK", Some(&task)).is_empty(), "its process was killed");
    assert!(!s.events("job.run_timed_out").is_empty());

    // While a run goes on, a trigger of a "forbid" job is refused and recorded.
    let started = s.wharf(&["job", "trigger", "stuck", "--detach"]);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    let again = s.wharf(&["job", "trigger", "stuck"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("still running"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    wait_for("the skip to be recorded", LONG, || {
        runs(&s, "stuck").iter().any(|r| r["state"] == "skipped").then_some(())
    });

    // Unknown jobs are a clear error.
    let missing = s.wharf(&["job", "runs", "nope"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("has no job `nope`"));
}

/// On the real clock: a server killed with -9 while a run is in progress,
/// and started again, neither runs that minute again nor skips the next.
#[test]
fn a_server_killed_mid_run_never_runs_a_minute_twice() {
    let mut s = Server::start();
    let out = writable_tempdir();
    let marks_file = out.path().join("ran.txt");
    let toml = format!(
        r#"app = "cron"

[service.worker]
command = ["sleep", "100000"]

[job.tick]
schedule = "* * * * *"
command = ["sh", "-c", "echo $WHARF_JOB_RUN >> {}; sleep 10"]
"#,
        marks_file.display()
    );
    let dir = app_dir(&toml);
    s.deploy(dir.path());
    let three_minutes = Duration::from_secs(200);
    wait_for("the first run", three_minutes, || (!marks(&marks_file).is_empty()).then_some(()));
    s.kill9();
    s.spawn();
    wait_for("two more runs after the restart", three_minutes, || (marks(&marks_file).len() >= 3).then_some(()));
    let ran = marks(&marks_file);
    let distinct: BTreeSet<&String> = ran.iter().collect();
    assert_eq!(distinct.len(), ran.len(), "a scheduled minute ran twice: {ran:?}");
    let tick = runs(&s, "tick");
    let mut times: Vec<u64> = tick.iter().filter_map(|r| r["scheduled_at"].as_u64()).collect();
    times.dedup();
    assert!(times.windows(2).all(|w| w[1] - w[0] == 60_000), "one run per minute, none skipped: {tick:#?}");
    assert!(tick.iter().all(|r| r["state"] != "missed"), "{tick:#?}");
}
