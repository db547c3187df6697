//! The data directory's disk and the store's health, watched so trouble
//! (a full disk, a store whose writes fail) is an event, a line in
//! `wharf status` and a metric, once, instead of an error per request.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use wharf_logs::Level;

use crate::controller::{fmt_duration, Controller};

/// Below this much free space (and 5 % of the disk) the disk is reported as nearly full.
const LOW_DISK_BYTES: u64 = 64 << 20;
/// While writes fail, the outage is reported again at most this often.
const REPEAT_EVERY: Duration = Duration::from_secs(60);
/// While writes fail, a small write tries the store this often, so the end
/// of an outage is seen even when nothing else writes.
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// Free and total bytes on the file system of `path`, for an unprivileged writer.
#[allow(unsafe_code)] // a kernel call std does not wrap; see the SAFETY note inside
pub(crate) fn space(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own; `c` is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let block = st.f_frsize as u64;
    Some(((st.f_bavail as u64).saturating_mul(block), (st.f_blocks as u64).saturating_mul(block)))
}

/// Free bytes on the file system of `path`.
pub(crate) fn free_bytes(path: &Path) -> Option<u64> {
    space(path).map(|(free, _)| free)
}

/// When log records last failed to reach the disk, so `wharf status` shows
/// a loss that is happening, not one that ended long ago.
#[derive(Debug, Default)]
pub(crate) struct LogLoss {
    state: std::sync::Mutex<(u64, Option<Instant>, u64)>,
}

/// A loss of log records is reported for this long after the last one.
const LOG_LOSS_SHOWN: Duration = Duration::from_secs(60);

impl LogLoss {
    /// Notes the stream's lifetime count of unstored records, seen at `now`.
    fn observe(&self, unstored: u64, now: Instant) {
        let mut s = self.state.lock().unwrap();
        if unstored > s.0 {
            let shown = |t: Instant| now.saturating_duration_since(t) < LOG_LOSS_SHOWN;
            let recent = if s.1.is_some_and(shown) { s.2 } else { 0 };
            *s = (unstored, Some(now), recent + (unstored - s.0));
        }
    }

    /// Records lost in the current spell, if the last loss is recent at `now`.
    fn recent(&self, now: Instant) -> Option<u64> {
        let s = self.state.lock().unwrap();
        s.1.filter(|t| now.saturating_duration_since(*t) < LOG_LOSS_SHOWN).map(|_| s.2)
    }
}

impl Controller {
    /// What is wrong with the server itself right now, one line each, for
    /// `wharf status`.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let store = self.metrics.store_health.snapshot();
        if let Some(since) = store.failing_since {
            let ago = self.wall_clock().duration_since(since).unwrap_or_default();
            out.push(format!(
                "store writes are failing for {} ({} failed operations): {}; changes (deploys, scaling) are refused until a write succeeds",
                fmt_duration(ago),
                store.failures,
                store.last_error.unwrap_or_default()
            ));
        }
        if let Some((free, total)) = space(&self.data_dir) {
            // Low in absolute terms and for its size: a small disk is not full.
            if free < LOW_DISK_BYTES && free < total / 20 {
                out.push(format!("the data directory's disk ({}) has {} free", self.data_dir.display(), bytes(free)));
            }
        }
        let now = self.clock.instant();
        self.log_loss.observe(self.logs.stats().unstored, now);
        if let Some(n) = self.log_loss.recent(now) {
            out.push(format!("{n} log records could not be written to disk lately (kept in memory only)"));
        }
        out
    }

    /// Turns the store's health into events: the start of an outage, a
    /// reminder at most once a minute while it lasts, and its end.
    pub(crate) async fn store_watch_loop(self: Arc<Self>) {
        let mut stop = self.stopping();
        let mut reported: Option<Instant> = None;
        let mut last_probe = self.clock.instant();
        loop {
            let now = self.clock.instant();
            self.log_loss.observe(self.logs.stats().unstored, now);
            let s = self.metrics.store_health.snapshot();
            match (s.failing_since, reported) {
                (Some(_), None) => {
                    let msg = format!("store writes fail: {}", s.last_error.clone().unwrap_or_default());
                    self.events.event("store.failing", Level::Error, msg);
                    reported = Some(now);
                }
                (Some(since), Some(at)) if now.saturating_duration_since(at) >= REPEAT_EVERY => {
                    let ago = self.wall_clock().duration_since(since).unwrap_or_default();
                    let msg = format!(
                        "store writes still fail after {} ({} failed operations): {}",
                        fmt_duration(ago),
                        s.failures,
                        s.last_error.clone().unwrap_or_default()
                    );
                    self.events.event("store.failing", Level::Error, msg);
                    reported = Some(now);
                }
                (None, Some(_)) => {
                    self.events.event("store.recovered", Level::Info, "store writes succeed again");
                    reported = None;
                }
                _ => {}
            }
            if s.failing_since.is_some() && now.saturating_duration_since(last_probe) >= PROBE_EVERY {
                last_probe = now;
                let _ = self.db.probe().await;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

impl Controller {
    /// The controller's clock as wall time, to measure from times the store's
    /// health stamps.
    fn wall_clock(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.now_ms())
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n => format!("{} KiB", n >> 10),
    }
}
