//! The clock seam of the controllers: production uses the system clock; tests
//! use a [`TestClock`] they advance by hand (a day of schedules, a bake or a
//! cooldown in milliseconds), and end-to-end tests of the real binary can run
//! the scheduler on a [`ScaledClock`] (`wharf server --clock-scale N`, a hidden
//! test flag) so a minute of schedule passes in a few real seconds.
//!
//! Wall time ([`Clock::now_ms`]) is for what is stored or shown; monotonic
//! time ([`Clock::instant`]) for durations measured in memory (health grace,
//! cooldowns, backoff), which a wall clock set back must not stretch.
//!
//! The only module of this crate that reads the system's time
//! (`crates/control/clippy.toml` refuses it elsewhere).

#![allow(clippy::disallowed_methods)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;

/// Time for the controllers.
#[async_trait]
pub trait Clock: Send + Sync + 'static {
    /// Wall time, in Unix milliseconds.
    fn now_ms(&self) -> u64;
    /// Monotonic time, for durations kept in memory.
    fn instant(&self) -> Instant {
        Instant::now()
    }
    /// Returns once `now_ms() >= at_ms` (at once if it already is).
    async fn sleep_until(&self, at_ms: u64);
}

fn system_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        system_ms()
    }

    async fn sleep_until(&self, at_ms: u64) {
        // Re-checked after each wait: the wall clock may be adjusted meanwhile.
        for _ in 0..10_000 {
            let now = self.now_ms();
            if now >= at_ms {
                return;
            }
            tokio::time::sleep(Duration::from_millis((at_ms - now).min(60_000))).await;
        }
    }
}

/// Wall time sped up `scale` times from the moment it is made. A test seam
/// only: schedules, timeouts and run times all follow it.
#[derive(Debug)]
pub struct ScaledClock {
    origin_ms: u64,
    origin: Instant,
    scale: f64,
}

impl ScaledClock {
    pub fn new(scale: f64) -> ScaledClock {
        ScaledClock { origin_ms: system_ms(), origin: Instant::now(), scale: scale.max(0.001) }
    }
}

#[async_trait]
impl Clock for ScaledClock {
    fn now_ms(&self) -> u64 {
        self.origin_ms + (self.origin.elapsed().as_secs_f64() * 1000.0 * self.scale) as u64
    }

    fn instant(&self) -> Instant {
        self.origin + self.origin.elapsed().mul_f64(self.scale)
    }

    async fn sleep_until(&self, at_ms: u64) {
        let now = self.now_ms();
        if at_ms > now {
            let real = Duration::from_secs_f64((at_ms - now) as f64 / 1000.0 / self.scale);
            tokio::time::sleep(real + Duration::from_millis(1)).await;
        }
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct TestClock {
    now: AtomicU64,
    start_ms: u64,
    /// The monotonic time at `start_ms`; [`Clock::instant`] moves with `now`.
    origin: Instant,
    moved: tokio::sync::Notify,
}

impl TestClock {
    pub fn new(start_ms: u64) -> TestClock {
        TestClock { now: AtomicU64::new(start_ms), start_ms, origin: Instant::now(), moved: tokio::sync::Notify::new() }
    }

    pub fn advance(&self, by: Duration) {
        self.now.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
        self.moved.notify_waiters();
    }

    pub fn set(&self, ms: u64) {
        self.now.store(ms, Ordering::SeqCst);
        self.moved.notify_waiters();
    }
}

#[async_trait]
impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }

    /// Set back before its start, it stays at its start: monotonic.
    fn instant(&self) -> Instant {
        self.origin + Duration::from_millis(self.now_ms().saturating_sub(self.start_ms))
    }

    async fn sleep_until(&self, at_ms: u64) {
        loop {
            let moved = self.moved.notified();
            if self.now_ms() >= at_ms {
                return;
            }
            moved.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_test_clock_wakes_sleepers_when_advanced() {
        let clock = std::sync::Arc::new(TestClock::new(1_000));
        let c = clock.clone();
        let sleeper = tokio::spawn(async move { c.sleep_until(61_000).await });
        clock.advance(Duration::from_secs(30));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(30));
        sleeper.await.unwrap();
        assert_eq!(clock.now_ms(), 61_000);
    }

    #[test]
    fn a_test_clock_moves_its_monotonic_time_with_it() {
        let clock = TestClock::new(1_000);
        let start = clock.instant();
        clock.advance(Duration::from_secs(90));
        assert_eq!(clock.instant() - start, Duration::from_secs(90));
        clock.set(0);
        assert_eq!(clock.instant(), start, "never before its start");
    }

    #[tokio::test]
    async fn a_scaled_clock_runs_faster() {
        let clock = ScaledClock::new(100.0);
        let start = clock.now_ms();
        clock.sleep_until(start + 2_000).await;
        assert!(clock.now_ms() >= start + 2_000);
    }
}
