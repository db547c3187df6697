//! When to look at a task's OOM kill count while its main process lives (a
//! child killed by the OOM killer leaves the task running). The kernel says
//! when: on cgroup v1 an eventfd registered for `memory.oom_control`, on v2
//! an inotify watch of `memory.events`. Reading every task's count once a
//! second instead cost an idle server one wakeup per task per second. Only if
//! neither can be set up does it poll.
#![allow(unsafe_code)] // eventfd, which std does not wrap; each call has its SAFETY note

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::time::{Instant, Interval};

use super::cgroup::TaskCgroup;
use super::inotify::{Watch, Watcher};

/// The fallback poll.
const POLL: Duration = Duration::from_secs(1);
/// Further looks after a notice (the first is at once): v1 notifies when the
/// cgroup runs out of memory, just before the kill is counted.
const AFTER_NOTICE: [Duration; 2] = [Duration::from_millis(100), Duration::from_secs(1)];

pub enum OomWatch {
    /// No cgroup: nothing to look at.
    Off,
    Notice {
        source: Source,
        looks: Vec<Instant>,
    },
    Poll(Interval),
}

pub enum Source {
    /// cgroup v1: readable after each OOM of the cgroup.
    Eventfd(AsyncFd<OwnedFd>),
    /// cgroup v2: `memory.events` changed.
    File(Watch),
}

impl OomWatch {
    pub fn new(cgroup: Option<&TaskCgroup>, watcher: Option<&Arc<Watcher>>) -> OomWatch {
        let Some(cg) = cgroup else { return OomWatch::Off };
        let source = if cg.v2 {
            watcher
                .ok_or_else(|| io::Error::other("no inotify instance"))
                .and_then(|w| w.watch(&cg.memory.join("memory.events")))
                .map(Source::File)
        } else {
            v1_eventfd(cg).map(Source::Eventfd)
        };
        match source {
            Ok(source) => OomWatch::Notice { source, looks: Vec::new() },
            Err(e) => {
                tracing::debug!("no OOM notices for {}, polling: {e}", cg.memory.display());
                let mut tick = tokio::time::interval(POLL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                OomWatch::Poll(tick)
            }
        }
    }

    /// Until the OOM kill count should be read. Cancel-safe: a notice that
    /// arrives while nobody waits is kept.
    pub async fn due(&mut self) {
        match self {
            OomWatch::Off => std::future::pending().await,
            OomWatch::Poll(tick) => {
                tick.tick().await;
            }
            OomWatch::Notice { source, looks } => {
                let next = looks.first().copied();
                tokio::select! {
                    () = source.notice() => {
                        let now = Instant::now();
                        *looks = AFTER_NOTICE.iter().map(|d| now + *d).collect();
                    }
                    () = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                        looks.remove(0);
                    }
                }
            }
        }
    }
}

impl Source {
    async fn notice(&self) {
        match self {
            Source::File(w) => w.changed().await,
            Source::Eventfd(fd) => loop {
                let Ok(mut ready) = fd.readable().await else {
                    return std::future::pending().await;
                };
                let mut count = [0u8; 8];
                let read = ready.try_io(|fd| {
                    // SAFETY: reads at most 8 bytes into `count`.
                    let n = unsafe { libc::read(fd.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
                    if n < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(())
                    }
                });
                match read {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(e)) => {
                        tracing::debug!("OOM eventfd: {e}");
                        return std::future::pending().await;
                    }
                    Err(_would_block) => {}
                }
            },
        }
    }
}

/// An eventfd the kernel signals when the cgroup runs out of memory
/// (`cgroup.event_control`, cgroup v1).
fn v1_eventfd(cg: &TaskCgroup) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: no pointers; the result is checked before use.
    let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    let efd = unsafe { OwnedFd::from_raw_fd(raw) };
    // The kernel looks the control file up while it registers, and keeps
    // no use of this fd afterwards.
    let control = File::open(cg.memory.join("memory.oom_control"))?;
    std::fs::write(cg.memory.join("cgroup.event_control"), format!("{} {}", efd.as_raw_fd(), control.as_raw_fd()))?;
    // SAFETY: the AsyncFd owns the OwnedFd, which stays open (and the same
    // fd) until the AsyncFd is dropped.
    Ok(unsafe { AsyncFd::register_with_interest(efd, Interest::READABLE)? })
}
