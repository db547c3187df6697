//! Pause: a service's requests are held (not refused) while it is paused,
//! e.g. around a database migration, and released on resume.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Holds requests until released or until the pause has lasted `max_pause`.
#[derive(Debug)]
pub struct PauseGate {
    released: watch::Sender<bool>,
    waiting: AtomicUsize,
    max_waiting: usize,
    deadline: Instant,
}

pub(crate) enum PauseOutcome {
    /// Resumed: route the request again against the current table.
    Released,
    /// The pause outlived its maximum, or too many requests were waiting.
    Refused,
}

impl PauseGate {
    pub fn new(max_waiting: usize, max_pause: Duration) -> PauseGate {
        PauseGate {
            released: watch::channel(false).0,
            waiting: AtomicUsize::new(0),
            max_waiting,
            // Saturating: a pause too long for the clock lasts until resumed.
            deadline: Instant::now().checked_add(max_pause).unwrap_or_else(far_future),
        }
    }

    /// Lets every held request go on.
    pub fn release(&self) {
        self.released.send_replace(true);
    }

    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    pub(crate) async fn wait(&self) -> PauseOutcome {
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return PauseOutcome::Refused;
        }
        let mut rx = self.released.subscribe();
        let outcome = tokio::time::timeout_at(self.deadline.into(), rx.wait_for(|r| *r)).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        match outcome {
            Ok(Ok(_)) => PauseOutcome::Released,
            _ => PauseOutcome::Refused,
        }
    }
}

/// About a century ahead: a deadline that never comes.
fn far_future() -> Instant {
    let now = Instant::now();
    now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)).unwrap_or(now)
}
