//! One inotify instance for the driver. A task's tail loop sleeps until the
//! kernel says something in the task's directory was written, so a quiet
//! task costs nothing: polling each spool every few milliseconds made an idle
//! server with 100 tasks use 8 % of a core. (A cgroup v2 `memory.events`
//! file is watched the same way for OOM kills.) One instance for all tasks
//! because the kernel allows few per user (128 by default) and many watches.
#![allow(unsafe_code)] // inotify calls std does not wrap; each has its SAFETY note

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// What wakes a tail: a write (or truncation) of a file in the directory.
const MASK: u32 = libc::IN_MODIFY;
/// The fixed part of a `struct inotify_event` (wd, mask, cookie, len).
const EVENT_HEAD: usize = 16;

pub struct Watcher {
    shared: Arc<Shared>,
    reader: JoinHandle<()>,
}

struct Shared {
    fd: AsyncFd<OwnedFd>,
    /// Watch descriptor → the tails waiting on it. The kernel gives the same
    /// descriptor to a second watch of the same directory, hence a list.
    wakers: Mutex<HashMap<i32, Vec<Arc<Notify>>>>,
    /// The reader stopped (a read error): watches wake no one anymore.
    failed: AtomicBool,
}

/// A watch on one path; removed when dropped (when its tail or supervisor
/// ends or is aborted).
pub struct Watch {
    watcher: Arc<Watcher>,
    wd: i32,
    notify: Arc<Notify>,
}

impl Watcher {
    /// Must be called inside a tokio runtime: it spawns the event reader.
    pub fn new() -> io::Result<Arc<Watcher>> {
        // SAFETY: no pointers; the result is checked before use.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the AsyncFd owns the OwnedFd, which stays open (and the
        // same fd) until the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE)? };
        let shared = Arc::new(Shared { fd, wakers: Mutex::new(HashMap::new()), failed: AtomicBool::new(false) });
        let reader = tokio::spawn(read_events(shared.clone()));
        Ok(Arc::new(Watcher { shared, reader }))
    }

    /// Wake the returned watch whenever `path` (a file, or a file in a
    /// directory) is written.
    pub fn watch(self: &Arc<Self>, path: &Path) -> io::Result<Watch> {
        let path = CString::new(path.as_os_str().as_bytes())?;
        let notify = Arc::new(Notify::new());
        let mut wakers = self.shared.wakers.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: a valid fd and a NUL-terminated path that outlives the call.
        let wd = unsafe { libc::inotify_add_watch(self.shared.fd.get_ref().as_raw_fd(), path.as_ptr(), MASK) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        wakers.entry(wd).or_default().push(notify.clone());
        Ok(Watch { watcher: self.clone(), wd, notify })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Watch {
    /// Whether a write wakes this watch; if not, its tail must poll.
    pub fn live(&self) -> bool {
        !self.watcher.shared.failed.load(Ordering::Relaxed)
    }

    /// Until a file of the directory was written since the last call (a
    /// write between two calls is kept, never lost).
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let shared = &self.watcher.shared;
        let mut wakers = shared.wakers.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(list) = wakers.get_mut(&self.wd) else { return };
        list.retain(|n| !Arc::ptr_eq(n, &self.notify));
        if list.is_empty() {
            wakers.remove(&self.wd);
            // SAFETY: plain integers. A watch the kernel already removed
            // (its directory is gone) fails with EINVAL, which is fine.
            unsafe { libc::inotify_rm_watch(shared.fd.get_ref().as_raw_fd(), self.wd) };
        }
    }
}

async fn read_events(shared: Arc<Shared>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let mut ready = match shared.fd.readable().await {
            Ok(r) => r,
            Err(e) => return fail(&shared, e),
        };
        let n = match ready.try_io(|fd| {
            // SAFETY: reads at most buf.len() bytes into buf.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        }) {
            Ok(Ok(n)) => n,
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(Err(e)) => return fail(&shared, e),
            Err(_would_block) => continue,
        };
        let woken = event_wds(&buf[..n]);
        let wakers = shared.wakers.lock().unwrap_or_else(PoisonError::into_inner);
        if woken.contains(&-1) {
            // The kernel's queue overflowed: some events are lost, wake everyone.
            wakers.values().flatten().for_each(|n| n.notify_one());
        } else {
            for wd in woken {
                wakers.get(&wd).into_iter().flatten().for_each(|n| n.notify_one());
            }
        }
    }
}

fn fail(shared: &Shared, e: io::Error) {
    tracing::warn!("output watcher stopped, tasks' output is polled from now on: {e}");
    shared.failed.store(true, Ordering::Relaxed);
    let wakers = shared.wakers.lock().unwrap_or_else(PoisonError::into_inner);
    wakers.values().flatten().for_each(|n| n.notify_one());
}

/// The watch descriptors of a buffer of `struct inotify_event`s, each once
/// (-1 stands for a queue overflow).
fn event_wds(mut buf: &[u8]) -> Vec<i32> {
    let mut wds: Vec<i32> = Vec::new();
    while buf.len() >= EVENT_HEAD {
        let wd = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let len = u32::from_ne_bytes([buf[12], buf[13], buf[14], buf[15]]) as usize;
        if !wds.contains(&wd) {
            wds.push(wd);
        }
        buf = buf.get(EVENT_HEAD.saturating_add(len)..).unwrap_or_default();
    }
    wds
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    #[test]
    fn parses_events() {
        let mut buf = Vec::new();
        for (wd, name) in [(3i32, &b"stdout\0\0"[..]), (3, b""), (-1, b""), (5, b"stderr\0\0")] {
            buf.extend_from_slice(&wd.to_ne_bytes());
            buf.extend_from_slice(&libc::IN_MODIFY.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&(name.len() as u32).to_ne_bytes());
            buf.extend_from_slice(name);
        }
        assert_eq!(event_wds(&buf), vec![3, -1, 5]);
        // A cut event is not read past the buffer.
        assert_eq!(event_wds(&buf[..buf.len() - 3]), vec![3, -1, 5]);
        assert_eq!(event_wds(&buf[..10]), Vec::<i32>::new());
    }

    #[tokio::test]
    async fn a_write_wakes_only_its_directory() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut file = std::fs::File::create(a.path().join("stdout")).unwrap();
        let watcher = Watcher::new().unwrap();
        let (wa, wb) = (watcher.watch(a.path()).unwrap(), watcher.watch(b.path()).unwrap());
        let quiet = tokio::time::timeout(Duration::from_millis(100), wa.changed()).await;
        assert!(quiet.is_err(), "woken without a write");
        file.write_all(b"line\n").unwrap();
        tokio::time::timeout(Duration::from_secs(10), wa.changed()).await.expect("the write woke its watch");
        let other = tokio::time::timeout(Duration::from_millis(100), wb.changed()).await;
        assert!(other.is_err(), "a write in another directory woke this one");
        // Two watches of one directory: dropping one leaves the other awake.
        let wa2 = watcher.watch(a.path()).unwrap();
        drop(wa);
        file.write_all(b"more\n").unwrap();
        tokio::time::timeout(Duration::from_secs(10), wa2.changed()).await.expect("still watched");
    }
}
