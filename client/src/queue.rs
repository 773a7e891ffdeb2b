//! A bounded queue that never blocks its producer: when full, the oldest item is dropped and
//! counted ("newest wins", as for media). The driver pushes into it without awaiting, so a slow
//! consumer can never stall the connection.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

#[derive(Debug)]
struct Inner<T> {
    items: VecDeque<T>,
    closed: bool,
}

/// Bounded multi-consumer queue with a drop-oldest overflow policy.
#[derive(Debug)]
pub(crate) struct DropOldest<T> {
    inner: Mutex<Inner<T>>,
    capacity: usize,
    dropped: AtomicU64,
    notify: Notify,
}

impl<T> DropOldest<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                items: VecDeque::with_capacity(capacity.min(64)),
                closed: false,
            }),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        // A panic while holding this lock leaves the deque consistent; keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `item`, dropping the oldest if full. Returns `true` if one was dropped. Items
    /// pushed after [`close`](Self::close) are discarded.
    pub(crate) fn push(&self, item: T) -> bool {
        let mut inner = self.lock();
        if inner.closed {
            return false;
        }
        let mut dropped = false;
        if inner.items.len() >= self.capacity {
            inner.items.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
            dropped = true;
        }
        inner.items.push_back(item);
        drop(inner);
        self.notify.notify_one();
        dropped
    }

    /// Takes the oldest item without waiting.
    pub(crate) fn try_pop(&self) -> Option<T> {
        self.lock().items.pop_front()
    }

    /// Waits for the next item; `None` once the queue is closed and empty.
    ///
    /// Cancel-safe: an item is only taken when this returns it.
    pub(crate) async fn pop(&self) -> Option<T> {
        loop {
            let notified = self.notify.notified();
            {
                let mut inner = self.lock();
                if let Some(item) = inner.items.pop_front() {
                    let more = !inner.items.is_empty();
                    drop(inner);
                    if more {
                        // Pass the wake-up on to another waiting consumer.
                        self.notify.notify_one();
                    }
                    return Some(item);
                }
                if inner.closed {
                    drop(inner);
                    self.notify.notify_one();
                    return None;
                }
            }
            notified.await;
        }
    }

    /// No more items will arrive; waiting consumers drain what is left, then get `None`.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    /// Items dropped because the queue was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drops_oldest_when_full_and_counts() {
        let q = DropOldest::new(2);
        assert!(!q.push(1));
        assert!(!q.push(2));
        assert!(q.push(3));
        assert_eq!(q.dropped(), 1);
        assert_eq!(q.pop().await, Some(2));
        assert_eq!(q.try_pop(), Some(3));
        q.close();
        assert_eq!(q.pop().await, None);
    }

    #[tokio::test]
    async fn close_wakes_a_waiting_consumer() {
        let q = std::sync::Arc::new(DropOldest::<u8>::new(4));
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.pop().await }
        });
        tokio::task::yield_now().await;
        q.close();
        assert_eq!(waiter.await.unwrap(), None);
    }
}
