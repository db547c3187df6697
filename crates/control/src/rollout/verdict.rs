//! The rollout's decisions as pure functions of the records, the answer
//! counters and the time, so they are tested without tasks or waiting.

use super::*;

/// Where one service stands in the rollout step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RolloutVerdict {
    Settled,
    Waiting,
    /// Not settled when the deadline passed: the deployment fails.
    Late,
}

/// The rollout's decision for one service, at `now` (clock ms): settled,
/// still within the deadline counted from the step's start, or late. When
/// only draining tasks are left, the deadline is extended by their own
/// budget (`leave`: drain and stop timeouts): the new set serves, and
/// failing the deployment (rolling back a good revision) because an old task
/// finishes its requests within its drain timeout would undo a good deploy.
pub(super) fn rollout_verdict(
    p: &ServiceProgress,
    s: &ServiceRecord,
    step_started_at: u64,
    deadline: Duration,
    leave: Duration,
    now: u64,
) -> RolloutVerdict {
    if p.settled(s) {
        return RolloutVerdict::Settled;
    }
    let only_draining = ServiceProgress { draining: 0, ..*p }.settled(s);
    let limit = if only_draining { deadline.saturating_add(leave) } else { deadline };
    if now >= wharf_runtime::deadline::ms_after(step_started_at, limit) {
        RolloutVerdict::Late
    } else {
        RolloutVerdict::Waiting
    }
}

/// The bake has lasted its time (clock ms) without crossing a threshold.
pub(super) fn bake_over(d: &DeploymentRecord, now: u64) -> bool {
    now >= d.bake_until.unwrap_or(0)
}

/// The answers a service's new tasks gave since the bake began (`now`
/// against `baseline`, by task); tasks that joined later count from zero.
pub(super) fn bake_window(
    service: &str,
    now: &HashMap<String, (String, OutcomeCounts)>,
    baseline: &mut HashMap<String, OutcomeCounts>,
) -> OutcomeCounts {
    let mut window = OutcomeCounts::default();
    for (task, (s, counts)) in now {
        if s == service {
            window.add(&counts.since(baseline.entry(task.clone()).or_default()));
        }
    }
    window
}

/// Why a bake window fails its thresholds, if it does.
pub(super) fn judge(policy: &DeployPolicy, w: &OutcomeCounts) -> Option<String> {
    if w.total < MIN_BAKE_ANSWERS {
        return None;
    }
    // Both sides in millionths, to compare without floating point.
    if w.errors * 1_000_000 > u64::from(policy.max_error_rate.per_million) * w.total {
        return Some(format!(
            "{} of {} answers were 5xx ({:.1}%, more than the {:.1}% allowed)",
            w.errors,
            w.total,
            w.errors as f64 * 100.0 / w.total as f64,
            f64::from(policy.max_error_rate.per_million) / 10_000.0
        ));
    }
    if let (Some(max), Some(p99)) = (policy.max_p99, w.p99()) {
        if p99 > max {
            return Some(format!(
                "p99 latency over {} answers was above {} (more than the {} allowed)",
                w.total,
                fmt_duration(p99.min(Duration::from_secs(3600))),
                fmt_duration(max)
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bake_judges_only_with_enough_answers() {
        let policy = DeployPolicy::default();
        let few = OutcomeCounts { total: 5, errors: 5, ..Default::default() };
        assert_eq!(judge(&policy, &few), None);
        let bad = OutcomeCounts { total: 100, errors: 6, ..Default::default() };
        assert!(judge(&policy, &bad).unwrap().contains("6 of 100"));
        let fine = OutcomeCounts { total: 100, errors: 5, ..Default::default() };
        assert_eq!(judge(&policy, &fine), None);
    }

    #[test]
    fn a_bake_judges_p99_latency_when_asked_to() {
        let mut slow = OutcomeCounts { total: 100, ..Default::default() };
        // 95 answers within 10 ms, 5 within 1 s: the p99 is in the 1 s bucket.
        let fast = wharf_proxy::LATENCY_BOUNDS_MS.iter().position(|b| *b == 10).unwrap();
        let second = wharf_proxy::LATENCY_BOUNDS_MS.iter().position(|b| *b == 1000).unwrap();
        slow.buckets[fast] = 95;
        slow.buckets[second] = 5;
        assert_eq!(judge(&DeployPolicy::default(), &slow), None, "no max_p99: latency is not judged");
        let strict = DeployPolicy { max_p99: Some(Duration::from_millis(500)), ..Default::default() };
        assert!(judge(&strict, &slow).unwrap().contains("p99 latency"), "{:?}", judge(&strict, &slow));
        let loose = DeployPolicy { max_p99: Some(Duration::from_secs(2)), ..Default::default() };
        assert_eq!(judge(&loose, &slow), None);
    }

    fn service(replicas: u32, live: Option<u64>) -> ServiceRecord {
        ServiceRecord { live, ..crate::strategy::first_record("a", "web", 4, replicas) }
    }

    /// A new task that never gets healthy: the rollout waits until the
    /// deadline (on the clock, from the step's start), then fails.
    #[test]
    fn a_rollout_fails_when_a_new_task_is_not_ready_by_the_deadline() {
        use crate::clock::{Clock, TestClock};
        let clock = TestClock::new(1_774_656_000_000);
        let started = clock.now_ms();
        let deadline = Duration::from_secs(120);
        let s = service(2, None);
        let one_missing = ServiceProgress { running: 2, ready: 1, ..Default::default() };
        let leave = Duration::from_secs(20);
        let verdict = |p: &ServiceProgress| rollout_verdict(p, &s, started, deadline, leave, clock.now_ms());
        assert_eq!(verdict(&one_missing), RolloutVerdict::Waiting);
        clock.advance(deadline - Duration::from_millis(1));
        assert_eq!(verdict(&one_missing), RolloutVerdict::Waiting);
        clock.advance(Duration::from_millis(1));
        assert_eq!(verdict(&one_missing), RolloutVerdict::Late);
        let all = ServiceProgress { running: 2, ready: 2, ..Default::default() };
        assert_eq!(verdict(&all), RolloutVerdict::Settled, "ready is ready, however late");
        let leftovers = ServiceProgress { old: 1, ..all };
        assert_eq!(verdict(&leftovers), RolloutVerdict::Late, "old tasks still running");
        // Only draining tasks left: they get their drain and stop timeouts, then they are late too.
        let draining = ServiceProgress { draining: 1, ..all };
        assert_eq!(verdict(&draining), RolloutVerdict::Waiting, "draining within its own timeouts");
        let draining_and_missing = ServiceProgress { ready: 1, ..draining };
        assert_eq!(verdict(&draining_and_missing), RolloutVerdict::Late, "a missing task is not excused");
        clock.advance(leave - Duration::from_millis(1));
        assert_eq!(verdict(&draining), RolloutVerdict::Waiting);
        clock.advance(Duration::from_millis(1));
        assert_eq!(verdict(&draining), RolloutVerdict::Late, "a drain past its timeouts");
        let not_switched = service(2, Some(3));
        assert_eq!(
            rollout_verdict(&all, &not_switched, started, deadline, leave, started),
            RolloutVerdict::Waiting,
            "blue-green: settled only once the traffic switched"
        );
    }

    /// The bake guard: answers counted from the bake's start, judged each
    /// tick, and the bake over once its time has passed on the clock.
    #[test]
    fn a_bake_rolls_back_on_a_5xx_ratio_counted_from_its_start() {
        use crate::clock::{Clock, TestClock};
        let clock = TestClock::new(1_774_656_000_000);
        let policy = DeployPolicy { bake: Duration::from_secs(60), ..Default::default() };
        let d = DeploymentRecord {
            bake_until: Some(wharf_runtime::deadline::ms_after(clock.now_ms(), policy.bake)),
            ..Default::default()
        };
        let counts = |total, errors| OutcomeCounts { total, errors, ..Default::default() };
        let tasks = |a: OutcomeCounts, b: Option<OutcomeCounts>| {
            let mut m = HashMap::from([("t1".to_string(), ("web".to_string(), a))]);
            m.insert("w1".into(), ("worker".into(), counts(1000, 1000)));
            if let Some(b) = b {
                m.insert("t2".into(), ("web".into(), b));
            }
            m
        };
        // t1 answered 50 errors before the bake began: they don't count.
        let mut baseline: HashMap<String, OutcomeCounts> =
            tasks(counts(100, 50), None).into_iter().map(|(id, (_, c))| (id, c)).collect();
        clock.advance(Duration::from_secs(20));
        let w = bake_window("web", &tasks(counts(160, 52), None), &mut baseline);
        assert_eq!((w.total, w.errors), (60, 2));
        assert_eq!(judge(&policy, &w), None);
        assert!(!bake_over(&d, clock.now_ms()));
        // t2 joins during the bake and fails: 2 + 5 of 60 + 40 is over 5 %.
        clock.advance(Duration::from_secs(20));
        let w = bake_window("web", &tasks(counts(160, 52), Some(counts(40, 5))), &mut baseline);
        assert_eq!((w.total, w.errors), (100, 7));
        let why = judge(&policy, &w).expect("the guard rolls back");
        assert!(why.starts_with("7 of 100 answers were 5xx"), "{why}");
        clock.advance(Duration::from_secs(20));
        assert!(bake_over(&d, clock.now_ms()), "over on the clock");
    }
}
