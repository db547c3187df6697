//! The bounded buffer between the stream and a sink: when it is full the
//! oldest record goes, and is counted.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::Record;

pub struct Buffer {
    records: Mutex<VecDeque<Arc<Record>>>,
    capacity: usize,
    dropped: AtomicU64,
    /// A record was pushed.
    data: Notify,
    /// A record was taken.
    room: Notify,
}

impl Buffer {
    pub fn new(capacity: usize) -> Buffer {
        let capacity = capacity.max(1);
        Buffer {
            records: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity,
            dropped: AtomicU64::new(0),
            data: Notify::new(),
            room: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Arc<Record>>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a record; when full, drops the oldest one first. Returns whether
    /// one was dropped. Never waits.
    pub fn push(&self, r: Arc<Record>) -> bool {
        let dropped = {
            let mut q = self.lock();
            let dropped = q.len() >= self.capacity;
            if dropped {
                q.pop_front();
            }
            q.push_back(r);
            dropped
        };
        if dropped {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.data.notify_one();
        dropped
    }

    /// Adds records under one lock (see [`Buffer::push`]); returns how many
    /// were dropped to make room.
    pub fn push_many(&self, records: impl IntoIterator<Item = Arc<Record>>) -> u64 {
        let mut dropped = 0;
        {
            let mut q = self.lock();
            for r in records {
                if q.len() >= self.capacity {
                    q.pop_front();
                    dropped += 1;
                }
                q.push_back(r);
            }
        }
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        self.data.notify_one();
        dropped
    }

    /// Takes up to `max` of the oldest records under one lock.
    pub fn take(&self, max: usize) -> Vec<Arc<Record>> {
        let taken: Vec<_> = {
            let mut q = self.lock();
            let n = q.len().min(max);
            q.drain(..n).collect()
        };
        if !taken.is_empty() {
            self.room.notify_one();
        }
        taken
    }

    /// Adds a record once there is room (for records that are safe on disk
    /// and can wait, unlike live ones).
    pub async fn push_when_room(&self, r: Arc<Record>) {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut q = self.lock();
                if q.len() < self.capacity {
                    q.push_back(r);
                    drop(q);
                    self.data.notify_one();
                    return;
                }
            }
            room.await;
        }
    }

    /// Counts records lost before they reached the buffer.
    pub fn count_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    pub fn pop(&self) -> Option<Arc<Record>> {
        let r = self.lock().pop_front();
        if r.is_some() {
            self.room.notify_one();
        }
        r
    }

    /// Waits until a record was pushed since the last call (returns at once
    /// if one was pushed while nobody waited).
    pub async fn pushed(&self) {
        self.data.notified().await
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Records dropped so far (oldest dropped for room, or missed upstream).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Source;

    fn rec(seq: u64) -> Arc<Record> {
        let mut r = Record::new(Source::Stdout, format!("m{seq}"));
        r.seq = seq;
        Arc::new(r)
    }

    #[test]
    fn full_buffer_drops_the_oldest_and_counts_it() {
        let b = Buffer::new(3);
        for seq in 1..=5 {
            assert_eq!(b.push(rec(seq)), seq > 3, "push {seq}");
        }
        assert_eq!(b.len(), 3);
        assert_eq!(b.dropped(), 2);
        let left: Vec<u64> = std::iter::from_fn(|| b.pop()).map(|r| r.seq).collect();
        assert_eq!(left, [3, 4, 5], "the newest are kept, in order");
        b.count_dropped(7);
        assert_eq!(b.dropped(), 9);
        assert!(b.is_empty());
    }

    #[test]
    fn batches_drop_and_take_like_single_records() {
        let b = Buffer::new(4);
        assert_eq!(b.push_many((1..=6).map(rec)), 2);
        assert_eq!(b.dropped(), 2);
        assert_eq!(b.take(3).iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(b.take(10).iter().map(|r| r.seq).collect::<Vec<_>>(), [6]);
        assert!(b.take(10).is_empty());
    }

    #[tokio::test]
    async fn push_when_room_waits_instead_of_dropping() {
        let b = Arc::new(Buffer::new(1));
        b.push(rec(1));
        let b2 = b.clone();
        let waiting = tokio::spawn(async move { b2.push_when_room(rec(2)).await });
        tokio::task::yield_now().await;
        assert_eq!(b.pop().unwrap().seq, 1);
        waiting.await.unwrap();
        assert_eq!(b.pop().unwrap().seq, 2);
        assert_eq!(b.dropped(), 0);
    }

    #[tokio::test]
    async fn a_push_while_nobody_waits_is_not_missed() {
        let b = Buffer::new(2);
        b.push(rec(1));
        // Returns at once: the push left a permit.
        b.pushed().await;
    }
}
