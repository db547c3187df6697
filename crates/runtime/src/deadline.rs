//! "now + duration" that never panics: a duration too long for the clock
//! gives a deadline about a century ahead, which never comes.

use std::time::{Duration, Instant};

/// Far enough ahead to never come, near enough to fit in any clock.
pub const FAR_AHEAD: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `now + d`, saturating at a time that never comes.
pub fn instant_after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).or_else(|| now.checked_add(FAR_AHEAD)).unwrap_or(now)
}

/// `now + d` on tokio's clock (which tests may pause), saturating the same way.
pub fn tokio_after(now: tokio::time::Instant, d: Duration) -> tokio::time::Instant {
    now.checked_add(d).or_else(|| now.checked_add(FAR_AHEAD)).unwrap_or(now)
}

/// `now + d` in Unix milliseconds, saturating at `u64::MAX`.
pub fn ms_after(now_ms: u64, d: Duration) -> u64 {
    now_ms.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturates_instead_of_panicking() {
        let now = Instant::now();
        assert_eq!(instant_after(now, Duration::from_secs(1)), now + Duration::from_secs(1));
        assert!(instant_after(now, Duration::MAX) > now + Duration::from_secs(3600 * 24 * 365));
        assert_eq!(ms_after(5, Duration::from_millis(7)), 12);
        assert_eq!(ms_after(5, Duration::MAX), u64::MAX);
        assert_eq!(ms_after(u64::MAX - 1, Duration::from_secs(1)), u64::MAX);
    }
}
