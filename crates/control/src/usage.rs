//! The usage sampler: CPU and memory of every task, for status, top and the
//! metrics endpoint. It owns the samples; others ask for one. It samples
//! every 2 s while someone has asked in the last 10 s and every 30 s
//! otherwise: reading two cgroup files per task is most of what an idle
//! server with many tasks would do, for figures nobody looks at.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};
use wharf_runtime::Driver;

use crate::clock::Clock;
use crate::component::BackgroundLoop;

/// How often tasks are sampled while someone reads the samples.
const EVERY: Duration = Duration::from_secs(2);
/// How often while nobody does: a CPU percentage is then over this long.
const QUIET_EVERY: Duration = Duration::from_secs(30);
/// How long after the last read the sampler keeps its brisk pace.
const WANTED_FOR: Duration = Duration::from_secs(10);

/// CPU time and memory seen at the last two samples, for a CPU percentage.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UsageSample {
    pub cpu_nanos: u64,
    pub at: Instant,
    pub cpu_percent: f64,
    pub memory_bytes: u64,
}

impl UsageSample {
    /// The next sample of a task whose CPU counter reads `cpu_nanos` at `now`;
    /// its percentage is over the time since `prev` (none, or a counter that
    /// went back after a restart: 0 until the next sample).
    fn next(prev: Option<&UsageSample>, cpu_nanos: u64, memory_bytes: u64, now: Instant) -> UsageSample {
        let cpu_percent = match prev {
            Some(prev) if cpu_nanos >= prev.cpu_nanos => {
                let wall = now.saturating_duration_since(prev.at).as_nanos().max(1) as f64;
                (cpu_nanos - prev.cpu_nanos) as f64 / wall * 100.0
            }
            _ => 0.0,
        };
        UsageSample { cpu_nanos, at: now, cpu_percent, memory_bytes }
    }
}

pub(crate) struct UsageSampler {
    driver: Arc<dyn Driver>,
    clock: Arc<dyn Clock>,
    samples: Mutex<HashMap<String, UsageSample>>,
    woken: Notify,
    /// When a sample was last read, and when the last pass ran.
    pace: Mutex<Pace>,
}

#[derive(Default)]
struct Pace {
    asked: Option<Instant>,
    sampled: Option<Instant>,
}

impl Pace {
    /// The wait before the next pass.
    fn wait(&self, now: Instant) -> Duration {
        let wanted = self.asked.is_some_and(|a| now.saturating_duration_since(a) < WANTED_FOR);
        if wanted {
            EVERY
        } else {
            QUIET_EVERY
        }
    }

    /// A read at `now`; true when the samples are stale for a reader
    /// (the sampler was at its quiet pace), so a pass should run now.
    fn ask(&mut self, now: Instant) -> bool {
        self.asked = Some(now);
        self.sampled.is_none_or(|s| now.saturating_duration_since(s) > EVERY * 2)
    }
}

impl BackgroundLoop for UsageSampler {
    fn start(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        tokio::spawn(async move {
            loop {
                let wait = self.pace.lock().unwrap().wait(self.clock.instant());
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.woken.notified() => {}
                    _ = stop.changed() => return,
                }
                self.sample();
            }
        });
    }

    fn wake(&self) {
        self.woken.notify_one();
    }
}

impl UsageSampler {
    pub(crate) fn new(driver: Arc<dyn Driver>, clock: Arc<dyn Clock>) -> UsageSampler {
        UsageSampler { driver, clock, samples: Mutex::default(), woken: Notify::new(), pace: Mutex::default() }
    }

    /// The last sample of a task. A read after a quiet spell gets the last
    /// (older) sample and has a fresh pass run at once for the next read.
    pub(crate) fn get(&self, task: &str) -> Option<UsageSample> {
        if self.pace.lock().unwrap().ask(self.clock.instant()) {
            self.woken.notify_one();
        }
        self.samples.lock().unwrap().get(task).copied()
    }

    /// Samples every task the driver has; forgets the others.
    fn sample(&self) {
        self.pace.lock().unwrap().sampled = Some(self.clock.instant());
        let tasks = self.driver.tasks();
        let mut samples = self.samples.lock().unwrap();
        samples.retain(|id, _| tasks.iter().any(|t| &t.spec.id == id));
        for t in &tasks {
            let Some(u) = self.driver.usage(&t.spec.id) else { continue };
            let next = UsageSample::next(samples.get(&t.spec.id), u.cpu_nanos, u.memory_bytes, self.clock.instant());
            samples.insert(t.spec.id.clone(), next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TestClock;

    #[test]
    fn cpu_percent_is_cpu_time_over_clock_time_since_the_last_sample() {
        let clock = TestClock::new(0);
        let first = UsageSample::next(None, 1_000_000_000, 64, clock.instant());
        assert_eq!(first.cpu_percent, 0.0, "one sample says nothing yet");
        clock.advance(Duration::from_secs(2));
        // 1.5 s of CPU in 2 s: 75 %; two cores busy would read 200 %.
        let second = UsageSample::next(Some(&first), 2_500_000_000, 128, clock.instant());
        assert!((second.cpu_percent - 75.0).abs() < 1e-9, "{}", second.cpu_percent);
        assert_eq!(second.memory_bytes, 128);
        clock.advance(Duration::from_secs(2));
        let restarted = UsageSample::next(Some(&second), 10, 128, clock.instant());
        assert_eq!(restarted.cpu_percent, 0.0, "a counter that went back (a restart) is not negative");
    }

    #[test]
    fn the_pace_is_brisk_only_while_someone_reads() {
        let clock = TestClock::new(0);
        let mut pace = Pace::default();
        assert_eq!(pace.wait(clock.instant()), QUIET_EVERY, "nobody asked yet");
        assert!(pace.ask(clock.instant()), "never sampled: a pass is due now");
        pace.sampled = Some(clock.instant());
        assert_eq!(pace.wait(clock.instant()), EVERY);
        clock.advance(EVERY);
        assert!(!pace.ask(clock.instant()), "a sample one period old is fresh enough");
        clock.advance(WANTED_FOR);
        assert_eq!(pace.wait(clock.instant()), QUIET_EVERY, "a minute without a read");
        assert!(pace.ask(clock.instant()), "stale after the quiet pace: a pass is due now");
        assert_eq!(pace.wait(clock.instant()), EVERY);
    }
}
